"""Ingest benchmark: 1M generated reviews over 30 days, landing -> raw_reviews -> dbt features, as one
backfill through Dagster; beside it the floor: the same load and the same compiled feature SQL run
directly in DuckDB. Writes bench/results/ingest.json and prints the ratio.

    python bench/ingest.py [--reviews 1000000 --days 30]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
from common import run_range, write_generated, write_result

from recsys_assets.data.generator import GeneratorConfig
from recsys_assets.defs.features.assets import dbt_features
from recsys_assets.defs.features.dbt_project import DBT_PROJECT_DIR
from recsys_assets.defs.ingest.assets import raw_reviews

FEATURE_MODELS = ("user_rating_stats", "parent_asin_rating_stats")


def compiled_feature_sql(home: Path, first: date, last: date) -> dict[str, str]:
    target = home / "dbt-target"
    dbt_vars = json.dumps({"min_date": str(first), "max_date": str(last + timedelta(days=1))})
    subprocess.run([str(Path(sys.executable).parent / "dbt"), "compile", "--vars", dbt_vars, "--target-path",
                    str(target), "--select", *FEATURE_MODELS, "--quiet"],
                   cwd=DBT_PROJECT_DIR, env={**os.environ, "RECSYS_HOME": str(home)}, check=True)
    return {m: next(target.rglob(f"{m}.sql")).read_text() for m in FEATURE_MODELS}


def floor_run(home: Path, landing: Path, sql: dict[str, str]) -> float:
    """The same work without the platform: one COPY of the landing files, then the feature SQL."""
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    start = time.perf_counter()
    con.execute("create schema raw")
    con.execute(f"""create table raw.raw_reviews as select *, cast(strptime(regexp_extract(filename,
        '(\\d{{4}}_\\d{{2}}_\\d{{2}})', 1), '%Y_%m_%d') as date) as partition_date
        from read_parquet('{landing}/recsys_data_upto_*.parquet', filename=true)""")
    con.execute("alter table raw.raw_reviews drop column filename")
    con.execute("create view main.stg_reviews as select user_id, parent_asin, cast(rating as double) as rating, "
                "cast(timestamp as bigint) as event_ms, partition_date from raw.raw_reviews")
    for model, query in sql.items():
        con.execute(f"create table main.{model} as {query}")
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    cfg = GeneratorConfig(users=args.users, items=args.items, days=args.days, reviews=args.reviews,
                          start=date(2024, 1, 1), seed=1)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    home, floor_home = work / "platform", work / "floor"
    floor_home.mkdir(parents=True)

    t = time.perf_counter()
    rows, first, last = write_generated(home / "landing", cfg)
    generate_s = time.perf_counter() - t

    platform_s = run_range(home, [raw_reviews, dbt_features], first, last)
    floor_s = floor_run(floor_home, home / "landing", compiled_feature_sql(floor_home, first, last))

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    feature_rows = {m: con.execute(f"select count(*) from main.{m}").fetchone()[0] for m in FEATURE_MODELS}
    con.close()
    shutil.rmtree(work)  # ~100 MB per million reviews
    result = {
        "reviews": rows, "days": cfg.days, "users": cfg.users, "items": cfg.items,
        "feature_rows": feature_rows,
        "generate_seconds": round(generate_s, 2),
        "platform_seconds": round(platform_s, 2),
        "platform_rows_per_second": round(rows / platform_s),
        "floor_seconds": round(floor_s, 2),
        "floor_rows_per_second": round(rows / floor_s),
        "platform_over_floor": round(platform_s / floor_s, 2),
        "goal_seconds": 180,
        "cpus": os.cpu_count(),
    }
    write_result("ingest", result)
    print(f"\nraw -> dbt features backfill of {rows:,} reviews over {cfg.days} days: {platform_s:.1f} s "
          f"({rows / platform_s:,.0f} rows/s) vs the same SQL directly in DuckDB {floor_s:.1f} s: "
          f"{platform_s / floor_s:.2f}x the floor (goal: under {result['goal_seconds']} s)")


if __name__ == "__main__":
    main()

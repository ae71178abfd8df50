"""Feature store benchmark: online read latency (1 entity; one user + 100 candidate items, the rerank read)
and materialization throughput, SQLite vs Redis online store, on the same generated features.
Beside the batched rerank read, its baseline: one read per candidate, as the original served it.
Point-in-time retrieval of training rows (sampled reviews: user + item as of each review): the local
offline store's ASOF join vs Feast's own DuckDB join, on the same rows (the results must be equal).
Writes bench/results/feature_store.json and prints the ratios.

    python bench/feature_store.py [--reviews 300000 --days 30 --calls 300]
"""

import argparse
import dataclasses
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

# The repository root, for the tests' helpers (tests.support): `python bench/x.py` puts only bench/ on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb
import pandas as pd
from common import run_range, write_generated, write_result

from recsys_assets.data.generator import GeneratorConfig
from recsys_assets.defs.features.assets import dbt_features
from recsys_assets.defs.ingest.assets import raw_reviews
from recsys_assets.feature_store.online import OnlineFeatures
from recsys_assets.feature_store.repository import FeatureRepository, FeatureStoreConfig
from recsys_assets.feature_store.retrieval import point_in_time_features
from recsys_assets.warehouse.stores import DuckDBWarehouse
from tests.support.redis_server import local_redis


def percentiles_ms(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3)}


def timed(calls: int, fn) -> list[float]:
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return samples


def bench_store(repo: FeatureRepository, warehouse: DuckDBWarehouse, days, users, items, calls: int) -> dict:
    repo.ensure_applied()
    rows = sum(repo.sync_offline(warehouse, days).values())
    start = time.perf_counter()
    repo.materialize_days(days[0], days[-1])
    materialize_s = time.perf_counter() - start

    reader = OnlineFeatures(repo.store)
    rng = random.Random(0)
    picks = [(rng.choice(users), rng.sample(items, 100)) for _ in range(calls)]
    reader.for_ranking(*picks[0])  # warm: registry load, connections
    one = timed(calls, lambda i: reader.users([picks[i][0]]))
    rerank = timed(calls, lambda i: reader.for_ranking(*picks[i]))
    per_candidate = timed(max(calls // 10, 5), lambda i: [reader.items([a]) for a in picks[i][1]])
    return {
        "materialized_rows": rows,
        "materialize_seconds": round(materialize_s, 3),
        "materialize_rows_per_second": round(rows / materialize_s),
        "one_entity": percentiles_ms(one),
        "user_plus_100_items_one_call": percentiles_ms(rerank),
        "100_items_one_call_each": percentiles_ms(per_candidate),
    }


def bench_point_in_time(feast_dir: Path, entities: pd.DataFrame) -> dict:
    """Seconds to read the training rows' features as of their moments: ASOF join vs Feast's own join (in
    chunks of 10k rows, its setting before: larger chunks took tens of GB on a long tail)."""
    local = FeatureStoreConfig.local(feast_dir)
    feasts_own = dataclasses.replace(local, offline_store={"type": "duckdb"})
    seconds, frames = {}, {}
    for name, config, chunk_rows in (("asof_join", local, 500_000), ("feast_join", feasts_own, 10_000)):
        store = FeatureRepository(config).store
        start = time.perf_counter()
        frames[name] = point_in_time_features(store, entities, chunk_rows=chunk_rows)
        seconds[name] = round(time.perf_counter() - start, 2)
    pd.testing.assert_frame_equal(frames["asof_join"], frames["feast_join"])
    return {"rows": len(entities), "seconds": seconds, "same_result": True,
            "feast_join_over_asof_join": round(seconds["feast_join"] / seconds["asof_join"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--training-rows", type=int, default=100_000)
    args = parser.parse_args()
    cfg = GeneratorConfig(users=args.users, items=args.items, days=args.days, reviews=args.reviews,
                          start=GeneratorConfig().start, seed=1)
    work = Path(tempfile.mkdtemp(prefix="bench-feature-store-"))
    try:
        reviews, first, last = write_generated(work / "landing", cfg)
        run_range(work, [raw_reviews, dbt_features], first, last)
        days = [first + timedelta(days=d) for d in range((last - first).days + 1)]
        con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
        users = [r[0] for r in con.execute("select distinct user_id from main.user_rating_stats").fetchall()]
        items = [r[0] for r in con.execute("select distinct parent_asin from main.parent_asin_rating_stats").fetchall()]
        entities = con.execute(f"select user_id, parent_asin, timestamp from raw.raw_reviews using sample "
                               f"reservoir({args.training_rows} rows) repeatable (0)").df()
        con.close()
        warehouse = DuckDBWarehouse(work / "warehouse.duckdb")
        stores = {"sqlite": bench_store(FeatureRepository(FeatureStoreConfig.local(work / "feast-sqlite")),
                                        warehouse, days, users, items, args.calls)}
        point_in_time = bench_point_in_time(work / "feast-sqlite", entities)
        with local_redis() as redis_server:
            url = redis_server.url
            repo = FeatureRepository(FeatureStoreConfig.local(work / "feast-redis", online="redis", redis_url=url))
            stores["redis"] = bench_store(repo, warehouse, days, users, items, args.calls)
    finally:
        shutil.rmtree(work)

    sqlite, redis = stores["sqlite"], stores["redis"]
    key = "user_plus_100_items_one_call"
    result = {
        "reviews": reviews, "days": cfg.days, "users": len(users), "items": len(items), "calls": args.calls,
        "stores": stores,
        "redis_over_sqlite_p50": {
            "one_entity": round(redis["one_entity"]["p50_ms"] / sqlite["one_entity"]["p50_ms"], 2),
            key: round(redis[key]["p50_ms"] / sqlite[key]["p50_ms"], 2),
        },
        "one_call_each_over_one_call_p50": {
            name: round(s["100_items_one_call_each"]["p50_ms"] / s[key]["p50_ms"], 1) for name, s in stores.items()
        },
        "point_in_time": point_in_time,
        "cpus": os.cpu_count(),
    }
    write_result("feature_store", result)
    for name, s in stores.items():
        print(f"\n{name}: 1 entity p50 {s['one_entity']['p50_ms']} ms / p99 {s['one_entity']['p99_ms']} ms; "
              f"user + 100 items in one call p50 {s[key]['p50_ms']} ms / p99 {s[key]['p99_ms']} ms "
              f"({result['one_call_each_over_one_call_p50'][name]}x faster than one call per item); "
              f"materialize {s['materialize_rows_per_second']:,} rows/s")
    print(f"redis/sqlite p50: {result['redis_over_sqlite_p50']}")
    print(f"point-in-time features of {point_in_time['rows']:,} training rows: ASOF join "
          f"{point_in_time['seconds']['asof_join']} s, Feast's own join {point_in_time['seconds']['feast_join']} s "
          f"({point_in_time['feast_join_over_asof_join']}x; same result)")


if __name__ == "__main__":
    main()

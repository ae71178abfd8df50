"""The command lines a user and CI run: `recsys import` then `dagster asset materialize`."""

import os
import subprocess
import sys

import duckdb

from recsys_assets.settings import REPO_ROOT


def _run(args, env, timeout=300):
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    return out


def test_import_then_dagster_cli_materializes_a_partition(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("RECSYS_START_DATE", None)  # partitions must start where the imported data does
    csv = tmp_path / "events.csv"
    csv.write_text("user_id,item_id,rating,timestamp\n"
                   + "".join(f"u{i % 7},i{i % 5},{1 + i % 5},{1700000000 + i * 3600}\n" for i in range(48)))
    recsys = [sys.executable, "-m", "recsys_assets.cli"]
    out = _run([*recsys, "import", "interactions", str(csv)], env)
    assert "imported 48 reviews over 3 days" in out.stdout
    _run([*recsys, "init-dagster-home"], env)

    dagster = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "recsys_assets.definitions"]
    _run([*dagster, "--select", "item_metadata"], env)
    _run([*dagster, "--select", "raw_reviews*", "--partition-range", "2023-11-14...2023-11-16"], env)

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    raw = con.execute("select count(*) from raw.raw_reviews").fetchone()[0]
    features = con.execute("select count(*) from main.user_rating_stats").fetchone()[0]
    con.close()
    assert raw == 48 and features == 48

"""Freshness benchmark: from a new day's landing file to the service answering with that day's release,
with only `make dev` (`dagster dev`: UI, daemon, one code server) and `recsys serve` running (no
`recsys pipeline`, no click).

On a home that `make pipeline` built on the default data (default: builds one in a temp folder first),
it starts `dagster dev` and the service, keeps a client requesting reranks, lands the next
day's file and measures until the service answers with the new release. Prints the breakdown (sensor
pick-up, queue and automation tick waits, each run and its slowest steps, the serving switch) and the
evaluation of the new day beside the previous one; writes bench/results/freshness.json.

    python bench/freshness.py [--home var]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

# The repository root, for the tests' helpers (tests.support): `python bench/x.py` puts only bench/ on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from common import write_result
from dagster import AssetKey, DagsterInstance

from recsys_assets.data.generator import GeneratorConfig, generate
from recsys_assets.data.landing import LocalLandingZone, review_days
from recsys_assets.data.schema import review_file_name
from recsys_assets.serving_data.kv import SQLiteKV
from recsys_assets.serving_data.release import ReleaseStore
from recsys_assets.settings import REPO_ROOT
from tests.support.daemon import daemon_process
from tests.support.processes import serve_process

TARGET_S = 300


def prepared_home(source: Path | None, work: Path) -> Path:
    """`source` itself (a home `make pipeline` built on the default data: the benchmark lands its next day
    there, as a user would; a copy would not do, Feast's registry and MLflow hold absolute paths), or a new
    one built now in `work`."""
    if source is not None:
        return source
    home = work / "home"
    env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    subprocess.run([sys.executable, "-m", "recsys_assets.cli", "pipeline"], env=env, cwd=REPO_ROOT, check=True)
    return home


def next_day_file(home: Path) -> tuple[date, object]:
    """The day after the newest landed one: the default generator (what `make pipeline` generates) run for
    one day more."""
    days = review_days(LocalLandingZone(home / "landing").list_files())
    defaults = GeneratorConfig()
    total_days = (days[-1] - defaults.start).days + 2
    cfg = GeneratorConfig(days=total_days, reviews=defaults.reviews * total_days // defaults.days)
    _, generated = generate(cfg)
    *_, (day, table) = generated
    assert day == days[-1] + timedelta(days=1), f"{home} does not hold the default generated data"
    return day, table


class Load:
    """One client requesting reranks all along: the switch must fail none."""

    def __init__(self, url: str, users: list[str]):
        self.url, self.users = url, users
        self.ok = self.failed = 0
        self.releases: dict[str, float] = {}  # release id -> first time it answered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n = 0
            while not self._stop.is_set():
                response = client.get("/recs/u2i/rerank", params={"user_id": self.users[n % len(self.users)]})
                n += 1
                if response.status_code == 200:
                    self.ok += 1
                    self.releases.setdefault(response.json()["release"], time.time())
                else:
                    self.failed += 1
                time.sleep(0.5)  # light: the benchmark measures the pipeline, not the service

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_breakdown(instance: DagsterInstance, landed_at: float) -> list[dict]:
    """Every run since the file landed: when created, queued, started, ended, and its slowest steps."""
    rows = []
    for record in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp):
        created = record.create_timestamp.timestamp()
        if created < landed_at:
            continue
        run = record.dagster_run
        steps = sorted(instance.get_run_step_stats(run.run_id), key=lambda s: -(s.end_time or 0) + (s.start_time or 0))
        rows.append({
            "run": run.run_id[:8], "launched_by": run.tags.get("dagster/sensor_name", "?"),
            "partition": run.tags.get("dagster/partition"), "status": run.status.value,
            "assets": len(run.asset_selection or []), "checks": len(run.asset_check_selection or []),
            "created_s": round(created - landed_at, 1),
            "queued_s": round((record.start_time or created) - created, 1),
            "ran_s": round((record.end_time or time.time()) - (record.start_time or created), 1),
            "ended_s": round((record.end_time or time.time()) - landed_at, 1),
            "slowest_steps_s": {s.step_key: round(s.end_time - s.start_time, 1)
                                for s in steps[:8] if s.end_time and s.start_time},
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, help="a RECSYS_HOME `make pipeline` built on the default data (its "
                                                  "next day lands there); default: a new one in a temp folder")
    parser.add_argument("--timeout", type=int, default=1200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    try:
        home = prepared_home(args.home.resolve() if args.home else None, work)
        day, table = next_day_file(home)
        releases = ReleaseStore(SQLiteKV(home / "serving" / "serving.sqlite"))
        before = releases.current()
        users = table.to_pandas()["user_id"].value_counts().index[:300].tolist()
        env = {"RECSYS_HOME": str(home)}
        with serve_process(home, env=env) as url, daemon_process(home, env) as daemon, Load(url, users) as load:
            time.sleep(45)  # the daemon's sensors take stock of what is there first
            instance = DagsterInstance.from_config(str(home / "dagster"))
            landed_at = time.time()
            LocalLandingZone(home / "landing").write_parquet(review_file_name(day), table)
            print(f"landed {review_file_name(day)} ({table.num_rows} reviews); waiting for its release", flush=True)
            while (current := releases.current()) is None or current.day != str(day):
                assert daemon.poll() is None, "the daemon exited"
                runs = run_breakdown(instance, landed_at)
                assert time.time() - landed_at < args.timeout and not any(r["status"] == "FAILURE" for r in runs), \
                    json.dumps(runs, indent=1)
                time.sleep(2)
            published_at = time.time()
            while current.id not in load.releases:
                assert time.time() - published_at < 120, "the service never moved to the new release"
                time.sleep(0.2)
            served_at = load.releases[current.id]
            # Let what the release started finish (the freshness checks) before the daemon stops.
            while any(r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
                      for r in run_breakdown(instance, landed_at)) and time.time() - served_at < 180:
                time.sleep(2)
        runs = run_breakdown(instance, landed_at)
        evaluation = {d: json.loads((home / "evaluation" / f"{d}.json").read_text())["models"]
                      for d in (before.day if before else None, str(day)) if d}
        promotion = instance.get_latest_materialization_event(AssetKey("promotion")).asset_materialization
        result = {
            "data": {"day": str(day), "reviews": table.num_rows, "previous_release_day": before.day if before else None},
            "total_s": round(served_at - landed_at, 1),
            "target_s": TARGET_S,
            "release_published_s": round(published_at - landed_at, 1),
            "serving_switch_s": round(served_at - published_at, 1),
            "requests": {"ok": load.ok, "failed": load.failed},
            "runs": runs,
            "promotion": {k: v.value for k, v in promotion.metadata.items() if k in ("promoted", "reason")},
            "evaluation_ndcg@10": {d: {m: round(v["ndcg@10"], 4) for m, v in models.items()}
                                   for d, models in evaluation.items()},
        }
        write_result("freshness", result)
        print(f"\nfile -> served release: {result['total_s']} s (target {TARGET_S} s: "
              f"{'MET' if result['total_s'] <= TARGET_S else 'MISSED'}); failed requests {load.failed} of "
              f"{load.ok + load.failed}")
        for row in runs:
            print(f"  run {row['run']} by {row['launched_by']}: created +{row['created_s']} s, queued "
                  f"{row['queued_s']} s, ran {row['ran_s']} s ({row['assets']} assets, {row['checks']} checks)")
            for step, seconds in row["slowest_steps_s"].items():
                print(f"      {step}: {seconds} s")
        print(f"  serving switch (published -> answered): {result['serving_switch_s']} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

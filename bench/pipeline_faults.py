"""The fault suite's pipeline faults, for `make soak` (bench/reliability.py): with `recsys serve` answering a
closed-loop load over a home,

* two `recsys pipeline` on the same home and day at once (the second waits for the first, then runs);
* the Dagster daemon killed while a run it launched is in progress, then started again: the `dagster-daemon`
  process alone (kill -9; `dagster dev` then stops its other services), and `dagster dev`'s whole process
  group (kill -9), each while the automation run of a newly landed day is in its model steps;
* then one more day lands: it must still go through.

For each: requests failed, what was served meanwhile (release ids), time to recover (until the service serves
the release of the newest day), and every row of the warehouse exactly once (row counts per table against the
landed files and a single run's reference).

    python bench/pipeline_faults.py [--out bench/results/pipeline_faults.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import psutil
from conftest import Home
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from recsys_assets.data.generator import GeneratorConfig
from recsys_assets.data.schema import review_file_name
from recsys_assets.serving.config import serving_kv
from recsys_assets.serving_data.release import ReleaseStore
from recsys_assets.settings import REPO_ROOT
from recsys_assets.warehouse.stores import DuckDBWarehouse
from tests.support.daemon import daemon_process
from tests.support.faults import ClosedLoopLoad, FaultResult, _p99_ms, _served, serving_release
from tests.support.processes import serve_process

# SMALL's data over 9 days: 6 loaded first, then one per fault and one after them.
DATA = GeneratorConfig(users=400, items=150, days=9, reviews=6_000, start=date(2024, 1, 1), seed=7)
FIRST_DAYS = 6
TABLES = ("raw.raw_reviews", "main.stg_reviews", "main.user_rating_stats", "main.parent_asin_rating_stats")
DAY_DEADLINE_S = float(os.environ.get("RECSYS_PIPELINE_FAULT_DEADLINE_S", "900"))  # a day through the daemon's chain on 2 busy cores: ~3 min; a stuck run never finishes


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("RECSYS_START_DATE", None)
    return env


def _pipeline(home: Home, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recsys_assets.cli", "pipeline"], env=_env(home.path), cwd=REPO_ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def row_counts(home: Home) -> dict[str, int]:
    """Rows per warehouse table, and rows that appear more than once (whole-row duplicates)."""
    counts = {}
    with DuckDBWarehouse(home.settings.warehouse_path).connect(read_only=True) as con:
        for table in TABLES:
            counts[table] = con.execute(f"select count(*) from {table}").fetchone()[0]
            counts[f"{table} duplicated"] = con.execute(
                f"select count(*) - (select count(*) from (select distinct * from {table})) from {table}").fetchone()[0]
    return counts


def landed_rows(home: Home) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in home.landing.path.glob("recsys_data_upto_*.parquet"))


def _measure(name: str, load: ClosedLoopLoad, started: float, fault_over: float, recovered_at: float | None,
             notes: dict) -> FaultResult:
    answers = load.between(started, time.monotonic())
    failed = sum(1 for a in answers if a.status != 200)
    return FaultResult(fault=name, requests=len(answers), failed=failed,
                       failed_share=round(failed / len(answers), 5) if answers else 1.0,
                       recovery_s=None if recovered_at is None else round(max(recovered_at - fault_over, 0.0), 1),
                       served=_served(answers), p99_ms=_p99_ms(answers), notes=notes)


def _wait_serving_day(releases: ReleaseStore, url: str, day: date, deadline_s: float) -> float | None:
    """Until the service answers with a published release of `day`; when (monotonic), None on timeout."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        current = releases.current()
        if current is not None and current.day == str(day) and serving_release(url, current.id):
            return time.monotonic()
        time.sleep(2)
    return None


def two_pipelines_at_once(home: Home, load: ClosedLoopLoad, url: str, releases: ReleaseStore) -> FaultResult:
    reference = row_counts(home)
    started = time.monotonic()
    first = _pipeline(home, home.path / "logs" / "fault-pipeline-1.out")
    time.sleep(5)
    second = _pipeline(home, home.path / "logs" / "fault-pipeline-2.out")
    codes = [first.wait(), second.wait()]
    over = time.monotonic()
    recovered = _wait_serving_day(releases, url, date.fromisoformat(releases.current().day), 60)
    second_out = (home.path / "logs" / "fault-pipeline-2.out").read_text()
    after = row_counts(home)
    return _measure("two `recsys pipeline` on the same home and day at once", load, started, over, recovered, {
        "exit_codes": codes, "second_waited": "waiting for it" in second_out,
        "second_said": next((line for line in second_out.splitlines() if "waiting for it" in line), None),
        "rows_before": reference, "rows_after": after, "rows_exactly_once": after == reference,
        "release_after": releases.current().id})


def _runs(instance: DagsterInstance) -> list[dict]:
    return [{"run": r.run_id[:8], "status": r.status.value, "retry_of": r.tags.get("dagster/parent_run_id", "")[:8],
             "sensor": r.tags.get("dagster/sensor_name")} for r in instance.get_runs()]


def _in_model_steps(instance: DagsterInstance, day: date) -> bool:
    """A run is in progress and the day's training_dataset is done: the model steps are running."""
    if not instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        return False
    event = instance.get_latest_materialization_event(AssetKey("training_dataset"))
    return event is not None and event.asset_materialization.partition == str(day)


def _daemon_child(dev: subprocess.Popen) -> psutil.Process:
    for child in psutil.Process(dev.pid).children(recursive=True):
        if "dagster._daemon" in " ".join(child.cmdline()):
            return child
    raise RuntimeError("dagster-daemon not found under dagster dev")


def daemon_killed_mid_run(home: Home, load: ClosedLoopLoad, url: str, releases: ReleaseStore, day: date,
                          held: dict, whole_group: bool) -> FaultResult:
    """Lands `day` with `dagster dev` running, kills the daemon (or the whole group) once the day's run is in its
    model steps, starts `dagster dev` again, and waits for the day's release."""
    instance = DagsterInstance.from_config(str(home.path / "dagster"))
    log = home.path / "logs" / f"fault-daemon-{day}.log"
    started = time.monotonic()
    with daemon_process(home.path, log_path=log) as dev:
        time.sleep(20)  # the sensors take stock of what is there
        home.landing.write_parquet(review_file_name(day), held[day])
        deadline = time.monotonic() + DAY_DEADLINE_S
        while not _in_model_steps(instance, day):
            assert dev.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        killed_run = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))[0].run_id
        if whole_group:
            os.killpg(dev.pid, signal.SIGKILL)
        else:
            _daemon_child(dev).kill()
        killed_at = time.monotonic()
        try:
            dev.wait(timeout=60)  # dagster dev stops its webserver and code server once its daemon is gone
        except subprocess.TimeoutExpired:
            pass
        # What a user finds then (a run worker may outlive its daemon), left running while `make dev` starts again.
        survivors = [" ".join(p.info["cmdline"][1:5]) for p in psutil.process_iter(["cmdline", "environ"])
                     if _of_home(p, home.path)]
        restarted = time.monotonic()
        with daemon_process(home.path, log_path=log):
            recovered = _wait_serving_day(releases, url, day, DAY_DEADLINE_S)
            runs = _runs(instance)
    killed = instance.get_run_by_id(killed_run)
    notes = {"killed": "dagster dev's process group (kill -9)" if whole_group else "dagster-daemon (kill -9)",
             "killed_run": killed_run[:8], "killed_run_status": killed.status.value,
             "killed_after_s": round(killed_at - started, 1), "down_s": round(restarted - killed_at, 1),
             "processes_of_the_home_left_running": survivors, "runs": runs,
             "day_served_after_restart_s": None if recovered is None else round(recovered - restarted, 1),
             "rows": row_counts(home), "landed_rows": landed_rows(home)}
    notes["rows_exactly_once"] = (notes["rows"]["raw.raw_reviews"] == notes["landed_rows"]
                                  and not any(v for k, v in notes["rows"].items() if k.endswith("duplicated")))
    name = f"Dagster {'dev process group' if whole_group else 'daemon'} killed mid-run, then started again"
    return _measure(name, load, started, restarted, recovered, notes)


def _of_home(proc: psutil.Process, home: Path) -> bool:
    try:
        return "dagster" in " ".join(proc.info["cmdline"] or []) and \
            (proc.info["environ"] or {}).get("RECSYS_HOME") == str(home)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def next_day_goes_through(home: Home, load: ClosedLoopLoad, url: str, releases: ReleaseStore, day: date,
                          held: dict) -> FaultResult:
    started = time.monotonic()
    with daemon_process(home.path, log_path=home.path / "logs" / f"next-day-{day}.log"):
        time.sleep(20)
        home.landing.write_parquet(review_file_name(day), held[day])
        recovered = _wait_serving_day(releases, url, day, DAY_DEADLINE_S)
    notes = {"rows": row_counts(home), "landed_rows": landed_rows(home)}
    notes["rows_exactly_once"] = notes["rows"]["raw.raw_reviews"] == notes["landed_rows"]
    return _measure("the next day after the daemon faults", load, started, started, recovered, notes)


def pipeline_faults(workdir: Path | None = None, clients: int = 3) -> list[dict]:
    home = Home(Path(workdir or tempfile.mkdtemp(prefix="bench-pipeline-faults-")) / "home")
    days = home.write_generated(DATA)
    held = {}
    for day in days[FIRST_DAYS:]:  # landed later, one by one
        held[day] = home.landing.read_parquet(review_file_name(day))
        (home.landing.path / review_file_name(day)).unlink()
    (home.path / "logs").mkdir(parents=True, exist_ok=True)
    assert _pipeline(home, home.path / "logs" / "first-pipeline.out").wait() == 0, "the first pipeline failed"
    releases = ReleaseStore(serving_kv(home.settings))
    users = DuckDBWarehouse(home.settings.warehouse_path).query(
        "select user_id from raw.raw_reviews group by 1 order by count(*) desc limit 100").column(0).to_pylist()
    results = []
    with serve_process(home.path, env={"RECSYS_RELOAD_INTERVAL_S": "1"}) as url:
        with ClosedLoopLoad(url, users, clients=clients) as load:
            for step in (lambda: two_pipelines_at_once(home, load, url, releases),
                         lambda: daemon_killed_mid_run(home, load, url, releases, days[FIRST_DAYS], held, False),
                         lambda: daemon_killed_mid_run(home, load, url, releases, days[FIRST_DAYS + 1], held, True),
                         lambda: next_day_goes_through(home, load, url, releases, days[FIRST_DAYS + 2], held)):
                result = step()
                print(json.dumps(replace(result, notes={k: v for k, v in result.notes.items() if k != "runs"})
                                 .as_dict()), flush=True)
                results.append(result.as_dict())
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "pipeline_faults.json"))
    parser.add_argument("--workdir", help="where the home goes (default: a new temporary folder)")
    args = parser.parse_args()
    results = pipeline_faults(Path(args.workdir) if args.workdir else None)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

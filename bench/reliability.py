"""`make soak`: the fault suite run longer, then a soak; figures to bench/results/reliability.json.

    python bench/reliability.py [--home RECSYS_HOME] [--minutes 10] [--switch-every 120] [--hold 20]

1. The fault suite (tests/reliability/test_faults.py, test_redis_faults.py) with each fault held `--hold` seconds
   under load.
2. The soak: `recsys serve` over a home with a published release (default: `make demo`'s data through
   `recsys pipeline`), a steady closed-loop load for `--minutes`, the release switched every `--switch-every`
   seconds (two releases in turn). Targets: 0 errors, every serving process's memory flat within 10% (the
   second window against the last), p99 of each window within 20% of the first switch window's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from common import write_result
from pipeline_faults import pipeline_faults
from serving import prepare_home

from recsys_assets.serving.config import serving_kv
from recsys_assets.serving_data.release import Release, ReleaseStore
from recsys_assets.settings import REPO_ROOT, Settings
from recsys_assets.warehouse.stores import DuckDBWarehouse
from tests.support.faults import ClosedLoopLoad, serving_release
from tests.support.processes import serve_process, serving_processes

MEMORY_GROWTH, P99_DRIFT = 0.10, 0.20
FAULT_MODULES = ("tests/reliability/test_faults.py", "tests/reliability/test_redis_faults.py")


def fault_suite(hold_s: float) -> list[dict]:
    out = Path(tempfile.mkdtemp(prefix="bench-faults-")) / "faults.json"
    env = {**os.environ, "RECSYS_FAULT_HOLD_S": str(hold_s), "RECSYS_RELIABILITY_RESULTS": str(out)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", *FAULT_MODULES],
                         cwd=REPO_ROOT, env=env)
    results = json.loads(out.read_text()) if out.exists() else []
    return [{**r, "suite_passed": run.returncode == 0} for r in results]


def memory_mb(processes: list[psutil.Process]) -> dict[str, float]:
    sample = {}
    for proc in processes:
        try:
            sample[f"{proc.pid}:{proc.name()}"] = proc.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    return sample


def p99_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 1) if ordered else 0.0


def soak(home: Path, minutes: float, switch_every_s: float, clients: int) -> dict:
    releases = ReleaseStore(serving_kv(Settings(home=home, env="local")))
    first = releases.current()
    assert first is not None, f"{home} has no published release: run the pipeline first"
    # Two releases in turn: the same models, the canary on and off (a new id, so every replica reloads).
    other = Release(**{**first.__dict__, "published_at": "",
                       "challengers": {} if first.challengers else {"ranker": first.models["ranker"]}})
    users = DuckDBWarehouse(Settings(home=home, env="local").warehouse_path).query(
        "select user_id from raw.raw_reviews group by 1 order by count(*) desc limit 300").column(0).to_pylist()
    windows, memory = [], []
    with serve_process(home, env={"RECSYS_RELOAD_INTERVAL_S": "1", "RECSYS_CANARY_SHARE": "0.1"}) as url:
        processes = serving_processes(home)
        with ClosedLoopLoad(url, users, clients=clients) as load:
            started = time.monotonic()
            window, n = started, 0
            while time.monotonic() - started < minutes * 60:
                time.sleep(10)
                memory.append(memory_mb(processes))
                if time.monotonic() - window >= switch_every_s:
                    answers = load.between(window, time.monotonic())
                    windows.append({"window": n, "requests": len(answers),
                                    "errors": sum(1 for a in answers if a.status != 200),
                                    "p99_ms": p99_ms([a.latency_s for a in answers])})
                    target = other if n % 2 == 0 else first
                    releases.publish(target)
                    switched = time.monotonic()
                    while not serving_release(url, target.id) and time.monotonic() - switched < 60:
                        time.sleep(0.5)
                    windows[-1]["switch_s"] = round(time.monotonic() - switched, 1)
                    print(json.dumps(windows[-1]), flush=True)
                    window, n = time.monotonic(), n + 1
            errors = sum(1 for a in load.answers if a.status != 200)
            total = len(load.answers)
    releases.publish(first)
    per_window = len(memory) // max(len(windows), 1) or 1
    second = memory[per_window:2 * per_window] or memory[:1]
    last = memory[-per_window:]
    growth = {}
    for key in last[-1]:
        before = [s[key] for s in second if key in s]
        if before:
            growth[key] = round(max(s[key] for s in last if key in s) / max(before) - 1, 3)
    baseline = windows[0]["p99_ms"] if windows else 0.0
    drift = [round(w["p99_ms"] / baseline - 1, 3) for w in windows] if baseline else []
    return {"minutes": minutes, "switch_every_s": switch_every_s, "clients": clients, "requests": total,
            "errors": errors, "windows": windows, "memory_growth_by_process": growth,
            "max_memory_growth": max(growth.values(), default=0.0), "p99_drift": drift,
            "targets_met": errors == 0 and max(growth.values(), default=0.0) <= MEMORY_GROWTH
            and all(d <= P99_DRIFT for d in drift)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", help="a RECSYS_HOME with a published release (default: generate one)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--switch-every", type=float, default=120.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds each fault is held")
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--skip-pipeline-faults", action="store_true",
                        help="not the pipeline's faults (bench/pipeline_faults.py, ~20 min on its own small home)")
    args = parser.parse_args()
    faults = [] if args.skip_faults else fault_suite(args.hold)
    if not args.skip_faults and not args.skip_pipeline_faults:
        # Two `recsys pipeline` at once, the daemon killed mid-run, the next day: its own home, its own service.
        faults += pipeline_faults()
    result = {"faults": faults, "soak": soak(prepare_home(args), args.minutes, args.switch_every, args.clients)}
    write_result("reliability", result)
    for fault in faults:
        print(f"{fault['fault']}: {fault['failed']}/{fault['requests']} failed, recovered in {fault['recovery_s']} s, "
              f"served {fault['served']}")
    s = result["soak"]
    print(f"soak: {s['errors']}/{s['requests']} errors, memory growth max {s['max_memory_growth']:.1%}, "
          f"p99 drift {s['p99_drift']}, targets met: {s['targets_met']}")


if __name__ == "__main__":
    main()

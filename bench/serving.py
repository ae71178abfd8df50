"""Serving benchmark: `wrk` (a C load generator, a few % of a core) on /recs/u2i/rerank (top_k_retrieval=100,
count=10) for the 300 most active users in turn, at 1, 10, 50 and 200 connections, against

* Ray Serve as `recsys serve` runs it (HAProxy ingress, one replica per core, bounded queues);
* Ray Serve as it ran before this issue (one replica answering on the port itself, no queue bound), with
  today's code: what the second core and HAProxy add;
* the same app on bare uvicorn with as many worker processes as replicas (the overhead baseline),
* Ray Serve as `recsys serve` runs it with its telemetry off (RECSYS_TELEMETRY=0): what metrics cost,

all in the same run: requests/s, p50/p90/p99 latency, answers by status (503 = refused by load shedding),
client timeouts (5 s), and the server's CPU milliseconds per answered request (its whole process tree).
Server-side stage timings (debug=true) say where a request's time goes. Writes bench/results/serving.json
and prints the table and the Ray Serve / bare uvicorn ratio.

    python bench/serving.py [--home RECSYS_HOME] [--seconds 15] [--levels 1,10,50,200]
    python bench/serving.py --telemetry-cost [--rounds 5] [--home ...]   # only telemetry on/off, 1 and 10 clients

--telemetry-cost alternates on and off (on, off, then off, on, ...: a drift of the shared machine falls on both)
and compares each round's on / off pair, median over the rounds: rerank p50 at 1 client, throughput and server
CPU per answer at 10 clients (target: at most 5% worse).
Writes bench/results/serving_telemetry.json.

Without --home it generates data (20k users, 5k items, 60 days: `make demo`'s) and runs `recsys pipeline`.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The repository root, for the tests' helpers (tests.support): `python bench/x.py` puts only bench/ on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np
import psutil
from common import write_result

from recsys_assets.serving.ports import server_port
from recsys_assets.settings import Settings
from recsys_assets.warehouse.stores import DuckDBWarehouse
from tests.support.processes import stop_process_group, wait_ready
from tests.support.wrk import run_wrk, wrk_available

LEVELS = (1, 10, 50, 200)
BENCH_DIR = str(Path(__file__).resolve().parent)  # uvicorn imports the baseline, bare_app.py, from here
TELEMETRY_OFF = {"RECSYS_TELEMETRY": "0"}
TARGETS = {"p99_ms_at_1": 15.0, "rps_at_10": 250.0, "p99_ms_at_10": 60.0, "timeouts_at_50": 0,
           "p99_ms_at_50": 300.0, "refused_share_at_50": 0.05, "ray_over_bare_rps_at_10": 0.95}


def prepare_home(args) -> Path:
    if args.home:
        return Path(args.home).resolve()
    home = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "recsys_assets.cli", *a], env=env, check=True,  # noqa: E731
                                    stdout=subprocess.DEVNULL)
    run("init-dagster-home")
    run("generate")
    started = time.perf_counter()
    run("pipeline")
    print(f"pipeline on generated data: {time.perf_counter() - started:.0f} s", flush=True)
    return home


def most_active_users(home: Path, n: int = 300) -> Path:
    """The `n` users with the most reviews, one per line (what the wrk script reads)."""
    warehouse = DuckDBWarehouse(Settings(home=home, env="local").warehouse_path)
    with warehouse.connect(read_only=True) as con:
        users = [r[0] for r in con.execute(
            "select user_id from raw.raw_reviews group by 1 order by count(*) desc, 1 limit ?", [n]).fetchall()]
    path = home / "bench-users.txt"
    path.write_text("\n".join(users) + "\n")
    return path


def cpu_seconds(root: psutil.Process) -> float:
    """User + system CPU of a process and its descendants (Ray's raylet, controller and replicas)."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def wrk(url: str, users: Path, clients: int, seconds: float, server: psutil.Process) -> dict:
    before = cpu_seconds(server)
    result = run_wrk(url, users, clients, seconds)
    cpu = cpu_seconds(server) - before
    answered = sum(result["statuses"].values())
    ok = result["statuses"].get("200", 0)
    return {"clients": clients, "requests_per_s": round(ok / result["seconds"], 1),
            "p50_ms": result["p50_ms"], "p90_ms": result["p90_ms"], "p99_ms": result["p99_ms"],
            "max_ms": result["max_ms"], "statuses": result["statuses"], "timeouts": result["timeouts"],
            "socket_errors": result["connect_errors"] + result["read_errors"],
            "refused_share": round(result["statuses"].get("503", 0) / max(answered, 1), 4),
            "server_cpu_ms_per_answer": round(1000 * cpu / max(answered, 1), 2)}


def stage_profile(url: str, users: list[str]) -> dict:
    """Server-side stage timings (debug=true) beside the client's latency, one request at a time."""
    stages, client_ms = {}, []
    with httpx.Client(base_url=url, timeout=30) as c:
        for user in users:
            started = time.perf_counter()
            body = c.get("/recs/u2i/rerank", params={"user_id": user, "count": 10, "debug": True}).json()
            client_ms.append((time.perf_counter() - started) * 1000)
            for k, v in body.get("debug", {}).get("timings", {}).items():
                stages.setdefault(k, []).append(v)
    means = {k: round(float(np.mean(v)), 3) for k, v in stages.items()}
    return {"stages_mean_ms": means, "recommender_total_ms": round(sum(means.values()), 3),
            "client_latency_mean_ms": round(float(np.mean(client_ms)), 3)}


def measure(name: str, command: list[str], env: dict, url: str, users_file: Path, levels, seconds: float) -> dict:
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, proc)
        server = psutil.Process(proc.pid)
        users = users_file.read_text().split()
        wrk(url, users_file, 4, 3, server)  # warm the caches and connections
        out = {"profile": stage_profile(url, users[:100])}
        for clients in levels:
            out[str(clients)] = wrk(url, users_file, clients, seconds, server)
            try:  # still up and ready after the load? (recorded, not fatal: the run goes on)
                with httpx.Client(timeout=30) as c:
                    out[str(clients)]["ready_after"] = c.get(f"{url}/readyz").status_code == 200
            except httpx.HTTPError as exc:
                out[str(clients)]["ready_after"] = f"no answer: {type(exc).__name__}"
            print(f"  {name}, {clients:>3} clients: {out[str(clients)]}", flush=True)
        return out
    finally:
        stop_process_group(proc)


def telemetry_ratios(on: list[dict], off: list[dict]) -> dict:
    """On / off for each round's pair (run one after the other: a slow drift of the shared machine cancels out),
    median over the rounds: rerank p50 at 1 client, requests/s and the server's CPU per answer at 10 clients (CPU
    per answer bounds throughput on a full machine and is far less noisy than req/s)."""
    def paired(clients, key):
        return round(float(np.median([a[clients][key] / b[clients][key] for a, b in zip(on, off)])), 3)

    ratios = {}
    if "1" in on[0]:
        ratios["p50_ms_at_1_on_over_off"] = paired("1", "p50_ms")
    if "10" in on[0]:
        ratios["rps_at_10_on_over_off"] = paired("10", "requests_per_s")
        ratios["cpu_ms_per_answer_at_10_on_over_off"] = paired("10", "server_cpu_ms_per_answer")
    return ratios


def telemetry_cost(args, home: Path, users: Path, levels) -> None:
    """`recsys serve` with telemetry on and off, alternating, `args.rounds` times each."""
    base_env = {**os.environ, "RECSYS_HOME": str(home)}
    serve = [sys.executable, "-m", "recsys_assets.cli", "serve"]
    runs: dict[str, list] = {"on": [], "off": []}
    for n in range(args.rounds):
        for mode in (("on", "off") if n % 2 == 0 else ("off", "on")):
            port = server_port()
            env = {**base_env, "RECSYS_SERVE_PORT": str(port), **(TELEMETRY_OFF if mode == "off" else {})}
            print(f"telemetry {mode}, round {n + 1}:", flush=True)
            runs[mode].append(measure(f"telemetry_{mode}", serve, env, f"http://127.0.0.1:{port}", users, levels,
                                      args.seconds))
    ratios = telemetry_ratios(runs["on"], runs["off"])
    met = {k: (v >= 0.95 if k.startswith("rps") else v <= 1.05) for k, v in ratios.items()}
    write_result("serving_telemetry", {"home": str(home), "replicas": os.cpu_count() or 1, "rounds": args.rounds,
                                       "seconds_per_level": args.seconds, "runs": runs, "ratios": ratios,
                                       "target": "p50 at 1 client and CPU per answer at most 5% higher, rps at 10 at most 5% lower",
                                       "met": met})
    for mode, results in runs.items():
        for k, r in enumerate(results):
            print(f"telemetry {mode} round {k + 1}: " + ", ".join(
                f"{c} clients {r[c]['requests_per_s']} req/s p50 {r[c]['p50_ms']} ms" for c in map(str, levels)))
    print(f"telemetry on / off: {ratios}; targets met: {met}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", help="a RECSYS_HOME with a published release (default: generate one)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--levels", default=None, help=f"client counts (default {LEVELS}; 1,10 with --telemetry-cost)")
    parser.add_argument("--telemetry-cost", action="store_true",
                        help="only `recsys serve` with telemetry on and off (RECSYS_TELEMETRY=0)")
    parser.add_argument("--rounds", type=int, default=5, help="on/off pairs with --telemetry-cost")
    args = parser.parse_args()
    if not wrk_available():
        sys.exit("wrk is missing: `make system-packages` installs it")
    default_levels = "1,10" if args.telemetry_cost else ",".join(map(str, LEVELS))
    levels = [int(x) for x in (args.levels or default_levels).split(",")]
    home = prepare_home(args)
    users = most_active_users(home)
    if args.telemetry_cost:
        telemetry_cost(args, home, users, levels)
        return
    replicas = os.cpu_count() or 1
    base_env = {**os.environ, "RECSYS_HOME": str(home)}
    serve = [sys.executable, "-m", "recsys_assets.cli", "serve"]
    results = {}
    for name, extra in (("ray_serve", {}),
                        ("ray_serve_1_replica", {"RECSYS_SERVE_REPLICAS": "1", "RECSYS_SERVE_INGRESS": "direct",
                                              "RECSYS_SERVE_MAX_QUEUED": "-1", "RECSYS_SERVE_MAX_ONGOING": "32"}),
                        ("ray_serve_telemetry_off", TELEMETRY_OFF)):
        port = server_port()
        print(f"{name}:", flush=True)
        results[name] = measure(name, serve, {**base_env, "RECSYS_SERVE_PORT": str(port), **extra},
                                f"http://127.0.0.1:{port}", users, levels, args.seconds)
    port = server_port()
    print(f"bare uvicorn, {replicas} workers:", flush=True)
    results["bare_uvicorn"] = measure(
        "bare_uvicorn", [sys.executable, "-m", "uvicorn", "bare_app:bare_app", "--factory", "--app-dir", BENCH_DIR,
                         "--host", "127.0.0.1", "--port", str(port), "--workers", str(replicas), "--loop", "asyncio",
                         "--log-level", "warning"], base_env, f"http://127.0.0.1:{port}", users, levels, args.seconds)

    ray, bare = results["ray_serve"], results["bare_uvicorn"]
    telemetry = telemetry_ratios([ray], [results["ray_serve_telemetry_off"]])
    ratio = {c: round(ray[c]["requests_per_s"] / max(bare[c]["requests_per_s"], 1e-9), 3) for c in map(str, levels)}
    reached = {}
    if "1" in ray:
        reached["p99_ms_at_1"] = ray["1"]["p99_ms"]
    if "10" in ray:
        reached.update(rps_at_10=ray["10"]["requests_per_s"], p99_ms_at_10=ray["10"]["p99_ms"],
                       ray_over_bare_rps_at_10=ratio["10"])
    if "50" in ray:
        reached.update(timeouts_at_50=ray["50"]["timeouts"], p99_ms_at_50=ray["50"]["p99_ms"],
                       refused_share_at_50=ray["50"]["refused_share"])
    at_least = {"rps_at_10", "ray_over_bare_rps_at_10"}
    met = {k: (v >= TARGETS[k] if k in at_least else v <= TARGETS[k]) for k, v in reached.items()}
    write_result("serving", {"home": str(home), "replicas": replicas, "users": "the 300 most active",
                             "endpoint": "/recs/u2i/rerank?top_k_retrieval=100&count=10",
                             "seconds_per_level": args.seconds, **results, "ray_serve_over_bare_rps": ratio,
                             "telemetry_on_over_off": telemetry, "targets": TARGETS, "reached": reached, "met": met})
    print(f"\n{'server':<18} {'clients':>7} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'503 %':>6} {'timeouts':>8} "
          f"{'cpu ms/req':>10}")
    for name, result in results.items():
        for c in map(str, levels):
            r = result[c]
            print(f"{name:<18} {c:>7} {r['requests_per_s']:>7} {r['p50_ms']:>7} {r['p99_ms']:>7} "
                  f"{100 * r['refused_share']:>6.1f} {r['timeouts']:>8} {r['server_cpu_ms_per_answer']:>10}")
    print(f"Ray Serve / bare uvicorn throughput: {ratio}; targets met: {met}")
    print(f"telemetry on / off (one run each): {telemetry}")
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Serving benchmark: closed-loop load on /recs/u2i/rerank (top_k_retrieval=100) at 1, 10 and 50 concurrent
clients against the Ray Serve app, then against the same app on bare uvicorn (one worker) in the same
script: p50/p99 latency, requests/s, errors, and the Ray Serve / bare ratio. Server-side stage timings
(debug=true) say where the time goes. Writes bench/results/serving.json.

    python bench/serving.py [--home RECSYS_HOME] [--seconds 15]

Without --home it generates data (8k users, 3k items, 30 days) and runs `recsys pipeline` on it first.
The load generator shares the machine's 2 cores with the server.
"""

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_result  # first: sets the partitions' start date

import aiohttp
import numpy as np

from recsys_assets.feature_store.redis_server import free_port
from recsys_assets.serving.config import serving_kv
from recsys_assets.serving.process import serve_process, stop_process_group, wait_ready
from recsys_assets.serving_data.candidates import SEQUENCE, CandidateStore
from recsys_assets.serving_data.release import ReleaseStore
from recsys_assets.settings import Settings

CONCURRENCY = (1, 10, 50)
TARGETS = {"p99_ms_at_1": 20.0, "rps_at_10": 150.0, "p99_ms_at_10": 100.0, "errors_at_50": 0}


def prepare_home(args) -> Path:
    if args.home:
        return Path(args.home).resolve()
    home = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "recsys_assets.cli", *a], env=env, check=True,  # noqa: E731
                                    stdout=subprocess.DEVNULL)
    run("init-dagster-home")
    run("generate", "--users", "8000", "--items", "3000", "--days", "30", "--reviews", "120000")
    started = time.perf_counter()
    run("pipeline")
    print(f"pipeline on generated data: {time.perf_counter() - started:.0f} s", flush=True)
    return home


def sample_users(home: Path, n: int = 1000) -> list[str]:
    kv = serving_kv(Settings(home, "local"))
    release = ReleaseStore(kv).current()
    users = CandidateStore(kv).ids(SEQUENCE, release.candidates[SEQUENCE])
    return random.Random(0).sample(users, min(n, len(users)))


async def closed_loop(url: str, users: list[str], clients: int, seconds: float) -> dict:
    """`clients` workers, each sending its next request when the last one is answered."""
    latencies, errors = [], 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker(k: int):
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                user = users[i % len(users)]
                i += clients
                started = time.perf_counter()
                try:
                    async with session.get(f"{url}/recs/u2i/rerank",
                                           params={"user_id": user, "top_k_retrieval": "100", "count": "10"}) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        elapsed = time.perf_counter() - began
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": clients, "requests": len(latencies), "errors": errors,
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2)}


def stage_profile(url: str, users: list[str], n: int = 200) -> dict:
    """Server-side stage timings (debug=true) against client-side latency, one request at a time."""
    import httpx

    stages, client_ms = {}, []
    with httpx.Client(base_url=url, timeout=30) as c:
        for user in users[:n]:
            started = time.perf_counter()
            body = c.get("/recs/u2i/rerank", params={"user_id": user, "count": 10, "debug": True}).json()
            client_ms.append((time.perf_counter() - started) * 1000)
            for k, v in body.get("debug", {}).get("timings", {}).items():
                stages.setdefault(k, []).append(v)
    means = {k: round(float(np.mean(v)), 3) for k, v in stages.items()}
    server = sum(means.values())
    return {"stages_mean_ms": means, "recommender_total_ms": round(server, 3),
            "client_latency_mean_ms": round(float(np.mean(client_ms)), 3),
            "http_and_framework_ms": round(float(np.mean(client_ms)) - server, 3)}


def measure(url: str, users: list[str], seconds: float) -> dict:
    asyncio.run(closed_loop(url, users, 4, 3))  # warm the caches and connections
    out = {"profile": stage_profile(url, users)}
    for clients in CONCURRENCY:
        out[str(clients)] = asyncio.run(closed_loop(url, users, clients, seconds))
        print(f"  {clients:>2} clients: {out[str(clients)]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", help="a RECSYS_HOME with a published release (default: generate one)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--replicas", type=int, default=1, help="Serve replicas (the bare baseline has one worker)")
    args = parser.parse_args()
    home = prepare_home(args)
    users = sample_users(home)

    print("Ray Serve:", flush=True)
    replicas = {"RECSYS_SERVE_REPLICAS": str(args.replicas)}
    with serve_process(home, env=replicas, log_path=home / "bench-serve.log") as url:
        ray_serve = measure(url, users, args.seconds)

    print("bare uvicorn:", flush=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "recsys_assets.serving.app:bare_app", "--factory",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env={**os.environ, "RECSYS_HOME": str(home)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        bare = measure(url, users, args.seconds)
    finally:
        stop_process_group(proc)

    ratios = {c: {"p50": round(ray_serve[c]["p50_ms"] / bare[c]["p50_ms"], 2),
                  "requests_per_s": round(ray_serve[c]["requests_per_s"] / bare[c]["requests_per_s"], 2)}
              for c in map(str, CONCURRENCY)}
    reached = {"p99_ms_at_1": ray_serve["1"]["p99_ms"], "rps_at_10": ray_serve["10"]["requests_per_s"],
               "p99_ms_at_10": ray_serve["10"]["p99_ms"], "errors_at_50": ray_serve["50"]["errors"]}
    met = {"p99_ms_at_1": reached["p99_ms_at_1"] <= TARGETS["p99_ms_at_1"],
           "rps_at_10": reached["rps_at_10"] >= TARGETS["rps_at_10"],
           "p99_ms_at_10": reached["p99_ms_at_10"] <= TARGETS["p99_ms_at_10"],
           "errors_at_50": reached["errors_at_50"] == TARGETS["errors_at_50"]}
    write_result("serving", {"home": str(home), "replicas": args.replicas,
                             "endpoint": "/recs/u2i/rerank?top_k_retrieval=100&count=10",
                             "seconds_per_level": args.seconds, "ray_serve": ray_serve, "bare_uvicorn": bare,
                             "ray_serve_over_bare": ratios, "targets": TARGETS, "reached": reached, "met": met})
    for c in map(str, CONCURRENCY):
        print(f"{c:>2} clients: Ray Serve p50 {ray_serve[c]['p50_ms']} ms / {ray_serve[c]['requests_per_s']} req/s, "
              f"bare uvicorn p50 {bare[c]['p50_ms']} ms / {bare[c]['requests_per_s']} req/s "
              f"-> Ray Serve/bare p50 {ratios[c]['p50']}x, throughput {ratios[c]['requests_per_s']}x")
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

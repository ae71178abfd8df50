"""Load on the rerank endpoint with `wrk` (a C load generator, a few % of a core: the server keeps the
machine), for the serving benchmark and the capacity tests: users from a file in turn, answers by status,
refusals with Retry-After, client timeouts, latency percentiles."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_rerank.lua")


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, users_file: Path, clients: int, seconds: float, timeout_s: float = 5.0) -> dict:
    """`clients` connections for `seconds` (closed loop: each sends its next request when answered).
    Returns wrk's figures: requests, seconds, p50/p90/p99/max_ms, timeouts, connect_errors, read_errors,
    refused_with_retry_after and statuses ({"200": n, "503": m, ...})."""
    if not wrk_available():
        raise FileNotFoundError("wrk is missing: `make system-packages` installs it (Debian package wrk)")
    command = ["wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{max(int(seconds), 1)}s", "--timeout",
               f"{timeout_s:g}s", "-s", str(SCRIPT), url]
    out = subprocess.run(command, env={**os.environ, "USERS_FILE": str(users_file)}, capture_output=True,
                         text=True, check=True).stdout
    found = re.search(r"^WRK_JSON (.*)$", out, re.M)
    if found is None:
        raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")
    return json.loads(found.group(1))

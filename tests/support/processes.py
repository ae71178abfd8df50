"""`recsys serve` as a child process, for tests and benchmarks: started on a loopback port, ready
when /readyz answers, stopped by its process group (Ray's own processes included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from recsys_assets.serving.ports import server_port


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"recsys serve exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")
        time.sleep(0.5)


@contextmanager
def serve_process(home: Path, env: dict[str, str] | None = None, port: int | None = None,
                  log_path: Path | None = None) -> Iterator[str]:
    """Yields the base URL of a running Ray Serve app over RECSYS_HOME=home."""
    port = port or server_port()
    child_env = {**os.environ, "RECSYS_HOME": str(home), "RECSYS_SERVE_PORT": str(port), **(env or {})}
    log = open(log_path or Path(home) / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "recsys_assets.cli", "serve"], env=child_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        stop_process_group(proc)
        log.close()


def stop_process_group(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM (serve shuts Ray down), then SIGKILL to whatever of the group is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def serving_processes(home: Path) -> list[psutil.Process]:
    """`recsys serve` of this home and every process under it (Ray's head, workers, replicas, HAProxy)."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if "recsys_assets.cli" in cmd and "serve" in cmd and proc.environ().get("RECSYS_HOME") == str(home):
                return [proc, *proc.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise RuntimeError("recsys serve not found")


def kill_service(home: Path) -> int:
    """kill -9 of `recsys serve` over home and everything under it at once (a machine or container lost):
    no handler runs, no stop, no cleanup. Returns how many processes were killed."""
    processes = serving_processes(home)
    for proc in processes:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=30)
    return len(processes)

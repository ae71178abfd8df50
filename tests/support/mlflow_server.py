"""A throwaway `mlflow server` process on 127.0.0.1 (a free port) over a SQLite store, for faults that need the
real server: stopping it, or making its store unreadable under it.

Stopped by its own process group (the server starts worker processes of its own).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from recsys_assets.serving.ports import free_port


@dataclass
class MlflowServer:
    url: str
    store: Path  # the SQLite file behind it
    process: subprocess.Popen

    def stop(self) -> None:
        """Kill it (and its workers) as an outage would; the port then refuses connections."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@contextmanager
def mlflow_server(folder: Path, timeout_s: float = 60.0) -> Iterator[MlflowServer]:
    folder.mkdir(parents=True, exist_ok=True)
    port, store = free_port(), folder / "mlflow.db"
    mlflow_exe = Path(sys.executable).parent / "mlflow"
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen([str(mlflow_exe), "server", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1", "--backend-store-uri", f"sqlite:///{store}",
                                 "--default-artifact-root", (folder / "artifacts").resolve().as_uri()],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", store, proc)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        server.stop()

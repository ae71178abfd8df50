"""The Dagster daemon (sensors, schedules, declarative automation) as a child process, for tests and
benchmarks: what `make dev` runs beside the UI, over one RECSYS_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys_assets.serving.process import stop_process_group
from recsys_assets.settings import REPO_ROOT


@contextmanager
def daemon_process(home: Path, env: dict[str, str] | None = None, log_path: Path | None = None) -> Iterator[
        subprocess.Popen]:
    """`dagster-daemon run` over the repository's workspace, RECSYS_HOME=home, DAGSTER_HOME=home/dagster."""
    home = Path(home)
    child_env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), **(env or {})}
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "recsys_assets.cli", "init-dagster-home"], env=child_env, check=True,
                   capture_output=True)
    log = open(log_path or home / "daemon.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-w", "workspace.yaml"], cwd=REPO_ROOT,
                            env=child_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop_process_group(proc)
        log.close()

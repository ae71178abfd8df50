"""What `make dev` runs (`dagster dev`: the UI, the daemon with its sensors, schedules and declarative
automation, and one code server both use) as a child process over one RECSYS_HOME, for tests and benchmarks.

Not the daemon alone (`dagster-daemon run -w workspace.yaml`): that one starts its own code server and
replaces it every minute (Dagster reloads a daemon's workspace every 60 s), importing the whole code location
again each time, ~20 s of CPU a minute that a 2-core machine takes from the runs. `dagster dev` keeps one code
server for both."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys_assets.serving.ports import free_port
from recsys_assets.settings import REPO_ROOT
from tests.support.processes import stop_process_group


@contextmanager
def daemon_process(home: Path, env: dict[str, str] | None = None, log_path: Path | None = None) -> Iterator[
        subprocess.Popen]:
    """`make dev`'s `dagster dev -w workspace.yaml` (UI on a free loopback port), RECSYS_HOME=home,
    DAGSTER_HOME=home/dagster; stopped with its whole process group."""
    home = Path(home)
    # The venv's tools first on PATH, as the Makefile puts them: under `dagster dev` the dbt project prepares
    # its manifest with the `dbt` it finds there.
    child_env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                 "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]), **(env or {})}
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "recsys_assets.cli", "init-dagster-home"], env=child_env, check=True,
                   capture_output=True)
    log = open(log_path or home / "daemon.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(free_port()),
                             "-w", "workspace.yaml"], cwd=REPO_ROOT, env=child_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop_process_group(proc)
        log.close()

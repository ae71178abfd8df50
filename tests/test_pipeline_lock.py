"""One `recsys pipeline` at a time per home: a second one waits for the first (an OS file lock under
RECSYS_HOME/locks), says whom it waits for, and runs once it is free. The full two-runs-at-once check (both
finish, every row once) is in the soak part: tests/reliability/test_pipeline_faults.py."""

import os
import signal
import subprocess
import sys
import threading
import time

from conftest import SMALL, Home

from recsys_assets.home_lock import HomeLock
from recsys_assets.settings import REPO_ROOT


def test_a_second_holder_waits_and_is_told_who_holds_it(tmp_path):
    first = HomeLock.for_home(tmp_path, "pipeline")
    first.acquire()
    seen, acquired = [], threading.Event()

    def second():
        HomeLock.for_home(tmp_path, "pipeline").acquire(on_wait=seen.append)
        acquired.set()

    thread = threading.Thread(target=second, daemon=True)
    thread.start()
    time.sleep(0.5)
    assert not acquired.is_set()
    assert seen and seen[0].pid == os.getpid() and seen[0].started is not None
    assert seen[0].describe("`recsys pipeline`").startswith(f"another `recsys pipeline` (pid {os.getpid()}, started ")
    first.release()
    assert acquired.wait(5)


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    path = tmp_path / "locks" / "pipeline.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom recsys_assets.home_lock import HomeLock\n"
                               f"HomeLock({str(path)!r}).acquire(); print('held', flush=True); time.sleep(600)"],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    waited = []
    lock = HomeLock(path)
    threading.Timer(1.0, holder.kill).start()  # kill -9: the kernel drops the flock
    assert lock.acquire(on_wait=waited.append) >= 0.5
    assert waited and waited[0].pid == holder.pid
    lock.release()
    holder.wait()


def _read_lines_until(proc: subprocess.Popen, needle: str, timeout_s: float, lines: list[str]) -> bool:
    """Reads proc's stdout (in a thread: readline blocks) until a line contains needle."""
    found = threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append(line)
            if needle in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    return found.wait(timeout_s)


def test_a_second_pipeline_waits_for_the_first_then_runs(tmp_path):
    """The lock held from here as a running `recsys pipeline` holds it: the CLI says so and waits, touching
    nothing; released, it starts its first stage (stopped there: the full run is the soak part's)."""
    home = Home(tmp_path / "home")
    home.write_generated(SMALL)
    lock = HomeLock.for_home(home.path, "pipeline")
    lock.acquire()
    env = {**os.environ, "RECSYS_HOME": str(home.path), "DAGSTER_HOME": str(home.path / "dagster")}
    env.pop("RECSYS_START_DATE", None)
    proc = subprocess.Popen([sys.executable, "-m", "recsys_assets.cli", "pipeline", "--skip-models"], env=env,
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    try:
        assert _read_lines_until(proc, "waiting for it", 60, lines), "".join(lines)
        assert f"another `recsys pipeline` (pid {os.getpid()}, started " in lines[-1], lines[-1]
        time.sleep(3)
        assert proc.poll() is None, "".join(lines)
        assert not (home.path / "warehouse.duckdb").exists() and not (home.path / "logs").exists()
        lock.release()
        assert _read_lines_until(proc, "[1/2] catalogue", 60, lines), "".join(lines)
        assert any("it finished after" in line for line in lines), "".join(lines)
        # ... and now it holds the lock itself (its Dagster child too).
        assert HomeLock.for_home(home.path, "pipeline").holder().pid == proc.pid
    finally:
        lock.release()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

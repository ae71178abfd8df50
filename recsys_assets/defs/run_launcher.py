"""Dagster's default run launcher with the run worker health check that run monitoring asks for.

Why: the default launcher has none, so a run whose worker process died (killed with `dagster dev`, out of
memory) stays STARTED until run monitoring's max runtime (2 h here), holding the single local run slot: no new
day goes through meanwhile. With this check the daemon's run monitoring marks such a run failed at its next
poll, and run retries start it again from the failed steps (re-materializing a day replaces its rows).

Named in DAGSTER_HOME/dagster.yaml (settings.DAGSTER_YAML); every Dagster process of the instance imports it,
so it imports nothing of the code location.
"""

from __future__ import annotations

import re

import psutil
from dagster import DagsterEventType, DagsterRun, DagsterRunStatus, DefaultRunLauncher, RunsFilter
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

# What the code server's run subprocess (and `dagster api execute_run`) logs first, with its pid.
_STARTED = re.compile(r"Started process for run \(pid: (\d+)\)")


def run_worker_pid(instance, run_id: str) -> tuple[int, float] | None:
    """(pid, when it was logged) of the run's newest worker, None before one started."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False).records
    for record in records:
        if (match := _STARTED.search(record.event_log_entry.message or "")) is not None:
            return int(match.group(1)), record.event_log_entry.timestamp
    return None


def worker_alive(pid: int, started_by: float) -> bool:
    """The process exists, is no zombie, and began before the run logged it (not a later process given the
    same pid)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= started_by + 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # another user's process: cannot tell, so not declared dead


def runs_in_progress(instance) -> list[DagsterRun]:
    """Runs of the instance that are starting or running with a live worker (the daemon's, `dagster dev`'s):
    a run whose worker is gone writes nothing more, whatever status it was left in."""
    records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]))
    live = []
    for record in records:
        worker = run_worker_pid(instance, record.dagster_run.run_id)
        if worker is None or worker_alive(*worker):
            live.append(record.dagster_run)
    return live


class LocalRunLauncher(DefaultRunLauncher):
    """Runs on this machine (the code server's subprocesses): their health is whether that process lives."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = run_worker_pid(self._instance, run.run_id)
        if worker is None:
            # Its worker has not logged itself yet. Said RUNNING: run monitoring fails a run on any other answer
            # (UNKNOWN included), and its start timeout already covers a worker that never comes.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker starting")
        pid, logged_at = worker
        if worker_alive(pid, logged_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker {pid} is running")
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker {pid} is gone (killed, or its machine "
                                    "restarted) while the run was in progress")

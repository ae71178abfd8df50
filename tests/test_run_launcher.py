"""A run whose worker process died (killed with `dagster dev`, out of memory) is failed by the daemon's run
monitoring at its next poll, so that run retries start it again and the single run slot is free: with Dagster's
default launcher it stayed STARTED until the 2-hour max runtime, and no new day went through meanwhile.

The instance is the one `recsys init-dagster-home` writes; the worker is a real process, killed with SIGKILL;
the monitoring step is Dagster's own (what its daemon calls every poll). The whole daemon killed mid-run is in
the soak part (bench/pipeline_faults.py)."""

import logging
import subprocess
import sys

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.events import EngineEventData
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from recsys_assets.settings import Settings, init_dagster_home


def _instance(tmp_path, monkeypatch) -> DagsterInstance:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    init_dagster_home(Settings(home=tmp_path, env="local"))
    return DagsterInstance.from_config(str(tmp_path / "dagster"))


def _started_run(instance: DagsterInstance, worker: subprocess.Popen):
    run = create_run_for_test(instance, job_name="__ASSET_JOB", status=DagsterRunStatus.STARTED)
    # What the code server's run subprocess logs first (dagster/_grpc/impl.py).
    instance.report_engine_event(f"Started process for run (pid: {worker.pid}).", run,
                                 EngineEventData.in_process(worker.pid))
    return run


def _monitor(instance: DagsterInstance, run) -> DagsterRunStatus:
    record = instance.get_run_records()[0]
    assert record.dagster_run.run_id == run.run_id
    monitor_started_run(instance, None, record, logging.getLogger("test"))
    return instance.get_run_by_id(run.run_id).status


def test_a_run_whose_worker_was_killed_is_failed_at_the_next_poll(tmp_path, monkeypatch):
    instance = _instance(tmp_path, monkeypatch)
    assert instance.run_launcher.supports_check_run_worker_health
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        run = _started_run(instance, worker)
        assert _monitor(instance, run) == DagsterRunStatus.STARTED  # alive: left alone
        worker.kill()
        worker.wait()
        assert _monitor(instance, run) == DagsterRunStatus.FAILURE
        failure = [e.message for e in instance.all_logs(run.run_id) if "is gone" in (e.message or "")]
        assert failure and f"run worker {worker.pid} is gone" in failure[0]
    finally:
        worker.kill()


def test_a_run_whose_worker_has_not_logged_itself_yet_is_left_running(tmp_path, monkeypatch):
    instance = _instance(tmp_path, monkeypatch)
    run = create_run_for_test(instance, job_name="__ASSET_JOB", status=DagsterRunStatus.STARTED)
    assert _monitor(instance, run) == DagsterRunStatus.STARTED


def test_recsys_pipeline_waits_for_a_run_the_daemon_has_in_progress(tmp_path, monkeypatch):
    """`recsys pipeline` and the daemon's automation write the same warehouse and models: before each of its
    stages the pipeline waits for the instance's runs in progress, says which, and ignores one whose worker is
    gone (that run writes nothing more; run monitoring fails it)."""
    import threading

    from recsys_assets.cli import wait_for_runs_in_progress
    from recsys_assets.defs.run_launcher import runs_in_progress

    instance = _instance(tmp_path, monkeypatch)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _started_run(instance, dead)
    assert runs_in_progress(instance) == []
    assert wait_for_runs_in_progress(print) < 1

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        run = _started_run(instance, worker)
        assert [r.run_id for r in runs_in_progress(instance)] == [run.run_id]
        said = []
        threading.Timer(2.0, worker.kill).start()
        waited = wait_for_runs_in_progress(said.append, poll_s=0.2)
        assert waited >= 1.5
        assert said == [f"waiting for Dagster run {run.run_id[:8]} (__ASSET_JOB, STARTED) to finish"]
    finally:
        worker.kill()
        worker.wait()

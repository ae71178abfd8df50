"""A failed Dagster run reaches a real Alertmanager (Debian's prometheus-alertmanager on 127.0.0.1) through
`run_failure_alert`; without RECSYS_ALERTMANAGER_URL the sensor only logs."""

import json
import shutil
import subprocess
import time
import urllib.request

import pytest
from dagster import DagsterInstance, DefaultSensorStatus, asset, build_run_status_sensor_context, materialize

from recsys_assets.defs.automation.run_failure_alert import run_failure_alert
from recsys_assets.serving.ports import free_port
from recsys_assets.settings import REPO_ROOT

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
CONFIG = REPO_ROOT / "deploy" / "observability" / "alertmanager.yml"


@pytest.fixture
def alertmanager(tmp_path) -> str:
    if ALERTMANAGER is None:
        pytest.fail("prometheus-alertmanager is missing: `make setup` installs it (scripts/system-packages.sh)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "alertmanager.log", "wb")
    proc = subprocess.Popen([ALERTMANAGER, f"--config.file={CONFIG}", f"--storage.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "alertmanager.log").read_text()[-2000:])
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _alerts(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as answer:
        return json.loads(answer.read())


@asset
def breaks_on_purpose():
    raise ValueError("the landing file is unreadable (raised by the test)")


def _failed_run_context(instance: DagsterInstance):
    result = materialize([breaks_on_purpose], instance=instance, raise_on_error=False)
    assert not result.success
    return result.dagster_run, build_run_status_sensor_context(
        sensor_name=run_failure_alert.name, dagster_event=result.get_run_failure_event(),
        dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()


def test_a_failed_run_is_alerted_to_alertmanager_and_only_logged_without_one(alertmanager, monkeypatch):
    assert run_failure_alert.default_status == DefaultSensorStatus.RUNNING
    instance = DagsterInstance.ephemeral()

    monkeypatch.delenv("RECSYS_ALERTMANAGER_URL", raising=False)
    run, context = _failed_run_context(instance)
    run_failure_alert(context)  # no Alertmanager configured: logs, posts nothing, raises nothing
    assert _alerts(alertmanager) == []

    monkeypatch.setenv("RECSYS_ALERTMANAGER_URL", alertmanager)
    run, context = _failed_run_context(instance)
    run_failure_alert(context)
    listed = [a for a in _alerts(alertmanager) if a["labels"]["alertname"] == "RecsysRunFailed"]
    assert len(listed) == 1
    alert = listed[0]
    assert alert["labels"]["job"] == run.job_name and alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["run_id"] == run.run_id
    assert "the landing file is unreadable" in alert["annotations"]["description"]
    assert alert["status"]["state"] == "active"  # routed to the receiver, neither silenced nor inhibited
    assert alert["receivers"][0]["name"] == "recsys-log"

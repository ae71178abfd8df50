"""A dead run does not hold the run slot for hours nor cost the day: it is failed and run again."""

import yaml
from dagster import DagsterInstance

from recsys_assets.defs.ingest.sensors import landing_run_requests
from recsys_assets.settings import DAGSTER_YAML, REPO_ROOT


def test_dagster_home_retries_dead_runs_and_limits_landing_runs(tmp_path):
    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML)
    instance = DagsterInstance.from_config(str(tmp_path))  # the daemon would refuse a bad file
    try:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure  # bad input is not run again and again
        assert instance.run_monitoring_enabled
    finally:
        instance.dispose()
    assert yaml.safe_load(DAGSTER_YAML)["run_monitoring"]["max_runtime_seconds"] > 900
    requests, _ = landing_run_requests({"recsys_data_upto_2024_01_02.parquet": "f1"}, {}, None, lambda *_: False)
    assert requests[0].tags["dagster/max_runtime"] == "900"


def test_gke_retries_runs_as_the_local_instance_does():
    values = yaml.safe_load((REPO_ROOT / "deploy" / "dagster" / "values.yaml").read_text())
    local = yaml.safe_load(DAGSTER_YAML)["run_retries"]
    assert values["dagsterDaemon"]["runRetries"] == {
        "enabled": local["enabled"], "maxRetries": local["max_retries"],
        "retryOnAssetOrOpFailure": local["retry_on_asset_or_op_failure"]}

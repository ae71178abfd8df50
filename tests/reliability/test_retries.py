"""A dead run does not hold the run slot for hours nor cost the day: it is failed and run again."""

from datetime import date

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


def _failed_landing_run(instance, run_key: str, **tags) -> None:
    from dagster import DagsterRun, DagsterRunStatus

    instance.add_run(DagsterRun(job_name="__ASSET_JOB", status=DagsterRunStatus.FAILURE,
                                tags={"dagster/sensor_name": "landing_sensor", "dagster/run_key": run_key, **tags}))


def test_a_failed_load_is_asked_for_again_with_backoff_but_a_refused_one_is_not(home):
    import time

    from recsys_assets.data.schema import review_file_name
    from recsys_assets.defs.ingest.sensors import RETRY_ATTEMPTS, failed_load_retries

    home.write_generated()
    files = home.landing.list_files()
    day = review_file_name(date(2024, 1, 2))
    base = f"{day}@{files[day]}"
    _failed_landing_run(home.instance, base)  # an outage outlasted the step's retries
    assert failed_load_retries(home.instance, files) == []  # not before its pause
    later = time.time() + 3600
    [request] = failed_load_retries(home.instance, files, now=later)
    assert (request.run_key, request.partition_key) == (f"{base}#1", "2024-01-02")
    _failed_landing_run(home.instance, f"{base}#{RETRY_ATTEMPTS}")  # the last attempt failed too: left alone
    assert [r.run_key for r in failed_load_retries(home.instance, files, now=later)] == [f"{base}#1"]
    changed = {**files, day: "a-new-version"}  # a new version of the file has a run of its own
    assert failed_load_retries(home.instance, changed, now=later) == []


def test_a_load_refused_for_its_input_is_marked_so_and_not_retried(home):
    import time

    from recsys_assets.data.schema import review_file_name
    from recsys_assets.defs.ingest.assets import REFUSED_TAG, raw_reviews
    from recsys_assets.defs.ingest.sensors import failed_load_retries

    home.write_generated()
    day = review_file_name(date(2024, 1, 2))
    home.landing.write_parquet(day, home.landing.read_parquet(day).drop_columns(["rating"]))
    result = home.materialize([raw_reviews], "2024-01-02", raise_on_error=False)
    assert not result.success
    run = home.instance.get_run_by_id(result.run_id)
    assert run.tags.get(REFUSED_TAG) == "input"
    files = home.landing.list_files()
    _failed_landing_run(home.instance, f"{day}@{files[day]}", **{REFUSED_TAG: "input"})
    assert failed_load_retries(home.instance, files, now=time.time() + 3600) == []

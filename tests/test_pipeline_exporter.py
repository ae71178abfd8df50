"""`recsys pipeline-exporter` scraped over HTTP: the metric families hold what the Dagster instance of a real
pipeline run holds (rows, evaluation figures, check outcomes, drift, runs, freshness against the real release)."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import date, timedelta

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterRunStatus
from prometheus_client.parser import text_string_to_metric_families

from recsys_assets.observability.drift import item_popularity_drift, rating_drift
from recsys_assets.observability.pipeline_exporter import (
    PIPELINE_JOB,
    PipelineCollector,
    code_location_check_keys,
    freshness_lag_days,
    serve,
    served_day_reader,
    stop,
)
from recsys_assets.observability.targets import target_path
from recsys_assets.serving.ports import free_port
from recsys_assets.serving_data.release import ReleaseStore


def scrape(address: str) -> dict[str, dict[tuple, float]]:
    """Sample name -> {sorted label items: value}."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=60) as answer:
        text = answer.read().decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def one(samples: dict, name: str, **labels) -> float:
    found = [value for key, value in samples.get(name, {}).items() if set(labels.items()) <= set(key)]
    assert len(found) == 1, f"{name}{labels}: {samples.get(name)}"
    return found[0]


@pytest.fixture(scope="module")
def metrics(served_home):
    """The exporter over served_home's instance (its drift checks evaluated) on a free loopback port: one scrape."""
    collector = PipelineCollector(served_home.instance, code_location_check_keys(),
                                  served_day_reader(served_home.settings))
    server, thread = serve(collector, free_port(), home=served_home.path)
    address = f"127.0.0.1:{server.server_port}"
    try:
        target = json.loads(target_path(served_home.path, "pipeline").read_text())
        assert target == [{"targets": [address], "labels": {"job": PIPELINE_JOB}}]
        yield scrape(address)
    finally:
        stop(server, thread, home=served_home.path)
    assert not target_path(served_home.path, "pipeline").exists()


def _evaluation(instance, key: AssetCheckKey):
    record = instance.get_latest_asset_check_evaluation_record(key)
    return record.event.asset_check_evaluation


def test_asset_metrics_are_the_instances_latest_materializations(served_home, metrics):
    from recsys_assets.warehouse.stores import DuckDBWarehouse

    # raw_reviews' rows: what its last materialization reported (the session's first run loaded every day at
    # once; other modules may re-run one day since), and never more than the warehouse holds
    last = served_home.instance.get_latest_materialization_event(AssetKey("raw_reviews"))
    reported = last.asset_materialization.metadata["dagster/row_count"].value
    loaded = sum(DuckDBWarehouse(served_home.settings.warehouse_path).row_counts("raw_reviews").values())
    assert one(metrics, "recsys_asset_rows", asset="raw_reviews") == reported
    assert 0 < reported <= loaded
    latest = served_home.instance.get_latest_materialization_event(AssetKey("serving_release"))
    assert one(metrics, "recsys_asset_last_materialization_timestamp_seconds",
               asset="serving_release") == pytest.approx(latest.timestamp)
    # the ranker's training step took seconds, dbt's one step materialized several assets
    assert 1 < one(metrics, "recsys_asset_materialization_duration_seconds", asset="ranker") < 3600
    assert one(metrics, "recsys_asset_materialization_duration_seconds", asset="user_rating_stats") == one(
        metrics, "recsys_asset_materialization_duration_seconds", asset="parent_asin_rating_stats")


def test_model_evaluation_figures_equal_the_days_report(served_home, metrics):
    from recsys_assets.models.promotion import read_latest

    report = read_latest(served_home.path / "evaluation")  # what `recsys evaluate` prints
    for model in ("rerank", "two_tower", "popularity", "ease"):
        for metric, name in (("ndcg@10", "ndcg_at_10"), ("recall@50", "recall_at_50"), ("coverage@10", "coverage")):
            assert one(metrics, "recsys_model_evaluation", model=model, metric=name) == pytest.approx(
                report["models"][model][metric]), (model, metric)
    assert one(metrics, "recsys_model_evaluation", model="ranker", metric="auc") == pytest.approx(
        report["ranker"]["roc_auc"])
    assert 0.5 < report["ranker"]["roc_auc"] <= 1  # a ranker that learned something, read back as such


def test_drift_metrics_are_the_checks_psi_of_the_newest_day(served_home, metrics):
    from recsys_assets.warehouse.stores import DuckDBWarehouse

    newest = served_home.days[-1]
    rows = DuckDBWarehouse(served_home.settings.warehouse_path).read_reviews(newest - timedelta(days=1), newest)
    frame = rows.to_pandas()
    before, now = frame[frame.partition_date == newest - timedelta(days=1)], frame[frame.partition_date == newest]
    expected = {"ratings": rating_drift(before.rating, now.rating).psi,
                "item_popularity": item_popularity_drift(before.parent_asin, now.parent_asin).psi}
    for signal_name, check in (("ratings", "ratings_drift"), ("item_popularity", "item_popularity_drift")):
        evaluation = _evaluation(served_home.instance, AssetCheckKey(AssetKey("raw_reviews"), check))
        assert evaluation.metadata["day"].value == str(newest)
        assert evaluation.metadata["psi"].value == pytest.approx(expected[signal_name])
        assert one(metrics, "recsys_drift_psi", signal=signal_name) == pytest.approx(expected[signal_name])
        assert one(metrics, "recsys_asset_check_passed", asset="raw_reviews", check=check,
                   severity="WARN") == float(expected[signal_name] <= 0.2)
    # one ranker version in this home: nothing to compare with, said, and no made-up PSI exported
    score = _evaluation(served_home.instance, AssetCheckKey(AssetKey("ranker"), "score_drift"))
    assert score.passed and "no previous model" in score.description
    assert ("signal", "ranker_score") not in {k for key in metrics["recsys_drift_psi"] for k in key}


def test_check_outcomes_runs_and_freshness(served_home, metrics):
    assert one(metrics, "recsys_asset_check_passed", asset="raw_reviews", check="rating_in_range",
               severity="ERROR") == 1.0
    assert one(metrics, "recsys_asset_check_failures_total", asset="raw_reviews", check="rating_in_range") == 0.0
    records = served_home.instance.get_run_records()
    assert sum(metrics["recsys_runs"].values()) == len(records)
    assert one(metrics, "recsys_runs", status="SUCCESS") == sum(
        r.dagster_run.status == DagsterRunStatus.SUCCESS for r in records)
    assert set(metrics["recsys_last_run_failed"].values()) == {0.0}
    # the real release: its day against the newest landed day
    release = ReleaseStore(served_home.resources()["serving"].kv()).current()
    assert one(metrics, "recsys_freshness_lag_days") == (served_home.days[-1] - date.fromisoformat(release.day)).days


def test_freshness_lag_counts_days_from_the_served_release():
    landed = {f"2024-01-0{d}" for d in range(1, 7)}
    assert freshness_lag_days(landed, "2024-01-04") == 2
    assert freshness_lag_days(landed, "2024-01-06") == 0
    assert freshness_lag_days(landed, None) == 6  # nothing served: every landed day is still to serve
    assert freshness_lag_days(set(), None) is None


def test_the_cli_serves_an_instance_writes_its_target_and_removes_it_on_stop(tmp_path):
    home, port = tmp_path / "home", free_port()
    env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    proc = subprocess.Popen([sys.executable, "-m", "recsys_assets.cli", "pipeline-exporter", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    target = target_path(home, "pipeline")
    try:
        deadline = time.monotonic() + 300
        while not target.exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no target file after 300 s"
            time.sleep(0.5)
        assert json.loads(target.read_text()) == [{"targets": [f"127.0.0.1:{port}"],
                                                   "labels": {"job": "recsys-pipeline"}}]
        samples = scrape(f"127.0.0.1:{port}")
        # an empty instance: families without series, never invented values
        assert "recsys_freshness_lag_days" not in samples and "recsys_asset_rows" not in samples
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    assert "pipeline metrics of" in out and not target.exists()

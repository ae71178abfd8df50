"""`recsys pipeline-exporter`: the pipeline's and the models' state as Prometheus metrics, read from the Dagster
instance on each scrape (orchestration side: it imports dagster, and defines no Dagster objects).

Why an exporter over the instance and not a Pushgateway: the instance already holds every run, materialization
and check evaluation, so it is the one source of truth; nothing has to be pushed from short-lived run workers
(a run killed before its push would leave the old value standing), nothing goes stale in a gateway after the
run that pushed it is gone, and a restart of the exporter loses nothing.

Per scrape, bounded work: the latest materialization of each asset (one batched query), the step stats of the
runs they came from, the latest evaluation of each check (one batched query) and its failed evaluations among
its last `CHECK_HISTORY`, the newest `RUN_LIMIT` runs, the newest landed day and the served release.

Metrics (no prefix beyond `recsys_`; what deploy/observability's dashboards and alerts query):
  recsys_asset_last_materialization_timestamp_seconds{asset}, recsys_asset_materialization_duration_seconds{asset}
  (the step that materialized it), recsys_asset_rows{asset} (where the materialization says `dagster/row_count`);
  recsys_asset_check_passed{asset,check,severity} 1/0 (latest evaluation), recsys_asset_check_failures_total
  {asset,check} (failed evaluations among the check's last CHECK_HISTORY);
  recsys_runs{job,status} (runs created in the last 24 h), recsys_last_run_failed{job} (its newest finished run);
  recsys_freshness_lag_days (newest landed day - the served release's day; with nothing served, every landed
  day); recsys_model_evaluation{model,metric} (`model_evaluation`'s latest figures: its `evaluation/<model>/
  <metric>` metadata); recsys_drift_psi{signal} (each drift check's latest PSI: ratings, item_popularity, ranker_score).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from dagster import AssetCheckKey, AssetKey, DagsterInstance, DagsterRunStatus
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from recsys_assets.models.daily_evaluation import parse_figure_key
from recsys_assets.observability.targets import target_path, write_target

LOG = logging.getLogger(__name__)
PIPELINE_JOB = "recsys-pipeline"  # the job label of the file_sd target (the serving's is recsys-serving)
TARGET_NAME = "pipeline"
LANDED = AssetKey("raw_reviews")  # the newest landed day: its newest loaded partition (as freshness.py)
EVALUATION = AssetKey("model_evaluation")
ROW_COUNT = "dagster/row_count"
RUN_WINDOW_S = 24 * 3600
RUN_LIMIT = 1000
CHECK_HISTORY = 1000
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def _number(metadata: dict, key: str) -> float | None:
    value = metadata.get(key)
    value = getattr(value, "value", value)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def freshness_lag_days(landed_days: set[str], served: str | None) -> float | None:
    """Days from the served release's day to the newest landed day; None when nothing landed; with nothing
    served yet, every landed day is still to serve (first to newest, both counted)."""
    if not landed_days:
        return None
    newest = date.fromisoformat(max(landed_days))
    since = date.fromisoformat(served) if served else date.fromisoformat(min(landed_days)) - timedelta(days=1)
    return float((newest - since).days)


class PipelineCollector(Collector):
    """Reads `instance` on each `collect()`. `check_keys`: the code location's asset checks (the instance lists
    no checks by itself); `served_day`: the serving store's current release day (None: nothing served)."""

    def __init__(self, instance: DagsterInstance, check_keys: Sequence[AssetCheckKey],
                 served_day: Callable[[], str | None], now: Callable[[], float] = time.time):
        self.instance, self.check_keys, self.served_day, self.now = instance, list(check_keys), served_day, now

    def collect(self) -> Iterator:
        yield from self._assets()
        yield from self._checks()
        yield from self._runs()
        yield from self._freshness()
        yield from self._evaluation()

    # -- assets ---------------------------------------------------------------------------------------------------

    def _assets(self) -> Iterator:
        stamp = GaugeMetricFamily("recsys_asset_last_materialization_timestamp_seconds",
                                  "When the asset was last materialized (Unix time).", labels=["asset"])
        duration = GaugeMetricFamily("recsys_asset_materialization_duration_seconds",
                                     "Duration of the step that last materialized the asset.", labels=["asset"])
        rows = GaugeMetricFamily("recsys_asset_rows", "Row count the asset's last materialization reported.",
                                 labels=["asset"])
        latest = {key: event for key, event in self.instance.get_latest_materialization_events(
            self.instance.get_asset_keys()).items() if event is not None and event.asset_materialization}
        steps_by_run: dict[str, set[str]] = {}
        for event in latest.values():
            if event.step_key:
                steps_by_run.setdefault(event.run_id, set()).add(event.step_key)
        seconds = {(run_id, stats.step_key): stats.end_time - stats.start_time
                   for run_id, keys in steps_by_run.items()
                   for stats in self.instance.get_run_step_stats(run_id, step_keys=sorted(keys))
                   if stats.start_time is not None and stats.end_time is not None}
        for key, event in sorted(latest.items(), key=lambda item: item[0].to_user_string()):
            name = key.to_user_string()
            stamp.add_metric([name], event.timestamp)
            if (event.run_id, event.step_key) in seconds:
                duration.add_metric([name], seconds[(event.run_id, event.step_key)])
            if (count := _number(event.asset_materialization.metadata, ROW_COUNT)) is not None:
                rows.add_metric([name], count)
        yield from (stamp, duration, rows)

    # -- checks and drift -----------------------------------------------------------------------------------------

    def _checks(self) -> Iterator:
        passed = GaugeMetricFamily("recsys_asset_check_passed", "1 when the check's latest evaluation passed.",
                                   labels=["asset", "check", "severity"])
        failures = CounterMetricFamily("recsys_asset_check_failures",
                                       f"Failed evaluations among the check's last {CHECK_HISTORY}.",
                                       labels=["asset", "check"])
        drift = GaugeMetricFamily("recsys_drift_psi", "Population stability index of the newest day against the "
                                  "previous day (model) for each drift signal.", labels=["signal"])
        summaries = self.instance.event_log_storage.get_asset_check_summary_records(self.check_keys)
        for key in sorted(self.check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
            summary = summaries.get(key)
            record = summary.last_completed_check_execution_record if summary else None
            evaluation = record.event.asset_check_evaluation if record and record.event else None
            if evaluation is None:
                continue  # never evaluated: no series rather than a made-up outcome
            labels = [key.asset_key.to_user_string(), key.name]
            passed.add_metric(labels + [evaluation.severity.value], 1.0 if evaluation.passed else 0.0)
            failed = self.instance.event_log_storage.get_asset_check_execution_history(
                key, limit=CHECK_HISTORY, status={AssetCheckExecutionRecordStatus.FAILED})
            failures.add_metric(labels, float(len(failed)))
            signal = evaluation.metadata.get("drift_signal")
            if signal is not None and (psi := _number(evaluation.metadata, "psi")) is not None:
                drift.add_metric([str(signal.value)], psi)
        yield from (passed, failures, drift)

    # -- runs -----------------------------------------------------------------------------------------------------

    def _runs(self) -> Iterator:
        runs = GaugeMetricFamily("recsys_runs", "Runs created in the last 24 h, by job and status.",
                                 labels=["job", "status"])
        last_failed = GaugeMetricFamily("recsys_last_run_failed", "1 when the job's newest finished run failed.",
                                        labels=["job"])
        records = self.instance.get_run_records(limit=RUN_LIMIT)  # newest first
        since = self.now() - RUN_WINDOW_S
        counts = Counter((r.dagster_run.job_name, r.dagster_run.status.value) for r in records
                         if r.create_timestamp.timestamp() >= since)
        for (job, status), count in sorted(counts.items()):
            runs.add_metric([job, status], float(count))
        newest: dict[str, DagsterRunStatus] = {}
        for record in records:
            if record.dagster_run.status in FINISHED:
                newest.setdefault(record.dagster_run.job_name, record.dagster_run.status)
        for job, status in sorted(newest.items()):
            last_failed.add_metric([job], 1.0 if status == DagsterRunStatus.FAILURE else 0.0)
        yield from (runs, last_failed)

    # -- freshness and models -------------------------------------------------------------------------------------

    def _freshness(self) -> Iterator:
        lag = GaugeMetricFamily("recsys_freshness_lag_days",
                                "Newest landed day minus the served release's day, in days.")
        landed = self.instance.get_materialized_partitions(LANDED)
        try:
            served = self.served_day()
        except Exception as exc:  # the serving store is down: say nothing rather than a wrong lag
            LOG.warning(f"the served release cannot be read: {exc}")
        else:
            value = freshness_lag_days(landed, served)
            if value is not None:
                lag.add_metric([], value)
        yield lag

    def _evaluation(self) -> Iterator:
        figures = GaugeMetricFamily("recsys_model_evaluation", "The latest model_evaluation's figures: NDCG@10, "
                                    "Recall@50, coverage per model on the holdout, the ranker's AUC.",
                                    labels=["model", "metric"])
        event = self.instance.get_latest_materialization_event(EVALUATION)
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        for key in sorted(metadata):
            if (parsed := parse_figure_key(key)) is not None and (value := _number(metadata, key)) is not None:
                figures.add_metric(list(parsed), value)
        yield figures


def served_day_reader(settings) -> Callable[[], str | None]:
    """The serving store's current release day, read anew each time (library code; no Dagster resources)."""
    from recsys_assets.serving_data.kv import open_kv
    from recsys_assets.serving_data.release import ReleaseStore

    def served_day() -> str | None:
        kv = open_kv(settings.serving_db_path, settings.serving_redis_url)
        try:
            release = ReleaseStore(kv).current()
        finally:
            kv.close()
        return release.day if release else None

    return served_day


def code_location_check_keys() -> list[AssetCheckKey]:
    """Every asset check the code location defines (loading it takes a few seconds, once)."""
    from recsys_assets.definitions import defs

    return sorted(defs.resolve_asset_graph().asset_check_keys, key=lambda k: k.to_user_string())


def serve(collector: Collector, port: int, home: Path | None = None, host: str = "127.0.0.1"
          ) -> tuple[WSGIServer, threading.Thread]:
    """Prometheus text for `collector` on host:port (in a thread); with `home`, its file_sd target written."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, thread = start_http_server(port, addr=host, registry=registry)
    if home is not None:
        write_target(home, TARGET_NAME, f"{host}:{server.server_port}", PIPELINE_JOB)
    return server, thread


def stop(server: WSGIServer, thread: threading.Thread, home: Path | None = None) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    if home is not None:
        target_path(home, TARGET_NAME).unlink(missing_ok=True)

"""A failed run raises an alert at once: `run_failure_alert` posts `RecsysRunFailed` (labels job, severity;
annotations the run id and the error) to Alertmanager's v2 API when RECSYS_ALERTMANAGER_URL is set, and only
logs otherwise. Prometheus sees the same failure a scrape later (recsys_last_run_failed from the pipeline
exporter); the sensor is the path that needs nobody scraping, and carries the error text."""

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from recsys_assets.observability.alertmanager import post_alerts, run_failed_alert
from recsys_assets.settings import get_settings


def _root_cause(error) -> str:
    """The error a step raised, not Dagster's wrapper around it ("Error occurred while executing op ...")."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def failure_text(context: RunFailureSensorContext) -> str:
    """The failed steps' errors (each `step: error`), else the run's own failure message."""
    steps = [f"{event.step_key}: {_root_cause(event.event_specific_data.error)}"
             for event in context.get_step_failure_events()
             if event.event_specific_data is not None and event.event_specific_data.error is not None]
    return "\n".join(steps) or (context.failure_event.message or "the run failed")


@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
                    description="Posts RecsysRunFailed to Alertmanager (RECSYS_ALERTMANAGER_URL) for every failed run; "
                                "only logs when no Alertmanager is configured.")
def run_failure_alert(context: RunFailureSensorContext):
    run = context.dagster_run
    body = run_failed_alert(run.job_name, run.run_id, failure_text(context))
    url = get_settings().observability.alertmanager_url
    if not url:
        context.log.warning(f"run {run.run_id} of {run.job_name} failed (no RECSYS_ALERTMANAGER_URL: not alerted)")
        return
    post_alerts(url, [body])
    context.log.info(f"alerted {url}: run {run.run_id} of {run.job_name} failed")

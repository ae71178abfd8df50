"""Interactions received by the API enter the batch pipeline: once a day is over, its logged events are
merged into that day's landing file; the landing sensor sees the changed file and ingests the day again.
Late events (a timestamp days back) grow an older day's log, and the next tick lands that day again."""


from datetime import date, datetime, timezone

from dagster import (
    AssetExecutionContext,
    DefaultScheduleStatus,
    MaterializeResult,
    RunRequest,
    ScheduleEvaluationContext,
    asset,
    define_asset_job,
    schedule,
)

from recsys_assets.defs.shared.partitions import daily_partitions
from recsys_assets.defs.shared.resources import LandingResource, ServingResource
from recsys_assets.serving_data.events import EventLog, RedisEventLog, days_to_land, land_events


@asset(partitions_def=daily_partitions, group_name="ingest", code_version="1", kinds={"parquet"},
       description="The day's interactions from POST /interactions, merged (without duplicates) into the day's "
                   "landing file, so the landing sensor re-ingests the day with them.")
def landed_interactions(context: AssetExecutionContext, landing: LandingResource,
                        serving: ServingResource) -> MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    added = land_events(serving.events(), landing.zone(), day)
    return MaterializeResult(metadata={"rows_added": added, "logged": len(serving.events().read(str(day)))})


land_interactions_job = define_asset_job("land_interactions", selection=[landed_interactions])


def days_to_request(log: EventLog | RedisEventLog, tick: datetime) -> list[str]:
    """Every day before the tick's UTC day with logged events not landed yet: the day that just ended, and
    older days that late events reached. Today's partition exists (end_offset=1) but is still receiving events;
    days before the first partition cannot land (POST refuses them)."""
    today = tick.astimezone(timezone.utc).date().isoformat()
    return days_to_land(log, daily_partitions.start.date().isoformat(), today)


@schedule(job=land_interactions_job, cron_schedule="15 0 * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING,
          description="Shortly after midnight UTC: lands every finished day with interactions not landed yet (the "
                      "day that just ended, and older days late events reached).")
def land_interactions_schedule(context: ScheduleEvaluationContext, serving: ServingResource) -> list[RunRequest]:
    tick = context.scheduled_execution_time
    # One run per day and tick: a failed landing is asked for again at the next tick.
    return [RunRequest(run_key=f"{day}@{tick.date()}", partition_key=day)
            for day in days_to_request(serving.events(), tick)]

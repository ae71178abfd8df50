"""Interactions received by the API enter the batch pipeline: once a day is over, its logged events are
merged into that day's landing file; the landing sensor sees the changed file and ingests the day again."""


from datetime import date, datetime, timedelta, timezone

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
from recsys_assets.serving_data.events import land_events


@asset(partitions_def=daily_partitions, group_name="ingest", code_version="1", kinds={"parquet"},
       description="The day's interactions from POST /interactions, merged (without duplicates) into the day's "
                   "landing file, so the landing sensor re-ingests the day with them.")
def landed_interactions(context: AssetExecutionContext, landing: LandingResource,
                        serving: ServingResource) -> MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    added = land_events(serving.events(), landing.zone(), day)
    return MaterializeResult(metadata={"rows_added": added, "logged": len(serving.events().read(str(day)))})


land_interactions_job = define_asset_job("land_interactions", selection=[landed_interactions])


def day_that_ended(tick: datetime) -> str:
    """The UTC day before the tick's: the partitions include today (end_offset=1) for live events, but
    today's events are still arriving, so the schedule lands yesterday's."""
    return (tick.astimezone(timezone.utc).date() - timedelta(days=1)).isoformat()


@schedule(job=land_interactions_job, cron_schedule="15 0 * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING,
          description="Shortly after midnight UTC: lands the interactions of the day that just ended.")
def land_interactions_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    day = day_that_ended(context.scheduled_execution_time)
    return RunRequest(run_key=day, partition_key=day)

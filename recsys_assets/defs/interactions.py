"""Interactions received by the API enter the batch pipeline: once a day is over, its logged events are
merged into that day's landing file; the landing sensor sees the changed file and ingests the day again."""


from datetime import date

from dagster import (
    AssetExecutionContext,
    DefaultScheduleStatus,
    MaterializeResult,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from recsys_assets.defs.partitions import daily_partitions
from recsys_assets.defs.resources import LandingResource, ServingResource
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
# Shortly after midnight UTC, for the day that just ended.
land_interactions_schedule = build_schedule_from_partitioned_job(
    land_interactions_job, hour_of_day=0, minute_of_hour=15, default_status=DefaultScheduleStatus.RUNNING)

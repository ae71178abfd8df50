"""The one partition scheme of the graph: a partition per UTC day of landed reviews."""

from dagster import DailyPartitionsDefinition

from recsys_assets.settings import get_settings

# end_offset=1: today's file (live interactions land during the day) has a partition too.
daily_partitions = DailyPartitionsDefinition(
    start_date=get_settings().partitions_start().isoformat(), end_offset=1, timezone="UTC"
)

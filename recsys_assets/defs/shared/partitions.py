"""The one partition scheme of the graph: a partition per UTC day of landed reviews."""

from dagster import DailyPartitionsDefinition, TimeWindowPartitionMapping

from recsys_assets.feature_contract import LOOKBACK_DAYS
from recsys_assets.settings import get_settings

# The start is configuration (RECSYS_START_DATE, else a fixed default), never read from the data: importing the
# code location reads no state. end_offset=1: today's file (live interactions land during the day) has a
# partition too.
daily_partitions = DailyPartitionsDefinition(start_date=get_settings().start_date.isoformat(), end_offset=1,
                                             timezone="UTC")


# The feature windows reach LOOKBACK_DAYS back (the contract's, which the dbt SQL reads as a var): a day depends
# on the days before it, so a replaced day refreshes (and the UI marks stale) every day up to this far after it.
def days_up_to(lookback_days: int = LOOKBACK_DAYS) -> TimeWindowPartitionMapping:
    """A day reads the `lookback_days` days before it and itself (days before the first partition: none)."""
    return TimeWindowPartitionMapping(start_offset=-lookback_days, end_offset=0,
                                      allow_nonexistent_upstream_partitions=True)

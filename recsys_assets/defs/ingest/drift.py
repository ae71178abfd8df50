"""Drift of a landed day against the day before, as warning checks on `raw_reviews` (never blocking: a shifted
day is still loaded and flows on; the check says so, in red on the asset page, and the pipeline exporter turns
its PSI into recsys_drift_psi{signal}).

* `ratings_drift`: PSI of the day's star ratings against the previous day's;
* `item_popularity_drift`: PSI of how the day's interactions spread over the previous day's popularity bins.

The numbers are in each evaluation's metadata (`psi`, `threshold`, `histogram`, `day`, `previous_day`,
`drift_signal`). A run over a range of days checks its newest day.
"""

from datetime import date, timedelta

import pyarrow.compute as pc
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)

from recsys_assets.defs.shared.resources import WarehouseResource
from recsys_assets.observability.drift import PSI_THRESHOLD, DriftResult, item_popularity_drift, rating_drift
from recsys_assets.warehouse.stores import PARTITION_COLUMN

RAW_REVIEWS = AssetKey("raw_reviews")


def checked_day(context: AssetCheckExecutionContext, asset: AssetKey) -> str | None:
    """The run's newest day; a check run without a partition checks the asset's newest materialized day."""
    if context.has_partition_key or context.has_partition_key_range:
        return max(context.partition_keys)
    days = context.instance.get_materialized_partitions(asset)
    return max(days) if days else None


def drift_result(signal: str, result: DriftResult, day: str | None, previous_day: str | None) -> AssetCheckResult:
    """A drift check's evaluation: failed (severity WARN) when the PSI is over the threshold; the numbers as
    metadata."""
    metadata = {"drift_signal": signal, "threshold": MetadataValue.float(result.threshold),
                "day": day or "", "previous_day": previous_day or "",
                "histogram": MetadataValue.json({"bins": result.bins, "previous": result.previous,
                                                 "current": result.current})}
    if result.psi is not None:
        metadata["psi"] = MetadataValue.float(result.psi)
    return AssetCheckResult(passed=not result.drifted, severity=AssetCheckSeverity.WARN,
                            description=result.describe(f"{signal} of {day}"), metadata=metadata)


def _day_and_previous(context: AssetCheckExecutionContext, warehouse: WarehouseResource, column: str):
    """(day, previous day, the previous day's values, the day's values) of a raw_reviews column."""
    day = checked_day(context, RAW_REVIEWS)
    if day is None:
        return None, None, [], []
    current = date.fromisoformat(day)
    previous = current - timedelta(days=1)
    rows = warehouse.warehouse().read_reviews(previous, current)
    values = {d: rows.filter(pc.equal(rows[PARTITION_COLUMN], d))[column].to_pylist() for d in (previous, current)}
    return day, previous.isoformat(), values[previous], values[current]


@asset_check(asset=RAW_REVIEWS, blocking=False,
             description=f"The day's star ratings against the previous day's: population stability index, warns "
                         f"over {PSI_THRESHOLD}.")
def ratings_drift(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> AssetCheckResult:
    day, previous_day, before, now = _day_and_previous(context, warehouse, "rating")
    return drift_result("ratings", rating_drift(before, now), day, previous_day)


@asset_check(asset=RAW_REVIEWS, name="item_popularity_drift", blocking=False,
             description="How the day's interactions spread over the previous day's popularity bins (each about a "
                         "fifth of that day's interactions, the hits first; items it did not see in the tail) "
                         f"against the previous day's own spread: population stability index, warns over "
                         f"{PSI_THRESHOLD}.")
def item_popularity_drift_check(context: AssetCheckExecutionContext, warehouse: WarehouseResource
                                ) -> AssetCheckResult:
    day, previous_day, before, now = _day_and_previous(context, warehouse, "parent_asin")
    return drift_result("item_popularity", item_popularity_drift(before, now), day, previous_day)

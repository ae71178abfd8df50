"""Ingest: landing files -> raw warehouse tables, behind blocking checks.

A day's file is validated before anything is written. When any check fails, the run fails with the
check results recorded, nothing is written, and the previously loaded rows of that day stay as they were;
downstream assets never see the bad file.
"""


from datetime import date

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetObservation,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from recsys_assets.data.landing import read_items, read_review_day
from recsys_assets.data.schema import ITEM_SCHEMA, ITEMS_FILE, REVIEW_SCHEMA, review_file_name
from recsys_assets.defs.shared.event_log import log_observations
from recsys_assets.defs.shared.partitions import daily_partitions
from recsys_assets.defs.shared.resources import LandingResource, WarehouseResource
from recsys_assets.defs.shared.retries import TRANSIENT_FAULTS
from recsys_assets.warehouse.validation import (
    ITEM_CHECKS,
    REVIEW_CHECKS,
    CheckOutcome,
    conform,
    merge_outcomes,
    validate_items,
    validate_review_days,
)

LANDING_FINGERPRINT = "landing_fingerprint"  # a day's observation: the version of its file that was loaded
ROWS_PER_DAY_LISTED = 62


def _check_specs(asset_name: str, checks: dict[str, str]) -> list[AssetCheckSpec]:
    return [AssetCheckSpec(name, asset=asset_name, description=text, blocking=True) for name, text in checks.items()]


def _check_results(outcomes: list[CheckOutcome]) -> list[AssetCheckResult]:
    return [
        AssetCheckResult(
            check_name=o.name,
            passed=o.passed,
            severity=AssetCheckSeverity.ERROR,
            description=o.message,
            metadata={k: MetadataValue.json(v) if isinstance(v, (list, dict)) else v for k, v in o.metadata.items()},
        )
        for o in outcomes
    ]


REFUSED_TAG = "recsys/refused"


def _reject(context: AssetExecutionContext, asset_name: str, outcomes: list[CheckOutcome]):
    """Record the failed checks, mark the run as refused for its input (the landing sensor does not ask for it
    again: only a new version of the file can pass), then fail the step without materializing anything."""
    yield from _check_results(outcomes)
    context.instance.add_run_tags(context.run_id, {REFUSED_TAG: "input"})
    failed = [f"{o.name}: {o.message}" for o in outcomes if not o.passed]
    raise Failure(
        description=f"{asset_name} rejected, previous data kept. Failed checks: " + " | ".join(failed),
        metadata={"failed_checks": MetadataValue.json(failed)},
        allow_retries=False,
    )


def _read(reader, *args):
    try:
        return reader(*args), None
    except Exception as exc:  # a missing or corrupt file is a check failure, not a crash
        return None, f"{type(exc).__name__}: {exc}"


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    check_specs=_check_specs("raw_reviews", REVIEW_CHECKS),
    group_name="ingest",
    kinds={"parquet", "duckdb"},
    code_version="1",
    retry_policy=TRANSIENT_FAULTS,
    description="One day of reviews from landing/recsys_data_upto_YYYY_MM_DD.parquet, replacing that day.",
)
def raw_reviews(context: AssetExecutionContext, landing: LandingResource, warehouse: WarehouseResource):
    zone = landing.zone()
    # Fingerprints taken before reading: a file replaced mid-run is not recorded as loaded.
    fingerprints = zone.list_files()
    days = [date.fromisoformat(key) for key in context.partition_keys]
    loaded = warehouse.warehouse().row_counts("raw_reviews")
    files = {day: _read(read_review_day, zone, day) for day in days}
    outcomes = validate_review_days(files, loaded)
    tables = {day: conform(table, REVIEW_SCHEMA) for day, (table, _) in files.items()
              if table is not None and all(o.passed for o in outcomes[day])}
    merged = merge_outcomes(outcomes)
    if not all(o.passed for o in merged):
        yield from _reject(context, "raw_reviews", merged)
        return
    written = warehouse.warehouse().replace_partitions("raw_reviews", tables)
    users = set().union(*(set(t.column("user_id").to_pylist()) for t in tables.values()))
    items = set().union(*(set(t.column("parent_asin").to_pylist()) for t in tables.values()))
    # Which version of each day's file this load holds, on that day's partition: the sensor skips files
    # already loaded (`sensors.loaded_fingerprint`).
    # One batch of events for the range (twenty years: 8,000 observations), as Dagster logs its materializations.
    log_observations(context, [
        AssetObservation(asset_key=context.asset_key, partition=str(day),
                         metadata={LANDING_FINGERPRINT: fingerprints.get(review_file_name(day))})
        for day in sorted(tables)])
    rows = {str(d): t.num_rows for d, t in sorted(tables.items())}
    yield MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "days": len(days),
            # A range's metadata goes on each of its partitions' events: listing every day of a long range
            # (imported history: 7,300 days) would cost days squared. Beyond a couple of months, a summary.
            "rows_per_day": MetadataValue.json(rows if len(rows) <= ROWS_PER_DAY_LISTED else _spread(rows)),
            "distinct_users": len(users),
            "distinct_items": len(items),
        },
        check_results=_check_results(merged),
    )


def _spread(rows_per_day: dict[str, int]) -> dict:
    counts = sorted(rows_per_day.values())
    return {"days": len(counts), "days_without_reviews": sum(1 for c in counts if c == 0), "min": counts[0],
            "median": counts[len(counts) // 2], "max": counts[-1]}


@asset(
    check_specs=_check_specs("item_metadata", ITEM_CHECKS),
    group_name="ingest",
    kinds={"parquet", "duckdb"},
    code_version="1",
    retry_policy=TRANSIENT_FAULTS,
    description="The item catalogue from landing/recsys_items.parquet (Amazon Reviews 2023 meta fields).",
)
def item_metadata(context: AssetExecutionContext, landing: LandingResource, warehouse: WarehouseResource):
    fingerprint = landing.zone().list_files().get(ITEMS_FILE)
    table, error = _read(read_items, landing.zone())
    outcomes = validate_items(table, error)
    if not all(o.passed for o in outcomes):
        yield from _reject(context, "item_metadata", outcomes)
        return
    rows = conform(table, ITEM_SCHEMA)
    written = warehouse.warehouse().replace_table("item_metadata", rows)
    categories = rows.column("categories").to_pylist()
    yield MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "distinct_categories": len({c[1] for c in categories if c and len(c) > 1}),
            "landing_fingerprints": MetadataValue.json({ITEMS_FILE: fingerprint}),
        },
        check_results=_check_results(outcomes),
    )

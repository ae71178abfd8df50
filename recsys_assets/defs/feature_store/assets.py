"""Feast as assets: the applied definitions, and each day's batch features in the online store.

Nobody runs `feast apply` by hand: `feast_definitions` carries the definitions' code version and automation
re-applies them when it changes, and `online_features` applies them itself when the registry is behind
(a fresh RECSYS_HOME), so a first run never fails on a missing registry.
"""


import hashlib
from datetime import date
from time import perf_counter

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from recsys_assets.defs.automation.conditions import FOLLOW_UPSTREAM
from recsys_assets.defs.shared.partitions import daily_partitions
from recsys_assets.defs.shared.resources import FeatureStoreResource, WarehouseResource
from recsys_assets.feature_store.version import BATCH_VIEWS, DEFINITIONS_VERSION

FEATURE_TABLES = [AssetKey(view) for view in BATCH_VIEWS]  # the dbt models the batch views read
CONSISTENCY_SAMPLE = 200
# Apply once on a new deployment, and again whenever the definitions' code version changes.
APPLY_WHEN_NEW_OR_CHANGED = AutomationCondition.on_missing() | AutomationCondition.code_version_changed()


@asset(
    group_name="feature_store",
    kinds={"feast"},
    code_version=DEFINITIONS_VERSION,
    automation_condition=APPLY_WHEN_NEW_OR_CHANGED,
    description="Feast entities, batch and *_fresh views, push sources and feature services, applied to the registry.",
)
def feast_definitions(context: AssetExecutionContext, feature_store: FeatureStoreResource) -> MaterializeResult:
    repo = feature_store.repository()
    objects = repo.apply()
    return MaterializeResult(metadata={
        "definitions_version": DEFINITIONS_VERSION,
        "objects": MetadataValue.json(objects),
        "feast_environment": repo.config.environment,
        "registry": repo.config.registry,
        "online_store": repo.config.online_store["type"],
    })


def _sample_seed(partition_keys: list[str]) -> int:
    """Stable across processes (unlike hash()): re-running a partition checks the same entities."""
    return int.from_bytes(hashlib.sha256(",".join(partition_keys).encode()).digest()[:4], "big")


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[feast_definitions, *FEATURE_TABLES],
    group_name="feature_store",
    kinds={"feast"},
    code_version="1",
    automation_condition=FOLLOW_UPSTREAM,
    check_specs=[AssetCheckSpec(
        "online_matches_offline", asset="online_features", blocking=True,
        description=f"For {CONSISTENCY_SAMPLE} sampled entities per view touched by the partition, online values "
                    "equal the point-in-time latest offline values.",
    )],
    description="The day's batch feature rows materialized into the Feast online store (latest row per entity).",
)
def online_features(context: AssetExecutionContext, feature_store: FeatureStoreResource,
                    warehouse: WarehouseResource):
    from recsys_assets.feature_store.consistency import compare_online_with_offline

    repo = feature_store.repository()
    reapplied = repo.ensure_applied()
    days = [date.fromisoformat(key) for key in context.partition_keys]
    rows = repo.sync_offline(warehouse.warehouse(), days)
    started = perf_counter()
    start, end = repo.materialize_days(days[0], days[-1])
    seconds = perf_counter() - started
    report = compare_online_with_offline(repo, days, CONSISTENCY_SAMPLE, _sample_seed(context.partition_keys))
    context.log.info(f"materialized {sum(rows.values())} rows over {start}..{end} in {seconds:.2f}s")
    yield MaterializeResult(
        metadata={
            "dagster/row_count": sum(rows.values()),
            "rows_per_view": MetadataValue.json(rows),
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "materialize_seconds": round(seconds, 3),
            "definitions_reapplied": reapplied,
        },
        check_results=[AssetCheckResult(
            check_name="online_matches_offline",
            passed=report.passed,
            severity=AssetCheckSeverity.ERROR,
            description=(f"{len(report.mismatches)} mismatching values" if report.as_of
                         else "nothing materialized yet"),
            metadata={
                "as_of": report.as_of or "",
                "entities_checked": MetadataValue.json(report.checked),
                "mismatches": MetadataValue.json(report.mismatches[:20]),
            },
        )],
    )

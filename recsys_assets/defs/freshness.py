"""Freshness of what users get, measured against the data's own clock (the newest landed day).

Two asset checks, shown on the assets in the UI and failing while stale:
* `online_features` / `fresh_for_newest_landed_day`: the online store has the newest landed day, loaded
  after that day's latest file;
* `serving_release` / `serves_newest_landed_day`: the published release is the newest landed day's.

Automation runs them whenever a day lands or the asset changes, so a check turns red when a new day lands
and green again once that day reaches the online store and serving.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    AutomationCondition,
    DagsterInstance,
    asset_check,
)

from recsys_assets.defs.resources import ServingResource
from recsys_assets.serving_data.release import ReleaseStore

LANDED = AssetKey("raw_reviews")
# Re-evaluated when the asset or the landed data changes.
ON_CHANGE = (AutomationCondition.any_deps_updated().since_last_handled()
             & ~AutomationCondition.in_progress()).with_label("on_landing_or_update")


def newest_landed_day(instance: DagsterInstance) -> str | None:
    keys = instance.get_materialized_partitions(LANDED)
    return max(keys) if keys else None


def _latest_storage_id(instance: DagsterInstance, key: AssetKey, day: str) -> int | None:
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[day]),
                                              limit=1).records
    return records[0].storage_id if records else None


def _result(passed: bool, description: str, **metadata) -> AssetCheckResult:
    return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.ERROR, description=description,
                            metadata={k: v if v is not None else "" for k, v in metadata.items()})


@asset_check(asset="online_features", additional_deps=[LANDED], automation_condition=ON_CHANGE,
             description="The online store holds the newest landed day, loaded after that day's latest file.")
def fresh_for_newest_landed_day(context: AssetCheckExecutionContext) -> AssetCheckResult:
    instance = context.instance
    day = newest_landed_day(instance)
    if day is None:
        return _result(True, "nothing has landed yet", newest_landed_day=None)
    landed = _latest_storage_id(instance, LANDED, day)
    loaded = _latest_storage_id(instance, AssetKey("online_features"), day)
    passed = loaded is not None and loaded > landed
    return _result(passed, f"online features are current for {day}" if passed else
                   f"the online store lacks the newest landed day {day} (or predates its latest file)",
                   newest_landed_day=day)


@asset_check(asset="serving_release", additional_deps=[LANDED], automation_condition=ON_CHANGE,
             description="The published release (what every replica serves) is the newest landed day's.")
def serves_newest_landed_day(context: AssetCheckExecutionContext, serving: ServingResource) -> AssetCheckResult:
    day = newest_landed_day(context.instance)
    release = ReleaseStore(serving.kv()).current()
    served = release.day if release else None
    passed = day is None or served == day
    return _result(passed, f"serving the release of {served}" if passed else
                   f"serving {served or 'nothing'}, the newest landed day is {day}",
                   newest_landed_day=day, served_day=served, release=release.id if release else None,
                   pipeline=release.pipeline if release else None)


FRESHNESS_CHECKS = [fresh_for_newest_landed_day, serves_newest_landed_day]

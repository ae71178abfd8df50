"""Freshness of what users get, measured against the data's own clock (the newest landed day).

Two asset checks, shown on the assets in the UI and failing while stale:
* `online_features` / `fresh_for_newest_landed_day`: the online store has the newest landed day, loaded
  after that day's latest file;
* `serving_release` / `serves_newest_landed_day`: the published release is the newest landed day's.

`freshness_sensor` evaluates both every minute and records a check's evaluation when its verdict changed (no
run, nothing queued behind the work): red soon after a new day lands (or when a run on the way fails), green
once the day is served. The chain's own run also executes them once it has published.
"""

from dataclasses import dataclass

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset_check,
    sensor,
)

from recsys_assets.defs.shared.resources import ServingResource
from recsys_assets.serving_data.release import ReleaseStore

LANDED, ONLINE = AssetKey("raw_reviews"), AssetKey("online_features")


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    metadata: dict

    def _fields(self) -> dict:
        return dict(passed=self.passed, severity=AssetCheckSeverity.ERROR, description=self.description,
                    metadata={k: v if v is not None else "" for k, v in self.metadata.items()})

    def result(self) -> AssetCheckResult:
        return AssetCheckResult(**self._fields())

    def evaluation(self, key: AssetCheckKey) -> AssetCheckEvaluation:
        return AssetCheckEvaluation(asset_key=key.asset_key, check_name=key.name, **self._fields())


def newest_landed_day(instance: DagsterInstance) -> str | None:
    keys = instance.get_materialized_partitions(LANDED)
    return max(keys) if keys else None


def _latest_storage_id(instance: DagsterInstance, key: AssetKey, day: str) -> int | None:
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[day]),
                                              limit=1).records
    return records[0].storage_id if records else None


def online_features_verdict(instance: DagsterInstance, day: str | None) -> Verdict:
    """`day`: the newest landed day."""
    if day is None:
        return Verdict(True, "nothing has landed yet", {"newest_landed_day": None})
    landed, loaded = _latest_storage_id(instance, LANDED, day), _latest_storage_id(instance, ONLINE, day)
    passed = loaded is not None and loaded > landed
    return Verdict(passed, f"online features are current for {day}" if passed else
                   f"the online store lacks the newest landed day {day} (or predates its latest file)",
                   {"newest_landed_day": day})


def release_verdict(day: str | None, releases: ReleaseStore) -> Verdict:
    """`day`: the newest landed day."""
    release = releases.current()
    served = release.day if release else None
    passed = day is None or served == day
    return Verdict(passed, f"serving the release of {served}" if passed else
                   f"serving {served or 'nothing'}, the newest landed day is {day}",
                   {"newest_landed_day": day, "served_day": served, "release": release.id if release else None,
                    "pipeline": release.pipeline if release else None})


@asset_check(asset="online_features", additional_deps=[LANDED],
             description="The online store holds the newest landed day, loaded after that day's latest file.")
def fresh_for_newest_landed_day(context: AssetCheckExecutionContext) -> AssetCheckResult:
    return online_features_verdict(context.instance, newest_landed_day(context.instance)).result()


@asset_check(asset="serving_release", additional_deps=[LANDED],
             description="The published release (what every replica serves) is the newest landed day's.")
def serves_newest_landed_day(context: AssetCheckExecutionContext, serving: ServingResource) -> AssetCheckResult:
    return release_verdict(newest_landed_day(context.instance), ReleaseStore(serving.kv())).result()


FRESHNESS_CHECKS = [fresh_for_newest_landed_day, serves_newest_landed_day]
CHECK_KEYS = [key for check in FRESHNESS_CHECKS for key in check.check_keys]


def _recorded_verdict(instance: DagsterInstance, key: AssetCheckKey) -> bool | None:
    """What the check's latest completed execution said; None when it never ran."""
    latest = instance.get_latest_asset_check_evaluation_record(key)
    evaluation = latest.event.asset_check_evaluation if latest is not None and latest.event is not None else None
    return None if evaluation is None else evaluation.passed  # None too while only planned


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
        description="Records the freshness checks' evaluation when their verdict changes (a day landed, a day got "
                    "served).")
def freshness_sensor(context: SensorEvaluationContext, serving: ServingResource):
    instance = context.instance
    day = newest_landed_day(instance)
    verdicts = {CHECK_KEYS[0]: online_features_verdict(instance, day),
                CHECK_KEYS[1]: release_verdict(day, ReleaseStore(serving.kv()))}
    changed = [key for key, verdict in verdicts.items() if _recorded_verdict(instance, key) != verdict.passed]
    if not changed:
        return SkipReason("freshness unchanged: " + "; ".join(v.description for v in verdicts.values()))
    return SensorResult(asset_events=[verdicts[key].evaluation(key) for key in changed])

"""How downstream assets follow new data without a click.

Time is the data's, never the calendar's: the *newest landed day* is the newest partition of `raw_reviews`
that has been loaded. A day that lands after it ended (every imported or generated day, and the normal
daily case) is still the newest landed day, whatever the clock says.

* Feature assets follow every updated day up to the newest landed day (a replaced old day refreshes the
  days whose windows reach it; see the partition mappings in `features/assets.py`).
* Models, evaluation, promotion and the serving assets follow the newest landed day only: a replaced old
  file retrains the newest day's models, never old ones.

The conditions are Python subclasses (Dagster's "arbitrary Python automation conditions": `evaluate` returns
an `AutomationResult`), so the automation sensor evaluates them in the code server (`use_user_code_server=True`
in `sensor.py`). What the documented surface (`candidate_subset`, `get_empty_subset`, `AutomationResult`) lacks,
and no public API offers: another asset's materialized partitions (`context.asset_graph_view`), this tick's
requests (`request_subsets_by_key`) and a subset's partition keys; these are undocumented but not underscored.
"""

from dagster import AssetKey, AutomationCondition, AutomationContext, AutomationResult

LANDED = AssetKey("raw_reviews")


async def newest_landed_day(context: AutomationContext) -> str | None:
    """The newest loaded partition of raw_reviews (None before anything landed)."""
    loaded = await context.asset_graph_view.compute_materialized_asset_subset(LANDED)
    keys = loaded.expensively_compute_partition_keys() if not loaded.is_empty else []
    return max(keys) if keys else None


class LandedDays(AutomationCondition):
    """True for the newest landed day's partition (`newest_only`), or for every partition up to it."""

    def __init__(self, newest_only: bool):
        self.newest_only = newest_only

    @property
    def name(self) -> str:
        return "in_newest_landed_day" if self.newest_only else "up_to_newest_landed_day"

    @property
    def description(self) -> str:
        return ("Partition of the newest landed day" if self.newest_only else
                "Partition on or before the newest landed day") + " (the newest loaded raw_reviews partition)"

    async def evaluate(self, context: AutomationContext) -> AutomationResult:
        newest = None if context.candidate_subset.is_empty else await newest_landed_day(context)
        if newest is None or context.partitions_def is None:
            return AutomationResult(context, context.get_empty_subset())
        keys = {newest} if self.newest_only else {
            k for k in context.candidate_subset.expensively_compute_partition_keys() if k <= newest}
        return AutomationResult(context, context.candidate_subset.compute_intersection_with_partition_keys(keys))


# Every dep either passed its blocking checks or runs in this very request: then the run's step order
# enforces its checks (a failed blocking check stops what follows it). Dagster's own
# `all_deps_blocking_checks_passed` only lets a dep's *checks* be requested in-tick, and the checks of an
# asset's own spec never are, so each stage would wait a tick (and a run) for the one before it.
UPSTREAM_CHECKS_PASSED = AutomationCondition.all_deps_match(
    AutomationCondition.all_checks_match(AutomationCondition.check_passed(), blocking_only=True)
    | AutomationCondition.will_be_requested()
).with_label("all_deps_blocking_checks_passed_or_requested")


class RunsWithItsAsset(AutomationCondition):
    """For a check: true when its asset is requested this tick, for any partition. The automation then puts the
    check into the asset's run. (`will_be_requested` of a daily asset does not reach an unpartitioned check.)"""

    @property
    def name(self) -> str:
        return "runs_with_its_asset"

    def evaluate(self, context: AutomationContext) -> AutomationResult:
        requested = context.request_subsets_by_key.get(context.key.asset_key)
        runs = requested is not None and not requested.is_empty and not context.candidate_subset.is_empty
        return AutomationResult(context, context.candidate_subset if runs else context.get_empty_subset())


def _after_upstream(in_scope: AutomationCondition, trigger: AutomationCondition, label: str) -> AutomationCondition:
    """Within `in_scope`: `trigger` (an updated dep, or one requested this tick, ...) leads to one run, once no
    dep and not the asset itself is in progress and every upstream blocking check passed.

    Unlike `eager()`, a missing dep does not block: a window over past days may include days with no file
    (gaps in real data, days before the first file); the dbt models read what is there."""
    return (
        in_scope
        & trigger.since_last_handled()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
        & UPSTREAM_CHECKS_PASSED
    ).with_label(label)


# Features: every updated day up to the newest landed one (a replaced day reaches the days after it).
FOLLOW_UPSTREAM = _after_upstream(LandedDays(newest_only=False), AutomationCondition.any_deps_updated(),
                                  "follow_upstream_up_to_newest_landed_day")
# Models and serving: the newest landed day only; a day becoming the newest starts its chain even for an
# asset whose deps did not change that day (item_tags reads the unpartitioned catalogue).
NEWEST_LANDED_DAY = _after_upstream(
    LandedDays(newest_only=True), LandedDays(newest_only=True).newly_true() | AutomationCondition.any_deps_updated(),
    "newest_landed_day_after_upstream")


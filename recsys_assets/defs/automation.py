"""How downstream assets follow new data without a click."""

from dagster import AutomationCondition

# Any updated upstream partition (not only the latest day) flows on, once its blocking checks passed.
FOLLOW_UPSTREAM = (
    AutomationCondition.eager().without(AutomationCondition.in_latest_time_window())
    & AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager_after_checks")

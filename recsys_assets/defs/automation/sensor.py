"""The automation sensor: carries new partitions downstream per each asset's AutomationCondition."""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

# Carries new partitions downstream (dbt, and later stages) per each asset's AutomationCondition. Evaluated
# in the code server: the "newest landed day" conditions (`conditions.py`) are Python of ours.
automation_sensor = AutomationConditionSensorDefinition(
    "automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,  # ~1 s of evaluation; every tick saved is a stage sooner
    use_user_code_server=True,
)

"""The day's training data: k-core, temporal split, negatives and point-in-time features via Feast."""


from datetime import date

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from recsys_assets.defs.automation.conditions import NEWEST_LANDED_DAY
from recsys_assets.defs.shared.partitions import daily_partitions
from recsys_assets.defs.shared.resources import FeatureStoreResource, TrainingResource, WarehouseResource


@asset(
    partitions_def=daily_partitions,
    deps=["online_features", "item_metadata"],
    group_name="training",
    kinds={"pandas", "feast"},
    code_version="3",
    automation_condition=NEWEST_LANDED_DAY,
    description="Reviews up to the day (window configurable) -> k-core (users >= 2, items >= 3) -> temporal split "
                "(last 20% by time = holdout, known users/items only; the last 25% of the rest = validation, the models "
                "learn from what precedes it, then are refreshed on it) -> one popularity negative per fit and per "
                "validation positive -> "
                "features as of each event through Feast's point-in-time join. Parquet under RECSYS_HOME/datasets/<day>.",
)
def training_dataset(context: AssetExecutionContext, warehouse: WarehouseResource,
                     feature_store: FeatureStoreResource, training: TrainingResource) -> MaterializeResult:
    from recsys_assets.feature_store.retrieval import point_in_time_features
    from recsys_assets.models.dataset import DatasetConfig, build_training_data, training_window_start

    day = date.fromisoformat(context.partition_key)
    first = training_window_start(day, training.window_days)
    events = warehouse.warehouse().read_reviews(first, day).to_pandas()
    store = feature_store.repository().store
    data = build_training_data(events, lambda rows: point_in_time_features(store, rows),
                               DatasetConfig(validation_fraction=training.validation_fraction, seed=training.seed))
    folder = training.dataset_dir(context.partition_key)
    data.save(folder)
    return MaterializeResult(metadata={
        "dagster/row_count": len(data.ranker_train),
        "path": MetadataValue.path(str(folder)),
        "first_day": str(first or events["partition_date"].min()),
        "summary": MetadataValue.json(data.summary),
        "boundary_timestamp": data.boundary,
        "holdout_users": data.summary["holdout_users"],
        "validation_boundary_timestamp": data.validation_boundary,
        "validation_users": data.summary["validation_users"],
        "cold_start_users": data.summary["cold_start_users"],
        "cold_start_items": data.summary["cold_start_items"],
    })

"""What the model assets share: their definitions' arguments, the MLflow tracking they nest their runs under,
and the day's inputs they read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagster import AssetExecutionContext, ResourceParam

from recsys_assets.defs.automation.conditions import NEWEST_LANDED_DAY
from recsys_assets.defs.shared.partitions import daily_partitions
from recsys_assets.defs.shared.resources import TrainingResource, WarehouseResource

if TYPE_CHECKING:
    from recsys_assets.models.dataset import TrainingData
    from recsys_assets.models.features import Catalogue

MODEL_ASSET = dict(partitions_def=daily_partitions, group_name="models", kinds={"pytorch", "mlflow"},
                   automation_condition=NEWEST_LANDED_DAY)
# Asking for the resource starts (or rejoins) the Dagster run's MLflow run; each asset nests its own under it.
# It is dagster-mlflow's MlFlow (`resources.mlflow_tracking`), not named here: Dagster resolves the annotation
# when it defines the asset, and naming the class would import MLflow at every start.
Tracking = ResourceParam[Any]


def load_inputs(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource
                ) -> tuple[TrainingData, Catalogue]:
    """The day's training data and the catalogue (categories, prices, tag embeddings) over its items."""
    from recsys_assets.models.dataset import TrainingData
    from recsys_assets.models.features import Catalogue
    from recsys_assets.models.tags import load_tag_embeddings

    data = TrainingData.load(training.dataset_dir(context.partition_key))
    metadata = warehouse.warehouse().read_items().to_pandas()
    tags = load_tag_embeddings(training.tags_dir(context.partition_key))
    return data, Catalogue.build(data.items, metadata, tags)

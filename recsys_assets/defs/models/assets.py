"""Model training assets: item2vec, the torchrec two-tower retriever and the tt7 ranker, one MLflow run each.

Each reads the day's training data, trains and registers a new version (`models/daily_training.py`: on the
fit period, then refreshed on the validation period; the training resource says how long and where) in a
nested MLflow run under the Dagster run's, and describes it in metadata. Downstream assets load that version
from the registry.

The training code (torch, MLflow, Feast) is imported by the assets that run it, not when the code location loads.
"""

from typing import TYPE_CHECKING

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from recsys_assets.defs.shared.materializations import latest_version
from recsys_assets.defs.shared.models import MODEL_ASSET, Tracking, load_inputs
from recsys_assets.defs.shared.resources import FeatureStoreResource, TrainingResource, WarehouseResource

if TYPE_CHECKING:  # (no `from __future__ import annotations` in an asset module: Dagster reads the raw hints)
    from recsys_assets.models.daily_training import DayModel, RegisteredModel, TorchModel


def _metadata(registered: "RegisteredModel", extra: dict) -> MaterializeResult:
    history = registered.history
    return MaterializeResult(metadata={
        "mlflow_model": registered.name,
        "mlflow_version": registered.version,
        "mlflow_run_id": registered.run_id,
        "epoch_losses": MetadataValue.json([round(v, 5) for v in history.epoch_losses]),
        "epoch_seconds": MetadataValue.json([round(v, 2) for v in history.epoch_seconds]),
        "samples_per_second": round(history.samples_per_second, 1),
        "workers": history.workers,
        "refresh_epoch_losses": MetadataValue.json([round(v, 5) for v in registered.refreshed.epoch_losses]),
        **extra,
    })


def _torch_metadata(registered: "RegisteredModel", model: "TorchModel", extra: dict | None = None) -> MaterializeResult:
    history = registered.history
    return _metadata(registered, {
        "sizes": MetadataValue.json(model.sizes),
        "refresh_seconds": round(sum(registered.refreshed.epoch_seconds), 2),
        **({"validation_scores": MetadataValue.json([round(v, 5) for v in history.validation_scores]),
            "best_epoch": history.best_epoch + 1} if history.best_epoch is not None else {}), **(extra or {})})


def _full_retrain_asked(context: AssetExecutionContext) -> bool:
    from recsys_assets.models.incremental import RETRAIN_RUN_TAG

    return context.run.tags.get(RETRAIN_RUN_TAG) == "full"


def _start_metadata(built: "DayModel") -> dict:
    """How the day's model started (`daily_training.day_model`): full or incremental, why, from which version."""
    metadata = built.metadata()
    if "warm_start" in metadata:
        metadata["warm_start"] = MetadataValue.json(metadata["warm_start"])
    return metadata


@asset(deps=["training_dataset"], code_version="3",
       description="Skip-gram item2vec (128-d, window 1, 2 negatives by freq^0.75) over users' sequences of the fit "
                   "period, then refreshed on the validation period's.",
       **MODEL_ASSET)
def item2vec(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
             mlflow_tracking: Tracking):
    from recsys_assets.models.daily_training import TrainingPlan, train_item2vec_version

    data, _ = load_inputs(context, training, warehouse)
    registered = train_item2vec_version(data, TrainingPlan.of(training), context.partition_key, context.log)
    return _metadata(registered, {"pairs": registered.history.samples})


@asset(deps=["training_dataset", "tag_embeddings"], code_version="5",
       description="torchrec two-tower retriever: in-batch sampled softmax with logQ correction; the item tower's "
                   "vectors (stats as of the day's end) are exported with the model for the index. Values: the last "
                   "search's (`two_tower_tuning`); before any, the first day judges the user id alone on validation.",
       **MODEL_ASSET)
def two_tower(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
              feature_store: FeatureStoreResource, mlflow_tracking: Tracking):
    from recsys_assets.models.daily_training import (
        TrainingPlan,
        day_model,
        item_vectors_at_day_end,
        train_and_register,
        two_tower_model,
        two_tower_values,
    )
    from recsys_assets.models.registry import ITEM_VECTORS

    data, catalogue = load_inputs(context, training, warehouse)
    plan, day = TrainingPlan.of(training), context.partition_key
    values = two_tower_values(training.tuning_dir_path, day, data, catalogue, plan, context.log)
    store = feature_store.repository().store

    def exports(trained):
        return {ITEM_VECTORS: item_vectors_at_day_end(store, trained, catalogue, day)}

    built = day_model("two_tower", lambda window: two_tower_model(data, catalogue, values, plan, exports, window),
                      data, catalogue, plan, day, _full_retrain_asked(context), context.log)
    registered = train_and_register(built.model, plan, day, context.log, tags=built.start.tags())
    return _torch_metadata(registered, built.model, {"tuned_on": values.day, "values": MetadataValue.json(values.best),
                                                     **_start_metadata(built)})


@asset(deps=["training_dataset", "tag_embeddings", "item2vec"], code_version="4",
       description="tt7 ranker: user id, candidate, GRU over the last 10 items with time-delta buckets, item "
                   "feature encoder -> MLP; item embeddings from item2vec. Trained pointwise (BCE against a "
                   "popularity negative) and listwise (softmax over the positives' items of time-local batches).",
       **MODEL_ASSET)
def ranker(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
           mlflow_tracking: Tracking):
    from recsys_assets.models.daily_training import (
        TrainingPlan,
        day_model,
        load_item2vec_vectors,
        ranker_model,
        train_and_register,
    )

    data, catalogue = load_inputs(context, training, warehouse)
    plan, day = TrainingPlan.of(training), context.partition_key
    vectors = load_item2vec_vectors(latest_version(context, "item2vec"))
    built = day_model("ranker", lambda window: ranker_model(data, catalogue, vectors, plan, window), data, catalogue,
                      plan, day, _full_retrain_asked(context), context.log)
    registered = train_and_register(built.model, plan, day, context.log, tags=built.start.tags())
    return _torch_metadata(registered, built.model, _start_metadata(built))

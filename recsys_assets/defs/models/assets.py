"""Model training assets: item2vec, the torchrec two-tower retriever and the tt7 ranker, one MLflow run each.

The three models learn from the day's fit period (`TrainingData.fit`), the weights the validation
period after it judges (kept beside the version); then, like the baselines refitted before the holdout, they
are refreshed on the validation period (`refresh_epochs`), and that is the registered, served version: a
model that never saw the last days cannot know the items and users that arrived in them.

Each reads the day's training data, trains through the shared loop (in-process or Ray Train, the training
resource decides), logs params, per-epoch metrics and the model to a nested MLflow run under the Dagster
run's, and registers a new version. Downstream assets load that version from the registry.
"""


import copy
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import date, timedelta

import mlflow
import numpy as np
import pandas as pd
import torch
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    Failure,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)
from dagster_mlflow.resources import MlFlow

from recsys_assets.defs.automation.conditions import NEWEST_LANDED_DAY
from recsys_assets.defs.shared.partitions import daily_partitions
from recsys_assets.defs.shared.resources import FeatureStoreResource, TrainingResource, WarehouseResource
from recsys_assets.feature_store.repository import day_start
from recsys_assets.feature_store.retrieval import point_in_time_features
from recsys_assets.models.data import ITEM, TIME, USER, popularity
from recsys_assets.models.dataset import TrainingData, pack_items, ranker_inputs, two_tower_inputs
from recsys_assets.models.evaluation import EvaluationConfig, RankerValidation
from recsys_assets.models.features import USER_DENSE_WIDTH, Catalogue
from recsys_assets.models.item2vec import Item2VecConfig, Item2VecModel, train_item2vec
from recsys_assets.models.ranker import Ranker, RankerConfig, ranker_loss
from recsys_assets.models.registry import ITEM_VECTORS, MlflowStore, fit_only, log_fit_only_state, log_model
from recsys_assets.models.tags import load_tag_embeddings
from recsys_assets.models.training import TrainHistory, Validate, fit
from recsys_assets.models.tuning import TuningConfig, choose_first_values, load_best, save_best
from recsys_assets.models.two_tower import TwoTower, TwoTowerConfig, encode, in_batch_softmax_loss

MODEL_ASSET = dict(partitions_def=daily_partitions, group_name="models", kinds={"pytorch", "mlflow"},
                   automation_condition=NEWEST_LANDED_DAY)
# Asking for the resource starts (or rejoins) the Dagster run's MLflow run; each asset nests its own under it.
Tracking = ResourceParam[MlFlow]


def load_inputs(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource):
    """The day's training data and the catalogue (categories, prices, tag embeddings) over its items."""
    data = TrainingData.load(training.dataset_dir(context.partition_key))
    metadata = warehouse.warehouse().read_items().to_pandas()
    tags = load_tag_embeddings(training.tags_dir(context.partition_key))
    return data, Catalogue.build(data.items, metadata, tags)


def _log_epochs(context: AssetExecutionContext, epochs: int, prefix: str = "train"):
    """Per epoch: MLflow metrics of the nested run, and a line in the Dagster log (the UI, `make demo`)."""
    def log(epoch: int, metrics: dict) -> None:
        mlflow.log_metrics({f"{prefix}_{k}": v for k, v in metrics.items()}, step=epoch)
        context.log.info(f"{prefix} epoch {epoch + 1}/{epochs}: "
                         + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return log


def _result(name: str, version: str, history: TrainHistory, run_id: str, extra: dict | None = None):
    return MaterializeResult(metadata={
        "mlflow_model": name,
        "mlflow_version": version,
        "mlflow_run_id": run_id,
        "epoch_losses": MetadataValue.json([round(v, 5) for v in history.epoch_losses]),
        "epoch_seconds": MetadataValue.json([round(v, 2) for v in history.epoch_seconds]),
        "samples_per_second": round(history.samples_per_second, 1),
        "workers": history.workers,
        **(extra or {}),
    })


@asset(deps=["training_dataset"], code_version="3",
       description="Skip-gram item2vec (128-d, window 1, 2 negatives by freq^0.75) over users' sequences of the fit "
                   "period, then refreshed on the validation period's.",
       **MODEL_ASSET)
def item2vec(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
             mlflow_tracking: Tracking):
    data, _ = load_inputs(context, training, warehouse)
    items = data.items
    cfg = Item2VecConfig(epochs=training.item2vec_epochs, seed=training.seed)
    with mlflow.start_run(run_name=f"item2vec-{context.partition_key}", nested=True) as run:
        mlflow.log_params({"model": "item2vec", "day": context.partition_key, **asdict(cfg), "items": len(items) - 1,
                           "refresh_epochs": training.refresh_epochs})
        result = refreshed = train_item2vec(_sequences(data.fit, items), len(items), cfg,
                                            on_epoch=_log_epochs(context, cfg.epochs))
        if training.refresh_epochs > 0:
            log_fit_only_state("item2vec", Item2VecModel(result.embeddings))
            refreshed = train_item2vec(_sequences(data.refresh_events, items), len(items),
                                       replace(cfg, epochs=training.refresh_epochs), start=result.model,
                                       on_epoch=_log_epochs(context, training.refresh_epochs, prefix="refresh"))
        model = Item2VecModel(refreshed.embeddings)
        version = log_model("item2vec", model, np.arange(1, min(len(items), 6), dtype=np.float32)[:, None],
                            {"items.json": items.ids})
    history = TrainHistory(result.epoch_losses, result.epoch_seconds, samples=result.pairs)
    return _result("item2vec", version, history, run.info.run_id, {
        "pairs": result.pairs,
        "refresh_epoch_losses": MetadataValue.json(
            [round(v, 5) for v in refreshed.epoch_losses] if refreshed is not result else [])})


def _sequences(events: pd.DataFrame, items) -> list[np.ndarray]:
    """Each user's items in time order, as item indices."""
    ordered = events.sort_values([TIME, ITEM])
    return [items.index(g[ITEM].to_numpy()) for _, g in ordered.groupby(USER, sort=True)]


def _sizes(data: TrainingData, catalogue: Catalogue) -> dict:
    return dict(n_users=len(data.users), n_items=len(catalogue.items), n_categories=len(catalogue.categories),
                user_dense_dim=USER_DENSE_WIDTH, item_dense_dim=catalogue.item_dense_width)


def _train_and_register(context: AssetExecutionContext, training: TrainingResource, name: str, cfg, sizes: dict,
                        build, inputs: dict, loss_fn, epochs: int, lr: float, example: np.ndarray,
                        data: TrainingData, catalogue: Catalogue, refresh_inputs: dict,
                        before_refresh: Callable[[torch.nn.Module], None] | None = None, exports=None,
                        extra: dict | None = None, batch_size: int | None = None,
                        shuffle: str = "rows", validate: Validate | None = None,
                        patience: int = 0) -> MaterializeResult:
    """Train on the fit period through the shared loop in a nested MLflow run (with `validate`, every epoch
    scored on validation; with `patience` too, stopped early, the best epoch's weights kept), keep those
    weights, refresh them on the validation period (`refresh_inputs`, after `before_refresh(model)`), register
    the refreshed model (with what `exports(model)` adds to its artifacts), describe both in metadata."""
    train_cfg = training.train_config(epochs, lr=lr, batch_size=batch_size, shuffle=shuffle, patience=patience)
    refresh_cfg = training.train_config(training.refresh_epochs, lr=lr, batch_size=batch_size, shuffle=shuffle)
    with mlflow.start_run(run_name=f"{name}-{context.partition_key}", nested=True) as run:
        mlflow.log_params({"model": name, "day": context.partition_key, **asdict(cfg), **sizes,
                           **asdict(train_cfg), "executor": training.executor,
                           "refresh_epochs": refresh_cfg.epochs, "refresh_rows": len(next(iter(refresh_inputs.values())))})
        model, history = fit(build, inputs, loss_fn, train_cfg, executor=training.executor,
                             workers=training.ray_workers, storage=training.ray_storage, use_gpu=training.ray_use_gpu,
                             on_epoch=_log_epochs(context, epochs), validate=validate)
        if history.best_epoch is not None:
            mlflow.log_param("best_epoch", history.best_epoch + 1)
            kept = history.best_epoch + 1 if patience else len(history.epoch_losses)
            context.log.info(f"{name}: best on validation after epoch {history.best_epoch + 1} of "
                             f"{len(history.epoch_losses)}; the weights of epoch {kept} kept")
        refreshed = TrainHistory()
        if refresh_cfg.epochs > 0:
            log_fit_only_state(name, model)
            start = copy.deepcopy(model)
            if before_refresh is not None:
                before_refresh(start)
            context.log.info(f"refreshing {name} on the validation period")
            model, refreshed = fit(lambda: start, refresh_inputs, loss_fn, refresh_cfg, executor=training.executor,
                                   workers=training.ray_workers, storage=training.ray_storage,
                                   use_gpu=training.ray_use_gpu,
                                   on_epoch=_log_epochs(context, refresh_cfg.epochs, prefix="refresh"))
        artifacts = {"users.json": data.users.ids, **catalogue.artifacts(), **(exports(model) if exports else {})}
        version = log_model(name, model, example, artifacts)
    return _result(name, version, history, run.info.run_id, {
        "sizes": MetadataValue.json(sizes),
        "refresh_epoch_losses": MetadataValue.json([round(v, 5) for v in refreshed.epoch_losses]),
        "refresh_seconds": round(sum(refreshed.epoch_seconds), 2),
        **({"validation_scores": MetadataValue.json([round(v, 5) for v in history.validation_scores]),
            "best_epoch": history.best_epoch + 1} if history.best_epoch is not None else {}), **(extra or {})})


def _item_vectors_at_day_end(store, model: TwoTower, catalogue: Catalogue, partition_key: str) -> np.ndarray:
    """Item-tower vectors of every item (row i = items.json[i]) with the stats as of the end of the day:
    what the ANN index serves."""
    end_ms = int(day_start(date.fromisoformat(partition_key) + timedelta(days=1)).timestamp() * 1000)
    stats = point_in_time_features(store, pd.DataFrame({ITEM: catalogue.items.ids, TIME: end_ms}))
    return encode(model.item_vectors, pack_items(np.arange(1, len(catalogue.items)), stats, catalogue))


@asset(deps=["training_dataset", "tag_embeddings"], code_version="5",
       description="torchrec two-tower retriever: in-batch sampled softmax with logQ correction; the item tower's "
                   "vectors (stats as of the day's end) are exported with the model for the index. Values: the last "
                   "search's (`two_tower_tuning`); before any, the first day judges the user id alone on validation.",
       **MODEL_ASSET)
def two_tower(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
              feature_store: FeatureStoreResource, mlflow_tracking: Tracking):
    data, catalogue = load_inputs(context, training, warehouse)
    batches = dict(batch_size=training.batch_size, seed=training.seed)
    inputs = two_tower_inputs(data, catalogue, **batches)
    cfg, sizes = TwoTowerConfig(), _sizes(data, catalogue)
    epochs, lr = training.two_tower_epochs, 0.003
    tuned = load_best(training.tuning_dir_path)
    if tuned is None:  # no search yet: judge the user id and the logQ weight, once; the days after keep them
        choice = choose_first_values(data, catalogue, epochs, lr, TuningConfig(
            batch_size=training.batch_size, eval_max_users=training.eval_max_users, seed=training.seed))
        save_best(training.tuning_dir_path, context.partition_key, choice)
        tuned = {"day": context.partition_key, **choice}  # as saved
        context.log.info(f"no search yet: the user id and the logQ weight judged on validation {choice['trials']}")
    best = tuned["best"]  # the last search's best values (`two_tower_tuning`)
    # A search from before the user id or the logQ weight was searched: the id was on, the weight 1.
    cfg = replace(cfg, temperature=best["temperature"], id_dim=best["id_dim"], user_id=best.get("user_id", True),
                  logq_weight=best.get("logq_weight", 1.0))
    epochs, lr = best["epochs"], best["lr"]
    context.log.info(f"two-tower values from the search of {tuned['day']}: {best}")
    store = feature_store.repository().store
    return _train_and_register(
        context, training, "two_tower", cfg, sizes, lambda: TwoTower(**sizes, cfg=cfg), inputs,
        in_batch_softmax_loss, epochs, lr, inputs["user_x"][:5], data, catalogue,
        refresh_inputs=two_tower_inputs(data, catalogue, refresh=True, **batches),
        exports=lambda model: {ITEM_VECTORS: _item_vectors_at_day_end(store, model, catalogue, context.partition_key)},
        extra={"tuned_on": tuned["day"], "values": MetadataValue.json(best)}, shuffle="batches")


@asset(deps=["training_dataset", "tag_embeddings", "item2vec"], code_version="4",
       description="tt7 ranker: user id, candidate, GRU over the last 10 items with time-delta buckets, item "
                   "feature encoder -> MLP; item embeddings from item2vec. Trained pointwise (BCE against a "
                   "popularity negative) and listwise (softmax over the positives' items of time-local batches).",
       **MODEL_ASSET)
def ranker(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
           mlflow_tracking: Tracking):
    data, catalogue = load_inputs(context, training, warehouse)
    inputs, refresh_inputs = (ranker_inputs(frame, data.users, catalogue, training.seed)
                              for frame in (data.ranker_train, data.ranker_refresh))
    item_init, refreshed_vectors = _item2vec_embeddings(context)
    counts = popularity(data.fit, catalogue.items)  # what the negatives were drawn by
    cfg, sizes = RankerConfig(), _sizes(data, catalogue)

    def before_refresh(model: Ranker) -> None:
        # The refresh's negatives were drawn by the whole training period's popularity: the logQ term follows;
        # items first seen in the validation period get item2vec's vectors from its own refresh.
        model.set_negative_sampling_counts(popularity(data.train, catalogue.items))
        unseen = np.flatnonzero(counts[1:] == 0) + 1
        model.set_item_vectors(unseen, refreshed_vectors[unseen])

    return _train_and_register(
        context, training, "ranker", cfg, sizes,
        lambda: Ranker(**sizes, cfg=cfg, item_init=item_init, negative_sampling_counts=counts),
        inputs, ranker_loss, training.ranker_epochs, 0.002, inputs["x"][:5], data, catalogue, refresh_inputs,
        before_refresh=before_refresh, batch_size=training.ranker_batch_size, shuffle="batches",
        validate=RankerValidation.of(data, catalogue, EvaluationConfig(max_users=training.eval_max_users,
                                                                       seed=training.seed)),
        patience=training.ranker_patience)


def _item2vec_embeddings(context: AssetExecutionContext) -> tuple[np.ndarray, np.ndarray]:
    """The same day's item2vec vectors (fit-only, refreshed), from the version its materialization registered."""
    version = latest_version(context, "item2vec")
    model = mlflow.pytorch.load_model(f"models:/item2vec/{version}")
    judged = fit_only(MlflowStore(mlflow.get_tracking_uri()), "item2vec", version, model)
    return judged.embeddings.weight.detach().numpy(), model.embeddings.weight.detach().numpy()


def latest_version(context: AssetExecutionContext, asset_name: str) -> str:
    """The MLflow version the latest materialization of `asset_name` for this partition registered."""
    return recorded_metadata(context, asset_name, "mlflow_version")


def recorded_metadata(context: AssetExecutionContext, asset_name: str, key: str, required: bool = True) -> str | None:
    """Metadata `key` of the latest materialization of `asset_name` for this partition; a Failure when there
    is none (None instead when not required)."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset_name), asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records or key not in records[0].asset_materialization.metadata:
        if not required:
            return None
        raise Failure(f"{asset_name} has no materialization for {context.partition_key}: materialize it first")
    return str(records[0].asset_materialization.metadata[key].value)

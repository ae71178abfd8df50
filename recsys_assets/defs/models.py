"""Model training assets: item2vec, the torchrec two-tower retriever and the tt7 ranker, one MLflow run each.

Each reads the day's training data, trains through the shared loop (in-process or Ray Train, the training
resource decides), logs params, per-epoch metrics and the model to a nested MLflow run under the Dagster
run's, and registers a new version. Downstream assets load that version from the registry.
"""


import time
from dataclasses import asdict

import mlflow
import numpy as np
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

from recsys_assets.defs.partitions import daily_partitions
from recsys_assets.defs.resources import TrainingResource, WarehouseResource
from recsys_assets.defs.training_data import LATEST_DAY_AFTER_UPSTREAM
from recsys_assets.models.data import ITEM, TIME, USER, popularity
from recsys_assets.models.dataset import TrainingData, pack_items, pack_ranker, pack_users
from recsys_assets.models.features import USER_DENSE_WIDTH, Catalogue
from recsys_assets.models.item2vec import Item2VecConfig, Item2VecModel, train_item2vec
from recsys_assets.models.ranker import Ranker, RankerConfig, bce_loss
from recsys_assets.models.registry import log_model
from recsys_assets.models.tags import load_tag_embeddings
from recsys_assets.models.training import TrainHistory, fit
from recsys_assets.models.two_tower import TwoTower, TwoTowerConfig, in_batch_softmax_loss

MODEL_ASSET = dict(partitions_def=daily_partitions, group_name="models", kinds={"pytorch", "mlflow"},
                   automation_condition=LATEST_DAY_AFTER_UPSTREAM)
# Asking for the resource starts (or rejoins) the Dagster run's MLflow run; each asset nests its own under it.
Tracking = ResourceParam[MlFlow]


def load_inputs(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource):
    """The day's training data and the catalogue (categories, prices, tag embeddings) over its items."""
    data = TrainingData.load(training.dataset_dir(context.partition_key))
    metadata = warehouse.warehouse().read_items().to_pandas()
    tags = load_tag_embeddings(training.tags_dir(context.partition_key))
    return data, Catalogue.build(data.items, metadata, tags)


def _log_epochs(prefix: str):
    def log(epoch: int, metrics: dict) -> None:
        mlflow.log_metrics({f"{prefix}_{k}": v for k, v in metrics.items()}, step=epoch)
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


@asset(deps=["training_dataset"], code_version="1",
       description="Skip-gram item2vec (128-d, window 1, 2 negatives by freq^0.75) over users' training sequences.",
       **MODEL_ASSET)
def item2vec(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
             mlflow_tracking: Tracking):
    data, _ = load_inputs(context, training, warehouse)
    items = data.items
    ordered = data.train.sort_values([TIME, ITEM])
    sequences = [items.index(g[ITEM].to_numpy()) for _, g in ordered.groupby(USER, sort=True)]
    cfg = Item2VecConfig(epochs=training.item2vec_epochs, seed=training.seed)
    with mlflow.start_run(run_name=f"item2vec-{context.partition_key}", nested=True) as run:
        mlflow.log_params({"model": "item2vec", "day": context.partition_key, **asdict(cfg), "items": len(items) - 1})
        result = train_item2vec(sequences, len(items), cfg, on_epoch=_log_epochs("train"))
        model = Item2VecModel(result.embeddings)
        version = log_model("item2vec", model, np.arange(1, min(len(items), 6), dtype=np.float32)[:, None],
                            {"items.json": items.ids})
    history = TrainHistory(result.epoch_losses, result.epoch_seconds, samples=result.pairs)
    return _result("item2vec", version, history, run.info.run_id, {"pairs": result.pairs})


def two_tower_inputs(data: TrainingData, catalogue: Catalogue) -> dict:
    positives = data.ranker_train[data.ranker_train["label"] == 1]
    items = catalogue.items
    item_index = items.index(positives[ITEM].to_numpy())
    counts = popularity(data.train, items)
    return {
        "user_x": pack_users(positives, data.users, items, positives[TIME].to_numpy()),
        "item_x": pack_items(item_index, positives, catalogue),
        "item_idx": item_index,
        "item_prob": (counts / counts.sum())[item_index].astype(np.float32),
    }


@asset(deps=["training_dataset", "tag_embeddings"], code_version="1",
       description="torchrec two-tower retriever: in-batch sampled softmax with logQ correction; item-tower "
                   "vectors exported with the model.", **MODEL_ASSET)
def two_tower(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
              mlflow_tracking: Tracking):
    data, catalogue = load_inputs(context, training, warehouse)
    inputs = two_tower_inputs(data, catalogue)
    cfg = TwoTowerConfig()
    sizes = dict(n_users=len(data.users), n_items=len(catalogue.items), n_categories=len(catalogue.categories),
                 user_dense_dim=USER_DENSE_WIDTH, item_dense_dim=catalogue.item_dense_width)
    train_cfg = training.train_config(training.two_tower_epochs, lr=0.003)
    with mlflow.start_run(run_name=f"two_tower-{context.partition_key}", nested=True) as run:
        mlflow.log_params({"model": "two_tower", "day": context.partition_key, **asdict(cfg), **sizes,
                           **asdict(train_cfg), "executor": training.executor})
        model, history = fit(lambda: TwoTower(**sizes, cfg=cfg), inputs, in_batch_softmax_loss, train_cfg,
                             executor=training.executor, workers=training.ray_workers,
                             on_epoch=_log_epochs("train"))
        version = log_model("two_tower", model, inputs["user_x"][:5],
                            {"users.json": data.users.ids, "items.json": catalogue.items.ids,
                             "categories.json": catalogue.categories.ids})
    return _result("two_tower", version, history, run.info.run_id, {"sizes": MetadataValue.json(sizes)})


@asset(deps=["training_dataset", "tag_embeddings", "item2vec"], code_version="1",
       description="tt7 ranker: user id, candidate, GRU over the last 10 items with time-delta buckets, item "
                   "feature encoder -> MLP -> sigmoid; item embeddings initialised from item2vec.", **MODEL_ASSET)
def ranker(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
           mlflow_tracking: Tracking):
    data, catalogue = load_inputs(context, training, warehouse)
    frame = data.ranker_train
    x = pack_ranker(frame, data.users, catalogue, frame[TIME].to_numpy())
    inputs = {"x": x, "label": frame["label"].to_numpy(np.float32)}
    item_init = _item2vec_embeddings(context)
    cfg = RankerConfig()
    sizes = dict(n_users=len(data.users), n_items=len(catalogue.items), n_categories=len(catalogue.categories),
                 user_dense_dim=USER_DENSE_WIDTH, item_dense_dim=catalogue.item_dense_width)
    train_cfg = training.train_config(training.ranker_epochs, lr=0.002)
    with mlflow.start_run(run_name=f"ranker-{context.partition_key}", nested=True) as run:
        mlflow.log_params({"model": "ranker", "day": context.partition_key, **asdict(cfg), **sizes,
                           **asdict(train_cfg), "executor": training.executor})
        started = time.perf_counter()
        counts = popularity(data.train, catalogue.items)  # what negatives were drawn by
        model, history = fit(lambda: Ranker(**sizes, cfg=cfg, item_init=item_init, negative_sampling_counts=counts),
                             inputs, bce_loss, train_cfg,
                             executor=training.executor, workers=training.ray_workers,
                             on_epoch=_log_epochs("train"))
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        version = log_model("ranker", model, x[:5], {"users.json": data.users.ids, "items.json": catalogue.items.ids,
                                                     "categories.json": catalogue.categories.ids})
    return _result("ranker", version, history, run.info.run_id, {"sizes": MetadataValue.json(sizes)})


def _item2vec_embeddings(context: AssetExecutionContext) -> np.ndarray:
    """The same day's item2vec vectors, from the version its materialization registered."""
    version = latest_version(context, "item2vec")
    model = mlflow.pytorch.load_model(f"models:/item2vec/{version}")
    return model.embeddings.weight.detach().numpy()


def latest_version(context: AssetExecutionContext, asset_name: str) -> str:
    """The MLflow version the latest materialization of `asset_name` for this partition registered."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset_name), asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records:
        raise Failure(f"{asset_name} has no materialization for {context.partition_key}: materialize it first")
    return str(records[0].asset_materialization.metadata["mlflow_version"].value)

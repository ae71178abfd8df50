"""The day's models trained and registered, as the model assets run them.

Each model learns from the day's fit period (`TrainingData.fit`), the weights the validation period after it
judges (kept beside the version: `registry.log_fit_only_state`); then, like the baselines refitted before the
holdout, it is refreshed on the validation period (`TrainingPlan.refresh_epochs`), and that is the registered,
served version: a model that never saw the last days cannot know the items and users that arrived in them.

Each trains through the shared loop (`training.fit`: in-process or Ray Train, as the plan says) in a nested
MLflow run of its own (params, per-epoch metrics, the model) and is registered as a new version.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from torch import nn

from recsys_assets.feature_store.repository import day_start
from recsys_assets.feature_store.retrieval import point_in_time_features
from recsys_assets.models.data import ITEM, TIME, Vocabulary, popularity
from recsys_assets.models.dataset import TrainingData, model_sizes, pack_items, ranker_inputs, two_tower_inputs
from recsys_assets.models.evaluation import EvaluationConfig, RankerValidation
from recsys_assets.models.features import Catalogue
from recsys_assets.models.incremental import (
    FULL,
    INCREMENTAL,
    IncrementalPolicy,
    Start,
    Version,
    choose_start,
    recent,
)
from recsys_assets.models.item2vec import Item2VecConfig, Item2VecModel, item_sequences, train_item2vec
from recsys_assets.models.ranker import Ranker, RankerConfig, ranker_loss
from recsys_assets.models.registry import (
    MlflowStore,
    champion,
    fit_only,
    load_model,
    load_version,
    log_fit_only_state,
    log_model,
)
from recsys_assets.models.training import LossFn, TrainConfig, TrainHistory, Validate, fit
from recsys_assets.models.tuning import TuningConfig, choose_first_values, load_best, save_best
from recsys_assets.models.two_tower import TwoTower, TwoTowerConfig, encode, in_batch_softmax_loss
from recsys_assets.models.warm_start import CATEGORIES, ITEMS, USERS, WarmStart, warm_start

TWO_TOWER_LR = 0.003  # until a search (`tuning.py`) chooses the two-tower's
RANKER_LR = 0.002

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingPlan:
    """How the day's models train: each model's epochs and batches, the refresh, the users validation scores,
    and where the shared loop runs (in-process, or Ray Train with `ray_workers` workers). The fields are the
    training resource's of the same names (`of`)."""
    item2vec_epochs: int
    two_tower_epochs: int  # the first day's, before any search chooses them
    ranker_epochs: int
    ranker_patience: int  # `TrainConfig.patience` of the ranker, scored on validation after every epoch
    refresh_epochs: int  # on the validation period (0: the fit-only weights are registered)
    incremental: bool  # `incremental.IncrementalPolicy`'s fields
    incremental_window_days: int
    incremental_epochs: int
    full_retrain_every_days: int
    batch_size: int
    ranker_batch_size: int  # the listwise loss scores every pair of a batch's positives: its cost grows with it
    eval_max_users: int
    seed: int
    executor: str
    ray_workers: int
    ray_storage: str | None
    ray_use_gpu: bool

    @classmethod
    def of(cls, settings: object) -> TrainingPlan:
        """The plan of an object with fields of the same names (the training resource)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def incremental_policy(self) -> IncrementalPolicy:
        return IncrementalPolicy(self.incremental, self.incremental_window_days, self.incremental_epochs,
                                 self.full_retrain_every_days)

    def item2vec(self) -> Item2VecConfig:
        return Item2VecConfig(epochs=self.item2vec_epochs, seed=self.seed)

    def two_tower(self, epochs: int, lr: float) -> TrainConfig:
        """The two-tower's rows come in time-local batches (`dataset.two_tower_inputs`): their order is shuffled."""
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=lr, seed=self.seed, shuffle="batches")

    def ranker(self) -> TrainConfig:
        """The ranker's rows come in time-local batches too (`ranker.listwise_batches`)."""
        return TrainConfig(epochs=self.ranker_epochs, batch_size=self.ranker_batch_size, lr=RANKER_LR, seed=self.seed,
                           shuffle="batches", patience=self.ranker_patience)

    def refresh(self, fit_config: TrainConfig) -> TrainConfig:
        """The refresh trains as the fit did, for `refresh_epochs`, every one of them (nothing judges it)."""
        return replace(fit_config, epochs=self.refresh_epochs, patience=0)

    def evaluation(self) -> EvaluationConfig:
        return EvaluationConfig(max_users=self.eval_max_users, seed=self.seed)

    def fit(self, build: Callable[[], nn.Module], data: dict[str, np.ndarray], loss_fn: LossFn, cfg: TrainConfig,
            on_epoch: Callable[[int, dict], None], validate: Validate | None = None
            ) -> tuple[nn.Module, TrainHistory]:
        return fit(build, data, loss_fn, cfg, executor=self.executor, workers=self.ray_workers,
                   storage=self.ray_storage, use_gpu=self.ray_use_gpu, on_epoch=on_epoch, validate=validate)


@dataclass(frozen=True)
class RegisteredModel:
    """A trained model's registered version and how its training went."""
    name: str
    version: str
    run_id: str
    history: TrainHistory  # on the fit period
    refreshed: TrainHistory  # on the validation period (empty: not refreshed)


def epoch_logger(log: logging.Logger, epochs: int, prefix: str = "train") -> Callable[[int, dict], None]:
    """Per epoch: the nested run's MLflow metrics, and a line in `log` (the Dagster log: the UI, `make demo`)."""
    def log_epoch(epoch: int, metrics: dict) -> None:
        mlflow.log_metrics({f"{prefix}_{k}": v for k, v in metrics.items()}, step=epoch)
        log.info(f"{prefix} epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return log_epoch


def train_item2vec_version(data: TrainingData, plan: TrainingPlan, day: str, log: logging.Logger = LOG
                           ) -> RegisteredModel:
    """Skip-gram item2vec over the users' sequences of the fit period, refreshed on the validation period's,
    registered with its items."""
    items = data.items
    cfg = plan.item2vec()
    with mlflow.start_run(run_name=f"item2vec-{day}", nested=True) as run:
        mlflow.log_params({"model": "item2vec", "day": day, **asdict(cfg), "items": len(items) - 1,
                           "refresh_epochs": plan.refresh_epochs})
        result = refreshed = train_item2vec(item_sequences(data.fit, items), len(items), cfg,
                                            on_epoch=epoch_logger(log, cfg.epochs))
        if plan.refresh_epochs > 0:
            log_fit_only_state("item2vec", Item2VecModel(result.embeddings))
            refreshed = train_item2vec(item_sequences(data.refresh_events, items), len(items),
                                       replace(cfg, epochs=plan.refresh_epochs), start=result.model,
                                       on_epoch=epoch_logger(log, plan.refresh_epochs, prefix="refresh"))
        version = log_model("item2vec", Item2VecModel(refreshed.embeddings),
                            np.arange(1, min(len(items), 6), dtype=np.float32)[:, None], {"items.json": items.ids})
    history = TrainHistory(result.epoch_losses, result.epoch_seconds, samples=result.pairs)
    return RegisteredModel("item2vec", version, run.info.run_id, history, TrainHistory() if refreshed is result else
                           TrainHistory(refreshed.epoch_losses, refreshed.epoch_seconds, samples=refreshed.pairs))


Window = Callable[[pd.DataFrame], pd.DataFrame]  # the fit period's rows an incremental day trains on


@dataclass(frozen=True)
class TorchModel:
    """One of the day's torch models, ready to train: how it is built, what it learns from and how."""
    name: str
    cfg: object  # its hyper-parameters (a dataclass), logged
    sizes: dict  # `dataset.model_sizes`
    build: Callable[[], nn.Module]
    loss_fn: LossFn
    inputs: dict[str, np.ndarray]  # the fit period's rows
    refresh_inputs: dict[str, np.ndarray]  # the validation period's
    example: np.ndarray  # a few input rows: the registered model's signature
    train: TrainConfig  # on the fit period (`TrainingPlan.refresh`: the refresh's)
    artifacts: dict[str, object]  # beside the registered model: its vocabularies and catalogue
    exports: Callable[[nn.Module], dict[str, object]] | None = None  # what the trained model adds to them
    before_refresh: Callable[[nn.Module], None] | None = None  # readies the fit-only weights for the refresh
    validate: Validate | None = None  # scores every epoch of the fit on validation (`training.train_loop`)


def _artifacts(data: TrainingData, catalogue: Catalogue) -> dict[str, object]:
    return {"users.json": data.users.ids, **catalogue.artifacts()}


def train_and_register(model: TorchModel, plan: TrainingPlan, day: str, log: logging.Logger = LOG,
                       tags: dict[str, str] | None = None) -> RegisteredModel:
    """Train on the fit period (with `model.validate`, every epoch scored on validation; with patience too,
    stopped early, the best epoch's weights kept), keep those weights, refresh them on the validation period
    (after `model.before_refresh`), register the refreshed model with its artifacts."""
    refresh = plan.refresh(model.train)
    with mlflow.start_run(run_name=f"{model.name}-{day}", nested=True) as run:
        mlflow.log_params({"model": model.name, "day": day, **asdict(model.cfg), **model.sizes, **asdict(model.train),
                           "executor": plan.executor, "refresh_epochs": refresh.epochs,
                           "refresh_rows": len(next(iter(model.refresh_inputs.values())))})
        trained, history = plan.fit(model.build, model.inputs, model.loss_fn, model.train,
                                    epoch_logger(log, model.train.epochs), model.validate)
        if history.best_epoch is not None:
            mlflow.log_param("best_epoch", history.best_epoch + 1)
            kept = history.best_epoch + 1 if model.train.patience else len(history.epoch_losses)
            log.info(f"{model.name}: best on validation after epoch {history.best_epoch + 1} of "
                     f"{len(history.epoch_losses)}; the weights of epoch {kept} kept")
        refreshed = TrainHistory()
        if refresh.epochs > 0:
            log_fit_only_state(model.name, trained)
            start = copy.deepcopy(trained)
            if model.before_refresh is not None:
                model.before_refresh(start)
            log.info(f"refreshing {model.name} on the validation period")
            trained, refreshed = plan.fit(lambda: start, model.refresh_inputs, model.loss_fn, refresh,
                                          epoch_logger(log, refresh.epochs, prefix="refresh"))
        version = log_model(model.name, trained, model.example,
                            {**model.artifacts, **(model.exports(trained) if model.exports else {})})
        for key, value in (tags or {}).items():  # how it trained (`incremental.Start.tags`)
            MlflowClient().set_model_version_tag(model.name, version, key, value)
    return RegisteredModel(model.name, version, run.info.run_id, history, refreshed)


@dataclass(frozen=True)
class TwoTowerValues:
    """The values the day's two-tower trains with (`tuning.VALUES`), as the search of `day` chose them."""
    day: str
    best: dict

    @property
    def cfg(self) -> TwoTowerConfig:
        # A search from before the user id or the logQ weight was searched: the id was on, the weight 1.
        return replace(TwoTowerConfig(), temperature=self.best["temperature"], id_dim=self.best["id_dim"],
                       user_id=self.best.get("user_id", True), logq_weight=self.best.get("logq_weight", 1.0))

    @property
    def epochs(self) -> int:
        return self.best["epochs"]

    @property
    def lr(self) -> float:
        return self.best["lr"]


def two_tower_values(tuning_dir: Path, day: str, data: TrainingData, catalogue: Catalogue, plan: TrainingPlan,
                     log: logging.Logger = LOG) -> TwoTowerValues:
    """The last search's best values (`tuning.load_best`); before any search, the user id and the logQ weight
    judged once on the day's validation (`tuning.choose_first_values`), saved where a search saves its best:
    the days after keep them."""
    tuned = load_best(tuning_dir)
    if tuned is None:
        choice = choose_first_values(data, catalogue, plan.two_tower_epochs, TWO_TOWER_LR, TuningConfig(
            batch_size=plan.batch_size, eval_max_users=plan.eval_max_users, seed=plan.seed))
        save_best(tuning_dir, day, choice)
        tuned = {"day": day, **choice}  # as saved
        log.info(f"no search yet: the user id and the logQ weight judged on validation {choice['trials']}")
    values = TwoTowerValues(tuned["day"], tuned["best"])
    log.info(f"two-tower values from the search of {values.day}: {values.best}")
    return values


def two_tower_model(data: TrainingData, catalogue: Catalogue, values: TwoTowerValues, plan: TrainingPlan,
                    exports: Callable[[nn.Module], dict[str, object]], window: Window | None = None) -> TorchModel:
    """The torchrec two-tower: in-batch sampled softmax with logQ correction, with `values`; trained on the fit
    period's rows `window` keeps (all without one)."""
    batches = dict(batch_size=plan.batch_size, seed=plan.seed)
    inputs = two_tower_inputs(data, catalogue, window=window, **batches)
    cfg, sizes = values.cfg, model_sizes(data, catalogue)
    return TorchModel("two_tower", cfg, sizes, lambda: TwoTower(**sizes, cfg=cfg), in_batch_softmax_loss, inputs,
                      two_tower_inputs(data, catalogue, refresh=True, **batches), inputs["user_x"][:5],
                      plan.two_tower(values.epochs, values.lr), _artifacts(data, catalogue), exports=exports)


def item_vectors_at_day_end(store, model: TwoTower, catalogue: Catalogue, day: str) -> np.ndarray:
    """Item-tower vectors of every item (row i = items.json[i]) with the stats as of the end of `day` (from the
    feature `store`): what the ANN index serves."""
    end_ms = int(day_start(date.fromisoformat(day) + timedelta(days=1)).timestamp() * 1000)
    stats = point_in_time_features(store, pd.DataFrame({ITEM: catalogue.items.ids, TIME: end_ms}))
    return encode(model.item_vectors, pack_items(np.arange(1, len(catalogue.items)), stats, catalogue))


@dataclass(frozen=True)
class Item2VecVectors:
    """The item vectors of one item2vec version, by item index."""
    fit_only: np.ndarray  # learned on the fit period
    refreshed: np.ndarray  # and refreshed on the validation period: the registered ones


def load_item2vec_vectors(version: str) -> Item2VecVectors:
    """From the registry of the active MLflow tracking URI."""
    store = MlflowStore(mlflow.get_tracking_uri())
    model = load_model(store, "item2vec", version)
    judged = fit_only(store, "item2vec", version, model)
    return Item2VecVectors(judged.embeddings.weight.detach().numpy(), model.embeddings.weight.detach().numpy())


def ready_ranker_for_refresh(model: Ranker, train_counts: np.ndarray, fit_counts: np.ndarray,
                             refreshed_vectors: np.ndarray) -> None:
    """The refresh's negatives were drawn by the whole training period's popularity (`train_counts`): the logQ
    term follows; items first seen in the validation period (none in `fit_counts`) get item2vec's vectors from
    its own refresh."""
    model.set_negative_sampling_counts(train_counts)
    unseen = np.flatnonzero(fit_counts[1:] == 0) + 1
    model.set_item_vectors(unseen, refreshed_vectors[unseen])


def ranker_model(data: TrainingData, catalogue: Catalogue, item2vec: Item2VecVectors, plan: TrainingPlan,
                 window: Window | None = None) -> TorchModel:
    """The tt7 ranker, its item embeddings from the day's item2vec, trained pointwise and listwise on the fit
    period's rows `window` keeps (all without one) and scored on validation after every epoch
    (`evaluation.RankerValidation`)."""
    fit_rows = window(data.ranker_train) if window is not None else data.ranker_train
    inputs, refresh_inputs = (ranker_inputs(frame, data.users, catalogue, plan.seed)
                              for frame in (fit_rows, data.ranker_refresh))
    counts = popularity(data.fit, catalogue.items)  # what the negatives were drawn by
    cfg, sizes = RankerConfig(), model_sizes(data, catalogue)
    return TorchModel(
        "ranker", cfg, sizes,
        lambda: Ranker(**sizes, cfg=cfg, item_init=item2vec.fit_only, negative_sampling_counts=counts), ranker_loss,
        inputs, refresh_inputs, inputs["x"][:5], plan.ranker(), _artifacts(data, catalogue),
        before_refresh=partial(ready_ranker_for_refresh, train_counts=popularity(data.train, catalogue.items),
                               fit_counts=counts, refreshed_vectors=item2vec.refreshed),
        validate=RankerValidation.of(data, catalogue, plan.evaluation()))


# -- incremental days (models/incremental.py) ------------------------------------------------------------------

@dataclass(frozen=True)
class Previous:
    """The version a day continues: its weights as validation judged them (before its refresh) and its
    vocabularies."""
    version: str
    state: dict
    vocabularies: dict[str, Vocabulary]


def day_vocabularies(data: TrainingData, catalogue: Catalogue) -> dict[str, Vocabulary]:
    return {USERS: data.users, ITEMS: catalogue.items, CATEGORIES: catalogue.categories}


def load_previous(store: MlflowStore, name: str, version: str) -> Previous:
    model, folder = load_version(store, name, version)
    judged = fit_only(store, name, version, model)
    users = Vocabulary(json.loads((folder / "users.json").read_text()))
    catalogue = Catalogue.from_artifacts(folder)
    return Previous(version, judged.state_dict(), {USERS: users, ITEMS: catalogue.items,
                                                   CATEGORIES: catalogue.categories})


def registered_versions(client: MlflowClient, name: str) -> tuple[Version | None, Version | None]:
    """(the champion, the newest registered version) of `name`, with their tags."""
    found = champion(client, name)
    newest = max(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), default=None)
    return tuple(Version(str(v.version), dict(v.tags)) if v is not None else None for v in (found, newest))


def continued(model: TorchModel, previous: Previous, vocabularies: dict[str, Vocabulary], epochs: int
              ) -> tuple[TorchModel, WarmStart]:
    """`model` (built over the day's recent rows) warm-started from `previous` (`warm_start.warm_start`) for
    `epochs`; the refresh on the validation period follows as on a full day. One epoch is not scored on
    validation after it (nothing to choose between: the day's evaluation judges the model there; the ranker's
    scoring took ~15 s of its step)."""
    started = model.build()
    report = warm_start(started, previous.state, started.id_tables(), previous.vocabularies, vocabularies)
    return replace(model, build=lambda: copy.deepcopy(started), train=replace(model.train, epochs=epochs),
                   validate=model.validate if epochs > 1 else None), report


@dataclass(frozen=True)
class DayModel:
    """The day's model as it will train: from scratch or continuing the champion (`start`)."""
    model: TorchModel
    start: Start
    warm_start: WarmStart | None = None

    def metadata(self) -> dict:
        rows = len(next(iter(self.model.inputs.values())))
        return {"training": self.start.mode, "training_reason": self.start.reason,
                "started_from": self.start.started_from or "", "rows": rows,
                **({"warm_start": self.warm_start.summary()} if self.warm_start else {})}


def day_model(name: str, build: Callable[[Window | None], TorchModel], data: TrainingData, catalogue: Catalogue,
              plan: TrainingPlan, day: str, full_asked: bool = False, log: logging.Logger = LOG) -> DayModel:
    """`build(window)` (None: the whole fit period) as `incremental.choose_start` decides from the registry of
    the active MLflow tracking URI. A champion whose weights do not all fit the day's model (another
    configuration) is no start: the day retrains from scratch."""
    champion_version, newest = registered_versions(MlflowClient(), name)
    start = choose_start(day, plan.incremental_policy(), champion_version, newest, full_asked)
    if start.mode == INCREMENTAL:
        window = partial(recent, before_ms=data.validation_boundary, window_days=plan.incremental_window_days)
        previous = load_previous(MlflowStore(mlflow.get_tracking_uri()), name, start.started_from)
        model, report = continued(build(window), previous, day_vocabularies(data, catalogue), plan.incremental_epochs)
        if report.whole:
            log.info(f"{name}: incremental, {start.reason}: {report.summary()}")
            return DayModel(model, start, report)
        start = Start(FULL, f"the champion {start.started_from} does not fit the day's model ({report.fresh} "
                            f"differ): retrained from scratch", day)
    log.info(f"{name}: full retrain ({start.reason})")
    return DayModel(build(None), start)

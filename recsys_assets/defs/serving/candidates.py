"""Precomputed candidate assets: popular and recently popular items, i2i, u2i and EASE neighbours, users' last
items, the catalogue.

Each writes a new version of its kind to the serving store (SQLite locally, Redis when configured) and
records the version in its metadata; `serving_release` publishes the versions together. What needs torch, MLflow
or Feast imports them in the asset that uses them, not when the code location loads.
"""


import json
from dataclasses import asdict
from datetime import date, timedelta

import numpy as np
import pandas as pd
from dagster import AssetCheckResult, AssetCheckSpec, AssetDep, AssetExecutionContext, MaterializeResult, asset

from recsys_assets.data.schema import day_start_ms
from recsys_assets.defs.serving.index import SERVING_ASSET, build_version, champion_version, without_champion
from recsys_assets.defs.shared.partitions import days_up_to
from recsys_assets.defs.shared.resources import (
    FeatureStoreResource,
    ServingResource,
    TrainingResource,
    WarehouseResource,
)
from recsys_assets.feature_contract import HISTORY_LENGTH
from recsys_assets.models.data import ITEM, TIME, USER, Vocabulary
from recsys_assets.models.fusion import Fusion
from recsys_assets.serving_data.candidates import (
    EASE,
    I2I,
    POPULAR,
    POPULAR_KEY,
    RECENT,
    SEQUENCE,
    U2I,
    CandidateStore,
    catalogue_rows,
    item_neighbours,
    last_items,
    user_top_items,
    user_top_scored,
)
from recsys_assets.serving_data.candidates import (
    ITEM as ITEM_KIND,
)
from recsys_assets.serving_data.candidates import (
    popular_items as most_popular,
)
from recsys_assets.serving_data.candidates import (
    recent_popularity as recent_counts,
)

TOP_K = 100
ACTIVE_USER_DAYS = 30  # u2i is precomputed for users with an event in the last 30 days of the window
# Read the reviews of the days before too: a replaced earlier day changes them.
LANDED_WINDOW = [AssetDep("raw_reviews", partition_mapping=days_up_to())]


def _window_events(context: AssetExecutionContext, warehouse: WarehouseResource,
                   training: TrainingResource) -> pd.DataFrame:
    """Real reviews up to the day (the training window): never sampled negatives."""
    from recsys_assets.models.dataset import training_window_start

    day = date.fromisoformat(context.partition_key)
    first = training_window_start(day, training.window_days)
    return warehouse.warehouse().read_reviews(first, day).to_pandas()[[USER, ITEM, "rating", TIME]]


def _spec(asset_name: str) -> list[AssetCheckSpec]:
    return [AssetCheckSpec("written", asset=asset_name, blocking=True,
                           description="the version holds one entry per expected key")]


def _write(context: AssetExecutionContext, serving: ServingResource, kind: str, version: str, rows,
           expected: int, extra: dict | None = None) -> MaterializeResult:
    store = CandidateStore(serving.kv())
    written = store.write(kind, version, rows)
    return MaterializeResult(
        metadata={"kind": kind, "version": version, "entries": written, **(extra or {})},
        check_results=[AssetCheckResult(check_name="written", passed=written == expected and written > 0,
                                        metadata={"entries": written, "expected": expected})])


@asset(deps=LANDED_WINDOW, code_version="1", kinds={"sqlite", "redis"}, check_specs=_spec("popular_items"),
       description="The 100 most reviewed items of the window, from real reviews only.", **SERVING_ASSET)
def popular_items(context: AssetExecutionContext, serving: ServingResource, warehouse: WarehouseResource,
                  training: TrainingResource) -> MaterializeResult:
    top = most_popular(_window_events(context, warehouse, training), TOP_K)
    return _write(context, serving, POPULAR, build_version(context), [(POPULAR_KEY, top)], 1, {"items": len(top)})


@asset(deps=["promotion", *LANDED_WINDOW], code_version="2", kinds={"sqlite", "redis"},
       check_specs=_spec("recent_popularity"),
       description="Each item's reviews of the window, each counted 0.5 ** (age / half-life) at the day's end (the "
                   "half-life the champion ranker's fusion chose on validation), and the 100 highest: the rerank's "
                   "recent-popularity expert and candidates (popularity drifts; the models do not see time).",
       **SERVING_ASSET)
def recent_popularity(context: AssetExecutionContext, serving: ServingResource, warehouse: WarehouseResource,
                      training: TrainingResource) -> MaterializeResult:
    from recsys_assets.models.registry import ranker_fusion

    registry = serving.registry()
    version = champion_version(registry, "ranker")
    half_life = (ranker_fusion(registry.client(), version) if version is not None else Fusion()).recent_half_life_days
    events = _window_events(context, warehouse, training)
    end_ms = day_start_ms(date.fromisoformat(context.partition_key) + timedelta(days=1))
    rows = list(recent_counts(events, end_ms, half_life, TOP_K))
    return _write(context, serving, RECENT, build_version(context, version), rows, len(rows),
                  {"items": len(rows) - 1, "half_life_days": half_life, "ranker_version": version})


@asset(deps=["promotion"], code_version="2", kinds={"sqlite", "redis"}, check_specs=_spec("i2i_candidates"),
       description="Each item's 100 nearest items by the champion item2vec: cosine + the popularity weight chosen "
                   "on validation x log(1 + the item's reviews in the window).", **SERVING_ASSET)
def i2i_candidates(context: AssetExecutionContext, serving: ServingResource, warehouse: WarehouseResource,
                   training: TrainingResource) -> MaterializeResult:
    from recsys_assets.models.registry import i2i_weight, load_version

    registry = serving.registry()
    version = champion_version(registry, "item2vec")
    if version is None:
        return without_champion(context, "item2vec", "written")
    model, folder = load_version(registry, "item2vec", version)
    ids = json.loads((folder / "items.json").read_text())
    vectors = model.embeddings.weight.detach().numpy()[1:len(ids) + 1]
    weight = i2i_weight(registry.client(), version)
    prior = None
    if weight > 0:
        counts = _window_events(context, warehouse, training)[ITEM].value_counts()
        prior = weight * np.log1p(counts.reindex(ids, fill_value=0).to_numpy(np.float64))
    return _write(context, serving, I2I, build_version(context, version),
                  item_neighbours(ids, vectors, TOP_K, prior=prior), len(ids),
                  {"model_version": version, "popularity_weight": weight})


@asset(deps=["promotion", "online_features"], code_version="1", kinds={"sqlite", "redis"},
       check_specs=_spec("u2i_candidates"),
       description="The champion two-tower's top 100 unseen items for each user active in the window's last "
                   "30 days, user features as of the day's end.", **SERVING_ASSET)
def u2i_candidates(context: AssetExecutionContext, serving: ServingResource, warehouse: WarehouseResource,
                   training: TrainingResource, feature_store: FeatureStoreResource) -> MaterializeResult:
    from recsys_assets.feature_store.retrieval import point_in_time_features
    from recsys_assets.models.bundles import Retriever

    registry = serving.registry()
    version = champion_version(registry, "two_tower")
    if version is None:
        return without_champion(context, "two_tower", "written")
    retriever = Retriever.load(registry, version)
    events = _window_events(context, warehouse, training)
    end_ms = day_start_ms(date.fromisoformat(context.partition_key) + timedelta(days=1))
    active = sorted(events.loc[events[TIME] >= end_ms - ACTIVE_USER_DAYS * 86_400_000, USER].unique())
    users = point_in_time_features(feature_store.repository().store, pd.DataFrame({USER: active, TIME: end_ms}))
    vectors = retriever.user_vectors(users, np.full(len(users), end_ms))
    seen = events[events[USER].isin(set(active))].groupby(USER)[ITEM].apply(set).to_dict()
    rows = user_top_items(users[USER].tolist(), vectors, retriever.catalogue.items.ids, retriever.item_vectors,
                          seen, TOP_K)
    return _write(context, serving, U2I, build_version(context, version), rows, len(active),
                  {"model_version": version, "active_users": len(active)})


@asset(deps=["promotion", *LANDED_WINDOW], code_version="2", kinds={"sqlite", "redis"},
       check_specs=_spec("ease_candidates"),
       description="Time-aware EASE (item-item, closed form; recent interactions count more; l2 and half-lives as "
                   "the champion ranker's fusion chose them on validation) refitted "
                   "on the window's reviews: the top 100 unseen items and their scores for each user active in the "
                   "window's last 30 days. The rerank adds them to its candidates and fuses their scores.",
       **SERVING_ASSET)
def ease_candidates(context: AssetExecutionContext, serving: ServingResource, warehouse: WarehouseResource,
                    training: TrainingResource) -> MaterializeResult:
    from recsys_assets.models.baselines import BaselineConfig, TimeAwareEase
    from recsys_assets.models.registry import ranker_fusion

    registry = serving.registry()
    version = champion_version(registry, "ranker")
    if version is None:
        return without_champion(context, "ranker", "written")
    fusion = ranker_fusion(registry.client(), version)
    events = _window_events(context, warehouse, training)
    end_ms = day_start_ms(date.fromisoformat(context.partition_key) + timedelta(days=1))
    active = sorted(events.loc[events[TIME] >= end_ms - ACTIVE_USER_DAYS * 86_400_000, USER].unique())
    users, items = Vocabulary(events[USER]), Vocabulary(events[ITEM])
    ease = TimeAwareEase.of(fusion)  # interactions weighted by their age at the day's end, as validation chose
    history = ease.history(events, users, items, end_ms)
    model = ease.fit(events, users, items, end_ms, BaselineConfig().max_items)
    rows_of = users.index(np.asarray(active, dtype=object))
    seen = events[events[USER].isin(set(active))].groupby(USER)[ITEM].apply(set).to_dict()
    rows = user_top_scored(active, items.ids, lambda a, b: model.scores(history[rows_of[a:b]])[:, 1:], seen, TOP_K)
    return _write(context, serving, EASE, build_version(context, version), rows, len(active),
                  {"ranker_version": version, **{f"ease_{k}": v for k, v in asdict(ease).items()},
                   "ease_weight": fusion.ease_weight,
                   "active_users": len(active), "items_modelled": len(model.columns)})


@asset(deps=LANDED_WINDOW, code_version="1", kinds={"sqlite", "redis"}, check_specs=_spec("user_sequences"),
       description=f"Each user's last {HISTORY_LENGTH} items with their timestamps (ms), oldest first.",
       **SERVING_ASSET)
def user_sequences(context: AssetExecutionContext, serving: ServingResource, warehouse: WarehouseResource,
                   training: TrainingResource) -> MaterializeResult:
    events = _window_events(context, warehouse, training)
    return _write(context, serving, SEQUENCE, build_version(context), last_items(events), events[USER].nunique())


@asset(deps=["item_metadata"], code_version="1", kinds={"sqlite", "redis"}, check_specs=_spec("item_catalog"),
       description="What a product card shows per item: title, category, price, image url.", **SERVING_ASSET)
def item_catalog(context: AssetExecutionContext, serving: ServingResource,
                 warehouse: WarehouseResource) -> MaterializeResult:
    metadata = warehouse.warehouse().read_items().to_pandas()
    return _write(context, serving, ITEM_KIND, build_version(context), catalogue_rows(metadata),
                  metadata["parent_asin"].nunique())

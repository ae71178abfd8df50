"""Reading online features: many entities in one call, fresh views first, batch as fallback.

Used by training-time evaluation and by the serving app. An entity the store has never seen comes back
with defaults (counts 0, averages None, empty lists), marked `missing`: never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from feast import FeatureStore, Field
from feast.types import Array, Int64

from recsys_assets.feature_store.definitions import (
    FEATURES_BY_VIEW,
    ITEM_KEY,
    ITEM_VIEW,
    USER_KEY,
    USER_VIEW,
    fresh_view,
)

FRESH, BATCH, MISSING = "fresh", "batch", "missing"


def default_value(feature: Field) -> object:
    """What an entity with no history has: no items, zero counts, no average."""
    if isinstance(feature.dtype, Array):
        return []
    return 0 if feature.dtype == Int64 else None


@dataclass
class FeatureRows:
    """Feature values aligned with the requested keys: `columns[name][i]` belongs to `keys[i]`."""

    keys: list[str]
    columns: dict[str, list]
    source: list[str]  # fresh | batch | missing, per key

    def row(self, i: int) -> dict:
        return {name: values[i] for name, values in self.columns.items()}

    def as_dicts(self) -> list[dict]:
        return [self.row(i) for i in range(len(self.keys))]


def _feature_refs(view: str) -> list[str]:
    return [f"{v}:{f.name}" for v in (view, fresh_view(view)) for f in FEATURES_BY_VIEW[view]]


def _pick(view: str, keys: list[str], raw: dict, rows: list[int] | None = None) -> FeatureRows:
    """Per entity: the fresh twin when it is at least as new as the batch row, else batch, else defaults."""
    features = FEATURES_BY_VIEW[view]
    rows = rows if rows is not None else list(range(len(keys)))
    probe = features[0].name  # every feature of a view shares the view's timestamp
    fresh_ts = raw[f"{fresh_view(view)}__{probe}__ts"]
    batch_ts = raw[f"{view}__{probe}__ts"]
    sources = []
    for r in rows:
        if fresh_ts[r] and fresh_ts[r] >= batch_ts[r]:
            sources.append(FRESH)
        elif batch_ts[r]:
            sources.append(BATCH)
        else:
            sources.append(MISSING)
    columns = {}
    for feature in features:
        fresh_values = raw[f"{fresh_view(view)}__{feature.name}"]
        batch_values = raw[f"{view}__{feature.name}"]
        columns[feature.name] = [
            fresh_values[r] if s == FRESH else batch_values[r] if s == BATCH else default_value(feature)
            for r, s in zip(rows, sources)
        ]
    return FeatureRows(keys=list(keys), columns=columns, source=sources)


class OnlineFeatures:
    def __init__(self, store: FeatureStore):
        self.store = store

    def _read(self, refs: list[str], entity_rows: list[dict]) -> dict:
        response = self.store.get_online_features(features=refs, entity_rows=entity_rows, full_feature_names=True)
        return response.to_dict(include_event_timestamps=True)

    def users(self, user_ids: list[str]) -> FeatureRows:
        if not user_ids:
            return _pick(USER_VIEW, [], _empty(USER_VIEW))
        raw = self._read(_feature_refs(USER_VIEW), [{USER_KEY: u} for u in user_ids])
        return _pick(USER_VIEW, user_ids, raw)

    def items(self, parent_asins: list[str]) -> FeatureRows:
        if not parent_asins:
            return _pick(ITEM_VIEW, [], _empty(ITEM_VIEW))
        raw = self._read(_feature_refs(ITEM_VIEW), [{ITEM_KEY: a} for a in parent_asins])
        return _pick(ITEM_VIEW, parent_asins, raw)

    def for_ranking(self, user_id: str, parent_asins: list[str]) -> tuple[FeatureRows, FeatureRows]:
        """A user and its candidate items in one online read (Feast looks each entity up once)."""
        if not parent_asins:
            return self.users([user_id]), self.items([])
        raw = self._read(_feature_refs(USER_VIEW) + _feature_refs(ITEM_VIEW),
                         [{USER_KEY: user_id, ITEM_KEY: a} for a in parent_asins])
        return _pick(USER_VIEW, [user_id], raw, rows=[0]), _pick(ITEM_VIEW, parent_asins, raw)


def _empty(view: str) -> dict:
    return {f"{v}__{f.name}{suffix}": [] for v in (view, fresh_view(view))
            for f in FEATURES_BY_VIEW[view] for suffix in ("", "__ts")}

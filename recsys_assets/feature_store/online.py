"""Reading online features: many entities in one call, fresh views first, batch as fallback.

Used by training-time evaluation and by the serving app. An entity the store has never seen comes back
with defaults (counts 0, averages None, empty lists), marked `missing`: never an exception.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from feast import FeatureStore, Field
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.type_map import feast_value_type_to_python_type
from feast.types import Array, Int64

from recsys_assets.circuit_breaker import CircuitBreaker
from recsys_assets.feature_store.definitions import (
    FEATURES_BY_VIEW,
    ITEM_KEY,
    ITEM_SERVICE,
    ITEM_VIEW,
    RANKING_SERVICE,
    USER_KEY,
    USER_SERVICE,
    USER_VIEW,
    fresh_view,
)

FRESH, BATCH, MISSING = "fresh", "batch", "missing"
PRESENT = FieldStatus.PRESENT


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
    stamps: list[float | None] = field(default_factory=list)  # the chosen row's event time (s), per key

    def row(self, i: int) -> dict:
        return {name: values[i] for name, values in self.columns.items()}

    def as_dicts(self) -> list[dict]:
        return [self.row(i) for i in range(len(self.keys))]


def _pick(view: str, keys: list[str], vectors: dict, rows: list[int] | None = None) -> FeatureRows:
    """Per entity: the fresh twin when it is at least as new as the batch row, else batch, else defaults.

    `vectors` maps `<view>__<feature>` to Feast's response vector; only the rows asked for are decoded
    (the rerank read repeats the user's values on every candidate row)."""
    features = FEATURES_BY_VIEW[view]
    rows = rows if rows is not None else list(range(len(keys)))
    # A view's features share its row: its count (never null in a stored row) tells whether there is one.
    probe = features[0].name
    fresh, batch = vectors[f"{fresh_view(view)}__{probe}"], vectors[f"{view}__{probe}"]
    sources, stamps = [], []
    for r in rows:
        fresh_found, batch_found = _found(fresh, r), _found(batch, r)
        if fresh_found and (not batch_found or _seconds(fresh, r) >= _seconds(batch, r)):
            sources.append(FRESH)
            stamps.append(_seconds(fresh, r))
        elif batch_found:
            sources.append(BATCH)
            stamps.append(_seconds(batch, r))
        else:
            sources.append(MISSING)
            stamps.append(None)
    columns = {}
    for feature in features:
        chosen = {FRESH: vectors[f"{fresh_view(view)}__{feature.name}"], BATCH: vectors[f"{view}__{feature.name}"]}
        columns[feature.name] = [
            feast_value_type_to_python_type(chosen[s].values[r]) if s != MISSING else default_value(feature)
            for r, s in zip(rows, sources)
        ]
    return FeatureRows(keys=list(keys), columns=columns, source=sources, stamps=stamps)


def _found(vector, row: int) -> bool:
    # Stores differ for an absent entity: SQLite says NOT_FOUND, Redis PRESENT with an empty value.
    return vector.statuses[row] == PRESENT and vector.values[row].WhichOneof("val") is not None


def _seconds(vector, row: int) -> float:
    stamp = vector.event_timestamps[row]
    return stamp.seconds + stamp.nanos / 1e9


def _nothing(view: str) -> FeatureRows:
    return FeatureRows(keys=[], columns={f.name: [] for f in FEATURES_BY_VIEW[view]}, source=[])


class OnlineFeatures:
    """Reads what the feature services (the contract the views are served under) list. With a circuit breaker
    (serving's reads), an online store that stops answering raises StoreUnavailable, once per cooldown after
    its timeout and at once in between, instead of costing every request the timeout."""

    def __init__(self, store: FeatureStore, breaker: CircuitBreaker | None = None):
        self.store, self.breaker = store, breaker
        self._refs: dict[str, list[str]] = {}

    def _service_refs(self, service: str) -> list[str]:
        # Resolved once: Feast rebuilds a service from its proto on every call given the object, which
        # doubled the rerank read's latency; plain references take its cached path.
        if service not in self._refs:
            projections = self.store.get_feature_service(service).feature_view_projections
            self._refs[service] = [f"{p.name_to_use()}:{f.name}" for p in projections for f in p.features]
        return self._refs[service]

    def _read(self, service: str, entity_rows: list[dict]) -> dict:
        return self.breaker.call(self._read_store, service, entity_rows) if self.breaker else \
            self._read_store(service, entity_rows)

    def _read_store(self, service: str, entity_rows: list[dict]) -> dict:
        proto = self.store.get_online_features(features=self._service_refs(service), entity_rows=entity_rows,
                                               full_feature_names=True).proto
        return dict(zip(proto.metadata.feature_names.val, proto.results))

    def users(self, user_ids: list[str]) -> FeatureRows:
        if not user_ids:
            return _nothing(USER_VIEW)
        raw = self._read(USER_SERVICE, [{USER_KEY: u} for u in user_ids])
        return _pick(USER_VIEW, user_ids, raw)

    def items(self, parent_asins: list[str]) -> FeatureRows:
        if not parent_asins:
            return _nothing(ITEM_VIEW)
        raw = self._read(ITEM_SERVICE, [{ITEM_KEY: a} for a in parent_asins])
        return _pick(ITEM_VIEW, parent_asins, raw)

    def for_ranking(self, user_id: str, parent_asins: list[str]) -> tuple[FeatureRows, FeatureRows]:
        """A user and its candidate items in one online read (Feast looks each entity up once)."""
        if not parent_asins:
            return self.users([user_id]), self.items([])
        raw = self._read(RANKING_SERVICE, [{USER_KEY: user_id, ITEM_KEY: a} for a in parent_asins])
        return _pick(USER_VIEW, [user_id], raw, rows=[0]), _pick(ITEM_VIEW, parent_asins, raw)




class ItemFeatureCache:
    """A replica-local near cache of item feature rows, each kept at most `ttl_s` seconds.

    A rerank reads ~100 items per request, and item stats only move with a batch materialization or a
    push, so a few seconds of staleness buys most of the read back; the misses of a request are still
    read in one online call. ttl_s = 0 reads through every time.
    """

    def __init__(self, features: OnlineFeatures, ttl_s: float = 10.0, max_entries: int = 500_000):
        self.features, self.ttl_s, self.max_entries = features, ttl_s, max_entries
        self._rows: dict[str, tuple[float, dict, str]] = {}
        self._lock = threading.Lock()

    def items(self, parent_asins: list[str]) -> FeatureRows:
        if self.ttl_s <= 0:
            return self.features.items(parent_asins)
        now = time.monotonic()
        with self._lock:
            cached = {a: self._rows.get(a) for a in parent_asins}
        missing = [a for a in dict.fromkeys(parent_asins) if not cached[a] or cached[a][0] < now]
        if missing:
            read = self.features.items(missing)
            expires = now + self.ttl_s
            with self._lock:
                if len(self._rows) + len(missing) > self.max_entries:
                    self._rows.clear()
                for i, asin in enumerate(missing):
                    cached[asin] = self._rows[asin] = (expires, read.row(i), read.source[i])
        names = [f.name for f in FEATURES_BY_VIEW[ITEM_VIEW]]
        return FeatureRows(keys=list(parent_asins),
                           columns={n: [cached[a][1][n] for a in parent_asins] for n in names},
                           source=[cached[a][2] for a in parent_asins])

"""Precomputed candidates: popular items, item-to-item and user-to-item neighbours, users' last items and
the item catalogue, computed from plain arrays and frames, stored per kind and version in a key-value store.

Each kind is one key per entity (`cand:<kind>:<version>:<id>`), so a request reads any number of entities
of a kind in one batched call. Re-writing a version replaces it (nothing duplicates).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd

from recsys_assets.feature_contract import HISTORY_LENGTH
from recsys_assets.models import data
from recsys_assets.models.data import ITEM as ITEM_ID
from recsys_assets.models.data import Vocabulary
from recsys_assets.serving_data.kv import KeyValueStore

POPULAR, I2I, U2I, SEQUENCE, ITEM, EASE, RECENT = "popular", "i2i", "u2i", "sequence", "item", "ease", "recent"
KINDS = (POPULAR, I2I, U2I, SEQUENCE, ITEM, EASE, RECENT)
POPULAR_KEY = "all"
RECENT_TOP_KEY = "__top__"  # in RECENT beside the item keys: no item id starts with an underscore
_WRITE_BATCH = 5000


def popular_items(events: pd.DataFrame, k: int = 100) -> list[list]:
    """The k most interacted items with their counts, ties by id: `events` holds real interactions only
    (parent_asin column), never sampled negatives."""
    counts = events.groupby("parent_asin").size().reset_index(name="n")
    top = counts.sort_values(["n", "parent_asin"], ascending=[False, True]).head(k)
    return [[item, int(n)] for item, n in zip(top["parent_asin"], top["n"])]


def recent_popularity(events: pd.DataFrame, now_ms: int, half_life_days: float, k: int = 100
                      ) -> Iterator[tuple[str, object]]:
    """Each item's reviews before `now_ms` counted 0.5 ** (age / half-life) (`data.recent_popularity`; items
    with a review), and under RECENT_TOP_KEY the k highest with their values, ties by id."""
    items = Vocabulary(events[ITEM_ID])
    scores = data.recent_popularity(events, items, now_ms, half_life_days)[1:]
    order = np.argsort(-scores, kind="stable")  # a vocabulary's indices follow its sorted ids: ties by id
    ranked = [[items.ids[i], float(f"{scores[i]:.6g}")] for i in order if scores[i] > 0]
    yield RECENT_TOP_KEY, ranked[:k]
    yield from ((item, value) for item, value in ranked)


def _top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best column indices (best first) and their scores; -inf marks excluded cells."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def item_neighbours(item_ids: list[str], vectors: np.ndarray, k: int = 100, chunk: int = 2048,
                    prior: np.ndarray | None = None) -> Iterator[tuple[str, list[list]]]:
    """Each item's k nearest other items by cosine, plus each neighbour's `prior` when given (e.g. a popularity
    weight x log(1 + its reviews)), as (item, [[neighbour, score], ...])."""
    unit = _unit(np.asarray(vectors, dtype=np.float32))
    for start in range(0, len(item_ids), chunk):
        scores = unit[start:start + chunk] @ unit.T
        if prior is not None:
            scores += np.asarray(prior, dtype=np.float32)[None, :]
        rows = np.arange(scores.shape[0])
        scores[rows, start + rows] = -np.inf  # not its own neighbour
        idx, best = _top_k_rows(scores, k)
        for r in rows:
            yield item_ids[start + r], [[item_ids[j], round(float(s), 6)] for j, s in zip(idx[r], best[r])
                                        if math.isfinite(s)]


def user_top_scored(user_ids: list[str], item_ids: list[str], score_rows, seen: dict[str, set[str]], k: int = 100,
                    chunk: int = 2048) -> Iterator[tuple[str, list[list]]]:
    """Each user's k best items by `score_rows(start, stop)` (users start..stop x items, -inf where the model
    cannot score), minus the items the user has seen."""
    position = {item: i for i, item in enumerate(item_ids)}
    for start in range(0, len(user_ids), chunk):
        users = user_ids[start:start + chunk]
        scores = np.array(score_rows(start, start + len(users)), dtype=np.float32)
        for r, user in enumerate(users):
            cols = [position[i] for i in seen.get(user, ()) if i in position]
            scores[r, cols] = -np.inf
        idx, best = _top_k_rows(scores, k)
        for r, user in enumerate(users):
            yield user, [[item_ids[j], round(float(s), 6)] for j, s in zip(idx[r], best[r]) if math.isfinite(s)]


def user_top_items(user_ids: list[str], user_vectors: np.ndarray, item_ids: list[str], item_vectors: np.ndarray,
                   seen: dict[str, set[str]], k: int = 100, chunk: int = 2048) -> Iterator[tuple[str, list[list]]]:
    """Each user's k best items by the retriever's score (dot product), minus the items the user has seen."""
    items = np.asarray(item_vectors, dtype=np.float32)
    return user_top_scored(user_ids, item_ids,
                           lambda a, b: np.asarray(user_vectors[a:b], dtype=np.float32) @ items.T, seen, k, chunk)


def last_items(events: pd.DataFrame, n: int = HISTORY_LENGTH) -> Iterator[tuple[str, dict]]:
    """Each user's last n items with their timestamps (ms), oldest first; ties by item id."""
    ordered = events.sort_values(["user_id", "timestamp", "parent_asin"])
    tail = ordered.groupby("user_id", sort=True).tail(n)
    for user, group in tail.groupby("user_id", sort=True):
        yield user, {"items": group["parent_asin"].tolist(), "timestamps": [int(t) for t in group["timestamp"]]}


def catalogue_rows(metadata: pd.DataFrame) -> Iterator[tuple[str, dict]]:
    """What a product card shows: title, category, price, image url (None when absent)."""
    for row in metadata.drop_duplicates("parent_asin").itertuples(index=False):
        cats = list(row.categories) if row.categories is not None and not isinstance(row.categories, float) else []
        price = None if row.price is None or pd.isna(row.price) else float(row.price)
        yield row.parent_asin, {
            "title": row.title if isinstance(row.title, str) else "",
            "category": cats[-1] if cats else (row.main_category or ""),
            "price": price,
            "image_url": getattr(row, "image_url", None) or None,
        }


class CandidateStore:
    """Versions of each kind, written whole and read in batches."""

    def __init__(self, kv: KeyValueStore):
        self.kv = kv

    @staticmethod
    def _prefix(kind: str, version: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown candidate kind {kind!r}")
        return f"cand:{kind}:{version}:"

    def write(self, kind: str, version: str, rows) -> int:
        """Replace `version` of `kind` with `rows` ((id, value) pairs); returns how many were written."""
        prefix = self._prefix(kind, version)
        self.kv.delete_prefix(prefix)
        written, batch = 0, []
        for entity, value in rows:
            batch.append((prefix + entity, value))
            if len(batch) >= _WRITE_BATCH:
                written += self.kv.put_many(batch)
                batch = []
        written += self.kv.put_many(batch)
        known = set(self.versions(kind)) | {version}
        self.kv.put_many([(f"cand-versions:{kind}", sorted(known))])
        return written

    def read(self, kind: str, version: str, ids: list[str]) -> list:
        prefix = self._prefix(kind, version)
        return self.kv.get_many([prefix + i for i in ids])

    def ids(self, kind: str, version: str) -> list[str]:
        prefix = self._prefix(kind, version)
        return sorted(k[len(prefix):] for k in self.kv.keys_with_prefix(prefix))

    def count(self, kind: str, version: str) -> int:
        return len(self.kv.keys_with_prefix(self._prefix(kind, version)))

    def versions(self, kind: str) -> list[str]:
        return self.kv.get_many([f"cand-versions:{kind}"])[0] or []

    def retire(self, kind: str, keep: set[str]) -> list[str]:
        """Delete every version of `kind` not in `keep`; returns the deleted ones."""
        gone = [v for v in self.versions(kind) if v not in keep]
        for version in gone:
            self.kv.delete_prefix(self._prefix(kind, version))
        self.kv.put_many([(f"cand-versions:{kind}", sorted(set(self.versions(kind)) - set(gone)))])
        return gone

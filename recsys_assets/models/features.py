"""Model inputs: one float32 matrix per model, columns laid out by a named `Layout`.

One packed matrix is what MLflow's PyTorch flavor serves (a single ndarray in, a tensor out), so training,
evaluation and serving all build inputs here. Id columns hold vocabulary indices (exact in float32 below
2^24); dense widths come from the data (the tag embedding width from the tagger, never a constant).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_assets.feature_contract import (
    HISTORY_LENGTH,
    RECENT_ITEMS,
    RECENT_ITEMS_TIMESTAMPS,
    USER_COLUMNS,
    WINDOWS_DAYS,
    item_window_columns,
)
from recsys_assets.models.data import PAD, Vocabulary

HISTORY = HISTORY_LENGTH  # slots of a user's recent items in the models' inputs
# Time since a history item, bucket upper bounds in ms: <10 min, <1 h, <1 d, <7 d, <30 d, <1 y, <3 y, <5 y,
# <10 y, and >= 10 y. Bucket index 0 is padding, so the 10 buckets are 1..10.
_MIN, _HOUR, _DAY, _YEAR = 60_000, 3_600_000, 86_400_000, 365 * 86_400_000
DELTA_BOUNDS_MS = np.array([10 * _MIN, _HOUR, _DAY, 7 * _DAY, 30 * _DAY, _YEAR, 3 * _YEAR, 5 * _YEAR, 10 * _YEAR])
N_DELTA_BUCKETS = len(DELTA_BOUNDS_MS) + 1


def delta_buckets(now_ms: np.ndarray, stamps: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Bucket 1..10 of (now - stamp) per history slot; 0 where the slot is empty."""
    deltas = np.maximum(now_ms[:, None] - stamps, 0)
    return np.where(valid, np.searchsorted(DELTA_BOUNDS_MS, deltas, side="right") + 1, 0)


@dataclass(frozen=True)
class Layout:
    """Named column groups of a packed matrix, in order."""

    groups: tuple[tuple[str, int], ...]

    @property
    def width(self) -> int:
        return sum(n for _, n in self.groups)

    def slices(self) -> dict[str, slice]:
        out, at = {}, 0
        for name, n in self.groups:
            out[name] = slice(at, at + n)
            at += n
        return out

    def column_names(self) -> list[str]:
        return [name if n == 1 else f"{name}_{i}" for name, n in self.groups for i in range(n)]

    def pack(self, **parts: np.ndarray) -> np.ndarray:
        rows = len(next(iter(parts.values())))
        out = np.zeros((rows, self.width), dtype=np.float32)
        for name, sl in self.slices().items():
            out[:, sl] = np.asarray(parts[name], dtype=np.float32).reshape(rows, sl.stop - sl.start)  # 0 rows too
        return out


USER_DENSE_WIDTH = 2


def _floats(values) -> np.ndarray:
    """A column (Series or list) as float64, missing values (None/NaN) as 0."""
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)


def user_dense(frame: pd.DataFrame | Mapping) -> np.ndarray:
    """The user's rating count (log) and average (/5, 0 when none) over the contract's user window."""
    count = np.log1p(_floats(frame[USER_COLUMNS[0]]))
    average = _floats(frame[USER_COLUMNS[1]]) / 5.0
    return np.stack([count, average], axis=1)


def item_stats_dense(frame: pd.DataFrame | Mapping) -> np.ndarray:
    """An item's rating counts (log) and averages (/5) over the contract's windows (columns of a frame, or
    lists in a mapping)."""
    cols = []
    for days in WINDOWS_DAYS:
        cnt, avg = item_window_columns(days)
        cols.append(np.log1p(_floats(frame[cnt])))
        cols.append(_floats(frame[avg]) / 5.0)
    return np.stack(cols, axis=1)


def history_indices(frame: pd.DataFrame, items: Vocabulary, now_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The last 10 items (right-aligned, 0-padded on the left) and their time-delta buckets at `now_ms`."""
    n = len(frame)
    idx = np.zeros((n, HISTORY), dtype=np.int64)
    stamps = np.zeros((n, HISTORY), dtype=np.int64)
    for row, (asins, times) in enumerate(zip(frame[RECENT_ITEMS], frame[RECENT_ITEMS_TIMESTAMPS])):
        asins, times = list(asins)[-HISTORY:], list(times)[-HISTORY:]
        if asins:
            idx[row, HISTORY - len(asins):] = items.index(asins)
            stamps[row, HISTORY - len(times):] = times
    valid = idx != PAD
    return idx, delta_buckets(np.asarray(now_ms, dtype=np.int64), stamps, valid)


@dataclass
class Catalogue:
    """Static item attributes by item index: category index, price (log) and tag embedding."""

    items: Vocabulary
    categories: Vocabulary
    category_index: np.ndarray  # (n_items,)
    log_price: np.ndarray  # (n_items,)
    tag_embedding: np.ndarray  # (n_items, tag_dim)

    @classmethod
    def build(cls, items: Vocabulary, metadata: pd.DataFrame, tag_embeddings: pd.DataFrame | None) -> Catalogue:
        """`metadata`: parent_asin, categories, main_category, price. `tag_embeddings`: parent_asin,
        tag_embedding (list of floats), or None when no tagger ran (width 0)."""
        meta = metadata.drop_duplicates("parent_asin").set_index("parent_asin").reindex(items.ids)
        category = [_category(c, m) for c, m in zip(meta["categories"], meta["main_category"])]
        categories = Vocabulary(category)
        category_index = np.concatenate([[PAD], categories.index(category)])
        price = pd.to_numeric(meta["price"]).fillna(0).clip(lower=0).to_numpy()
        log_price = np.concatenate([[0.0], np.log1p(price)])
        if tag_embeddings is not None and len(tag_embeddings):
            emb = tag_embeddings.drop_duplicates("parent_asin").set_index("parent_asin")["tag_embedding"]
            width = len(emb.iloc[0])
            table = np.zeros((len(items), width), dtype=np.float32)
            present = emb.reindex(items.ids)
            for i, vector in enumerate(present, start=1):
                if vector is not None and not (isinstance(vector, float) and np.isnan(vector)):
                    table[i] = vector
        else:
            table = np.zeros((len(items), 0), dtype=np.float32)
        return cls(items, categories, category_index, log_price, table)

    def artifacts(self) -> dict[str, object]:
        """What `from_artifacts` needs, as files logged beside a model (serving rebuilds the catalogue)."""
        return {"items.json": self.items.ids, "categories.json": self.categories.ids,
                "category_index.npy": self.category_index, "log_price.npy": self.log_price,
                "tag_embedding.npy": self.tag_embedding}

    @classmethod
    def from_artifacts(cls, folder: Path) -> Catalogue:
        folder = Path(folder)
        missing = [name for name in ("items.json", "categories.json", "category_index.npy", "log_price.npy",
                                     "tag_embedding.npy") if not (folder / name).exists()]
        if missing:
            raise FileNotFoundError(f"the model's artifacts lack {missing}: it was registered before models carried "
                                    "their catalogue; retrain it (or promote a newer version) to serve it")
        return cls(Vocabulary(json.loads((folder / "items.json").read_text())),
                   Vocabulary(json.loads((folder / "categories.json").read_text())),
                   np.load(folder / "category_index.npy"), np.load(folder / "log_price.npy"),
                   np.load(folder / "tag_embedding.npy"))

    @property
    def tag_dim(self) -> int:
        return self.tag_embedding.shape[1]

    def item_dense(self, item_index: np.ndarray, stats: pd.DataFrame) -> np.ndarray:
        """Price, rating statistics and tag embedding per row, written in place as float32 (the rows' dtype):
        concatenated in float64 they took ~10 s per 300k rows of an evaluation here."""
        out = np.empty((len(item_index), self.item_dense_width), dtype=np.float32)
        windows = 2 * len(WINDOWS_DAYS)
        out[:, 0] = self.log_price[item_index]
        out[:, 1:1 + windows] = item_stats_dense(stats)
        out[:, 1 + windows:] = self.tag_embedding[item_index]
        return out

    @property
    def item_dense_width(self) -> int:
        return 1 + 2 * len(WINDOWS_DAYS) + self.tag_dim


def _category(categories, main_category) -> str:
    """The most specific useful category: the second level (e.g. the genre under "Books"), else the main one."""
    cats = list(categories) if categories is not None and not isinstance(categories, float) else []
    if len(cats) > 1:
        return str(cats[1])
    if cats:
        return str(cats[0])
    return str(main_category) if isinstance(main_category, str) and main_category else "unknown"

"""Training data: the original's preprocessing (iterative k-core, temporal split) and id vocabularies.

Plain pandas over interaction rows `user_id, parent_asin, rating, timestamp` (timestamp in the raw data's
unit, milliseconds). Ids come from the data; nothing here assumes a size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

USER, ITEM, TIME = "user_id", "parent_asin", "timestamp"
PAD = 0  # index 0 of every vocabulary: padding and unknown ids
DAY_MS = 86_400_000


def k_core(events: pd.DataFrame, min_user: int = 2, min_item: int = 3) -> pd.DataFrame:
    """Drop users with < min_user and items with < min_item interactions, repeated until stable."""
    current = events
    while True:
        users = current[USER].map(current[USER].value_counts())
        items = current[ITEM].map(current[ITEM].value_counts())
        kept = current[(users >= min_user) & (items >= min_item)]
        if len(kept) == len(current):
            return kept.reset_index(drop=True)
        current = kept


@dataclass
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    boundary_timestamp: int
    cold_users: int  # holdout users never seen in training (their events are dropped)
    cold_items: int
    cold_events: int
    metadata: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "boundary_timestamp": int(self.boundary_timestamp),
            "train_events": len(self.train),
            "holdout_events": len(self.holdout),
            "holdout_users": int(self.holdout[USER].nunique()),
            "cold_start_users": self.cold_users,
            "cold_start_items": self.cold_items,
            "cold_start_events_dropped": self.cold_events,
        }


def temporal_split(events: pd.DataFrame, holdout_fraction: float = 0.2) -> Split:
    """The last `holdout_fraction` of events by time is the holdout, kept only for users and items seen
    in training. Events sharing the boundary timestamp all go to the holdout (no moment is cut in two)."""
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if len(events) < 2:
        raise ValueError("need at least 2 events to split")
    stamps = np.sort(events[TIME].to_numpy())
    boundary = int(stamps[min(int(len(stamps) * (1 - holdout_fraction)), len(stamps) - 1)])
    train = events[events[TIME] < boundary].reset_index(drop=True)
    later = events[events[TIME] >= boundary]
    known = later[USER].isin(set(train[USER])) & later[ITEM].isin(set(train[ITEM]))
    return Split(
        train=train,
        holdout=later[known].reset_index(drop=True),
        boundary_timestamp=boundary,
        cold_users=int(later.loc[~later[USER].isin(set(train[USER])), USER].nunique()),
        cold_items=int(later.loc[~later[ITEM].isin(set(train[ITEM])), ITEM].nunique()),
        cold_events=int((~known).sum()),
    )


class Vocabulary:
    """Id <-> dense index, 1..N; 0 is padding and anything unknown."""

    def __init__(self, ids):
        self.ids = sorted(set(ids))
        self._index = {value: i + 1 for i, value in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids) + 1  # with the padding row

    def index(self, values) -> np.ndarray:
        get = self._index.get
        return np.fromiter((get(v, PAD) for v in values), dtype=np.int64, count=len(values))

    def id_of(self, index: int) -> str:
        return self.ids[index - 1]


def popularity(train: pd.DataFrame, items: Vocabulary) -> np.ndarray:
    """Training interaction counts per item index (index 0 stays 0)."""
    counts = np.zeros(len(items), dtype=np.float64)
    np.add.at(counts, items.index(train[ITEM].to_numpy()), 1.0)
    counts[PAD] = 0.0
    return counts


def recent_popularity(events: pd.DataFrame, items: Vocabulary, now_ms: int, half_life_days: float) -> np.ndarray:
    """Per item index, its interactions before `now_ms` each counted 0.5 ** (age in days / `half_life_days`):
    what is popular lately (trending). Unlike a count over the last N days it has no cliff and no empty window
    (data with gaps), and its order does not change with `now_ms` until new interactions come (every weight
    decays alike), so a table computed at the day's end ranks as it would at request time."""
    before = events[events[TIME] < now_ms]
    age_days = (now_ms - before[TIME].to_numpy(dtype=np.float64)) / DAY_MS
    counts = np.zeros(len(items), dtype=np.float64)
    np.add.at(counts, items.index(before[ITEM].to_numpy()), np.exp2(-age_days / half_life_days))
    counts[PAD] = 0.0
    return counts


def sample_negatives(users: np.ndarray, seen: dict[object, set[int]], weights: np.ndarray, seed: int,
                     rounds: int = 20) -> np.ndarray:
    """One item index per row, drawn by `weights`, never an item the row's user interacted with; PAD for a
    user who interacted with every item that has weight (no negative exists)."""
    rng = np.random.default_rng(seed)
    p = weights / weights.sum()
    result = np.full(len(users), PAD, dtype=np.int64)
    todo = np.arange(len(users))
    for _ in range(rounds):  # rejection sampling: fast when users saw a small share of the catalogue
        if not len(todo):
            return result
        draws = rng.choice(len(p), size=len(todo), p=p)
        ok = np.fromiter((d not in seen.get(u, ()) for u, d in zip(users[todo], draws)), dtype=bool, count=len(todo))
        result[todo[ok]] = draws[ok]
        todo = todo[~ok]
    support = np.flatnonzero(p > 0)
    for row in todo:  # exact for the rest: draw among the items this user has not touched
        allowed = np.setdiff1d(support, np.fromiter(seen.get(users[row], ()), dtype=np.int64))
        if len(allowed):
            result[row] = rng.choice(allowed, p=p[allowed] / p[allowed].sum())
    return result

"""Pushing an interaction into the fresh views, so the next online read reflects it.

The new state is the current one (fresh-first) with the interaction appended, stamped 1 ms after it like
the batch rows. Windowed counts only grow here: events that age out of a window are dropped at the next
batch materialization, which replaces the fresh state as soon as it is newer.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

from recsys_assets.feature_contract import (
    HISTORY_LENGTH,
    RECENT_ITEMS,
    RECENT_ITEMS_TIMESTAMPS,
    USER_COLUMNS,
    WINDOWS_DAYS,
    item_window_columns,
)
from recsys_assets.feature_store.definitions import (
    ITEM_KEY,
    ITEM_VIEW,
    TIMESTAMP_FIELD,
    USER_KEY,
    USER_VIEW,
    push_source,
)
from recsys_assets.feature_store.online import FRESH, OnlineFeatures
from recsys_assets.redis_connection import client_kwargs

log = logging.getLogger(__name__)
_IN_PROCESS = threading.Lock()

LOCK_STRIPES = 256  # lock files of the SQLite store: entities share one by hash (few files, rare contention)
LOCK_EXPIRY_S = 10  # a Redis lock whose holder died frees itself after this long
LOCK_WAIT_S = 10  # waiting longer for an entity's lock is an error (5xx), never a push without it


def _add_rating(count: int, average: float | None, rating: float) -> tuple[int, float]:
    total = (average or 0.0) * count + rating
    return count + 1, total / (count + 1)


def user_state_after(state: dict, parent_asin: str, rating: float, timestamp_ms: int) -> dict:
    cnt, avg = USER_COLUMNS
    count, average = _add_rating(state[cnt], state[avg], rating)
    return {
        cnt: count,
        avg: average,
        RECENT_ITEMS: [*state[RECENT_ITEMS], parent_asin][-HISTORY_LENGTH:],
        RECENT_ITEMS_TIMESTAMPS: [*state[RECENT_ITEMS_TIMESTAMPS], timestamp_ms][-HISTORY_LENGTH:],
    }


def item_state_after(state: dict, rating: float) -> dict:
    new = {}
    for days in WINDOWS_DAYS:
        cnt, avg = item_window_columns(days)
        new[cnt], new[avg] = _add_rating(state[cnt], state[avg], rating)
    return new


def _lock_names(user_id: str, parent_asin: str) -> list[str]:
    # Sorted: every pusher takes its locks in the same order, so two never wait on each other.
    return sorted({f"user:{user_id}", f"item:{parent_asin}"})


@contextmanager
def _file_locks(folder: Path, names: list[str]) -> Iterator[None]:
    """flock on one file per stripe, opened anew each time: exclusive across processes and threads alike."""
    folder.mkdir(parents=True, exist_ok=True)
    stripes = sorted({int(hashlib.sha256(n.encode()).hexdigest(), 16) % LOCK_STRIPES for n in names})
    fds = []
    try:
        for stripe in stripes:
            fds.append(os.open(folder / f"{stripe:03d}.lock", os.O_RDWR | os.O_CREAT, 0o644))
            fcntl.flock(fds[-1], fcntl.LOCK_EX)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # releases its lock


@lru_cache(maxsize=8)
def _redis(connection_string: str):
    import redis  # only where the online store is Redis

    return redis.Redis(**client_kwargs(connection_string))


def _release(lock) -> None:
    """A lock that expired while held (a push slower than LOCK_EXPIRY_S) is not a failed push: it is said."""
    from redis.exceptions import LockError

    try:
        lock.release()
    except LockError as exc:
        log.warning("push lock %s expired before its release: %s", lock.name, exc)


@contextmanager
def _redis_locks(connection_string: str, names: list[str]) -> Iterator[None]:
    client = _redis(connection_string)
    with ExitStack() as stack:
        for name in names:
            lock = client.lock(f"recsys:push-lock:{name}", timeout=LOCK_EXPIRY_S, blocking_timeout=LOCK_WAIT_S)
            if not lock.acquire():
                raise TimeoutError(f"the online store's lock on {name} is still held after {LOCK_WAIT_S} s")
            stack.callback(_release, lock)
        yield


def entity_locks(store: FeatureStore, user_id: str, parent_asin: str):
    """Holds the user's and the item's push locks, so concurrent pushes (replicas, threads) add up instead
    of overwriting each other's read-modify-write: Redis locks on a Redis online store, else lock files
    beside the SQLite one."""
    online = store.config.online_store
    names = _lock_names(user_id, parent_asin)
    if online.type == "redis":
        return _redis_locks(online.connection_string, names)
    db = Path(online.path)
    if not db.is_absolute():
        db = Path(store.config.repo_path) / db
    return _file_locks(db.parent / "push-locks", names)


def push_interaction(store: FeatureStore, user_id: str, parent_asin: str, rating: float,
                     timestamp_ms: int) -> dict:
    """Append one interaction to the user's and the item's fresh views; returns the user's new state."""
    if not 1 <= rating <= 5:
        raise ValueError(f"rating must be within 1..5, got {rating}")
    # One push at a time in this process (Feast's SQLite online store shares one connection between threads:
    # two at once fail "cannot start a transaction within a transaction"), the entity locks across processes.
    with _IN_PROCESS, entity_locks(store, user_id, parent_asin):
        return _push(store, user_id, parent_asin, rating, timestamp_ms)


def _push(store: FeatureStore, user_id: str, parent_asin: str, rating: float, timestamp_ms: int) -> dict:
    """The read-modify-write itself (the caller holds the entities' locks)."""
    user_rows, item_rows = OnlineFeatures(store).for_ranking(user_id, [parent_asin])
    user = user_state_after(user_rows.row(0), parent_asin, rating, timestamp_ms)
    item = item_state_after(item_rows.row(0), rating)
    for view, key, value, state, rows in ((USER_VIEW, USER_KEY, user_id, user, user_rows),
                                          (ITEM_VIEW, ITEM_KEY, parent_asin, item, item_rows)):
        frame = pd.DataFrame([{key: value, TIMESTAMP_FIELD: _stamp(timestamp_ms, rows), **state}])
        store.push(push_source(view), frame, to=PushMode.ONLINE)
    return user


def _stamp(timestamp_ms: int, rows) -> datetime:
    """1 ms after the event, and after the fresh state it builds on: the new state includes that one, and
    Redis keeps a row only when its stamp is newer (an event older than the last pushed would be dropped)."""
    seconds = (timestamp_ms + 1) / 1000
    if rows.source[0] == FRESH and rows.stamps[0] >= seconds:
        seconds = rows.stamps[0] + 0.001
    return datetime.fromtimestamp(seconds, tz=timezone.utc)

"""Pushing an interaction into the fresh views, so the next online read reflects it.

The new state is the current one (fresh-first) with the interaction appended, stamped 1 ms after it like
the batch rows. Windowed counts only grow here: events that age out of a window are dropped at the next
batch materialization, which replaces the fresh state as soon as it is newer.
"""

from __future__ import annotations

from datetime import datetime, timezone

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
from recsys_assets.feature_store.online import OnlineFeatures


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


def push_interaction(store: FeatureStore, user_id: str, parent_asin: str, rating: float,
                     timestamp_ms: int) -> dict:
    """Append one interaction to the user's and the item's fresh views; returns the user's new state."""
    if not 1 <= rating <= 5:
        raise ValueError(f"rating must be within 1..5, got {rating}")
    user_rows, item_rows = OnlineFeatures(store).for_ranking(user_id, [parent_asin])
    user = user_state_after(user_rows.row(0), parent_asin, rating, timestamp_ms)
    item = item_state_after(item_rows.row(0), rating)
    stamp = datetime.fromtimestamp((timestamp_ms + 1) / 1000, tz=timezone.utc)
    for view, key, value, state in ((USER_VIEW, USER_KEY, user_id, user), (ITEM_VIEW, ITEM_KEY, parent_asin, item)):
        frame = pd.DataFrame([{key: value, TIMESTAMP_FIELD: stamp, **state}])
        store.push(push_source(view), frame, to=PushMode.ONLINE)
    return user

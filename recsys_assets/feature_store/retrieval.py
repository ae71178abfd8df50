"""Point-in-time training data through Feast's historical retrieval.

For an entity row at time t, each view contributes its newest row stamped at or before t. Feature rows
are stamped 1 ms after the review moment they include, so a review at t never sees itself or anything
later: the leak the original's features had.
"""

from __future__ import annotations

import pandas as pd
from feast import FeatureStore
from feast.types import Int64

from recsys_assets.feature_store.definitions import BATCH_VIEWS, FEATURES_BY_VIEW, KEY_BY_VIEW
from recsys_assets.feature_store.online import default_value

EVENT_TIMESTAMP = "event_timestamp"  # the entity-dataframe column Feast joins on
_ROW = "__row"
# Entity rows per offline-store call. Feast's own DuckDB join grew faster than linearly (600k rows in one go:
# ~140 s, chunks of 100k peaked at 16.6 GB); the local store's ASOF join (`asof_offline_store.py`) is linear,
# and each call costs ~0.4 s of planning (360k rows: 17 s in chunks of 10k, 2.7 s in one call).
CHUNK_ROWS = 500_000


def point_in_time_features(store: FeatureStore, entities: pd.DataFrame, time_column: str = "timestamp",
                           views: tuple[str, ...] = BATCH_VIEWS, chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """`entities` (keys `user_id` and/or `parent_asin`, `time_column` in epoch ms) with each view's features
    as of that time, in the input's row order. An entity without history gets the defaults (0, None, [])."""
    if len(entities) > chunk_rows:
        parts = [point_in_time_features(store, entities.iloc[i:i + chunk_rows], time_column, views, chunk_rows)
                 for i in range(0, len(entities), chunk_rows)]
        return pd.concat(parts, ignore_index=True)
    views = tuple(v for v in views if KEY_BY_VIEW[v] in entities.columns)
    if not views:
        raise ValueError(f"entities need at least one of {sorted(set(KEY_BY_VIEW.values()))}")
    keys = [KEY_BY_VIEW[v] for v in views]
    request = entities[keys].copy()
    request[EVENT_TIMESTAMP] = pd.to_datetime(entities[time_column].to_numpy(), unit="ms", utc=True)
    request[_ROW] = range(len(request))
    refs = [f"{v}:{f.name}" for v in views for f in FEATURES_BY_VIEW[v]]
    joined = store.get_historical_features(entity_df=request, features=refs).to_df()
    joined = joined.sort_values(_ROW).set_index(_ROW).drop(columns=[*keys, EVENT_TIMESTAMP])
    result = entities.reset_index(drop=True).join(joined.reset_index(drop=True))
    for view in views:
        for feature in FEATURES_BY_VIEW[view]:
            default = default_value(feature)
            if default is not None:
                result[feature.name] = [default if _missing(v) else v for v in result[feature.name]]
            if feature.dtype == Int64:
                result[feature.name] = result[feature.name].astype("int64")
    return result


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)

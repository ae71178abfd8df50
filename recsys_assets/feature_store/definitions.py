"""The Feast repository: entities, feature views and services, defined once in code.

Batch views read the dbt feature tables (a row = an entity's state once the reviews at a moment are in,
stamped 1 ms after it). Their `*_fresh` twins are fed by push sources from the serving app, live one day,
and are read first (see `online.py`). Where the batch rows come from (parquet exported from DuckDB
locally, the BigQuery tables on gcp) is the caller's choice of `BatchSources`.

Changing anything in this module changes `DEFINITIONS_VERSION`, which makes the orchestration re-apply it.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Protocol

from feast import Entity, FeatureService, FeatureView, Field, PushSource, ValueType
from feast.data_source import DataSource
from feast.types import Array, Float64, Int64, String

from recsys_assets.feature_contract import (
    RECENT_ITEMS,
    RECENT_ITEMS_TIMESTAMPS,
    USER_COLUMNS,
    WINDOWS_DAYS,
    item_window_columns,
)
from recsys_assets.feature_store.version import BATCH_VIEWS, DEFINITIONS_VERSION

TIMESTAMP_FIELD = "timestamp"
USER_KEY = "user_id"
ITEM_KEY = "parent_asin"
USER_VIEW, ITEM_VIEW = BATCH_VIEWS
FRESH_SUFFIX = "_fresh"
FRESH_TTL = timedelta(days=1)

USER_FEATURES = [
    Field(name=USER_COLUMNS[0], dtype=Int64),
    Field(name=USER_COLUMNS[1], dtype=Float64),
    Field(name=RECENT_ITEMS, dtype=Array(String)),
    Field(name=RECENT_ITEMS_TIMESTAMPS, dtype=Array(Int64)),
]
ITEM_FEATURES = [
    field
    for days in WINDOWS_DAYS
    for field in (
        Field(name=item_window_columns(days)[0], dtype=Int64),
        Field(name=item_window_columns(days)[1], dtype=Float64),
    )
]
FEATURES_BY_VIEW = {USER_VIEW: USER_FEATURES, ITEM_VIEW: ITEM_FEATURES}
KEY_BY_VIEW = {USER_VIEW: USER_KEY, ITEM_VIEW: ITEM_KEY}
USER_SERVICE, ITEM_SERVICE, RANKING_SERVICE = "user_features", "item_features", "ranking_features"


def fresh_view(view: str) -> str:
    return view + FRESH_SUFFIX


def push_source(view: str) -> str:
    return view + "_push"


class BatchSources(Protocol):
    """Where the offline rows of a feature table live (implementations in `offline.py`)."""

    def table_source(self, table: str) -> DataSource: ...

    def push_log_source(self, view: str) -> DataSource:
        """Batch source a push source must name; pushes here go online only, so it is never read."""

    def sync_days(self, warehouse, table: str, days: list[date]) -> int:
        """Make these days of a warehouse feature table visible to the offline store; rows in them."""

    def sample_keys(self, table: str, key: str, days: list[date], size: int, seed: int) -> list[str]: ...


USER = Entity(name="user", join_keys=[USER_KEY], value_type=ValueType.STRING, description="A reviewer.")
ITEM = Entity(name="parent_asin", join_keys=[ITEM_KEY], value_type=ValueType.STRING,
              description="A product (all its variants).")
ENTITY_BY_VIEW = {USER_VIEW: USER, ITEM_VIEW: ITEM}


def build_repository(sources: BatchSources) -> list:
    """Every Feast object of the project, ready for `FeatureStore.apply`."""
    tags = {"definitions_version": DEFINITIONS_VERSION}
    objects: list = [USER, ITEM]
    views: dict[str, FeatureView] = {}
    for view, features in FEATURES_BY_VIEW.items():
        entity = ENTITY_BY_VIEW[view]
        # ttl 0: a user's last state stays valid however long ago it was written (historical joins too).
        views[view] = FeatureView(
            name=view, entities=[entity], schema=features, source=sources.table_source(view),
            ttl=timedelta(0), online=True, tags=tags,
            description=f"dbt table {view}: state after each review moment, point in time.",
        )
        push = PushSource(name=push_source(view), batch_source=sources.push_log_source(fresh_view(view)))
        views[fresh_view(view)] = FeatureView(
            name=fresh_view(view), entities=[entity], schema=features, source=push, ttl=FRESH_TTL,
            online=True, tags=tags,
            description=f"{view} updated by interactions pushed since the last batch materialization.",
        )
        objects.append(push)
    objects += views.values()
    objects += [
        FeatureService(name=USER_SERVICE, features=[views[USER_VIEW], views[fresh_view(USER_VIEW)]], tags=tags),
        FeatureService(name=ITEM_SERVICE, features=[views[ITEM_VIEW], views[fresh_view(ITEM_VIEW)]], tags=tags),
        # The rerank read: one user and its candidates in one call.
        FeatureService(name=RANKING_SERVICE, features=list(views.values()), tags=tags),
    ]
    return objects

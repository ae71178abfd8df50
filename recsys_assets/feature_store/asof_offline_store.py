"""Feast's DuckDB offline store with the point-in-time join done by DuckDB's ASOF JOIN.

Feast's own join pairs every entity row with every earlier feature row of its key and keeps the newest (a
window over that product). Feature rows are stamped per review, so on a long-tailed catalogue a popular item's
thousands of rows are paired with every training example that names it: the default data's ~550k training
rows took 148 s, most of a new day's `training_dataset`. An ASOF JOIN finds the newest row at or before each
entity row directly, the same row, in time linear in the rows (7 s there; 37x on 100k rows in
`bench/feature_store.py`).

The store is configured like any Feast offline store (`type: <this module>.AsofDuckDBOfflineStore`); what it
cannot answer the same way goes to Feast's own join: views with a ttl, on-demand views, the created-timestamp
cutoff, sources with a created timestamp (Feast breaks ties at one event timestamp by it), sources other than
files, and an entity SQL query.
"""

from __future__ import annotations

from datetime import timedelta

import ibis
import pandas as pd
from feast import FeatureView, FileSource
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.duckdb import (
    DuckDBOfflineStore,
    DuckDBOfflineStoreConfig,
    _read_data_source,
    _write_data_source,
)
from feast.infra.offline_stores.ibis import (
    IbisRetrievalJob,
    _get_entity_df_event_timestamp_range,
    _get_entity_schema,
    _to_utc,
)
from feast.infra.offline_stores.offline_store import RetrievalMetadata
from feast.on_demand_feature_view import OnDemandFeatureView
from ibis.expr import datatypes as dt
from pydantic import StrictStr

STORE_TYPE = f"{__name__}.AsofDuckDBOfflineStore"


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    type: StrictStr = STORE_TYPE


def asof_applies(feature_views: list[FeatureView], entity_df, odfvs: list, filter_by_created_timestamp: bool) -> bool:
    """Whether the ASOF join returns exactly what Feast's join would for this request."""
    return (isinstance(entity_df, pd.DataFrame) and not odfvs and not filter_by_created_timestamp
            and all(isinstance(fv.batch_source, FileSource) and not fv.batch_source.created_timestamp_column
                    and (fv.ttl is None or fv.ttl == timedelta(0)) for fv in feature_views))


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names: bool = False, filter_by_created_timestamp: bool = False):
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        if not asof_applies(feature_views, entity_df, odfvs, filter_by_created_timestamp):
            return DuckDBOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project, full_feature_names,
                filter_by_created_timestamp)
        event_column = offline_utils.infer_event_timestamp_from_entity_df(_get_entity_schema(entity_df))
        first, last = _get_entity_df_event_timestamp_range(entity_df, event_column)
        table = ibis.memtable(_to_utc(entity_df, event_column))
        keep = list(table.columns)
        for view in feature_views:
            features, joined = _view_table(view, feature_refs, full_feature_names, str(config.repo_path))
            table = table.asof_join(joined, on=table[event_column] >= joined[_column(view, "ts")],
                                    predicates=[table[entity] == joined[_column(view, key)]
                                                for key, entity in _join_keys(view).items()])
            keep += features
        return IbisRetrievalJob(
            table.select(*keep), [], full_feature_names,
            metadata=RetrievalMetadata(features=feature_refs, keys=list(set(entity_df.columns) - {event_column}),
                                       min_event_timestamp=first, max_event_timestamp=last),
            data_source_writer=_write_data_source, staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
            repo_path=str(config.repo_path))


def _join_keys(view: FeatureView) -> dict[str, str]:
    """The view's join keys: {feature-table column: entity column}."""
    return view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}


def _column(view: FeatureView, name: str) -> str:
    """A join column's name in the result, unique per view (keys and stamps of several views never collide)."""
    return f"__{view.name}__{name}"


def _view_table(view: FeatureView, feature_refs: list[str], full_feature_names: bool, repo_path: str):
    """(feature column names as Feast names them, the view's rows: stamp, keys and the requested features)."""
    source = view.batch_source
    rows = _read_data_source(source, repo_path)
    rows = rows.rename({new: old for old, new in source.field_mapping.items() if old in rows.columns})
    prefix = view.projection.name_to_use()
    requested = [ref.split(":")[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
    base = view.projection.name_alias or view.name
    named = {(f"{base}__{f}" if full_feature_names else f): rows[f] for f in requested}
    return list(named), rows.select(
        **{_column(view, "ts"): rows[source.timestamp_field].cast(dt.Timestamp(timezone="UTC"))},
        **{_column(view, key): rows[key] for key in _join_keys(view)}, **named)

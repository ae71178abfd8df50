"""One handle on the Feast feature store: configuration, apply, offline sync and materialization.

The repository is code (`definitions.py`) plus state under a folder (registry, SQLite online store, the
parquet offline copy). Nothing here needs a `feature_store.yaml` or a `feast apply` by hand: callers
`ensure_applied()` and the definitions are applied when missing or changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path

from feast import FeatureStore
from feast.repo_config import RepoConfig

from recsys_assets.feature_store.asof_offline_store import STORE_TYPE as ASOF_DUCKDB_STORE
from recsys_assets.feature_store.definitions import (
    BATCH_VIEWS,
    DEFINITIONS_VERSION,
    KEY_BY_VIEW,
    PROJECT,
    BatchSources,
    build_repository,
    fresh_view,
)
from recsys_assets.feature_store.offline import BigQuerySources, ParquetSources
from recsys_assets.redis_connection import connection_string

ONLINE_STORES = ("sqlite", "redis")


@dataclass(frozen=True)
class FeatureStoreConfig:
    """Everything Feast needs, as plain values; `local()` and `gcp()` are the two deployments."""

    repo_dir: Path
    registry: str
    online_store: dict
    offline_store: dict
    sources: BatchSources = field(compare=False)
    project: str = PROJECT

    @classmethod
    def local(cls, feast_dir: Path, online: str = "sqlite", redis_url: str | None = None) -> FeatureStoreConfig:
        """DuckDB offline store (point-in-time joins as ASOF joins) over parquet exported from the warehouse; SQLite
        (or Redis) online store."""
        feast_dir = Path(feast_dir).resolve()
        return cls(
            repo_dir=feast_dir,
            registry=str(feast_dir / "registry.db"),
            online_store=_online_store(online, sqlite_path=feast_dir / "online.db", redis_url=redis_url),
            offline_store={"type": ASOF_DUCKDB_STORE},
            sources=ParquetSources(feast_dir / "offline"),
        )

    @classmethod
    def gcp(cls, feast_dir: Path, *, project: str, dataset: str, registry_uri: str, redis_url: str,
            location: str = "US") -> FeatureStoreConfig:
        """BigQuery offline store over the dbt tables, Redis (Memorystore) online, registry on GCS."""
        return cls(
            repo_dir=Path(feast_dir).resolve(),
            registry=registry_uri,
            online_store=_online_store("redis", redis_url=redis_url),
            offline_store={"type": "bigquery", "project_id": project, "dataset": dataset, "location": location},
            sources=BigQuerySources(project, dataset),
        )

    def repo_config(self) -> RepoConfig:
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        return RepoConfig(
            project=self.project,
            provider="gcp" if self.offline_store["type"] == "bigquery" else "local",
            # Long-lived readers (serving) see a re-applied registry within a minute.
            registry={"registry_type": "file", "path": self.registry, "cache_ttl_seconds": 60},
            online_store=self.online_store,
            offline_store=self.offline_store,
            repo_path=self.repo_dir,
            entity_key_serialization_version=3,
        )


def _online_store(kind: str, *, sqlite_path: Path | None = None, redis_url: str | None = None) -> dict:
    if kind == "sqlite":
        return {"type": "sqlite", "path": str(sqlite_path)}
    if kind == "redis":
        if not redis_url:
            raise ValueError("the Redis online store needs a URL (RECSYS_REDIS_URL), e.g. 127.0.0.1:6379")
        return {"type": "redis", "connection_string": connection_string(redis_url)}
    raise ValueError(f"online store must be one of {ONLINE_STORES}, got {kind!r}")


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


class FeatureRepository:
    def __init__(self, config: FeatureStoreConfig):
        self.config = config

    @cached_property
    def store(self) -> FeatureStore:
        # Feast's own usage reporting stays off, like everything else here.
        os.environ.setdefault("FEAST_USAGE", "False")
        return FeatureStore(config=self.config.repo_config())

    @property
    def sources(self) -> BatchSources:
        return self.config.sources

    # -- definitions ---------------------------------------------------------------------------------------

    def applied_version(self) -> str | None:
        """The definitions version the registry holds, None when it holds none (or an incomplete set)."""
        try:
            views = {v.name: v for v in self.store.list_feature_views(allow_cache=False)}
        except Exception:  # no registry yet
            return None
        wanted = [*BATCH_VIEWS, *(fresh_view(v) for v in BATCH_VIEWS)]
        if any(name not in views for name in wanted):
            return None
        versions = {views[name].tags.get("definitions_version") for name in wanted}
        return versions.pop() if len(versions) == 1 else None

    def apply(self) -> list[str]:
        objects = build_repository(self.sources)
        self.store.apply(objects)
        return sorted(o.name for o in objects)

    def ensure_applied(self) -> bool:
        """Apply the definitions when the registry lacks them or holds another version; True if it applied."""
        if self.applied_version() == DEFINITIONS_VERSION:
            return False
        self.apply()
        return True

    # -- batch data -------------------------------------------------------------------------------------------

    def sync_offline(self, warehouse, days: list[date]) -> dict[str, int]:
        """Make the offline store see these days of the feature tables; rows per table."""
        return {table: self.sources.sync_days(warehouse, table, days) for table in BATCH_VIEWS}

    def materialized_until(self) -> datetime | None:
        """End of the newest window materialized into the online store for every batch view."""
        ends = []
        for name in BATCH_VIEWS:
            intervals = self.store.get_feature_view(name, allow_registry_cache=False).materialization_intervals
            if not intervals:
                return None
            ends.append(max(end for _, end in intervals))
        return min(ends)

    def materialize_days(self, first: date, last: date) -> tuple[datetime, datetime]:
        """Load the latest row per entity of days [first, last] into the online store; returns the window.

        Rows of day D are stamped in (D, D+1] (1 ms after a review moment), and Feast's window is inclusive,
        so [first, last + 1 day] covers exactly those days. The SQLite store overwrites whatever it holds,
        so re-running an older day also reloads the days already materialized after it: newer states win
        again and a re-run is harmless.
        """
        start, end = day_start(first), day_start(last) + timedelta(days=1)
        done_until = self.materialized_until()
        if done_until is not None and done_until > end:
            end = done_until
        self.store.materialize(start_date=start, end_date=end, feature_views=list(BATCH_VIEWS))
        return start, end

    def entity_sample(self, view: str, days: list[date], size: int, seed: int) -> list[str]:
        """Up to `size` distinct entity keys with rows on these days, deterministic for a seed."""
        return self.sources.sample_keys(view, KEY_BY_VIEW[view], days, size, seed)

"""One handle on the Feast feature store: apply, offline sync and materialization (its configuration: config.py).

The repository is code (`definitions.py`) plus one `feature_store.yaml` per environment
(`environments/<name>/`, as Feast's docs lay a repository out), whose `${VARIABLE}`s come from `Settings`.
State lives in a folder (registry, SQLite online store, the parquet offline copy) where `apply()` also puts the
environment's file, so Feast's own CLI opens the store the pipeline built. Nothing needs a `feast apply` by
hand: callers `ensure_applied()` and the definitions are applied when missing or changed.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone
from functools import cached_property

from feast import FeatureStore

from recsys_assets.feature_store.config import (  # noqa: F401  (re-exported: the configuration moved there)
    CONFIG_FILE,
    ENVIRONMENTS,
    ENVIRONMENTS_DIR,
    FeatureStoreConfig,
    feast_environment,
)
from recsys_assets.feature_store.definitions import (
    BATCH_VIEWS,
    DEFINITIONS_VERSION,
    KEY_BY_VIEW,
    BatchSources,
    build_repository,
    fresh_view,
)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


class FeatureRepository:
    def __init__(self, config: FeatureStoreConfig):
        self.config = config

    @cached_property
    def store(self) -> FeatureStore:
        # Feast's own usage reporting stays off, like everything else here.
        os.environ.setdefault("FEAST_USAGE", "False")
        # repo_path: the file's relative paths (registry, SQLite) are the state folder's, not the current one's.
        return FeatureStore(repo_path=str(self.config.repo_dir), config=self.config.repo_config())

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
        self.config.write_repository_file()
        objects = build_repository(self.sources)
        self.store.apply(objects)
        return sorted(o.name for o in objects)

    def ensure_applied(self) -> bool:
        """Apply the definitions when the registry lacks them or holds another version; True if it applied."""
        self.config.write_repository_file()  # also for a store applied before, or another environment's
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

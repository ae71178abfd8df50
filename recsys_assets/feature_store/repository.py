"""One handle on the Feast feature store: configuration, apply, offline sync and materialization.

The repository is code (`definitions.py`) plus one `feature_store.yaml` per environment
(`environments/<name>/`, as Feast's docs lay a repository out), whose `${VARIABLE}`s come from `Settings`.
State lives in a folder (registry, SQLite online store, the parquet offline copy) where `apply()` also puts the
environment's file, so Feast's own CLI opens the store the pipeline built. Nothing needs a `feast apply` by
hand: callers `ensure_applied()` and the definitions are applied when missing or changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from string import Template

import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

from recsys_assets.feature_store.definitions import (
    BATCH_VIEWS,
    DEFINITIONS_VERSION,
    KEY_BY_VIEW,
    BatchSources,
    build_repository,
    fresh_view,
)
from recsys_assets.feature_store.offline import BigQuerySources, ParquetSources
from recsys_assets.redis_connection import connection_string

ENVIRONMENTS_DIR = Path(__file__).with_name("environments")
ENVIRONMENTS = tuple(sorted(p.name for p in ENVIRONMENTS_DIR.iterdir() if (p / "feature_store.yaml").exists()))
CONFIG_FILE = "feature_store.yaml"


def feast_environment(env: str, online_store: str) -> str:
    """The environment folder for RECSYS_ENV and the online store kind."""
    if env == "gcp":
        return "gcp"
    if online_store not in ("sqlite", "redis"):
        raise ValueError(f"online store must be sqlite or redis, got {online_store!r}")
    return "local-redis" if online_store == "redis" else "local"


@dataclass(frozen=True)
class FeatureStoreConfig:
    """An environment's `feature_store.yaml` with its variables, over a state folder."""

    repo_dir: Path
    environment: str = "local"
    variables: Mapping[str, str] = field(default_factory=dict)
    # Replaces the file's offline store (a test compares Feast's own DuckDB store with ours).
    offline_store: dict | None = None

    def __post_init__(self):
        if self.environment not in ENVIRONMENTS:
            raise ValueError(f"no Feast environment {self.environment!r}: one of {ENVIRONMENTS}")
        object.__setattr__(self, "repo_dir", Path(self.repo_dir).resolve())

    @classmethod
    def local(cls, feast_dir: Path, online: str = "sqlite", redis_url: str | None = None) -> FeatureStoreConfig:
        """DuckDB offline store (point-in-time joins as ASOF joins) over parquet exported from the warehouse;
        SQLite (or Redis) online store."""
        environment = feast_environment("local", online)
        if environment == "local-redis" and not redis_url:
            raise ValueError("the Redis online store needs a URL (RECSYS_REDIS_URL), e.g. 127.0.0.1:6379")
        return cls(feast_dir, environment, {"RECSYS_REDIS_URL": connection_string(redis_url)} if redis_url else {})

    @classmethod
    def for_settings(cls, settings) -> FeatureStoreConfig:
        """The deployment's store: its environment's file, its variables from the settings."""
        return cls(settings.feast_dir, feast_environment(settings.env, settings.online_store),
                   settings.feast_variables())

    @property
    def template(self) -> Path:
        return ENVIRONMENTS_DIR / self.environment / CONFIG_FILE

    @cached_property
    def values(self) -> dict:
        """The environment's file with its variables filled in (a missing one is an error, not an empty value)."""
        # Filled into the parsed values, not the text: a password with YAML's own characters stays one string.
        def filled(node):
            if isinstance(node, dict):
                return {key: filled(value) for key, value in node.items()}
            if isinstance(node, str):
                try:
                    return Template(node).substitute(self.variables)
                except KeyError as missing:
                    raise ValueError(f"{self.template} needs {missing.args[0]} (Settings.feast_variables)") from None
            return node

        values = filled(yaml.safe_load(self.template.read_text()))
        return {**values, "offline_store": self.offline_store} if self.offline_store else values

    @property
    def registry(self) -> str:
        """Where the registry is: a URI, or a file (relative paths are the repository folder's)."""
        path = self.values["registry"]["path"]
        return path if "://" in path or Path(path).is_absolute() else str(self.repo_dir / path)

    @property
    def online_store(self) -> dict:
        return self.values["online_store"]

    def repo_config(self) -> RepoConfig:
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        return RepoConfig(**self.values, repo_path=self.repo_dir)

    @property
    def sources(self) -> BatchSources:
        offline = self.values["offline_store"]
        if offline["type"] == "bigquery":
            return BigQuerySources(offline["project_id"], offline["dataset"])
        return ParquetSources(self.repo_dir / "offline")

    def write_repository_file(self) -> Path:
        """The environment's file, variables left for Feast to read from the environment (no secret on disk),
        into the state folder: the Feast CLI's repository."""
        target = self.repo_dir / CONFIG_FILE
        text = self.template.read_text()
        if not target.exists() or target.read_text() != text:
            self.repo_dir.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        return target


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

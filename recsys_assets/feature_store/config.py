"""Which Feast configuration a deployment uses: an environment's `feature_store.yaml` with its variables, over a
state folder (the store itself is `repository.py`'s). Importing this module does not import Feast: the code
location builds its feature store resource from it at every start, and Feast takes seconds to import; only
`repo_config()` and `sources` load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

import yaml

from recsys_assets.redis_connection import connection_string

if TYPE_CHECKING:
    from feast.repo_config import RepoConfig

    from recsys_assets.feature_store.definitions import BatchSources

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
        from feast.repo_config import RepoConfig

        self.repo_dir.mkdir(parents=True, exist_ok=True)
        return RepoConfig(**self.values, repo_path=self.repo_dir)

    @property
    def sources(self) -> BatchSources:
        from recsys_assets.feature_store.offline import BigQuerySources, ParquetSources

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

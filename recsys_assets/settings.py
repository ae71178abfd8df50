"""Where state lives and which environment we run in. Plain Python: no dagster here.

Everything the platform writes lives under RECSYS_HOME (default: `var/` in the repository).
RECSYS_ENV picks the deployment target (`local` embedded defaults, or `gcp`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = REPO_ROOT / "var"
ENVIRONMENTS = ("local", "gcp")
# Used when neither RECSYS_START_DATE nor the data set's own record says where partitions begin.
DEFAULT_START_DATE = date(2024, 1, 1)
DATASET_FILE = "dataset.json"


@dataclass(frozen=True)
class Settings:
    home: Path
    env: str

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    @property
    def online_store(self) -> str:
        """Feast online store kind: sqlite (default locally) or redis (RECSYS_ONLINE_STORE=redis)."""
        return os.environ.get("RECSYS_ONLINE_STORE", "redis" if self.env == "gcp" else "sqlite").strip().lower()

    @property
    def redis_url(self) -> str | None:
        return os.environ.get("RECSYS_REDIS_URL")

    @property
    def qdrant_dir(self) -> Path:
        return self.home / "qdrant"

    @property
    def qdrant_url(self) -> str | None:
        """A Qdrant server (RECSYS_QDRANT_URL; the cluster's service under gcp); None: local mode in qdrant_dir."""
        return os.environ.get("RECSYS_QDRANT_URL") or ("http://qdrant:6333" if self.env == "gcp" else None)

    @property
    def serving_store(self) -> str:
        """Where precomputed candidates and the release live: sqlite (default locally) or redis."""
        default = "redis" if self.env == "gcp" or self.online_store == "redis" else "sqlite"
        return os.environ.get("RECSYS_SERVING_STORE", default).strip().lower()

    @property
    def serving_redis_url(self) -> str | None:
        """The Redis holding the serving store, None when it is the SQLite file (serving_db_path)."""
        if self.serving_store != "redis":
            return None
        if not self.redis_url and self.env != "gcp":
            raise ValueError("RECSYS_SERVING_STORE=redis needs RECSYS_REDIS_URL")
        return self.redis_url or "redis-master:6379"  # the Helm chart's service in the cluster

    @property
    def serving_db_path(self) -> Path:
        return self.home / "serving" / "serving.sqlite"

    @property
    def events_dir(self) -> Path:
        """Interactions received by the API, one JSON-lines file per day, until they are landed."""
        return self.home / "events"

    @property
    def mlflow_uri(self) -> str | None:
        """An MLflow server (RECSYS_MLFLOW_URI; the cluster's under gcp); None: SQLite under RECSYS_HOME/mlflow."""
        return os.environ.get("RECSYS_MLFLOW_URI") or ("http://mlflow:5000" if self.env == "gcp" else None)

    def partitions_start(self) -> date:
        """First daily partition: RECSYS_START_DATE, else the first day of the data set in RECSYS_HOME."""
        explicit = os.environ.get("RECSYS_START_DATE")
        if explicit:
            return date.fromisoformat(explicit)
        recorded = read_dataset_record(self.home).get("first_day")
        return date.fromisoformat(recorded) if recorded else DEFAULT_START_DATE


def get_settings() -> Settings:
    env = os.environ.get("RECSYS_ENV", "local").strip().lower()
    if env not in ENVIRONMENTS:
        raise ValueError(f"RECSYS_ENV must be one of {ENVIRONMENTS}, got {env!r}")
    home = Path(os.environ.get("RECSYS_HOME") or DEFAULT_HOME).expanduser().resolve()
    return Settings(home=home, env=env)


DAGSTER_YAML = """\
# Written by `recsys init-dagster-home`.
telemetry:
  enabled: false
run_queue:
  # DuckDB allows one writer process: runs that write the local warehouse go one at a time.
  max_concurrent_runs: 1
run_monitoring:
  # A run whose worker died (the daemon stopped mid-launch or mid-run) would hold that one place forever:
  # one stuck starting fails after 3 minutes, one running for over 2 hours fails (a day takes minutes).
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_runtime_seconds: 7200
  poll_interval_seconds: 30
"""


def init_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME with telemetry off and a run queue fit for the embedded warehouse. A dagster.yaml this
    function wrote earlier is brought up to date; one a user wrote is left alone."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or (config.read_text().startswith(DAGSTER_YAML.splitlines()[0])
                               and config.read_text() != DAGSTER_YAML):
        config.write_text(DAGSTER_YAML)
    return config


def read_dataset_record(home: Path) -> dict:
    path = home / DATASET_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def record_dataset(home: Path, *, first_day: date, last_day: date, source: str) -> None:
    """Remember the span of the landed data, so partitions start where the data does.

    Widens an existing record rather than replacing it: landing more days keeps the earliest start.
    """
    record = read_dataset_record(home)
    if record.get("first_day"):
        first_day = min(first_day, date.fromisoformat(record["first_day"]))
    if record.get("last_day"):
        last_day = max(last_day, date.fromisoformat(record["last_day"]))
    record.update(first_day=first_day.isoformat(), last_day=last_day.isoformat(), source=source)
    home.mkdir(parents=True, exist_ok=True)
    (home / DATASET_FILE).write_text(json.dumps(record, indent=2) + "\n")

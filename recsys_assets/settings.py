"""The platform's configuration: one typed object, read from the environment once (`get_settings()`).
Plain Python: no dagster here.

Everything the platform writes lives under RECSYS_HOME (default: `var/` in the repository); RECSYS_ENV picks
the deployment target (`local` embedded defaults, or `gcp`). Each section below holds one concern's
settings, each with its one default; a field's environment variable is `RECSYS_<FIELD>` unless its
`validation_alias` names another. The README's configuration table is checked against these classes
(`tests/test_settings.py`), and `deploy/check.py` learns from them which variables exist.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys_assets.redis_connection import connection_string

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = REPO_ROOT / "var"
# Where daily partitions begin unless RECSYS_START_DATE says otherwise: the generator's first day. A fixed value,
# not one read from the data, so importing a module reads no state (imported history sets the variable).
DEFAULT_START_DATE = date(2024, 1, 1)
PREFIX = "RECSYS_"
# Services of the cluster (deploy/k8s): where gcp finds them when no URL is set.
CLUSTER_REDIS = "redis-master:6379"
CLUSTER_QDRANT = "http://qdrant:6333"
CLUSTER_MLFLOW = "http://mlflow:5000"


class Section(BaseSettings):
    # An empty variable counts as unset (RECSYS_HOME= means the default home, not the current folder).
    # No populate_by_name: with it, an aliased field would also answer to RECSYS_<FIELD> (RECSYS_PORT...).
    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore", env_ignore_empty=True)

    @field_validator("*", mode="before")
    @classmethod
    def _choice_in_any_case(cls, value, info):
        """RECSYS_ENV=GCP or RECSYS_ONLINE_STORE=" Redis" pick gcp and redis, as before the typed settings."""
        if isinstance(value, str) and "Literal" in str(cls.model_fields[info.field_name].annotation):
            return value.strip().lower()
        return value

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Environment variable -> field name."""
        return {(f.validation_alias if isinstance(f.validation_alias, str) else PREFIX + name.upper()): name
                for name, f in cls.model_fields.items()}


class StoreSettings(Section):
    """Where the platform's stores are; unset: the embedded ones under RECSYS_HOME (or the cluster's under gcp)."""

    online_store: Literal["sqlite", "redis"] | None = Field(
        None, description="Feast's online store (default: sqlite locally, redis under gcp)")
    redis_url: str | None = Field(
        None, description="Redis, in Feast's form `host:port,password=...,ssl=true,ssl_ca_certs=...` "
                          "(a `redis[s]://` URL is converted); gcp default: the cluster's redis-master:6379")
    serving_store: Literal["sqlite", "redis"] | None = Field(
        None, description="candidates and releases (default: redis under gcp or with the Redis online store, "
                          "else sqlite)")
    qdrant_url: str | None = Field(None, description="a Qdrant server (default: local mode under RECSYS_HOME; "
                                                     "gcp: http://qdrant:6333)")
    qdrant_api_key: str | None = Field(None, description="the Qdrant server's API key")
    mlflow_uri: str | None = Field(None, description="an MLflow tracking server (default: SQLite under RECSYS_HOME; "
                                                     "gcp: http://mlflow:5000)")


class GcpSettings(Section):
    """Under RECSYS_ENV=gcp: the project and where its data lives (Terraform's outputs, deploy/)."""

    gcp_project: str | None = Field(None, description="the GCP project (needed under gcp)")
    bq_location: str = Field("US", description="BigQuery location")
    bq_raw_dataset: str = Field("raw", description="BigQuery dataset of the raw tables")
    bq_dataset: str = Field("features", description="BigQuery dataset of the dbt feature tables")
    landing_bucket: str | None = Field(None, description="GCS bucket where daily files land (default "
                                                         "<project>-landing)")
    landing_prefix: str = Field("landing/", description="prefix of the daily files in the landing bucket")
    feast_registry: str | None = Field(None, description="Feast's registry (default "
                                                         "gs://<project>-feast/registry.db)")

    @property
    def landing(self) -> str:
        return self.landing_bucket or f"{self.gcp_project}-landing"

    @property
    def registry(self) -> str:
        return self.feast_registry or f"gs://{self.gcp_project}-feast/registry.db"


class TrainingSettings(Section):
    """How a day's models are trained."""

    executor: Literal["in_process", "ray"] = Field(
        "in_process", validation_alias="RECSYS_TRAIN_EXECUTOR",
        description="in_process, or ray (Ray Train with ray_workers workers; joins RAY_ADDRESS when set)")
    ray_workers: int = Field(2, ge=1, description="Ray Train workers")
    ray_storage: str | None = Field(
        None, description="where Ray Train and Tune checkpoint: a URI every worker reaches (gs://...); "
                          "default a temporary folder (one machine)")
    ray_use_gpu: bool = Field(False, description="one GPU per Ray Train worker")
    window_days: int = Field(0, ge=0, validation_alias="RECSYS_TRAIN_WINDOW_DAYS",
                             description="days of history a day's models learn from (0: all)")
    # = models.dataset.DatasetConfig's default, the share the figures in the README were measured with
    validation_fraction: float = Field(0.25, gt=0, lt=1,
                                       description="share of the training events that judges choices")
    item2vec_epochs: int = Field(5, ge=1, description="item2vec epochs")
    two_tower_epochs: int = Field(6, ge=1, description="two-tower epochs")
    ranker_epochs: int = Field(3, ge=1, description="ranker epochs (at most, with ranker_patience)")
    # Every ranker epoch is scored on validation (MLflow `train_validation_score`); N > 0 stops after N
    # epochs without a better score, keeping the best epoch's weights. Off by default: on MovieLens-100k,
    # MovieLens-1M and the default data it raised validation NDCG@10 and lowered every holdout (up to 8
    # epochs, N = 2: 0.272 -> 0.257, 0.322 -> 0.314, 0.157 -> 0.155).
    ranker_patience: int = Field(0, ge=0, description="stop the ranker after N epochs without a better "
                                                      "validation score (0: off)")
    refresh_epochs: int = Field(1, ge=0, description="ranker epochs on the validation period after the fit "
                                                     "period (0: serve the fit-only weights)")
    # Incremental days (models/incremental.py): the two-tower and the ranker continue the champion's fit-only
    # weights on the fit period's last days; a full retrain from scratch every `full_retrain_every_days`.
    incremental: bool = Field(True, validation_alias="RECSYS_TRAIN_INCREMENTAL",
                              description="continue the champion on recent days between full retrains")
    incremental_window_days: int = Field(14, ge=1, description="days of the fit period an incremental day "
                                                               "trains on")
    incremental_epochs: int = Field(1, ge=1, description="epochs of an incremental day")
    full_retrain_every_days: int = Field(7, ge=1, description="days between full retrains of a lineage")
    batch_size: int = Field(1024, ge=1, description="training batch size")
    # The ranker's listwise loss scores every pair of a batch's positives: its cost grows with the batch.
    ranker_batch_size: int = Field(256, ge=1, description="the ranker's batch size")
    eval_max_users: int = Field(3000, ge=1, description="users evaluated per period (NDCG@10 ~0.15 then has "
                                                        "a standard error of ~0.005)")
    seed: int = Field(0, description="the seed of every model")
    tuning_trials: int = Field(8, ge=1, description="trials of the on-demand two-tower search")
    tuning_time_budget_s: float = Field(900.0, gt=0, validation_alias="RECSYS_TUNING_BUDGET_S",
                                        description="time budget of the two-tower search, seconds")
    llm_tagger_path: str | None = Field(None, description="a local causal LM folder to tag items with "
                                                          "(default: the MiniLM tagger)")


class ServingSettings(Section):
    """The Ray Serve API (`recsys serve`, the RayService on GKE)."""

    api_token: str | None = Field(None, description="bearer token POST /interactions needs (unset: refused)")
    reload_interval_s: float = Field(5.0, gt=0, description="how often replicas look for a new release, seconds")
    canary_share: float = Field(0.0, ge=0, le=1, description="share of reranks the challenger ranker answers")
    retrieval_extra: int = Field(20, ge=0, description="last-item i2i and popular candidates added to the "
                                                       "ANN ones")
    item_feature_ttl_s: float = Field(10.0, ge=0, description="how stale a cached item feature row may get "
                                                             "(0: no cache)")
    host: str = Field("127.0.0.1", validation_alias="RECSYS_SERVE_HOST", description="the address served on")
    port: int = Field(8000, ge=1, le=65535, validation_alias="RECSYS_SERVE_PORT", description="the port served on")
    # One per core is what the CPU-bound handlers can use.
    replicas: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1,
                          validation_alias="RECSYS_SERVE_REPLICAS", description="replicas (default: the cores)")
    ingress: Literal["haproxy", "direct", "proxy"] = Field(
        "haproxy", validation_alias="RECSYS_SERVE_INGRESS",
        description="haproxy (Ray Serve's HAProxy ingress), direct (one replica on the port) or proxy (Ray's)")
    # Load shedding, per replica: requests it works on at once, and how many more may wait; past that a
    # request is refused at once with 503 + Retry-After instead of queueing for seconds.
    max_ongoing_requests: int = Field(8, ge=1, validation_alias="RECSYS_SERVE_MAX_ONGOING",
                                      description="requests a replica works on at once")
    max_queued_requests: int = Field(24, ge=-1, validation_alias="RECSYS_SERVE_MAX_QUEUED",
                                     description="requests that may wait per replica before 503 (-1: no limit)")
    retry_after_s: float = Field(1.0, gt=0, description="Retry-After of a shed request, seconds")
    # A claimed Idempotency-Key whose request died (a replica killed mid-POST) answers 409 until this has passed,
    # then a retry records the same event. Well above what one request may take: its store waits (Redis 0.5 s,
    # SQLite's busy wait) and a feature push's lock (10 s); a retry that takes over a live request's claim could
    # count its features twice.
    idempotency_pending_s: float = Field(120.0, gt=0, description="seconds before the claim of an unanswered "
                                                                  "POST with an Idempotency-Key may be taken over")
    # A replica's Redis calls fail fast (one retry) instead of stalling its requests; /readyz reports it.
    redis_timeout_s: float = Field(0.5, gt=0, description="connect and read timeout of serving's Redis calls, "
                                                          "seconds")
    # Above `replicas`, Serve adds replicas while their queues stay long (on GKE the KubeRay autoscaler
    # adds the nodes they need).
    max_replicas: int | None = Field(None, ge=1, validation_alias="RECSYS_SERVE_MAX_REPLICAS",
                                     description="autoscale up to this many replicas (unset or 0: a fixed number)")

    # Ray's metrics agent exports every replica's metrics on this port (127.0.0.1 unless RECSYS_SERVE_HOST says
    # otherwise) when `recsys serve` starts the Ray; a cluster it joins has its own (KubeRay: 8080).
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="RECSYS_METRICS_PORT",
                                     description="port of Ray's metrics export, every replica's series "
                                                 "(default: a free one; `recsys serve` prints it)")
    telemetry: bool = Field(True, description="serving's metrics and traces (0: off, to measure what they cost)")

    @field_validator("max_replicas", mode="before")
    @classmethod
    def _zero_is_fixed(cls, value):
        return None if str(value).strip() == "0" else value


class ObservabilitySettings(Section):
    """Where the pipeline's alerts and metrics go."""

    alertmanager_url: str | None = Field(
        None, description="Alertmanager (e.g. http://127.0.0.1:9093) the run-failure sensor posts to (unset: "
                          "it only logs)")
    pipeline_exporter_port: int = Field(9108, ge=1, le=65535, description="port of `recsys pipeline-exporter` "
                                                                          "(Prometheus text on 127.0.0.1)")


class Settings(Section):
    """Where state lives, which environment we run in, and every section's settings."""

    env: Literal["local", "gcp"] = Field("local", description="local (embedded defaults) or gcp")
    home: Path = Field(DEFAULT_HOME, description="where everything the platform writes lives (default: var/)")
    start_date: date = Field(DEFAULT_START_DATE, description="the first daily partition: days before it are not "
                                                             "loaded (`recsys import` says when to set it)")
    stores: StoreSettings = Field(default_factory=StoreSettings)
    gcp: GcpSettings = Field(default_factory=GcpSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    @field_validator("home")
    @classmethod
    def _absolute(cls, home: Path) -> Path:
        return Path(home).expanduser().resolve()

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        if self.env == "gcp" and not self.gcp.gcp_project:
            raise ValueError("RECSYS_ENV=gcp needs RECSYS_GCP_PROJECT (Terraform's project_id output)")
        if self.serving_store == "redis" and not self.stores.redis_url and self.env != "gcp":
            raise ValueError("RECSYS_SERVING_STORE=redis needs RECSYS_REDIS_URL")
        if self.online_store == "redis" and not self.stores.redis_url and self.env != "gcp":
            raise ValueError("RECSYS_ONLINE_STORE=redis needs RECSYS_REDIS_URL, e.g. 127.0.0.1:6379")
        return self

    @classmethod
    def sections(cls) -> dict[str, type[Section]]:
        return {name: f.annotation for name, f in cls.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, Section)}

    @classmethod
    def environment_variables(cls) -> dict[str, tuple[str, str]]:
        """Every variable the configuration reads -> (section, field); section '' for the top level."""
        names = {var: ("", field) for var, field in cls.variables().items() if field not in cls.sections()}
        for section, kind in cls.sections().items():
            names.update({var: (section, field) for var, field in kind.variables().items()})
        return names

    @classmethod
    def markdown_table(cls) -> str:
        """The README's configuration table: every variable, its default and meaning, by section."""
        rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
        for variable, (section, name) in cls.environment_variables().items():
            field = (cls.sections()[section] if section else cls).model_fields[name]
            default = "one per core" if field.default_factory else field.default
            default = "" if default is None else f"`{default.relative_to(REPO_ROOT) if isinstance(default, Path) else default}`"
            rows.append(f"| `{variable}` | {default} | {field.description} |")
        return "\n".join(rows)

    # -- paths under RECSYS_HOME -------------------------------------------------------------------------------

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
    def qdrant_dir(self) -> Path:
        return self.home / "qdrant"

    @property
    def serving_db_path(self) -> Path:
        return self.home / "serving" / "serving.sqlite"

    @property
    def events_dir(self) -> Path:
        """Interactions received by the API, one JSON-lines file per day, until they are landed."""
        return self.home / "events"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def evaluation_dir(self) -> Path:
        return self.home / "evaluation"

    @property
    def tags_dir(self) -> Path:
        return self.home / "tags"

    @property
    def tuning_dir(self) -> Path:
        return self.home / "tuning"

    # -- stores: the environment's defaults, decided here only ----------------------------------------------

    @property
    def online_store(self) -> str:
        return self.stores.online_store or ("redis" if self.env == "gcp" else "sqlite")

    @property
    def redis_url(self) -> str | None:
        return self.stores.redis_url or (CLUSTER_REDIS if self.env == "gcp" else None)

    @property
    def qdrant_url(self) -> str | None:
        """A Qdrant server; None: local mode in qdrant_dir."""
        return self.stores.qdrant_url or (CLUSTER_QDRANT if self.env == "gcp" else None)

    @property
    def serving_store(self) -> str:
        """Where precomputed candidates and the release live: sqlite or redis."""
        default = "redis" if self.env == "gcp" or self.online_store == "redis" else "sqlite"
        return self.stores.serving_store or default

    @property
    def serving_redis_url(self) -> str | None:
        """The Redis holding the serving store, None when it is the SQLite file (serving_db_path)."""
        return self.redis_url if self.serving_store == "redis" else None

    @property
    def mlflow_uri(self) -> str | None:
        """An MLflow server; None: SQLite under mlflow_dir."""
        return self.stores.mlflow_uri or (CLUSTER_MLFLOW if self.env == "gcp" else None)

    def dbt_environment(self) -> dict[str, str]:
        """What dbt's profiles.yml and sources read from the environment (they hold no defaults of their own);
        no secret among them. `recsys config --export` prints them for running dbt standalone."""
        env = {"RECSYS_HOME": str(self.home)}
        if self.env == "gcp":
            env.update(RECSYS_GCP_PROJECT=self.gcp.gcp_project, RECSYS_BQ_DATASET=self.gcp.bq_dataset,
                       RECSYS_BQ_RAW_DATASET=self.gcp.bq_raw_dataset, RECSYS_BQ_LOCATION=self.gcp.bq_location)
        return env

    def feast_variables(self) -> dict[str, str]:
        """The `${RECSYS_*}`s of Feast's feature_store.yaml files (Redis in Feast's form: it may hold a password)."""
        env = {}
        if self.redis_url:
            env["RECSYS_REDIS_URL"] = connection_string(self.redis_url)
        if self.env == "gcp":
            env.update(RECSYS_GCP_PROJECT=self.gcp.gcp_project, RECSYS_BQ_DATASET=self.gcp.bq_dataset,
                       RECSYS_BQ_LOCATION=self.gcp.bq_location, RECSYS_FEAST_REGISTRY=self.gcp.registry)
        return env


def get_settings(**overrides) -> Settings:
    """The configuration from the environment (RECSYS_*); a bad value is refused with its variable's name."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ValueError(_explained(exc)) from None


def _explained(exc: ValidationError) -> str:
    sections = Settings.sections()
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if not loc:  # a rule over several settings: its message names them
            lines.append(error["msg"].removeprefix("Value error, "))
            continue
        kind = sections.get(loc[0])
        field = loc[1] if kind and len(loc) > 1 else loc[0]
        variable = next((var for var, name in (kind or Settings).variables().items() if name == field), field)
        lines.append(f"{variable}: {error['msg']} (got {error.get('input')!r})")
    return "invalid configuration: " + "; ".join(lines)


DAGSTER_YAML = """\
# Written by `recsys init-dagster-home`.
telemetry:
  enabled: false
run_queue:
  # DuckDB allows one writer process: runs that write the local warehouse go one at a time.
  max_concurrent_runs: 1
run_launcher:
  # Dagster's default launcher plus a run worker health check: a run whose worker process is gone (killed with
  # `dagster dev`, out of memory) is failed at run monitoring's next poll, not after max_runtime_seconds.
  module: recsys_assets.defs.run_launcher
  class: LocalRunLauncher
run_monitoring:
  # A run whose worker died (the daemon stopped mid-launch or mid-run) would hold that one place forever:
  # one stuck starting fails after 3 minutes, one whose worker is gone at the next poll (the launcher above),
  # one running for over 2 hours fails (a day takes minutes).
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_runtime_seconds: 7200
  poll_interval_seconds: 30
run_retries:
  # A run whose worker died (killed, out of memory, failed by the monitoring above) runs again from where it
  # stopped, twice at most. A step's own error is retried by its retry policy (defs/shared/retries.py): bad
  # input, refused for good, is not run again and again.
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
"""


def dagster_yaml(home: Path) -> str:
    """DAGSTER_YAML plus the event log storage of this home (its folder is part of the configuration: Dagster's
    default one, history/runs, under a storage that writes a range run's per-day events together)."""
    return DAGSTER_YAML + f"""\
event_log_storage:
  # Dagster's SQLite event log writing each batch of a range run's per-day events in one transaction
  # (recsys_assets/defs/shared/event_log.py): years of imported days load in minutes, not a quarter of an hour.
  module: recsys_assets.defs.shared.event_log
  class: BatchedSqliteEventLogStorage
  config:
    base_dir: {json.dumps(str(home.resolve() / "history" / "runs"))}
"""


def init_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME with telemetry off and a run queue fit for the embedded warehouse. A dagster.yaml this
    function wrote earlier is brought up to date; one a user wrote is left alone."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = dagster_yaml(home)
    if not config.exists() or (config.read_text().startswith(DAGSTER_YAML.splitlines()[0])
                               and config.read_text() != wanted):
        config.write_text(wanted)
    return config


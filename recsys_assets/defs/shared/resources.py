"""Resources, and the one place that knows whether we run locally or on GCP."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import mlflow
from dagster import ConfigurableResource, Field, Noneable, in_process_executor, resource
from dagster_dbt import DbtCliResource
from dagster_k8s import k8s_job_executor
from dagster_mlflow.resources import MlFlow

from recsys_assets.data.landing import GCSLandingZone, LandingZone, LocalLandingZone
from recsys_assets.defs.features.dbt_project import DBT_PROJECT_DIR
from recsys_assets.feature_store.repository import FeatureRepository, FeatureStoreConfig
from recsys_assets.models.dataset import DatasetConfig
from recsys_assets.models.registry import MlflowStore
from recsys_assets.models.training import TrainConfig
from recsys_assets.serving_data.events import EventLog, RedisEventLog, open_event_log
from recsys_assets.serving_data.index import VectorIndex
from recsys_assets.serving_data.kv import KeyValueStore, open_kv
from recsys_assets.settings import Settings
from recsys_assets.warehouse.stores import BigQueryWarehouse, DuckDBWarehouse, Warehouse


def _dbt_executable() -> str:
    """dbt beside this interpreter (the project's venv), even when the venv is not on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


class LandingResource(ConfigurableResource):
    """Where daily files land: a local folder, or a GCS bucket prefix."""

    local_path: str | None = None
    gcs_bucket: str | None = None
    gcs_prefix: str = "landing/"
    gcp_project: str | None = None

    def zone(self) -> LandingZone:
        if self.gcs_bucket:
            return GCSLandingZone(self.gcs_bucket, self.gcs_prefix, self.gcp_project)
        if not self.local_path:
            raise ValueError("LandingResource needs local_path or gcs_bucket")
        return LocalLandingZone(Path(self.local_path))


class WarehouseResource(ConfigurableResource):
    """The raw tables' home: a DuckDB file, or a BigQuery dataset."""

    duckdb_path: str | None = None
    bigquery_project: str | None = None
    bigquery_dataset: str = "raw"
    bigquery_location: str = "US"

    def warehouse(self) -> Warehouse:
        if self.bigquery_project:
            return BigQueryWarehouse(self.bigquery_project, self.bigquery_dataset, self.bigquery_location)
        if not self.duckdb_path:
            raise ValueError("WarehouseResource needs duckdb_path or bigquery_project")
        return DuckDBWarehouse(Path(self.duckdb_path))


class FeatureStoreResource(ConfigurableResource):
    """The Feast repository. Locally: parquet + DuckDB offline, SQLite (or Redis) online, state in feast_dir.
    With bigquery_project set: BigQuery offline over the dbt tables, Redis online, registry at registry_uri."""

    feast_dir: str
    online_store: str = "sqlite"
    redis_url: str | None = None
    bigquery_project: str | None = None
    bigquery_dataset: str = "features"
    bigquery_location: str = "US"
    registry_uri: str | None = None

    def config(self) -> FeatureStoreConfig:
        if self.bigquery_project:
            return FeatureStoreConfig.gcp(
                Path(self.feast_dir), project=self.bigquery_project, dataset=self.bigquery_dataset,
                location=self.bigquery_location, redis_url=self.redis_url or "",
                registry_uri=self.registry_uri or f"gs://{self.bigquery_project}-feast/registry.db",
            )
        return FeatureStoreConfig.local(Path(self.feast_dir), online=self.online_store, redis_url=self.redis_url)

    def repository(self) -> FeatureRepository:
        return FeatureRepository(self.config())


class TrainingResource(ConfigurableResource):
    """Where a day's training data and evaluation land, how models train (in-process, or Ray Train with
    `ray_workers` CPU workers; under gcp RAY_ADDRESS points at the KubeRay cluster) and how long."""

    datasets_dir: str
    evaluation_dir: str
    tags_root: str
    llm_tagger_path: str | None = None  # a local causal LM folder; without one the MiniLM tagger is used
    executor: str = "in_process"
    ray_workers: int = 2
    # Where Ray Train and Tune keep checkpoints: a URI every worker pod reaches on a cluster (gs://...;
    # RECSYS_RAY_STORAGE), None: a temporary folder (one machine).
    ray_storage: str | None = None
    ray_use_gpu: bool = False  # one GPU per Ray worker (RECSYS_RAY_USE_GPU=1: KubeRay's GPU worker group)
    window_days: int = 0  # days of history a day's models learn from; 0 = everything up to that day
    validation_fraction: float = DatasetConfig.validation_fraction  # of the training events: where choices are made
    item2vec_epochs: int = 5
    two_tower_epochs: int = 6
    ranker_epochs: int = 3
    # Every ranker epoch is scored on validation (`evaluation.RankerValidation`: MLflow `train_validation_score`);
    # N > 0: ranker_epochs at most, stopped after N epochs without a better score, the best epoch's weights kept.
    # Off by default: on MovieLens-100k, MovieLens-1M and the default data it raised validation NDCG@10 and
    # lowered every holdout (up to 8 epochs, N = 2: 0.272 -> 0.257, 0.322 -> 0.314, 0.157 -> 0.155).
    ranker_patience: int = 0
    refresh_epochs: int = 1  # on the validation period, after the fit period (0: serve the fit-only weights)
    batch_size: int = 1024
    # The ranker's listwise loss scores every pair of a batch's positives: its cost grows with the batch.
    ranker_batch_size: int = 256
    eval_max_users: int = 3000  # per period; NDCG@10 ~0.15 then has a standard error of ~0.005
    seed: int = 0
    tuning_dir: str = ""  # where the last two-tower search's best values are (`models/tuning.py`)
    tuning_trials: int = 8
    tuning_time_budget_s: float = 900.0

    def dataset_dir(self, partition_key: str) -> Path:
        return Path(self.datasets_dir) / partition_key

    @property
    def evaluation_dir_path(self) -> Path:
        return Path(self.evaluation_dir)

    def tags_dir(self, partition_key: str) -> Path:
        return Path(self.tags_root) / partition_key

    @property
    def tuning_dir_path(self) -> Path:
        return Path(self.tuning_dir)

    def train_config(self, epochs: int, lr: float, batch_size: int | None = None, shuffle: str = "rows",
                     patience: int = 0) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=batch_size or self.batch_size, lr=lr, seed=self.seed,
                           shuffle=shuffle, patience=patience)


@resource(
    config_schema={
        "mlflow_tracking_uri": Field(str),
        "experiment_name": Field(str, default_value="recsys"),
        "artifact_location": Field(Noneable(str), default_value=None),
    },
    description="dagster-mlflow's MlFlow (one MLflow run per Dagster run; each model logs a nested run), on an "
                "experiment created with its artifact location first.",
)
def mlflow_tracking(context):
    config = context.resource_config
    MlflowStore(config["mlflow_tracking_uri"], config["experiment_name"], config["artifact_location"]).ensure_experiment()
    # The registry is the tracking store: a registry URI inherited from the launching process (MLflow keeps
    # both in the environment) must not send this run's registrations elsewhere.
    mlflow.set_registry_uri(config["mlflow_tracking_uri"])
    tracker = MlFlow(context)
    yield tracker
    tracker.cleanup_on_error()


class ServingResource(ConfigurableResource):
    """What the serving app reads: the key-value store of candidates and releases (SQLite file, or Redis
    when redis_url is set), the Qdrant index (local folder, or a server URL) and the model registry."""

    sqlite_path: str
    redis_url: str | None = None
    qdrant_path: str | None = None
    qdrant_url: str | None = None
    mlflow_uri: str | None = None  # None: SQLite under mlflow_dir
    mlflow_dir: str | None = None
    events_dir: str | None = None  # the API's interaction log: files here, or Redis streams with redis_url

    def kv(self) -> KeyValueStore:
        return open_kv(Path(self.sqlite_path), self.redis_url)

    def index(self) -> VectorIndex:
        return VectorIndex.open(Path(self.qdrant_path) if self.qdrant_path else None, self.qdrant_url)

    def registry(self) -> MlflowStore:
        return MlflowStore(self.mlflow_uri) if self.mlflow_uri else MlflowStore.local(Path(self.mlflow_dir))

    def events(self) -> EventLog | RedisEventLog:
        return open_event_log(Path(self.events_dir), self.redis_url)


def _serving(settings: Settings) -> ServingResource:
    return ServingResource(
        sqlite_path=str(settings.serving_db_path), redis_url=settings.serving_redis_url,
        qdrant_path=str(settings.qdrant_dir), qdrant_url=settings.qdrant_url,
        mlflow_uri=settings.mlflow_uri, mlflow_dir=str(settings.home / "mlflow"), events_dir=str(settings.events_dir),
    )


def mlflow_store(settings: Settings) -> MlflowStore:
    return MlflowStore.for_settings(settings)


def _training(settings: Settings) -> TrainingResource:
    return TrainingResource(
        datasets_dir=str(settings.home / "datasets"),
        evaluation_dir=str(settings.home / "evaluation"),
        tags_root=str(settings.home / "tags"),
        llm_tagger_path=os.environ.get("RECSYS_LLM_TAGGER_PATH") or None,
        executor=os.environ.get("RECSYS_TRAIN_EXECUTOR", "in_process"),
        ray_workers=int(os.environ.get("RECSYS_RAY_WORKERS", "2")),
        ray_storage=os.environ.get("RECSYS_RAY_STORAGE") or None,
        ray_use_gpu=os.environ.get("RECSYS_RAY_USE_GPU", "0").strip().lower() in ("1", "true", "yes"),
        window_days=int(os.environ.get("RECSYS_TRAIN_WINDOW_DAYS", "0")),
        validation_fraction=float(os.environ.get("RECSYS_VALIDATION_FRACTION", DatasetConfig.validation_fraction)),
        ranker_epochs=int(os.environ.get("RECSYS_RANKER_EPOCHS", "3")),
        ranker_patience=int(os.environ.get("RECSYS_RANKER_PATIENCE", "0")),
        tuning_dir=str(settings.home / "tuning"),
        tuning_trials=int(os.environ.get("RECSYS_TUNING_TRIALS", "8")),
        tuning_time_budget_s=float(os.environ.get("RECSYS_TUNING_BUDGET_S", "900")),
    )


def _mlflow(settings: Settings):
    store = mlflow_store(settings)
    return mlflow_tracking.configured({"mlflow_tracking_uri": store.tracking_uri, "experiment_name": store.experiment,
                                       "artifact_location": store.artifact_location})


def _local_resources(settings: Settings) -> dict:
    return {
        "landing": LandingResource(local_path=str(settings.landing_dir)),
        "warehouse": WarehouseResource(duckdb_path=str(settings.warehouse_path)),
        "dbt": DbtCliResource(project_dir=str(DBT_PROJECT_DIR), target="duckdb", dbt_executable=_dbt_executable()),
        "feature_store": FeatureStoreResource(
            feast_dir=str(settings.feast_dir), online_store=settings.online_store, redis_url=settings.redis_url
        ),
        "training": _training(settings),
        "mlflow_tracking": _mlflow(settings),
        "serving": _serving(settings),
    }


def _gcp_resources(settings: Settings) -> dict:
    project = os.environ.get("RECSYS_GCP_PROJECT", "recsys-project")
    location = os.environ.get("RECSYS_BQ_LOCATION", "US")
    return {
        "landing": LandingResource(
            gcs_bucket=os.environ.get("RECSYS_LANDING_BUCKET", f"{project}-landing"),
            gcs_prefix=os.environ.get("RECSYS_LANDING_PREFIX", "landing/"),
            gcp_project=project,
        ),
        "warehouse": WarehouseResource(
            bigquery_project=project,
            bigquery_dataset=os.environ.get("RECSYS_BQ_RAW_DATASET", "raw"),
            bigquery_location=location,
        ),
        "dbt": DbtCliResource(project_dir=str(DBT_PROJECT_DIR), target="bigquery", dbt_executable=_dbt_executable()),
        "feature_store": FeatureStoreResource(
            feast_dir=str(settings.feast_dir),
            online_store="redis",
            redis_url=settings.redis_url or "redis-master:6379",  # the Helm chart's service in the cluster
            bigquery_project=project,
            bigquery_dataset=os.environ.get("RECSYS_BQ_DATASET", "features"),
            bigquery_location=location,
            registry_uri=os.environ.get("RECSYS_FEAST_REGISTRY", f"gs://{project}-feast/registry.db"),
        ),
        "training": _training(settings),
        "mlflow_tracking": _mlflow(settings),
        "serving": _serving(settings),
    }


RESOURCES_BY_ENV = {"local": _local_resources, "gcp": _gcp_resources}
# On GKE every step is its own Kubernetes Job, with the run launcher's image, environment, labels and volumes
# (the shared RECSYS_HOME bucket, deploy/dagster/values.yaml) and room for training. The pod annotation is
# what makes GKE add the Cloud Storage FUSE sidecar that mounts that bucket: without it the pod never starts.
GCP_EXECUTOR_CONFIG = {
    "max_concurrent": 4,
    "step_k8s_config": {
        "pod_template_spec_metadata": {"annotations": {"gke-gcsfuse/volumes": "true"},
                                       "labels": {"app.kubernetes.io/part-of": "recsys"}},
        "pod_spec_config": {"security_context": {"run_as_non_root": True, "run_as_user": 1000, "fs_group": 1000}},
        "container_config": {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}},
    },
}
# Locally, steps share one process: DuckDB allows one writer process, and 2 cores gain nothing from
# a process per step.
EXECUTOR_BY_ENV = {"local": in_process_executor, "gcp": k8s_job_executor.configured(GCP_EXECUTOR_CONFIG)}


def resources_for(settings: Settings) -> dict:
    return RESOURCES_BY_ENV[settings.env](settings)

"""Resources, and the one place that knows whether we run locally or on GCP.

Every run (its worker, the code server, each `dagster` command) imports this module to define the code location,
so Feast, MLflow, torch, Qdrant's client and dagster-k8s are imported where they are used, not here: together
they are most of the seconds a run takes to start.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource, ExecutorDefinition, Field, Noneable, in_process_executor, resource
from dagster_dbt import DbtCliResource

from recsys_assets.data.landing import GCSLandingZone, LandingZone, LocalLandingZone
from recsys_assets.defs.features.dbt_project import DBT_PROJECT_DIR
from recsys_assets.feature_store.config import FeatureStoreConfig
from recsys_assets.models.mlflow_store import MlflowStore
from recsys_assets.serving_data.events import EventLog, RedisEventLog, open_event_log
from recsys_assets.serving_data.kv import KeyValueStore, open_kv
from recsys_assets.settings import Settings
from recsys_assets.warehouse.stores import BigQueryWarehouse, DuckDBWarehouse, Warehouse

if TYPE_CHECKING:
    from recsys_assets.feature_store.repository import FeatureRepository
    from recsys_assets.serving_data.index import VectorIndex


def _dbt_executable() -> str:
    """dbt beside this interpreter (the project's venv), even when the venv is not on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


class LandingResource(ConfigurableResource):
    """Where daily files land: a local folder, or a GCS bucket prefix."""

    local_path: str | None = None
    gcs_bucket: str | None = None
    gcs_prefix: str = ""  # Settings.gcp.landing_prefix under gcp
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
    bigquery_dataset: str | None = None  # with bigquery_project: Settings.gcp's raw dataset and location
    bigquery_location: str | None = None

    def warehouse(self) -> Warehouse:
        if self.bigquery_project:
            if not (self.bigquery_dataset and self.bigquery_location):
                raise ValueError("WarehouseResource needs bigquery_dataset and bigquery_location with bigquery_project")
            return BigQueryWarehouse(self.bigquery_project, self.bigquery_dataset, self.bigquery_location)
        if not self.duckdb_path:
            raise ValueError("WarehouseResource needs duckdb_path or bigquery_project")
        return DuckDBWarehouse(Path(self.duckdb_path))


class FeatureStoreResource(ConfigurableResource):
    """The Feast repository: state in feast_dir, configured by an environment's `feature_store.yaml`
    (`feature_store/environments/`) with its variables (`Settings.feast_variables()`)."""

    feast_dir: str
    environment: str = "local"
    variables: dict[str, str] = {}

    def config(self) -> FeatureStoreConfig:
        return FeatureStoreConfig(Path(self.feast_dir), self.environment, self.variables)

    def repository(self) -> FeatureRepository:
        from recsys_assets.feature_store.repository import FeatureRepository

        return FeatureRepository(self.config())


class TrainingResource(ConfigurableResource):
    """Where a day's training data and evaluation land, how models train (in-process, or Ray Train with
    `ray_workers` CPU workers; under gcp RAY_ADDRESS points at the KubeRay cluster) and how long."""

    datasets_dir: str
    evaluation_dir: str
    tags_root: str
    llm_tagger_path: str | None  # a local causal LM folder; without one the MiniLM tagger is used
    # The knobs of `TrainingSettings` (recsys_assets/settings.py: their defaults and meaning), by the same names.
    executor: str
    ray_workers: int
    ray_storage: str | None
    ray_use_gpu: bool
    window_days: int
    validation_fraction: float
    item2vec_epochs: int
    two_tower_epochs: int
    ranker_epochs: int
    ranker_patience: int
    refresh_epochs: int
    incremental: bool
    incremental_window_days: int
    incremental_epochs: int
    full_retrain_every_days: int
    batch_size: int
    ranker_batch_size: int
    eval_max_users: int
    seed: int
    tuning_dir: str
    tuning_trials: int
    tuning_time_budget_s: float

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
    import mlflow
    from dagster_mlflow.resources import MlFlow

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
    qdrant_api_key: str | None = None
    mlflow_uri: str | None = None  # None: SQLite under mlflow_dir
    mlflow_dir: str | None = None
    events_dir: str | None = None  # the API's interaction log: files here, or Redis streams with redis_url

    def kv(self) -> KeyValueStore:
        return open_kv(Path(self.sqlite_path), self.redis_url)

    def index(self) -> VectorIndex:
        from recsys_assets.serving_data.index import VectorIndex

        return VectorIndex.open(Path(self.qdrant_path) if self.qdrant_path else None, self.qdrant_url,
                                self.qdrant_api_key)

    def registry(self) -> MlflowStore:
        return MlflowStore(self.mlflow_uri) if self.mlflow_uri else MlflowStore.local(Path(self.mlflow_dir))

    def events(self) -> EventLog | RedisEventLog:
        return open_event_log(Path(self.events_dir), self.redis_url)


def _serving(settings: Settings) -> ServingResource:
    return ServingResource(
        sqlite_path=str(settings.serving_db_path), redis_url=settings.serving_redis_url,
        qdrant_path=str(settings.qdrant_dir), qdrant_url=settings.qdrant_url,
        qdrant_api_key=settings.stores.qdrant_api_key, mlflow_uri=settings.mlflow_uri,
        mlflow_dir=str(settings.mlflow_dir), events_dir=str(settings.events_dir),
    )


def mlflow_store(settings: Settings) -> MlflowStore:
    return MlflowStore.for_settings(settings)


def _training(settings: Settings) -> TrainingResource:
    return TrainingResource(datasets_dir=str(settings.datasets_dir), evaluation_dir=str(settings.evaluation_dir),
                            tags_root=str(settings.tags_dir), tuning_dir=str(settings.tuning_dir),
                            **settings.training.model_dump())


def _feature_store(settings: Settings) -> FeatureStoreResource:
    config = FeatureStoreConfig.for_settings(settings)
    return FeatureStoreResource(feast_dir=str(config.repo_dir), environment=config.environment,
                                variables=dict(config.variables))


class DbtResource(DbtCliResource):
    """dagster-dbt's resource, starting dbt with the values its profile and sources read from the environment
    (`Settings.dbt_environment()`: dbt_project/profiles.yml holds no defaults of its own)."""

    profile_environment: dict[str, str] = {}

    def cli(self, args, **kwargs):
        # dagster-dbt starts dbt inside cli() with a copy of os.environ: the values are in it for that moment
        # only (a step runs one dbt at a time), so resources built for another home never leak into it.
        saved = {name: os.environ.get(name) for name in self.profile_environment}
        os.environ.update(self.profile_environment)
        try:
            return super().cli(args, **kwargs)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _dbt(settings: Settings, target: str) -> DbtResource:
    return DbtResource(project_dir=str(DBT_PROJECT_DIR), target=target, dbt_executable=_dbt_executable(),
                       profile_environment=settings.dbt_environment())


def _mlflow(settings: Settings):
    store = mlflow_store(settings)
    return mlflow_tracking.configured({"mlflow_tracking_uri": store.tracking_uri, "experiment_name": store.experiment,
                                       "artifact_location": store.artifact_location})


def _shared(settings: Settings) -> dict:
    return {"feature_store": _feature_store(settings), "training": _training(settings),
            "mlflow_tracking": _mlflow(settings), "serving": _serving(settings)}


def _local_resources(settings: Settings) -> dict:
    return {
        "landing": LandingResource(local_path=str(settings.landing_dir)),
        "warehouse": WarehouseResource(duckdb_path=str(settings.warehouse_path)),
        "dbt": _dbt(settings, "duckdb"),
        **_shared(settings),
    }


def _gcp_resources(settings: Settings) -> dict:
    gcp = settings.gcp
    return {
        "landing": LandingResource(gcs_bucket=gcp.landing, gcs_prefix=gcp.landing_prefix, gcp_project=gcp.gcp_project),
        "warehouse": WarehouseResource(bigquery_project=gcp.gcp_project, bigquery_dataset=gcp.bq_raw_dataset,
                                       bigquery_location=gcp.bq_location),
        "dbt": _dbt(settings, "bigquery"),
        **_shared(settings),
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


def _k8s_executor() -> ExecutorDefinition:
    from dagster_k8s import k8s_job_executor  # only under gcp: Kubernetes' client takes a second to import

    return k8s_job_executor.configured(GCP_EXECUTOR_CONFIG)


# Locally, steps share one process: DuckDB allows one writer process, and 2 cores gain nothing from
# a process per step.
EXECUTOR_BY_ENV = {"local": lambda: in_process_executor, "gcp": _k8s_executor}


def resources_for(settings: Settings) -> dict:
    return RESOURCES_BY_ENV[settings.env](settings)


def executor_for(settings: Settings) -> ExecutorDefinition:
    return EXECUTOR_BY_ENV[settings.env]()

"""Resources, and the one place that knows whether we run locally or on GCP."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dagster import ConfigurableResource, in_process_executor
from dagster_dbt import DbtCliResource
from dagster_gcp import BigQueryResource, GCSResource
from dagster_k8s import k8s_job_executor

from recsys_assets.data.landing import GCSLandingZone, LandingZone, LocalLandingZone
from recsys_assets.defs.dbt_project import DBT_PROJECT_DIR
from recsys_assets.feature_store.repository import FeatureRepository, FeatureStoreConfig
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


def _local_resources(settings: Settings) -> dict:
    return {
        "landing": LandingResource(local_path=str(settings.landing_dir)),
        "warehouse": WarehouseResource(duckdb_path=str(settings.warehouse_path)),
        "dbt": DbtCliResource(project_dir=str(DBT_PROJECT_DIR), target="duckdb", dbt_executable=_dbt_executable()),
        "feature_store": FeatureStoreResource(
            feast_dir=str(settings.feast_dir), online_store=settings.online_store, redis_url=settings.redis_url
        ),
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
        "bigquery": BigQueryResource(project=project, location=location),
        "gcs": GCSResource(project=project),
    }


RESOURCES_BY_ENV = {"local": _local_resources, "gcp": _gcp_resources}
# Locally, steps share one process: DuckDB allows one writer process, and 2 cores gain nothing from
# a process per step. On GKE every step is its own Kubernetes job.
EXECUTOR_BY_ENV = {"local": in_process_executor, "gcp": k8s_job_executor}


def resources_for(settings: Settings) -> dict:
    return RESOURCES_BY_ENV[settings.env](settings)

"""Shared fixtures: a temp RECSYS_HOME per test (or per session for the expensive pipeline run)."""

import os

# No telemetry leaves the machine.
os.environ.update(DO_NOT_TRACK="1", DBT_SEND_ANONYMOUS_USAGE_STATS="False", RAY_USAGE_STATS_ENABLED="0",
                  MLFLOW_DISABLE_TELEMETRY="true")

from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from recsys_assets.data.generator import GeneratorConfig, generate
from recsys_assets.data.landing import LocalLandingZone
from recsys_assets.data.schema import ITEMS_FILE, review_file_name
from recsys_assets.defs.shared.resources import resources_for
from recsys_assets.settings import Settings

SMALL = GeneratorConfig(users=400, items=150, days=6, reviews=4_000, start=date(2024, 1, 1), seed=7)


@contextmanager
def recsys_env(home: Path):
    """RECSYS_HOME for code that reads the environment (dbt's profile, the CLI)."""
    previous = {k: os.environ.get(k) for k in ("RECSYS_HOME", "DAGSTER_HOME")}
    os.environ["RECSYS_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def persistent(dagster_home: Path) -> DagsterInstance:
    """A Dagster instance on disk, as `recsys init-dagster-home` writes it: other processes (the pipeline
    exporter, the CLI) read its runs, materializations and check evaluations through DAGSTER_HOME."""
    from recsys_assets.settings import dagster_yaml

    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(dagster_yaml(dagster_home))
    return DagsterInstance.from_config(str(dagster_home))


class Home:
    """A RECSYS_HOME with its landing zone, resources and a Dagster instance (ephemeral, or on disk under
    RECSYS_HOME/dagster)."""

    def __init__(self, path: Path, persistent_instance: bool = False):
        self.path = path
        self.settings = Settings(home=path, env="local")
        self.landing = LocalLandingZone(self.settings.landing_dir)
        self.instance = persistent(path / "dagster") if persistent_instance else DagsterInstance.ephemeral()
        self.training_overrides: dict = {}

    def resources(self) -> dict:
        resources = resources_for(self.settings)
        if self.training_overrides:
            training = resources["training"]
            resources["training"] = type(training)(**{**training.model_dump(), **self.training_overrides})
        return resources

    def feature_repository(self):
        return self.resources()["feature_store"].repository()

    def materialize_unpartitioned(self, assets):
        with recsys_env(self.path):
            return materialize(assets, resources=self.resources(), instance=self.instance)

    def materialize(self, assets, first: str, last: str | None = None, selection=None, raise_on_error=True):
        from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

        if last is None or last == first:
            tags, partition_key = {}, first
        else:
            tags, partition_key = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}, None
        with recsys_env(self.path):
            return materialize(
                assets, resources=self.resources(), instance=self.instance, tags=tags, partition_key=partition_key,
                selection=selection, raise_on_error=raise_on_error,
            )

    def write_generated(self, cfg: GeneratorConfig = SMALL) -> list[date]:
        items, days = generate(cfg)
        self.landing.write_parquet(ITEMS_FILE, items)
        written = []
        for day, reviews in days:
            self.landing.write_parquet(review_file_name(day), reviews)
            written.append(day)
        return written


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "recsys_home")


@pytest.fixture(scope="session")
def generated_home(tmp_path_factory) -> Home:
    """Small generated data, ingested and featurized once for the session (read-only for tests)."""
    from recsys_assets.defs.features.assets import dbt_features
    from recsys_assets.defs.ingest.assets import item_metadata, raw_reviews

    # On disk: the session's pipeline is what the pipeline exporter and `make observe`'s tests read.
    h = Home(tmp_path_factory.mktemp("generated") / "recsys_home", persistent_instance=True)
    days = h.write_generated()
    h.materialize_unpartitioned([item_metadata])
    h.materialize([raw_reviews, dbt_features], str(days[0]), str(days[-1]))
    h.days = days
    return h


@pytest.fixture(scope="session")
def featured_home(generated_home) -> Home:
    """generated_home with the Feast definitions applied and every day in the SQLite online store."""
    from recsys_assets.defs.feature_store.assets import feast_definitions, online_features

    generated_home.materialize_unpartitioned([feast_definitions])
    generated_home.materialize([online_features], str(generated_home.days[0]), str(generated_home.days[-1]))
    return generated_home


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server on a free loopback port, for the session (installed by `make setup`)."""
    from tests.support.redis_server import local_redis

    with local_redis() as server:
        yield server.url


@pytest.fixture(params=["sqlite", "redis"])
def kv(request, tmp_path):
    """The serving key-value store, as a SQLite file and on the real Redis."""
    from recsys_assets.serving_data.kv import RedisKV, SQLiteKV

    if request.param == "sqlite":
        store = SQLiteKV(tmp_path / "serving.sqlite")
    else:
        store = RedisKV(request.getfixturevalue("redis_url"))
        store.client.flushdb()
    yield store
    store.close()


@pytest.fixture(scope="session")
def gcs_emulator():
    """A local GCS API (gcp-storage-emulator, in memory) on a free loopback port; google-cloud-storage
    talks to it through STORAGE_EMULATOR_HOST. Yields the host."""
    from gcp_storage_emulator.server import create_server

    from recsys_assets.serving.ports import free_port

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        yield os.environ["STORAGE_EMULATOR_HOST"]
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


# Small and quick: the assertions are about behaviour, not about quality on 4k reviews.
SMALL_TRAINING = dict(item2vec_epochs=2, two_tower_epochs=2, ranker_epochs=2, batch_size=256, eval_max_users=300)


def model_assets() -> list:
    from recsys_assets.defs.models.assets import item2vec, ranker, two_tower
    from recsys_assets.defs.models.evaluation import model_evaluation, promotion
    from recsys_assets.defs.tags.assets import item_tags, tag_embeddings
    from recsys_assets.defs.training.assets import training_dataset

    return [item_tags, tag_embeddings, training_dataset, item2vec, two_tower, ranker, model_evaluation, promotion]


@pytest.fixture(scope="session")
def trained_home(featured_home) -> Home:
    """featured_home with every model asset materialized for the last day (MLflow under RECSYS_HOME)."""
    featured_home.training_overrides = SMALL_TRAINING
    featured_home.trained = featured_home.materialize(model_assets(), str(featured_home.days[-1]))
    return featured_home


def serving_assets() -> list:
    from recsys_assets.defs.serving.candidates import (
        ease_candidates,
        i2i_candidates,
        item_catalog,
        popular_items,
        recent_popularity,
        u2i_candidates,
        user_sequences,
    )
    from recsys_assets.defs.serving.index import item2vec_index, tag_index, two_tower_index
    from recsys_assets.defs.serving.release import serving_release

    return [two_tower_index, item2vec_index, tag_index, popular_items, i2i_candidates, u2i_candidates, ease_candidates,
            recent_popularity, user_sequences, item_catalog, serving_release]


@pytest.fixture(scope="session")
def served_home(trained_home) -> Home:
    """trained_home with the index, candidate and release assets of the last day (what serving reads), and the
    day's drift checks evaluated (a check-only run, as the automation runs them after their assets)."""
    from dagster import AssetSelection

    from recsys_assets.defs.ingest.assets import raw_reviews
    from recsys_assets.defs.ingest.drift import item_popularity_drift_check, ratings_drift
    from recsys_assets.defs.models.assets import ranker
    from recsys_assets.defs.models.drift import ranker_score_drift

    trained_home.served = trained_home.materialize(serving_assets(), str(trained_home.days[-1]))
    checks = [ratings_drift, item_popularity_drift_check, ranker_score_drift]
    with recsys_env(trained_home.path):
        drift = materialize([raw_reviews, ranker, *checks], selection=AssetSelection.checks(*checks),
                            resources=trained_home.resources(), instance=trained_home.instance)
    assert drift.success
    return trained_home


SERVICE_TOKEN = "test-token"


@pytest.fixture(scope="module")
def service(served_home):
    """`recsys serve` over served_home (Ray Serve, one replica per core behind its ingress), once per module (a
    module's service is stopped before the next module starts its own: two at once would share one machine's
    Ray): an httpx client on its base URL. Replicas look for a new release every second; half the reranks go to a
    challenger ranker when a release names one."""
    import httpx

    from tests.support.processes import serve_process

    env = {"RECSYS_API_TOKEN": SERVICE_TOKEN, "RECSYS_RELOAD_INTERVAL_S": "1", "RECSYS_CANARY_SHARE": "0.5"}
    with serve_process(served_home.path, env=env) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client

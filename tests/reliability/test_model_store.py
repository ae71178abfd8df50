"""The model store under faults: an MLflow outage is never "no champion" (serving keeps its release), and a
model version's files are weights plus code, never unpickled (a crafted pickle in the store runs nothing)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pytest
import torch
from dagster import materialize
from mlflow.exceptions import MlflowException

from recsys_assets.models.registry import MlflowStore, champion, set_champion
from recsys_assets.serving.config import serving_kv
from recsys_assets.serving_data.release import ReleaseStore
from tests.support.mlflow_server import MlflowServer, mlflow_server


@pytest.fixture(autouse=True)
def fail_fast(monkeypatch):
    """MLflow's client retries a refused connection or a 5xx for minutes by default: one try, then the error."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def _break(server: MlflowServer, fault: str) -> None:
    if fault == "server stopped":
        server.stop()
    else:  # the store under a running server turns unreadable: it answers 5xx
        server.store.write_bytes(b"not a database" * 4096)


FAULTS = ["server stopped", "store unreadable"]


@pytest.mark.parametrize("fault", FAULTS)
def test_champion_raises_when_mlflow_cannot_answer_and_is_none_only_when_there_is_none(tmp_path, fault):
    with mlflow_server(tmp_path / "mlflow") as server:
        client = MlflowStore(server.url).client()
        run = client.create_run(client.create_experiment("recsys"))
        client.create_registered_model("ranker")
        assert champion(client, "ranker") is None  # a model without the alias
        assert champion(client, "two_tower") is None  # no such model
        client.create_model_version("ranker", f"runs:/{run.info.run_id}/ranker", run_id=run.info.run_id)
        set_champion(client, "ranker", "1")
        assert champion(client, "ranker").version == "1"

        _break(server, fault)
        for name in ("ranker", "two_tower"):
            with pytest.raises(MlflowException):
                champion(client, name)


@pytest.mark.parametrize("fault", FAULTS)
def test_an_mlflow_outage_fails_serving_release_and_keeps_the_served_release(served_home, tmp_path, fault):
    """The step fails (Dagster shows it red, a retry can follow) instead of publishing popularity."""
    from recsys_assets.defs.serving.release import serving_release

    releases = ReleaseStore(serving_kv(served_home.settings))
    before, history = releases.current(), releases.history()
    assert before is not None and before.pipeline == "rerank"
    with mlflow_server(tmp_path / "mlflow") as server:
        resources = served_home.resources()
        serving = resources["serving"]
        resources["serving"] = type(serving)(**{**serving.model_dump(), "mlflow_uri": server.url})
        _break(server, fault)
        result = materialize([serving_release], resources=resources, instance=served_home.instance,
                             partition_key=str(served_home.days[-1]), raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "MlflowException" in failure.to_string() or "Mlflow" in failure.cls_name, failure.to_string()
    assert releases.current() == before and releases.history() == history


# -- models stored as weights plus code ------------------------------------------------------------------------


def _small_models() -> dict:
    """One of each stored class, small, with the inputs they serve (the ranker's item width differs from its
    config's, as when it starts from item2vec)."""
    from recsys_assets.models.features import HISTORY, N_DELTA_BUCKETS
    from recsys_assets.models.item2vec import Item2VecModel
    from recsys_assets.models.ranker import Ranker, ranker_layout
    from recsys_assets.models.two_tower import TwoTower, user_layout

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    sizes = dict(n_users=20, n_items=30, n_categories=4, user_dense_dim=3, item_dense_dim=2)
    rows, history = 5, rng.integers(0, 30, (5, HISTORY))
    dense = dict(user_dense=rng.random((rows, 3), np.float32), item_dense=rng.random((rows, 2), np.float32))
    ranker = Ranker(**sizes, item_init=rng.random((30, 16), np.float32),
                    negative_sampling_counts=rng.integers(1, 9, 30).astype(float))
    return {
        "item2vec": (Item2VecModel(rng.random((30, 8), np.float32)), np.arange(1, 6, dtype=np.float32)[:, None]),
        "two_tower": (TwoTower(**sizes), user_layout(3).pack(user=rng.integers(1, 20, rows), history=history,
                                                             user_dense=dense["user_dense"])),
        "ranker": (ranker, ranker_layout(3, 2).pack(
            user=rng.integers(1, 20, rows), item=rng.integers(1, 30, rows), history=history,
            buckets=rng.integers(0, N_DELTA_BUCKETS + 1, (rows, HISTORY)), category=rng.integers(0, 4, rows),
            **dense)),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> MlflowStore:
    """One SQLite store for these tests (creating one takes seconds); each registers versions of its own."""
    return MlflowStore.local(tmp_path_factory.mktemp("model_store") / "mlflow")


@contextmanager
def _tracking(store: MlflowStore):
    """`store` for MLflow's fluent API, the session's URIs put back after."""
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


@contextmanager
def _logging_to(store: MlflowStore):
    """A run of `store`, as logging needs (nested: the session's pipeline runs may have left one active)."""
    with _tracking(store), mlflow.start_run(experiment_id=store.ensure_experiment(), nested=True):
        yield


def _register(store: MlflowStore, name: str, model, example: np.ndarray) -> str:
    from recsys_assets.models.registry import log_model

    with _logging_to(store):
        return log_model(name, model, example, {"items.json": ["a", "b"]})


def _version_files(store: MlflowStore, name: str, version: str) -> Path:
    """Where the store keeps the version's files (what someone who can write the store can replace)."""
    return Path(urlparse(store.client().get_model_version_download_uri(name, version)).path)


class _WritesMarker:
    """What an attacker pickles: unpickling it creates `marker` (any code could run there instead)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("name", ["item2vec", "two_tower", "ranker"])
def test_a_registered_model_round_trips_as_weights_plus_code(store, name):
    from recsys_assets.models.registry import load_version

    model, example = _small_models()[name]
    model.eval()
    version = _register(store, name, model, example)
    files = {p.name for p in _version_files(store, name, version).rglob("*") if p.is_file()}
    assert {"model.json", "model.safetensors", "MLmodel", "input_example.json"} <= files
    assert not files & {"model.pth", "model.pkl", "python_model.pkl"}, files
    loaded, extras = load_version(store, name, version)
    assert type(loaded) is type(model) and not loaded.training
    assert json.loads((extras / "items.json").read_text()) == ["a", "b"]
    with torch.no_grad():
        x = torch.from_numpy(example)
        assert torch.equal(loaded(x), model(x))
        if name == "two_tower":
            assert torch.equal(loaded.item_vectors(torch.ones((2, 4))), model.item_vectors(torch.ones((2, 4))))
    assert {k: v.requires_grad for k, v in loaded.named_parameters()} == \
        {k: v.requires_grad for k, v in model.named_parameters()}
    with _tracking(store):
        signature = mlflow.models.get_model_info(f"models:/{name}/{version}").signature
    assert signature.inputs.inputs[0].shape == (-1, example.shape[1])


@pytest.mark.parametrize("planted", ["weights replaced by a pickle", "a pickled pytorch version"])
def test_a_crafted_pickle_in_the_store_is_refused_and_never_run(store, tmp_path, planted):
    from recsys_assets.models.registry import load_version
    from recsys_assets.models.weights import StoredModelError

    model, example = _small_models()["item2vec"]
    if planted == "weights replaced by a pickle":
        version = _register(store, "item2vec", model, example)
    else:  # a version as MLflow's pytorch flavor pickles it (how models were stored before)
        version = _register(store, "item2vec", model, example)  # the version's extras
        with _logging_to(store):
            version = str(mlflow.pytorch.log_model(torch.nn.Linear(1, 1), name="item2vec", pip_requirements=[],
                                                   serialization_format="pickle",
                                                   registered_model_name="item2vec").registered_model_version)
    marker = tmp_path / "ran-code-from-the-store"
    weights = [p for p in _version_files(store, "item2vec", version).rglob("*")
               if p.suffix in (".safetensors", ".pth", ".pt", ".pkl")]
    assert weights
    for path in weights:
        torch.save(_WritesMarker(marker), path)

    with pytest.raises(StoredModelError, match=f"item2vec version {version}: .*refused"):
        load_version(store, "item2vec", version)
    assert not marker.exists()


def test_a_model_spec_naming_a_class_outside_the_allow_list_is_refused(store, tmp_path):
    from recsys_assets.models.registry import load_version
    from recsys_assets.models.weights import StoredModelError

    version = _register(store, "item2vec", *_small_models()["item2vec"])
    spec = _version_files(store, "item2vec", version) / "model.json"
    spec.write_text(json.dumps({"class": "Popen", "kwargs": {"args": ["touch", str(tmp_path / "ran")]}}))
    with pytest.raises(StoredModelError, match="'Popen', not one of"):
        load_version(store, "item2vec", version)
    assert not (tmp_path / "ran").exists()

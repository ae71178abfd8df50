"""MLflow: logging a torch model as a registered version, and the `champion` alias (the store and its
experiment: `mlflow_store.py`).

A version's files are weights plus code (`weights.py`: the class and its init kwargs, a state_dict in
safetensors; never a pickle), with a signature and an input example: one packed float32 matrix in (see
`features.Layout`); the vocabularies and layouts they need travel as artifacts beside them.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from recsys_assets.models import weights
from recsys_assets.models.fusion import Fusion
from recsys_assets.models.mlflow_store import MlflowStore
from recsys_assets.models.promotion import MODEL_NAMES  # noqa: F401  (re-exported)

CHAMPION = "champion"
ITEM_VECTORS = "item_vectors.npy"  # two_tower: one row per entry of items.json, for the ANN index
FIT_ONLY_STATE = "fit_only_state.pt"  # a refreshed model's weights before the refresh: what validation judged


def log_model(name: str, model: torch.nn.Module, example: np.ndarray, artifacts: dict[str, object]) -> str:
    """Log `model` in the active run and register it as a new version of `name`; returns the version."""
    model.eval()
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    with tempfile.TemporaryDirectory() as folder:
        for file_name, content in artifacts.items():
            path = Path(folder) / file_name
            if isinstance(content, np.ndarray):
                np.save(path, content)
            else:
                path.write_text(json.dumps(content))
            mlflow.log_artifact(str(path), artifact_path=extras_dir(name))
    # Weights plus code, not a pickle (loading one runs whatever it holds) nor MLflow 3's torch.export graph
    # (evaluation and serving call the towers' own methods, user_vectors and item_vectors, which a traced
    # forward() would drop). No pyfunc flavor: the serving-input check would only warn that it cannot load.
    info = Model.log(None, flavor=weights, flavor_name=weights.FLAVOR, name=name, model=model,
                     signature=infer_signature(example, output), input_example=example[:3],
                     registered_model_name=name, validate_serving_input=False)
    return str(info.registered_model_version)


def extras_dir(name: str) -> str:
    return f"{name}_extras"


def fit_only_dir(name: str) -> str:
    return f"{name}_fit_only"


def log_fit_only_state(name: str, model: torch.nn.Module) -> None:
    """Keep, in the active run, the weights as they were before the refresh (beside, not in, the extras that
    serving downloads)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / FIT_ONLY_STATE
        torch.save(model.state_dict(), path)
        mlflow.log_artifact(str(path), artifact_path=fit_only_dir(name))


def fit_only(store: MlflowStore, name: str, version: str, model: torch.nn.Module) -> torch.nn.Module:
    """The registered `model` (version `version` of `name`) with the weights validation judged: those before
    the refresh when it was refreshed, else the model itself."""
    client = store.client()
    run_id = client.get_model_version(name, str(version)).run_id
    if not any(a.path.endswith(FIT_ONLY_STATE) for a in client.list_artifacts(run_id, fit_only_dir(name))):
        return model
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=fit_only_dir(name),
                                                      tracking_uri=store.tracking_uri))
    judged = copy.deepcopy(model)
    judged.load_state_dict(torch.load(folder / FIT_ONLY_STATE, weights_only=True))
    return judged.eval()


def load_extras(store: MlflowStore, name: str, version: str) -> Path:
    """The local folder of the artifacts logged beside a registered version (vocabularies, vectors)."""
    run_id = store.client().get_model_version(name, str(version)).run_id
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=extras_dir(name),
                                                    tracking_uri=store.tracking_uri))


def load_model(store: MlflowStore, name: str, version: str) -> torch.nn.Module:
    """A registered version's model, built from its class and weights (`weights.load`: nothing unpickled);
    `weights.StoredModelError` when its files are anything else."""
    # Set globally: download_artifacts resolves models:/ with the global registry, whatever URIs it is given.
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}"))
    try:
        return weights.load(folder)
    except weights.StoredModelError as exc:
        raise weights.StoredModelError(f"{name} version {version}: {exc}") from None


def load_version(store: MlflowStore, name: str, version: str) -> tuple[torch.nn.Module, Path]:
    """A registered version's model and its artifacts folder."""
    return load_model(store, name, version), load_extras(store, name, version)


def not_found(exc: BaseException) -> bool:
    """MLflow says the thing asked for does not exist (as opposed to: it could not answer)."""
    return isinstance(exc, MlflowException) and exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def champion(client: MlflowClient, name: str):
    """The version behind the champion alias, or None when the model or its alias does not exist. Any other
    error (MLflow unreachable, a 5xx, an unreadable store) raises: an outage is not "no champion", which would
    move every replica to popularity."""
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if not_found(exc):
            return None
        raise
    # Read from the model's aliases: a missing alias is no error to tell apart from a failure.
    version = registered.aliases.get(CHAMPION)
    return None if version is None else client.get_model_version(name, version)


def champion_versions(client: MlflowClient) -> dict[str, str | None]:
    """The champion version (as a string, like the versions the pipeline records) of each served model."""
    return {name: str(found.version) if (found := champion(client, name)) else None for name in MODEL_NAMES}


def set_champion(client: MlflowClient, name: str, version: str) -> None:
    client.set_registered_model_alias(name, CHAMPION, version)


def retire_champion(client: MlflowClient, name: str, day: str) -> None:
    """No champion for `name` (its version keeps a `retired_on` tag; `recsys promote` brings it back)."""
    found = champion(client, name)
    if found is not None:
        client.set_model_version_tag(name, found.version, "retired_on", day)
        client.delete_registered_model_alias(name, CHAMPION)


def ranker_fusion(client: MlflowClient, ranker_version: str) -> Fusion:
    """How the rerank fuses its scores for this ranker version, as `model_evaluation` chose it on validation
    (tags `fusion_*` on the version)."""
    return Fusion.from_tags(client.get_model_version("ranker", ranker_version).tags)


def tag_fusion(client: MlflowClient, ranker_version: str, fusion: Fusion) -> None:
    for key, value in fusion.tags().items():
        client.set_model_version_tag("ranker", ranker_version, key, value)


I2I_WEIGHT_TAG = "i2i_popularity_weight"


def i2i_weight(client: MlflowClient, item2vec_version: str) -> float:
    """The popularity weight of this item2vec version's last-item i2i (`item2vec.I2I_POPULARITY_WEIGHTS`), as
    `model_evaluation` chose it on validation; 0 (cosine alone) for a version tagged before the weight."""
    return float(client.get_model_version("item2vec", item2vec_version).tags.get(I2I_WEIGHT_TAG, 0.0))


def tag_i2i_weight(client: MlflowClient, item2vec_version: str, weight: float) -> None:
    client.set_model_version_tag("item2vec", item2vec_version, I2I_WEIGHT_TAG, str(weight))

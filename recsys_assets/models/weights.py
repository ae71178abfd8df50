"""Models stored as weights plus code, never as pickles.

A registered version's files are `model.json` (the class, one of `MODEL_CLASSES`, and the JSON keyword
arguments that build it: `init_kwargs`) and `model.safetensors` (its state_dict). Loading builds that class
from our code and loads the tensors into it: nothing in the store is unpickled, so whoever can write the
store cannot run code in training, evaluation or serving by it. Anything else is refused
(`StoredModelError`), a pickled model from before this format included.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from mlflow.models import Model
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.models.utils import _save_example
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from recsys_assets.models.item2vec import Item2VecModel
from recsys_assets.models.ranker import Ranker
from recsys_assets.models.two_tower import TwoTower

FLAVOR = "recsys_weights"
SPEC_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
# The only classes a stored model may name: each builds itself from `init_kwargs` (`from_init_kwargs`).
MODEL_CLASSES: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (Item2VecModel, TwoTower, Ranker)}


class StoredModelError(ValueError):
    """A model's files are not weights plus code of one of our classes: refused, nothing in them was run."""


def save(model: nn.Module, folder: Path) -> None:
    """`model`'s class and init kwargs to `model.json`, its state_dict to `model.safetensors`."""
    name = type(model).__name__
    if MODEL_CLASSES.get(name) is not type(model):
        raise StoredModelError(f"{name} is not one of the stored model classes {sorted(MODEL_CLASSES)}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(json.dumps({"class": name, "kwargs": model.init_kwargs()}))
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)


def load(folder: Path) -> nn.Module:
    """The model saved by `save` in `folder`, in eval mode; `StoredModelError` for anything else."""
    spec_path, weights_path = folder / SPEC_FILE, folder / WEIGHTS_FILE
    if not (spec_path.is_file() and weights_path.is_file()):
        raise StoredModelError(f"no {SPEC_FILE} + {WEIGHTS_FILE} (found {sorted(p.name for p in folder.rglob('*'))}): "
                               "not a model stored as weights plus code, e.g. a pickled one; refused unread")
    try:
        spec = json.loads(spec_path.read_text())
        cls = MODEL_CLASSES.get(spec.get("class"))
    except (ValueError, AttributeError, TypeError) as exc:  # not JSON, not an object, an unhashable class
        raise StoredModelError(f"{SPEC_FILE} is not a model spec: {exc}") from None
    if cls is None:
        raise StoredModelError(f"{SPEC_FILE} names class {spec.get('class')!r}, not one of {sorted(MODEL_CLASSES)}")
    try:
        state = load_file(weights_path)
    except (SafetensorError, ValueError, OSError) as exc:
        raise StoredModelError(f"{WEIGHTS_FILE} is not a safetensors file ({exc}); refused unread") from None
    try:
        model = cls.from_init_kwargs(spec["kwargs"])
        # assign: the stored tensors themselves (their dtype), each parameter keeping its requires_grad
        model.load_state_dict(state, assign=True)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise StoredModelError(f"the weights do not fit {cls.__name__}({spec.get('kwargs')}): {exc}") from None
    return model.eval()


def save_model(path: str, mlflow_model: Model, model: nn.Module, signature=None, input_example=None, **_) -> None:
    """The flavor hook `mlflow.models.Model.log` calls: the model's files plus MLmodel, with the signature and
    input example (what MLflow's UI shows)."""
    folder = Path(path)
    save(model, folder)
    mlflow_model.signature = signature
    if input_example is not None:
        _save_example(mlflow_model, input_example, str(folder))
    mlflow_model.add_flavor(FLAVOR, model_class=type(model).__name__, spec=SPEC_FILE, weights=WEIGHTS_FILE,
                            torch_version=str(torch.__version__))
    mlflow_model.save(str(folder / MLMODEL_FILE_NAME))

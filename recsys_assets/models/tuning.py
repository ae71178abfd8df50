"""Hyper-parameter search for the two-tower retriever through Ray Tune, judged on the validation period and
bounded in time.

Each trial trains a two-tower on the fit period with its values and scores it on the validation period
(Recall@50: what a retriever is for is getting the right items into the candidates the rerank orders).
Locally Ray starts a cluster of this machine's CPUs (one trial per CPU); under gcp `RAY_ADDRESS` names the
KubeRay cluster and the trials spread over it. The best values are saved (`save_best`) and the daily
`two_tower` training uses them (`load_best`) until the next search.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from recsys_assets.models.dataset import TrainingData, model_sizes, two_tower_inputs
from recsys_assets.models.evaluation import EvaluationConfig, Models, evaluate
from recsys_assets.models.features import Catalogue
from recsys_assets.models.training import TrainConfig, fit, storage_uri
from recsys_assets.models.two_tower import TwoTower, TwoTowerConfig, in_batch_softmax_loss

OBJECTIVE = "recall@50"
BEST_FILE = "two_tower.json"
VALUES = ("temperature", "id_dim", "user_id", "logq_weight", "epochs", "lr")  # what the search chooses


@dataclass(frozen=True)
class TuningConfig:
    trials: int = 8
    time_budget_s: float = 900.0  # the whole search stops there, whatever is left
    epochs: tuple[int, ...] = (4, 6, 10)
    temperatures: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    id_dims: tuple[int, ...] = (32, 64, 128)
    user_ids: tuple[bool, ...] = (True, False)  # with or without the user's own embedding
    logq_weights: tuple[float, ...] = (1.0, 2.0, 3.0)
    lr_range: tuple[float, float] = (1e-3, 1e-2)
    eval_max_users: int = 2000
    batch_size: int = 1024
    seed: int = 0


def _space(cfg: TuningConfig) -> dict:
    from ray import tune

    return {"temperature": tune.choice(list(cfg.temperatures)), "id_dim": tune.choice(list(cfg.id_dims)),
            "user_id": tune.choice(list(cfg.user_ids)), "logq_weight": tune.choice(list(cfg.logq_weights)),
            "epochs": tune.choice(list(cfg.epochs)),
            "lr": tune.loguniform(*cfg.lr_range)}


def train_and_score(values: dict, data: TrainingData, catalogue: Catalogue, cfg: TuningConfig) -> dict:
    """One trial: a two-tower with `values`, trained on the fit period, scored on the validation period."""
    model_cfg = replace(TwoTowerConfig(), temperature=values["temperature"], id_dim=values["id_dim"],
                        user_id=values["user_id"], logq_weight=values["logq_weight"])
    sizes = model_sizes(data, catalogue)
    started = time.perf_counter()
    model, _ = fit(lambda: TwoTower(**sizes, cfg=model_cfg),
                   two_tower_inputs(data, catalogue, batch_size=cfg.batch_size, seed=cfg.seed), in_batch_softmax_loss,
                   TrainConfig(epochs=values["epochs"], batch_size=cfg.batch_size, lr=values["lr"], seed=cfg.seed,
                               shuffle="batches"))
    report = evaluate(data, catalogue, Models(two_tower=model),
                      EvaluationConfig(max_users=cfg.eval_max_users, seed=cfg.seed), holdout=False)
    metrics = report["validation"]["models"]["two_tower"]
    return {**metrics, "train_seconds": time.perf_counter() - started}


def choose_first_values(data: TrainingData, catalogue: Catalogue, epochs: int, lr: float, cfg: TuningConfig) -> dict:
    """Before any search, what differs most between data sets, each trained on the fit period and judged on
    validation (`train_and_score`), the rest at its defaults: the user id, with and without the user's own
    embedding (on MovieLens-100k it memorises; on the generated sets it helps); then, with the better, the
    logQ weight's neighbours (`TwoTowerConfig.logq_weight`: MovieLens wants a strong popularity prior, the
    default data a weak one). The result in `search`'s format."""
    defaults = TwoTowerConfig()
    trials = []

    def judge(values: dict) -> None:
        metrics = train_and_score(values, data, catalogue, cfg)
        trials.append({**values, **{k: metrics[k] for k in (OBJECTIVE, "ndcg@10", "train_seconds")}})

    for user_id in (True, False):
        judge({"temperature": defaults.temperature, "id_dim": defaults.id_dim, "user_id": user_id,
               "logq_weight": defaults.logq_weight, "epochs": epochs, "lr": lr})
    best = max(trials, key=lambda t: (t[OBJECTIVE], t["user_id"]))  # a tie keeps the id
    for weight in (defaults.logq_weight - 1, defaults.logq_weight + 1):
        judge({**{k: best[k] for k in VALUES}, "logq_weight": weight})
    best = max(trials, key=lambda t: t[OBJECTIVE])  # a tie keeps the earlier trial
    return {"best": {k: best[k] for k in VALUES}, OBJECTIVE: best[OBJECTIVE], "trials": trials,
            "config": {"searched": "user_id, then logq_weight; the default values otherwise", **asdict(cfg)}}


def _trial(values: dict, data: TrainingData, catalogue: Catalogue, cfg: TuningConfig) -> None:
    import torch
    from ray import tune

    torch.set_num_threads(1)  # one CPU per trial: trials run side by side
    tune.report(train_and_score(values, data, catalogue, cfg))


def search(data: TrainingData, catalogue: Catalogue, cfg: TuningConfig, storage: str | Path) -> dict:
    """Run the search; the best values, the objective they reached and every finished trial. `storage`: a
    folder, or a URI every trial's pod reaches on a cluster (gs://...); each search gets a folder there."""
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    started_here = not ray.is_initialized()
    if started_here:
        if os.environ.get("RAY_ADDRESS"):  # a running cluster (KubeRay under gcp): its CPUs run the trials
            ray.init(log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     log_to_driver=False)  # a cluster of its own, as training's (models/training.py)
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trial, data=data, catalogue=catalogue, cfg=cfg), {"cpu": 1}),
            param_space=_space(cfg),
            tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="max", num_samples=cfg.trials,
                                        time_budget_s=cfg.time_budget_s,
                                        search_alg=BasicVariantGenerator(random_state=cfg.seed)),
            run_config=tune.RunConfig(storage_path=storage_uri(storage), name=f"two_tower-{uuid.uuid4().hex[:12]}"),
        )
        results = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    trials = [{**{k: r.config[k] for k in VALUES},
               **{k: r.metrics[k] for k in (OBJECTIVE, "ndcg@10", "train_seconds")}}
              for r in results if r.metrics and OBJECTIVE in r.metrics]
    if not trials:
        raise RuntimeError(f"no trial finished within {cfg.time_budget_s} s: raise the time budget")
    best = max(trials, key=lambda t: t[OBJECTIVE])
    return {"best": {k: best[k] for k in VALUES}, OBJECTIVE: best[OBJECTIVE],
            "trials": trials, "config": asdict(cfg)}


def save_best(folder: Path, day: str, result: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / BEST_FILE
    aside = folder / f".{BEST_FILE}.tmp"
    aside.write_text(json.dumps({"day": day, **result}, indent=2) + "\n")
    aside.replace(path)
    return path


def load_best(folder: Path) -> dict | None:
    """The last search's best values, or None when none ran."""
    path = folder / BEST_FILE
    return json.loads(path.read_text()) if path.exists() else None

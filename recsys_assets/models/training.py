"""One training loop for every torch model, run in-process or as a Ray Train `TorchTrainer` job.

Data is a dict of equal-length numpy arrays; a loss function maps (model, batch of tensors) to a scalar.
Under Ray, each of N workers (DDP over gloo on CPUs, nccl on GPUs) trains on its shard of the rows with the
same loop, and rank 0's weights come back. Locally Ray starts its own cluster; under gcp `RAY_ADDRESS` points at
KubeRay.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

LossFn = Callable[[nn.Module, dict], torch.Tensor]
Validate = Callable[[nn.Module], float]  # a model's score on the validation period (higher is better)
EXECUTORS = ("in_process", "ray")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 1024
    lr: float = 0.003
    weight_decay: float = 0.0
    seed: int = 0
    # "rows": every epoch shuffles the rows. "batches": the rows come arranged in batches (each `batch_size`
    # consecutive rows one, e.g. time-local: `ranker.listwise_batches`); every epoch shuffles their order only.
    shuffle: str = "rows"
    # Where a validation score is given, every epoch is scored; with `patience` > 0 `epochs` is the most:
    # training stops once `patience` epochs in a row have not raised the score, and keeps the best epoch's
    # weights (0: every epoch runs and the last weights are kept).
    patience: int = 0


@dataclass
class TrainHistory:
    epoch_losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    samples: int = 0
    workers: int = 1
    validation_scores: list[float] = field(default_factory=list)  # per epoch, where a validation score was given
    best_epoch: int | None = None  # the best-scored epoch (0-based), whose weights are kept when patience > 0

    @property
    def samples_per_second(self) -> float:
        total = sum(self.epoch_seconds)
        return self.samples * len(self.epoch_seconds) / total if total else 0.0


def _batch(data: dict[str, np.ndarray], rows: np.ndarray, device: torch.device | None = None
           ) -> dict[str, torch.Tensor]:
    batch = {k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in data.items()}
    return batch if device is None or device.type == "cpu" else {k: v.to(device) for k, v in batch.items()}


def train_loop(model: nn.Module, data: dict[str, np.ndarray], loss_fn: LossFn, cfg: TrainConfig,
               on_epoch: Callable[[int, dict], None] | None = None, validate: Validate | None = None,
               device: torch.device | None = None) -> TrainHistory:
    """Shuffled mini-batches for `cfg.epochs`, Adam; the same code in-process and in each Ray worker. With
    `validate` (the model -> its score on the validation period, higher is better), each epoch is scored, and
    stopped early with `TrainConfig.patience`. `device`: where the model lies (a Ray GPU worker's); batches
    are moved there."""
    if cfg.shuffle not in ("rows", "batches"):
        raise ValueError(f"shuffle must be 'rows' or 'batches', got {cfg.shuffle!r}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n = len(next(iter(data.values())))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = TrainHistory(samples=n)
    for epoch in range(cfg.epochs):
        model.train()
        started = time.perf_counter()
        if cfg.shuffle == "rows":
            order = rng.permutation(n)
            batches = (order[start:start + cfg.batch_size] for start in range(0, n, cfg.batch_size))
        else:
            batches = (np.arange(start, min(start + cfg.batch_size, n))
                       for start in rng.permutation(np.arange(0, n, cfg.batch_size)))
        total, batches_done = 0.0, 0
        for rows in batches:
            if len(rows) < 2:
                continue
            loss = loss_fn(model, _batch(data, rows, device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches_done = total + loss.item(), batches_done + 1
        history.epoch_losses.append(total / max(batches_done, 1))
        history.epoch_seconds.append(time.perf_counter() - started)
        metrics = {"loss": history.epoch_losses[-1]}
        if validate is not None:
            scores = history.validation_scores
            scores.append(float(validate(model)))
            metrics["validation_score"] = scores[-1]
            if history.best_epoch is None or scores[-1] > scores[history.best_epoch]:
                history.best_epoch = epoch
                best_state = copy.deepcopy(model.state_dict()) if cfg.patience > 0 else None
        if on_epoch:
            on_epoch(epoch, {**metrics, "epoch_seconds": history.epoch_seconds[-1]})
        if cfg.patience > 0 and validate is not None and epoch - history.best_epoch >= cfg.patience:
            break
    if cfg.patience > 0 and validate is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _ray_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # DDP (gloo on CPUs, nccl on GPUs), the model on the worker's device
    model = ray.train.torch.prepare_model(config["build"]())
    device = ray.train.torch.get_device()
    validate = config["validate"]
    if validate is not None and device.type != "cpu":  # validation scores numpy/CPU tensors: a CPU copy is judged
        validate = (lambda judge: lambda m: judge(copy.deepcopy(m.module).cpu().eval()))(validate)
    # Every world-th row: arranged batches stay batches of neighbouring rows (time-local ones stay local).
    shard = {k: v[rank::world] for k, v in config["data"].items()}
    cfg = TrainConfig(**{**config["cfg"], "seed": config["cfg"]["seed"] + rank})
    # Every worker judges the whole validation period with the same (synchronised) weights: they stop together.
    history = train_loop(model, shard, config["loss_fn"], cfg,
                         on_epoch=lambda epoch, metrics: ray.train.report({"epoch": epoch, **metrics}),
                         validate=validate, device=device)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            state = {k: v.cpu() for k, v in model.module.state_dict().items()}
            # Tensors only (read back with weights_only=True: a checkpoint is never unpickled), the history as JSON
            torch.save(state, Path(folder) / "model.pt")
            (Path(folder) / "history.json").write_text(json.dumps(asdict(history), default=lambda v: v.item()))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({"done": 1}, checkpoint=checkpoint)


def train_with_ray(build: Callable[[], nn.Module], data: dict[str, np.ndarray], loss_fn: LossFn, cfg: TrainConfig,
                   workers: int, storage: str, validate: Validate | None = None, use_gpu: bool = False
                   ) -> tuple[nn.Module, TrainHistory]:
    """The same loop as a Ray Train TorchTrainer with `workers` workers (one GPU each with `use_gpu`); returns
    rank 0's model. `storage`: a folder, or a URI every worker reaches (e.g. gs://...) on a cluster of pods,
    where Ray Train keeps the run's checkpoints; each run gets a folder of its own there."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    started_here = not ray.is_initialized()
    if started_here:
        if os.environ.get("RAY_ADDRESS"):  # a running cluster (KubeRay under gcp): join it
            ray.init(log_to_driver=False)
        else:  # a local cluster just big enough for the workers
            # "local": never the latest cluster on the machine (a running `recsys serve`'s), which Ray
            # would join without an address.
            ray.init(address="local", num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False)
    try:
        trainer = TorchTrainer(
            _ray_worker,
            train_loop_config={"build": build, "data": data, "loss_fn": loss_fn, "cfg": asdict(cfg),
                               "validate": validate},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(storage_path=storage_uri(storage), name=f"train-{uuid.uuid4().hex[:12]}"),
        )
        result = trainer.fit()
        with result.checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "model.pt", weights_only=True)
            history = TrainHistory(**json.loads((Path(folder) / "history.json").read_text()))
    finally:
        if started_here:
            ray.shutdown()
    model = build()
    model.load_state_dict(state)
    model.eval()
    history.samples, history.workers = len(next(iter(data.values()))), workers
    return model, history


def storage_uri(storage: str | Path) -> str:
    """Ray's storage_path: a URI as given (gs://, s3://), a local folder made absolute."""
    return str(storage) if "://" in str(storage) else str(Path(storage).resolve())


def fit(build: Callable[[], nn.Module], data: dict[str, np.ndarray], loss_fn: LossFn, cfg: TrainConfig,
        executor: str = "in_process", workers: int = 2, storage: str | None = None,
        on_epoch: Callable[[int, dict], None] | None = None, validate: Validate | None = None,
        use_gpu: bool = False) -> tuple[nn.Module, TrainHistory]:
    """Train a fresh `build()` model in-process or through Ray Train (the setting `executor` picks); with
    `validate`, each epoch scored on validation and, with `cfg.patience`, stopped early (`train_loop`)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if executor == "ray":
        model, history = train_with_ray(build, data, loss_fn, cfg, workers,
                                        storage or tempfile.mkdtemp(prefix="ray-train-"), validate, use_gpu)
        if on_epoch:
            for epoch, (loss, seconds) in enumerate(zip(history.epoch_losses, history.epoch_seconds)):
                judged = {"validation_score": history.validation_scores[epoch]} if history.validation_scores else {}
                on_epoch(epoch, {"loss": loss, **judged, "epoch_seconds": seconds})
        return model, history
    model = build()
    return model, train_loop(model, data, loss_fn, cfg, on_epoch, validate)

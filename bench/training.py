"""Training benchmark: two-tower samples/s with torchrec's EmbeddingBagCollection against the same towers on
plain torch.nn.EmbeddingBag (same data, same loop, same process), and epoch times of every model.
Writes bench/results/training.json and prints the ratio.

    python bench/training.py [--reviews 150000 --days 30 --epochs 2]
"""

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from common import run_range, write_generated, write_result

from recsys_assets.data.generator import GeneratorConfig
from recsys_assets.data.schema import ITEMS_FILE
from recsys_assets.defs.feature_store.assets import online_features
from recsys_assets.defs.features.assets import dbt_features
from recsys_assets.defs.ingest.assets import raw_reviews
from recsys_assets.feature_store.repository import FeatureRepository, FeatureStoreConfig
from recsys_assets.feature_store.retrieval import point_in_time_features
from recsys_assets.models.data import ITEM, TIME, USER, popularity
from recsys_assets.models.dataset import build_training_data, ranker_inputs, two_tower_inputs
from recsys_assets.models.features import USER_DENSE_WIDTH, Catalogue
from recsys_assets.models.item2vec import Item2VecConfig, train_item2vec
from recsys_assets.models.ranker import Ranker, ranker_loss
from recsys_assets.models.training import TrainConfig, fit
from recsys_assets.models.two_tower import TwoTower, TwoTowerConfig, in_batch_softmax_loss
from recsys_assets.warehouse.stores import DuckDBWarehouse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=150_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=3_000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = GeneratorConfig(users=args.users, items=args.items, days=args.days, reviews=args.reviews, seed=1)
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    try:
        reviews, first, last = write_generated(work / "landing", cfg)
        run_range(work, [raw_reviews, dbt_features, online_features], first, last)
        repo = FeatureRepository(FeatureStoreConfig.local(work / "feast"))
        warehouse = DuckDBWarehouse(work / "warehouse.duckdb")
        events = warehouse.read_reviews(None, last).to_pandas()
        started = time.perf_counter()
        data = build_training_data(events, lambda rows: point_in_time_features(repo.store, rows))
        dataset_s = time.perf_counter() - started
        catalogue = Catalogue.build(data.items, pd.read_parquet(work / "landing" / ITEMS_FILE), None)
    finally:
        shutil.rmtree(work)

    train_cfg = TrainConfig(epochs=args.epochs, batch_size=1024, lr=0.003)
    epochs: dict[str, list[float]] = {}
    samples_per_s: dict[str, float] = {}

    items = data.items
    sequences = [items.index(g[ITEM].to_numpy()) for _, g in data.train.sort_values([TIME, ITEM]).groupby(USER)]
    item2vec = train_item2vec(sequences, len(items), Item2VecConfig(epochs=args.epochs))
    epochs["item2vec"] = item2vec.epoch_seconds
    samples_per_s["item2vec_pairs"] = item2vec.pairs * args.epochs / sum(item2vec.epoch_seconds)

    inputs = two_tower_inputs(data, catalogue)
    for backend in ("torchrec", "torch"):
        build = lambda: TwoTower(len(data.users), len(items), len(catalogue.categories), USER_DENSE_WIDTH,  # noqa: E731
                                 catalogue.item_dense_width, TwoTowerConfig(backend=backend))
        _, history = fit(build, inputs, in_batch_softmax_loss, replace(train_cfg, shuffle="batches"))
        epochs[f"two_tower_{backend}"] = history.epoch_seconds
        samples_per_s[f"two_tower_{backend}"] = history.samples_per_second

    frame = data.ranker_train
    _, history = fit(lambda: Ranker(len(data.users), len(items), len(catalogue.categories), USER_DENSE_WIDTH,
                                    catalogue.item_dense_width, item_init=item2vec.embeddings,
                                    negative_sampling_counts=popularity(data.fit, items)),
                     ranker_inputs(frame, data.users, catalogue), ranker_loss,
                     replace(train_cfg, batch_size=256, shuffle="batches"))
    epochs["ranker"] = history.epoch_seconds
    samples_per_s["ranker"] = history.samples_per_second

    ratio = samples_per_s["two_tower_torchrec"] / samples_per_s["two_tower_torch"]
    result = {
        "reviews": reviews, "train_events": len(data.train), "ranker_rows": len(frame),
        "users": len(data.users) - 1, "items": len(items) - 1, "epochs": args.epochs,
        "training_dataset_seconds": round(dataset_s, 2),
        "epoch_seconds": {k: [round(s, 2) for s in v] for k, v in epochs.items()},
        "samples_per_second": {k: round(v) for k, v in samples_per_s.items()},
        "two_tower_torchrec_over_torch": round(ratio, 3),
        "cpus": os.cpu_count(),
    }
    write_result("training", result)
    print(f"\ntwo-tower: torchrec EmbeddingBagCollection {samples_per_s['two_tower_torchrec']:,.0f} samples/s vs "
          f"nn.EmbeddingBag {samples_per_s['two_tower_torch']:,.0f} samples/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()

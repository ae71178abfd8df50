"""Registered models with what it takes to run them outside training: loaded from the MLflow registry with
the artifacts logged beside each version (vocabularies, catalogue arrays, the two-tower's item vectors).
Used by the serving app and by the candidate assets."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recsys_assets.models.data import TIME, Vocabulary
from recsys_assets.models.dataset import pack_ranker, pack_ranker_for_user, pack_users
from recsys_assets.models.features import Catalogue
from recsys_assets.models.fusion import Fusion
from recsys_assets.models.ranker import score
from recsys_assets.models.registry import ITEM_VECTORS, MlflowStore, fit_only, i2i_weight, load_version, ranker_fusion
from recsys_assets.models.two_tower import encode


@dataclass
class Retriever:
    version: str
    model: torch.nn.Module
    users: Vocabulary
    catalogue: Catalogue
    item_vectors: np.ndarray  # row r = catalogue.items.ids[r]
    position: dict[str, int]

    @classmethod
    def load(cls, store: MlflowStore, version: str) -> Retriever:
        model, folder = load_version(store, "two_tower", version)
        catalogue = Catalogue.from_artifacts(folder)
        return cls(version, model, Vocabulary(json.loads((folder / "users.json").read_text())), catalogue,
                   np.load(folder / ITEM_VECTORS), {item: r for r, item in enumerate(catalogue.items.ids)})

    @torch.inference_mode()
    def user_vectors(self, users: pd.DataFrame, now_ms: np.ndarray) -> np.ndarray:
        """Query vectors for user rows (user_id + user features as of now_ms)."""
        x = pack_users(users, self.users, self.catalogue.items, np.asarray(now_ms, dtype=np.int64))
        return encode(self.model.user_vectors, x)

    def logits(self, user_vector: np.ndarray, items: list[str]) -> np.ndarray:
        """The retriever's log p(item | user) estimate (cosine / temperature); -inf for items it never saw."""
        rows = np.array([self.position.get(i, -1) for i in items])
        known = rows >= 0
        out = np.full(len(items), -np.inf, dtype=np.float32)
        out[known] = self.item_vectors[rows[known]] @ user_vector / self.model.cfg.temperature
        return out


@dataclass
class Ranker:
    version: str
    model: torch.nn.Module
    users: Vocabulary
    catalogue: Catalogue
    fusion: Fusion  # how the rerank fuses the experts' scores, chosen on validation

    @classmethod
    def load(cls, store: MlflowStore, version: str) -> Ranker:
        model, folder = load_version(store, "ranker", version)
        return cls(version, model, Vocabulary(json.loads((folder / "users.json").read_text())),
                   Catalogue.from_artifacts(folder), ranker_fusion(store.client(), version))

    @torch.inference_mode()
    def probabilities(self, pairs: pd.DataFrame) -> np.ndarray:
        """The probability of each (user, item) row of a training data frame (e.g. a day's held-out pairs, with
        their features as of each row's time), under this version's own vocabularies: how two versions are
        compared on one sample."""
        return score(self.model, pack_ranker(pairs, self.users, self.catalogue, pairs[TIME].to_numpy()))

    @torch.inference_mode()
    def score(self, user: pd.DataFrame, items: list[str], item_stats: pd.DataFrame | dict, now_ms: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """(probability, ranking score) of each candidate for one user (a one-row frame of user_id + user
        features), all candidates in one forward pass."""
        return self.score_many([(user, items, item_stats, now_ms)])[0]

    @torch.inference_mode()
    def score_many(self, queries: list[tuple[pd.DataFrame, list[str], pd.DataFrame | dict, int]]
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`score` for several users' (user, items, item_stats, now_ms) in one forward pass (the GRU runs
        once per distinct history)."""
        x = np.concatenate([pack_ranker_for_user(user, items, stats, self.users, self.catalogue, now_ms)
                            for user, items, stats, now_ms in queries])
        probability, ranking = (t.numpy() for t in self.model.probability_and_ranking(torch.from_numpy(x)))
        ends = np.cumsum([len(items) for _, items, _, _ in queries])[:-1]
        return list(zip(np.split(probability, ends), np.split(ranking, ends)))


def load_pipeline(store: MlflowStore, versions: dict[str, str], weights: str = "served"):
    """Registered item2vec, two_tower and ranker versions as `evaluation.Models` with the vocabularies they
    were trained with; None when they were not trained together (a hand-promoted mix of days has no one
    vocabulary to evaluate them under). `weights="fit_only"`: the weights before their refresh on their
    validation period (how a champion is judged on a later validation period it was not refreshed on)."""
    if weights not in ("served", "fit_only"):
        raise ValueError(f"weights must be 'served' or 'fit_only', got {weights!r}")
    from recsys_assets.models.evaluation import Models

    retriever, ranker = Retriever.load(store, versions["two_tower"]), Ranker.load(store, versions["ranker"])
    item2vec, folder = load_version(store, "item2vec", versions["item2vec"])
    item2vec_items = json.loads((folder / "items.json").read_text())
    if not (retriever.catalogue.items.ids == ranker.catalogue.items.ids == item2vec_items
            and retriever.users.ids == ranker.users.ids):
        return None
    models = {"item2vec": item2vec, "two_tower": retriever.model, "ranker": ranker.model}
    if weights == "fit_only":
        models = {name: fit_only(store, name, versions[name], model) for name, model in models.items()}
    return Models(item2vec=models["item2vec"].embeddings.weight.detach().numpy(), two_tower=models["two_tower"],
                  ranker=models["ranker"], users=retriever.users, catalogue=retriever.catalogue, fusion=ranker.fusion,
                  i2i_popularity_weight=i2i_weight(store.client(), versions["item2vec"]))

"""Offline evaluation on the temporal holdout, every model beside the baselines (popularity, EASE, item-kNN:
`baselines.py`), one protocol (`metrics.py`).

Users are evaluated as of the split boundary: their features, last item and history are what was known
when the holdout began. Rerank = the two-tower's top `rerank_depth` candidates re-ordered by the ranker fused with the retriever's
score (`ranker.rerank_scores`), exactly as served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recsys_assets.models.baselines import BaselineConfig, evaluate_baselines
from recsys_assets.models.data import ITEM, TIME, USER, Vocabulary, popularity
from recsys_assets.models.dataset import TrainingData, pack_items, pack_ranker, pack_users
from recsys_assets.models.features import Catalogue
from recsys_assets.models.metrics import classification_report, ranking_report, top_k
from recsys_assets.models.ranker import rerank_scores, score
from recsys_assets.models.two_tower import encode

K_MAX = 50


@dataclass(frozen=True)
class EvaluationConfig:
    max_users: int = 5000  # a fixed sample of holdout users keeps evaluation time bounded
    rerank_depth: int = 100
    retrieval_weight: float = 0.5  # the retriever's share of the rerank score (`ranker.rerank_scores`)
    seed: int = 0


@dataclass
class Models:
    item2vec: np.ndarray | None = None  # item embeddings by the models' item index
    two_tower: torch.nn.Module | None = None
    ranker: torch.nn.Module | None = None
    # The vocabularies the models were trained with; None: the evaluated data's own (the day's models). An
    # older champion keeps its own, so it is judged on the same split as the day's candidate: items it never
    # saw it cannot recommend, users it never saw it meets as unknown.
    users: Vocabulary | None = None
    catalogue: Catalogue | None = None


def _users_to_evaluate(data: TrainingData, cfg: EvaluationConfig) -> list[str]:
    users = sorted(set(data.holdout[USER]))
    if len(users) > cfg.max_users:
        users = sorted(np.random.default_rng(cfg.seed).choice(users, cfg.max_users, replace=False).tolist())
    return users


def _in_evaluated_items(model_scores: np.ndarray, to_model: np.ndarray) -> np.ndarray:
    """Scores over the models' items -> over the evaluated items (-inf where the models lack the item)."""
    scores = model_scores[:, to_model]
    scores[:, to_model == 0] = -np.inf
    return scores


def evaluate(data: TrainingData, catalogue: Catalogue, models: Models,
             cfg: EvaluationConfig = EvaluationConfig(), baselines: BaselineConfig | None = None) -> dict:
    """Holdout metrics of `models` and popularity; with `baselines`, EASE and item-kNN too (their
    hyper-parameters chosen on a validation split of the training period: `report["baselines"]`)."""
    users_vocab = models.users if models.users is not None else Vocabulary(data.train[USER])
    model_catalogue = models.catalogue if models.catalogue is not None else catalogue
    items = catalogue.items  # the evaluated item space: the split's training items
    n_items = len(items)
    to_model = np.concatenate([[0], model_catalogue.items.index(items.ids)])
    eval_users = _users_to_evaluate(data, cfg)
    item_idx = lambda frame: items.index(frame[ITEM].to_numpy())  # noqa: E731
    train = data.train.assign(item=item_idx(data.train))
    holdout = data.holdout[data.holdout[USER].isin(set(eval_users))]
    holdout = holdout.assign(item=item_idx(holdout))
    seen = train.groupby(USER)["item"].apply(lambda s: np.unique(s.to_numpy()))
    exclude = [np.concatenate([[0], seen.get(u, np.zeros(0, np.int64))]) for u in eval_users]
    relevant_by_user = holdout.groupby(USER)["item"].apply(set)
    relevant = [relevant_by_user.get(u, set()) for u in eval_users]

    results: dict[str, dict] = {}
    pop = popularity(data.train, items)
    results["popularity"] = ranking_report(top_k(np.tile(pop, (len(eval_users), 1)), exclude, K_MAX), relevant, n_items - 1)

    if models.item2vec is not None:
        last = train.sort_values([TIME, "item"]).groupby(USER)["item"].last()
        query = to_model[np.array([last[u] for u in eval_users])]
        scores = _in_evaluated_items(models.item2vec[query] @ models.item2vec.T, to_model)
        results["item2vec"] = ranking_report(top_k(scores, exclude, K_MAX), relevant, n_items - 1)

    at_boundary = data.users_at_boundary.set_index(USER).loc[eval_users].reset_index()
    boundary = np.full(len(eval_users), data.boundary, dtype=np.int64)
    if models.two_tower is not None:
        model_items = model_catalogue.items
        user_vectors = encode(models.two_tower.user_vectors,
                              pack_users(at_boundary, users_vocab, model_items, boundary))
        item_stats = data.items_at_boundary.set_index(ITEM).reindex(pd.Index(model_items.ids, name=ITEM)).reset_index()
        item_vectors = encode(models.two_tower.item_vectors,
                              pack_items(np.arange(1, len(model_items)), item_stats, model_catalogue))
        scores = _in_evaluated_items(np.concatenate(
            [np.full((len(eval_users), 1), -np.inf, np.float32), user_vectors @ item_vectors.T], axis=1), to_model)
        retrieved = top_k(scores, exclude, max(K_MAX, cfg.rerank_depth))
        results["two_tower"] = ranking_report(retrieved, relevant, n_items - 1)

        if models.ranker is not None:
            results["rerank"] = ranking_report(
                _rerank(models.ranker, at_boundary, retrieved[:, :cfg.rerank_depth],
                        np.take_along_axis(scores, retrieved[:, :cfg.rerank_depth], axis=1)
                        / models.two_tower.cfg.temperature, data, users_vocab, model_catalogue, items,
                        cfg.retrieval_weight),
                relevant, n_items - 1)

    report = {"split": {k: data.summary[k] for k in
                        ("boundary_timestamp", "train_events", "holdout_events", "holdout_users")},
              "evaluated_users": len(eval_users), "models": results}
    if baselines is not None:
        baseline_results, report["baselines"] = evaluate_baselines(data.train, data.holdout, eval_users, baselines)
        results.update(baseline_results)
    if models.ranker is not None:
        frame = data.ranker_holdout
        x = pack_ranker(frame, users_vocab, model_catalogue, frame[TIME].to_numpy())
        report["ranker"] = classification_report(frame["label"].to_numpy(), score(models.ranker, x))
    return report


def _rerank(ranker, at_boundary: pd.DataFrame, candidates: np.ndarray, retrieval_logits: np.ndarray,
            data: TrainingData, users: Vocabulary, catalogue: Catalogue, items: Vocabulary,
            retrieval_weight: float) -> np.ndarray:
    """Score each user's candidates (indices into `items`) with the ranker (its vocabularies: `users`,
    `catalogue`; user features as of the boundary), fuse with the retriever's logits and re-sort."""
    n_users, depth = candidates.shape
    rows = at_boundary.loc[at_boundary.index.repeat(depth)].reset_index(drop=True)
    rows[ITEM] = [items.id_of(int(i)) for i in candidates.reshape(-1)]
    stats = data.items_at_boundary.set_index(ITEM)
    for column in stats.columns:
        if column.startswith("parent_asin_rating_"):
            rows[column] = stats[column].reindex(rows[ITEM]).to_numpy()
    x = pack_ranker(rows, users, catalogue, np.full(len(rows), data.boundary, dtype=np.int64))
    scores = rerank_scores(score(ranker, x, ranking=True).reshape(n_users, depth), retrieval_logits,
                           retrieval_weight)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)

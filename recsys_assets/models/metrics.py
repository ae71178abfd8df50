"""Ranking metrics under one protocol (full ranking over the catalogue).

For each user: rank every training item except those the user interacted with in training; relevant =
the user's holdout items. Recall@k = hits / |relevant|; NDCG@k with binary gains and the ideal DCG over
min(k, |relevant|); means over users with at least one relevant item. Coverage@k = distinct items in all
top-k lists / catalogue size.
"""

from __future__ import annotations

import itertools

import numpy as np


def top_k(scores: np.ndarray, exclude: list[np.ndarray], k: int) -> np.ndarray:
    """Per row the k best column indices, excluded columns (and those scored -inf: unknown to the model)
    removed; -1 pads a row that has fewer than k (a catalogue smaller than k). Scores are users x items."""
    scores = scores.astype(np.float32, copy=True)
    for row, cols in enumerate(exclude):
        if len(cols):
            scores[row, cols] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    ranked = np.take_along_axis(part, order, axis=1)
    return np.where(np.isneginf(np.take_along_axis(scores, ranked, axis=1)), -1, ranked)


def per_user_recall_ndcg(ranked: np.ndarray, relevant: list[set[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall@k and NDCG@k of each user with at least one relevant item (in order; the others are left out).
    Vectorised (the fusion search scores hundreds of rankings): a hit is a (row, item) key among the relevant
    ones."""
    ranked = np.asarray(ranked, dtype=np.int64)[:, :k]
    sizes = np.fromiter((len(rel) for rel in relevant), dtype=np.int64, count=len(relevant))
    items = np.fromiter(itertools.chain.from_iterable(relevant), dtype=np.int64, count=int(sizes.sum()))
    width = int(max(items.max(initial=0), ranked.max(initial=0))) + 1
    keys = np.repeat(np.arange(len(relevant)), sizes) * width + items
    hits = np.isin(np.arange(len(ranked))[:, None] * width + ranked, keys) & (ranked >= 0)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(k, np.maximum(sizes, 1)) - 1]
    users = sizes > 0
    recalls = hits.sum(axis=1)[users] / sizes[users]
    ndcgs = (hits * discounts[:ranked.shape[1]]).sum(axis=1)[users] / ideal[users]
    return recalls.astype(np.float64), ndcgs.astype(np.float64)


def recall_ndcg(ranked: np.ndarray, relevant: list[set[int]], k: int) -> tuple[float, float]:
    recalls, ndcgs = per_user_recall_ndcg(ranked, relevant, k)
    if not len(recalls):
        return 0.0, 0.0
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def coverage(ranked: np.ndarray, k: int, catalogue_size: int) -> float:
    listed = np.unique(ranked[:, :k])
    return len(listed[listed >= 0]) / catalogue_size if catalogue_size else 0.0


def ranking_report(ranked: np.ndarray, relevant: list[set[int]], catalogue_size: int) -> dict:
    r10, n10 = recall_ndcg(ranked, relevant, 10)
    r50, _ = recall_ndcg(ranked, relevant, 50)
    return {"recall@10": r10, "recall@50": r50, "ndcg@10": n10, "coverage@10": coverage(ranked, 10, catalogue_size)}


def classification_report(labels: np.ndarray, scores: np.ndarray) -> dict:
    """ROC-AUC and PR-AUC (average precision) of a scorer on labelled pairs."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {"roc_auc": float(roc_auc_score(labels, scores)), "pr_auc": float(average_precision_score(labels, scores))}

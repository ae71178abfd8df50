"""The ranking model of the original (`seed/tt7.png`).

user-id embedding; candidate item embedding; the last 10 items, each with its time-delta bucket embedding,
through a GRU; an item-feature encoder over category, price, rating stats and the tag embedding; all
concatenated -> MLP -> sigmoid, trained with BCE. One forward pass scores a batch of candidates.

Beside the concatenation the MLP also gets three explicit matches of the candidate (with the GRU state, the
user and the mean history item): an MLP learns such products slowly, and they are what tells apart
candidates that all fit the user's taste, the rerank case.

Negatives are drawn by popularity q(i), so the trained logit estimates log p(i|user) / q(i) (a density
ratio), not log p(i|user): a tail item is rarely a negative and looks better than it is. Ranking therefore
adds log q(i) back (`ranking_scores`), the same logQ correction the two-tower applies in training; the
sigmoid output stays the calibrated "positive vs popularity negative" probability.

The served rerank order fuses that log p(i|user) estimate with the retriever's own one (two-tower cosine /
temperature, trained with logQ correction so it too estimates log p(i|user)) and EASE's score, with weights
chosen on the validation period (`fusion.py`). Alone, the ranker, trained on popularity negatives, separates
the user's taste from popular items elsewhere but orders 100 candidates that all fit the taste worse than the
retriever (NDCG@10 0.091 vs 0.106 on the default data); the even mix of the two beat both (0.113).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys_assets.models.data import PAD
from recsys_assets.models.features import HISTORY, N_DELTA_BUCKETS, Layout


@dataclass(frozen=True)
class RankerConfig:
    user_dim: int = 32
    item_dim: int = 128  # item2vec's width when initialised from it
    bucket_dim: int = 16
    category_dim: int = 16
    gru_hidden: int = 64
    item_encoder_dim: int = 32
    hidden: int = 128
    # Keep item2vec's vectors as they are: fine-tuning them memorised per-item biases (on the default data the
    # rerank NDCG@10 was 0.087 fine-tuned vs 0.093 frozen, same split).
    freeze_item_embeddings: bool = True


def ranker_layout(user_dense_dim: int, item_dense_dim: int) -> Layout:
    return Layout((("user", 1), ("item", 1), ("history", HISTORY), ("buckets", HISTORY), ("category", 1),
                   ("user_dense", user_dense_dim), ("item_dense", item_dense_dim)))


class Ranker(nn.Module):
    def __init__(self, n_users: int, n_items: int, n_categories: int, user_dense_dim: int, item_dense_dim: int,
                 cfg: RankerConfig = RankerConfig(), item_init: np.ndarray | None = None,
                 negative_sampling_counts: np.ndarray | None = None):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("log_q", _log_q(np.ones(n_items) if negative_sampling_counts is None
                                             else negative_sampling_counts))
        self.layout = ranker_layout(user_dense_dim, item_dense_dim)
        item_dim = item_init.shape[1] if item_init is not None else cfg.item_dim
        self.user_emb = nn.Embedding(n_users, cfg.user_dim)
        self.item_emb = nn.Embedding(n_items, item_dim, padding_idx=PAD)
        if item_init is not None:
            with torch.no_grad():
                self.item_emb.weight.copy_(torch.from_numpy(item_init))
            self.item_emb.weight.requires_grad_(not cfg.freeze_item_embeddings)
        self.bucket_emb = nn.Embedding(N_DELTA_BUCKETS + 1, cfg.bucket_dim, padding_idx=0)
        self.category_emb = nn.Embedding(n_categories, cfg.category_dim)
        self.gru = nn.GRU(item_dim + cfg.bucket_dim, cfg.gru_hidden, batch_first=True)
        self.item_encoder = nn.Sequential(
            nn.Linear(cfg.category_dim + item_dense_dim, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.item_encoder_dim),
        )
        self.sequence_match = nn.Linear(cfg.gru_hidden, item_dim, bias=False)
        self.user_match = nn.Linear(cfg.user_dim, item_dim, bias=False)
        width = cfg.user_dim + item_dim + cfg.gru_hidden + cfg.item_encoder_dim + user_dense_dim + 3
        self.head = nn.Sequential(nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 64), nn.ReLU(),
                                  nn.Linear(64, 1))

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        s = self.layout.slices()
        history, buckets = x[:, s["history"]].long(), x[:, s["buckets"]].long()
        if self.training:
            state = self._sequence_state(history, buckets)
        else:
            # Scoring one user's candidates repeats one history on every row: run the GRU once per distinct one.
            distinct, inverse = torch.unique(torch.cat([history, buckets], dim=1), dim=0, return_inverse=True)
            state = self._sequence_state(distinct[:, :history.shape[1]], distinct[:, history.shape[1]:])[inverse]
        item_features = torch.cat([self.category_emb(x[:, s["category"]].long().squeeze(1)), x[:, s["item_dense"]]],
                                  dim=1)
        user = self.user_emb(x[:, s["user"]].long().squeeze(1))
        candidate = self.item_emb(x[:, s["item"]].long().squeeze(1))
        filled = (history != PAD).sum(1, keepdim=True).clamp(min=1)
        mean_history = self.item_emb(history).sum(1) / filled
        matches = torch.stack([
            (self.sequence_match(state) * candidate).sum(1),
            (self.user_match(user) * candidate).sum(1),
            (mean_history * candidate).sum(1),
        ], dim=1)
        joined = torch.cat([user, candidate, state, self.item_encoder(item_features), x[:, s["user_dense"]], matches],
                           dim=1)
        out = self.head(joined).squeeze(1)
        return out if logits else torch.sigmoid(out)

    def set_negative_sampling_counts(self, counts: np.ndarray) -> None:
        """The counts the negatives of further training are drawn by (the logQ term ranking adds back)."""
        self.log_q.copy_(_log_q(counts))

    def set_item_vectors(self, index: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the (frozen) item vectors of `index`: items the item2vec it started from never saw."""
        with torch.no_grad():
            self.item_emb.weight[torch.from_numpy(np.asarray(index, dtype=np.int64))] = torch.from_numpy(
                np.asarray(vectors, dtype=np.float32))

    def _sequence_state(self, history: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        steps = torch.cat([self.item_emb(history), self.bucket_emb(buckets)], dim=2)
        _, hidden = self.gru(steps)  # left-padded: the last step is the newest item
        return hidden[-1]

    def ranking_scores(self, x: torch.Tensor) -> torch.Tensor:
        """log p(item | user) up to a constant per user: what orders one user's candidates."""
        return self.probability_and_ranking(x)[1]

    def probability_and_ranking(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The calibrated probability and the ranking score, from one forward pass."""
        logits = self(x, logits=True)
        item = x[:, self.layout.slices()["item"]].long().squeeze(1)
        return torch.sigmoid(logits), logits + self.log_q[item]


def _log_q(counts: np.ndarray) -> torch.Tensor:
    counts = np.maximum(np.asarray(counts, dtype=float), 0.5)  # unseen items: half a count
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def bce_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(model(batch["x"], logits=True), batch["label"])


@torch.no_grad()
def score(model: nn.Module, x: np.ndarray, batch_size: int = 8192, ranking: bool = False) -> np.ndarray:
    """Probabilities (default) or ranking scores for packed ranker rows, in batches."""
    model.eval()
    fn = model.ranking_scores if ranking else model
    out = [fn(torch.from_numpy(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

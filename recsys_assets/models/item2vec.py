"""item2vec: skip-gram over users' item sequences with negative sampling (the original's retrieval).

Window 1 (the neighbours before and after an item in a user's time-ordered history), `negatives` noise items
per positive drawn by frequency^0.75. The input vectors, L2-normalised, are the item embeddings: they give
item-to-item neighbours and initialise the ranker's item embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from recsys_assets.models.data import ITEM, PAD, TIME, USER, Vocabulary
from recsys_assets.models.training import TrainConfig, train_loop

# Last-item i2i scores a neighbour by cosine + weight * log(1 + its review count), the weight chosen on
# validation (`evaluation.evaluate`) and tagged on the item2vec version (`registry.tag_i2i_weight`). Cosine
# alone ranks a rarely reviewed item, whose vector is noise, beside a hit: MovieLens-100k's last-item i2i
# scored NDCG@10 0.047 on the temporal holdout with cosine alone, 0.172 with the weight validation chose (1.6;
# popularity 0.151).
I2I_POPULARITY_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.4)  # a best 0.4 searches on past it (`baselines.search_grid`)


@dataclass
class Item2VecConfig:
    dim: int = 128
    window: int = 1
    negatives: int = 2
    epochs: int = 5
    batch_size: int = 4096
    lr: float = 0.01
    seed: int = 0


@dataclass
class Item2VecResult:
    embeddings: np.ndarray  # (n_items, dim), L2-normalised; row 0 (padding) is zero
    epoch_losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    pairs: int = 0
    model: SkipGram | None = None  # what further training (`start=`) continues from


class SkipGram(nn.Module):
    def __init__(self, n_items: int, dim: int):
        super().__init__()
        self.center = nn.Embedding(n_items, dim)
        self.context = nn.Embedding(n_items, dim)
        nn.init.uniform_(self.center.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.context.weight)

    def forward(self, center: torch.Tensor, context: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        c = self.center(center)  # (B, d)
        pos = (c * self.context(context)).sum(-1)
        neg = torch.einsum("bd,bkd->bk", c, self.context(noise))
        return -(nn.functional.logsigmoid(pos) + nn.functional.logsigmoid(-neg).sum(-1)).mean()

    def normalized(self) -> torch.Tensor:
        """What gets served: unit vectors, so a dot product is a cosine (padding stays zero)."""
        weights = self.center.weight.detach().clone()
        weights[PAD] = 0
        return nn.functional.normalize(weights, dim=1)


def item_sequences(events: pd.DataFrame, items: Vocabulary) -> list[np.ndarray]:
    """Each user's items in time order, as item indices: what skip-gram learns from."""
    ordered = events.sort_values([TIME, ITEM])
    return [items.index(g[ITEM].to_numpy()) for _, g in ordered.groupby(USER, sort=True)]


def skipgram_pairs(sequences: list[np.ndarray], window: int) -> np.ndarray:
    """(center, context) index pairs within `window` positions, both directions."""
    pairs = []
    for seq in sequences:
        for offset in range(1, window + 1):
            if len(seq) > offset:
                pairs.append(np.stack([seq[:-offset], seq[offset:]], axis=1))
                pairs.append(np.stack([seq[offset:], seq[:-offset]], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


@dataclass
class NegativeSamplingLoss:
    """Skip-gram loss with `negatives` noise items per pair drawn from `noise` (freq^0.75)."""

    noise: torch.Tensor
    negatives: int

    def __call__(self, model: SkipGram, batch: dict) -> torch.Tensor:
        centers = batch["center"]
        noise = torch.multinomial(self.noise, len(centers) * self.negatives, replacement=True).view(len(centers), -1)
        return model(centers, batch["context"], noise)


def train_item2vec(sequences: list[np.ndarray], n_items: int, cfg: Item2VecConfig = Item2VecConfig(),
                   on_epoch=None, start: SkipGram | None = None) -> Item2VecResult:
    """Skip-gram through the shared training loop (shuffled pair batches, Adam), from fresh vectors or from
    `start`'s (which it trains further)."""
    torch.manual_seed(cfg.seed)
    pairs = skipgram_pairs(sequences, cfg.window).astype(np.int64)
    counts = np.bincount(np.concatenate(sequences) if sequences else np.zeros(0, np.int64), minlength=n_items)
    noise = counts.astype(np.float64) ** 0.75
    noise[PAD] = 0
    noise = torch.tensor(noise / noise.sum() if noise.sum() else np.ones(n_items) / n_items)
    model = start if start is not None else SkipGram(n_items, cfg.dim)
    history = train_loop(model, {"center": pairs[:, 0], "context": pairs[:, 1]},
                         NegativeSamplingLoss(noise, cfg.negatives),
                         TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed), on_epoch)
    return Item2VecResult(model.normalized().numpy(), history.epoch_losses, history.epoch_seconds, len(pairs), model)


class Item2VecModel(nn.Module):
    """The served form: packed input = one column of item indices -> unit item vectors."""

    def __init__(self, embeddings: np.ndarray):
        super().__init__()
        self.embeddings = nn.Embedding.from_pretrained(torch.from_numpy(embeddings), freeze=True)

    def init_kwargs(self) -> dict:
        """What builds this model again before its weights load (`weights.py`): JSON."""
        return {"n_items": self.embeddings.num_embeddings, "dim": self.embeddings.embedding_dim}

    @classmethod
    def from_init_kwargs(cls, kwargs: dict) -> Item2VecModel:
        return cls(np.zeros((kwargs["n_items"], kwargs["dim"]), np.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embeddings(x[:, 0].long())


def neighbours(embeddings: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k most similar items (cosine) for each query item index, the item itself and padding excluded."""
    scores = embeddings[query] @ embeddings.T
    scores[np.arange(len(query)), query] = -np.inf
    scores[:, PAD] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    return top, np.take_along_axis(scores, top, axis=1)

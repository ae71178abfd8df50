"""The ranking model of the original (`seed/tt7.png`).

user-id embedding; candidate item embedding; the last 10 items, each with its time-delta bucket embedding,
through a GRU; an item-feature encoder over category, price, rating stats and the tag embedding; all
concatenated -> MLP -> sigmoid. One forward pass scores a batch of candidates.

Beside the concatenation the MLP also gets three explicit matches of the candidate (with the GRU state, the
user and the mean history item): an MLP learns such products slowly, and they are what tells apart
candidates that all fit the user's taste, the rerank case.

Trained on two losses that estimate one logit, log p(i|user) / q(i) (`ranker_loss`):
* pointwise: BCE of each positive against a negative drawn by popularity q(i) for the same user and moment,
  so the sigmoid output is the calibrated "positive vs popularity negative" probability (what
  `/score/seq_rating_prediction` serves);
* listwise: a softmax over the items of the batch's other positives (time-local batches:
  `listwise_batches`), logQ-corrected. The rerank orders a hundred candidates that all fit the user's taste;
  one popularity negative per positive teaches taste vs popularity, not that order, which the softmax over
  many items does (validation NDCG@10 of the ranker alone on the rerank's candidates: MovieLens-100k 0.154
  -> 0.246, small 0.073 -> 0.108).

The logit is a density ratio: a tail item is rarely a negative and looks better than it is. Ranking therefore
adds log q(i) back (`ranking_scores`), the same logQ correction the two-tower applies in training.

The served rerank order fuses that log p(i|user) estimate with the retriever's own one (two-tower cosine /
temperature, trained with logQ correction so it too estimates log p(i|user), plus a popularity prior where its
logQ weight is above 1), EASE's score and recent popularity, with weights chosen on the validation period
(`fusion.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from recsys_assets.models.data import PAD
from recsys_assets.models.features import HISTORY, N_DELTA_BUCKETS, Layout
from recsys_assets.models.warm_start import CATEGORIES, DAYS_DATA, USERS


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
        self.sizes = dict(n_users=n_users, n_items=n_items, n_categories=n_categories, user_dense_dim=user_dense_dim,
                          item_dense_dim=item_dense_dim)
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

    def id_tables(self) -> dict[str, str | None]:
        """The id tables a warm start carries over by id; the item vectors (the day's item2vec's) and the logQ
        term (the day's popularity) are the day's own."""
        return {"user_emb.weight": USERS, "category_emb.weight": CATEGORIES, "item_emb.weight": DAYS_DATA,
                "log_q": DAYS_DATA}

    def init_kwargs(self) -> dict:
        """What builds this model again before its weights load (`weights.py`): JSON. The item width is the
        item2vec's it started from (`item_init`), which may differ from `cfg.item_dim`."""
        return {**self.sizes, "cfg": asdict(replace(self.cfg, item_dim=self.item_emb.embedding_dim))}

    @classmethod
    def from_init_kwargs(cls, kwargs: dict) -> Ranker:
        cfg = RankerConfig(**kwargs["cfg"])
        # Built with item vectors, as trained (their values come with the weights): frozen as they were.
        return cls(**{**kwargs, "cfg": cfg}, item_init=np.zeros((kwargs["n_items"], cfg.item_dim), np.float32))

    def forward(self, x: torch.Tensor, logits: bool = False, pairs: torch.Tensor | None = None):
        """Each row's probability (or logit). With `pairs` (a boolean mask of rows), also the logit of every
        pair of those rows' users and items, [i, j] = row i's user with row j's item: the listwise loss's, from
        the same forward pass (one call through DDP)."""
        s = self.layout.slices()
        history, buckets = x[:, s["history"]].long(), x[:, s["buckets"]].long()
        if self.training:
            state = self._sequence_state(history, buckets)
        else:
            # Scoring one user's candidates repeats one history on every row: run the GRU once per distinct one.
            distinct, inverse = torch.unique(torch.cat([history, buckets], dim=1), dim=0, return_inverse=True)
            state = self._sequence_state(distinct[:, :history.shape[1]], distinct[:, history.shape[1]:])[inverse]
        filled = (history != PAD).sum(1, keepdim=True).clamp(min=1)
        user = _UserSide(self.user_emb(x[:, s["user"]].long().squeeze(1)), state, x[:, s["user_dense"]],
                         self.item_emb(history).sum(1) / filled)
        item_features = torch.cat([self.category_emb(x[:, s["category"]].long().squeeze(1)), x[:, s["item_dense"]]],
                                  dim=1)
        item = _ItemSide(self.item_emb(x[:, s["item"]].long().squeeze(1)), self.item_encoder(item_features))
        out = self._head(user, item, pairs=False)
        out = out if logits else torch.sigmoid(out)
        if pairs is None:
            return out
        return out, self._head(user.rows(pairs), item.rows(pairs), pairs=True)

    def _head(self, user: _UserSide, item: _ItemSide, pairs: bool) -> torch.Tensor:
        """The MLP over [user, candidate, GRU state, encoded item, user stats, three matches], row by row or
        for every (user, item) pair. Its first layer is split by input, so the pairs cost one sum each there
        (a (users x items x hidden) tensor), not a concatenation each."""
        match = (lambda a, b: a @ b.T) if pairs else (lambda a, b: (a * b).sum(1))  # noqa: E731
        matches = torch.stack([match(self.sequence_match(user.state), item.vector),
                               match(self.user_match(user.vector), item.vector),
                               match(user.mean_history, item.vector)], dim=-1)
        first = self.head[0]
        weights = torch.split(first.weight, [user.vector.shape[1], item.vector.shape[1], user.state.shape[1],
                                             item.encoded.shape[1], user.dense.shape[1], 3], dim=1)
        by_user = user.vector @ weights[0].T + user.state @ weights[2].T + user.dense @ weights[4].T + first.bias
        by_item = item.vector @ weights[1].T + item.encoded @ weights[3].T
        if pairs:
            by_user, by_item = by_user[:, None, :], by_item[None, :, :]
        hidden = by_user + by_item + matches @ weights[5].T
        for layer in list(self.head)[1:]:
            hidden = layer(hidden)
        return hidden.squeeze(-1)

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


@dataclass
class _UserSide:
    vector: torch.Tensor
    state: torch.Tensor  # the GRU's over the last items
    dense: torch.Tensor
    mean_history: torch.Tensor

    def rows(self, mask: torch.Tensor) -> _UserSide:
        return _UserSide(self.vector[mask], self.state[mask], self.dense[mask], self.mean_history[mask])


@dataclass
class _ItemSide:
    vector: torch.Tensor
    encoded: torch.Tensor  # category, price, rating stats, tags

    def rows(self, mask: torch.Tensor) -> _ItemSide:
        return _ItemSide(self.vector[mask], self.encoded[mask])


def _log_q(counts: np.ndarray) -> torch.Tensor:
    counts = np.maximum(np.asarray(counts, dtype=float), 0.5)  # unseen items: half a count
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def ranker_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Pointwise + listwise, both estimating the same logit, log p(item | user) / q(item):

    * pointwise: BCE of each positive against its popularity negative (keeps sigmoid(logit) the calibrated
      "positive vs popularity negative" probability);
    * listwise: a sampled softmax over the batch's positives' items, each positive's user against every one
      of them, the logits made log p(item | user) again (+ log q, the ranking score) and corrected by what drew
      the other items, the item's share of the positives of the batch's time chunk (`listwise_batches`).

    The pointwise loss alone teaches taste vs popularity; the rerank orders candidates that all fit the taste,
    which the softmax over many items teaches. The same user's other positives in the batch stay negatives
    (they are items taken at other moments): masking them as accidental hits, here and in the two-tower's
    softmax, lowered the served rerank on MovieLens-1M's holdout from NDCG@10 0.322 to 0.311 (validation 0.203
    to 0.200; MovieLens-100k 0.272 to 0.261).
    `batch`: x, label, item_idx and proposal (the positives' sampling probability, 1 on negatives)."""
    positive = batch["label"] > 0.5
    logits, pair_logits = model(batch["x"], logits=True, pairs=positive)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])
    if int(positive.sum()) < 2:
        return loss
    item = batch["item_idx"][positive]
    log_q = (model.module if hasattr(model, "module") else model).log_q
    scores = pair_logits + (log_q[item] - torch.log(batch["proposal"][positive]))[None, :]
    same = item[:, None] == item[None, :]  # another row of the same item is not a negative
    scores = scores.masked_fill(same & ~torch.eye(len(item), dtype=torch.bool), float("-inf"))
    return loss + nn.functional.cross_entropy(scores, torch.arange(len(item)))


def listwise_batches(times: np.ndarray, items: np.ndarray, labels: np.ndarray, chunk_rows: int = 4096,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(row order, each row's proposal) for training in time-local batches: rows sorted by time are cut into
    chunks of `chunk_rows`, shuffled within each chunk, so consecutive batches (of a size dividing
    `chunk_rows`) stay inside a chunk. The listwise loss scores each user against the other positives' items
    with those items' features as of their own rows: inside a chunk that is about the user's moment (a
    trending item looks as trending as it was), where batches drawn across the whole period would show
    yesterday's hits at their peak. Proposal: the share of the chunk's positives that are the row's item
    (what drew it as another row's negative); 1 for negatives."""
    by_time = np.argsort(times, kind="stable")
    chunk = np.arange(len(times)) // chunk_rows
    order = by_time[np.lexsort((np.random.default_rng(seed).random(len(times)), chunk))]
    item, positive = np.asarray(items)[order], np.asarray(labels)[order] > 0.5
    key = np.where(positive, chunk * (int(item.max(initial=0)) + 1) + item, -1)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    positives_in_chunk = np.bincount(chunk, weights=positive)
    proposal = np.where(positive, counts[inverse] / np.maximum(positives_in_chunk[chunk], 1), 1.0)
    return order, proposal.astype(np.float32)


@torch.no_grad()
def score(model: nn.Module, x: np.ndarray, batch_size: int = 8192, ranking: bool = False) -> np.ndarray:
    """Probabilities (default) or ranking scores for packed ranker rows, in batches."""
    model.eval()
    fn = model.ranking_scores if ranking else model
    out = [fn(torch.from_numpy(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

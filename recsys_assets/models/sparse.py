"""Pooled sparse-id embeddings per feature, through torchrec (default) or plain torch (the baseline).

Features arrive as padded index columns of a packed matrix (0 = padding). torchrec takes them as one
KeyedJaggedTensor into an EmbeddingBagCollection (the module torchrec shards across devices and hosts);
`backend="torch"` uses one nn.EmbeddingBag per feature, the same maths, for the benchmark's comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from recsys_assets.models.data import PAD

BACKENDS = ("torchrec", "torch")


@dataclass(frozen=True)
class SparseFeature:
    name: str
    num_embeddings: int
    dim: int
    bag: bool  # a bag of ids (mean-pooled, padding dropped) or one id per row (padding = "unknown" row)


class SparseEmbeddings(nn.Module):
    def __init__(self, features: list[SparseFeature], backend: str = "torchrec"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.features = list(features)
        self.backend = backend
        if backend == "torchrec":
            self.ebc = EmbeddingBagCollection(
                tables=[EmbeddingBagConfig(name=f"t_{f.name}", embedding_dim=f.dim, num_embeddings=f.num_embeddings,
                                           feature_names=[f.name],
                                           pooling=PoolingType.MEAN if f.bag else PoolingType.SUM)
                        for f in self.features],
                device=torch.device("cpu"),
            )
            for table in self.ebc.embedding_bags.values():
                nn.init.normal_(table.weight, std=0.05)
        else:
            self.bags = nn.ModuleDict({
                f.name: nn.EmbeddingBag(f.num_embeddings, f.dim, mode="mean" if f.bag else "sum")
                for f in self.features
            })
            for bag in self.bags.values():
                nn.init.normal_(bag.weight, std=0.05)

    @property
    def output_dim(self) -> int:
        return sum(f.dim for f in self.features)

    def table_names(self) -> dict[str, str]:
        """Each feature's table as this module's state dict names it."""
        return {f.name: (f"ebc.embedding_bags.t_{f.name}.weight" if self.backend == "torchrec"
                         else f"bags.{f.name}.weight") for f in self.features}

    def forward(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """`ids[i]`: (B, n_i) indices of feature i; returns (B, sum of dims) pooled embeddings."""
        values, lengths = [], []
        for feature, column in zip(self.features, ids):
            column = column.long()
            keep = column != PAD if feature.bag else torch.ones_like(column, dtype=torch.bool)
            values.append(column[keep])
            lengths.append(keep.sum(dim=1))
        if self.backend == "torchrec":
            kjt = KeyedJaggedTensor.from_lengths_sync(
                keys=[f.name for f in self.features], values=torch.cat(values), lengths=torch.cat(lengths)
            )
            return self.ebc(kjt).values()
        pooled = []
        for feature, vals, lens in zip(self.features, values, lengths):
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lens, 0)[:-1]])
            pooled.append(self.bags[feature.name](vals, offsets))
        return torch.cat(pooled, dim=1)

"""Warm starts: a day's model begins from an earlier version's weights rather than from scratch.

The vocabularies grow from day to day (new users, items, categories). Each id table of the new model takes the
earlier row of every id both vocabularies know and keeps its fresh initialisation for the new ids; every other
tensor of the same shape is copied; a tensor whose shape changed (another configuration, another feature width)
keeps its initialisation and is listed, so the caller can tell a partial warm start from a whole one. Tensors the
new model takes from the day's own data (e.g. the ranker's frozen item2vec vectors) are named by the model and
left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from recsys_assets.models.data import PAD, Vocabulary

USERS, ITEMS, CATEGORIES = "users", "items", "categories"
DAYS_DATA = None  # a table the new model builds from the day's data: not carried over


@dataclass(frozen=True)
class WarmStart:
    """What a warm start carried over."""
    copied: list[str] = field(default_factory=list)  # tensors taken whole
    remapped: dict[str, tuple[int, int]] = field(default_factory=dict)  # id table -> (rows carried, rows in all)
    fresh: list[str] = field(default_factory=list)  # left as initialised: shape changed or absent before
    kept: list[str] = field(default_factory=list)  # the day's own (`DAYS_DATA`)

    @property
    def whole(self) -> bool:
        """Every tensor that could come from the earlier version did."""
        return not self.fresh

    def summary(self) -> dict:
        return {"copied": len(self.copied), "fresh": self.fresh, "kept": self.kept,
                "rows_carried": {name: f"{carried}/{rows}" for name, (carried, rows) in self.remapped.items()}}


def row_map(old: Vocabulary, new: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """(rows in the new table, rows in the old) of the ids both vocabularies know, padding row included."""
    common = sorted(set(old.ids) & set(new.ids))
    return (np.concatenate([[PAD], new.index(common)]).astype(np.int64),
            np.concatenate([[PAD], old.index(common)]).astype(np.int64))


def warm_start(model: nn.Module, previous: Mapping[str, torch.Tensor], tables: Mapping[str, str | None],
               old: Mapping[str, Vocabulary], new: Mapping[str, Vocabulary]) -> WarmStart:
    """Load into `model` what `previous` (an earlier version's state dict) knows. `tables`: the model's id
    tables, state-dict name -> the vocabulary indexing its rows (`USERS`, `ITEMS`, `CATEGORIES`), or `DAYS_DATA`
    for a tensor the model took from the day's data; `old` / `new`: those vocabularies then and now."""
    state = model.state_dict()
    result = WarmStart()
    with torch.no_grad():
        for name, tensor in state.items():
            before = previous.get(name)
            if name in tables and tables[name] is DAYS_DATA:
                result.kept.append(name)
            elif before is None or before.shape[1:] != tensor.shape[1:]:
                result.fresh.append(name)
            elif name in tables:
                new_rows, old_rows = row_map(old[tables[name]], new[tables[name]])
                tensor[torch.from_numpy(new_rows)] = before[torch.from_numpy(old_rows)].to(tensor.dtype)
                result.remapped[name] = (len(new_rows), tensor.shape[0])
            elif before.shape == tensor.shape:
                tensor.copy_(before)
                result.copied.append(name)
            else:
                result.fresh.append(name)
    model.load_state_dict(state)
    return result

"""The ranker's listwise training: pair logits, time-local batches, the loss; the training loop's per-epoch
validation score and early stopping (no trained home needed)."""

import numpy as np
import pytest
import torch

from recsys_assets.models.features import HISTORY
from recsys_assets.models.ranker import Ranker, listwise_batches, ranker_loss
from recsys_assets.models.training import TrainConfig, train_loop


def _rows(model: Ranker, n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(model.layout.pack(
        user=rng.integers(1, 50, n), item=rng.integers(1, 30, n), history=rng.integers(0, 30, (n, HISTORY)),
        buckets=rng.integers(0, 11, (n, HISTORY)), category=rng.integers(0, 4, n), user_dense=rng.random((n, 2)),
        item_dense=rng.random((n, 5))))


def test_pair_logits_score_each_rows_user_with_each_rows_item():
    torch.manual_seed(0)
    model = Ranker(50, 30, 4, 2, 5).train()
    x = _rows(model, 6)
    rows, pairs = model(x, logits=True, pairs=torch.tensor([True, False, True, True, False, True]))
    assert pairs.shape == (4, 4)
    kept = x[[0, 2, 3, 5]]
    torch.testing.assert_close(torch.diagonal(pairs), rows[[0, 2, 3, 5]], atol=1e-5, rtol=1e-5)
    # [i, j]: row i's user (id, history, stats) with row j's item (id, category, item features).
    s = model.layout.slices()
    swapped = kept[1].clone()
    for group in ("item", "category", "item_dense"):
        swapped[s[group]] = kept[3][s[group]]
    torch.testing.assert_close(pairs[1, 3], model(swapped[None], logits=True)[0], atol=1e-5, rtol=1e-5)


def test_listwise_batches_keep_batches_inside_a_time_chunk_and_give_the_chunks_item_shares():
    rng = np.random.default_rng(1)
    times = rng.permutation(64)
    items = rng.integers(1, 5, 64)
    labels = (np.arange(64) % 2).astype(np.float32)
    order, proposal = listwise_batches(times, items, labels, chunk_rows=16, seed=0)
    assert sorted(order) == list(range(64))
    chunks = times[order] // 16
    assert (np.diff(chunks) >= 0).all()  # each block of 16 rows is one time chunk, shuffled inside
    assert not (np.diff(times[order]) > 0).all()
    for row, (chunk, item, label) in enumerate(zip(chunks, items[order], labels[order])):
        in_chunk = (chunks == chunk) & (labels[order] == 1)
        expected = (items[order][in_chunk] == item).mean() if label == 1 else 1.0
        assert proposal[row] == pytest.approx(expected)


def test_trained_on_both_losses_the_ranker_ranks_each_users_own_items_first():
    """Odd users take odd items, even users even ones (each item as popular): trained through `ranker_loss` in
    time-local batches, the ranking scores put a user's own kind first."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 512
    users = rng.integers(1, 41, n)
    group = users % 2
    items = 1 + 2 * rng.integers(0, 14, n) + (1 - group)  # odd items for odd users, even for even
    negatives = rng.integers(1, 29, n)
    model = Ranker(41, 30, 4, 2, 5)

    def pack(user, item):
        zeros = np.zeros((len(user), HISTORY))
        return model.layout.pack(user=user, item=item, history=zeros, buckets=zeros, category=np.zeros(len(user)),
                                 user_dense=np.zeros((len(user), 2)), item_dense=np.zeros((len(user), 5)))

    x = np.concatenate([pack(users, items), pack(users, negatives)])
    labels = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)
    order, proposal = listwise_batches(np.tile(np.arange(n), 2), np.concatenate([items, negatives]), labels,
                                       chunk_rows=128)
    data = {"x": x[order], "label": labels[order], "item_idx": np.concatenate([items, negatives])[order],
            "proposal": proposal}
    history = train_loop(model, data, ranker_loss, TrainConfig(epochs=8, batch_size=64, lr=0.01, shuffle="batches"))
    assert history.epoch_losses[-1] < history.epoch_losses[0]
    with torch.no_grad():
        scores = model.ranking_scores(torch.from_numpy(pack(np.repeat([1, 2], 28), np.tile(np.arange(1, 29), 2))))
    odd_user, even_user = scores[:28].numpy(), scores[28:].numpy()
    odd_items = np.arange(1, 29) % 2 == 1
    assert odd_user[odd_items].mean() > odd_user[~odd_items].mean()
    assert even_user[~odd_items].mean() > even_user[odd_items].mean()


def test_batches_shuffle_keeps_each_batch_together():
    seen = []
    data = {"x": np.arange(10, dtype=np.float32)}
    train_loop(torch.nn.Linear(1, 1), data, lambda model, batch: seen.append(batch["x"].tolist())
               or model(batch["x"][:, None]).sum(), TrainConfig(epochs=2, batch_size=4, shuffle="batches"))
    assert sorted(map(tuple, seen[:3])) == [(0.0, 1.0, 2.0, 3.0), (4.0, 5.0, 6.0, 7.0), (8.0, 9.0)]
    with pytest.raises(ValueError, match="shuffle"):
        train_loop(torch.nn.Linear(1, 1), data, lambda m, b: m(b["x"][:, None]).sum(), TrainConfig(shuffle="users"))


def test_early_stopping_keeps_the_epoch_with_the_best_validation_score():
    """Training pulls the weight from 0 toward 1, validation wants 0.3: its score rises, then falls; training
    stops `patience` epochs after its best and keeps that epoch's weights."""
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 64)
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    mse = lambda m, b: ((m(b["x"][:, None])[:, 0] - b["y"]) ** 2).mean()  # noqa: E731
    judged = []

    def validate(m: torch.nn.Module) -> float:  # minus the error on what validation wants
        judged.append(m.weight.item())
        with torch.no_grad():
            return -mse(m, {"x": x, "y": 0.3 * x}).item()

    history = train_loop(model, {"x": x.numpy(), "y": x.numpy()}, mse,
                         TrainConfig(epochs=40, batch_size=16, lr=0.01, patience=2), validate=validate)
    best = history.best_epoch
    assert 0 < best and len(history.epoch_losses) == len(history.validation_scores) == best + 3 < 40
    assert history.validation_scores[best] == max(history.validation_scores) > history.validation_scores[0]
    assert model.weight.item() == judged[best] and abs(judged[best] - 0.3) < abs(judged[-1] - 0.3)
    # Without patience every epoch runs, each scored, and the last weights stay.
    judged.clear()
    torch.nn.init.zeros_(model.weight)
    history = train_loop(model, {"x": x.numpy(), "y": x.numpy()}, mse, TrainConfig(epochs=12, batch_size=16, lr=0.01),
                         validate=validate)
    assert len(history.epoch_losses) == len(history.validation_scores) == 12 and history.best_epoch < 11
    assert model.weight.item() == judged[-1]

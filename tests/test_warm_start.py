"""Warm starts (`models/warm_start.py`): a model with grown vocabularies starts where an earlier version was."""

import numpy as np
import torch

from recsys_assets.models.data import Vocabulary
from recsys_assets.models.features import HISTORY
from recsys_assets.models.ranker import Ranker
from recsys_assets.models.two_tower import TwoTower, TwoTowerConfig, item_layout, user_layout
from recsys_assets.models.warm_start import CATEGORIES, ITEMS, USERS, row_map, warm_start

BEFORE = {USERS: Vocabulary(["ann", "bob", "cat"]), ITEMS: Vocabulary(["i1", "i2", "i3", "i4"]),
          CATEGORIES: Vocabulary(["books", "music"])}
# A day later: a new user, a new item sorted between the old ones (every old item's index moves), a new category.
AFTER = {USERS: Vocabulary(["ann", "bob", "cat", "dan"]), ITEMS: Vocabulary(["i0", "i1", "i2", "i3", "i4"]),
         CATEGORIES: Vocabulary(["books", "film", "music"])}


def _sizes(vocabs):
    return dict(n_users=len(vocabs[USERS]), n_items=len(vocabs[ITEMS]), n_categories=len(vocabs[CATEGORIES]),
                user_dense_dim=3, item_dense_dim=5)


def _users(vocabs, user, history, dense):
    """One user row: the history left-padded to its 10 places, as `features.history_indices` packs it."""
    padded = np.pad(vocabs[ITEMS].index(history), (HISTORY - len(history), 0))[None, :]
    return torch.from_numpy(user_layout(3).pack(user=vocabs[USERS].index([user]), history=padded,
                                                user_dense=dense).astype(np.float32))


def _items(vocabs, item, category, dense):
    return torch.from_numpy(item_layout(5).pack(item=vocabs[ITEMS].index([item]),
                                                category=vocabs[CATEGORIES].index([category]),
                                                item_dense=dense).astype(np.float32))


def test_known_users_and_items_are_scored_as_the_version_it_started_from():
    torch.manual_seed(0)
    before = TwoTower(**_sizes(BEFORE)).eval()
    torch.manual_seed(1)
    after = TwoTower(**_sizes(AFTER)).eval()
    started = warm_start(after, before.state_dict(), after.id_tables(), BEFORE, AFTER)
    assert started.whole and not started.fresh
    assert started.remapped["item_sparse.ebc.embedding_bags.t_item_id.weight"] == (5, 6)  # 4 items + padding
    user_dense, item_dense = np.ones((1, 3), np.float32), np.full((1, 5), 0.5, np.float32)
    with torch.no_grad():
        for user, history, item, category in (("bob", ["i1", "i3"], "i4", "music"), ("ann", ["i2"], "i1", "books")):
            was = before.user_vectors(_users(BEFORE, user, history, user_dense)) @ before.item_vectors(
                _items(BEFORE, item, category, item_dense)).T
            now = after.user_vectors(_users(AFTER, user, history, user_dense)) @ after.item_vectors(
                _items(AFTER, item, category, item_dense)).T
            torch.testing.assert_close(now, was)
    # the new ids keep their own initialisation: the new user's row is not an old user's
    table = after.user_sparse.table_names()["user_id"]
    new_row = after.user_sparse.state_dict()[table][AFTER[USERS].index(["dan"])[0]]
    assert not any(torch.equal(new_row, row) for row in before.user_sparse.state_dict()[table])


def test_another_configuration_is_a_partial_warm_start_that_says_what_stayed_fresh():
    before = TwoTower(**_sizes(BEFORE), cfg=TwoTowerConfig(id_dim=32))
    after = TwoTower(**_sizes(AFTER))  # id_dim 64: the id tables and the MLPs' first layers differ
    started = warm_start(after, before.state_dict(), after.id_tables(), BEFORE, AFTER)
    assert not started.whole
    assert "user_sparse.ebc.embedding_bags.t_user_id.weight" in started.fresh and "user_mlp.0.weight" in started.fresh
    assert "user_mlp.2.weight" in started.copied  # same shape: carried over


def test_the_rankers_item_vectors_and_logq_stay_the_days_own():
    before = Ranker(**_sizes(BEFORE), item_init=np.zeros((len(BEFORE[ITEMS]), 8), np.float32))
    todays_vectors = np.random.default_rng(0).normal(size=(len(AFTER[ITEMS]), 8)).astype(np.float32)
    after = Ranker(**_sizes(AFTER), item_init=todays_vectors, negative_sampling_counts=np.arange(len(AFTER[ITEMS])))
    log_q = after.log_q.clone()
    started = warm_start(after, before.state_dict(), after.id_tables(), BEFORE, AFTER)
    assert set(started.kept) == {"item_emb.weight", "log_q"}
    np.testing.assert_allclose(after.item_emb.weight.detach().numpy(), todays_vectors)
    torch.testing.assert_close(after.log_q, log_q)
    old_bob, new_bob = BEFORE[USERS].index(["bob"])[0], AFTER[USERS].index(["bob"])[0]
    torch.testing.assert_close(after.user_emb.weight[new_bob], before.user_emb.weight[old_bob])


def test_row_map_pairs_each_shared_id_and_the_padding_row():
    new_rows, old_rows = row_map(BEFORE[ITEMS], AFTER[ITEMS])
    assert [AFTER[ITEMS].id_of(r) for r in new_rows[1:]] == [BEFORE[ITEMS].id_of(r) for r in old_rows[1:]]
    assert new_rows[0] == old_rows[0] == 0 and len(new_rows) == 5

"""How the rerank fuses its experts: standardised scores, weights from validation, carried by tags."""

import numpy as np
import pandas as pd
import pytest

from recsys_assets.models.fusion import Fusion, grid, standardise
from recsys_assets.serving_data.candidates import RECENT_TOP_KEY, recent_popularity


def test_standardise_ignores_padding_and_floors_what_a_model_cannot_score():
    out = standardise(np.array([[1.0, 3.0, -np.inf, np.nan], [2.0, 2.0, 2.0, 2.0]]))
    finite = np.array([1.0, 3.0, 1.0])  # -inf took the row's lowest score
    np.testing.assert_allclose(out[0, :3], (finite - finite.mean()) / finite.std())
    assert np.isnan(out[0, 3])  # padding stays padding
    assert (out[1] == 0).all()  # a constant row says nothing
    assert np.isnan(standardise(np.array([np.nan, np.nan]))).all()


def test_fusion_weights_move_the_order_between_experts():
    ranker, two_tower = np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0])
    ease, recent = np.array([1.0, 3.0, 2.0]), np.array([0.0, 0.0, 5.0])
    order = lambda f: list(np.argsort(-f.scores(ranker, two_tower, ease, recent), kind="stable"))  # noqa: E731
    assert order(Fusion(retrieval_weight=0.0)) == [0, 1, 2]  # the ranker's
    assert order(Fusion(retrieval_weight=1.0)) == [2, 1, 0]  # the two-tower's
    assert order(Fusion(ease_weight=1.0)) == [1, 2, 0]  # EASE's
    assert order(Fusion(recent_weight=1.0))[0] == 2  # what is popular now
    # An absent expert (a user EASE's batch did not cover) drops out; the rest keep their order.
    assert order(Fusion(retrieval_weight=0.0, ease_weight=0.5)) != order(Fusion(retrieval_weight=0.0))
    without = Fusion(retrieval_weight=0.0, ease_weight=0.5).scores(ranker, two_tower, None, None)
    assert list(np.argsort(-without, kind="stable")) == [0, 1, 2]


def test_the_grid_covers_each_expert_alone_and_tags_carry_a_choice():
    fusions = grid(200.0, with_ease=True)
    assert len(set(fusions)) == len(fusions)
    assert all(f.ease_weight + f.recent_weight <= 1 for f in fusions)
    assert Fusion(0.5, 1.0, 200.0, 0.0) in fusions and Fusion(0.0, 0.0, 200.0, 0.0) in fusions
    assert Fusion(1.0, 0.0, 200.0, 0.0) in fusions
    assert not any(f.uses_ease for f in grid(200.0, with_ease=False))
    chosen = Fusion(0.25, 0.5, 800.0, 0.1)
    assert Fusion.from_tags({**chosen.tags(), "other": "x"}) == chosen
    assert Fusion.from_tags({}) == Fusion()  # a version evaluated before fusion existed: the even two-model mix


def test_recent_popularity_counts_the_last_days_only():
    events = pd.DataFrame({"parent_asin": ["a", "a", "b", "b", "b", "c"], "timestamp": [5, 20, 1, 2, 15, 30]})
    rows = dict(recent_popularity(events, since_ms=10, k=1))
    assert rows[RECENT_TOP_KEY] == [["a", 1]]  # ties by id: a, b (1 each), c
    assert {k: v for k, v in rows.items() if k != RECENT_TOP_KEY} == {"a": 1, "b": 1, "c": 1}
    assert pytest.approx(np.log1p(rows["b"])) == np.log(2)

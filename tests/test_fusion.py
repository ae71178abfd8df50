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
    fusions = grid([(200.0, 0.0, 0.0)])
    assert len(set(fusions)) == len(fusions)
    assert all(f.ease_weight + f.recent_weight <= 1 for f in fusions)
    assert Fusion(0.5, 1.0, 200.0, 0.0) in fusions and Fusion(0.0, 0.0, 200.0, 0.0) in fusions
    assert Fusion(1.0, 0.0, 200.0, 0.0) in fusions
    assert Fusion(0.5, 0.0, 200.0, 1.0) in fusions  # recent popularity's order alone
    assert {f.recent_half_life_days for f in grid([(200.0, 0.0, 0.0)], recent_half_life_days=3.0)} == {3.0}
    assert not any(f.uses_ease for f in grid())
    # Two EASEs (plain, time-aware): each weight of each, the fusions without EASE once.
    both = grid([(200.0, 0.0, 0.0), (50.0, 7.0, 30.0)])
    with_ease = [f for f in both if f.uses_ease]
    assert len(set(both)) == len(both) and len(both) - len(fusions) == len(with_ease) // 2
    assert {f.time_aware_ease for f in with_ease} == {False, True}
    assert Fusion(0.5, 1.0, 50.0, 0.0, 7.0, 7.0, 30.0) in both
    assert not any(f.time_aware_ease for f in both if not f.uses_ease)
    chosen = Fusion(0.25, 0.5, 800.0, 0.1, 3.0)
    assert Fusion.from_tags({**chosen.tags(), "other": "x"}) == chosen
    assert Fusion.from_tags({}) == Fusion()  # a version evaluated before fusion existed: the even two-model mix


def test_a_fusion_says_each_experts_share_of_the_order():
    assert Fusion(0.5, 0.0, 200.0, 1.0, 3.0).describe() == "recent popularity (half-life 3 d) alone"
    assert Fusion(0.5, 1.0, 800.0, 0.0).describe() == "EASE (l2 800) alone"
    assert Fusion(0.5, 1.0, 800.0, 0.0, ease_gram_half_life_days=30.0).describe() == (
        "time-aware EASE (l2 800, half-lives 30 d / 0 d) alone")
    assert Fusion(0.25, 0.25, 800.0, 0.5, 7.0).describe() == (
        "0.5 recent popularity (half-life 7 d) + 0.25 EASE (l2 800) + 0.19 ranker + 0.062 two-tower")


def test_recent_popularity_counts_each_review_decayed_by_its_age():
    day = 86_400_000
    events = pd.DataFrame({"parent_asin": ["a", "b", "b", "b", "c", "d"],
                           "timestamp": [9 * day, 5 * day, 5 * day, 5 * day, 10 * day, 9 * day]})
    rows = dict(recent_popularity(events, now_ms=10 * day, half_life_days=1.0, k=2))
    assert rows["a"] == pytest.approx(0.5) and rows["b"] == pytest.approx(3 / 32)  # 3 reviews, 5 half-lives old
    assert "c" not in rows  # reviewed at `now_ms`, not before
    assert rows[RECENT_TOP_KEY] == [["a", 0.5], ["d", 0.5]]  # ties by id
    # A longer half-life: the three older reviews weigh more than the one recent.
    slow = dict(recent_popularity(events, now_ms=10 * day, half_life_days=30.0, k=1))
    assert slow[RECENT_TOP_KEY][0][0] == "b"
    # The order does not depend on when it is computed, only on the reviews before then.
    later = dict(recent_popularity(events[events["parent_asin"] != "c"], now_ms=12 * day, half_life_days=1.0, k=3))
    assert [i for i, _ in later[RECENT_TOP_KEY]] == ["a", "d", "b"]
    assert later["a"] == pytest.approx(rows["a"] / 4)


def test_the_time_aware_ease_is_chosen_only_where_it_wins_by_more_than_noise():
    from recsys_assets.models.evaluation import choose_fusion

    rng = np.random.default_rng(0)
    base = rng.random(2000)
    plain, time_aware = Fusion(0.5, 0.5, 200.0), Fusion(0.5, 0.5, 50.0, 0.0, 7.0, 30.0, 30.0)
    alone = Fusion(0.5, 0.0, 200.0)
    noise = rng.normal(0.0, 0.2, 2000)
    # Better by much less than its standard error: plain EASE's fusion.
    assert choose_fusion({plain: base, time_aware: base + noise - noise.mean() + 0.0005, alone: base - 0.1}) == plain
    # Better by far more: the time-aware one.
    assert choose_fusion({plain: base, time_aware: base + 0.05 + noise * 0.01, alone: base - 0.1}) == time_aware
    # A best without the time-aware EASE is chosen as it is.
    assert choose_fusion({plain: base, time_aware: base - 0.01, alone: base + 0.02}) == alone
    # The rule weighs one EASE against the other: a fusion without EASE within noise of the best does not count.
    strong = base + 0.05 + noise * 0.01
    assert choose_fusion({plain: base, time_aware: strong, alone: strong - 0.001 + noise - noise.mean()}) == time_aware

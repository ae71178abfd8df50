"""Plain functions under the models: metrics on hand-made cases, k-core, temporal split, negatives, gate."""

import math

import numpy as np
import pandas as pd
import pytest

from recsys_assets.models.data import Vocabulary, k_core, sample_negatives, temporal_split
from recsys_assets.models.features import Layout, delta_buckets
from recsys_assets.models.metrics import classification_report, coverage, ranking_report, recall_ndcg, top_k
from recsys_assets.models.promotion import GATE_EVIDENCE, gate


def test_recall_and_ndcg_on_a_hand_made_case():
    ranked = np.array([[4, 2, 9, 7], [1, 3, 5, 6], [8, 8, 8, 8]])
    relevant = [{2, 7, 11}, {6}, set()]  # the third user has nothing relevant: not averaged
    recall, ndcg = recall_ndcg(ranked, relevant, k=2)
    # user 1: hit at rank 2 of 3 relevant; user 2: no hit in the top 2
    assert recall == pytest.approx((1 / 3 + 0) / 2)
    ideal_1 = 1 + 1 / math.log2(3)  # min(k=2, |relevant|=3) ideal gains
    assert ndcg == pytest.approx(((1 / math.log2(3)) / ideal_1 + 0) / 2)
    recall4, ndcg4 = recall_ndcg(ranked, relevant, k=4)
    assert recall4 == pytest.approx((2 / 3 + 1) / 2)
    ideal_1 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg4 == pytest.approx(((1 / math.log2(3) + 1 / math.log2(5)) / ideal_1 + (1 / math.log2(5)) / 1) / 2)


def test_top_k_excludes_and_orders():
    scores = np.array([[0.1, 0.9, 0.8, 0.7, 0.2]], dtype=np.float32)
    assert top_k(scores, [np.array([1])], 3).tolist() == [[2, 3, 4]]
    # A catalogue smaller than k: what is left after the exclusions, then -1 (never an excluded item).
    assert top_k(np.array([[0.1, 0.5, 0.2, -np.inf]]), [np.array([1])], 4).tolist() == [[2, 0, -1, -1]]
    assert coverage(np.array([[1, 2], [2, 3]]), 2, 10) == pytest.approx(0.3)
    report = ranking_report(np.array([[1, 2, 3]]), [{1}], 3)
    assert report["recall@10"] == 1.0 and report["ndcg@10"] == 1.0


def test_layout_packs_named_groups_in_order_and_no_rows_at_all():
    layout = Layout((("user", 1), ("history", 3)))
    packed = layout.pack(user=np.array([7, 8]), history=np.array([[1, 2, 3], [4, 5, 6]]))
    assert packed.tolist() == [[7, 1, 2, 3], [8, 4, 5, 6]] and layout.column_names() == ["user", "history_0",
                                                                                        "history_1", "history_2"]
    # e.g. the rerank of users who have seen the whole (tiny) catalogue: no candidate rows to score
    assert layout.pack(user=np.zeros(0), history=np.zeros((0, 3))).shape == (0, 4)


def test_classification_report():
    report = classification_report(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.8, 0.3]))
    assert report == {"roc_auc": 1.0, "pr_auc": 1.0}


def test_k_core_repeats_until_stable():
    rows = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "b"), ("u3", "c"),
            ("u4", "c"), ("u4", "x"), ("u5", "c")]
    events = pd.DataFrame(rows, columns=["user_id", "parent_asin"]).assign(rating=5.0, timestamp=range(len(rows)))
    kept = k_core(events, min_user=2, min_item=3)
    # x (1 review) goes; then u4 has 1 item left and goes; then c has 2 reviews and goes; u5 goes with it.
    assert sorted(set(kept.user_id)) == ["u1", "u2", "u3"] and sorted(set(kept.parent_asin)) == ["a", "b"]


def test_temporal_split_keeps_known_users_and_items():
    events = pd.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2", "u1", "u3", "u2", "u2", "u1", "u2"],
        "parent_asin": ["a", "b", "a", "b", "c", "a", "a", "z", "b", "b"],
        "rating": 5.0,
        "timestamp": [1, 2, 3, 4, 5, 6, 7, 8, 9, 9],
    })
    split = temporal_split(events, holdout_fraction=0.5)
    assert split.boundary_timestamp == 6
    assert (split.train.timestamp < 6).all() and (split.holdout.timestamp >= 6).all()
    # u3 (cold user) and z (cold item) are dropped and counted; both events at t=9 stay together.
    assert sorted(zip(split.holdout.user_id, split.holdout.parent_asin)) == [("u1", "b"), ("u2", "a"), ("u2", "b")]
    assert (split.cold_users, split.cold_items, split.cold_events) == (1, 1, 2)
    with pytest.raises(ValueError):
        temporal_split(events, holdout_fraction=1.0)


def test_negatives_are_never_items_the_user_touched():
    items = Vocabulary([f"i{k}" for k in range(20)])
    weights = np.ones(len(items))
    weights[0] = 0
    users = np.array(["u"] * 500 + ["v"] * 500, dtype=object)
    seen = {"u": set(range(1, 16)), "v": {1}}
    negatives = sample_negatives(users, seen, weights, seed=3)
    assert not set(negatives[:500]) & seen["u"] and 1 not in set(negatives[500:])
    assert (negatives > 0).all()
    # Nearly everything seen: the exact fallback finds the one item left; everything seen: no negative (0).
    almost = sample_negatives(np.array(["w"] * 5), {"w": set(range(1, 20))}, weights, seed=0, rounds=1)
    assert almost.tolist() == [20] * 5
    assert sample_negatives(np.array(["w"]), {"w": set(range(1, 21))}, weights, seed=0).tolist() == [0]


def test_time_delta_buckets():
    now = np.array([10 * 86_400_000 * 365 * 2])
    minute, day = 60_000, 86_400_000
    stamps = now[:, None] - np.array([[5 * minute, 30 * minute, 2 * 3_600_000, 3 * day, 20 * day, 100 * day,
                                       2 * 365 * day, 4 * 365 * day, 8 * 365 * day, 11 * 365 * day]])
    buckets = delta_buckets(now, stamps, np.ones_like(stamps, dtype=bool))
    assert buckets.tolist() == [list(range(1, 11))]
    assert delta_buckets(now, stamps, np.zeros_like(stamps, dtype=bool)).max() == 0


def _report(candidate, popularity, champion=None, versions=None, champion_versions=None, noise=None):
    """Validation numbers as given (`noise`: the standard error of the rerank's per-user gain over popularity);
    the holdout's say the opposite, and must not matter."""
    report = {"validation": {"models": {"popularity": {"ndcg@10": popularity}, "rerank": {"ndcg@10": candidate}}},
              "models": {"popularity": {"ndcg@10": candidate}, "rerank": {"ndcg@10": popularity}},
              "versions": versions or {"two_tower": "2"}}
    if noise is not None:
        report["validation"][GATE_EVIDENCE] = {"gain": candidate - popularity, "standard_error": noise, "users": 74}
    if champion is not None:
        report["champion"] = {"versions": champion_versions or {"two_tower": "1"},
                              "validation": {"models": {"rerank": {"ndcg@10": champion}}}}
    return report


def test_gate_promotes_only_a_better_model_than_the_champion_on_the_same_validation_period():
    assert gate(_report(0.3, 0.1), {"two_tower": None}).promote  # first champion
    assert gate(_report(0.3, 0.1, champion=0.25), {"two_tower": "1"}).promote
    refused = gate(_report(0.2, 0.1, champion=0.25), {"two_tower": "1"})
    assert not refused.promote and "champion" in refused.reason and refused.champion == 0.25
    assert not gate(_report(0.09, 0.1), {"two_tower": None}).promote  # popularity is a floor
    # The champion must have been judged on this split: an evaluation that predates it decides nothing.
    stale = gate(_report(0.3, 0.1, champion=0.25, champion_versions={"two_tower": "0"}), {"two_tower": "1"})
    assert not stale.promote and "re-materialize model_evaluation" in stale.reason
    assert not gate(_report(0.3, 0.1), {"two_tower": "1"}).promote
    assert not gate(_report(0.3, 0.1, versions={"two_tower": "1"}), {"two_tower": "1"}).promote  # already it
    # Neither the candidate nor the champion beats popularity on this split: popularity is served.
    retired = gate(_report(0.09, 0.1, champion=0.08), {"two_tower": "1"})
    assert not retired.promote and retired.retire_champion and "popularity is served" in retired.reason
    assert not gate(_report(0.09, 0.1, champion=0.12), {"two_tower": "1"}).retire_champion  # the champion still wins
    assert not gate(_report(0.09, 0.1), {"two_tower": "1"}).retire_champion  # not judged here: no evidence
    # Popularity stays until a model beats it by more than noise; a champion is kept while it beats popularity.
    within_noise = gate(_report(0.030, 0.024, noise=0.012), {"two_tower": None})
    assert not within_noise.promote and "by more than noise" in within_noise.reason and "0.0120" in within_noise.reason
    assert gate(_report(0.30, 0.10, noise=0.012), {"two_tower": None}).promote
    kept = gate(_report(0.030, 0.024, champion=0.026, noise=0.012), {"two_tower": "1"})
    assert not kept.promote and not kept.retire_champion
    assert gate(_report(0.030, 0.024, champion=0.020, noise=0.012), {"two_tower": "1"}).retire_champion
    # A promotion says what the promoted rerank orders by.
    chosen = {**_report(0.3, 0.1), "choices": {"fusion": {"retrieval_weight": 0.5, "ease_weight": 0.0, "ease_l2": 200.0,
                                                          "recent_weight": 1.0, "recent_half_life_days": 3.0}}}
    assert gate(chosen, {"two_tower": None}).reason.endswith("rerank = recent popularity (half-life 3 d) alone")

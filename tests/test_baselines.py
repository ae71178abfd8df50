"""The classical baselines every evaluation reports: EASE and item-kNN, tuned on validation only."""

import json

import numpy as np
import pandas as pd
import pytest

from recsys_assets.models.baselines import (
    BaselineConfig,
    cosine_neighbours,
    ease_weights,
    evaluate_baselines,
    fit_ease,
    interaction_matrix,
    protocol,
    reusable_choice,
    search_grid,
)
from recsys_assets.models.data import DAY_MS, ITEM, TIME, USER, Vocabulary, popularity
from recsys_assets.models.dataset import Cut


def _events(pairs: list[tuple[str, str]], start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({USER: [u for u, _ in pairs], ITEM: [i for _, i in pairs], "rating": 5.0,
                         TIME: np.arange(start, start + len(pairs), dtype=np.int64)})


def test_ease_weights_are_the_closed_form():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 12)) < 0.3).astype(np.float64)
    gram = x.T @ x
    precision = np.linalg.inv(gram + 5.0 * np.eye(12))
    expected = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ease_weights(gram.astype(np.float32), 5.0), expected, atol=1e-4)


def test_ease_recommends_what_co_occurs_and_never_what_was_seen():
    # Everyone who took a took b; c and d go together; u_new took only a.
    pairs = [(f"u{n}", i) for n in range(20) for i in ("a", "b")] + \
            [(f"v{n}", i) for n in range(20) for i in ("c", "d")] + [("u_new", "a")]
    events = _events(pairs)
    users, items = Vocabulary(events[USER]), Vocabulary(events[ITEM])
    model = fit_ease(interaction_matrix(events, users, items), l2=1.0, max_items=100)
    judged = protocol(events, events.iloc[:0], ["u_new"], users, items)
    scores = model.scores(judged.history)[0]
    ranked = [items.id_of(int(i)) for i in np.argsort(-scores) if i > 0]
    assert ranked[0] == "b" and scores[items.index(["b"])[0]] > max(scores[items.index(["c", "d"])])
    assert items.index(["a"])[0] in judged.exclude[0]  # what the user has seen is never recommended


def test_ease_keeps_the_most_popular_items_when_the_catalogue_is_large():
    pairs = [(f"u{n}", i) for n in range(10) for i in ("a", "b")] + [("w", "rare")]
    events = _events(pairs)
    users, items = Vocabulary(events[USER]), Vocabulary(events[ITEM])
    model = fit_ease(interaction_matrix(events, users, items), l2=1.0, max_items=2)
    assert sorted(items.id_of(int(c)) for c in model.columns) == ["a", "b"]
    assert np.isneginf(model.scores(interaction_matrix(events, users, items))[:, items.index(["rare"])]).all()


def test_cosine_neighbours_keep_the_most_similar_per_item():
    gram = np.array([[4, 2, 1, 0], [2, 4, 0, 1], [1, 0, 4, 3], [0, 1, 3, 4]], dtype=np.float32)
    sim = cosine_neighbours(gram, neighbours=1)
    assert (np.count_nonzero(sim, axis=1) == 1).all()
    assert list(np.argmax(sim, axis=1)) == [1, 0, 3, 2]
    assert sim[0, 1] == pytest.approx(2 / 4)


def _drifting_days(seed: int) -> pd.DataFrame:
    """Users whose pairs of items co-occur, over time: enough for a validation split and a holdout."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(3000):
        user = int(rng.integers(0, 150))
        group = user % 10
        rows.append((f"u{user}", f"i{group * 30 + int(rng.integers(0, 30))}", t))
    return pd.DataFrame({USER: [r[0] for r in rows], ITEM: [r[1] for r in rows], "rating": 4.0,
                         TIME: np.array([r[2] for r in rows], dtype=np.int64)})


def _cut(name: str, past: pd.DataFrame, later: pd.DataFrame) -> Cut:
    known = later[later[USER].isin(set(past[USER])) & later[ITEM].isin(set(past[ITEM]))]
    return Cut(name, past, known, int(later[TIME].min()), pd.DataFrame(), pd.DataFrame())


def test_hyper_parameters_are_chosen_on_validation_never_on_the_holdout():
    events = _drifting_days(0)
    train, later = events[events[TIME] < 2400], events[events[TIME] >= 2400]
    validation = _cut("validation", train[train[TIME] < 2100], train[train[TIME] >= 2100])
    holdout = _cut("holdout", train, later)
    users = lambda cut: sorted(set(cut.later[USER]))  # noqa: E731
    cfg = BaselineConfig(ease_l2=(1.0, 100.0, 10_000.0), knn_neighbours=(1, 20))
    tuned, results, details = evaluate_baselines(validation, users(validation), holdout, users(holdout), cfg)
    shuffled = _cut("holdout", train, later.assign(**{ITEM: later[ITEM].sample(frac=1.0, random_state=1).to_numpy()}))
    _, results_shuffled, details_shuffled = evaluate_baselines(validation, users(validation), shuffled,
                                                               users(shuffled), cfg)
    for name, param in (("ease", "l2"), ("item_knn", "neighbours"), ("recent_popularity", "half_life_days")):
        assert details[name][param] == details_shuffled[name][param]
        assert details[name]["validation_ndcg@10"] == details_shuffled[name]["validation_ndcg@10"]
        assert tuned[name]["ndcg@10"] == pytest.approx(max(details[name]["validation_ndcg@10"].values()), abs=1e-5)
        assert set(results[name]) == {"recall@10", "recall@50", "ndcg@10", "coverage@10"}
    # Co-occurring groups are learnable: the tuned baselines beat chance (10 of ~300 items) by far.
    assert results["ease"]["recall@10"] > 0.3 and results["item_knn"]["recall@10"] > 0.3
    assert results_shuffled["ease"]["recall@10"] < results["ease"]["recall@10"]


def _bursts(seed: int) -> pd.DataFrame:
    """Each item is the rage for 10 days (item k from day 5k), then fades: yesterday's hits are not tomorrow's."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(60):
        hot = [k for k in range(12) if 5 * k <= day < 5 * k + 10]
        for _ in range(30):
            item = rng.choice(hot) if rng.random() < 0.8 else rng.integers(0, 12)
            rows.append((f"u{rng.integers(0, 400)}", f"i{item}", day * DAY_MS + int(rng.integers(0, DAY_MS))))
    return pd.DataFrame({USER: [r[0] for r in rows], ITEM: [r[1] for r in rows], "rating": 4.0,
                         TIME: np.array([r[2] for r in rows], dtype=np.int64)})


def test_recent_popularity_follows_the_bursts_all_time_popularity_misses():
    events = _bursts(0)
    train, later = events[events[TIME] < 50 * DAY_MS], events[events[TIME] >= 50 * DAY_MS]
    validation = _cut("validation", train[train[TIME] < 40 * DAY_MS], train[train[TIME] >= 40 * DAY_MS])
    holdout = _cut("holdout", train, later)
    users = lambda cut: sorted(set(cut.later[USER]))  # noqa: E731
    cfg = BaselineConfig(ease_l2=(100.0,), knn_neighbours=(20,), recent_half_life_days=(1.0, 3.0, 1000.0))
    _, results, details = evaluate_baselines(validation, users(validation), holdout, users(holdout), cfg)
    assert details["recent_popularity"]["half_life_days"] in (1.0, 3.0)  # validation saw the bursts fade
    items = Vocabulary(train[ITEM])
    judged = protocol(train, holdout.later, users(holdout), Vocabulary(train[USER]), items)
    all_time = judged.report_scores(popularity(train, items))
    assert results["recent_popularity"]["ndcg@10"] > all_time["ndcg@10"] + 0.1


def test_grid_search_goes_past_the_end_its_best_lies_at():
    cfg = BaselineConfig(edge_steps=3, edge_growth=4.0)
    peaked_at = lambda peak: lambda v: {"ndcg@10": -abs(np.log(v / peak))}  # noqa: E731
    assert sorted(search_grid((10.0, 50.0, 200.0), peaked_at(3000.0), cfg)) == [10.0, 50.0, 200.0, 800.0, 3200.0,
                                                                                  12800.0]
    assert sorted(search_grid((10.0, 50.0, 200.0), peaked_at(1.0), cfg)) == [0.15625, 0.625, 2.5, 10.0, 50.0, 200.0]
    assert sorted(search_grid((10.0, 50.0, 200.0), peaked_at(60.0), cfg)) == [10.0, 50.0, 200.0]  # inside: no more
    assert sorted(search_grid((50.0,), peaked_at(3000.0), cfg)) == [50.0]  # one value: a fixed choice
    assert sorted(search_grid((10.0, 50.0), lambda v: {"ndcg@10": 0.5}, cfg)) == [10.0, 50.0]  # a tie: no reason
    neighbours = search_grid((10, 50), peaked_at(10_000), cfg, usable=lambda k: 1 <= k <= 300)
    assert sorted(neighbours) == [10, 50, 200] and all(isinstance(k, int) for k in neighbours)


def test_interaction_matrix_weights_the_latest_interaction_by_its_age():
    events = pd.DataFrame({USER: ["u", "u", "u", "v"], ITEM: ["a", "a", "b", "a"], "rating": 4.0,
                           TIME: np.array([0, 20, 10, 30], dtype=np.int64) * DAY_MS})
    users, items = Vocabulary(events[USER]), Vocabulary(events[ITEM])
    binary = interaction_matrix(events, users, items).toarray()
    decayed = interaction_matrix(events, users, items, now_ms=30 * DAY_MS, half_life_days=10.0).toarray()
    u, v = users.index(["u", "v"])
    a, b = items.index(["a", "b"])
    assert (binary[u, a], binary[u, b], binary[v, a]) == (1.0, 1.0, 1.0)
    assert decayed[u, a] == pytest.approx(0.5) and decayed[u, b] == pytest.approx(0.25)  # a: its latest, 10 days ago
    assert decayed[v, a] == pytest.approx(1.0)


def _partners_switch(seed: int) -> pd.DataFrame:
    """Each user takes a_k, then within days its partner: b_k until day 100, c_k after (what goes together
    changes). Over 200 days, the earlier pairs outnumber the later ones before the holdout."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(6000):
        start, k = rng.uniform(0, 200) * DAY_MS, int(rng.integers(0, 10))
        rows.append((f"u{n}", f"a{k}", int(start)))
        rows.append((f"u{n}", f"{'b' if start < 100 * DAY_MS else 'c'}{k}", int(start + rng.uniform(0.1, 3) * DAY_MS)))
    frame = pd.DataFrame(rows, columns=[USER, ITEM, TIME]).assign(rating=4.0)
    return frame.sort_values(TIME, ignore_index=True)


def test_time_aware_ease_follows_what_goes_together_now():
    events = _partners_switch(0)
    train, later = events[events[TIME] < 160 * DAY_MS], events[events[TIME] >= 160 * DAY_MS]
    validation = _cut("validation", train[train[TIME] < 120 * DAY_MS], train[train[TIME] >= 120 * DAY_MS])
    holdout = _cut("holdout", train, later)
    users = lambda cut: sorted(set(cut.later[USER]) & set(cut.past[USER]))  # noqa: E731
    cfg = BaselineConfig(ease_l2=(1.0, 10.0), knn_neighbours=(5,), recent_half_life_days=(30.0,))
    tuned, results, details = evaluate_baselines(validation, users(validation), holdout, users(holdout), cfg)
    chosen = details["time_aware_ease"]
    assert 0 < chosen["gram_half_life_days"] <= 30  # co-occurrences of the last weeks, chosen on validation
    assert results["time_aware_ease"]["ndcg@10"] > results["ease"]["ndcg@10"] + 0.2
    assert tuned["time_aware_ease"]["ndcg@10"] == pytest.approx(max(chosen["validation_ndcg@10"].values()), abs=1e-5)


def test_values_chosen_earlier_are_judged_as_they_are_and_score_as_the_search_did():
    """Between full retrains the evaluation reuses the baselines' values (`reusable_choice`): each is fitted and
    judged once, and the same values on the same split give the same metrics as the search gave them."""
    events = _partners_switch(0)
    train, later = events[events[TIME] < 160 * DAY_MS], events[events[TIME] >= 160 * DAY_MS]
    validation = _cut("validation", train[train[TIME] < 120 * DAY_MS], train[train[TIME] >= 120 * DAY_MS])
    holdout = _cut("holdout", train, later)
    users = lambda cut: sorted(set(cut.later[USER]) & set(cut.past[USER]))  # noqa: E731
    cfg = BaselineConfig(ease_l2=(1.0, 10.0), knn_neighbours=(5, 20), recent_half_life_days=(3.0, 30.0))
    args = (validation, users(validation), holdout, users(holdout), cfg)
    searched = evaluate_baselines(*args)
    previous = json.loads(json.dumps(searched[2]))  # as an earlier report stores it
    chosen = reusable_choice(previous, cfg)
    tuned, results, details = evaluate_baselines(*args, chosen)
    assert details["reused_choice"] and not searched[2]["reused_choice"]
    for name in ("ease", "item_knn", "recent_popularity", "time_aware_ease"):
        assert tuned[name] == pytest.approx(searched[0][name]) and results[name] == pytest.approx(searched[1][name])
        assert len(details[name]["validation_ndcg@10"]) == 1 < len(searched[2][name]["validation_ndcg@10"])
    assert details["time_aware_ease"]["gram_half_life_days"] == searched[2]["time_aware_ease"]["gram_half_life_days"]
    # Chosen under other grids, or by an older report without them: searched again.
    assert reusable_choice(previous, BaselineConfig(ease_l2=(1.0, 10.0, 100.0))) is None
    assert reusable_choice({k: v for k, v in previous.items() if k != "time_aware_ease"}, cfg) is None
    assert reusable_choice(None, cfg) is None


def test_an_ease_fit_is_computed_once_and_handed_out_read_only():
    """The evaluation fits the same EASE for the baselines and again as the rerank's experts: one inversion."""
    rng = np.random.default_rng(0)
    x = rng.random((40, 12)).astype(np.float32)
    gram = x.T @ x
    first = ease_weights(gram, 5.0)
    assert ease_weights(gram.copy(), 5.0) is first  # the same Gram, by content
    assert ease_weights(gram, 6.0) is not first and not np.allclose(ease_weights(gram, 6.0), first)
    with pytest.raises(ValueError):
        first[0, 1] = 1.0  # shared: nobody may change it

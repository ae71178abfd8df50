from collections import Counter
from datetime import timedelta

import numpy as np
import pyarrow as pa

from recsys_assets.data.generator import GeneratorConfig, generate, true_choice_scores
from recsys_assets.data.schema import ITEM_SCHEMA, REVIEW_SCHEMA, day_start_ms

CFG = GeneratorConfig(users=3_000, items=800, days=20, reviews=40_000, seed=3)


def _all(cfg=CFG):
    items, days = generate(cfg)
    per_day = list(days)
    return items, per_day, pa.concat_tables([t for _, t in per_day])


def test_schema_sizes_and_day_bounds():
    items, per_day, reviews = _all()
    assert items.schema == ITEM_SCHEMA and items.num_rows == CFG.items
    assert reviews.schema == REVIEW_SCHEMA
    assert abs(reviews.num_rows - CFG.reviews) < 0.1 * CFG.reviews
    assert [d for d, _ in per_day] == [CFG.start + timedelta(days=i) for i in range(CFG.days)]
    for day, table in per_day:
        ts = table.column("timestamp").to_numpy()
        assert ts.min() >= day_start_ms(day) and ts.max() < day_start_ms(day) + 86_400_000
    ratings = reviews.column("rating").to_numpy()
    assert ratings.min() >= 1 and ratings.max() <= 5 and 3.3 < ratings.mean() < 4.6
    keys = Counter(zip(*(reviews.column(c).to_pylist() for c in ("user_id", "parent_asin", "timestamp"))))
    assert max(keys.values()) == 1


def test_long_tails():
    _, _, reviews = _all()
    item_counts = np.sort(np.array(list(Counter(reviews.column("parent_asin").to_pylist()).values())))[::-1]
    user_counts = np.sort(np.array(list(Counter(reviews.column("user_id").to_pylist()).values())))[::-1]
    # The top 10% of items get far more than 10% of reviews; activity is heavy-tailed too.
    assert item_counts[: len(item_counts) // 10].sum() / item_counts.sum() > 0.2
    assert user_counts[: len(user_counts) // 10].sum() / user_counts.sum() > 0.3
    assert user_counts.max() > 10 * np.median(user_counts)


def test_deterministic_for_a_seed_and_different_across_seeds():
    _, _, a = _all()
    _, _, b = _all()
    assert a.equals(b)
    _, _, c = _all(GeneratorConfig(**{**CFG.__dict__, "seed": 4}))
    assert not a.equals(c)


def test_taste_structure_beats_popularity():
    """A user's own genres predict their later items better than global popularity (which is strong: the
    generator is calibrated to real rating data, where popularity is a hard baseline)."""
    items, _, reviews = _all()
    genre = dict(zip(items.column("parent_asin").to_pylist(), (c[1] for c in items.column("categories").to_pylist())))
    rows = sorted(zip(*(reviews.column(c).to_pylist() for c in ("timestamp", "user_id", "parent_asin"))))
    cut = rows[int(len(rows) * 0.8)][0]
    train = [r for r in rows if r[0] < cut]
    test = [r for r in rows if r[0] >= cut]
    popularity = Counter(item for _, _, item in train)
    top_global = [i for i, _ in popularity.most_common(20)]
    user_genres: dict[str, Counter] = {}
    for _, user, item in train:
        user_genres.setdefault(user, Counter())[genre[item]] += 1
    by_genre: dict[str, list[str]] = {}
    for item, _ in popularity.most_common():
        by_genre.setdefault(genre[item], []).append(item)
    hits_pop = hits_genre = n = 0
    for _, user, item in test:
        if user not in user_genres:
            continue
        n += 1
        favourite = user_genres[user].most_common(1)[0][0]
        hits_pop += item in top_global
        hits_genre += item in by_genre[favourite][:20]
    assert n > 1000
    assert hits_genre > 1.2 * hits_pop


def test_popularity_drifts():
    """What was popular last week predicts the next days better than what was popular all along, and the
    drift can be turned off (then last week says no more than the whole history)."""
    def hits(cfg):
        _, _, reviews = _all(cfg)
        rows = sorted(zip(*(reviews.column(c).to_pylist() for c in ("timestamp", "parent_asin"))))
        cut = rows[int(len(rows) * 0.8)][0]
        week = 7 * 86_400_000
        all_time = Counter(i for t, i in rows if t < cut)
        last_week = Counter(i for t, i in rows if cut - week <= t < cut)
        later = [i for t, i in rows if cut <= t < cut + 3 * 86_400_000]
        top = lambda counts: {i for i, _ in counts.most_common(20)}  # noqa: E731
        return sum(i in top(last_week) for i in later), sum(i in top(all_time) for i in later)
    recent, overall = hits(CFG)
    assert recent > 1.2 * overall
    recent, overall = hits(GeneratorConfig(**{**CFG.__dict__, "trend_boost": 0.0}))
    assert recent < 1.1 * overall


def test_true_choice_scores_rank_what_users_take():
    """The generator's hidden truth (what bench/ceiling.py measures the models against) ranks the items users
    take on the last day near the top, with the hidden taste or with the taste read from their history."""
    items, per_day, _ = _all()
    last = per_day[-1][1]
    users = sorted(set(last.column("user_id").to_pylist()))[:400]
    ids = items.column("parent_asin").to_pylist()
    row, col = {u: i for i, u in enumerate(users)}, {a: j for j, a in enumerate(ids)}
    history = np.zeros((len(users), len(ids)))
    for _, table in per_day[:-1]:
        for u, a in zip(table.column("user_id").to_pylist(), table.column("parent_asin").to_pylist()):
            if u in row:
                history[row[u], col[a]] = 1.0
    picked = [(row[u], col[a]) for u, a in zip(last.column("user_id").to_pylist(), last.column("parent_asin").to_pylist())
              if u in row and history[row[u]].any()]
    for taste in (None, history):
        scores = true_choice_scores(CFG, users, ids, CFG.days - 1, taste)
        percentile = np.mean([(scores[r] < scores[r, c]).mean() for r, c in picked])
        assert percentile > 0.85, percentile

"""dbt features: exact point-in-time values on hand-built data, computed independently here.

A feature row for a review moment t is stamped 1 ms later and covers only events strictly before its stamp:
the state once the reviews at t are in.
"""

from datetime import date, datetime, timezone

import duckdb
import pyarrow as pa
import pytest
from conftest import Home

from recsys_assets.data.schema import REVIEW_SCHEMA, day_of_ms, review_file_name
from recsys_assets.defs.features.assets import dbt_features
from recsys_assets.defs.ingest.assets import raw_reviews

DAY_MS = 86_400_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


EVENTS = [  # user, item, rating, time
    ("u1", "a", 5, "2024-10-01T12:00:00"),
    ("u1", "b", 3, "2024-12-20T08:00:00"),
    ("u2", "a", 4, "2024-12-20T09:00:00"),
    ("u1", "c", 4, "2025-01-01T10:00:00"),
    ("u1", "d", 1, "2025-01-01T10:00:00"),  # same moment as u1's "c": neither sees the other
    ("u2", "c", 2, "2025-01-01T10:00:00"),
    ("u1", "a", 2, "2025-01-02T08:00:00"),
    ("u3", "a", 5, "2025-01-02T09:00:00"),
    *[("u4", f"i{k:02d}", 1 + k % 5, f"2024-12-20T{10 + k}:00:00") for k in range(12)],
    ("u4", "a", 3, "2025-01-02T23:59:59.999"),
    ("u2", "a", 1, "2025-01-01T00:00:00"),  # exactly 11 days + 15 h after u2's first "a"
]


def _landing_tables() -> dict[date, pa.Table]:
    by_day: dict[date, list[dict]] = {}
    for user, item, rating, when in EVENTS:
        t = ms(when)
        by_day.setdefault(day_of_ms(t), []).append({
            "user_id": user, "parent_asin": item, "asin": item, "rating": float(rating), "timestamp": t,
            "title": "t", "text": "x", "helpful_vote": 0, "verified_purchase": True, "images": [],
        })
    return {day: pa.Table.from_pylist(rows, schema=REVIEW_SCHEMA) for day, rows in by_day.items()}


def expected_user_stats() -> dict[tuple, tuple]:
    rows = {}
    for user, _, _, when in EVENTS:
        t = ms(when) + 1
        before = sorted((ms(w), i, r) for u, i, r, w in EVENTS if u == user and ms(w) < t)
        recent = [r for r in before if r[0] >= t - 90 * DAY_MS]
        last10 = before[-10:]
        rows[(user, t)] = (
            len(recent),
            sum(r[2] for r in recent) / len(recent) if recent else None,
            [r[1] for r in last10],
            [r[0] for r in last10],
        )
    return rows


def expected_item_stats() -> dict[tuple, tuple]:
    rows = {}
    for _, item, _, when in EVENTS:
        t = ms(when) + 1
        values = []
        for days in (7, 30, 90, 365):
            window = [r for _, i, r, w in EVENTS if i == item and t - days * DAY_MS <= ms(w) < t]
            values += [len(window), sum(window) / len(window) if window else None]
        rows[(item, t)] = tuple(values)
    return rows


def _read(home, sql):
    con = duckdb.connect(str(home.settings.warehouse_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def featurized(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("features") / "recsys_home")
    tables = _landing_tables()
    for day, table in tables.items():
        home.landing.write_parquet(review_file_name(day), table)
    # Day by day, like the sensor does: windows must reach across partition boundaries.
    for day in sorted(tables):
        home.materialize([raw_reviews, dbt_features], str(day))
    return home


def _epoch_ms(ts: datetime) -> int:
    return int(ts.replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_user_rating_stats_exact_point_in_time(featurized):
    got = {
        (u, _epoch_ms(ts)): (cnt, avg, items, stamps)
        for u, ts, cnt, avg, items, stamps in _read(featurized, """
            select user_id, timestamp, user_rating_cnt_90d, user_rating_avg_prev_rating_90d,
                   user_rating_list_10_recent_asin, user_rating_list_10_recent_asin_timestamp
            from main.user_rating_stats""")
    }
    expected = expected_user_stats()
    assert got.keys() == expected.keys()
    for key, (cnt, avg, items, stamps) in expected.items():
        g = got[key]
        assert g[0] == cnt, key
        assert g[1] == pytest.approx(avg), key
        assert list(g[2]) == items and list(g[3]) == stamps, key
    # Stamped after the moment it describes: the original counted the current review in a row stamped at it.
    assert got[("u3", ms("2025-01-02T09:00:00") + 1)][:2] == (1, 5.0)
    assert ("u3", ms("2025-01-02T09:00:00")) not in got
    # Reviews sharing a moment are all in the state after it (u1's "c" and "d").
    assert got[("u1", ms("2025-01-01T10:00:00") + 1)][2][-2:] == ["c", "d"]
    assert len(got[("u4", ms("2025-01-02T23:59:59.999") + 1)][2]) == 10


def test_parent_asin_rating_stats_exact_point_in_time(featurized):
    got = {(i, _epoch_ms(row[1])): tuple(row[2:]) for i, *rest in _read(featurized, """
            select parent_asin, timestamp,
                   parent_asin_rating_cnt_7d, parent_asin_rating_avg_prev_rating_7d,
                   parent_asin_rating_cnt_30d, parent_asin_rating_avg_prev_rating_30d,
                   parent_asin_rating_cnt_90d, parent_asin_rating_avg_prev_rating_90d,
                   parent_asin_rating_cnt_365d, parent_asin_rating_avg_prev_rating_365d
            from main.parent_asin_rating_stats""") for row in [(i, *rest)]}
    expected = expected_item_stats()
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        assert got[key] == pytest.approx(values, nan_ok=True), key


def test_rerunning_a_partition_does_not_duplicate(featurized):
    before = _read(featurized, "select count(*) from main.user_rating_stats")[0][0]
    featurized.materialize([raw_reviews, dbt_features], "2025-01-02")
    assert _read(featurized, "select count(*) from main.user_rating_stats")[0][0] == before


def test_generated_pipeline_features_cover_every_review_moment(generated_home):
    users, moments = _read(generated_home, """
        select (select count(*) from main.user_rating_stats),
               (select count(distinct (user_id, timestamp)) from raw.raw_reviews)""")[0]
    assert users == moments > 0

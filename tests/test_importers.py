"""Importers write the same landing files as the generator, from files in the real formats."""

import gzip
import json
from datetime import date

import pyarrow.parquet as pq
import pytest

from recsys_assets.data.importers import import_amazon2023, import_interactions
from recsys_assets.data.landing import LocalLandingZone, review_days
from recsys_assets.data.schema import ITEM_SCHEMA, ITEMS_FILE, REVIEW_SCHEMA, review_file_name
from recsys_assets.warehouse.validation import validate_items, validate_review_day

# Amazon Reviews 2023 lines, as the published files write them.
REVIEWS = [
    {"rating": 5.0, "title": "Great", "text": "Loved it", "images": [], "asin": "B01", "parent_asin": "P1",
     "user_id": "U1", "timestamp": 1588615855070, "helpful_vote": 2, "verified_purchase": True},
    {"rating": 3.0, "title": "Ok", "text": "Fine", "images": [{"small_image_url": "s", "medium_image_url": "m",
     "large_image_url": "https://img/l.jpg", "attachment_type": "IMAGE"}], "asin": "B02", "parent_asin": "P2",
     "user_id": "U1", "timestamp": 1588702255070, "helpful_vote": 0, "verified_purchase": False},
    {"rating": 4.0, "title": "Good", "text": "Nice", "images": [], "asin": "B01", "parent_asin": "P1",
     "user_id": "U2", "timestamp": 1588702255999, "helpful_vote": 1, "verified_purchase": True},
    # exact duplicate of the first line, and a line with no user: both dropped and counted
    {"rating": 5.0, "title": "Great", "text": "Loved it", "images": [], "asin": "B01", "parent_asin": "P1",
     "user_id": "U1", "timestamp": 1588615855070, "helpful_vote": 2, "verified_purchase": True},
    {"rating": 2.0, "title": "x", "text": "y", "images": [], "asin": "B03", "parent_asin": "P3",
     "user_id": None, "timestamp": 1588702255070, "helpful_vote": 0, "verified_purchase": True},
]
META = [
    {"main_category": "Books", "title": "Book One", "average_rating": 4.5, "rating_number": 10,
     "features": ["hardcover"], "description": ["A story", "of things"], "price": 12.99,
     "images": [{"thumb": "t", "large": "https://img/p1.jpg", "variant": "MAIN", "hi_res": None}],
     "videos": [], "store": "Penguin", "categories": ["Books", "Fiction"], "details": {}, "parent_asin": "P1",
     "bought_together": None},
    {"main_category": "Books", "title": "Book Two", "average_rating": 4.0, "rating_number": 3,
     "features": [], "description": [], "price": None, "images": [], "videos": [], "store": None,
     "categories": [], "details": {}, "parent_asin": "P2", "bought_together": None},
]


def _jsonl_gz(path, rows):
    with gzip.open(path, "wt") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _assert_valid_landing(zone):
    days = review_days(zone.list_files())
    for day in days:
        table = zone.read_parquet(review_file_name(day))
        assert table.schema == REVIEW_SCHEMA
        assert all(o.passed for o in validate_review_day(day, table)), day
    items = zone.read_parquet(ITEMS_FILE)
    assert items.schema == ITEM_SCHEMA and all(o.passed for o in validate_items(items))
    return days, items


def test_amazon2023_jsonl_gz(tmp_path):
    _jsonl_gz(tmp_path / "Books.jsonl.gz", REVIEWS)
    _jsonl_gz(tmp_path / "meta_Books.jsonl.gz", META)
    zone = LocalLandingZone(tmp_path / "landing")
    report = import_amazon2023(tmp_path / "Books.jsonl.gz", tmp_path / "meta_Books.jsonl.gz", zone)
    assert (report.reviews, report.items, report.dropped_duplicates, report.dropped_invalid) == (3, 2, 1, 1)
    days, items = _assert_valid_landing(zone)
    assert days == [date(2020, 5, 4), date(2020, 5, 5)]
    second = zone.read_parquet(review_file_name(date(2020, 5, 5))).to_pylist()
    assert {r["user_id"] for r in second} == {"U1", "U2"}
    assert next(r for r in second if r["parent_asin"] == "P2")["images"] == ["https://img/l.jpg"]
    p1 = next(r for r in items.to_pylist() if r["parent_asin"] == "P1")
    assert p1 == {"parent_asin": "P1", "main_category": "Books", "title": "Book One", "features": ["hardcover"],
                  "description": "A story of things", "price": 12.99, "categories": ["Books", "Fiction"],
                  "store": "Penguin", "image_url": "https://img/p1.jpg"}


def test_interactions_csv_in_seconds_with_movielens_style_items(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n1,20,5.0,964982224\n2,10,3.5,964983815\n"
        "2,30,9.0,964983815\n"
    )
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n10,Toy Story,Animation|Comedy\n20,Heat,Action\n")
    zone = LocalLandingZone(tmp_path / "landing")
    report = import_interactions(tmp_path / "ratings.csv", zone, tmp_path / "movies.csv")
    assert report.timestamp_unit == "s" and report.reviews == 3 and report.dropped_invalid == 1
    days, items = _assert_valid_landing(zone)
    assert days == [date(2000, 7, 30)]
    rows = zone.read_parquet(review_file_name(days[0])).to_pylist()
    assert {(r["user_id"], r["parent_asin"], r["timestamp"]) for r in rows} == {
        ("1", "10", 964982703000), ("1", "20", 964982224000), ("2", "10", 964983815000)}
    toy = next(r for r in items.to_pylist() if r["parent_asin"] == "10")
    assert toy["title"] == "Toy Story" and toy["categories"] == ["Animation", "Comedy"]


def test_recbole_atomic_files_as_recbole_ships_movielens(tmp_path):
    (tmp_path / "ml.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                       "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    (tmp_path / "ml.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                      "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery\n")
    zone = LocalLandingZone(tmp_path / "landing")
    report = import_interactions(tmp_path / "ml.inter", zone, tmp_path / "ml.item")
    assert report.timestamp_unit == "s" and report.reviews == 2 and report.items == 2
    days, items = _assert_valid_landing(zone)
    # Every day between the two gets a file, without rows: one range of days for the pipeline to load.
    assert (days[0], days[-1], len(days), report.days_without_reviews) == (date(1997, 12, 4), date(1998, 4, 4), 122, 120)
    assert [zone.read_parquet(review_file_name(d)).num_rows for d in (days[0], days[1], days[-1])] == [1, 0, 1]
    confidential = next(r for r in items.to_pylist() if r["parent_asin"] == "302")
    assert confidential["title"] == "L.A. Confidential"
    assert confidential["categories"] == ["Crime", "Film-Noir", "Mystery"]


@pytest.mark.parametrize("suffix", ["parquet", "tsv"])
def test_interactions_in_milliseconds_without_item_file(tmp_path, suffix):
    import pyarrow as pa

    table = pa.table({"user_id": ["a", "b", "a"], "item_id": ["x", "x", "y"], "rating": [5, 4, 1],
                      "timestamp": [1700000000000, 1700000100000, 1700086400000]})
    path = tmp_path / f"events.{suffix}"
    if suffix == "parquet":
        pq.write_table(table, path)
    else:
        path.write_text("user_id\titem_id\trating\ttimestamp\n" + "\n".join(
            "\t".join(str(v) for v in row.values()) for row in table.to_pylist()) + "\n")
    zone = LocalLandingZone(tmp_path / "landing")
    report = import_interactions(path, zone)
    assert report.timestamp_unit == "ms" and report.reviews == 3
    days, items = _assert_valid_landing(zone)
    assert days == [date(2023, 11, 14), date(2023, 11, 15)]
    assert sorted(items.column("parent_asin").to_pylist()) == ["x", "y"]


def test_interactions_missing_column_is_a_clear_error(tmp_path):
    (tmp_path / "bad.csv").write_text("user,rating,timestamp\n1,4,964982703\n")
    with pytest.raises(ValueError, match="missing columns \\['item_id'\\]"):
        import_interactions(tmp_path / "bad.csv", LocalLandingZone(tmp_path / "landing"))


def test_transactions_with_dates_and_no_ratings_import_as_implicit_feedback(tmp_path):
    """H&M-style purchases: a date per row, no rating. Without `implicit` the missing rating is a clear error
    that says what to do; with it each purchase is a positive."""
    path = tmp_path / "transactions.csv"
    path.write_text("t_dat,customer_id,article_id,price\n2018-09-20,c1,a1,0.05\n2018-09-20,c2,a1,0.03\n"
                    "2018-09-21,c1,a2,0.02\n")
    zone = LocalLandingZone(tmp_path / "landing")
    with pytest.raises(ValueError, match="missing columns \\['rating'\\].*--implicit"):
        import_interactions(path, zone)
    report = import_interactions(path, zone, implicit=True)
    assert (report.reviews, report.dropped_invalid, report.timestamp_unit) == (3, 0, "datetime")
    days, _ = _assert_valid_landing(zone)
    assert days == [date(2018, 9, 20), date(2018, 9, 21)]
    rows = zone.read_parquet(review_file_name(days[1])).to_pylist()
    assert [(r["user_id"], r["parent_asin"], r["rating"], r["timestamp"]) for r in rows] == [
        ("c1", "a2", 5.0, 1537488000000)]  # 2018-09-21T00:00:00Z


@pytest.mark.parametrize("values, unit", [
    ([1700000000000000, 1700000060000000], "us"),
    ([1700000000000000000, 1700000060000000000], "ns"),
    (["2023-11-14 22:13:20", "2023-11-14T22:14:20"], "datetime"),
])
def test_timestamps_in_any_epoch_unit_or_as_date_times(tmp_path, values, unit):
    import pyarrow as pa

    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"], "rating": [4.0, 5.0],
                             "timestamp": values}), path)
    zone = LocalLandingZone(tmp_path / "landing")
    report = import_interactions(path, zone)
    assert report.timestamp_unit == unit and report.reviews == 2
    days, _ = _assert_valid_landing(zone)
    rows = zone.read_parquet(review_file_name(days[0])).to_pylist()
    assert days == [date(2023, 11, 14)] and [r["timestamp"] for r in rows] == [1700000000000, 1700000060000]


def test_named_columns_and_a_ten_point_rating_scale(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("who,what,points,when\nu1,i1,10,964982703\nu1,i2,1,964982704\nu2,i1,5.5,964982705\n"
                    "u2,i3,11,964982706\n")
    zone = LocalLandingZone(tmp_path / "landing")
    with pytest.raises(ValueError, match="no column 'stars'"):
        import_interactions(path, zone, columns={"rating": "stars"})
    report = import_interactions(path, zone, columns={"user_id": "who", "item_id": "what", "rating": "points",
                                                      "timestamp": "when"}, rating_scale=(1, 10))
    # 11 is off the 1..10 scale: dropped as invalid and counted, never folded onto 5.
    assert (report.reviews, report.dropped_invalid, report.timestamp_unit) == (3, 1, "s")
    days, _ = _assert_valid_landing(zone)
    rows = zone.read_parquet(review_file_name(days[0])).to_pylist()
    assert sorted((r["user_id"], r["parent_asin"], r["rating"]) for r in rows) == [
        ("u1", "i1", 5.0), ("u1", "i2", 1.0), ("u2", "i1", 3.0)]


def test_cli_import_takes_column_names_and_the_rating_scale(tmp_path):
    """What a user types: `recsys import interactions FILE --user-column ... --rating-scale 0.5 5`."""
    import os
    import subprocess
    import sys

    path = tmp_path / "ratings.csv"
    path.write_text("member,film,stars,watched_on\nm1,f1,0.5,2024-01-02\nm2,f1,5,2024-01-03\n")
    env = {**os.environ, "RECSYS_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "recsys_assets.cli", "import", "interactions", str(path),
                          "--user-column", "member", "--item-column", "film", "--rating-column", "stars",
                          "--timestamp-column", "watched_on", "--rating-scale", "0.5", "5"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "imported 2 reviews over 2 days (2024-01-02..2024-01-03" in out.stdout and "datetime" in out.stdout
    zone = LocalLandingZone(tmp_path / "home" / "landing")
    assert zone.read_parquet(review_file_name(date(2024, 1, 2))).column("rating").to_pylist() == [1.0]

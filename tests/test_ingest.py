"""raw_reviews / item_metadata: idempotent loads, and every kind of bad input blocked with the old data kept."""

from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import recsys_env
from dagster import materialize

from recsys_assets.data.schema import ITEMS_FILE, review_file_name
from recsys_assets.defs.ingest.assets import item_metadata, raw_reviews
from recsys_assets.warehouse.stores import DuckDBWarehouse

DAY = date(2024, 1, 2)


def _counts(home):
    return DuckDBWarehouse(home.settings.warehouse_path).row_counts("raw_reviews")


def test_rematerializing_a_partition_replaces_it(home):
    home.write_generated()
    home.materialize([raw_reviews], "2024-01-01", "2024-01-03")
    before = _counts(home)
    landed = home.landing.read_parquet(review_file_name(DAY)).num_rows
    assert before[DAY] == landed and len(before) == 3
    home.materialize([raw_reviews], str(DAY))
    home.materialize([raw_reviews], str(DAY))
    assert _counts(home) == before
    rows = DuckDBWarehouse(home.settings.warehouse_path).query(
        "select count(*) as n, count(distinct (user_id, parent_asin, timestamp)) as d from raw.raw_reviews")
    assert rows.column("n")[0].as_py() == rows.column("d")[0].as_py()


def _corrupt(table: pa.Table, kind: str) -> pa.Table:
    if kind == "missing_column":
        return table.drop_columns(["rating"])
    if kind == "wrong_type":
        return table.set_column(table.schema.get_field_index("timestamp"), "timestamp",
                                pc.cast(table.column("timestamp"), pa.string()))
    if kind == "rating_out_of_range":
        ratings = table.column("rating").to_pylist()
        ratings[0] = 7.0
        return table.set_column(table.schema.get_field_index("rating"), "rating", pa.array(ratings, pa.float64()))
    if kind == "null_key":
        users = table.column("user_id").to_pylist()
        users[1] = None
        return table.set_column(0, "user_id", pa.array(users, pa.string()))
    if kind == "duplicates":
        return pa.concat_tables([table, table.slice(0, 3)])
    if kind == "timestamp_outside_day":
        ts = table.column("timestamp").to_pylist()
        ts[-1] += 86_400_000
        return table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pa.array(ts, pa.int64()))
    if kind == "empty":
        return table.slice(0, 0)
    raise ValueError(kind)


BAD = {
    "missing_column": "schema",
    "wrong_type": "schema",
    "rating_out_of_range": "rating_in_range",
    "null_key": "non_null_keys",
    "duplicates": "no_duplicates",
    "timestamp_outside_day": "timestamps_in_partition",
    "empty": "not_emptied",
}


@pytest.fixture
def loaded(home):
    home.write_generated()
    home.materialize([raw_reviews], "2024-01-01", "2024-01-03")
    return home


def _failed_checks(result) -> dict[str, str]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.description
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
    }


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_file_fails_its_check_and_keeps_previous_data(loaded, kind):
    home = loaded
    before = _counts(home)
    good = home.landing.read_parquet(review_file_name(DAY))
    home.landing.write_parquet(review_file_name(DAY), _corrupt(good, kind))

    result = home.materialize([raw_reviews], str(DAY), raise_on_error=False)

    assert not result.success
    failed = _failed_checks(result)
    assert BAD[kind] in failed, failed
    assert failed[BAD[kind]] and "not evaluated" not in failed[BAD[kind]]
    assert not result.get_asset_materialization_events()  # nothing recorded as materialized
    assert _counts(home) == before  # the previous good rows of that day are intact


def test_a_day_without_reviews_loads_empty_in_its_range(home):
    """Imported history has days without reviews (an empty file): they load, so the range runs as one."""
    home.write_generated()
    good = home.landing.read_parquet(review_file_name(DAY))
    home.landing.write_parquet(review_file_name(DAY), good.slice(0, 0))
    result = home.materialize([raw_reviews], "2024-01-01", "2024-01-03")
    assert result.success
    counts = _counts(home)
    assert DAY not in counts and len(counts) == 2
    # Once the day holds reviews, an empty file for it is rejected (covered by the bad-file cases above).


def test_unreadable_file_is_a_schema_failure(loaded):
    home = loaded
    before = _counts(home)
    (home.settings.landing_dir / review_file_name(DAY)).write_bytes(b"this is not parquet")
    result = home.materialize([raw_reviews], str(DAY), raise_on_error=False)
    assert not result.success
    assert "unreadable" in _failed_checks(result)["schema"]
    assert _counts(home) == before


def test_bad_day_in_a_range_blocks_the_whole_range(loaded):
    home = loaded
    good = home.landing.read_parquet(review_file_name(DAY))
    home.landing.write_parquet(review_file_name(DAY), _corrupt(good, "rating_out_of_range"))
    result = home.materialize([raw_reviews], "2024-01-01", "2024-01-04", raise_on_error=False)
    assert not result.success
    assert str(DAY) in _failed_checks(result)["rating_in_range"]
    assert date(2024, 1, 4) not in _counts(home)


def test_missing_landing_file_fails_clearly(loaded):
    result = loaded.materialize([raw_reviews], "2024-02-20", raise_on_error=False)
    assert not result.success
    assert "unreadable" in _failed_checks(result)["schema"]


def test_item_metadata_loads_and_rejects_bad_catalogue(home):
    home.write_generated()
    with recsys_env(home.path):
        assert materialize([item_metadata], resources=home.resources(), instance=home.instance).success
        items = home.landing.read_parquet(ITEMS_FILE)
        home.landing.write_parquet(ITEMS_FILE, pa.concat_tables([items, items.slice(0, 1)]))
        result = materialize([item_metadata], resources=home.resources(), instance=home.instance, raise_on_error=False)
    assert not result.success
    assert "unique_parent_asin" in _failed_checks(result)
    stored = DuckDBWarehouse(home.settings.warehouse_path).query("select count(*) as n from raw.item_metadata")
    assert stored.column("n")[0].as_py() == items.num_rows


def test_many_days_validate_together_each_day_keeping_its_own_findings(home):
    """A range is checked in one pass (imported history can be thousands of days); each day's counts stay its
    own: one bad day names only itself, and a day shifted by a day is caught though its rows are valid elsewhere."""
    from datetime import timedelta

    from recsys_assets.warehouse.validation import REVIEW_CHECKS, validate_review_days

    home.write_generated()
    good = {DAY + timedelta(days=n): home.landing.read_parquet(review_file_name(DAY + timedelta(days=n)))
            for n in range(4)}
    days = list(good)
    files = {days[0]: (good[days[0]], None),
             days[1]: (_corrupt(good[days[1]], "duplicates"), None),
             days[2]: (good[days[3]], None),  # the next day's rows under this day's name: all outside it
             days[3]: (None, "OSError: gone"),
             DAY - timedelta(days=1): (good[days[0]].slice(0, 0), None)}  # a day without reviews
    outcomes = validate_review_days(files, {days[0]: 5})
    failed = {day: {o.name: o.metadata.get("rows") for o in found if not o.passed} for day, found in outcomes.items()}
    assert failed[days[0]] == {} and failed[DAY - timedelta(days=1)] == {}
    assert failed[days[1]] == {"no_duplicates": 3}
    assert failed[days[2]] == {"timestamps_in_partition": good[days[3]].num_rows}
    assert set(failed[days[3]]) == set(REVIEW_CHECKS) and "unreadable" in outcomes[days[3]][0].message

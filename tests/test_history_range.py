"""A long history loaded as one range run (what `recsys pipeline` does with an import): the same feature rows and
online values as loading it day by day, and Dagster's record of every day (written in batches, see
`defs/shared/event_log.py`) as complete as a run per day leaves it."""

from datetime import date

import duckdb
import pytest
from conftest import Home

from recsys_assets.data.generator import GeneratorConfig
from recsys_assets.data.schema import review_file_name
from recsys_assets.defs.feature_store.assets import online_features
from recsys_assets.defs.features.assets import dbt_features
from recsys_assets.defs.ingest.assets import item_metadata, raw_reviews
from recsys_assets.defs.ingest.sensors import loaded_fingerprint
from recsys_assets.defs.shared.event_log import BatchedSqliteEventLogStorage
from recsys_assets.feature_store.definitions import BATCH_VIEWS, FEATURES_BY_VIEW, KEY_BY_VIEW

# 12 days: the 7-day windows slide across partition boundaries and every day's lookback reaches the first day.
# (40 days, day by day, took over 15 minutes on a busy 2-core machine: a dbt invocation per day.)
HISTORY = GeneratorConfig(users=60, items=40, days=12, reviews=600, start=date(2024, 1, 1), seed=3)
FEATURE_TABLES = ("user_rating_stats", "parent_asin_rating_stats")
PARTITIONED = (raw_reviews, dbt_features, online_features)


def _load(home: Home, by_day: bool) -> Home:
    home.days = home.write_generated(HISTORY)
    home.materialize_unpartitioned([item_metadata])
    if by_day:
        for day in home.days:
            home.materialize(list(PARTITIONED), str(day))
    else:
        home.materialize(list(PARTITIONED), str(home.days[0]), str(home.days[-1]))
    return home


@pytest.fixture(scope="module")
def by_range(tmp_path_factory) -> Home:
    """On disk, as `recsys init-dagster-home` configures it: the batched SQLite event log."""
    return _load(Home(tmp_path_factory.mktemp("range") / "recsys_home", persistent_instance=True), by_day=False)


@pytest.fixture(scope="module")
def by_day(tmp_path_factory) -> Home:
    return _load(Home(tmp_path_factory.mktemp("days") / "recsys_home"), by_day=True)


def _rows(home: Home, table: str) -> list[tuple]:
    con = duckdb.connect(str(home.settings.warehouse_path), read_only=True)
    try:
        return con.execute(f"select * from main.{table} order by all").fetchall()
    finally:
        con.close()


def _online(home: Home, view: str) -> dict:
    key = KEY_BY_VIEW[view]
    keys = sorted({row[0] for row in _rows(home, view)})
    values = home.feature_repository().store.get_online_features(
        features=[f"{view}:{f.name}" for f in FEATURES_BY_VIEW[view]], entity_rows=[{key: k} for k in keys]
    ).to_dict()
    return {name: [list(v) if isinstance(v, (list, tuple)) else v for v in column] for name, column in values.items()}


@pytest.mark.parametrize("table", FEATURE_TABLES)
def test_a_range_run_computes_the_same_feature_rows_as_day_by_day(by_range, by_day, table):
    rows = _rows(by_range, table)
    assert len(rows) > 300
    assert rows == _rows(by_day, table)


@pytest.mark.parametrize("view", BATCH_VIEWS)
def test_a_range_run_serves_the_same_online_values_as_day_by_day(by_range, by_day, view):
    online = _online(by_range, view)
    assert len(online[KEY_BY_VIEW[view]]) > 30
    assert online == _online(by_day, view)


def test_the_batched_event_log_records_every_day_once(by_range):
    instance = by_range.instance
    assert isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
    days = {str(day) for day in by_range.days}
    for key in (raw_reviews.key, *dbt_features.keys, online_features.key):
        assert instance.get_materialized_partitions(key) == days, key
        assert len(instance.fetch_materializations(key, limit=1000).records) == len(days), key
    # Each day's landing file version, as the landing sensor reads it (it skips files already loaded).
    files = by_range.landing.list_files()
    for day in by_range.days:
        assert loaded_fingerprint(instance, review_file_name(day)) == files[review_file_name(day)]


def test_rerunning_part_of_the_range_changes_no_row(by_range):
    before = {table: _rows(by_range, table) for table in FEATURE_TABLES}
    by_range.materialize(list(PARTITIONED), str(by_range.days[3]), str(by_range.days[8]))
    assert {table: _rows(by_range, table) for table in FEATURE_TABLES} == before
    assert len(by_range.instance.fetch_materializations(raw_reviews.key, limit=1000).records) == 12 + 6
    assert by_range.instance.get_materialized_partitions(raw_reviews.key) == {str(d) for d in by_range.days}

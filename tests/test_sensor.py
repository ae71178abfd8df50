"""The landing sensor: a new file requests exactly its partition, once; a replaced file requests it again."""

import json
from datetime import date

from dagster import DagsterInstance, build_sensor_context

from recsys_assets.data.schema import ITEMS_FILE, review_file_name
from recsys_assets.defs.ingest.sensors import landing_sensor


def _tick(home, cursor=None, instance=None):
    context = build_sensor_context(instance=instance or DagsterInstance.ephemeral(), cursor=cursor,
                                   resources={"landing": home.resources()["landing"]})
    result = landing_sensor(context)
    return result.run_requests or [], result.cursor


def _requested(requests):
    return sorted((r.partition_key or "", tuple(k.to_user_string() for k in r.asset_selection)) for r in requests)


def test_new_files_request_their_partitions_once(home):
    cfg_days = home.write_generated()
    requests, cursor = _tick(home)
    assert _requested(requests) == sorted(
        [("", ("item_metadata",))] + [(str(d), ("raw_reviews",)) for d in cfg_days]
    )
    again, cursor = _tick(home, cursor)
    assert again == []

    new_day = date(2024, 1, 7)
    table = home.landing.read_parquet(review_file_name(date(2024, 1, 6)))
    home.landing.write_parquet(review_file_name(new_day), table)
    requests, cursor = _tick(home, cursor)
    assert _requested(requests) == [("2024-01-07", ("raw_reviews",))]
    assert _tick(home, cursor)[0] == []


def test_replaced_file_is_requested_again_with_a_new_run_key(home):
    home.write_generated()
    first, cursor = _tick(home)
    items = home.landing.read_parquet(ITEMS_FILE)
    home.landing.write_parquet(ITEMS_FILE, items.slice(0, 10))
    requests, _ = _tick(home, cursor)
    assert _requested(requests) == [("", ("item_metadata",))]
    assert requests[0].run_key not in {r.run_key for r in first}


def test_files_before_the_first_partition_are_not_requested(home):
    home.write_generated()
    table = home.landing.read_parquet(review_file_name(date(2024, 1, 1)))
    home.landing.write_parquet(review_file_name(date(1999, 5, 1)), table)
    requests, cursor = _tick(home)
    assert "1999-05-01" not in {r.partition_key for r in requests}
    assert "recsys_data_upto_1999_05_01.parquet" in json.loads(cursor)


def test_non_landing_files_are_ignored(home):
    home.settings.landing_dir.mkdir(parents=True)
    (home.settings.landing_dir / "notes.parquet").write_bytes(b"x")
    requests, _ = _tick(home)
    assert requests == []


def test_files_already_loaded_by_a_run_are_not_loaded_again(home):
    """`make pipeline` before `make dev`: the sensor's first tick skips days and the catalogue loaded from
    the same file (reloading them would retrain the newest day for nothing)."""
    from recsys_assets.defs.ingest.assets import item_metadata, raw_reviews

    days = home.write_generated()
    home.materialize_unpartitioned([item_metadata])
    home.materialize([raw_reviews], str(days[0]), str(days[2]))
    requests, cursor = _tick(home, instance=home.instance)
    assert _requested(requests) == [(str(d), ("raw_reviews",)) for d in days[3:]]

    table = home.landing.read_parquet(review_file_name(days[0]))
    home.landing.write_parquet(review_file_name(days[0]), table.slice(0, 5))  # corrected file re-landed
    home.landing.write_parquet(ITEMS_FILE, home.landing.read_parquet(ITEMS_FILE).slice(0, 50))
    requests, _ = _tick(home, cursor, instance=home.instance)
    assert _requested(requests) == [("", ("item_metadata",)), (str(days[0]), ("raw_reviews",))]


def test_logged_interactions_land_in_their_day_and_the_day_is_ingested_again(home):
    """POST /interactions logs events; landed_interactions merges a day's events into its landing file
    (once), and the landing sensor requests that day again."""
    from recsys_assets.data.schema import day_start_ms
    from recsys_assets.defs.ingest.interactions import landed_interactions
    from recsys_assets.serving_data.events import EventLog

    days = home.write_generated()
    _, cursor = _tick(home)
    day = days[-1]
    before = home.landing.read_parquet(review_file_name(day)).num_rows
    log = EventLog(home.settings.events_dir)
    log.append("live-user", "B000000001", 5, day_start_ms(day) + 3_600_000)
    log.append("live-user", "B000000002", 4, day_start_ms(day) + 7_200_000)

    for expected_added in (2, 0):  # a second run adds nothing
        result = home.materialize([landed_interactions], str(day))
        metadata = result.asset_materializations_for_node("landed_interactions")[0].metadata
        assert metadata["rows_added"].value == expected_added
    table = home.landing.read_parquet(review_file_name(day)).to_pandas()
    assert len(table) == before + 2
    assert set(table.loc[table["user_id"] == "live-user", "parent_asin"]) == {"B000000001", "B000000002"}
    requests, _ = _tick(home, cursor)
    assert _requested(requests) == [(str(day), ("raw_reviews",))]


def test_interactions_land_for_the_day_that_ended(home):
    """The schedule fires after midnight UTC for yesterday: today's partition is still receiving events."""
    from datetime import datetime, timezone

    from dagster import build_schedule_context

    from recsys_assets.data.schema import day_start_ms
    from recsys_assets.defs.ingest.interactions import land_interactions_schedule
    from recsys_assets.serving_data.events import EventLog

    log = EventLog(home.settings.events_dir)
    for tick, day in ((datetime(2026, 11, 27, 0, 15, tzinfo=timezone.utc), "2026-11-26"),
                      (datetime(2027, 1, 1, 0, 15, tzinfo=timezone.utc), "2026-12-31")):
        log.append("u", "i", 5, day_start_ms(date.fromisoformat(day)) + 60_000)
        serving = home.resources()["serving"]
        context = build_schedule_context(scheduled_execution_time=tick, resources={"serving": serving})
        [request] = [r for r in land_interactions_schedule(context) if r.partition_key == day]
        assert request.run_key == f"{day}@{tick.date()}"
        log.mark_landed(day, log.version(day))


def test_sensors_and_schedules_run_by_default():
    """`make dev` alone automates: nothing needs switching on in the UI."""
    from dagster import DefaultScheduleStatus, DefaultSensorStatus

    from recsys_assets.definitions import defs

    repo = defs.get_repository_def()
    assert {s.name: s.default_status for s in repo.sensor_defs} == {
        name: DefaultSensorStatus.RUNNING
        for name in ("landing_sensor", "automation_sensor", "champion_sensor", "freshness_sensor",
                     "run_failure_alert")}
    assert [s.default_status for s in repo.schedule_defs] == [DefaultScheduleStatus.RUNNING]

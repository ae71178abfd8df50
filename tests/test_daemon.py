"""With only `make dev` running (`dagster dev`: the UI, the daemon and one code server), a new day's landing
file goes all the way to a published release for that day: no click, no `recsys pipeline`."""

import os
import subprocess
import sys
import time

import pytest
from conftest import Home
from dagster import AssetCheckKey, AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from recsys_assets.data.schema import review_file_name
from recsys_assets.serving_data.kv import SQLiteKV
from recsys_assets.serving_data.release import ReleaseStore
from recsys_assets.settings import REPO_ROOT
from tests.support.daemon import daemon_process

DEADLINE_S = 600


def _failed_runs(instance: DagsterInstance) -> list[str]:
    runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
    return [f"{r.run_id[:8]} {r.asset_selection}" for r in runs]


@pytest.mark.timeout(DEADLINE_S + 300)
def test_a_new_day_reaches_serving_with_only_make_dev_running(tmp_path):
    home = Home(tmp_path / "home")
    days = home.write_generated()
    newest = days[-1]
    held_back = home.landing.read_parquet(review_file_name(newest))
    (home.landing.path / review_file_name(newest)).unlink()
    env = {**os.environ, "RECSYS_HOME": str(home.path), "DAGSTER_HOME": str(home.path / "dagster")}
    # What a user ran before: the days so far, features only (no model yet, nothing served).
    out = subprocess.run([sys.executable, "-m", "recsys_assets.cli", "pipeline", "--skip-models"], env=env,
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

    with daemon_process(home.path) as daemon:
        time.sleep(20)  # the sensors take stock of what is there (nothing to do)
        home.landing.write_parquet(review_file_name(newest), held_back)
        instance = DagsterInstance.from_config(str(home.path / "dagster"))
        releases = ReleaseStore(SQLiteKV(home.settings.serving_db_path))
        deadline = time.monotonic() + DEADLINE_S
        while (release := releases.current()) is None or release.day != str(newest):
            assert daemon.poll() is None, (home.path / "daemon.log").read_text()[-3000:]
            assert not _failed_runs(instance), _failed_runs(instance)
            assert time.monotonic() < deadline, f"no release for {newest} after {DEADLINE_S} s"
            time.sleep(5)

        # Every asset of the day ran, launched by the sensors, none by hand.
        for name in ("raw_reviews", "online_features", "training_dataset", "two_tower", "promotion",
                     "u2i_candidates", "serving_release"):
            record = instance.get_latest_materialization_event(AssetKey(name))
            assert record is not None and record.asset_materialization.partition == str(newest), name
            tags = instance.get_run_by_id(record.run_id).tags
            assert tags.get("dagster/sensor_name") in ("landing_sensor", "automation_sensor"), (name, tags)
        assert release.pipeline in ("rerank", "popularity")

        # The freshness check follows: green once the day is served.
        check = AssetCheckKey(AssetKey("serving_release"), "serves_newest_landed_day")
        while True:
            latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([check]).get(check)
            if latest is not None and latest.status == AssetCheckExecutionRecordStatus.SUCCEEDED:
                break
            assert time.monotonic() < deadline + 120, f"the freshness check never passed: {latest}"
            time.sleep(5)

        # One run carried the whole day from the features to the release (no tick-by-tick stages).
        chain_runs = {instance.get_latest_materialization_event(AssetKey(name)).run_id
                      for name in ("online_features", "training_dataset", "serving_release")}
        assert len(chain_runs) == 1
        # ... with every check of its assets (None: all of them): the dbt tests and each stage's blocking checks.
        selection = instance.get_run_by_id(chain_runs.pop()).asset_check_selection
        checks = {f"{k.asset_key.to_user_string()}:{k.name}" for k in selection or ()}
        for expected in ("user_rating_stats:not_null_user_rating_stats_user_id", "online_features:online_matches_offline",
                         "two_tower_index:collection_ready", "u2i_candidates:written"):
            assert selection is None or expected in checks, (expected, checks)

"""The command lines a user and CI run: `recsys import` then `dagster asset materialize`."""

import json
import os
import subprocess
import sys

import duckdb

from recsys_assets.feature_store.online import OnlineFeatures
from recsys_assets.feature_store.repository import FeatureRepository, FeatureStoreConfig
from recsys_assets.settings import REPO_ROOT


def _run(args, env, timeout=300):
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    return out


def test_import_then_pipeline_fills_warehouse_and_online_store(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("RECSYS_START_DATE", None)
    csv = tmp_path / "events.csv"
    csv.write_text("user_id,item_id,rating,timestamp\n"
                   + "".join(f"u{i % 7},i{i % 5},{1 + i % 5},{1700000000 + i * 3600}\n" for i in range(48)))
    recsys = [sys.executable, "-m", "recsys_assets.cli"]
    out = _run([*recsys, "import", "interactions", str(csv)], env)
    assert "imported 48 reviews over 3 days" in out.stdout
    # 2023's days precede the default first partition: the import says which variable loads them, and the
    # pipeline refuses to load nothing rather than succeed on no data.
    assert "set RECSYS_START_DATE=2023-11-14" in out.stdout
    refused = subprocess.run([*recsys, "pipeline"], env=env, capture_output=True, text=True, timeout=120,
                             cwd=REPO_ROOT)
    assert refused.returncode == 2 and "nothing to load: 3 day(s)" in refused.stdout, refused.stdout
    env["RECSYS_START_DATE"] = "2023-11-14"
    out = _run([*recsys, "pipeline"], env, timeout=600)  # what `make pipeline` runs: the dagster CLI per range
    # A few lines a stage on the console, the Dagster logs in a file under RECSYS_HOME.
    assert "[2/3] features for 3 day(s) 2023-11-14..2023-11-16" in out.stdout
    assert len(out.stdout.splitlines()) < 60 and "DEBUG" not in out.stdout
    logs = list((home / "logs").glob("pipeline-*.log"))
    assert len(logs) == 1 and "STEP_SUCCESS" in logs[0].read_text() and str(logs[0]) in out.stdout
    assert "evaluation on the temporal holdout" in out.stdout and "http://127.0.0.1:8000" in out.stdout

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    raw = con.execute("select count(*) from raw.raw_reviews").fetchone()[0]
    features = con.execute("select count(*) from main.user_rating_stats").fetchone()[0]
    newest = dict(con.execute("""
        select user_id, max(timestamp) from raw.raw_reviews
        where user_id in (select user_id from raw.raw_reviews where partition_date = '2023-11-16')
        group by 1""").fetchall())
    con.close()
    assert raw == 48 and features == 48

    # The latest day is in the online store: each of its users' newest item is the one reviewed last.
    repo = FeatureRepository(FeatureStoreConfig.local(home / "feast"))
    users = OnlineFeatures(repo.store).users(list(newest))
    assert len(newest) == 7 and users.source == ["batch"] * 7
    assert [s[-1] for s in users.columns["user_rating_list_10_recent_asin_timestamp"]] == list(newest.values())

    # ... and the whole chain ran unchanged on it, up to a published release for serving (tag embeddings
    # are all zeros here: no item text; those items are left out of the tag index, not an error).
    from recsys_assets.serving_data.kv import SQLiteKV
    from recsys_assets.serving_data.release import ReleaseStore

    release = ReleaseStore(SQLiteKV(home / "serving" / "serving.sqlite")).current()
    assert release is not None and release.day == "2023-11-16"
    # What is served is what the gate chose on validation (on 48 reviews of 5 items, either may win), and the
    # pipeline says which.
    validation = json.loads((home / "evaluation" / "latest.json").read_text())["validation"]["models"]
    if validation["rerank"]["ndcg@10"] > validation["popularity"]["ndcg@10"]:
        assert set(release.models) == {"item2vec", "two_tower", "ranker"}
        assert f"release {release.id} (2023-11-16) serves models" in out.stdout
    else:
        assert release.pipeline == "popularity" and release.models == {}
        assert f"release {release.id} (2023-11-16) serves POPULARITY" in out.stdout


def test_each_finished_step_shows_how_long_it_took(tmp_path):
    """Dagster writes a step's duration as 533ms, 12.5s, 1m45s or 1h4m: the line shows all of it."""
    import io

    from recsys_assets.console import StageReporter

    line = "print('2026-01-01 00:00:00 +0000 - dagster - DEBUG - job - r - 1 - {0} - STEP_SUCCESS - Finished " \
           "execution of step \"{0}\" in {1}.')"
    steps = {"quick": "533ms", "short": "12.5s", "long": "1m45s", "longer": "1h4m"}
    out = io.StringIO()
    StageReporter(1, tmp_path / "p.log", out=out).run(
        "steps", [sys.executable, "-c", "\n".join(line.format(step, took) for step, took in steps.items())])
    shown = {row.split()[0]: row.split()[1] for row in out.getvalue().splitlines()[1:-1]}
    assert shown == {"quick": "1s", "short": "12s", "long": "1m45s", "longer": "64m00s"}


def test_a_failed_stage_shows_its_failure_in_full(tmp_path):
    """A stage that fails prints everything from its failed step on (the log file keeps the rest)."""
    import io

    import pytest

    from recsys_assets.console import StageReporter

    failing = [sys.executable, "-c", (
        "print('2026-01-01 00:00:00 +0000 - dagster - DEBUG - job - r - 1 - a - STEP_START - started')\n"
        "print('2026-01-01 00:00:00 +0000 - dagster - ERROR - job - r - 1 - a - STEP_FAILURE - boom')\n"
        "print('Traceback: ValueError: the whole story')\n"
        "raise SystemExit(3)")]
    out = io.StringIO()
    stages = StageReporter(2, tmp_path / "logs" / "p.log", out=out)
    with pytest.raises(SystemExit) as exit_info:
        stages.run("something", failing)
    assert exit_info.value.code == 3
    shown = out.getvalue()
    assert "[1/2] something" in shown and "x a failed" in shown and "ValueError: the whole story" in shown
    assert "STEP_START" not in shown and "STEP_START" in (tmp_path / "logs" / "p.log").read_text()


def test_dagster_home_config_is_kept_up_to_date_but_a_users_own_is_left_alone(tmp_path, monkeypatch):
    """Homes made before run monitoring get it (a dead run must not hold the one-run queue forever)."""
    import yaml

    from recsys_assets.settings import DAGSTER_YAML, Settings, init_dagster_home

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = Settings(home=tmp_path, env="local")
    config = init_dagster_home(settings)
    older = DAGSTER_YAML.split("run_monitoring:")[0]
    config.write_text(older)
    init_dagster_home(settings)
    assert yaml.safe_load(config.read_text())["run_monitoring"]["start_timeout_seconds"] == 180
    config.write_text("telemetry:\n  enabled: false\n")  # the user's own
    init_dagster_home(settings)
    assert config.read_text() == "telemetry:\n  enabled: false\n"

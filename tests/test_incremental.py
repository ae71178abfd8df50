"""When a day's model continues the champion and when it retrains from scratch (`models/incremental.py`)."""

import pandas as pd

from recsys_assets.models.incremental import (
    DAY_MS,
    FULL,
    INCREMENTAL,
    IncrementalPolicy,
    Version,
    choose_start,
    recent,
)

POLICY = IncrementalPolicy(enabled=True, window_days=14, epochs=1, full_every_days=7)


def _champion(version="7", full_day="2024-03-01", training=FULL):
    return Version(version, {"training": training, "full_retrain_day": full_day})


def test_a_day_continues_the_champion_within_the_cadence_and_tags_its_lineage():
    start = choose_start("2024-03-04", POLICY, _champion(), _champion())
    assert start.mode == INCREMENTAL and start.started_from == "7" and "champion 7" in start.reason
    assert start.tags() == {"training": INCREMENTAL, "full_retrain_day": "2024-03-01", "started_from": "7"}
    # the next day continues that one, the lineage's full retrain unchanged
    after = choose_start("2024-03-05", POLICY, Version("8", start.tags()), Version("8", start.tags()))
    assert after.mode == INCREMENTAL and after.full_retrain_day == "2024-03-01"


def test_full_retrain_on_the_cadence_without_a_champion_or_when_asked():
    assert choose_start("2024-03-08", POLICY, _champion(), _champion()).mode == FULL  # 7 days since
    assert "7 days old" in choose_start("2024-03-08", POLICY, _champion(), _champion()).reason
    assert choose_start("2024-03-04", POLICY, None, None).reason == "no champion to start from"
    old = Version("3", {})  # registered before incremental training
    assert "before incremental training" in choose_start("2024-03-04", POLICY, old, old).reason
    asked = choose_start("2024-03-04", POLICY, _champion(), _champion(), full_asked=True)
    assert asked.mode == FULL and asked.full_retrain_day == "2024-03-04" and asked.tags()["training"] == FULL
    off = IncrementalPolicy(False, 14, 1, 7)
    assert choose_start("2024-03-04", off, _champion(), _champion()).mode == FULL


def test_an_incremental_version_the_gate_refused_sends_the_next_day_to_a_full_retrain():
    refused = Version("8", {"training": INCREMENTAL, "full_retrain_day": "2024-03-01"})
    start = choose_start("2024-03-05", POLICY, _champion(), refused)
    assert start.mode == FULL and "8 fell behind the champion 7" in start.reason
    # a refused *full* version does not: the champion's lineage goes on
    assert choose_start("2024-03-05", POLICY, _champion(), Version("8", {"training": FULL})).mode == INCREMENTAL


def test_recent_keeps_the_window_before_the_boundary():
    boundary = 100 * DAY_MS
    frame = pd.DataFrame({"timestamp": [boundary - 15 * DAY_MS, boundary - 14 * DAY_MS, boundary - 1, boundary]})
    assert recent(frame, boundary, 14)["timestamp"].tolist() == [boundary - 14 * DAY_MS, boundary - 1]


def test_an_incremental_day_continues_the_champion_on_the_recent_rows(trained_home):
    """With RECSYS_TRAIN_INCREMENTAL on, the day's ranker starts from the champion's fit-only weights and trains on
    the fit period's last days: its metadata and its version's tags say so, and every weight came over."""
    from recsys_assets.defs.models.assets import ranker
    from recsys_assets.defs.shared.resources import mlflow_store
    from recsys_assets.models.dataset import TrainingData
    from recsys_assets.models.registry import champion
    from tests.conftest import SMALL_TRAINING

    day = str(trained_home.days[-1])
    client = mlflow_store(trained_home.settings).client()
    served = str(champion(client, "ranker").version)
    for key, value in {"training": FULL, "full_retrain_day": day}.items():  # its lineage began that day
        client.set_model_version_tag("ranker", served, key, value)
    data = TrainingData.load(trained_home.resources()["training"].dataset_dir(day))
    trained_home.training_overrides = {**SMALL_TRAINING, "incremental": True, "incremental_window_days": 2,
                                       "incremental_epochs": 1}
    try:
        result = trained_home.materialize([ranker], day)
    finally:
        trained_home.training_overrides = SMALL_TRAINING
    meta = {k: v.value for k, v in result.asset_materializations_for_node("ranker")[0].metadata.items()}
    assert meta["training"] == INCREMENTAL and meta["started_from"] == served, meta["training_reason"]
    assert meta["warm_start"]["fresh"] == []
    window = recent(data.ranker_train, data.validation_boundary, 2)
    assert 0 < meta["rows"] == len(window) < len(data.ranker_train)
    assert len(meta["epoch_losses"]) == 1
    tags = client.get_model_version("ranker", meta["mlflow_version"]).tags
    assert (tags["training"], tags["full_retrain_day"], tags["started_from"]) == (INCREMENTAL, day, served)

"""What an incremental day's evaluation reuses: the baselines' values the last evaluation chose, only when
both learned models continued their champion (a full retrain searches again), from the newest earlier day."""

import json

from recsys_assets.models.daily_evaluation import _all_incremental, _earlier_baselines
from recsys_assets.models.incremental import FULL, INCREMENTAL, TRAINING_TAG
from recsys_assets.models.registry import MlflowStore


def _register(client, name: str, training: str) -> str:
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    return client.create_model_version(name, source="file:///nowhere", tags={TRAINING_TAG: training}).version


def test_reuse_only_when_both_models_continued_their_champion(tmp_path):
    store = MlflowStore.local(tmp_path / "mlflow")
    client = store.client()
    incremental = {name: _register(client, name, INCREMENTAL) for name in ("two_tower", "ranker")}
    assert _all_incremental(store, {**incremental, "item2vec": "1"})
    full_ranker = _register(client, "ranker", FULL)
    assert not _all_incremental(store, {**incremental, "ranker": full_ranker})
    untagged = client.create_model_version("two_tower", source="file:///nowhere").version  # before issue 35
    assert not _all_incremental(store, {**incremental, "two_tower": untagged})


def test_the_newest_earlier_day_with_baselines_is_reused(tmp_path):
    for day, baselines in (("2024-02-20", {"ease": {"l2": 10.0}}), ("2024-02-22", {"ease": {"l2": 50.0}}),
                           ("2024-02-24", {"ease": {"l2": 800.0}})):
        (tmp_path / f"{day}.json").write_text(json.dumps({"baselines": baselines}))
    (tmp_path / "latest.json").write_text(json.dumps({"baselines": {"ease": {"l2": 800.0}}}))
    # Re-evaluating 2024-02-24 reuses the day before it, never its own earlier report.
    assert _earlier_baselines(tmp_path, "2024-02-24") == {"ease": {"l2": 50.0}, "day": "2024-02-22"}
    assert _earlier_baselines(tmp_path, "2024-02-25")["day"] == "2024-02-24"
    assert _earlier_baselines(tmp_path, "2024-02-20") is None
    (tmp_path / "2024-02-23.json").write_text(json.dumps({"versions": {}}))  # no baselines: nothing to reuse
    assert _earlier_baselines(tmp_path, "2024-02-24") is None

"""The drift measures (`observability/drift.py`): PSI of ratings, item popularity and model scores."""

import numpy as np
import pytest

from recsys_assets.observability.drift import (
    PSI_THRESHOLD,
    item_popularity_drift,
    popularity_bins,
    psi,
    rating_drift,
    score_drift,
)


def test_psi_of_identical_histograms_is_zero_and_grows_with_the_shift():
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0)  # shares, not counts
    small, large = psi([50, 50], [45, 55]), psi([50, 50], [20, 80])
    assert 0 < small < 0.05 < PSI_THRESHOLD < large
    # The textbook value: (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5)
    assert large == pytest.approx(0.3 * np.log(1.6) - 0.3 * np.log(0.4))


def test_psi_refuses_mismatched_or_empty_histograms():
    with pytest.raises(ValueError, match="different bins"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-empty"):
        psi([0, 0], [1, 2])


def test_rating_drift_same_day_is_stable_and_a_shift_to_low_stars_drifts():
    rng = np.random.default_rng(0)
    day = rng.choice([1, 2, 3, 4, 5], size=5_000, p=[0.05, 0.05, 0.15, 0.35, 0.4])
    same = rng.choice([1, 2, 3, 4, 5], size=5_000, p=[0.05, 0.05, 0.15, 0.35, 0.4])
    assert rating_drift(day, day).psi == 0.0
    assert not rating_drift(day, same).drifted
    shifted = rng.choice([1, 2, 3, 4, 5], size=5_000, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    result = rating_drift(day, shifted)
    assert result.drifted and result.psi > PSI_THRESHOLD
    assert result.bins == ["1", "2", "3", "4", "5"] and sum(result.current) == 5_000
    assert "drifted" in result.describe("ratings")


def test_half_stars_and_off_scale_ratings_fall_in_the_nearest_star():
    result = rating_drift([0.2, 1.4, 4.6, 7.0], [1, 1, 5, 5])
    assert result.previous == [2, 0, 0, 0, 2] and result.psi == 0.0


def test_first_day_or_an_empty_day_is_said_not_a_crash():
    first = rating_drift([], [4, 5, 5])
    assert first.psi is None and not first.drifted and "no previous day" in first.reason
    assert "no previous day" in first.describe("ratings")
    assert "no rows" in item_popularity_drift(["a", "b"], []).reason
    assert item_popularity_drift([], ["a"]).psi is None
    assert "no previous model" in score_drift([], [0.1, 0.2]).reason


def test_popularity_bins_hold_equal_shares_of_the_previous_days_interactions():
    # 4 items with 40, 30, 20, 10 interactions: bins of a quarter each -> one item per bin
    previous = ["a"] * 40 + ["b"] * 30 + ["c"] * 20 + ["d"] * 10
    assert popularity_bins(previous, bins=4) == {"a": 0, "b": 1, "c": 2, "d": 3}
    # the hits take the first bins; ties are broken by id, so the binning is reproducible
    assert popularity_bins(["y", "x"] * 5, bins=2) == {"x": 0, "y": 1}


def test_item_popularity_drift_sees_attention_moving_to_new_items():
    rng = np.random.default_rng(1)
    catalogue = [f"i{n}" for n in range(500)]
    weights = 1.0 / np.arange(1, 501)
    weights /= weights.sum()
    yesterday = rng.choice(catalogue, size=20_000, p=weights)
    today = rng.choice(catalogue, size=20_000, p=weights)
    stable = item_popularity_drift(yesterday, today)
    assert stable.psi < 0.05 and not stable.drifted
    # half of today's interactions go to items nobody took yesterday (they count in the tail bin)
    releases = np.concatenate([today[:10_000], [f"new{n}" for n in range(10_000)]])
    moved = item_popularity_drift(yesterday, releases)
    assert moved.drifted and moved.current[-1] > moved.previous[-1]
    assert item_popularity_drift(yesterday, yesterday).psi == 0.0


def test_score_drift_over_the_previous_models_deciles():
    rng = np.random.default_rng(2)
    previous = rng.beta(2, 5, size=4_000)
    assert score_drift(previous, previous).psi == 0.0
    assert not score_drift(previous, rng.beta(2, 5, size=4_000)).drifted
    shifted = score_drift(previous, rng.beta(5, 2, size=4_000))
    assert shifted.drifted and len(shifted.bins) == 10
    # a constant previous model: one edge, two bins, no crash
    assert score_drift(np.full(100, 0.5), np.full(100, 0.5)).psi == 0.0


def test_the_rankers_score_drift_is_measured_against_the_previous_version(served_home):
    """The `score_drift` check of a day whose ranker replaced another version: both versions score the same
    held-out pairs, the PSI is in the evaluation's metadata and the pipeline exporter exports it. The newer
    version here is the served one with its output bias raised (every probability higher: a drift the check
    must see). Its own Dagster instance: the session's home keeps its records."""
    import json
    from pathlib import Path

    import mlflow
    import torch
    from dagster import (
        AssetCheckKey,
        AssetKey,
        AssetMaterialization,
        AssetSelection,
        DagsterInstance,
        materialize,
    )

    from recsys_assets.defs.models.assets import ranker
    from recsys_assets.defs.models.drift import ranker_score_drift
    from recsys_assets.defs.shared.resources import mlflow_store
    from recsys_assets.models.bundles import Ranker
    from recsys_assets.models.dataset import TrainingData, pack_ranker
    from recsys_assets.models.registry import load_extras, log_model, ranker_fusion, tag_fusion
    from recsys_assets.observability.pipeline_exporter import PipelineCollector
    from tests.conftest import recsys_env

    day = str(served_home.days[-1])
    store = mlflow_store(served_home.settings)
    resources = served_home.resources()
    with recsys_env(served_home.path):
        served = served_home.instance.get_latest_materialization_event(AssetKey("ranker"))
        old = str(served.asset_materialization.metadata["mlflow_version"].value)
        bundle = Ranker.load(store, old)
        with torch.no_grad():  # the head's output layer: every logit 2 higher
            bundle.model.head[-1].bias += 2.0
        artifacts = {f.name: np.load(f) if f.suffix == ".npy" else json.loads(f.read_text())
                     for f in Path(load_extras(store, "ranker", old)).iterdir()}
        pairs = TrainingData.load(resources["training"].dataset_dir(day)).ranker_holdout.head(3)
        example = pack_ranker(pairs, bundle.users, bundle.catalogue, pairs.timestamp.to_numpy())
        mlflow.set_tracking_uri(store.tracking_uri)
        with mlflow.start_run(run_name=f"drift-test-copy-{day}", experiment_id=store.ensure_experiment(),
                              nested=True):
            new = log_model("ranker", bundle.model, example, artifacts)
        tag_fusion(store.client(), new, ranker_fusion(store.client(), old))

        instance = DagsterInstance.ephemeral()
        for version in (old, new):  # yesterday's version, then the day's
            instance.report_runless_asset_event(AssetMaterialization("ranker", partition=day,
                                                                     metadata={"mlflow_version": version}))
        result = materialize([ranker, ranker_score_drift], selection=AssetSelection.checks(ranker_score_drift),
                             resources=resources, instance=instance)  # a check run checks the newest day
    evaluation = result.get_asset_check_evaluations()[0]
    meta = evaluation.metadata
    assert meta["version"].value == new and meta["previous_version"].value == old
    assert meta["psi"].value > PSI_THRESHOLD and not evaluation.passed  # a WARN, said with its number
    assert f"PSI {meta['psi'].value:.3f} (drifted" in evaluation.description
    key = AssetCheckKey(AssetKey("ranker"), "score_drift")
    exported = {tuple(s.labels.items()): s.value for family in PipelineCollector(instance, [key], lambda: None)
                .collect() if family.name == "recsys_drift_psi" for s in family.samples}
    assert exported == {(("signal", "ranker_score"),): pytest.approx(meta["psi"].value)}

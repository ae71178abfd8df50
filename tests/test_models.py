"""Model assets on small generated data: each materializes, MLflow holds runs and versions, the evaluation
is shaped as documented, the gate moves `champion` only for a better pipeline, no future data in training."""

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import recsys_env

from recsys_assets.defs.models.evaluation import promotion
from recsys_assets.defs.shared.resources import mlflow_store
from recsys_assets.models.baselines import BaselineConfig
from recsys_assets.models.dataset import TrainingData
from recsys_assets.models.evaluation import label
from recsys_assets.models.fusion import Fusion, grid
from recsys_assets.models.item2vec import I2I_POPULARITY_WEIGHTS
from recsys_assets.models.promotion import MODEL_NAMES
from recsys_assets.models.registry import (
    I2I_WEIGHT_TAG,
    champion,
    i2i_weight,
    load_model,
    ranker_fusion,
    set_champion,
)
from recsys_assets.settings import REPO_ROOT


def _metadata(result, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def test_every_model_asset_materializes(trained_home):
    result = trained_home.trained
    assert result.success
    for name in ("item_tags", "tag_embeddings", "training_dataset", "item2vec", "two_tower", "ranker",
                 "model_evaluation", "promotion"):
        assert result.asset_materializations_for_node(name), name
    tags = _metadata(result, "item_tags")
    assert tags["tagger"] == "minilm" and tags["tagged_now"] == tags["dagster/row_count"] == 150
    assert _metadata(result, "tag_embeddings")["dim"] == 384
    for name in MODEL_NAMES:
        meta = _metadata(result, name)
        assert meta["mlflow_model"] == name and int(meta["mlflow_version"]) >= 1
        assert len(meta["epoch_losses"]) == 2


def test_the_ranker_is_scored_on_validation_after_every_epoch(trained_home):
    """After every epoch the ranker's order is scored on validation NDCG@10 (`RankerValidation`, in the
    metadata and MLflow); without patience every epoch runs and the last weights are kept (the fit-only ones,
    before the refresh): they score what the metadata says, more than the same ranker untrained."""
    import torch

    from recsys_assets.models.bundles import load_pipeline
    from recsys_assets.models.dataset import model_sizes
    from recsys_assets.models.evaluation import EvaluationConfig, RankerValidation
    from recsys_assets.models.features import Catalogue
    from recsys_assets.models.ranker import Ranker
    from recsys_assets.models.tags import load_tag_embeddings

    meta = _metadata(trained_home.trained, "ranker")
    scores = meta["validation_scores"]
    assert len(scores) == len(meta["epoch_losses"]) == 2 and scores[meta["best_epoch"] - 1] == max(scores)
    day = str(trained_home.days[-1])
    data = TrainingData.load(trained_home.path / "datasets" / day)
    catalogue = Catalogue.build(data.items, pd.read_parquet(trained_home.landing.path / "recsys_items.parquet"),
                                load_tag_embeddings(trained_home.path / "tags" / day))
    report = json.loads((trained_home.path / "evaluation" / f"{day}.json").read_text())
    judged = load_pipeline(mlflow_store(trained_home.settings), report["versions"], weights="fit_only").ranker
    criterion = RankerValidation.of(data, catalogue, EvaluationConfig(max_users=300))
    assert criterion(judged) == pytest.approx(scores[-1], abs=1e-5)  # the metadata keeps 5 decimals
    torch.manual_seed(0)
    assert criterion(judged) > criterion(Ranker(**model_sizes(data, catalogue)))


def test_before_any_search_the_two_tower_judges_the_user_id_and_the_logq_weight_on_validation(trained_home):
    """With no search yet, the two-tower trains with and without the user's own embedding, then with the better
    at logQ weights 1 and 3 beside the default 2, each judged on validation Recall@50; it keeps the best and
    writes the choice where a search writes its best values (the next days train with it)."""
    meta = _metadata(trained_home.trained, "two_tower")
    choice = json.loads((trained_home.path / "tuning" / "two_tower.json").read_text())
    trials = choice["trials"]
    assert [t["user_id"] for t in trials[:2]] == [True, False]
    first = max(trials[:2], key=lambda t: (t["recall@50"], t["user_id"]))
    assert [(t["user_id"], t["logq_weight"]) for t in trials] == [
        (True, 2.0), (False, 2.0), (first["user_id"], 1.0), (first["user_id"], 3.0)]
    best = max(trials, key=lambda t: t["recall@50"])
    assert choice["best"] == {k: best[k] for k in ("temperature", "id_dim", "user_id", "logq_weight", "epochs", "lr")}
    assert meta["values"] == choice["best"] and meta["tuned_on"] == choice["day"]


def test_mlflow_holds_runs_metrics_and_registered_versions(trained_home):
    store = mlflow_store(trained_home.settings)
    client = store.client()
    experiment = client.get_experiment_by_name(store.experiment)
    assert experiment.artifact_location.startswith((trained_home.path / "mlflow").resolve().as_uri())
    runs = client.search_runs([experiment.experiment_id])
    names = {r.info.run_name.split("-")[0] for r in runs}
    assert {"item2vec", "two_tower", "ranker", "evaluation", "promotion"} <= names
    ranker_run = client.get_run(_metadata(trained_home.trained, "ranker")["mlflow_run_id"])  # the home's own
    assert len(client.get_metric_history(ranker_run.info.run_id, "train_loss")) == 2  # per epoch
    assert ranker_run.data.params["model"] == "ranker"
    assert ranker_run.data.tags.get("mlflow.parentRunId")  # nested under the Dagster run's MLflow run
    for name in MODEL_NAMES:
        versions = client.search_model_versions(f"name='{name}'")
        assert versions
        with recsys_env(trained_home.path):
            mlflow.set_tracking_uri(store.tracking_uri)
            info = mlflow.models.get_model_info(f"models:/{name}/{versions[0].version}")
        assert info.signature is not None and info.saved_input_example_info is not None
    # The two-tower's item vectors for the index travel with its run: one unit row per catalogue item.
    two_tower_run = next(r for r in runs if r.info.run_name.startswith("two_tower"))
    folder = client.download_artifacts(two_tower_run.info.run_id, "two_tower_extras", str(trained_home.path / "dl"))
    vectors = np.load(f"{folder}/item_vectors.npy")
    items = json.loads(open(f"{folder}/items.json").read())
    assert vectors.shape == (len(items), 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)


def test_evaluation_report_is_shaped_as_documented(trained_home):
    report = json.loads((trained_home.path / "evaluation" / "latest.json").read_text())
    assert set(report["split"]) == {"boundary_timestamp", "train_events", "holdout_events", "holdout_users",
                                    "validation_boundary_timestamp", "fit_events", "validation_events",
                                    "validation_users"}
    assert report["split"]["boundary_timestamp"] > 1_600_000_000_000  # milliseconds, like the raw data
    assert set(report["models"]) == {"popularity", "recent_popularity", "item2vec", "two_tower", "rerank", "ease",
                                     "item_knn", "time_aware_ease"}
    # Every choice is made on the validation period, which ends where the holdout begins: the baselines'
    # values and the rerank's fusion weight (which serving reads from the ranker version's tag).
    assert report["split"]["validation_boundary_timestamp"] < report["split"]["boundary_timestamp"]
    assert set(report["validation"]["models"]) == set(report["models"])
    baselines = report["baselines"]
    for name, param in (("ease", "l2"), ("item_knn", "neighbours")):
        by_value = baselines[name]["validation_ndcg@10"]
        assert by_value[str(baselines[name][param])] == max(by_value.values())
        assert report["validation"]["models"][name]["ndcg@10"] == pytest.approx(max(by_value.values()), abs=1e-5)
    # Recent popularity's half-life: the best over the rolling origins, the validation period's among them.
    recent = baselines["recent_popularity"]
    rolling = recent["rolling_origin_ndcg@10"]
    assert rolling[str(recent["half_life_days"])] == max(rolling.values())
    assert report["validation"]["models"]["recent_popularity"]["ndcg@10"] == pytest.approx(
        recent["validation_ndcg@10"][str(recent["half_life_days"])], abs=1e-5)
    fusion = report["choices"]["fusion"]
    by_fusion = report["choices"]["validation_ndcg@10_by_fusion"]
    # The rerank's EASE is plain EASE or the time-aware one, each with the values it chose alone; both are scored.
    time_aware = baselines["time_aware_ease"]
    eases = [(baselines["ease"]["l2"], 0.0, 0.0),
             (time_aware["l2"], time_aware["gram_half_life_days"], time_aware["history_half_life_days"])]
    assert (fusion["ease_l2"], fusion["ease_gram_half_life_days"], fusion["ease_history_half_life_days"]) in eases
    assert len(by_fusion) == len(grid(list(dict.fromkeys(eases))))
    # The best on validation; or, where the best fuses the time-aware EASE and beats the best fusing plain EASE
    # by less than noise, that one.
    chosen = Fusion(**fusion)
    plain = [score for text, score in by_fusion.items() if "time-aware" not in text and "ease 0.0 " not in text]
    assert by_fusion[label(chosen)] == max(by_fusion.values()) or (
        not chosen.time_aware_ease and by_fusion[label(chosen)] == max(plain))
    assert report["validation"]["models"]["time_aware_ease"]["ndcg@10"] == pytest.approx(
        max(time_aware["validation_ndcg@10"].values()), abs=1e-5)
    assert fusion["recent_half_life_days"] == recent["half_life_days"]
    assert report["validation"]["models"]["rerank"]["ndcg@10"] == pytest.approx(by_fusion[label(chosen)], abs=1e-5)
    # The gate's evidence: the rerank's gain over popularity on the same users, and how noisy it is.
    evidence = report["validation"]["rerank_vs_popularity"]
    assert evidence["gain"] == pytest.approx(report["validation"]["models"]["rerank"]["ndcg@10"]
                                             - report["validation"]["models"]["popularity"]["ndcg@10"], abs=1e-5)
    assert evidence["users"] == report["validation"]["evaluated_users"] and 0 < evidence["standard_error"] < 0.1
    client = mlflow_store(trained_home.settings).client()
    assert ranker_fusion(client, report["versions"]["ranker"]) == Fusion(**fusion)  # what serving reads
    # MLflow holds the choices too: the fusion's apart from the baselines' (each EASE has its own l2).
    experiments = [e.experiment_id for e in client.search_experiments()]
    logged = client.search_runs(experiments, "tags.mlflow.runName LIKE 'evaluation-%'")[0].data.params
    assert float(logged["fusion_ease_l2"]) == fusion["ease_l2"] and float(logged["ease_l2"]) == baselines["ease"]["l2"]
    assert float(logged["time_aware_ease_gram_half_life_days"]) == time_aware["gram_half_life_days"]
    # Last-item i2i's popularity weight: the best on validation, tagged on the item2vec version serving reads.
    i2i = report["i2i"]
    searched = {float(w) for w in i2i["validation_ndcg@10_by_weight"]}
    assert searched >= set(I2I_POPULARITY_WEIGHTS)  # and past the grid's end only where its end was best
    assert searched == set(I2I_POPULARITY_WEIGHTS) or i2i["popularity_weight"] >= max(I2I_POPULARITY_WEIGHTS)
    assert i2i["validation_ndcg@10_by_weight"][str(i2i["popularity_weight"])] == max(
        i2i["validation_ndcg@10_by_weight"].values())
    assert report["validation"]["models"]["item2vec"]["ndcg@10"] == pytest.approx(
        max(i2i["validation_ndcg@10_by_weight"].values()), abs=1e-5)
    assert i2i_weight(client, report["versions"]["item2vec"]) == i2i["popularity_weight"]
    assert float(logged[I2I_WEIGHT_TAG]) == i2i["popularity_weight"]
    for metrics in report["models"].values():
        assert set(metrics) == {"recall@10", "recall@50", "ndcg@10", "coverage@10"}
        assert all(0 <= v <= 1 for v in metrics.values())
        assert metrics["recall@50"] >= metrics["recall@10"]
    assert set(report["ranker"]) == {"roc_auc", "pr_auc"}
    meta = _metadata(trained_home.trained, "model_evaluation")
    assert [row.data["model"] for row in meta["metrics"].records] == list(report["models"])
    assert meta["plot"].startswith("![evaluation](data:image/png;base64,")
    assert meta["gate_evidence"] == report["validation"]["rerank_vs_popularity"]  # in the UI too
    comparison = meta["vs_best_baseline"]
    assert comparison["best_baseline"] in {"popularity", "recent_popularity", "ease", "item_knn"}
    assert comparison["ratio"] == pytest.approx(report["models"]["rerank"]["ndcg@10"]
                                                / comparison["best_baseline_ndcg@10"], abs=1e-3)


def test_recsys_evaluate_json_prints_the_latest(trained_home):
    env = {**os.environ, "RECSYS_HOME": str(trained_home.path)}
    out = subprocess.run([sys.executable, "-m", "recsys_assets.cli", "evaluate", "--json"], env=env,
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == json.loads((trained_home.path / "evaluation" / "latest.json").read_text())
    table = subprocess.run([sys.executable, "-m", "recsys_assets.cli", "evaluate"], env=env, capture_output=True,
                           text=True, cwd=REPO_ROOT, timeout=120)
    assert table.returncode == 0, table.stderr[-2000:]
    rows = {line.split()[0] for line in table.stdout.splitlines() if line.startswith("  ")}
    assert {"popularity", "recent_popularity", "ease", "item_knn", "rerank"} <= rows
    assert "x the best baseline" in table.stdout
    assert "rerank vs popularity on validation: ndcg@10 +" in table.stdout  # the gate's evidence, in words


def test_training_examples_hold_no_future_data(trained_home):
    data = TrainingData.load(trained_home.path / "datasets" / str(trained_home.days[-1]))
    for frame in (data.ranker_train, data.ranker_holdout):
        for t, stamps in zip(frame["timestamp"], frame["user_rating_list_10_recent_asin_timestamp"]):
            assert all(s < t for s in stamps)
    # A user's count of earlier ratings never includes the event itself or later ones.
    events = data.train.groupby("user_id")["timestamp"].apply(np.sort)
    positives = data.ranker_train[data.ranker_train.label == 1].sample(200, random_state=0)
    for user, t, count in zip(positives.user_id, positives.timestamp, positives.user_rating_cnt_90d):
        assert count <= np.searchsorted(events[user], t, side="left")
    assert (data.train.timestamp < data.boundary).all() and (data.holdout.timestamp >= data.boundary).all()
    # The models learn from the fit period only: the validation period after it judges them.
    assert (data.ranker_train.timestamp < data.validation_boundary).all()
    assert data.validation.timestamp.between(data.validation_boundary, data.boundary - 1).all()
    assert set(data.validation.user_id) <= set(data.fit.user_id)
    # Training negatives are never items the user interacted with in the fit period, and never chosen knowing
    # the user's later items; the holdout's negative labels are never items the user ever interacted with.
    fit_pairs = set(zip(data.fit.user_id, data.fit.parent_asin))
    negatives = data.ranker_train[data.ranker_train.label == 0]
    assert not any(pair in fit_pairs for pair in zip(negatives.user_id, negatives.parent_asin))
    every = set(zip(data.train.user_id, data.train.parent_asin)) | set(zip(data.holdout.user_id, data.holdout.parent_asin))
    holdout_negatives = data.ranker_holdout[data.ranker_holdout.label == 0]
    assert not any(pair in every for pair in zip(holdout_negatives.user_id, holdout_negatives.parent_asin))
    # The refresh learns from the validation period (every user and item of it, new ones too), its negatives
    # never an item the user interacted with in the training period, its features as of each event.
    refresh = data.ranker_refresh
    assert refresh.timestamp.between(data.validation_boundary, data.boundary - 1).all()
    validation_events = data.train[data.train.timestamp >= data.validation_boundary]
    assert (refresh.label == 1).sum() == len(validation_events)
    train_pairs = set(zip(data.train.user_id, data.train.parent_asin))
    refresh_negatives = refresh[refresh.label == 0]
    assert len(refresh_negatives) and not any(pair in train_pairs for pair in zip(refresh_negatives.user_id,
                                                                                   refresh_negatives.parent_asin))
    for t, stamps in zip(refresh["timestamp"], refresh["user_rating_list_10_recent_asin_timestamp"]):
        assert all(s < t for s in stamps)


def _evaluation_with(home, day: str, candidate: float, popularity: float, versions: dict,
                     champion: tuple[dict, float] | None = None) -> None:
    """The day's evaluation with these validation numbers; the holdout says the opposite (it never decides)."""
    path = home.path / "evaluation" / f"{day}.json"
    report = json.loads(path.read_text())
    report["validation"]["models"]["rerank"]["ndcg@10"] = candidate
    report["validation"]["models"]["popularity"]["ndcg@10"] = popularity
    report["models"]["rerank"]["ndcg@10"], report["models"]["popularity"]["ndcg@10"] = popularity, candidate
    report["versions"] = versions
    report.pop("champion", None)
    if champion is not None:
        report["champion"] = {"versions": champion[0], "validation": {"models": {"rerank": {"ndcg@10": champion[1]}}}}
    path.write_text(json.dumps(report))


def test_promotion_moves_champion_only_for_a_better_pipeline(trained_home):
    """The gate compares on validation with the champion as evaluated on the candidate's own split."""
    day = str(trained_home.days[-1])
    client = mlflow_store(trained_home.settings).client()
    original = json.loads((trained_home.path / "evaluation" / f"{day}.json").read_text())
    a = original["versions"]
    # A second registered version of each model (same weights), so candidate and champion differ.
    b = {name: str(client.create_model_version(name, source=(mv := client.get_model_version(name, a[name])).source,
                                               run_id=mv.run_id).version) for name in MODEL_NAMES}
    try:
        for name in MODEL_NAMES:
            set_champion(client, name, a[name])
        _evaluation_with(trained_home, day, candidate=0.6, popularity=0.1, versions=b, champion=(a, 0.5))
        meta = _metadata(trained_home.materialize([promotion], day), "promotion")
        assert meta["promoted"] is True and meta["champion_ndcg@10"] == 0.5, meta
        assert {name: str(champion(client, name).version) for name in MODEL_NAMES} == b

        _evaluation_with(trained_home, day, candidate=0.4, popularity=0.1, versions=a, champion=(b, 0.5))
        meta = _metadata(trained_home.materialize([promotion], day), "promotion")
        assert meta["promoted"] is False and "champion" in meta["reason"]
        assert str(champion(client, "two_tower").version) == b["two_tower"]

        # better than the champion, not than popularity, and neither is the champion on this split: the champion
        # is retired, popularity is served
        _evaluation_with(trained_home, day, candidate=0.6, popularity=0.7, versions=a, champion=(b, 0.5))
        meta = _metadata(trained_home.materialize([promotion], day), "promotion")
        assert meta["promoted"] is False and meta["retired_champion"] is True, meta
        assert all(champion(client, name) is None for name in MODEL_NAMES)
        assert client.get_model_version("ranker", b["ranker"]).tags["retired_on"] == day
    finally:
        for name in MODEL_NAMES:
            set_champion(client, name, a[name])
        (trained_home.path / "evaluation" / f"{day}.json").write_text(json.dumps(original))


def test_evaluation_judges_the_champion_on_the_candidate_split(trained_home):
    """A champion is evaluated under its own vocabularies on the candidate's split: the day's own models
    score exactly as the day's evaluation did, and a champion that knows only part of today's items and
    users still gets a full report (what it never saw, it cannot recommend)."""
    from recsys_assets.models.bundles import load_pipeline
    from recsys_assets.models.data import Vocabulary
    from recsys_assets.models.evaluation import EvaluationConfig, Models, evaluate
    from recsys_assets.models.features import Catalogue
    from recsys_assets.models.tags import load_tag_embeddings

    day = str(trained_home.days[-1])
    versions = json.loads((trained_home.path / "evaluation" / f"{day}.json").read_text())["versions"]
    pipeline = load_pipeline(mlflow_store(trained_home.settings), versions)
    data = TrainingData.load(trained_home.path / "datasets" / day)
    metadata = pd.read_parquet(trained_home.path / "landing" / "recsys_items.parquet")
    catalogue = Catalogue.build(data.items, metadata, load_tag_embeddings(trained_home.path / "tags" / day))
    cfg = EvaluationConfig(max_users=300)
    own = evaluate(data, catalogue, pipeline, cfg)["models"]
    as_candidate = evaluate(data, catalogue, Models(pipeline.item2vec, pipeline.two_tower, pipeline.ranker,
                                                    fusion=pipeline.fusion), cfg)["models"]
    for model in ("item2vec", "two_tower", "rerank"):
        assert own[model]["ndcg@10"] == pytest.approx(as_candidate[model]["ndcg@10"], abs=1e-6), model

    old = pipeline.catalogue
    half = Catalogue(Vocabulary(data.items.ids[: len(data.items.ids) // 2]), old.categories, old.category_index,
                     old.log_price, old.tag_embedding)
    shrunk = evaluate(data, catalogue, Models(pipeline.item2vec, pipeline.two_tower, pipeline.ranker,
                                              users=Vocabulary(data.users.ids[:10]), catalogue=half,
                                              fusion=pipeline.fusion), cfg)["models"]
    assert set(shrunk) == set(own)
    assert all(0 <= shrunk[m]["ndcg@10"] <= 1 for m in shrunk)
    assert shrunk["two_tower"]["recall@50"] < own["two_tower"]["recall@50"]


def test_served_models_are_refreshed_on_the_validation_period_that_judged_their_fit_only_weights(trained_home):
    """The registered (served) two-tower and ranker have learned the validation period after their fit-only
    weights were judged on it: validation's numbers are those of the fit-only weights (kept beside the
    version), the holdout's those of the served weights, and the served weights fit the validation period
    better than the fit-only ones."""
    import torch

    from recsys_assets.models.bundles import load_pipeline
    from recsys_assets.models.dataset import pack_ranker, two_tower_inputs
    from recsys_assets.models.evaluation import EvaluationConfig, Models, evaluate
    from recsys_assets.models.features import Catalogue
    from recsys_assets.models.tags import load_tag_embeddings
    from recsys_assets.models.two_tower import in_batch_softmax_loss

    day = str(trained_home.days[-1])
    report = json.loads((trained_home.path / "evaluation" / f"{day}.json").read_text())
    store = mlflow_store(trained_home.settings)
    served = load_pipeline(store, report["versions"])
    judged = load_pipeline(store, report["versions"], weights="fit_only")
    for name in ("two_tower", "ranker"):
        assert _metadata(trained_home.trained, name)["refresh_epoch_losses"], name
        a, b = getattr(served, name).state_dict(), getattr(judged, name).state_dict()
        assert any(not torch.equal(a[key], b[key]) for key in a), f"{name} was not refreshed"
    assert _metadata(trained_home.trained, "item2vec")["refresh_epoch_losses"]
    assert not np.allclose(served.item2vec, judged.item2vec)
    # The ranker's (frozen) item vectors: item2vec's fit-only ones, and for items first seen in the validation
    # period, item2vec's refreshed ones.
    data = TrainingData.load(trained_home.path / "datasets" / day)
    unseen = ~np.isin(np.array(["<pad>", *data.items.ids], dtype=object), data.fit.parent_asin.unique())
    unseen[0] = False
    expected = np.where(unseen[:, None], served.item2vec, judged.item2vec)
    np.testing.assert_allclose(served.ranker.item_emb.weight.detach().numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(judged.ranker.item_emb.weight.detach().numpy(), judged.item2vec, atol=1e-6)

    metadata = pd.read_parquet(trained_home.landing.path / "recsys_items.parquet")
    catalogue = Catalogue.build(data.items, metadata, load_tag_embeddings(trained_home.path / "tags" / day))
    again = evaluate(data, catalogue, Models(served.item2vec, served.two_tower, served.ranker, fusion=served.fusion),
                     EvaluationConfig(max_users=300),
                     validation_models=Models(judged.item2vec, judged.two_tower, judged.ranker))
    for model in ("item2vec", "two_tower", "rerank"):
        assert again["validation"]["models"][model] == pytest.approx(report["validation"]["models"][model], abs=1e-6)
        assert again["models"][model] == pytest.approx(report["models"][model], abs=1e-6)

    refresh = two_tower_inputs(data, catalogue, refresh=True)
    batch = {k: torch.from_numpy(v) for k, v in refresh.items()}
    with torch.no_grad():
        losses = {label: in_batch_softmax_loss(models.two_tower.eval(), batch).item()
                  for label, models in (("served", served), ("fit_only", judged))}
    assert losses["served"] < losses["fit_only"], losses
    rows = data.ranker_refresh
    x = torch.from_numpy(pack_ranker(rows, data.users, catalogue, rows.timestamp.to_numpy()))
    labels = torch.from_numpy(rows.label.to_numpy(np.float32))
    with torch.no_grad():  # the pointwise part of the ranker's loss
        losses = {label: torch.nn.functional.binary_cross_entropy_with_logits(
            models.ranker.eval()(x, logits=True), labels).item() for label, models in (("served", served),
                                                                                      ("fit_only", judged))}
    assert losses["served"] < losses["fit_only"], losses


def test_recsys_promote_rolls_back_to_a_version(trained_home):
    env = {**os.environ, "RECSYS_HOME": str(trained_home.path)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "recsys_assets.cli", "promote", *args], env=env,  # noqa: E731
                                       capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    out = run("--version", "1", "--model", "ranker")
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(champion(mlflow_store(trained_home.settings).client(), "ranker").version) == "1"
    assert run("--version", "999").returncode != 0  # no such version: nothing moves


def test_a_two_tower_without_the_user_id_knows_users_by_their_history_and_stats():
    import torch

    from recsys_assets.models.features import HISTORY
    from recsys_assets.models.two_tower import TwoTower, TwoTowerConfig, in_batch_softmax_loss, user_layout

    rows = user_layout(2).pack(user=np.array([1, 7, 1]),
                               history=np.array([[3] * HISTORY, [3] * HISTORY, [5] * HISTORY]),
                               user_dense=np.array([[0.5, 1.0], [0.5, 1.0], [0.5, 1.0]], dtype=np.float32))
    x = torch.from_numpy(rows)
    torch.manual_seed(0)
    with_id, without = (TwoTower(10, 20, 3, 2, 4, TwoTowerConfig(user_id=flag)).eval() for flag in (True, False))
    with torch.no_grad():
        assert not torch.allclose(with_id(x)[0], with_id(x)[1])  # two users, the same history: told apart
        vectors = without(x)
        torch.testing.assert_close(vectors[0], vectors[1])  # only the id differs: the same user vector
        assert not torch.allclose(vectors[0], vectors[2])  # another history: another vector
    assert any("user_id" in name for name, _ in with_id.named_parameters())
    assert not any("user_id" in name for name, _ in without.named_parameters())  # no table to memorise with
    items = torch.zeros((3, without.item_layout.width))
    loss = in_batch_softmax_loss(without.train(), {"user_x": x, "item_x": items, "item_idx": torch.tensor([1, 2, 3]),
                                                   "item_prob": torch.full((3,), 1 / 3)})
    loss.backward()  # trains without the id's table
    assert torch.isfinite(loss)


def test_a_larger_logq_weight_makes_the_towers_favour_popular_items():
    """Users whose histories say nothing, items taken in proportion to a long tail q: at logQ weight 1 the towers
    estimate log p(item | user), here log q itself (the correction undoes the in-batch sampling); at 3 they add
    2 log q more, a popularity prior."""
    import torch

    from recsys_assets.models.features import HISTORY
    from recsys_assets.models.training import TrainConfig, fit
    from recsys_assets.models.two_tower import TwoTower, TwoTowerConfig, in_batch_softmax_loss, item_layout, user_layout

    rng = np.random.default_rng(0)
    n, n_items = 4096, 21
    share = 1.0 / np.arange(1, n_items)
    share /= share.sum()
    item = rng.choice(np.arange(1, n_items), size=n, p=share)
    users = user_layout(1).pack(user=np.ones(n), history=np.zeros((n, HISTORY)), user_dense=np.zeros((n, 1)))
    items = item_layout(1)
    data = {"user_x": users, "item_x": items.pack(item=item, category=np.zeros(n), item_dense=np.zeros((n, 1))),
            "item_idx": item, "item_prob": share[item - 1].astype(np.float32)}
    every_item = torch.from_numpy(items.pack(item=np.arange(1, n_items), category=np.zeros(n_items - 1),
                                             item_dense=np.zeros((n_items - 1, 1))))
    tilt = {}
    for weight in (1.0, 3.0):
        cfg = TwoTowerConfig(user_id=False, logq_weight=weight, backend="torch")
        model, _ = fit(lambda: TwoTower(2, n_items, 1, 1, 1, cfg), data, in_batch_softmax_loss,  # noqa: B023
                       TrainConfig(epochs=15, batch_size=256, lr=0.01))
        with torch.no_grad():
            scores = (model.user_vectors(torch.from_numpy(users[:1])) @ model.item_vectors(every_item).T)[0]
        tilt[weight] = np.polyfit(np.log(share), scores.numpy() / cfg.temperature, 1)[0]  # logit per log q
    assert tilt[1.0] == pytest.approx(1.0, abs=0.3) and tilt[3.0] == pytest.approx(3.0, abs=0.5), tilt


def test_two_tower_examples_come_in_time_local_batches_with_their_chunks_item_shares(trained_home):
    """The fit period's positives, each once, in batches of neighbouring moments (chunks of at least 8 batches,
    a quarter of the rows when that is more), each row's logQ probability its item's share of its chunk."""
    from recsys_assets.models.dataset import two_tower_inputs
    from recsys_assets.models.features import Catalogue

    data = TrainingData.load(trained_home.path / "datasets" / str(trained_home.days[-1]))
    catalogue = Catalogue.build(data.items, pd.read_parquet(trained_home.landing.path / "recsys_items.parquet"), None)
    positives = data.ranker_train[data.ranker_train["label"] == 1]
    batch = 16
    inputs = two_tower_inputs(data, catalogue, batch_size=batch)
    item = inputs["item_idx"]
    assert sorted(item) == sorted(catalogue.items.index(positives["parent_asin"].to_numpy()))
    chunk_rows = batch * max(8, -(-len(positives) // (4 * batch)))
    chunk = np.arange(len(item)) // chunk_rows
    assert chunk.max() >= 1  # several chunks: the test data has more than 8 batches' rows
    by_time = catalogue.items.index(positives.sort_values("timestamp", kind="stable")["parent_asin"].to_numpy())
    for c in np.unique(chunk):
        rows = chunk == c
        # chunk c: the c-th run of chunk_rows positives in time order, shuffled inside
        assert sorted(item[rows]) == sorted(by_time[c * chunk_rows:(c + 1) * chunk_rows])
        shares = {i: n / rows.sum() for i, n in zip(*np.unique(item[rows], return_counts=True))}
        np.testing.assert_allclose(inputs["item_prob"][rows], [shares[i] for i in item[rows]], rtol=1e-6)
    assert not np.allclose(inputs["item_prob"], inputs["item_prob"][0])


@pytest.mark.timeout(600)
def test_ray_train_reaches_in_process_quality(trained_home, tmp_path):
    """The same two-tower training, in-process and as a 2-worker Ray Train (DDP, gloo) job, each stopped early
    on the validation period's Recall@50."""
    from recsys_assets.models.dataset import two_tower_inputs
    from recsys_assets.models.evaluation import EvaluationConfig, Models, evaluate
    from recsys_assets.models.features import Catalogue
    from recsys_assets.models.training import TrainConfig, fit
    from recsys_assets.models.two_tower import TwoTower, in_batch_softmax_loss

    data = TrainingData.load(trained_home.path / "datasets" / str(trained_home.days[-1]))
    metadata = pd.read_parquet(trained_home.landing.path / "recsys_items.parquet")
    catalogue = Catalogue.build(data.items, metadata, None)
    inputs = two_tower_inputs(data, catalogue, batch_size=256)
    build = lambda: TwoTower(len(data.users), len(catalogue.items), len(catalogue.categories), 2,  # noqa: E731
                             catalogue.item_dense_width)

    def validate(model) -> float:  # validation Recall@50 (a DDP-wrapped model in a Ray worker: its own)
        report = evaluate(data, catalogue, Models(two_tower=getattr(model, "module", model)),
                          EvaluationConfig(max_users=300), holdout=False)
        return report["validation"]["models"]["two_tower"]["recall@50"]

    cfg = TrainConfig(epochs=4, batch_size=256, lr=0.003, shuffle="batches", patience=1)
    local, local_history = fit(build, inputs, in_batch_softmax_loss, cfg, validate=validate)
    # storage as a URI, as on a cluster (gs://...): every run checkpoints into a folder of its own there
    distributed, ray_history = fit(build, inputs, in_batch_softmax_loss, cfg, executor="ray", workers=2,
                                   storage=tmp_path.as_uri(), validate=validate)
    assert [p.name.startswith("train-") for p in tmp_path.iterdir()] == [True]
    assert ray_history.workers == 2 and len(ray_history.validation_scores) == len(ray_history.epoch_losses) > 1
    assert ray_history.validation_scores[ray_history.best_epoch] == max(ray_history.validation_scores)
    assert validate(distributed) == pytest.approx(max(ray_history.validation_scores))  # the best epoch's weights
    assert ray_history.epoch_losses[-1] < ray_history.epoch_losses[0]  # it learned
    scores = {name: evaluate(data, catalogue, Models(two_tower=model), EvaluationConfig(max_users=300))
              for name, model in (("local", local), ("ray", distributed))}
    local_recall = scores["local"]["models"]["two_tower"]["recall@50"]
    ray_recall = scores["ray"]["models"]["two_tower"]["recall@50"]
    assert ray_recall >= 0.8 * local_recall, (ray_recall, local_recall)


def test_rerank_fuses_ranker_retriever_and_ease_scores(trained_home):
    """All weight on the retriever gives exactly the two-tower's list; none on it gives the ranker's own
    order, a different list; all weight on EASE gives EASE's own list (its candidates come first)."""
    from recsys_assets.models.evaluation import EvaluationConfig, Models, evaluate
    from recsys_assets.models.features import Catalogue
    from recsys_assets.models.tags import load_tag_embeddings

    store = mlflow_store(trained_home.settings)
    data = TrainingData.load(trained_home.path / "datasets" / str(trained_home.days[-1]))
    metadata = pd.read_parquet(trained_home.landing.path / "recsys_items.parquet")
    tags = load_tag_embeddings(trained_home.path / "tags" / str(trained_home.days[-1]))
    catalogue = Catalogue.build(data.items, metadata, tags)
    models = Models(two_tower=load_model(store, "two_tower", "1"), ranker=load_model(store, "ranker", "1"))
    cfg = EvaluationConfig(max_users=300)
    report = {w: evaluate(data, catalogue, Models(**vars(models) | {"fusion": Fusion(retrieval_weight=w)}), cfg)
              for w in (1.0, 0.0)}
    for period in (report[1.0]["validation"], report[1.0]):  # up to the order of near-equal scores
        assert period["models"]["rerank"] == pytest.approx(period["models"]["two_tower"], abs=1e-3)
    assert report[0.0]["models"]["rerank"] != report[0.0]["models"]["two_tower"]
    all_ease = evaluate(data, catalogue, Models(**vars(models) | {"fusion": Fusion(ease_weight=1.0, ease_l2=50.0)}),
                        cfg, baselines=BaselineConfig(ease_l2=(50.0,)))
    for metric in ("recall@10", "ndcg@10"):  # up to the order of tied scores (items EASE scores exactly 0)
        assert all_ease["models"]["rerank"][metric] == pytest.approx(all_ease["models"]["ease"][metric], abs=0.005)


def test_serving_packs_and_scores_one_user_like_training(trained_home):
    """The rerank path (one user's part packed once, the GRU run once per distinct history) gives the
    same inputs and scores as the general per-row path used in training and evaluation."""
    import torch

    from recsys_assets.models.data import ITEM
    from recsys_assets.models.dataset import pack_ranker, pack_ranker_for_user
    from recsys_assets.models.features import Catalogue
    from recsys_assets.models.tags import load_tag_embeddings

    day = str(trained_home.days[-1])
    data = TrainingData.load(trained_home.path / "datasets" / day)
    metadata = pd.read_parquet(trained_home.landing.path / "recsys_items.parquet")
    catalogue = Catalogue.build(data.items, metadata, load_tag_embeddings(trained_home.path / "tags" / day))
    user = data.users_at_boundary.iloc[[3]].reset_index(drop=True)
    items = catalogue.items.ids[:25]
    stats = data.items_at_boundary.set_index(ITEM).reindex(items).reset_index()
    rows = user.loc[user.index.repeat(len(items))].reset_index(drop=True)
    rows[ITEM] = items
    for column in stats.columns:
        if column.startswith("parent_asin_rating_"):
            rows[column] = stats[column].to_numpy()
    general = pack_ranker(rows, data.users, catalogue, np.full(len(items), data.boundary))
    one_user = pack_ranker_for_user(user, items, stats, data.users, catalogue, data.boundary)
    np.testing.assert_array_equal(general, one_user)

    ranker = load_model(mlflow_store(trained_home.settings), "ranker", "1")
    x = torch.from_numpy(np.concatenate([one_user, general[::-1].copy()]))
    with torch.no_grad():
        ranker.train()  # per-row GRU
        per_row = ranker(x, logits=True)
        ranker.eval()  # one GRU run per distinct history
        deduplicated = ranker(x, logits=True)
    torch.testing.assert_close(per_row, deduplicated)


@pytest.mark.timeout(900)
def test_two_tower_tuning_searches_on_validation_and_training_uses_its_best(trained_home, tmp_path):
    """Ray Tune trials judged on validation Recall@50; the daily two_tower then trains with the best values."""
    from recsys_assets.defs.models.assets import two_tower
    from recsys_assets.defs.models.tuning import two_tower_tuning

    day = str(trained_home.days[-1])
    saved = dict(trained_home.training_overrides)
    trained_home.training_overrides = {**saved, "tuning_dir": str(tmp_path), "tuning_trials": 2,
                                       "tuning_time_budget_s": 600}
    try:
        meta = _metadata(trained_home.materialize([two_tower_tuning], day), "two_tower_tuning")
        result = json.loads((tmp_path / "two_tower.json").read_text())
        assert result["day"] == day and len(result["trials"]) == 2
        assert result["recall@50"] == max(trial["recall@50"] for trial in result["trials"]) > 0
        assert meta["best"] == result["best"]
        assert set(result["best"]) == {"temperature", "id_dim", "user_id", "logq_weight", "epochs", "lr"}
        trained = _metadata(trained_home.materialize([two_tower], day), "two_tower")
        assert trained["tuned_on"] == day
        assert len(trained["epoch_losses"]) == result["best"]["epochs"]
        assert trained["sizes"]["n_items"] > 0
    finally:
        trained_home.training_overrides = saved


def test_evaluation_packs_each_users_part_once_in_chunks_like_the_per_row_path(trained_home, monkeypatch):
    """The evaluation's ranker rows (each user's part built once and repeated over its candidates, a chunk of
    users at a time) are the rows the general per-row path packs."""
    from recsys_assets.models import evaluation
    from recsys_assets.models.data import ITEM, USER
    from recsys_assets.models.dataset import pack_ranker
    from recsys_assets.models.features import Catalogue
    from recsys_assets.models.tags import load_tag_embeddings

    day = str(trained_home.days[-1])
    data = TrainingData.load(trained_home.path / "datasets" / day)
    metadata = pd.read_parquet(trained_home.landing.path / "recsys_items.parquet")
    catalogue = Catalogue.build(data.items, metadata, load_tag_embeddings(trained_home.path / "tags" / day))
    cut, items = data.cut("validation"), catalogue.items
    users = evaluation._users_to_evaluate(cut.later, evaluation.EvaluationConfig(max_users=40))
    at_start = cut.users_at.set_index(USER).loc[users].reset_index()
    rng = np.random.default_rng(0)
    candidates = np.stack([rng.choice(np.arange(1, len(items)), 12, replace=False) for _ in users])
    valid = rng.random(candidates.shape) < 0.8  # users with fewer candidates than others
    monkeypatch.setattr(evaluation, "RANKER_CHUNK_ROWS", 50)  # several chunks
    chunks = list(evaluation._ranker_row_chunks(at_start, candidates, valid, cut, data.users, catalogue, items))
    assert len(chunks) > 3
    rows = at_start.loc[at_start.index.repeat(valid.sum(axis=1))].reset_index(drop=True)
    rows[ITEM] = [items.id_of(int(i)) for i in candidates[valid]]
    stats = cut.items_at.set_index(ITEM)
    for column in stats.columns:
        if column.startswith("parent_asin_rating_"):
            rows[column] = stats[column].reindex(rows[ITEM]).to_numpy()
    general = pack_ranker(rows, data.users, catalogue, np.full(len(rows), cut.boundary, dtype=np.int64))
    np.testing.assert_array_equal(np.concatenate(chunks), general)

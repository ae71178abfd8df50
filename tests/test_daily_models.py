"""The plain functions the model assets call: the training window, the training plan, the evaluation on a
hand-made split (its figures worked out by hand), the evaluation run's MLflow names, the gate's outcome."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys_assets.models.daily_evaluation import evaluation_metrics, evaluation_params
from recsys_assets.models.daily_training import RANKER_LR, TrainingPlan
from recsys_assets.models.data import ITEM, TIME, USER, Vocabulary
from recsys_assets.models.dataset import TrainingData, training_window_start
from recsys_assets.models.evaluation import EvaluationConfig, Models, evaluate
from recsys_assets.models.features import Catalogue
from recsys_assets.models.item2vec import item_sequences
from recsys_assets.models.promotion import Decision, read_report, write_report


def test_the_training_window_holds_its_days_up_to_and_including_the_day():
    day = date(2024, 3, 10)
    assert training_window_start(day, 0) is None  # everything up to the day
    assert training_window_start(day, 1) == day
    assert training_window_start(day, 7) == date(2024, 3, 4)


def test_the_training_plan_takes_the_training_resources_fields_and_sets_each_models_loop(tmp_path):
    from recsys_assets.defs.shared.resources import resources_for
    from recsys_assets.settings import Settings

    training = resources_for(Settings(home=tmp_path, env="local"))["training"]
    plan = TrainingPlan.of(training)
    assert (plan.ranker_epochs, plan.batch_size, plan.seed) == (training.ranker_epochs, training.batch_size,
                                                                training.seed)
    ranker = plan.ranker()
    assert (ranker.epochs, ranker.batch_size, ranker.lr, ranker.shuffle, ranker.patience) == (
        training.ranker_epochs, training.ranker_batch_size, RANKER_LR, "batches", training.ranker_patience)
    two_tower = plan.two_tower(epochs=4, lr=0.01)
    assert (two_tower.epochs, two_tower.batch_size, two_tower.lr, two_tower.shuffle) == (4, training.batch_size, 0.01,
                                                                                         "batches")
    # The refresh trains as the fit did for its own epochs, each of them: patience is for the judged fit only.
    refresh = plan.refresh(TrainingPlan.of(type(training)(**{**training.model_dump(), "ranker_patience": 2})).ranker())
    assert refresh.epochs == training.refresh_epochs and refresh.patience == 0
    assert (refresh.lr, refresh.batch_size, refresh.shuffle) == (RANKER_LR, training.ranker_batch_size, "batches")
    assert plan.item2vec().epochs == training.item2vec_epochs
    assert plan.evaluation() == EvaluationConfig(max_users=training.eval_max_users, seed=training.seed)


def test_item_sequences_are_each_users_items_in_time_order():
    events = pd.DataFrame({USER: ["u2", "u1", "u1", "u2"], ITEM: ["a", "c", "b", "b"], TIME: [3, 2, 1, 1]})
    items = Vocabulary(events[ITEM])
    assert [s.tolist() for s in item_sequences(events, items)] == [items.index(["b", "c"]).tolist(),
                                                                  items.index(["b", "a"]).tolist()]


def _events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame({USER: [u for u, _, _ in rows], ITEM: [i for _, i, _ in rows],
                         TIME: np.array([t for _, _, t in rows], dtype=np.int64), "rating": 5.0})


def _hand_made_split() -> tuple[TrainingData, Catalogue]:
    """Fit (t < 10): u1 a, b; u2 a, c; u3 b, a. Validation (10 <= t < 20): u1 c, u2 b, u3 d. Holdout: u1 d, u2 d,
    u3 c."""
    fit = _events([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u2", "c", 4), ("u3", "b", 5), ("u3", "a", 6)])
    validation = _events([("u1", "c", 11), ("u2", "b", 12), ("u3", "d", 13)])
    holdout = _events([("u1", "d", 21), ("u2", "d", 22), ("u3", "c", 23)])
    train = pd.concat([fit, validation], ignore_index=True)
    empty = pd.DataFrame()
    summary = {"boundary_timestamp": 20, "train_events": len(train), "holdout_events": len(holdout),
               "holdout_users": 3, "validation_boundary_timestamp": 10, "fit_events": len(fit),
               "validation_events": len(validation), "validation_users": 3}
    data = TrainingData(train=train, holdout=holdout, ranker_train=empty, ranker_holdout=empty,
                        users_at_boundary=empty, items_at_boundary=empty, validation=validation,
                        users_at_validation=empty, items_at_validation=empty, ranker_refresh=empty, summary=summary)
    metadata = pd.DataFrame({"parent_asin": list("abcd"), "categories": [["Books"]] * 4, "main_category": "Books",
                             "price": 1.0})
    return data, Catalogue.build(data.items, metadata, None)


def test_evaluate_chooses_the_i2i_weight_on_validation_and_reports_the_holdout_with_it():
    """Popularity before validation is a 3, b 2, c 1, d 0: u1 and u2 find their item first, u3 second (NDCG
    1 / log2(3)). item2vec's vectors pair b with c and a with d: every user's last item points at the next one,
    at any weight (the smallest is kept). On the holdout each user has one unseen item left."""
    data, catalogue = _hand_made_split()
    vectors = np.zeros((len(catalogue.items), 2), dtype=np.float32)
    vectors[catalogue.items.index(["b", "c"])] = [1.0, 0.0]
    vectors[catalogue.items.index(["a", "d"])] = [0.0, 1.0]
    report = evaluate(data, catalogue, Models(item2vec=vectors), EvaluationConfig(max_users=10))

    on_validation = report["validation"]["models"]
    assert report["validation"]["evaluated_users"] == 3 and set(on_validation) == {"popularity", "item2vec"}
    assert on_validation["popularity"]["recall@10"] == pytest.approx(1.0)
    assert on_validation["popularity"]["ndcg@10"] == pytest.approx((2 + 1 / np.log2(3)) / 3)
    assert on_validation["item2vec"]["ndcg@10"] == pytest.approx(1.0)
    assert report["i2i"]["popularity_weight"] == 0.0 and "choices" not in report  # no rerank without its models
    assert report["evaluated_users"] == 3 and set(report["models"]) == {"popularity", "item2vec"}
    assert report["models"]["popularity"]["ndcg@10"] == pytest.approx(1.0)
    assert report["models"]["item2vec"]["ndcg@10"] == pytest.approx(1.0)
    assert "ranker" not in report

    judged_only = evaluate(data, catalogue, Models(item2vec=vectors), EvaluationConfig(max_users=10), holdout=False)
    assert judged_only["validation"] == report["validation"] and "models" not in judged_only


def test_the_evaluation_run_names_every_models_metrics_without_at_signs():
    report = {
        "versions": {"item2vec": "3", "two_tower": "4", "ranker": "5"},
        "models": {"rerank": {"ndcg@10": 0.2}, "ease": {"ndcg@10": 0.1}},
        "validation": {"models": {"rerank": {"ndcg@10": 0.3}}},
        "champion": {"versions": {}, "validation": {"models": {"rerank": {"recall@50": 0.4}}}},
        "ranker": {"roc_auc": 0.7},
        "baselines": {"ease": {"l2": 200.0, "fit_seconds": 1.5, "grid": {"100.0": 0.1}}},
        "i2i": {"popularity_weight": 0.1},
    }
    assert evaluation_params(report, "2024-01-06") == {
        "day": "2024-01-06", "item2vec_version": "3", "two_tower_version": "4", "ranker_version": "5",
        "ease_l2": 200.0, "i2i_popularity_weight": 0.1}
    assert evaluation_metrics(report) == {
        "rerank_ndcg_at_10": 0.2, "ease_ndcg_at_10": 0.1, "ranker_roc_auc": 0.7,
        "validation_rerank_ndcg_at_10": 0.3, "champion_validation_rerank_recall_at_50": 0.4, "ease_fit_seconds": 1.5}


def test_a_report_reads_back_as_written(tmp_path):
    report = {"models": {"popularity": {"ndcg@10": 0.1}}, "versions": {"ranker": "2"}}
    write_report(tmp_path, "2024-01-06", report)
    assert read_report(tmp_path, "2024-01-06") == report


def test_the_champions_after_the_gate_are_the_days_versions_none_or_the_previous_ones():
    day, before = {"ranker": "2"}, {"ranker": "1"}
    decide = lambda **outcome: Decision(reason="", candidate=0.2, popularity=0.1, champion=None,  # noqa: E731
                                        versions=day, previous_champions=before, **outcome)
    assert decide(promote=True).champions_after == day
    assert decide(promote=False, retire_champion=True).champions_after == {}  # popularity is served
    assert decide(promote=False).champions_after == before

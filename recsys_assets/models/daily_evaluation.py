"""The day's registered models evaluated, and the promotion gate applied, as the `model_evaluation` and
`promotion` assets run them.

`evaluate_day` judges the day's versions beside the baselines (`evaluation.evaluate`: validation judges their
weights from before the refresh, the holdout the refreshed ones, which are served) and the current champion on
the same split, tags what validation chose on the versions serving loads, and writes and logs the report.
`apply_gate` moves the `champion` alias as the gate (`promotion.gate`) decides on that report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from torch import nn

from recsys_assets.models.baselines import BASELINES, BaselineConfig, reusable_choice
from recsys_assets.models.bundles import load_pipeline
from recsys_assets.models.dataset import TrainingData
from recsys_assets.models.evaluation import EvaluationConfig, Models, evaluate
from recsys_assets.models.features import Catalogue
from recsys_assets.models.fusion import Fusion
from recsys_assets.models.incremental import INCREMENTAL, TRAINING_TAG
from recsys_assets.models.promotion import (
    GATE_TAG,
    Decision,
    baseline_comparison,
    describe_comparison,
    gate,
    plot_png,
    write_report,
)
from recsys_assets.models.registry import (
    I2I_WEIGHT_TAG,
    MODEL_NAMES,
    MlflowStore,
    champion_versions,
    fit_only,
    load_model,
    not_found,
    retire_champion,
    set_champion,
    tag_fusion,
    tag_i2i_weight,
)
from recsys_assets.models.weights import StoredModelError

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DayEvaluation:
    """The day's evaluation: `evaluation.evaluate`'s report with the versions it judged (`versions`) and the
    champion judged on the same split (`champion`, when there is another), written to `path` and drawn in `png`."""
    report: dict
    path: Path
    png: bytes

    @property
    def comparison(self) -> dict | None:
        """The served pipeline against the best baseline (`promotion.baseline_comparison`)."""
        return baseline_comparison(self.report)


def evaluate_day(data: TrainingData, catalogue: Catalogue, store: MlflowStore, versions: dict[str, str],
                 cfg: EvaluationConfig, *, folder: Path, day: str, log: logging.Logger = LOG) -> DayEvaluation:
    """Evaluate the registered `versions` of the day's models (from `store`) on the day's `data`, tag what
    validation chose (the rerank's fusion, the i2i's popularity weight) on the versions, judge the champion on
    the same split, write the report to `folder` and log it to a nested MLflow run."""
    loaded = {name: load_model(store, name, v) for name, v in versions.items()}
    served = _models(loaded)
    # Validation judges the weights from before the refresh on it; the holdout, the refreshed (served) ones.
    judged = _models({name: fit_only(store, name, versions[name], model) for name, model in loaded.items()})
    baselines = BaselineConfig()
    earlier = _earlier_baselines(folder, day) if _all_incremental(store, versions) else None
    report = evaluate(data, catalogue, served, cfg, baselines=baselines, validation_models=judged,
                      baseline_choice=reusable_choice(earlier, baselines))
    if report["baselines"]["reused_choice"]:
        report["baselines"]["chosen_on"] = earlier.get("chosen_on", earlier["day"])
    report["versions"] = versions
    if "choices" in report:  # serving fuses the experts' scores as chosen here
        tag_fusion(store.client(), versions["ranker"], Fusion(**report["choices"]["fusion"]))
    if "i2i" in report:  # and weighs popularity in i2i as chosen here
        tag_i2i_weight(store.client(), versions["item2vec"], report["i2i"]["popularity_weight"])
    champion = _judge_champion(data, catalogue, store, versions, cfg, log)
    if champion is not None:
        report["champion"] = champion
    path = write_report(folder, day, report)
    evaluation = DayEvaluation(report, path, plot_png(report))
    png_path = path.with_suffix(".png")
    png_path.write_bytes(evaluation.png)
    with mlflow.start_run(run_name=f"evaluation-{day}", nested=True):
        mlflow.log_params(evaluation_params(report, day))
        mlflow.log_metrics(evaluation_metrics(report))
        mlflow.log_dict(report, "evaluation.json")
        mlflow.log_artifact(str(png_path))
    if evaluation.comparison and not evaluation.comparison["pays_for_itself"]:
        log.warning(describe_comparison(evaluation.comparison))
    return evaluation


def _all_incremental(store: MlflowStore, versions: dict[str, str]) -> bool:
    """Whether every model that can train incrementally did today: the baselines' values are then reused as
    the lineage's last full retrain (or a later day) chose them, and searched again with the next full one."""
    client = store.client()
    return all(client.get_model_version(name, versions[name]).tags.get(TRAINING_TAG) == INCREMENTAL
               for name in ("two_tower", "ranker"))


def _earlier_baselines(folder: Path, day: str) -> dict | None:
    """The newest evaluation before `day`'s baselines (`report["baselines"]`, with its `day`), if any."""
    for path in sorted(folder.glob("????-??-??.json"), reverse=True):
        if path.stem < day:
            baselines = json.loads(path.read_text()).get("baselines")
            return {**baselines, "day": path.stem} if baselines else None
    return None


def _models(loaded: dict[str, nn.Module]) -> Models:
    return Models(item2vec=loaded["item2vec"].embeddings.weight.detach().numpy(), two_tower=loaded["two_tower"],
                  ranker=loaded["ranker"])


def _judge_champion(data: TrainingData, catalogue: Catalogue, store: MlflowStore, versions: dict[str, str],
                    cfg: EvaluationConfig, log: logging.Logger) -> dict | None:
    """The champion's versions and validation on this very split (same period, same users), which the gate
    compares with; None when there is no champion or it is the day's versions."""
    champions = champion_versions(store.client())
    if not all(champions.values()) or champions == versions:
        return None
    try:
        pipeline = load_pipeline(store, champions, weights="fit_only")
    except Exception as exc:
        # Only a champion that cannot be judged (registered before models carried their vocabularies, or
        # pickled before they were stored as weights) is skipped; an MLflow outage fails the step rather
        # than letting the gate promote without the comparison.
        if not (isinstance(exc, (FileNotFoundError, StoredModelError)) or not_found(exc)):
            raise
        log.warning(f"the champion {champions} cannot be evaluated on this split: {exc}")
        pipeline = None
    judged = evaluate(data, catalogue, pipeline, cfg, holdout=False)["validation"] if pipeline else {"models": {}}
    return {"versions": champions, "validation": judged}


def _metric_name(model: str, metric: str) -> str:
    return f"{model}_{metric.replace('@', '_at_')}"  # MLflow names take no '@'


def _fitted_baseline_values(report: dict) -> list[tuple[str, object]]:
    """The baselines' chosen values and fit times, as `<baseline>_<key>`."""
    return [(f"{name}_{key}", value) for name in BASELINES
            for key, value in report.get("baselines", {}).get(name, {}).items() if not isinstance(value, dict)]


def evaluation_params(report: dict, day: str) -> dict[str, object]:
    """The evaluation run's MLflow params: the day, the versions judged, the baselines' chosen values, and the
    fusion (`fusion_*`) and the i2i's popularity weight chosen on validation."""
    params = {"day": day, **{f"{k}_version": v for k, v in report["versions"].items()}}
    params.update({key: value for key, value in _fitted_baseline_values(report) if not key.endswith("seconds")})
    if "choices" in report:
        params.update(Fusion(**report["choices"]["fusion"]).tags())
    if "i2i" in report:
        params[I2I_WEIGHT_TAG] = report["i2i"]["popularity_weight"]
    return params


def evaluation_metrics(report: dict) -> dict[str, float]:
    """The evaluation run's MLflow metrics: every model's on the holdout (`<model>_<metric>`) and on validation
    (`validation_...`), the champion's on validation (`champion_validation_...`), the ranker's classification
    (`ranker_...`) and the baselines' fit times."""
    metrics = {_metric_name(model, metric): value
               for model, values in report["models"].items() for metric, value in values.items()}
    metrics.update({f"ranker_{k}": v for k, v in report.get("ranker", {}).items()})
    for prefix, models_metrics in (("validation", report["validation"]["models"]),
                                   ("champion_validation", report.get("champion", {}).get("validation", {}).get(
                                       "models", {}))):
        metrics.update({f"{prefix}_{_metric_name(model, metric)}": value
                        for model, values in models_metrics.items() for metric, value in values.items()})
    metrics.update({key: value for key, value in _fitted_baseline_values(report) if key.endswith("seconds")})
    return metrics


# The day's figures as `model_evaluation`'s metadata, one number per key (the Dagster UI plots each over the
# days; the pipeline exporter reads them back as recsys_model_evaluation{model, metric}): on the holdout, per
# model (ours and the baselines), and the ranker's classification of held-out pairs.
FIGURE_PREFIX = "evaluation"
RANKING_FIGURES = {"ndcg@10": "ndcg_at_10", "recall@50": "recall_at_50", "coverage@10": "coverage"}
RANKER_FIGURES = {"roc_auc": "auc", "pr_auc": "pr_auc"}


def figure_key(model: str, metric: str) -> str:
    return f"{FIGURE_PREFIX}/{model}/{metric}"


def parse_figure_key(key: str) -> tuple[str, str] | None:
    """(model, metric) of a `figure_key`; None for any other metadata key."""
    parts = key.split("/")
    return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == FIGURE_PREFIX else None


def evaluation_figures(report: dict) -> dict[str, float]:
    """`figure_key(model, metric)` -> value: NDCG@10, Recall@50 and coverage (of the top 10 lists) of every
    model on the holdout, and the ranker's ROC-AUC (`auc`) and PR-AUC on the held-out pairs."""
    figures = {figure_key(model, name): float(values[metric])
               for model, values in report.get("models", {}).items()
               for metric, name in RANKING_FIGURES.items() if metric in values}
    figures.update({figure_key("ranker", name): float(report["ranker"][metric])
                    for metric, name in RANKER_FIGURES.items() if metric in report.get("ranker", {})})
    return figures


def apply_gate(report: dict, client: MlflowClient, day: str, log: logging.Logger = LOG) -> Decision:
    """The gate's decision on the day's evaluation `report` (`promotion.gate`, against the champion now), logged
    to a nested MLflow run and applied: the day's versions promoted (tagged with the gate metric and the day),
    the champion retired, or kept."""
    decision = gate(report, champion_versions(client))
    with mlflow.start_run(run_name=f"promotion-{day}", nested=True):
        mlflow.log_dict(decision.as_dict(), "decision.json")
        mlflow.log_metrics({"candidate_ndcg_at_10": decision.candidate, "popularity_ndcg_at_10": decision.popularity,
                            "promoted": float(decision.promote),
                            **({"champion_ndcg_at_10": decision.champion} if decision.champion is not None else {})})
    if decision.promote:
        for name, version in decision.versions.items():
            client.set_model_version_tag(name, version, GATE_TAG, str(decision.candidate))
            client.set_model_version_tag(name, version, "promoted_on", day)
            set_champion(client, name, version)
        log.info("promoted: " + decision.reason)
    elif decision.retire_champion:
        for name in MODEL_NAMES:
            retire_champion(client, name, day)
        log.warning("retired the champion: " + decision.reason)
    elif not any(decision.previous_champions.values()):
        log.warning(f"no model passed the gate ({decision.reason}): the release serves popularity")
    else:
        log.info("kept the champion: " + decision.reason)
    return decision

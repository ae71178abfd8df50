"""Evaluation of the day's models beside the baselines, and the promotion gate that moves `champion`.

The gate lives in the `promotion` asset (automation does not wait for checks): it moves the MLflow alias
only when the day's rerank pipeline beats popularity and the current champion on NDCG@10 on the validation
period, the champion evaluated by `model_evaluation` on the day's own split. Before any model passes, and
after a champion that no longer beats popularity is retired (neither it nor the day's pipeline does),
popularity is served. The holdout is reported beside, never used to decide. Validation judges the models'
weights from before their refresh on the validation period (the champion's too: its refreshed weights have
seen most of today's validation period); the holdout reports the refreshed ones, which are served.
"""


import json

import mlflow
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, TableRecord, asset

from recsys_assets.defs.models.assets import MODEL_ASSET, Tracking, latest_version, load_inputs
from recsys_assets.defs.shared.resources import ServingResource, TrainingResource, WarehouseResource
from recsys_assets.models.baselines import BASELINES, BaselineConfig
from recsys_assets.models.bundles import load_pipeline
from recsys_assets.models.evaluation import EvaluationConfig, Models, evaluate
from recsys_assets.models.promotion import (
    GATE_EVIDENCE,
    GATE_METRIC,
    GATE_TAG,
    baseline_comparison,
    describe_comparison,
    gate,
    metrics_table,
    plot_png,
    png_markdown,
    write_report,
)
from recsys_assets.models.fusion import Fusion
from recsys_assets.models.registry import (
    I2I_WEIGHT_TAG,
    MODEL_NAMES,
    champion_versions,
    fit_only,
    retire_champion,
    set_champion,
    tag_fusion,
    tag_i2i_weight,
)


@asset(deps=["item2vec", "two_tower", "ranker"], code_version="4",
       description="Temporal holdout, full ranking over the catalogue: Recall@10/50, NDCG@10, coverage@10 for "
                   "item2vec last-item i2i, two-tower and two-tower + ranker beside the baselines (popularity, recent "
                   "popularity, EASE, item-kNN), on the validation period (where the fusion weight and the "
                   "baselines' values are chosen, and the gate compares) and on the holdout (reported only); ranker ROC/PR-AUC.",
       **MODEL_ASSET)
def model_evaluation(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
                     serving: ServingResource, mlflow_tracking: Tracking):
    data, catalogue = load_inputs(context, training, warehouse)
    versions = {name: latest_version(context, name) for name in MODEL_NAMES}
    registry = serving.registry()
    loaded = {name: mlflow.pytorch.load_model(f"models:/{name}/{v}") for name, v in versions.items()}
    served = Models(item2vec=loaded["item2vec"].embeddings.weight.detach().numpy(), two_tower=loaded["two_tower"],
                    ranker=loaded["ranker"])
    # Validation judges the weights from before the refresh on it; the holdout, the refreshed (served) ones.
    before = {name: fit_only(registry, name, versions[name], model) for name, model in loaded.items()}
    judged = Models(item2vec=before["item2vec"].embeddings.weight.detach().numpy(), two_tower=before["two_tower"],
                    ranker=before["ranker"])
    cfg = EvaluationConfig(max_users=training.eval_max_users, seed=training.seed)
    report = evaluate(data, catalogue, served, cfg, baselines=BaselineConfig(), validation_models=judged)
    report["versions"] = versions
    if "choices" in report:  # serving fuses the experts' scores as chosen here
        tag_fusion(registry.client(), versions["ranker"], Fusion(**report["choices"]["fusion"]))
    if "i2i" in report:  # and weighs popularity in i2i as chosen here
        tag_i2i_weight(registry.client(), versions["item2vec"], report["i2i"]["popularity_weight"])
    # The gate compares with the champion judged on this very split (same period, same users).
    champions = champion_versions(registry.client())
    if all(champions.values()) and champions != versions:
        try:
            pipeline = load_pipeline(registry, champions, weights="fit_only")
        except Exception as exc:  # e.g. registered before models carried their vocabularies: cannot be judged
            context.log.warning(f"the champion {champions} cannot be evaluated on this split: {exc}")
            pipeline = None
        judged = evaluate(data, catalogue, pipeline, cfg, holdout=False)["validation"] if pipeline else {"models": {}}
        report["champion"] = {"versions": champions, "validation": judged}
    path = write_report(training.evaluation_dir_path, context.partition_key, report)
    png = plot_png(report)
    png_path = path.with_suffix(".png")
    png_path.write_bytes(png)
    with mlflow.start_run(run_name=f"evaluation-{context.partition_key}", nested=True):
        mlflow.log_params({"day": context.partition_key, **{f"{k}_version": v for k, v in versions.items()}})
        mlflow.log_metrics({f"{model}_{metric.replace('@', '_at_')}": value
                            for model, values in report["models"].items() for metric, value in values.items()})
        mlflow.log_metrics({f"ranker_{k}": v for k, v in report.get("ranker", {}).items()})
        for prefix, models_metrics in (("validation", report["validation"]["models"]),
                                       ("champion_validation", report.get("champion", {}).get("validation", {}).get(
                                           "models", {}))):
            mlflow.log_metrics({f"{prefix}_{model}_{metric.replace('@', '_at_')}": value
                                for model, values in models_metrics.items() for metric, value in values.items()})
        fitted = [(f"{name}_{key}", value) for name in BASELINES
                  for key, value in report.get("baselines", {}).get(name, {}).items() if not isinstance(value, dict)]
        mlflow.log_params({key: value for key, value in fitted if not key.endswith("seconds")})
        mlflow.log_metrics({key: value for key, value in fitted if key.endswith("seconds")})
        if "choices" in report:
            mlflow.log_params(Fusion(**report["choices"]["fusion"]).tags())  # fusion_*: apart from the baselines
        if "i2i" in report:
            mlflow.log_param(I2I_WEIGHT_TAG, report["i2i"]["popularity_weight"])
        mlflow.log_dict(report, "evaluation.json")
        mlflow.log_artifact(str(png_path))
    table = metrics_table(report)
    comparison = baseline_comparison(report)
    if comparison and not comparison["pays_for_itself"]:
        context.log.warning(describe_comparison(comparison))
    return MaterializeResult(metadata={
        "vs_best_baseline": MetadataValue.json(comparison or {}),
        "baselines": MetadataValue.json(report.get("baselines", {})),
        "metrics": MetadataValue.table([TableRecord(row) for row in table]),
        "validation_metrics": MetadataValue.table([TableRecord(row) for row in metrics_table(report["validation"])]),
        "choices": MetadataValue.json(report.get("choices", {})),
        "i2i": MetadataValue.json(report.get("i2i", {})),  # the last-item i2i's popularity weight
        "gate_evidence": MetadataValue.json(report["validation"].get(GATE_EVIDENCE, {})),  # the gain and its noise
        "plot": MetadataValue.md(png_markdown(png)),
        "ranker": MetadataValue.json(report.get("ranker", {})),
        "split": MetadataValue.json(report["split"]),
        "versions": MetadataValue.json(versions),
        "path": MetadataValue.path(str(path)),
        **{f"{row['model']}_{GATE_METRIC}": row[GATE_METRIC] for row in table},
        "champion_on_this_split": MetadataValue.json(report.get("champion", {})),
    })


@asset(deps=["model_evaluation"], code_version="2",
       description="Moves MLflow alias `champion` of item2vec, two_tower and ranker to the day's versions only if "
                   "the rerank pipeline beats popularity and the current champion (evaluated on the same split) on "
                   "validation NDCG@10.", **MODEL_ASSET)
def promotion(context: AssetExecutionContext, training: TrainingResource, mlflow_tracking: Tracking):
    report = json.loads((training.evaluation_dir_path / f"{context.partition_key}.json").read_text())
    client = mlflow.MlflowClient()
    decision = gate(report, champion_versions(client))
    with mlflow.start_run(run_name=f"promotion-{context.partition_key}", nested=True):
        mlflow.log_dict(decision.as_dict(), "decision.json")
        mlflow.log_metrics({"candidate_ndcg_at_10": decision.candidate, "popularity_ndcg_at_10": decision.popularity,
                            "promoted": float(decision.promote),
                            **({"champion_ndcg_at_10": decision.champion} if decision.champion is not None else {})})
    if decision.promote:
        for name, version in report["versions"].items():
            client.set_model_version_tag(name, version, GATE_TAG, str(decision.candidate))
            client.set_model_version_tag(name, version, "promoted_on", context.partition_key)
            set_champion(client, name, version)
        context.log.info("promoted: " + decision.reason)
    elif decision.retire_champion:
        for name in MODEL_NAMES:
            retire_champion(client, name, context.partition_key)
        context.log.warning("retired the champion: " + decision.reason)
    elif not any(decision.previous_champions.values()):
        context.log.warning(f"no model passed the gate ({decision.reason}): the release serves popularity")
    else:
        context.log.info("kept the champion: " + decision.reason)
    return MaterializeResult(metadata={
        "promoted": decision.promote,
        "retired_champion": decision.retire_champion,
        "reason": decision.reason,
        "candidate_ndcg@10": decision.candidate,
        "popularity_ndcg@10": decision.popularity,
        "champion_ndcg@10": decision.champion if decision.champion is not None else -1.0,
        "champion_versions": MetadataValue.json(report["versions"] if decision.promote else {}
                                                if decision.retire_champion else decision.previous_champions),
    })

"""Evaluation of the day's models beside the baselines, and the promotion gate that moves `champion`.

The gate lives in the `promotion` asset (automation does not wait for checks): it moves the MLflow alias
only when the day's rerank pipeline beats popularity and the current champion on NDCG@10 on the validation
period, the champion evaluated by `model_evaluation` on the day's own split. Before any model passes, and
after a champion that no longer beats popularity is retired (neither it nor the day's pipeline does),
popularity is served. The holdout is reported beside, never used to decide. Validation judges the models'
weights from before their refresh on the validation period (the champion's too: its refreshed weights have
seen most of today's validation period); the holdout reports the refreshed ones, which are served.
"""


from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, TableRecord, asset

from recsys_assets.defs.shared.materializations import latest_version
from recsys_assets.defs.shared.models import MODEL_ASSET, Tracking, load_inputs
from recsys_assets.defs.shared.resources import ServingResource, TrainingResource, WarehouseResource
from recsys_assets.models.promotion import (
    GATE_EVIDENCE,
    GATE_METRIC,
    MODEL_NAMES,
    metrics_table,
    png_markdown,
    read_report,
)


@asset(deps=["item2vec", "two_tower", "ranker"], code_version="4",
       description="Temporal holdout, full ranking over the catalogue: Recall@10/50, NDCG@10, coverage@10 for "
                   "item2vec last-item i2i, two-tower and two-tower + ranker beside the baselines (popularity, recent "
                   "popularity, EASE, item-kNN), on the validation period (where the fusion weight and the "
                   "baselines' values are chosen, and the gate compares) and on the holdout (reported only); "
                   "ranker ROC/PR-AUC.",
       **MODEL_ASSET)
def model_evaluation(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
                     serving: ServingResource, mlflow_tracking: Tracking):
    from recsys_assets.models.daily_evaluation import evaluate_day, evaluation_figures
    from recsys_assets.models.evaluation import EvaluationConfig

    data, catalogue = load_inputs(context, training, warehouse)
    versions = {name: latest_version(context, name) for name in MODEL_NAMES}
    cfg = EvaluationConfig(max_users=training.eval_max_users, seed=training.seed)
    evaluation = evaluate_day(data, catalogue, serving.registry(), versions, cfg,
                              folder=training.evaluation_dir_path, day=context.partition_key, log=context.log)
    report, table = evaluation.report, metrics_table(evaluation.report)
    return MaterializeResult(metadata={
        "vs_best_baseline": MetadataValue.json(evaluation.comparison or {}),
        "baselines": MetadataValue.json(report.get("baselines", {})),
        "metrics": MetadataValue.table([TableRecord(row) for row in table]),
        "validation_metrics": MetadataValue.table([TableRecord(row) for row in metrics_table(report["validation"])]),
        "choices": MetadataValue.json(report.get("choices", {})),
        "i2i": MetadataValue.json(report.get("i2i", {})),  # the last-item i2i's popularity weight
        "gate_evidence": MetadataValue.json(report["validation"].get(GATE_EVIDENCE, {})),  # the gain and its noise
        "plot": MetadataValue.md(png_markdown(evaluation.png)),
        "ranker": MetadataValue.json(report.get("ranker", {})),
        "split": MetadataValue.json(report["split"]),
        "versions": MetadataValue.json(versions),
        "path": MetadataValue.path(str(evaluation.path)),
        **{f"{row['model']}_{GATE_METRIC}": row[GATE_METRIC] for row in table},
        "champion_on_this_split": MetadataValue.json(report.get("champion", {})),
        # evaluation/<model>/<metric>: one number each, plotted over the days and exported as metrics
        **{key: MetadataValue.float(value) for key, value in evaluation_figures(report).items()},
    })


@asset(deps=["model_evaluation"], code_version="2",
       description="Moves MLflow alias `champion` of item2vec, two_tower and ranker to the day's versions only if "
                   "the rerank pipeline beats popularity and the current champion (evaluated on the same split) on "
                   "validation NDCG@10.", **MODEL_ASSET)
def promotion(context: AssetExecutionContext, training: TrainingResource, mlflow_tracking: Tracking):
    import mlflow

    from recsys_assets.models.daily_evaluation import apply_gate

    report = read_report(training.evaluation_dir_path, context.partition_key)
    decision = apply_gate(report, mlflow.MlflowClient(), context.partition_key, context.log)
    return MaterializeResult(metadata={
        "promoted": decision.promote,
        "retired_champion": decision.retire_champion,
        "reason": decision.reason,
        "candidate_ndcg@10": decision.candidate,
        "popularity_ndcg@10": decision.popularity,
        "champion_ndcg@10": decision.champion if decision.champion is not None else -1.0,
        "champion_versions": MetadataValue.json(decision.champions_after),
    })

"""On-demand hyper-parameter search for the two-tower (Ray Tune, judged on the validation period): its best
values are what the daily `two_tower` training uses from then on.

Not automated: a search costs many trainings. Materialize `two_tower_tuning` for a day (UI, or `dagster asset
materialize --select two_tower_tuning --partition <day>`) when the data changed character; under gcp the
trials spread over the KubeRay cluster (`RAY_ADDRESS`).
"""


import tempfile

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, TableRecord, asset

from recsys_assets.defs.shared.models import Tracking, load_inputs
from recsys_assets.defs.shared.partitions import daily_partitions
from recsys_assets.defs.shared.resources import TrainingResource, WarehouseResource


@asset(partitions_def=daily_partitions, deps=["training_dataset", "tag_embeddings"], group_name="models",
       kinds={"ray", "mlflow"}, code_version="2",
       description="Ray Tune search over the two-tower's temperature, id width, user id (with or without the "
                   "user's own embedding), epochs and learning rate: each "
                   "trial trains on the fit period and is judged on validation Recall@50, within a time budget. "
                   "The best values go to RECSYS_HOME/tuning/two_tower.json, which `two_tower` trains with.")
def two_tower_tuning(context: AssetExecutionContext, training: TrainingResource, warehouse: WarehouseResource,
                     mlflow_tracking: Tracking) -> MaterializeResult:
    import mlflow

    from recsys_assets.models.tuning import OBJECTIVE, TuningConfig, save_best, search

    data, catalogue = load_inputs(context, training, warehouse)
    cfg = TuningConfig(trials=training.tuning_trials, time_budget_s=training.tuning_time_budget_s,
                       batch_size=training.batch_size, seed=training.seed)
    if training.ray_storage:  # a cluster's trials are other pods: storage they all reach
        result = search(data, catalogue, cfg, training.ray_storage)
    else:
        with tempfile.TemporaryDirectory(prefix="ray-tune-") as storage:
            result = search(data, catalogue, cfg, storage)
    path = save_best(training.tuning_dir_path, context.partition_key, result)
    with mlflow.start_run(run_name=f"two_tower_tuning-{context.partition_key}", nested=True):
        mlflow.log_params({f"best_{k}": v for k, v in result["best"].items()})
        mlflow.log_metric(f"best_validation_{OBJECTIVE.replace('@', '_at_')}", result[OBJECTIVE])
        mlflow.log_dict(result, "tuning.json")
    context.log.info(f"best of {len(result['trials'])} trials: {result['best']} ({OBJECTIVE} {result[OBJECTIVE]:.4f})")
    return MaterializeResult(metadata={
        "best": MetadataValue.json(result["best"]),
        f"validation_{OBJECTIVE}": result[OBJECTIVE],
        "trials": MetadataValue.table([TableRecord({k: round(v, 5) if isinstance(v, float) else v
                                                    for k, v in trial.items()}) for trial in result["trials"]]),
        "path": MetadataValue.path(str(path)),
    })

"""Drift of the day's ranker against the previous one, as a warning check on `ranker` (never blocking: the
promotion gate judges quality; this says how differently the new version scores).

`score_drift`: PSI of the day's ranker's probabilities on a fixed sample of the day's held-out (user, item)
pairs against the previous ranker version's on the same pairs (the newest earlier materialization of `ranker`
that registered another version: normally the previous day's), each model under its own vocabularies. The
numbers are in the evaluation's metadata (`psi`, `threshold`, `histogram`, `version`, `previous_version`,
`drift_signal`), which the pipeline exporter turns into recsys_drift_psi{signal="ranker_score"}.
"""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetKey, AssetRecordsFilter, Failure, asset_check

from recsys_assets.defs.ingest.drift import checked_day, drift_result
from recsys_assets.defs.shared.resources import ServingResource, TrainingResource
from recsys_assets.observability.drift import PSI_THRESHOLD, DriftResult, score_drift

RANKER = AssetKey("ranker")
SAMPLE_PAIRS = 5_000  # held-out pairs scored by both versions (a fixed, seeded sample of the day's)
LOOK_BACK = 20  # ranker materializations searched for the previous version


def previous_version(context: AssetCheckExecutionContext, version: str) -> str | None:
    """The version the newest earlier materialization of `ranker` registered (another than `version`)."""
    for record in context.instance.fetch_materializations(AssetRecordsFilter(asset_key=RANKER),
                                                          limit=LOOK_BACK).records:
        recorded = record.asset_materialization.metadata.get("mlflow_version")
        if recorded is not None and str(recorded.value) != version:
            return str(recorded.value)
    return None


@asset_check(asset=RANKER, name="score_drift", blocking=False,
             description="The day's ranker's probabilities on a fixed sample of the day's held-out pairs against the "
                         f"previous ranker version's on the same pairs: population stability index over the previous "
                         f"version's deciles, warns over {PSI_THRESHOLD}.")
def ranker_score_drift(context: AssetCheckExecutionContext, training: TrainingResource,
                       serving: ServingResource) -> AssetCheckResult:
    from recsys_assets.models.bundles import Ranker
    from recsys_assets.models.dataset import TrainingData
    from recsys_assets.models.weights import StoredModelError

    day = checked_day(context, RANKER)
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=RANKER, asset_partitions=[day]), limit=1).records if day else []
    if not records:
        raise Failure(f"ranker has no materialization for {day}: materialize it first")
    version = str(records[0].asset_materialization.metadata["mlflow_version"].value)
    previous = previous_version(context, version)
    data = TrainingData.load(training.dataset_dir(day))
    pairs = data.ranker_holdout.sample(n=min(SAMPLE_PAIRS, len(data.ranker_holdout)), random_state=training.seed)
    store = serving.registry()
    current_scores = Ranker.load(store, version).probabilities(pairs)
    if previous is None:
        result = score_drift([], current_scores)
    else:
        try:
            result = score_drift(Ranker.load(store, previous).probabilities(pairs), current_scores)
        except (FileNotFoundError, StoredModelError) as exc:  # one stored before models carried their vocabularies
            result = DriftResult(None, reason=f"the previous version {previous} cannot be scored: {exc}")
    check = drift_result("ranker_score", result, day, None)
    return AssetCheckResult(passed=check.passed, severity=check.severity, description=check.description,
                            metadata={**check.metadata, "version": version, "previous_version": previous or "",
                                      "pairs": len(pairs)})

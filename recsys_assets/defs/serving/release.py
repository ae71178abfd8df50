"""The release that tells serving to move: champion model versions, index collections and candidate
versions, published together once all of them exist and passed their checks. Replicas poll it and switch.

`champion_sensor` covers a champion moved outside a run (`recsys promote --version N`, a rollback): it
requests the serving assets of the newest day again, so the index and u2i follow the new champion.
"""


from dagster import (
    AssetExecutionContext,
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)

from recsys_assets.defs.serving.index import SERVING_ASSET, built_from
from recsys_assets.defs.shared.materializations import recorded_metadata
from recsys_assets.defs.shared.resources import ServingResource
from recsys_assets.feature_contract import INDEX_ALIASES, ITEM2VEC_ITEMS, TWO_TOWER_ITEMS
from recsys_assets.serving_data.candidates import EASE, I2I, ITEM, POPULAR, RECENT, SEQUENCE, U2I, CandidateStore
from recsys_assets.serving_data.release import POPULARITY, Published, Release, ReleaseStore

CANDIDATE_ASSETS = {POPULAR: "popular_items", I2I: "i2i_candidates", U2I: "u2i_candidates",
                    EASE: "ease_candidates", RECENT: "recent_popularity", SEQUENCE: "user_sequences",
                    ITEM: "item_catalog"}
MODEL_FREE_KINDS = (POPULAR, SEQUENCE, ITEM)  # what a popularity release needs: built without any model
SERVING_ASSETS = [*INDEX_ALIASES, *CANDIDATE_ASSETS.values(), "serving_release"]


@asset(deps=[*INDEX_ALIASES, *CANDIDATE_ASSETS.values()], code_version="2", kinds={"rayserve"},
       description="Publishes the release serving moves to: champion versions + the collections behind the index "
                   "aliases + the day's candidate versions; the day's unpromoted ranker as canary challenger.",
       **SERVING_ASSET)
def serving_release(context: AssetExecutionContext, serving: ServingResource) -> MaterializeResult:
    from recsys_assets.models.registry import champion_versions

    registry = serving.registry()
    champions = champion_versions(registry.client())
    index = serving.index()
    if all(champions.values()):
        release = _model_release(context, index, champions)
    else:
        # No model has passed the gate yet: serve popularity rather than nothing; the first model that
        # passes later takes over.
        context.log.warning(f"no champion models yet ({champions}): the release serves popularity")
        release = Release(day=context.partition_key, models={}, collections={},
                          candidates={kind: recorded_metadata(context, CANDIDATE_ASSETS[kind], "version")
                                      for kind in MODEL_FREE_KINDS}, pipeline=POPULARITY)
    releases = ReleaseStore(serving.kv())
    outcome = releases.publish(release)
    if outcome is Published.NEWER_SERVED:
        context.log.info(f"a release of a later day than {release.day} is current: not moving serving back")
    published = outcome is Published.PUBLISHED
    retired = _retire_candidates(serving, releases) if published else {}
    return MaterializeResult(metadata={
        "release": release.id, "published": published, "outcome": outcome.value, "pipeline": release.pipeline,
        "models": MetadataValue.json(release.models), "collections": MetadataValue.json(release.collections),
        "candidates": MetadataValue.json(release.candidates), "challengers": MetadataValue.json(release.challengers),
        "retired_candidates": MetadataValue.json(retired),
    })


def _model_release(context: AssetExecutionContext, index, models: dict[str, str]) -> Release:
    """The champions with the collections behind the index aliases and the day's candidate versions,
    checked to be built from those very champions (a two-tower's user vectors only match its own items)."""
    collections = {alias: index.resolve(alias) for alias in INDEX_ALIASES.values()}
    candidates = {kind: recorded_metadata(context, asset_name, "version")
                  for kind, asset_name in CANDIDATE_ASSETS.items()}
    expected = {collections[TWO_TOWER_ITEMS]: models["two_tower"], candidates[U2I]: models["two_tower"],
                collections[ITEM2VEC_ITEMS]: models["item2vec"], candidates[I2I]: models["item2vec"],
                candidates[EASE]: models["ranker"], candidates[RECENT]: models["ranker"]}
    stale = [name for name, version in expected.items() if not name or not built_from(name, version)]
    if stale:
        raise Failure(f"not built from the champion versions {models}: {stale}; re-materialize them first")
    day_ranker = recorded_metadata(context, "ranker", "mlflow_version", required=False)
    challengers = {"ranker": day_ranker} if day_ranker and day_ranker != models["ranker"] else {}
    return Release(day=context.partition_key, models=models, collections=collections, candidates=candidates,
                   challengers=challengers)


def _retire_candidates(serving: ServingResource, releases: ReleaseStore) -> dict:
    """Keep the candidate versions of the last two releases (a replica may still serve the previous one)."""
    store = CandidateStore(serving.kv())
    return {kind: store.retire(kind, {r.candidates.get(kind) for r in releases.recent()}) for kind in CANDIDATE_ASSETS}


def _release_on_its_way(instance) -> bool:
    """A queued or running run includes serving_release (e.g. the day's chain, which just promoted)."""
    runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED,
                                                  DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]))
    return any(serving_release.key in (run.asset_selection or ()) for run in runs)


serving_refresh_job = define_asset_job("serving_refresh", selection=AssetSelection.assets(*SERVING_ASSETS))


@sensor(job=serving_refresh_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
        description="A champion moved outside a run (rollback): rebuild the serving assets of the newest day.")
def champion_sensor(context: SensorEvaluationContext, serving: ServingResource):
    from recsys_assets.models.registry import champion_versions

    current = ReleaseStore(serving.kv()).current()
    if current is None:
        return SkipReason("nothing released yet")
    if _release_on_its_way(context.instance):
        return SkipReason("a run that publishes a release is queued or running: the champion it promoted follows")
    client = serving.registry().client()
    champions = champion_versions(client)
    if any(v is None for v in champions.values()) or champions == current.models:
        return SkipReason(f"serving the champions {current.models}")
    key = ",".join(f"{k}={v}" for k, v in sorted(champions.items()))
    # Keyed by the release it moves away from: rolling back to the same versions again later (after
    # serving moved on) is a new request, while repeated ticks before the refresh lands are not.
    return RunRequest(run_key=f"{current.id}:{key}", partition_key=current.day,
                      tags={"recsys/reason": f"champions {champions} differ from the release's {current.models}"})

"""Vector index assets: the champion two-tower's item vectors, item2vec vectors and tag embeddings, each a
new versioned Qdrant collection per build; the alias moves only after the collection passes its check.
"""


import json

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from recsys_assets.defs.automation.conditions import NEWEST_LANDED_DAY
from recsys_assets.defs.shared.partitions import daily_partitions
from recsys_assets.defs.shared.resources import ServingResource, TrainingResource
from recsys_assets.defs.shared.retries import TRANSIENT_FAULTS
from recsys_assets.feature_contract import INDEX_ALIASES
from recsys_assets.models.mlflow_store import MlflowStore
from recsys_assets.models.tags import load_tag_embeddings
from recsys_assets.serving_data.release import ReleaseStore

# A store that is briefly away (MLflow, Qdrant, Redis) costs a pause, not the day's release.
SERVING_ASSET = dict(partitions_def=daily_partitions, group_name="serving",
                     automation_condition=NEWEST_LANDED_DAY, retry_policy=TRANSIENT_FAULTS)


def build_version(context: AssetExecutionContext, model_version: str | None = None) -> str:
    """Names one build: the day, the model version it serves, the run. A re-run never rewrites what
    serving may be reading; it writes a new version beside it."""
    model = f"_v{model_version}" if model_version else ""
    return f"{context.partition_key}{model}_{context.run_id[:8]}"


def built_from(version: str, model_version: str) -> bool:
    return f"_v{model_version}_" in version


def champion_version(registry: MlflowStore, name: str) -> str | None:
    """The version behind `name`'s champion alias; None before any model passed the gate."""
    from recsys_assets.models.registry import champion

    found = champion(registry.client(), name)
    return str(found.version) if found is not None else None


def without_champion(context: AssetExecutionContext, name: str, check_name: str) -> MaterializeResult:
    """No model has passed the gate yet: nothing to build from one. Not an outage: the release serves
    popularity until a model beats it (`serving_release`)."""
    message = f"no champion {name} yet (no model has beaten popularity): nothing built, popularity is served"
    context.log.warning(message)
    return MaterializeResult(metadata={"skipped": message},
                             check_results=[AssetCheckResult(check_name=check_name, passed=True,
                                                             metadata={"skipped": message})])


def _check_spec(asset_name: str) -> list[AssetCheckSpec]:
    return [AssetCheckSpec("collection_ready", asset=asset_name, blocking=True,
                           description="count equals the vectors built, sampled items find themselves nearest; "
                                       "the alias moves only when this passes")]


def publish_collection(context: AssetExecutionContext, serving: ServingResource, alias: str, version: str,
                       ids: list[str], vectors: np.ndarray, extra: dict) -> MaterializeResult:
    """Build a new collection, check it, and only then point the alias at it. Retired: the alias's older
    collections that neither the alias's previous target nor a recent release uses (a replica may serve
    the previous release while it moves, and the alias can move twice before a release is published).
    Items whose vector is all zeros (e.g. no tags: no text to tag) have no direction to compare: left out."""
    index = serving.index()
    keep = np.linalg.norm(vectors, axis=1) > 0
    ids, vectors = [i for i, k in zip(ids, keep) if k], vectors[keep]
    extra = {**extra, "left_out_zero_vectors": int((~keep).sum())}
    collection = index.build(alias, version, ids, vectors)
    check = index.check(collection, ids, vectors)
    previous = index.point_alias(alias, collection) if check.passed else index.resolve(alias)
    served = {c for release in ReleaseStore(serving.kv()).recent() for c in release.collections.values()}
    retired = index.retire(alias, keep=served | ({previous} if previous else set())) if check.passed else []
    context.log.info(f"{alias}: {collection} " + ("now behind the alias" if check.passed else
                                                  f"failed its check {check.as_dict()}; alias stays on {previous}"))
    return MaterializeResult(
        metadata={"collection": collection, "alias": alias, "alias_moved": check.passed,
                  "previous_collection": previous or "", "retired": MetadataValue.json(retired),
                  "points": len(ids), "dimensions": int(vectors.shape[1]), **extra},
        check_results=[AssetCheckResult(check_name="collection_ready", passed=check.passed,
                                        metadata={k: v for k, v in check.as_dict().items()})])


@asset(deps=["promotion"], code_version="1", kinds={"qdrant"}, check_specs=_check_spec("two_tower_index"),
       description="The champion two-tower's item-tower vectors (item stats as of its day's end) as a new "
                   "Qdrant collection behind alias `two_tower_items`.", **SERVING_ASSET)
def two_tower_index(context: AssetExecutionContext, serving: ServingResource) -> MaterializeResult:
    from recsys_assets.models.registry import load_extras

    version = champion_version(serving.registry(), "two_tower")
    if version is None:
        return without_champion(context, "two_tower", "collection_ready")
    folder = load_extras(serving.registry(), "two_tower", version)
    ids = json.loads((folder / "items.json").read_text())
    vectors = np.load(folder / "item_vectors.npy")
    return publish_collection(context, serving, INDEX_ALIASES["two_tower_index"],
                              build_version(context, version), ids, vectors, {"model_version": version})


@asset(deps=["promotion"], code_version="1", kinds={"qdrant"}, check_specs=_check_spec("item2vec_index"),
       description="The champion item2vec's item vectors as a new Qdrant collection behind alias "
                   "`item2vec_items`.", **SERVING_ASSET)
def item2vec_index(context: AssetExecutionContext, serving: ServingResource) -> MaterializeResult:
    from recsys_assets.models.registry import load_version

    version = champion_version(serving.registry(), "item2vec")
    if version is None:
        return without_champion(context, "item2vec", "collection_ready")
    model, folder = load_version(serving.registry(), "item2vec", version)
    ids = json.loads((folder / "items.json").read_text())
    vectors = model.embeddings.weight.detach().numpy()[1:len(ids) + 1]  # row 0 is padding
    return publish_collection(context, serving, INDEX_ALIASES["item2vec_index"],
                              build_version(context, version), ids, vectors, {"model_version": version})


@asset(deps=["tag_embeddings"], code_version="1", kinds={"qdrant"}, check_specs=_check_spec("tag_index"),
       description="The day's 384-d tag embeddings as a new Qdrant collection behind alias `tag_embeddings`.",
       **SERVING_ASSET)
def tag_index(context: AssetExecutionContext, serving: ServingResource,
              training: TrainingResource) -> MaterializeResult:
    tags = load_tag_embeddings(training.tags_dir(context.partition_key))
    if tags is None or tags.empty:
        raise Failure(f"no tag embeddings for {context.partition_key}: materialize tag_embeddings first")
    tags = tags.drop_duplicates("parent_asin").sort_values("parent_asin")
    vectors = np.stack(tags["tag_embedding"].to_numpy()).astype(np.float32)
    return publish_collection(context, serving, INDEX_ALIASES["tag_index"], build_version(context),
                              tags["parent_asin"].tolist(), vectors, {})

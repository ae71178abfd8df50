"""Item tags and their 384-d embeddings, per day; only items whose text changed are tagged again."""


from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from recsys_assets.defs.automation.conditions import NEWEST_LANDED_DAY
from recsys_assets.defs.shared.partitions import daily_partitions
from recsys_assets.defs.shared.resources import TrainingResource, WarehouseResource
from recsys_assets.models.tags import (
    EMBEDDINGS_FILE,
    TAGS_FILE,
    latest_snapshot,
    select_tagger,
    tag_items,
)
from recsys_assets.models.tags import (
    tag_embeddings as embed_tags,
)

TAG_ASSET = dict(partitions_def=daily_partitions, group_name="tags", kinds={"pytorch"},
                 automation_condition=NEWEST_LANDED_DAY)


def _write(frame, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    aside = folder / f".{name}.tmp"
    frame.to_parquet(aside, index=False)
    return aside.replace(folder / name)


@asset(deps=["item_metadata"], code_version="1",
       description="5 tags per item from the selected tagger (MiniLM nearest catalogue categories by default, a "
                   "local LLM when RECSYS_LLM_TAGGER_PATH is set); unchanged item texts keep their tags.",
       **TAG_ASSET)
def item_tags(context: AssetExecutionContext, warehouse: WarehouseResource, training: TrainingResource):
    items = warehouse.warehouse().read_items().to_pandas()
    previous = latest_snapshot(Path(training.tags_root), context.partition_key, TAGS_FILE)
    tagger = select_tagger(items, training.llm_tagger_path)
    tags, tagged_now = tag_items(items, previous, tagger)
    path = _write(tags, training.tags_dir(context.partition_key), TAGS_FILE)
    return MaterializeResult(metadata={
        "dagster/row_count": len(tags),
        "tagger": tagger.name,
        "tagged_now": tagged_now,
        "kept_from_previous": len(tags) - tagged_now,
        "path": MetadataValue.path(str(path)),
        "sample": MetadataValue.json({r.parent_asin: list(r.tags) for r in tags.head(5).itertuples()}),
    })


@asset(deps=["item_tags"], code_version="1",
       description="Per item the mean of its tags' all-MiniLM-L6-v2 vectors (384-d).", **TAG_ASSET)
def tag_embeddings(context: AssetExecutionContext, training: TrainingResource):
    import pandas as pd

    folder = training.tags_dir(context.partition_key)
    embeddings = embed_tags(pd.read_parquet(folder / TAGS_FILE))
    path = _write(embeddings, folder, EMBEDDINGS_FILE)
    width = len(embeddings["tag_embedding"].iloc[0]) if len(embeddings) else 0
    return MaterializeResult(metadata={"dagster/row_count": len(embeddings), "dim": width,
                                       "path": MetadataValue.path(str(path))})

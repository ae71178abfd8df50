"""What every benchmark needs: generated landing data, and Dagster runs over a partition range."""

import json
import os
import time
from datetime import date, timedelta
from pathlib import Path

from dagster import DagsterInstance, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from recsys_assets.data.generator import GeneratorConfig, generate
from recsys_assets.data.landing import LocalLandingZone
from recsys_assets.data.schema import ITEMS_FILE, review_file_name
from recsys_assets.defs.shared.resources import resources_for
from recsys_assets.settings import Settings

RESULTS_DIR = Path(__file__).parent / "results"


def write_generated(landing: Path, cfg: GeneratorConfig) -> tuple[int, date, date]:
    """Generated landing files; returns (reviews, first day, last day)."""
    zone = LocalLandingZone(landing)
    items, days = generate(cfg)
    zone.write_parquet(ITEMS_FILE, items)
    rows = 0
    for day, table in days:
        zone.write_parquet(review_file_name(day), table)
        rows += table.num_rows
    return rows, cfg.start, cfg.start + timedelta(days=cfg.days - 1)


def run_range(home: Path, assets: list, first: date, last: date) -> float:
    """Materialize `assets` for [first, last] as one run on RECSYS_HOME=home; seconds taken."""
    os.environ["RECSYS_HOME"] = str(home)
    tags = {ASSET_PARTITION_RANGE_START_TAG: str(first), ASSET_PARTITION_RANGE_END_TAG: str(last)}
    start = time.perf_counter()
    result = materialize(assets, resources=resources_for(Settings(home=home, env="local")),
                         instance=DagsterInstance.ephemeral(), tags=tags)
    assert result.success
    return time.perf_counter() - start


def write_result(name: str, result: dict) -> Path:
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path

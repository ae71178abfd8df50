"""Incremental days against a full retrain (issue 35): quality and time of five consecutive incremental days.

Per data set, in a fresh RECSYS_HOME: the landing data without its last `--days` days, `recsys pipeline` (a full
retrain: the lineage starts), then each held day landed and run as the daily automation runs it (its features,
then its models, evaluation and release) with incremental training on: the two-tower and the ranker continue
the champion. On the last day the models are then trained again from scratch (RECSYS_TRAIN_INCREMENTAL=0) and
evaluated against the champion the incremental days left, on the same split and the same users.

Tolerance: the full retrain's and the incremental day's validation NDCG@10 of the served rerank may differ by at
most one standard error of the gate's paired per-user difference (the noise the promotion gate itself allows);
the holdout is reported beside. Writes bench/results/incremental.json (by data set, merged with earlier runs).

    python bench/incremental.py [--datasets default,ml-100k/ml-100k.inter] [--items ml-100k/ml-100k.item]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS_DIR, write_generated, write_result
from dagster import AssetKey, DagsterInstance
from quality import DATASETS, measured_by

from recsys_assets.cli import MODEL_SELECTION, PARTITIONED_SELECTION, _dagster
from recsys_assets.data.landing import LocalLandingZone, review_days
from recsys_assets.data.schema import review_file_name
from recsys_assets.models.promotion import GATE_EVIDENCE
from recsys_assets.settings import REPO_ROOT

METRIC = "ndcg@10"
WARM = ("two_tower", "ranker")


def _env(home: Path, **extra: str) -> dict[str, str]:
    landed = review_days(LocalLandingZone(home / "landing").list_files())
    return {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
            "RECSYS_START_DATE": str(landed[0]), "RECSYS_TRAIN_INCREMENTAL": "1", **extra}


def _run(home: Path, command: list[str], **extra: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=_env(home, **extra), cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return round(time.perf_counter() - started, 1)


def _model_day(home: Path, day, **extra: str) -> dict:
    """The day's models, evaluation and release as the automation runs them; what each model did and scored."""
    seconds = _run(home, _dagster("--select", MODEL_SELECTION, "--partition", str(day)), **extra)
    instance = DagsterInstance.from_config(str(home / "dagster"))
    models = {}
    for name in WARM:
        metadata = instance.get_latest_materialization_event(AssetKey(name)).asset_materialization.metadata
        models[name] = {"training": metadata["training"].value, "reason": metadata["training_reason"].value,
                        "train_seconds": round(sum(metadata["epoch_seconds"].value), 1),
                        "refresh_seconds": metadata["refresh_seconds"].value, "rows": metadata["rows"].value}
    promotion = instance.get_latest_materialization_event(AssetKey("promotion")).asset_materialization.metadata
    report = json.loads((home / "evaluation" / "latest.json").read_text())
    validation = report["validation"]["models"]
    champion = (report.get("champion") or {}).get("validation", {}).get("models", {})
    return {"day": str(day), "models_run_seconds": seconds, "models": models,
            "promoted": bool(promotion["promoted"].value), "versions": report["versions"],
            "validation": {m: round(validation[m][METRIC], 4) for m in ("rerank", "popularity", "ease")},
            "champion_validation": round(champion["rerank"][METRIC], 4) if "rerank" in champion else None,
            "noise": round(report["validation"][GATE_EVIDENCE]["standard_error"], 4),
            "holdout": {m: round(report["models"][m][METRIC], 4) for m in ("rerank", "popularity", "ease")}}


def run_dataset(home: Path, source, items: Path | None, held: int) -> dict:
    landing = home / "landing"
    if isinstance(source, Path):
        subprocess.run([sys.executable, "-m", "recsys_assets.cli", "import", "interactions", str(source),
                        *(["--items", str(items)] if items else [])], env={**os.environ, "RECSYS_HOME": str(home)},
                       cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    else:
        write_generated(landing, source)
    days = review_days(LocalLandingZone(landing).list_files())[-held:]
    holding = home / "held"
    holding.mkdir()
    for day in days:
        shutil.move(landing / review_file_name(day), holding / review_file_name(day))
    print(f"  recsys pipeline through {days[0]} - 1 day (full retrain)", flush=True)
    first = _run(home, [sys.executable, "-m", "recsys_assets.cli", "pipeline"])
    incremental = []
    for day in days:
        shutil.move(holding / review_file_name(day), landing / review_file_name(day))
        features = _run(home, _dagster("--select", PARTITIONED_SELECTION, "--partition", str(day)))
        incremental.append({**_model_day(home, day), "features_run_seconds": features})
        print(f"  {day}: {json.dumps(incremental[-1])}", flush=True)
    # The same last day from scratch, judged against the champion the incremental days left.
    full = _model_day(home, days[-1], RECSYS_TRAIN_INCREMENTAL="0")
    print(f"  {days[-1]} full: {json.dumps(full)}", flush=True)
    # Both evaluations of the last day are on one split (same day, same data): same periods, same users.
    last = incremental[-1]
    difference = round(full["validation"]["rerank"] - last["validation"]["rerank"], 4)
    return {"pipeline_seconds": first, "incremental_days": incremental, "full_retrain": full,
            "comparison": {
                "validation_full": full["validation"]["rerank"], "validation_incremental": last["validation"]["rerank"],
                "validation_difference": difference, "tolerance": full["noise"],
                "within_tolerance": abs(difference) <= full["noise"],
                "holdout_full": full["holdout"]["rerank"], "holdout_incremental": last["holdout"]["rerank"],
                "holdout_difference": round(full["holdout"]["rerank"] - last["holdout"]["rerank"], 4),
                "incremental_vs_ease": round(last["holdout"]["rerank"] / last["holdout"]["ease"], 3),
                "incremental_vs_popularity": round(last["holdout"]["rerank"] / last["holdout"]["popularity"], 3),
                "incremental_days_promoted": sum(day["promoted"] for day in incremental),
                "training_seconds_incremental": {m: last["models"][m]["train_seconds"] for m in WARM},
                "training_seconds_full": {m: full["models"][m]["train_seconds"] for m in WARM},
                "models_run_seconds_incremental": last["models_run_seconds"],
                "models_run_seconds_full": full["models_run_seconds"]}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="default", help=f"comma-separated among {list(DATASETS)}, or "
                                                               "interactions files (`recsys import interactions`)")
    parser.add_argument("--items", help="an item file for the interactions files")
    parser.add_argument("--days", type=int, default=5, help="consecutive incremental days")
    parser.add_argument("--keep", action="store_true", help="keep the homes (printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    results = {}
    try:
        for name in args.datasets.split(","):
            source = DATASETS[name] if name in DATASETS else Path(name).resolve()
            if isinstance(source, Path) and not source.is_file():
                raise SystemExit(f"{name!r} is neither a data set ({list(DATASETS)}) nor a file")
            label = name if name in DATASETS else source.name
            print(f"{label}: in {work / label}", flush=True)
            results[label] = {**run_dataset(work / label, source, Path(args.items).resolve() if args.items else None,
                                            args.days), **measured_by()}
    finally:
        if args.keep:
            print(f"homes kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    path = RESULTS_DIR / "incremental.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    write_result("incremental", {**previous, **results})
    for label, result in results.items():
        c = result["comparison"]
        print(f"{label}: after {args.days} incremental days, validation {METRIC} full retrain {c['validation_full']} "
              f"vs incremental {c['validation_incremental']} (difference {c['validation_difference']}, "
              f"tolerance {c['tolerance']}: {'within' if c['within_tolerance'] else 'OUTSIDE'}); holdout "
              f"{c['holdout_full']} vs {c['holdout_incremental']}; incremental {c['incremental_vs_ease']}x EASE, "
              f"{c['incremental_vs_popularity']}x popularity; training s (two-tower, ranker) incremental "
              f"{c['training_seconds_incremental']} vs full {c['training_seconds_full']}")


if __name__ == "__main__":
    main()

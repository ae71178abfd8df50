"""Quality benchmark: every model and baseline, every metric, on several generated data sets, through the
platform itself (`recsys pipeline` in a fresh RECSYS_HOME per data set: Dagster, dbt, Feast, MLflow).

Per data set: the validation period (where every choice is made and the gate compares) and the holdout
(reported only) for popularity, recent popularity, EASE, item-kNN, item2vec, the two-tower and the served
rerank; what was chosen on validation (fusion weights, baselines' values); training time of each model.
Prints the served pipeline against the best baseline and against popularity on the holdout; writes
bench/results/quality.json, by data set: a run of some data sets replaces their entries and keeps the others
(each entry says the commit and day that measured it).

    python bench/quality.py [--datasets default,dominated] [--keep]
    python bench/quality.py --datasets ratings.csv [--items movies.csv]   # your data, as `recsys import` reads it
    python bench/quality.py --datasets plays.csv --import-args="--implicit --user-column listener"

A data set that is a file is imported with `recsys import interactions` (user_id,item_id,rating,timestamp) and
run the same way: what a user would do to see whether the platform pays for itself on their data.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from common import RESULTS_DIR, write_generated, write_result
from dagster import AssetKey, DagsterInstance

from recsys_assets.data.generator import GeneratorConfig
from recsys_assets.data.landing import LocalLandingZone, review_days
from recsys_assets.models.fusion import Fusion
from recsys_assets.models.promotion import BASELINE_MODELS, GATE_EVIDENCE
from recsys_assets.models.tuning import load_best
from recsys_assets.settings import REPO_ROOT

DATASETS = {
    # What `make demo` generates: a heavy long tail whose popularity drifts.
    "default": GeneratorConfig(),
    # The generator before it was calibrated: a flat catalogue, static popularity (no regression there).
    "static": GeneratorConfig(popularity_weight=0.3, trend_boost=0.0),
    # A small catalogue dominated by a few items: popularity is hard to beat (it scored 0.81 NDCG@10 on such
    # a real data set).
    "dominated": GeneratorConfig(users=3000, items=300, days=30, reviews=30_000, popularity_weight=2.0,
                                 candidate_pool=(64, 16, 16), seed=7),
    # Small data: 20k reviews over 1,500 items, the size of a small public rating set.
    "small": GeneratorConfig(users=2000, items=1500, days=30, reviews=20_000, seed=5),
    # 25 items, taste barely matters: popularity scores ~0.66 NDCG@10 and every model is within a few percent of
    # it (the real set of this kind: popularity 0.81, the rerank then 0.60): nothing may lose to it.
    "extreme": GeneratorConfig(users=1500, items=25, days=20, reviews=10_000, popularity_weight=6.0, trend_boost=0.0,
                               candidate_pool=(16, 4, 4), seed=13),
    # Amazon-like sparsity: 150k reviews by 35k users (median 3, half with one or two) of 11k items (the top 10%
    # get 87%); the learned models must carry users who have barely a history.
    "sparse": GeneratorConfig(users=50_000, items=20_000, days=60, reviews=150_000, seed=17),
    # A catalogue of 40 items, smaller than the candidate lists (they must not pad with items the user saw).
    "tiny": GeneratorConfig(users=800, items=40, days=20, reviews=8000, popularity_weight=3.0,
                            candidate_pool=(32, 8, 8), seed=11),
}
MODELS = ("popularity", "recent_popularity", "ease", "item_knn", "time_aware_ease", "item2vec", "two_tower", "rerank")
METRICS = ("ndcg@10", "recall@10", "recall@50", "coverage@10")
TRAINED = ("item2vec", "two_tower", "ranker")


def _recsys(home: Path, *args: str) -> None:
    # Partitions start at the landed data's first day (imported history can begin in the 1990s).
    landed = review_days(LocalLandingZone(home / "landing").list_files())
    env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           **({"RECSYS_START_DATE": str(landed[0])} if landed else {})}
    subprocess.run([sys.executable, "-m", "recsys_assets.cli", *args], env=env, cwd=REPO_ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def run_pipeline(home: Path, source: GeneratorConfig | Path, items: Path | None = None,
                 import_args: list[str] = ()) -> float:
    """Generated landing files (or a file imported, `import_args` added to `recsys import interactions`), then
    the whole pipeline as a user runs it; seconds the pipeline took."""
    if isinstance(source, GeneratorConfig):
        write_generated(home / "landing", source)
    else:
        _recsys(home, "import", "interactions", str(source), *(["--items", str(items)] if items else []),
                *import_args)
    started = time.perf_counter()
    _recsys(home, "pipeline")
    return time.perf_counter() - started


def training_seconds(home: Path) -> dict:
    """Seconds each model trained (its epochs), from the Dagster materializations' metadata."""
    instance = DagsterInstance.from_config(str(home / "dagster"))
    out = {}
    for name in TRAINED:
        event = instance.get_latest_materialization_event(AssetKey(name))
        out[name] = round(sum(event.asset_materialization.metadata["epoch_seconds"].value), 2)
    return out


def served_model(home: Path) -> str:
    """What the release serves after the run: the rerank when the gate promoted it, else popularity (the run
    starts from an empty registry: no older champion to keep)."""
    instance = DagsterInstance.from_config(str(home / "dagster"))
    event = instance.get_latest_materialization_event(AssetKey("promotion"))
    return "rerank" if event.asset_materialization.metadata["promoted"].value else "popularity"


def summarize(report: dict, served_by: str) -> dict:
    pick = lambda models: {m: {k: round(models[m][k], 4) for k in METRICS} for m in MODELS if m in models}  # noqa: E731
    holdout = report["models"]
    served = holdout[served_by]["ndcg@10"]
    best = max(BASELINE_MODELS, key=lambda m: holdout[m]["ndcg@10"])
    return {
        "split": report["split"],
        "validation": pick(report["validation"]["models"]),
        "gate_evidence": report["validation"].get(GATE_EVIDENCE),
        "served": served_by,
        "holdout": pick(holdout),
        "chosen_on_validation": {"fusion": report.get("choices", {}).get("fusion"), "i2i": report.get("i2i"),
                                 **{name: {k: v for k, v in report["baselines"][name].items() if not isinstance(v, dict)}
                                    for name in ("ease", "item_knn", "recent_popularity", "time_aware_ease")}},
        "served_vs_ease": round(served / holdout["ease"]["ndcg@10"], 3),
        "served_vs_popularity": round(served / holdout["popularity"]["ndcg@10"], 3),
        "best_baseline": best,
        "served_vs_best_baseline": round(served / holdout[best]["ndcg@10"], 3),
    }


def measured_by() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {"commit": (commit.stdout.strip() or "unknown") + ("+changes" if dirty else ""),
            "measured_on": time.strftime("%Y-%m-%d")}


def merged_with_previous(results: dict) -> dict:
    """The previous results file with this run's data sets replaced: one run per data set is ~10-35 min on
    2 cores, so the file is the table of the latest run of each."""
    path = RESULTS_DIR / "quality.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    return {**previous, **{name: {**result, **measured_by()} for name, result in results.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated among {list(DATASETS)}, or paths of interactions files")
    parser.add_argument("--items", help="an item file for the interactions files (item_id, title, genres)")
    parser.add_argument("--import-args", default="",
                        help="options added to `recsys import interactions` for the files, e.g. "
                             "--import-args=--implicit")
    parser.add_argument("--keep", action="store_true", help="keep the homes (printed) to look at in the UI")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    results = {}
    try:
        for name in args.datasets.split(","):
            if name in DATASETS:
                source, described = DATASETS[name], {"generator": {
                    k: v for k, v in asdict(DATASETS[name]).items() if k != "start"}}
            elif Path(name).is_file():
                source, described = Path(name).resolve(), {"file": str(Path(name).resolve())}
                name = Path(name).name
            else:
                raise SystemExit(f"{name!r} is neither a data set ({list(DATASETS)}) nor a file")
            home = work / name
            print(f"{name}: running the pipeline in {home}", flush=True)
            seconds = run_pipeline(home, source, Path(args.items).resolve() if args.items else None,
                                   shlex.split(args.import_args))
            report = json.loads((home / "evaluation" / "latest.json").read_text())
            results[name] = {**described,
                             "pipeline_seconds": round(seconds, 1), "training_seconds": training_seconds(home),
                             "baseline_seconds": {n: report["baselines"][n]["fit_seconds"] for n in ("ease", "item_knn")},
                             **summarize(report, served_model(home))}
            tuned = load_best(home / "tuning")  # the two-tower's values: the first day's choice or a search's
            results[name]["chosen_on_validation"]["two_tower"] = tuned["best"] if tuned else None
    finally:
        if args.keep:
            print(f"homes kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    write_result("quality", merged_with_previous(results))
    print(f"\n{'data set':<11} {'model':<17} " + " ".join(f"{m:>11}" for m in METRICS) + "   (holdout)")
    for name, result in results.items():
        for model, metrics in result["holdout"].items():
            print(f"{name:<11} {model:<17} " + " ".join(f"{metrics[m]:>11.4f}" for m in METRICS))
    for name, result in results.items():
        fusion = result["chosen_on_validation"]["fusion"]
        print(f"{name}: served {result['served']} = {result['served_vs_ease']}x EASE (target 1.1), "
              f"{result['served_vs_popularity']}x popularity (floor 1.0), {result['served_vs_best_baseline']}x the "
              f"best baseline ({result['best_baseline']}); chosen on validation: "
              f"{Fusion(**fusion).describe() if fusion else 'no rerank'}")


if __name__ == "__main__":
    main()

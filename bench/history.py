"""Long-history benchmark: what loading years of daily partitions costs over the same reviews in two months.

Imported data spans years (Amazon Reviews 2023: 1996-2023, ~10,000 days), one daily partition each, where
generated data spans weeks. The same number of reviews is generated over `--short-days` and over `--long-days`,
and each loaded as a user does, `recsys pipeline --skip-models` in a fresh RECSYS_HOME (Dagster's SQLite
storage, dbt, Feast): the ratio long/short is the price of the days themselves (Dagster's per-partition events),
per stage. Writes bench/results/history.json.

`--baseline FILE` (a history.json of another version of the code, e.g. written from a checkout of an earlier
commit) puts that run's figures beside these, step by step: the before/after of a change, on one machine.

    python bench/history.py [--reviews 20000 --short-days 60 --long-days 3650] [--baseline before.json]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from common import write_generated, write_result

from recsys_assets.data.generator import GeneratorConfig
from recsys_assets.settings import REPO_ROOT

STAGE_LINE = re.compile(r"^\s+(\w+)\s+(?:(\d+)m)?(\d+)s\b")  # "      raw_reviews        2m27s  (...)"


def load(home: Path, cfg: GeneratorConfig) -> dict:
    """Generated days, then `recsys pipeline --skip-models`: wall seconds and each step's as printed."""
    reviews, first, last = write_generated(home / "landing", cfg)
    env = {**os.environ, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "RECSYS_START_DATE": str(first)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "recsys_assets.cli", "pipeline", "--skip-models"], env=env,
                         cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    steps = {m[1]: int(m[2] or 0) * 60 + int(m[3]) for m in map(STAGE_LINE.match, out.splitlines()) if m}
    return {"days": cfg.days, "reviews": reviews, "seconds": round(seconds, 1), "steps_seconds": steps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=20_000)
    parser.add_argument("--short-days", type=int, default=60)
    parser.add_argument("--long-days", type=int, default=3650)
    parser.add_argument("--baseline", type=Path, help="history.json of the code before a change, to compare with")
    parser.add_argument("--result", default="history", help="bench/results/<this>.json")
    args = parser.parse_args()
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    runs = {}
    try:
        for name, days in (("short", args.short_days), ("long", args.long_days)):
            if days == 0:  # --short-days 0: the long load alone
                continue
            cfg = GeneratorConfig(users=2000, items=1500, days=days, reviews=args.reviews, start=date(2000, 1, 1),
                                  seed=5)
            print(f"{name}: {args.reviews} reviews over {days} days", flush=True)
            runs[name] = load(work / name, cfg)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    long = runs["long"]
    result = {**runs, "cpus": os.cpu_count()}
    if "short" in runs:
        short = runs["short"]
        extra = long["seconds"] - short["seconds"]
        result.update(long_over_short=round(long["seconds"] / short["seconds"], 2),
                      seconds_per_1000_extra_days=round(extra / (long["days"] - short["days"]) * 1000, 1))
    if baseline is not None:
        result["baseline"] = {key: baseline[key] for key in ("short", "long", "long_over_short") if key in baseline}
    write_result(args.result, result)
    print(f"\n{args.reviews:,} reviews over {long['days']} days: {long['seconds']:.0f} s", end="")
    if "short" in runs:
        print(f", over {short['days']} days: {short['seconds']:.0f} s ({result['long_over_short']:.1f}x; "
              f"{result['seconds_per_1000_extra_days']:.0f} s per 1,000 more days)", end="")
    print()
    if baseline is not None:
        print("\n".join(comparison(baseline, result)))


def comparison(before: dict, after: dict) -> list[str]:
    """Each step's seconds before and after, for the short and the long load."""
    lines = [f"{'':<48}{'before':>8}{'after':>8}"]
    for name in ("short", "long"):
        if name not in before or name not in after:
            continue
        b, a = before[name], after[name]
        lines.append(f"{name}: {a['reviews']:,} reviews over {a['days']} days"
                     + ("" if b["days"] == a["days"] else f" (before: {b['days']} days)"))
        for step in sorted(set(b["steps_seconds"]) | set(a["steps_seconds"])):
            lines.append(f"  {step:<46}{b['steps_seconds'].get(step, '-'):>8}{a['steps_seconds'].get(step, '-'):>8}")
        lines.append(f"  {'whole pipeline':<46}{b['seconds']:>8}{a['seconds']:>8}")
    return lines


if __name__ == "__main__":
    main()

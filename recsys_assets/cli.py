"""`recsys`: the command line. A thin shell over library code and Dagster's own CLI."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from recsys_assets.data.landing import LocalLandingZone, review_days
from recsys_assets.data.schema import ITEMS_FILE, review_file_name
from recsys_assets.settings import get_settings, init_dagster_home, record_dataset


def _progress(iterable, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="day", file=sys.stderr, disable=None)


def cmd_generate(args: argparse.Namespace) -> int:
    from recsys_assets.data.generator import GeneratorConfig, generate

    settings = get_settings()
    zone = LocalLandingZone(Path(args.out) if args.out else settings.landing_dir)
    cfg = GeneratorConfig(
        users=args.users, items=args.items, days=args.days, reviews=args.reviews,
        start=date.fromisoformat(args.start), seed=args.seed,
    )
    items, days = generate(cfg)
    zone.write_parquet(ITEMS_FILE, items)
    total = 0
    for day, reviews in _progress(days, cfg.days, "generating"):
        zone.write_parquet(review_file_name(day), reviews)
        total += reviews.num_rows
    record_dataset(settings.home, first_day=cfg.start, last_day=cfg.start + timedelta(days=cfg.days - 1),
                   source=f"generated seed={cfg.seed}")
    print(f"wrote {total} reviews over {cfg.days} days and {cfg.items} items to {zone.path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from recsys_assets.data.importers import import_amazon2023, import_interactions

    settings = get_settings()
    zone = LocalLandingZone(settings.landing_dir)
    if args.format == "amazon2023":
        report = import_amazon2023(Path(args.reviews), Path(args.meta), zone)
    else:
        report = import_interactions(Path(args.file), zone, Path(args.items) if args.items else None)
    if report.days:
        record_dataset(settings.home, first_day=report.days[0], last_day=report.days[-1], source=args.format)
    print(f"imported {report.summary()} into {zone.path}")
    return 0


def contiguous_ranges(days: list[date]) -> list[tuple[date, date]]:
    """[(first, last)] runs of consecutive days."""
    ranges: list[tuple[date, date]] = []
    for day in days:
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


PARTITIONED_SELECTION = "raw_reviews*"  # raw_reviews and everything downstream of it
UNPARTITIONED_SELECTION = "item_metadata,feast_definitions"


def _dagster(*args: str) -> None:
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "recsys_assets.definitions", *args]
    print("+", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def cmd_pipeline(args: argparse.Namespace) -> int:
    settings = get_settings()
    zone = LocalLandingZone(settings.landing_dir)
    if not review_days(zone.list_files()):
        print(f"{zone.path} is empty: generating the default data set first")
        cmd_generate(build_parser().parse_args(["generate"]))
    days = review_days(zone.list_files())
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    init_dagster_home(settings)
    _dagster("--select", UNPARTITIONED_SELECTION)
    for first, last in contiguous_ranges(days):
        _dagster("--select", PARTITIONED_SELECTION, "--partition-range", f"{first}...{last}")
    print(f"pipeline done: {len(days)} day(s), {days[0]}..{days[-1]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write generated daily landing files")
    gen.add_argument("--users", type=int, default=20_000)
    gen.add_argument("--items", type=int, default=5_000)
    gen.add_argument("--days", type=int, default=60)
    gen.add_argument("--reviews", type=int, default=300_000, help="total reviews over all days (approximate)")
    gen.add_argument("--start", default="2024-01-01", help="first day, YYYY-MM-DD")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--out", help="landing folder (default: RECSYS_HOME/landing)")
    gen.set_defaults(func=cmd_generate)

    imp = sub.add_parser("import", help="import real data as daily landing files")
    fmt = imp.add_subparsers(dest="format", required=True)
    amazon = fmt.add_parser("amazon2023", help="Amazon Reviews 2023 JSONL (reviews + meta), .jsonl or .jsonl.gz")
    amazon.add_argument("reviews")
    amazon.add_argument("meta")
    inter = fmt.add_parser("interactions", help="user_id,item_id,rating,timestamp as CSV/TSV/parquet")
    inter.add_argument("file")
    inter.add_argument("--items", help="item file: item_id,title,categories|genres")
    imp.set_defaults(func=cmd_import)

    pipe = sub.add_parser("pipeline", help="materialize every asset for every landed day (generates data if none)")
    pipe.set_defaults(func=cmd_pipeline)

    home = sub.add_parser("init-dagster-home", help="write DAGSTER_HOME/dagster.yaml (telemetry off, run queue)")
    home.set_defaults(func=lambda args: print(init_dagster_home(get_settings())) or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

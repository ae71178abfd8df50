"""`recsys`: the command line. A thin shell over library code and Dagster's own CLI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from recsys_assets.data.landing import LocalLandingZone, review_days
from recsys_assets.data.schema import ITEMS_FILE, review_file_name
from recsys_assets.home_lock import HomeLock
from recsys_assets.models.fusion import Fusion
from recsys_assets.models.promotion import (
    GATE_EVIDENCE,
    GATE_METRIC,
    MODEL_NAMES,
    baseline_comparison,
    describe_comparison,
    describe_evidence,
    metrics_table,
    read_latest,
)
from recsys_assets.settings import ServingSettings, Settings, get_settings, init_dagster_home


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
    print(f"wrote {total} reviews over {cfg.days} days and {cfg.items} items to {zone.path}")
    _say_if_before_start(settings, cfg.start)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from recsys_assets.data.importers import import_amazon2023, import_interactions

    settings = get_settings()
    zone = LocalLandingZone(settings.landing_dir)
    if args.format == "amazon2023":
        report = import_amazon2023(Path(args.reviews), Path(args.meta), zone)
    else:
        columns = {name: given for name in ("user_id", "item_id", "rating", "timestamp")
                   if (given := getattr(args, name.split("_")[0] + "_column")) is not None}
        report = import_interactions(Path(args.file), zone, Path(args.items) if args.items else None, columns,
                                     args.implicit, tuple(args.rating_scale) if args.rating_scale else None)
    print(f"imported {report.summary()} into {zone.path}")
    if report.days:
        _say_if_before_start(settings, report.days[0])
    return 0


def _before_start(settings: Settings, first_day: date) -> str | None:
    """What to do when landed data begins before the first daily partition (None when it does not)."""
    if first_day >= settings.start_date:
        return None
    return (f"the data begins {first_day}, before the first daily partition {settings.start_date}: days before "
            f"it are not loaded. To load them, set RECSYS_START_DATE={first_day} for every recsys and dagster "
            f"command (e.g. `export RECSYS_START_DATE={first_day}`)")


def _say_if_before_start(settings: Settings, first_day: date) -> None:
    if message := _before_start(settings, first_day):
        print(f"note: {message}")


def contiguous_ranges(days: list[date]) -> list[tuple[date, date]]:
    """[(first, last)] runs of consecutive days."""
    ranges: list[tuple[date, date]] = []
    for day in days:
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


# Data assets run for every landed day (one run per contiguous range); models for the newest day only.
PARTITIONED_SELECTION = "raw_reviews,stg_reviews,user_rating_stats,parent_asin_rating_stats,online_features"
# Models and everything serving reads, for the newest day (the candidate assets that need no model too). Not
# the on-demand Ray Tune search (`two_tower_tuning`): the daemon leaves it to the user too, and its values only
# serve the next day's training (up to RECSYS_TUNING_BUDGET_S of trials).
MODEL_SELECTION = ("((key:item_tags or key:training_dataset)+ or key:popular_items or key:recent_popularity"
                   " or key:user_sequences or key:item_catalog) and not key:two_tower_tuning")
UNPARTITIONED_SELECTION = "item_metadata,feast_definitions"


def _dagster(*args: str) -> list[str]:
    return [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "recsys_assets.definitions", *args]


def cmd_pipeline(args: argparse.Namespace) -> int:
    from recsys_assets.console import elapsed

    settings = get_settings()
    # One at a time per home: a second waits for the first, then runs (re-materializing a day replaces its rows).
    lock = HomeLock.for_home(settings.home, "pipeline")
    waited = lock.acquire(on_wait=lambda holder: print(
        f"{holder.describe('`recsys pipeline`')} is running on this home: waiting for it", flush=True))
    if waited >= 1:
        print(f"it finished after {elapsed(waited)}: running", flush=True)
    try:
        return _pipeline(args, settings, lock)
    finally:
        lock.release()


def wait_for_runs_in_progress(say, poll_s: float = 2.0) -> float:
    """Until no run of the instance is in progress (the daemon's automation, a launch from `dagster dev`): they
    write the same warehouse and models. While one of ours is in progress the daemon's run queue starts none
    (max_concurrent_runs counts every run of the instance), so only its runs already going need waiting for.
    Returns the seconds waited."""
    from dagster import DagsterInstance

    from recsys_assets.defs.run_launcher import runs_in_progress

    started = time.monotonic()
    with DagsterInstance.get() as instance:
        said = set()
        while running := runs_in_progress(instance):
            for run in running:
                if run.run_id not in said:
                    say(f"waiting for Dagster run {run.run_id[:8]} ({run.job_name}, {run.status.value}) to finish")
                    said.add(run.run_id)
            time.sleep(poll_s)
    return time.monotonic() - started


def _pipeline(args: argparse.Namespace, settings: Settings, lock: HomeLock) -> int:
    from datetime import datetime

    from recsys_assets.console import StageReporter

    zone = LocalLandingZone(settings.landing_dir)
    if not review_days(zone.list_files()):
        print(f"{zone.path} is empty: generating the default data set first")
        cmd_generate(build_parser().parse_args(["generate"]))
    landed = review_days(zone.list_files())
    days = [day for day in landed if day >= settings.start_date]
    if message := _before_start(settings, landed[0]):
        print(f"{'skipping' if days else 'nothing to load:'} {len(landed) - len(days)} day(s): {message}")
        if not days:
            return 2
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    init_dagster_home(settings)
    ranges = contiguous_ranges(days)
    log_path = settings.home / "logs" / f"pipeline-{datetime.now():%Y%m%d-%H%M%S}.log"
    # The Dagster CLI children hold the lock too: one left running by a killed `recsys pipeline` still keeps
    # the next one waiting.
    stages = StageReporter(1 + len(ranges) + (0 if args.skip_models else 1), log_path, pass_fds=(lock.fileno,))
    stages.say(f"pipeline over {len(days)} day(s) {days[0]}..{days[-1]}; full Dagster logs: {log_path}")

    def stage(title: str, command: list[str]) -> None:
        wait_for_runs_in_progress(stages.say)
        stages.run(title, command)

    stage("catalogue and Feast definitions", _dagster("--select", UNPARTITIONED_SELECTION))
    # One "planned" event per asset for a range run, not one per asset and day: on Dagster's SQLite storage
    # each is a commit, and twenty years of imported history (7,300 days, 5 assets) spent 5 minutes on them
    # before the run started. Dagster's trade-off: a failed range run leaves its days "missing", not
    # "failed", in the UI; the pipeline stops and says so itself. Only the runs this command starts.
    os.environ["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "true"
    for first, last in ranges:
        stage(f"features for {(last - first).days + 1} day(s) {first}..{last}: raw_reviews -> dbt -> Feast online",
              _dagster("--select", PARTITIONED_SELECTION, "--partition-range", f"{first}...{last}"))
    if not args.skip_models:
        stage(f"models, evaluation and serving for the newest day {days[-1]}",
              _dagster("--select", MODEL_SELECTION, "--partition", str(days[-1])))
    print(pipeline_summary(settings, days, stages.total_elapsed(), models=not args.skip_models))
    return 0


def pipeline_summary(settings, days: list[date], took: str, models: bool) -> str:
    """Data size, the evaluation beside the baselines, what is served, and where to go next."""
    from recsys_assets.warehouse.stores import DuckDBWarehouse

    size = ""
    if settings.warehouse_path.exists():  # the local warehouse (under gcp the data lives in BigQuery)
        reviews, users, items = DuckDBWarehouse(settings.warehouse_path).query(
            "select count(*), count(distinct user_id), count(distinct parent_asin) from raw.raw_reviews"
        ).to_pylist()[0].values()
        size = f", {reviews:,} reviews, {users:,} users, {items:,} items"
    lines = [f"\npipeline done in {took}: {len(days)} day(s) {days[0]}..{days[-1]}{size}"]
    report = read_latest(settings.home / "evaluation") if models else None
    if report is not None:
        lines.append(f"evaluation on the temporal holdout ({report['split']['holdout_users']:,} users):")
        lines += format_table(metrics_table(report))
    if models:
        lines.append(served_release_summary(settings))
    lines += ["next:  make serve   API http://127.0.0.1:8000  (docs /docs, demo page /)",
              "       make dev     Dagster UI http://127.0.0.1:3000 (lineage, runs, checks; the daemon automates)"]
    return "\n".join(lines)


def format_table(rows: list[dict]) -> list[str]:
    """Rows of equal keys as aligned text columns, a header first."""
    if not rows:
        return []
    columns = list(rows[0])
    cells = [columns] + [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]


def served_release_summary(settings) -> str:
    """One line on what serving moves to; a clear warning when no model beat popularity."""
    from recsys_assets.serving.config import serving_kv
    from recsys_assets.serving_data.release import POPULARITY, ReleaseStore

    release = ReleaseStore(serving_kv(settings)).current()
    if release is None:
        return "WARNING: nothing released yet: serving has nothing to answer with"
    if release.pipeline == POPULARITY:
        return (f"WARNING: release {release.id} ({release.day}) serves POPULARITY: no model beats it on the "
                "validation period (see `recsys evaluate`); the first model that does takes over")
    from recsys_assets.defs.shared.resources import mlflow_store
    from recsys_assets.models.registry import ranker_fusion

    fusion = ranker_fusion(mlflow_store(settings).client(), release.models["ranker"])
    return f"release {release.id} ({release.day}) serves models {release.models}: rerank = {fusion.describe()}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    report = read_latest(get_settings().home / "evaluation")
    if report is None:
        print("no evaluation yet: run `make pipeline` (or materialize model_evaluation)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"split: {report['split']}")
    if "validation" in report:  # where every choice is made and the gate compares
        print(f"validation period ({report['validation']['evaluated_users']} users; our models as learned from the "
              "fit period before it):")
        print("\n".join(format_table(metrics_table(report["validation"]))))
        if "choices" in report:
            print(f"chosen on validation: {report['choices']}")
            print(f"the rerank's order: {Fusion(**report['choices']['fusion']).describe()}")
        if GATE_EVIDENCE in report["validation"]:
            print(describe_evidence(report["validation"][GATE_EVIDENCE]))
    print(f"holdout ({report.get('evaluated_users')} users; our models refreshed on the validation period, as "
          "served), reported only:")
    print("\n".join(format_table(metrics_table(report))))
    comparison = baseline_comparison(report)
    if comparison:
        print(describe_comparison(comparison))
    if report.get("baselines", {}).get("reused_choice"):
        print(f"baselines: the values chosen on {report['baselines'].get('chosen_on')} (an incremental day reuses "
              "them; the next full retrain searches again)")
    for name, fitted in report.get("baselines", {}).items():
        grid = fitted.get(f"validation_{GATE_METRIC}") if isinstance(fitted, dict) else None
        if grid:  # a tuned baseline: what validation chose it from
            chosen = ", ".join(f"{k} {v}" for k, v in fitted.items() if not isinstance(v, dict))
            judged_also = "".join(f"; {k.replace('_', ' ')} by value {v}" for k, v in fitted.items()
                                  if isinstance(v, dict) and k != f"validation_{GATE_METRIC}")  # rolling origins
            print(f"{name}: {chosen}; validation {GATE_METRIC} by value {grid}{judged_also}")
    if report.get("champion", {}).get("validation", {}).get("models"):  # what the gate compared with
        print(f"champion {report['champion']['versions']} on the same validation period:")
        print("\n".join(format_table(metrics_table(report["champion"]["validation"]))))
    if "ranker" in report:
        print(f"ranker: {report['ranker']}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from recsys_assets.defs.shared.resources import mlflow_store  # the one place that knows local vs gcp
    from recsys_assets.models.registry import set_champion

    client = mlflow_store(get_settings()).client()
    for name in args.model or MODEL_NAMES:
        client.get_model_version(name, args.version)  # fails clearly when the version does not exist
    for name in args.model or MODEL_NAMES:
        set_champion(client, name, args.version)
        print(f"{name}: champion -> version {args.version}")
    return 0


def cmd_land_events(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from recsys_assets.data.landing import LocalLandingZone
    from recsys_assets.serving_data.events import land_events, open_event_log

    settings = get_settings()
    log, zone = open_event_log(settings.events_dir, settings.serving_redis_url), LocalLandingZone(settings.landing_dir)
    today = datetime.now(timezone.utc).date().isoformat()
    days = [args.day] if args.day else [d for d in log.days() if d < today]
    for day in days:
        print(f"{day}: {land_events(log, zone, date.fromisoformat(day))} interaction(s) added to the landing file")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import warnings
    from dataclasses import replace

    # Libraries' deprecation notices (fbgemm, pydantic via Ray) are for their maintainers, not the console.
    # (A filter would not hold: an import on the way resets the filters; the display hook stays.)
    show = warnings.showwarning
    warnings.showwarning = lambda message, category, *rest, **kw: (
        None if issubclass(category, DeprecationWarning) else show(message, category, *rest, **kw))

    from recsys_assets.serving.config import ServingConfig
    from recsys_assets.serving.ports import claim_port

    config = ServingConfig.from_env()
    config = replace(config, port=args.port or config.port, replicas=args.replicas or config.replicas)
    holder = claim_port(config.host, config.port, config.settings.home)  # a stale HAProxy of this home goes
    if holder is not None:
        print(f"recsys serve: port {config.port} is in use by {holder}; set RECSYS_SERVE_PORT (or --port)",
              file=sys.stderr)
        return 2
    for key, value in config.ray_serve_environment().items():
        os.environ.setdefault(key, value)  # before ray.serve is imported: it reads them then
    from recsys_assets.serving.deploy import run

    run(config, blocking=True)
    return 0


def cmd_pipeline_exporter(args: argparse.Namespace) -> int:
    import signal
    import threading

    settings = get_settings()
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    init_dagster_home(settings)
    from dagster import DagsterInstance

    from recsys_assets.observability import pipeline_exporter as exporter

    collector = exporter.PipelineCollector(DagsterInstance.get(), [], exporter.served_day_reader(settings))

    def load_checks() -> None:
        collector.check_keys = exporter.code_location_check_keys()

    # Loading the code location to list its checks takes 10-80 s: /metrics answers at once, and the check
    # families join once the checks are known.
    threading.Thread(target=load_checks, name="load-checks", daemon=True).start()
    port = args.port or settings.observability.pipeline_exporter_port
    # The file_sd target is for a local Prometheus (`make observe`); a pod (--host 0.0.0.0) is found by its
    # PodMonitoring instead.
    target_home = settings.home if args.host in ("127.0.0.1", "localhost") else None
    try:
        server, thread = exporter.serve(collector, port, target_home, host=args.host)
    except OSError as exc:
        print(f"recsys pipeline-exporter: {args.host}:{port} cannot be bound ({exc}); pass --port or set "
              "RECSYS_PIPELINE_EXPORTER_PORT", file=sys.stderr)
        return 2
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    where = f" (Prometheus file_sd: {exporter.target_path(settings.home, exporter.TARGET_NAME)})" if target_home else ""
    print(f"pipeline metrics of {os.environ['DAGSTER_HOME']} on http://{args.host}:{port}/metrics{where}", flush=True)
    stopped.wait()
    exporter.stop(server, thread, target_home)
    return 0


SECRET_SETTINGS = ("api_token", "qdrant_api_key", "redis_url")  # may hold a password


def cmd_config(args: argparse.Namespace) -> int:
    import shlex

    settings = get_settings()
    if args.markdown:
        print(settings.markdown_table())
        return 0
    if args.export:
        for name, value in settings.dbt_environment().items():
            print(f"export {name}={shlex.quote(value)}")
        return 0
    for variable, (section, field) in settings.environment_variables().items():
        # A store's effective value (the environment's default decided), where Settings resolves one.
        owner = settings if section in ("", "stores") and hasattr(settings, field) else getattr(settings, section)
        value = getattr(owner, field)
        if section == "gcp" and settings.env == "gcp" and value is None:  # the names derived from the project
            value = {"landing_bucket": settings.gcp.landing, "feast_registry": settings.gcp.registry}.get(field)
        shown = "(set, hidden)" if field in SECRET_SETTINGS and value else value
        print(f"{variable:28} {shown!s:44} {'environment' if os.environ.get(variable) else 'default'}")
    return 0


# `feast apply` and `teardown` from the state folder would find no definitions there (they are code, applied
# by the `feast_definitions` asset) and remove every view the pipeline built.
FEAST_WRITES = ("apply", "teardown")


def cmd_feast(args: argparse.Namespace) -> int:
    import subprocess

    from recsys_assets.feature_store.repository import FeatureStoreConfig

    if any(word in FEAST_WRITES for word in args.feast_args):
        print("the pipeline applies Feast's definitions (asset feast_definitions): `make pipeline` or the UI",
              file=sys.stderr)
        return 2
    settings = get_settings()
    repo = FeatureStoreConfig.for_settings(settings).write_repository_file().parent
    feast = Path(sys.executable).with_name("feast")
    command = [str(feast) if feast.exists() else "feast", "--chdir", str(repo), *args.feast_args]
    return subprocess.call(command, env={**os.environ, **settings.feast_variables(), "FEAST_USAGE": "False"})


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
    for name in ("user", "item", "rating", "timestamp"):
        inter.add_argument(f"--{name}-column", help=f"the file's {name} column, where its name is not a usual one")
    inter.add_argument("--implicit", action="store_true",
                       help="the file has no ratings (plays, clicks, purchases): each interaction is a positive")
    inter.add_argument("--rating-scale", nargs=2, type=float, metavar=("LOWEST", "HIGHEST"),
                       help="the file's rating scale, mapped linearly onto 1..5 (e.g. 0.5 5 for half stars)")
    imp.set_defaults(func=cmd_import)

    pipe = sub.add_parser("pipeline", help="materialize every asset for every landed day (generates data if none); "
                                           "models for the newest day")
    pipe.add_argument("--skip-models", action="store_true", help="stop after the online store")
    pipe.set_defaults(func=cmd_pipeline)

    evaluate = sub.add_parser("evaluate", help="print the latest model evaluation")
    evaluate.add_argument("--json", action="store_true", help="the raw JSON (RECSYS_HOME/evaluation/latest.json)")
    evaluate.set_defaults(func=cmd_evaluate)

    promote = sub.add_parser("promote", help="move MLflow alias champion to a version (rollback)")
    promote.add_argument("--version", required=True, help="the registered version to make champion")
    promote.add_argument("--model", action="append", choices=MODEL_NAMES,
                         help="only this model (repeatable); default: all of them")
    promote.set_defaults(func=cmd_promote)

    serving = ServingSettings.model_fields
    serve = sub.add_parser("serve", help="the Ray Serve API (RECSYS_SERVE_HOST:RECSYS_SERVE_PORT, default "
                                         f"{serving['host'].default}:{serving['port'].default}); follows each new "
                                         "release")
    serve.add_argument("--port", type=int, help=f"HTTP port (default RECSYS_SERVE_PORT, else {serving['port'].default})")
    serve.add_argument("--replicas", type=int, help="Serve replicas (default RECSYS_SERVE_REPLICAS, else one per core)")
    serve.set_defaults(func=cmd_serve)

    land = sub.add_parser("land-events", help="merge the API's logged interactions into their days' landing files "
                                              "(the daily schedule does this under `make dev`)")
    land.add_argument("--day", help="YYYY-MM-DD (default: every logged day before today, UTC)")
    land.set_defaults(func=cmd_land_events)

    config = sub.add_parser("config", help="the configuration in effect: every RECSYS_* setting, its value and "
                                           "where it came from (secrets hidden)")
    config.add_argument("--export", action="store_true",
                        help="shell `export` lines of what dbt's profile and Feast's files read, for running "
                             "them standalone: eval \"$(recsys config --export)\"")
    config.add_argument("--markdown", action="store_true", help="every setting, default and meaning as the "
                                                                 "README's table")
    config.set_defaults(func=cmd_config)

    feast = sub.add_parser("feast", help="Feast's own CLI on the feature store the pipeline built, e.g. "
                                         "`recsys feast feature-views list` (`apply` is the pipeline's)",
                           add_help=False)
    feast.add_argument("feast_args", nargs=argparse.REMAINDER)
    feast.set_defaults(func=cmd_feast)

    exporter = sub.add_parser("pipeline-exporter", help="Prometheus metrics of the pipeline and the models, read from "
                                                        "the Dagster instance on each scrape (127.0.0.1)")
    exporter.add_argument("--port", type=int, default=None,
                          help="default RECSYS_PIPELINE_EXPORTER_PORT (9108)")
    exporter.add_argument("--host", default="127.0.0.1",
                          help="address to listen on (default 127.0.0.1; a pod scraped by its PodMonitoring: 0.0.0.0)")
    exporter.set_defaults(func=cmd_pipeline_exporter)

    home = sub.add_parser("init-dagster-home", help="write DAGSTER_HOME/dagster.yaml (telemetry off, run queue)")
    home.set_defaults(func=lambda args: print(init_dagster_home(get_settings())) or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["feast"]:  # Feast's own arguments, options first included, go to Feast as they are
        return cmd_feast(argparse.Namespace(feast_args=argv[1:]))
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

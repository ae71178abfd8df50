"""The Grafana dashboards (serving, pipeline, models) as code, with grafana-foundation-sdk.

    python deploy/observability/dashboards.py          writes deploy/observability/dashboards/*.json
    python deploy/observability/dashboards.py --check  exit 1 when the committed JSON differs from this file's

The JSON files are committed: Grafana loads them on GKE (ConfigMaps for its dashboard sidecar, see
deploy/observability/README.md), `make deploy-check` checks they equal this generator's output, and
tests/observability runs every panel's PromQL against a real Prometheus scraping a real `recsys serve` and the
pipeline exporter: each one must return data. Metric names: the contract in recsys_assets/serving/telemetry.py
(serving, recorded through ray.serve.metrics, so Ray prefixes `ray_`) and the pipeline exporter's.

Ratios are written so that they are 0, not empty, when their numerator has no series yet (`(a or b * 0) / b`):
a counter labelled "5xx" appears only after the first error, and an empty panel reads as "no data", not "none".
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as grafana
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
GKE_CONFIG_MAPS = HERE / "gke" / "dashboards.yaml"
# The Grafana chart's dashboard sidecar loads every ConfigMap with this label (grafana-values.yaml).
SIDECAR_LABEL = "grafana_dashboard"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"  # Grafana's: at least four scrape intervals


@dataclass
class Query:
    expr: str
    legend: str = ""
    instant: bool = False  # tables and stats of "now" (an info metric, the latest evaluation)


@dataclass
class Panel:
    title: str
    description: str
    queries: list[Query]
    kind: str = "timeseries"  # timeseries | stat | table
    unit: str = "short"
    width: int = 12
    extra: dict = field(default_factory=dict)  # min, max


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: dict[str, list[Panel]]


SERVER_ERRORS = '{status=~"5.."}'


def _requests(selector: str = "") -> str:
    return f"sum by (endpoint) (rate(ray_recsys_requests_total{selector}[{RATE}]))"


def _quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[{RATE}])))"


SERVING = Dashboard("recsys-serving", "recsys: serving", "Is the API healthy and fast, what does it serve.", {
    "Traffic and errors": [
        Panel("Requests per second", "Answers per endpoint and HTTP status, all replicas.",
              [Query(f"sum by (endpoint, status) (rate(ray_recsys_requests_total[{RATE}]))",
                     "{{endpoint}} {{status}}")], unit="reqps"),
        Panel("Error ratio (5xx)", "Share of answers with a 5xx status per endpoint (503 = shed or a store down).",
              [Query(f"({_requests(SERVER_ERRORS)} or {_requests()} * 0) / {_requests()}", "{{endpoint}}")],
              unit="percentunit", extra={"min": 0}),
        Panel("Latency p50 / p99", "Per endpoint, measured in the replica (the SLO: rerank p99 under 50 ms).",
              [Query(_quantile(0.5, "ray_recsys_request_latency_seconds", "endpoint"), "p50 {{endpoint}}"),
               Query(_quantile(0.99, "ray_recsys_request_latency_seconds", "endpoint"), "p99 {{endpoint}}")],
              unit="s"),
        Panel("Degraded answers per second", "Answers given without the serving store (see README Guarantees).",
              [Query(f"sum by (endpoint) (rate(ray_recsys_degraded_answers_total[{RATE}]))"
                     f" or {_requests()} * 0", "{{endpoint}}")], unit="reqps"),
    ],
    "Rerank": [
        Panel("Rerank stage latency p50 / p99", "features = user+item feature reads, retrieval = candidates and "
              "ANN, ranking = ranker forward pass + fusion.",
              [Query(_quantile(0.5, "ray_recsys_rerank_stage_seconds", "stage"), "p50 {{stage}}"),
               Query(_quantile(0.99, "ray_recsys_rerank_stage_seconds", "stage"), "p99 {{stage}}")], unit="s"),
        Panel("Candidates scored per rerank", "Median and p99 of the candidates the ranker scores.",
              [Query(f"histogram_quantile(0.5, sum by (le) (rate(ray_recsys_rerank_candidates_bucket[{RATE}])))",
                     "p50"),
               Query(f"histogram_quantile(0.99, sum by (le) (rate(ray_recsys_rerank_candidates_bucket[{RATE}])))",
                     "p99")]),
        Panel("Cold-start share", "Share of recommendations answered for users the models do not know.",
              [Query(f"sum by (endpoint) (rate(ray_recsys_recommendations_total{{cold_start=\"true\"}}[{RATE}])"
                     f" or rate(ray_recsys_recommendations_total[{RATE}]) * 0)"
                     f" / sum by (endpoint) (rate(ray_recsys_recommendations_total[{RATE}]))", "{{endpoint}}")],
              unit="percentunit", extra={"min": 0, "max": 1}),
        Panel("Canary share", "Share of reranks per ranker variant (challenger = RECSYS_CANARY_SHARE's share).",
              [Query(f"sum by (variant) (rate(ray_recsys_rerank_variant_total[{RATE}]))"
                     f" / scalar(sum(rate(ray_recsys_rerank_variant_total[{RATE}])))", "{{variant}}")],
              unit="percentunit", extra={"min": 0, "max": 1}),
    ],
    "Release and replicas": [
        Panel("Served release", "The release, its day and model and index versions served (the count: replicas serving it).",
              [Query("count by (release, day, two_tower_version, ranker_version, index) (ray_recsys_release_info == 1)",
                     instant=True)], kind="table", width=24),
        Panel("Release reloads", "Release loads per outcome over the last hour (load_failed and read_failed keep "
              "the served release).",
              [Query("sum by (outcome) (increase(ray_recsys_release_reloads_total[1h]))", "{{outcome}}")]),
        Panel("Replicas healthy", "Ray Serve's own health per deployment.",
              [Query("sum by (deployment) (ray_serve_deployment_replica_healthy)", "{{deployment}}")],
              extra={"min": 0}),
    ],
})

PIPELINE = Dashboard("recsys-pipeline", "recsys: pipeline", "Is the data fresh, did the last run pass its checks.", {
    "Freshness and runs": [
        Panel("Freshness lag", "Newest landed day minus the served release's day (0 = serving is current).",
              [Query("recsys_freshness_lag_days", "lag")], kind="stat", unit="d", width=6),
        Panel("Failing checks", "Asset checks whose latest evaluation failed.",
              [Query("sum(1 - recsys_asset_check_passed)", "failing")], kind="stat", width=6),
        Panel("Last run failed", "Per job: 1 when its latest run failed.",
              [Query("recsys_last_run_failed", "{{job}}")], kind="stat", width=12),
        Panel("Runs by job and status", "Runs in the Dagster instance (last 24 h).",
              [Query("sum by (job, status) (recsys_runs)", "{{job}} {{status}}")], width=24),
    ],
    "Assets": [
        Panel("Last materialization age", "Time since each asset was last materialized.",
              [Query("time() - recsys_asset_last_materialization_timestamp_seconds", "{{asset}}")], unit="s"),
        Panel("Step duration", "The last materialization's step duration per asset.",
              [Query("recsys_asset_materialization_duration_seconds", "{{asset}}")], unit="s"),
        Panel("Rows", "The last materialization's row count, where the asset reports one.",
              [Query("recsys_asset_rows", "{{asset}}")]),
        Panel("Check failures", "Failed evaluations per asset check (all time) and the latest outcome.",
              [Query("recsys_asset_check_failures_total", "failures {{asset}} {{check}}"),
               Query("recsys_asset_check_passed", "passed {{asset}} {{check}}")]),
    ],
})

MODELS = Dashboard("recsys-models", "recsys: models", "Are the models getting better or worse, has the data drifted.", {
    "Evaluation (latest day, per model)": [
        Panel("NDCG@10", "Held-out next-item NDCG@10 per model.",
              [Query('recsys_model_evaluation{metric="ndcg_at_10"}', "{{model}}")], width=6),
        Panel("Recall@50", "Held-out Recall@50 per model.",
              [Query('recsys_model_evaluation{metric="recall_at_50"}', "{{model}}")], width=6),
        Panel("Coverage", "Share of the catalogue recommended.",
              [Query('recsys_model_evaluation{metric="coverage"}', "{{model}}")], unit="percentunit", width=6),
        Panel("Ranker AUC", "The ranker's AUC on the held-out day.",
              [Query('recsys_model_evaluation{metric="auc"}', "{{model}}")], width=6),
    ],
    "Drift (against the previous day)": [
        Panel("Population stability index", "PSI per signal against the previous day: under 0.1 stable, over 0.2 "
              "the drift check warns and RecsysDrift fires.",
              [Query("recsys_drift_psi", "{{signal}}")], width=24, extra={"min": 0}),
    ],
})

DASHBOARDS = [SERVING, PIPELINE, MODELS]


def _panel(spec: Panel, panel_id: int):
    builder = {"timeseries": timeseries.Panel, "stat": stat.Panel, "table": table.Panel}[spec.kind]()
    builder = (builder.id(panel_id).title(spec.title).description(spec.description).datasource(DATASOURCE)
               .unit(spec.unit).span(spec.width).height(8 if spec.kind != "stat" else 5))
    for key, value in spec.extra.items():
        builder = getattr(builder, key)(value)
    for n, query in enumerate(spec.queries):
        target = prometheus.Dataquery().ref_id(chr(ord("A") + n)).expr(query.expr).legend_format(query.legend)
        if query.instant or spec.kind != "timeseries":
            target = target.instant()
            if spec.kind == "table":
                target = target.format("table")
        else:
            target = target.range()
        builder = builder.with_target(target)
    return builder


def build(spec: Dashboard) -> dict:
    """The dashboard as Grafana's JSON model (a dict)."""
    board = (grafana.Dashboard(spec.title).uid(spec.uid).description(spec.description).tags(["recsys"])
             .time("now-6h", "now").refresh("30s").readonly()
             .with_variable(grafana.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    panel_id = 1
    for row, panels in spec.rows.items():
        board = board.with_row(grafana.Row(row).id(panel_id))
        panel_id += 1
        for panel in panels:
            board = board.with_panel(_panel(panel, panel_id))
            panel_id += 1
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def rendered() -> dict[str, str]:
    """{file name: JSON text} of every dashboard, as committed under dashboards/."""
    return {f"{spec.uid}.json": json.dumps(build(spec), indent=2, sort_keys=True) + "\n" for spec in DASHBOARDS}


def config_maps() -> str:
    """The dashboards as ConfigMaps for Grafana's dashboard sidecar on GKE, one per dashboard."""
    import yaml

    objects = [{"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": f"grafana-dashboard-{name.removesuffix('.json')}", "namespace": "recsys",
                             "labels": {SIDECAR_LABEL: "1", "app.kubernetes.io/part-of": "recsys"}},
                "data": {name: text}} for name, text in rendered().items()]
    return ("# Generated by deploy/observability/dashboards.py; make deploy-check compares.\n"
            "# yamllint disable rule:line-length\n" + yaml.safe_dump_all(objects, sort_keys=False, width=1000))


def expressions(board: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of a dashboard's JSON model."""
    return [(panel["title"], target["expr"]) for panel in board.get("panels", [])
            for target in panel.get("targets") or [] if target.get("expr")]


def differences(folder: Path = OUT) -> list[str]:
    """The committed files that differ from (or are missing next to) this generator's output."""
    wanted = rendered()
    found = {p.name for p in folder.glob("*.json")} if folder.exists() else set()
    errors = [f"{name}: differs from deploy/observability/dashboards.py's output (run it)"
              for name, text in wanted.items() if name in found and (folder / name).read_text() != text]
    errors += [f"{name}: missing (run deploy/observability/dashboards.py)" for name in sorted(set(wanted) - found)]
    errors += [f"{name}: no dashboard of dashboards.py writes it (remove it)" for name in sorted(found - set(wanted))]
    if folder == OUT and (not GKE_CONFIG_MAPS.exists() or GKE_CONFIG_MAPS.read_text() != config_maps()):
        errors.append("gke/dashboards.yaml: differs from deploy/observability/dashboards.py's output (run it)")
    return errors


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        errors = differences()
        for error in errors:
            print(error)
        return 1 if errors else 0
    OUT.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    GKE_CONFIG_MAPS.write_text(config_maps())
    print(f"wrote {GKE_CONFIG_MAPS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

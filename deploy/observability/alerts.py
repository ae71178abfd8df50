"""The Prometheus alerting rules, each a *signal* (a PromQL expression that returns data whenever its source is
scraped) and a *condition* on it, written to deploy/observability/alerts.yml.

    python deploy/observability/alerts.py          writes alerts.yml and gke/rules.yaml (the same, for GKE)
    python deploy/observability/alerts.py --check  exit 1 when the committed files differ

Why generated: the real-Prometheus test (tests/observability) runs every alert's signal against a scraped
`recsys serve` and pipeline exporter and requires data, so a misspelled metric fails a test instead of an alert
that can never fire; the expression Prometheus evaluates is exactly `signal + condition`. alerts.test.yml
(`promtool test rules`) tests each alert firing and not firing; `make deploy-check` runs promtool on both and
renders the same rules as GKE's managed Prometheus `Rules` object (deploy/observability/gke.py).

The latency SLO is the README's capacity plan ("Serving (Ray Serve)", Capacity): p99 under 50 ms per endpoint
at a replica per 250 req/s.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "alerts.yml"
GKE_RULES_FILE = HERE / "gke" / "rules.yaml"
TESTS_FILE = HERE / "alerts.test.yml"
LATENCY_SLO_S = 0.050
ERROR_RATIO = 0.01  # 1% of answers 5xx over 5 minutes
DRIFT_PSI = 0.2  # = the drift checks' warning threshold (their WARN severity)
FRESHNESS_LAG_DAYS = 1  # serving may lag the newest landed day while that day's run is going


@dataclass(frozen=True)
class Alert:
    name: str
    group: str
    signal: str
    condition: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: dict = field(default_factory=dict)

    @property
    def expr(self) -> str:
        return f"{self.signal} {self.condition}"

    def rule(self) -> dict:
        rule = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0m":
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity, **self.labels}
        rule["annotations"] = {"summary": self.summary, "description": self.description}
        return rule


def _by_endpoint(metric: str, selector: str = "") -> str:
    return f"sum by (endpoint) (rate({metric}{selector}[5m]))"


_REQUESTS = "ray_recsys_requests_total"
_SERVER_ERRORS = '{status=~"5.."}'
ALERTS = [
    Alert("RecsysServingTargetDown", "recsys-serving", 'up{job="recsys-serving"}', "== 0", "2m", "critical",
          "A serving metrics target is down",
          "Prometheus cannot scrape {{ $labels.instance }} (Ray's metrics export of a serving node) for 2 minutes: "
          "the node is gone or its agent died."),
    Alert("RecsysPipelineExporterDown", "recsys-pipeline", 'up{job="recsys-pipeline"}', "== 0", "5m", "warning",
          "The pipeline exporter is down",
          "Prometheus cannot scrape the pipeline exporter ({{ $labels.instance }}): freshness, runs, checks and "
          "drift are not watched."),
    Alert("RecsysHighErrorRate", "recsys-serving",
          f"({_by_endpoint(_REQUESTS, _SERVER_ERRORS)} or {_by_endpoint(_REQUESTS)} * 0)"
          f" / {_by_endpoint(_REQUESTS)}",
          f"> {ERROR_RATIO}", "5m", "critical",
          "{{ $labels.endpoint }} answers more than 1% 5xx",
          "{{ $value | humanizePercentage }} of {{ $labels.endpoint }}'s answers are 5xx over 5 minutes "
          "(503: shed load or a store down; see the serving dashboard)."),
    Alert("RecsysLatencyP99OverSLO", "recsys-serving",
          "histogram_quantile(0.99, sum by (le, endpoint) (rate(ray_recsys_request_latency_seconds_bucket[5m])))",
          f"> {LATENCY_SLO_S}", "10m", "warning",
          "{{ $labels.endpoint }} p99 over the 50 ms SLO",
          "p99 of {{ $labels.endpoint }} is {{ $value | humanizeDuration }} over 10 minutes (SLO: 50 ms, README "
          "Capacity): add replicas or look at the rerank stage latencies."),
    Alert("RecsysReleaseReloadFailing", "recsys-serving",
          'sum(increase(ray_recsys_release_reloads_total{outcome=~"load_failed|read_failed"}[15m])'
          " or increase(ray_recsys_release_reloads_total[15m]) * 0)",
          "> 0", "0m", "warning",
          "Replicas fail to load the new release",
          "{{ $value }} release loads failed in 15 minutes: the previous release is still served (MLflow, Qdrant "
          "or the serving store unreachable, or a model version missing)."),
    Alert("RecsysStaleRelease", "recsys-pipeline", "recsys_freshness_lag_days",
          f"> {FRESHNESS_LAG_DAYS}", "1h", "warning",
          "Serving lags the newest landed day",
          "The served release is {{ $value }} days behind the newest landed day: a run failed, is stuck, or a "
          "gate refused promotion (see the pipeline dashboard and Dagster)."),
    Alert("RecsysPipelineRunFailed", "recsys-pipeline", "recsys_last_run_failed", "> 0", "0m", "critical",
          "The latest {{ $labels.job }} run failed",
          "Dagster's latest run of {{ $labels.job }} failed: open it in the Dagster UI (the run-failure sensor "
          "posted it to Alertmanager too)."),
    # Blocking checks only: a drift check failing (severity WARN) is RecsysDrift's to say.
    Alert("RecsysAssetCheckFailed", "recsys-pipeline", 'recsys_asset_check_passed{severity="ERROR"}', "== 0", "0m",
          "warning",
          "Check {{ $labels.check }} of {{ $labels.asset }} failed",
          "The latest evaluation of {{ $labels.asset }}'s check {{ $labels.check }} failed."),
    Alert("RecsysDrift", "recsys-models", "recsys_drift_psi", f"> {DRIFT_PSI}", "0m", "warning",
          "{{ $labels.signal }} drifted from the previous day",
          "Population stability index of {{ $labels.signal }} is {{ $value }} (over 0.2, the drift check's "
          "threshold): look at the day's data before trusting its models."),
]


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as yamllint (make deploy-check) wants them."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def rules(alerts: list[Alert] = ALERTS) -> dict:
    """The rule file: one group per part of the platform, in ALERTS' order."""
    groups: dict[str, list[dict]] = {}
    for alert in alerts:
        groups.setdefault(alert.group, []).append(alert.rule())
    return {"groups": [{"name": name, "rules": items} for name, items in groups.items()]}


def rendered() -> str:
    header = ("# Generated by deploy/observability/alerts.py (edit there, then run it); make deploy-check compares.\n"
              "# yamllint disable rule:line-length\n")
    return header + yaml.dump(rules(), Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def gke_rules() -> str:
    """The same rules as Google Managed Prometheus' namespaced `Rules` object (its rule evaluator runs them over
    the recsys namespace's series and sends what fires to the managed Alertmanager)."""
    rules_object = {"apiVersion": "monitoring.googleapis.com/v1", "kind": "Rules",
                    "metadata": {"name": "recsys-alerts", "namespace": "recsys"}, "spec": rules()}
    return ("# Generated by deploy/observability/alerts.py from the rules of alerts.yml; make deploy-check compares.\n"
            "# yamllint disable rule:line-length\n" + yaml.dump(rules_object, Dumper=_Dumper, sort_keys=False,
                                                               width=1000, allow_unicode=True))


def outputs() -> dict[Path, str]:
    return {RULES_FILE: rendered(), GKE_RULES_FILE: gke_rules()}


def differences() -> list[str]:
    errors = []
    for path, text in outputs().items():
        shown = path.relative_to(HERE.parent.parent)
        if not path.exists():
            errors.append(f"{shown}: missing (run deploy/observability/alerts.py)")
        elif path.read_text() != text:
            errors.append(f"{shown}: differs from deploy/observability/alerts.py's output (run it)")
    return errors


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        errors = differences()
        print("\n".join(errors) or "alerts.yml is current")
        return 1 if errors else 0
    for path, text in outputs().items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Dashboards, alerts and their GKE objects (deploy/observability/): the committed files equal their generators'
output; `promtool check rules` and `promtool test rules` pass, with a firing and a silent case per alert;
`amtool check-config` passes; the rendered `Rules` object holds exactly alerts.yml's rules; each PodMonitoring
selects pods that have its port, and is named as the job the alerts watch; every dashboard has its ConfigMap;
Grafana's Helm values against the chart's vendored defaults, its data sources as Grafana provisions them, its
dashboard sidecar against the rendered ConfigMaps, its data source against the README's query frontend
(checks/grafana_chart.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from . import grafana_chart

OBSERVABILITY = Path(__file__).resolve().parent.parent / "observability"
sys.path.insert(0, str(OBSERVABILITY))

import alerts  # noqa: E402
import dashboards  # noqa: E402


def _tool(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)


def _run(command: list[str], what: str) -> list[str]:
    if _tool(command[0]) is None:
        return [f"{command[0]} is missing: `make setup` installs Debian's prometheus and prometheus-alertmanager"]
    out = subprocess.run([_tool(command[0]), *command[1:]], capture_output=True, text=True)
    if out.returncode == 0:
        return []
    lines = (out.stdout + out.stderr).strip().splitlines()
    return [f"{what}: {line}" for line in lines[-15:]]


def promtool_errors(rules: Path = alerts.RULES_FILE, tests: Path = alerts.TESTS_FILE) -> list[str]:
    """`promtool check rules` and `promtool test rules` (the tests name their rule file relative to themselves)."""
    return (_run(["promtool", "check", "rules", str(rules)], "promtool check rules")
            + _run(["promtool", "test", "rules", str(tests)], "promtool test rules"))


def alertmanager_errors(config: Path = OBSERVABILITY / "alertmanager.yml") -> list[str]:
    return _run(["amtool", "check-config", str(config)], "amtool check-config")


def test_coverage_errors(tests: Path = alerts.TESTS_FILE, names: list[str] | None = None) -> list[str]:
    """Every alert has a promtool case where it fires and one where it stays silent."""
    names = names if names is not None else [a.name for a in alerts.ALERTS]
    cases = [case for test in yaml.safe_load(tests.read_text())["tests"] for case in test.get("alert_rule_test", [])]
    errors = []
    for name in names:
        mine = [case for case in cases if case["alertname"] == name]
        if not any(case.get("exp_alerts") for case in mine):
            errors.append(f"{tests.name}: no case where {name} fires")
        if not any(not case.get("exp_alerts") for case in mine):
            errors.append(f"{tests.name}: no case where {name} stays silent")
    return errors


def rules_object_errors(objects: list[dict]) -> list[str]:
    """The rendered GKE `Rules` hold exactly alerts.yml's groups (one source for both)."""
    found = [o for o in objects if o.get("kind") == "Rules"]
    if len(found) != 1:
        return [f"{len(found)} Rules objects rendered, expected 1 (deploy/observability/gke/rules.yaml)"]
    local = yaml.safe_load(alerts.RULES_FILE.read_text())
    return [] if found[0]["spec"] == local else ["Rules recsys-alerts: differs from alerts.yml (run alerts.py)"]


def pod_monitoring_errors(objects: list[dict], pods: dict[str, dict]) -> list[str]:
    """Each PodMonitoring selects at least one pod template with the named port; the jobs the alerts watch
    (`up{job="..."}`) are PodMonitorings (GMP names the job after it)."""
    errors, names = [], set()
    for obj in objects:
        if obj.get("kind") != "PodMonitoring":
            continue
        name = obj["metadata"]["name"]
        names.add(name)
        selector = obj["spec"]["selector"].get("matchLabels") or {}
        matching = [t for t in pods.values()
                    if all((t.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in selector.items())]
        if not matching:
            errors.append(f"PodMonitoring {name}: selects no pod the deployment runs ({selector})")
        for endpoint in obj["spec"]["endpoints"]:
            port = endpoint["port"]
            for template in matching:
                ports = {p.get("name") for c in template["spec"].get("containers", []) for p in c.get("ports", [])}
                ports |= {p.get("containerPort") for c in template["spec"].get("containers", [])
                          for p in c.get("ports", [])}
                if port not in ports:
                    errors.append(f"PodMonitoring {name}: a pod it selects ({template['metadata'].get('labels')}) "
                                  f"has no port {port!r}")
    watched = {job for alert in alerts.ALERTS for job in re.findall(r'job="([^"]+)"', alert.signal)}
    errors += [f"alerts watch job {job!r}: no PodMonitoring of that name scrapes it on GKE"
               for job in sorted(watched - names)]
    return errors


def dashboard_config_map_errors(objects: list[dict]) -> list[str]:
    wanted = set(dashboards.rendered())
    loaded = {key for o in objects if o.get("kind") == "ConfigMap"
              and (o["metadata"].get("labels") or {}).get(dashboards.SIDECAR_LABEL) == "1" for key in o.get("data", {})}
    return [f"dashboard {name}: no ConfigMap labelled {dashboards.SIDECAR_LABEL} carries it"
            for name in sorted(wanted - loaded)]


def grafana_errors(objects: list[dict], values: Path = grafana_chart.VALUES,
                   readme: str | None = None) -> list[str]:
    """deploy/observability/grafana-values.yaml: keys and types against the chart's defaults, the data sources,
    the dashboard sidecar against the dashboards' ConfigMaps among `objects`, the query frontend's URL."""
    return [f"{values.name}: {e}" for e in grafana_chart.errors(objects, set(dashboards.rendered()), values, readme)]


def errors(objects: list[dict], pods: dict[str, dict]) -> list[str]:
    return (dashboards.differences() + alerts.differences() + promtool_errors() + test_coverage_errors()
            + alertmanager_errors() + rules_object_errors(objects) + pod_monitoring_errors(objects, pods)
            + dashboard_config_map_errors(objects) + grafana_errors(objects))

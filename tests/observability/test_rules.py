"""The alert rules, their promtool tests, Alertmanager's config, the generated dashboards and the GKE objects,
as `make deploy-check` checks them (deploy/checks/observability.py), each with a planted mistake it must catch."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import pytest
import yaml

from recsys_assets.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "deploy"))
sys.path.insert(0, str(REPO_ROOT / "deploy" / "observability"))

import alerts  # noqa: E402
import dashboards  # noqa: E402
from checks import observability  # noqa: E402


def test_promtool_checks_and_unit_tests_pass_with_a_firing_and_a_silent_case_per_alert():
    assert observability.promtool_errors() == []
    assert observability.test_coverage_errors() == []


def _planted(tmp_path, changed: list[alerts.Alert]):
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(alerts.rules(changed), sort_keys=False))
    shutil.copy(alerts.TESTS_FILE, tmp_path / "alerts.test.yml")
    return observability.promtool_errors(tmp_path / "alerts.yml", tmp_path / "alerts.test.yml")


@pytest.mark.parametrize("name, change", [
    ("RecsysDrift", {"condition": "> 0.5"}),  # a threshold that misses a shifted day
    ("RecsysHighErrorRate", {"signal": 'sum by (endpoint) (rate(ray_recsys_request_total{status=~"5.."}[5m]))'}),
    ("RecsysStaleRelease", {"for_": "0m"}),  # pages during every day's run
])
def test_promtool_tests_catch_a_wrong_alert(tmp_path, name, change):
    changed = [dataclasses.replace(a, **change) if a.name == name else a for a in alerts.ALERTS]
    errors = _planted(tmp_path, changed)
    assert errors and any(name in e for e in errors), errors


def test_an_alert_without_a_silent_case_is_refused(tmp_path):
    tests = yaml.safe_load(alerts.TESTS_FILE.read_text())
    for test in tests["tests"]:
        test["alert_rule_test"] = [c for c in test.get("alert_rule_test", [])
                                   if not (c["alertname"] == "RecsysDrift" and not c.get("exp_alerts"))]
    (tmp_path / "alerts.test.yml").write_text(yaml.safe_dump(tests))
    assert observability.test_coverage_errors(tmp_path / "alerts.test.yml") == [
        "alerts.test.yml: no case where RecsysDrift stays silent"]


def test_alertmanager_config_is_valid_and_a_broken_route_is_not(tmp_path):
    assert observability.alertmanager_errors() == []
    config = yaml.safe_load((observability.OBSERVABILITY / "alertmanager.yml").read_text())
    config["route"]["receiver"] = "nobody"
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    assert observability.alertmanager_errors(tmp_path / "alertmanager.yml")


def test_the_committed_dashboards_and_rules_are_the_generators_output(tmp_path):
    assert dashboards.differences() == [] and alerts.differences() == []
    folder = tmp_path / "dashboards"
    shutil.copytree(dashboards.OUT, folder)
    board = json.loads((folder / "recsys-serving.json").read_text())
    board["panels"][1]["targets"][0]["expr"] = "up"  # edited by hand in the JSON
    (folder / "recsys-serving.json").write_text(json.dumps(board))
    assert dashboards.differences(folder) == [
        "recsys-serving.json: differs from deploy/observability/dashboards.py's output (run it)"]


def test_every_panel_queries_the_chosen_prometheus_and_the_questions_have_panels():
    titles = set()
    for path in dashboards.OUT.glob("*.json"):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
                assert panel["targets"], panel["title"]
                titles.add(panel["title"])
    assert {"Requests per second", "Error ratio (5xx)", "Latency p50 / p99", "Rerank stage latency p50 / p99",
            "Candidates scored per rerank", "Cold-start share", "Canary share", "Served release", "Release reloads",
            "Replicas healthy", "Freshness lag", "Failing checks", "Last run failed", "Last materialization age",
            "Step duration", "Rows", "Check failures", "NDCG@10", "Recall@50", "Coverage", "Ranker AUC",
            "Population stability index"} <= titles


def _gke_objects():
    objects = [o for name in ("podmonitorings.yaml", "rules.yaml", "dashboards.yaml")
               for o in yaml.safe_load_all((observability.OBSERVABILITY / "gke" / name).read_text()) if o]
    pods = {"serving-head": {"metadata": {"labels": {"app.kubernetes.io/name": "recsys-serving"}},
                             "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": 8080}]}]}},
            "exporter": {"metadata": {"labels": {"app.kubernetes.io/name": "recsys-pipeline-exporter"}},
                         "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": 9108}]}]}}}
    return objects, pods


def test_gke_objects_scrape_what_the_alerts_watch_and_carry_the_same_rules():
    objects, pods = _gke_objects()
    assert observability.pod_monitoring_errors(objects, pods) == []
    assert observability.rules_object_errors(objects) == []
    assert observability.dashboard_config_map_errors(objects) == []


def test_gke_mistakes_are_caught():
    objects, pods = _gke_objects()
    serving = next(o for o in objects if o["kind"] == "PodMonitoring" and o["metadata"]["name"] == "recsys-serving")
    serving["metadata"]["name"] = "ray"  # GMP's job label would no longer be what the alerts watch
    del pods["exporter"]["spec"]["containers"][0]["ports"][0]["name"]
    errors = observability.pod_monitoring_errors(objects, pods)
    assert "alerts watch job 'recsys-serving': no PodMonitoring of that name scrapes it on GKE" in errors
    assert any(e.startswith("PodMonitoring recsys-pipeline: a pod it selects") for e in errors), errors
    rules = next(o for o in objects if o["kind"] == "Rules")
    rules["spec"]["groups"][0]["rules"].pop()
    assert observability.rules_object_errors(objects)
    objects = [o for o in objects if o["kind"] != "ConfigMap" or "models" not in o["metadata"]["name"]]
    assert observability.dashboard_config_map_errors(objects) == [
        "dashboard recsys-models.json: no ConfigMap labelled grafana_dashboard carries it"]

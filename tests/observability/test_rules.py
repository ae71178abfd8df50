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
    objects = [o for name in ("podmonitorings.yaml", "rules.yaml", "dashboards.yaml", "grafana-access.yaml")
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


# -- Grafana's Helm values (deploy/checks/grafana_chart.py) ----------------------------------------------------

GRAFANA_VALUES = observability.grafana_chart.VALUES


def _grafana_errors(tmp_path, edit=None, edit_objects=None, readme=None) -> list[str]:
    """grafana_errors of the committed values after `edit` (header kept), against the GKE dashboards' ConfigMaps
    after `edit_objects`."""
    text = GRAFANA_VALUES.read_text()
    values = yaml.safe_load(text)
    if edit:
        edit(values)
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    path = tmp_path / "grafana-values.yaml"
    path.write_text(header + yaml.safe_dump(values, sort_keys=False))
    objects, _ = _gke_objects()
    if edit_objects:
        edit_objects(objects)
    return observability.grafana_errors(objects, path, readme)


def _dashboards_sidecar(values):
    return values["sidecar"]["dashboards"]


def _datasources(values):
    return values["datasources"]["datasources.yaml"]["datasources"]


def test_the_committed_grafana_values_pass(tmp_path):
    objects, _ = _gke_objects()
    assert observability.grafana_errors(objects) == []
    assert _grafana_errors(tmp_path) == []  # the round trip the other tests edit through changes nothing


@pytest.mark.parametrize("edit, expected", [
    # a typo'd key: the chart would ignore it, and the sidecar stay off
    (lambda v: v["sidecar"].update(dashboard=v["sidecar"].pop("dashboards")),
     "grafana-values.yaml: sidecar.dashboard: not a key of the grafana chart 10.5.11's values "
     "(did you mean sidecar.dashboards?)"),
    (lambda v: _dashboards_sidecar(v).update(lable=_dashboards_sidecar(v).pop("label")),
     "grafana-values.yaml: sidecar.dashboards.lable: not a key of the grafana chart 10.5.11's values "
     "(did you mean sidecar.dashboards.label?)"),
    # a misplaced key: searchNamespace belongs to each sidecar, not to `sidecar`
    (lambda v: v["sidecar"].update(searchNamespace=_dashboards_sidecar(v).pop("searchNamespace")),
     "grafana-values.yaml: sidecar.searchNamespace: not a key of the grafana chart 10.5.11's values"),
])
def test_an_unknown_or_misplaced_grafana_key_fails(tmp_path, edit, expected):
    errors = _grafana_errors(tmp_path, edit)
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize("edit, expected", [
    (lambda v: _dashboards_sidecar(v).update(label={"grafana_dashboard": "1"}),
     "grafana-values.yaml: sidecar.dashboards.label: a map ({'grafana_dashboard': '1'}) where the chart has a "
     "scalar ('grafana_dashboard' by default)"),
    # a quoted boolean is a string: "false" would turn the sidecar on
    (lambda v: _dashboards_sidecar(v).update(enabled="false"),
     "grafana-values.yaml: sidecar.dashboards.enabled: a scalar ('false') where the chart has a boolean "
     "(False by default)"),
    (lambda v: v.update(datasources=[v["datasources"]["datasources.yaml"]]),
     "grafana-values.yaml: datasources: a list"),
])
def test_a_grafana_value_of_the_wrong_type_fails(tmp_path, edit, expected):
    errors = _grafana_errors(tmp_path, edit)
    assert any(e.startswith(expected) for e in errors), errors


def _second_default(values):
    _datasources(values).append({"name": "Another", "type": "prometheus", "uid": "other", "access": "proxy",
                                 "url": "http://frontend.monitoring.svc:9090", "isDefault": True})


@pytest.mark.parametrize("edit, expected", [
    (lambda v: _datasources(v)[0].pop("type"),
     "datasources.datasources.yaml.datasources[0].type: missing (Grafana requires a data source's type)"),
    (_second_default, "datasources: 2 data sources marked isDefault in organisation 1: Grafana refuses more than one"),
    (lambda v: _datasources(v).append(dict(_datasources(v)[0], isDefault=False)),
     "datasources: the name 'Managed Prometheus' is used 2 times in organisation 1"),
    (lambda v: _datasources(v).append(dict(_datasources(v)[0], name="Copy", isDefault=False)),
     "datasources: the uid 'gmp' is used 2 times"),
    (lambda v: _datasources(v)[0].update(access="server"),
     "datasources.datasources.yaml.datasources[0].access: 'server', not proxy or direct"),
    (lambda v: _datasources(v)[0].update(url="frontend.monitoring.svc:9090"),
     "datasources.datasources.yaml.datasources[0].url: 'frontend.monitoring.svc:9090' is not an http(s) URL"),
    (lambda v: _datasources(v)[0].update(isdefault=_datasources(v)[0].pop("isDefault")),
     "datasources.datasources.yaml.datasources[0].isdefault: not a field of a provisioned data source "
     "(did you mean isDefault?)"),
    (lambda v: v["datasources"]["datasources.yaml"].update(apiVersion=2),
     "datasources.datasources.yaml.apiVersion: 2, Grafana's provisioning files are apiVersion 1"),
    (lambda v: v["datasources"].update({"prometheus.json": v["datasources"].pop("datasources.yaml")}),
     "datasources.prometheus.json: Grafana reads only *.yaml and *.yml provisioning files"),
])
def test_a_broken_grafana_data_source_fails(tmp_path, edit, expected):
    errors = _grafana_errors(tmp_path, edit)
    assert any(e.startswith(f"grafana-values.yaml: {expected}") for e in errors), errors


def _relabel(objects):
    for o in objects:
        if o["kind"] == "ConfigMap":
            o["metadata"]["labels"] = {"grafana_dashboards": "1"}


@pytest.mark.parametrize("edit, edit_objects, expected", [
    (lambda v: _dashboards_sidecar(v).update(label="grafana_dashboards"), None,
     "grafana-values.yaml: sidecar.dashboards.label: 'grafana_dashboards', but ConfigMap "
     "recsys/grafana-dashboard-recsys-serving carries ['app.kubernetes.io/part-of', 'grafana_dashboard']"),
    (lambda v: _dashboards_sidecar(v).update(labelValue="true"), None,
     "grafana-values.yaml: sidecar.dashboards.labelValue: 'true', but ConfigMap "
     "recsys/grafana-dashboard-recsys-serving has grafana_dashboard='1'"),
    (lambda v: _dashboards_sidecar(v).update(searchNamespace="monitoring"), None,
     "grafana-values.yaml: sidecar.dashboards.searchNamespace: 'monitoring' (searches ['monitoring']), but "
     "ConfigMap grafana-dashboard-recsys-serving is in namespace 'recsys'"),
    # the ConfigMaps change and the values do not
    (None, _relabel, "grafana-values.yaml: sidecar.dashboards.label: 'grafana_dashboard', but ConfigMap "
                     "recsys/grafana-dashboard-recsys-models carries ['grafana_dashboards']"),
])
def test_a_sidecar_that_no_dashboard_config_map_matches_fails(tmp_path, edit, edit_objects, expected):
    errors = _grafana_errors(tmp_path, edit, edit_objects)
    assert any(e.startswith(expected) for e in errors), errors


def _drop_kind(kind):
    return lambda objects: objects.__setitem__(slice(None), [o for o in objects if o["kind"] != kind])


def _bind_to(namespace):
    def edit(objects):
        for o in objects:
            if o["kind"] == "RoleBinding":
                o["subjects"][0]["namespace"] = namespace
    return edit


def _only_named_config_maps(objects):  # a rule with resourceNames cannot list
    for o in objects:
        if o["kind"] == "Role":
            o["rules"][0]["resourceNames"] = ["grafana-dashboard-recsys-serving"]


@pytest.mark.parametrize("edit, edit_objects, expected", [
    # the chart's default: a ClusterRole on every Secret of the cluster
    (lambda v: v.pop("rbac"), None, "grafana-values.yaml: rbac.namespaced: not true, so the chart grants Grafana a "
                                    "ClusterRole on every ConfigMap and Secret of the cluster"),
    (lambda v: _dashboards_sidecar(v).pop("resource"), None,
     "grafana-values.yaml: sidecar.dashboards.resource: 'both': the sidecar would watch Secrets too"),
    # namespaced, but nothing grants the dashboards' namespace: the sidecar is forbidden to list them
    (None, _drop_kind("RoleBinding"), "grafana-values.yaml: sidecar.dashboards.searchNamespace: 'recsys', but no "
                                      "RoleBinding there binds a Role granting ConfigMaps' get, list and watch to "
                                      "Grafana's ServiceAccount monitoring/grafana"),
    (None, _drop_kind("Role"), "grafana-values.yaml: sidecar.dashboards.searchNamespace: 'recsys', but no RoleBinding"),
    (None, _bind_to("recsys"), "grafana-values.yaml: sidecar.dashboards.searchNamespace: 'recsys', but no RoleBinding"),
    (None, _only_named_config_maps, "grafana-values.yaml: sidecar.dashboards.searchNamespace: 'recsys', but no "
                                    "RoleBinding"),
    # another release name: another ServiceAccount
    (lambda v: v.update(fullnameOverride="dashboards"), None,
     "grafana-values.yaml: sidecar.dashboards.searchNamespace: 'recsys', but no RoleBinding there binds a Role "
     "granting ConfigMaps' get, list and watch to Grafana's ServiceAccount monitoring/dashboards"),
])
def test_grafana_reads_the_dashboards_and_no_secret_beyond_its_namespace(tmp_path, edit, edit_objects, expected):
    errors = _grafana_errors(tmp_path, edit, edit_objects)
    assert any(e.startswith(expected) for e in errors), errors


def test_grafanas_service_account_is_named_as_the_chart_names_it():
    name = observability.grafana_chart.service_account
    assert name({}, "grafana") == "grafana" and name({}, "monitoring") == "monitoring-grafana"
    assert name({"nameOverride": "dash"}, "grafana") == "grafana-dash"
    assert name({"fullnameOverride": "boards"}, "grafana") == "boards"
    assert name({"serviceAccount": {"create": False}}, "grafana") == "default"
    assert name({"serviceAccount": {"create": False, "name": "reader"}}, "grafana") == "reader"


def test_a_binding_of_a_config_map_reading_cluster_role_in_the_namespace_is_enough(tmp_path):
    def view(objects):
        for o in objects:
            if o["kind"] == "RoleBinding":
                o["roleRef"] = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
    assert _grafana_errors(tmp_path, edit_objects=view) == []


def test_the_data_source_and_the_chart_version_follow_the_readme_and_the_vendored_chart(tmp_path):
    errors = _grafana_errors(tmp_path, lambda v: _datasources(v)[0].update(url="http://frontend.recsys.svc:9090"))
    assert any("url 'http://frontend.recsys.svc:9090': GMP's query frontend is the Service 'frontend' port 9090 "
               "in Grafana's namespace 'monitoring'" in e for e in errors), errors
    errors = _grafana_errors(tmp_path, readme="no query frontend named here")
    assert any("README.md does not name it" in e for e in errors), errors
    path = tmp_path / "grafana-values.yaml"
    path.write_text(GRAFANA_VALUES.read_text().replace("--version 10.5.11", "--version 10.6.0"))
    objects, _ = _gke_objects()
    assert ("grafana-values.yaml: header: the helm command installs chart version '10.6.0', the vendored "
            "defaults are 10.5.11 (--version 10.5.11)") in observability.grafana_errors(objects, path)

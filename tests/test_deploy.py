"""`make deploy-check` (deploy/check.py) on the manifests as rendered from Terraform's outputs: they pass, and
each kind of mistake a user makes in them fails it: a misspelled field anywhere (pod templates included), an
unknown Serve config key, an import path or builder args that do not build the app, another Ray version, a
misspelled RECSYS_* variable, a missing variable or Secret key; and the safe defaults on GKE (an Ingress
without TLS or serving plain HTTP, a public route to /metrics or a write, MLflow or Qdrant reachable beyond
their client pods, Qdrant without its key or a client without the same key). The other kinds (chart schema, Terraform,
network flows, wiring, literals) are in test_deploy_platform.py."""

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys_assets.settings import REPO_ROOT
from tests.test_deploy_platform import _platform_errors

SPEC = importlib.util.spec_from_file_location("deploy_check", REPO_ROOT / "deploy" / "check.py")
check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check)


def _errors(tmp_path, objects: list[dict]) -> list[str]:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return [e for errors in check.check_files([path]).values() for e in errors]


def _rendered(kind: str, name: str | None = None) -> dict:
    return copy.deepcopy(next(o for o in check.rendering().objects
                              if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)))


@pytest.fixture
def service() -> dict:
    return _rendered("RayService")


def _serve_config(service: dict) -> dict:
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def _with_serve_config(service: dict, config: dict) -> dict:
    out = copy.deepcopy(service)
    out["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    return out


# That the manifests pass as they are is `make deploy-check`, which `make test` runs before pytest.


@pytest.mark.parametrize("path,field,misspelled", [
    (("spec",), "serveConfigV2", "serveConfgV2"),
    (("spec", "rayClusterConfig", "workerGroupSpecs", 0), "maxReplicas", "maxReplica"),
    (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "template", "spec", "containers", 0), "imagePullPolicy",
     "imagePullPolicyy"),
    (("spec", "rayClusterConfig", "headGroupSpec", "template", "spec"), "serviceAccountName", "serviceAcountName"),
])
def test_a_misspelled_field_fails(tmp_path, service, path, field, misspelled):
    node = service
    for key in path:
        node = node[key]
    node[misspelled] = node.pop(field)
    errors = _errors(tmp_path, [service])
    assert any(misspelled in e and "not allowed" in e for e in errors), errors


def test_an_unknown_serve_config_key_fails(tmp_path, service):
    config = _serve_config(service)
    config["applications"][0]["route_prefx"] = config["applications"][0].pop("route_prefix")
    errors = _errors(tmp_path, [_with_serve_config(service, config)])
    assert any("route_prefx" in e for e in errors), errors


@pytest.mark.parametrize("change,expected", [
    ({"import_path": "recsys_assets.serving.deploy:no_such_builder"}, "no_such_builder"),
    ({"import_path": "recsys_assets.serving.no_such_module:app_builder"}, "ModuleNotFoundError"),
    ({"args": {"replicaz": 3}}, "replicaz"),
    ({"args": {"replicas": 0}}, "replicas"),
])
def test_an_app_that_does_not_build_from_its_import_path_and_args_fails(tmp_path, service, change, expected):
    config = _serve_config(service)
    config["applications"][0].update(change)
    errors = _errors(tmp_path, [_with_serve_config(service, config)])
    assert any(expected in e for e in errors), errors


def test_another_ray_version_fails(tmp_path, service):
    service["spec"]["rayClusterConfig"]["rayVersion"] = "2.9.0"
    errors = _errors(tmp_path, [service])
    assert any("rayVersion '2.9.0'" in e for e in errors), errors


def test_a_misspelled_environment_variable_fails(tmp_path):
    env = _rendered("ConfigMap", "recsys-serving-env")
    env["data"]["RECSYS_SERVNG_STORE"] = env["data"].pop("RECSYS_SERVING_STORE")
    errors = _errors(tmp_path, [env])
    assert errors == ["RECSYS_SERVNG_STORE: set here, read nowhere in recsys_assets or dbt_project (misspelled?)"]


def test_missing_schemas_are_an_error_not_a_pass(tmp_path, monkeypatch, service):
    monkeypatch.setattr(check, "SCHEMAS", tmp_path / "nowhere")
    check.kuberay_validator.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="CRD schemas"):
            _errors(tmp_path, [service])
    finally:
        check.kuberay_validator.cache_clear()


def test_a_misspelled_field_in_a_plain_kubernetes_object_fails(tmp_path):
    qdrant = [_rendered("StatefulSet", "qdrant"), _rendered("Service", "qdrant")]
    container = qdrant[0]["spec"]["template"]["spec"]["containers"][0]
    container["imagee"] = container.pop("image")
    errors = _errors(tmp_path, qdrant)
    assert any("imagee" in e for e in errors), errors


def test_manifests_are_checked_at_the_kubernetes_version_terraform_pins():
    assert check.kubernetes_version() == "1.33.0"


def test_a_service_account_bound_to_another_google_account_fails(tmp_path):
    serving = _rendered("ServiceAccount", "recsys-serving")
    serving["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] = "recsys-training@p.iam.gserviceaccount.com"
    unknown = {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "recsys-other", "namespace": "recsys"}}
    errors = _errors(tmp_path, [serving, unknown])
    assert "ServiceAccount recsys-serving: annotated 'recsys-training@p.iam.gserviceaccount.com', Terraform binds " \
           "it to recsys-serving" in errors
    assert "ServiceAccount recsys-other: no workload identity binding in deploy/terraform/iam.tf" in errors


def test_a_bucket_the_code_uses_but_terraform_lacks_fails(tmp_path, monkeypatch):
    parsed = copy.deepcopy(check.terraform())
    for block in parsed["locals"]:
        if "buckets" in block:
            block["buckets"] = block["buckets"].replace('"feast", ', "").replace(', "feast"', "")
    monkeypatch.setattr(check, "terraform", lambda: parsed)
    errors = check.terraform_errors([])
    assert "the code defaults to bucket <project>-feast, deploy/terraform creates none" in errors


def test_yamllint_and_hadolint_findings_fail(tmp_path):
    manifest, dockerfile = tmp_path / "bad.yaml", tmp_path / "Dockerfile"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap   \nmetadata:\n    name: x\n")
    dockerfile.write_text("FROM python:3.11-slim\nRUN cd /tmp && curl -s https://example.com | sh\n")
    found = check.lint_errors([manifest], [dockerfile])
    assert any("trailing-spaces" in e for e in found[f"{manifest}: yamllint"])
    assert any("DL3003" in e or "DL4006" in e for e in found[f"{dockerfile}: hadolint"])


def _values() -> dict:
    return copy.deepcopy(check.rendering().values)


@pytest.mark.parametrize("edit,expected", [
    (lambda v: v["runLauncher"]["config"]["k8sRunLauncher"]["volumeMounts"][0].update(mountPat="/x"), "mountPat"),
    (lambda v: v["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"].update(resourcez={}),
     "resourcez"),
    (lambda v: v["dagster-user-deployments"]["deployments"][0]["podSecurityContext"].update(runAsNonRoott=True),
     "runAsNonRoott"),
    # keys only the chart's own schema knows: refused there, with no helm binary
    (lambda v: v["postgresql"].update(postgresqlHostname="10.0.0.1"), "'postgresqlHostname' was unexpected"),
    (lambda v: v["computeLogManager"]["config"]["gcsComputeLogManager"].update(buckt="b"), "'buckt' was unexpected"),
    (lambda v: v["dagster-user-deployments"]["deployments"][0].pop("port"), "'port' is a required property"),
    (lambda v: v.update(dagsterWebserver={"replicaCont": 2}), "'replicaCont' was unexpected"),
])
def test_a_misspelled_field_in_the_dagster_values_fails(tmp_path, edit, expected):
    values = _values()
    edit(values)
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    errors = check.dagster_values_errors(path)
    assert any(expected in e for e in errors), errors


def test_the_dagster_values_and_the_gcp_executor_config_pass(monkeypatch):
    assert check.dagster_values_errors() == []
    from recsys_assets.defs.shared import resources

    monkeypatch.setattr(resources, "GCP_EXECUTOR_CONFIG", {**resources.GCP_EXECUTOR_CONFIG, "max_concurent": 4})
    errors = check.dagster_values_errors()
    assert any("max_concurent" in e for e in errors), errors


def test_the_dbt_models_parse_for_the_bigquery_target(tmp_path):
    """What dbt runs under gcp: the same models, parsed by the BigQuery adapter (no connection needed)."""
    import json
    import os

    from recsys_assets.settings import GcpSettings, Settings

    # As a user runs dbt standalone: the profile's values from the settings (`recsys config --export`).
    settings = Settings(env="gcp", home=tmp_path, gcp=GcpSettings(gcp_project="example-project"))
    env = {**os.environ, **settings.dbt_environment()}
    out = subprocess.run([str(Path(sys.executable).parent / "dbt"), "parse", "--target", "bigquery", "--profiles-dir",
                          ".", "--target-path", str(tmp_path / "target")], cwd=REPO_ROOT / "dbt_project", env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    assert manifest["metadata"]["adapter_type"] == "bigquery"
    models = {n["name"] for k, n in manifest["nodes"].items() if k.startswith("model.")}
    assert {"stg_reviews", "user_rating_stats", "parent_asin_rating_stats"} <= models


def _all_objects() -> list[dict]:
    return copy.deepcopy(check.rendering().objects)


def test_every_workload_gets_the_environment_it_needs():
    assert check.required_environment_errors(_all_objects(), _values()) == []


def test_a_missing_environment_variable_fails():
    objects = _all_objects()
    serving_env = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "recsys-serving-env")
    del serving_env["data"]["RECSYS_QDRANT_URL"]
    errors = check.required_environment_errors(objects, _values())
    assert any("RayService/recsys-serving" in e and "RECSYS_QDRANT_URL missing" in e for e in errors), errors
    values = _values()
    values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"] = []
    errors = check.required_environment_errors(_all_objects(), values)
    assert "Dagster run pods: RECSYS_REDIS_URL missing" in errors


def test_a_secret_key_no_one_creates_fails():
    objects = _all_objects()
    service = next(o for o in objects if o["kind"] == "RayService")
    env = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    next(e for e in env if e["name"] == "RECSYS_API_TOKEN")["valueFrom"]["secretKeyRef"]["key"] = "token"
    errors = check.required_environment_errors(objects, _values())
    assert any("Secret recsys-api has no key 'token'" in e for e in errors), errors


# -- safe defaults on GKE (deploy/checks/exposure.py): each planted mistake fails `make deploy-check` -----------

def _exposure_errors(edit_objects=None, edit_values=None, edit_secrets=None) -> list[str]:
    """The exposure errors of the rendered deployment after an edit (platform_errors, as `make deploy-check`)."""
    found = _platform_errors(edit_objects, edit_values, edit_secrets)
    return [e for name, errors in found.items() if name.startswith("exposure") for e in errors]


def _find(objects, kind, name=None):
    return next(o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


def _ingress(objects):
    return _find(objects, "Ingress", "recsys-api")


def _path(route: str, path_type: str = "Exact") -> dict:
    return {"path": route, "pathType": path_type,
            "backend": {"service": {"name": "recsys-serving-serve-svc", "port": {"number": 8000}}}}


def test_the_rendered_deployment_is_safe_by_default():
    assert _exposure_errors() == []


@pytest.mark.parametrize("edit,expected", [
    # no certificate at all: the API over plain HTTP
    (lambda o: _ingress(o)["metadata"]["annotations"].pop("networking.gke.io/managed-certificates"),
     "Ingress recsys-api: no TLS"),
    (lambda o: o.remove(_find(o, "ManagedCertificate")), "ManagedCertificate recsys-api is not among the manifests"),
    # a certificate for another name than the one routed
    (lambda o: _find(o, "ManagedCertificate")["spec"].update(domains=["api.example.org"]),
     "host 203-0-113-10.sslip.io has no certificate"),
    (lambda o: _ingress(o)["spec"]["rules"][0].pop("host"), "a rule without a host"),
    # HTTP served next to HTTPS: no redirect, or a redirect turned off
    (lambda o: _ingress(o)["metadata"]["annotations"].pop("networking.gke.io/v1beta1.FrontendConfig"),
     "plain HTTP serves the API"),
    (lambda o: _find(o, "FrontendConfig")["spec"]["redirectToHttps"].update(enabled=False), "plain HTTP serves the API"),
    (lambda o: _ingress(o)["metadata"]["annotations"].update({"kubernetes.io/ingress.allow-http": "true"}) or
     _ingress(o)["metadata"]["annotations"].pop("networking.gke.io/v1beta1.FrontendConfig"),
     "plain HTTP serves the API"),
])
def test_an_ingress_without_tls_or_serving_plain_http_fails(edit, expected):
    errors = _exposure_errors(edit)
    assert any(expected in e for e in errors), errors


def test_https_only_without_a_redirect_passes():
    """`allow-http: "false"` (no HTTP front end at all) is the other way to keep plain HTTP off the API."""
    def edit(objects):
        annotations = _ingress(objects)["metadata"]["annotations"]
        annotations.pop("networking.gke.io/v1beta1.FrontendConfig")
        annotations["kubernetes.io/ingress.allow-http"] = "false"
    assert _exposure_errors(edit) == []


@pytest.mark.parametrize("edit,expected", [
    # everything the rules do not match goes to a default backend
    (lambda o: _ingress(o)["spec"].update(defaultBackend=_path("/")["backend"]), "routes /metrics (Prometheus"),
    (lambda o: _ingress(o)["spec"].update(defaultBackend=_path("/")["backend"]), "routes /interactions (a write"),
    # a catch-all prefix in place of the read API's paths
    (lambda o: _ingress(o)["spec"]["rules"][0]["http"]["paths"].append(_path("/", "Prefix")), "routes /metrics"),
    (lambda o: _ingress(o)["spec"]["rules"][0]["http"]["paths"].append(_path("/*", "ImplementationSpecific")),
     "routes /interactions"),
    (lambda o: _ingress(o)["spec"]["rules"][0]["http"]["paths"].append(_path("/metrics")), "routes /metrics"),
    (lambda o: _ingress(o)["spec"]["rules"][0]["http"]["paths"].append(_path("/interactions", "Prefix")),
     "routes /interactions (a write (POST))"),
    # a rule for any host (the bare address) that routes the write path
    (lambda o: _ingress(o)["spec"]["rules"].append({"http": {"paths": [_path("/interactions")]}}),
     "routes /interactions"),
    # the read API dropped from the public route
    (lambda o: _ingress(o)["spec"]["rules"][0]["http"]["paths"].pop(0), "does not route /recs/popular"),
])
def test_a_public_route_to_metrics_or_a_write_fails(edit, expected):
    errors = _exposure_errors(edit)
    assert any(expected in e for e in errors), errors


def test_the_routes_come_from_the_app():
    """Writes are the routes that ask for the bearer token, read from the app (a new write route is private)."""
    routes = {path: (methods, private) for path, methods, private in check.exposure.app_routes()}
    assert routes["/interactions"] == ({"POST"}, True)
    assert routes["/metrics"][1] is True
    assert routes["/recs/popular"] == ({"GET"}, False)


def _policy(objects, name):
    return _find(objects, "NetworkPolicy", name)


@pytest.mark.parametrize("edit,expected", [
    # the old, wide rule: any pod labelled part-of: recsys reaches MLflow
    (lambda o: _policy(o, "mlflow-from-its-clients")["spec"]["ingress"][0]["from"][0].update(
        podSelector={"matchLabels": {"app.kubernetes.io/part-of": "recsys"}}), "flow recsys-pod-to-mlflow"),
    # a namespace selector that lets every namespace in
    (lambda o: _policy(o, "qdrant-from-its-clients")["spec"]["ingress"][0]["from"][0].update(namespaceSelector={}),
     "flow other-namespace-pod-to-qdrant"),
    # a rule without peers admits everyone
    (lambda o: _policy(o, "qdrant-from-its-clients")["spec"]["ingress"].append({"ports": [{"port": 6334}]}),
     "flow vpc-address-to-qdrant (vpc-address -> qdrant:6334/TCP"),
    (lambda o: _policy(o, "mlflow-from-its-clients")["spec"]["ingress"][0]["from"].append(
        {"ipBlock": {"cidr": "0.0.0.0/0"}}), "flow google-load-balancer-to-mlflow"),
    # a pod that is no Qdrant client (training) given in, the webserver given in
    (lambda o: _policy(o, "qdrant-from-its-clients")["spec"]["ingress"][0]["from"].append(
        {"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}), "flow training-worker-to-qdrant"),
    (lambda o: _policy(o, "mlflow-from-its-clients")["spec"]["ingress"][0]["from"].append(
        {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "dagster"}}}), "flow dagster-webserver-to-mlflow"),
    # or taken outside the cluster by a Service or an Ingress
    (lambda o: _find(o, "Service", "mlflow")["spec"].update(type="LoadBalancer"),
     "Service mlflow: type LoadBalancer exposes mlflow outside the cluster"),
    (lambda o: _ingress(o)["spec"]["rules"][0]["http"]["paths"].append(
        {"path": "/api/2.0/mlflow", "pathType": "Prefix", "backend": {"service": {"name": "mlflow",
                                                                                  "port": {"number": 5000}}}}),
     "Ingress recsys-api: routes to mlflow (mlflow)"),
])
def test_mlflow_or_qdrant_reachable_beyond_their_clients_fails(edit, expected):
    errors = _exposure_errors(edit)
    assert any(e.startswith(expected) or expected in e for e in errors), errors


def _qdrant_server(objects) -> dict:
    return _find(objects, "StatefulSet", "qdrant")["spec"]["template"]["spec"]["containers"][0]


def _serving_env(objects, group="worker") -> list[dict]:
    spec = _find(objects, "RayService")["spec"]["rayClusterConfig"]
    template = spec["headGroupSpec"] if group == "head" else spec["workerGroupSpecs"][0]
    return template["template"]["spec"]["containers"][0]["env"]


@pytest.mark.parametrize("edit_objects,edit_values,edit_secrets,expected", [
    (lambda o: _qdrant_server(o).pop("env"), None, None, "Qdrant runs without QDRANT__SERVICE__API_KEY"),
    (lambda o: _qdrant_server(o).update(env=[{"name": "QDRANT__SERVICE__API_KEY", "value": "in-the-manifest"}]),
     None, None, "QDRANT__SERVICE__API_KEY is not read from a Secret"),
    (None, None, lambda s: s["recsys-qdrant"].update(RECSYS_QDRANT_API_KEY=""), None, ),
    # a client given another Secret's key, or none
    (lambda o: next(e for e in _serving_env(o) if e["name"] == "RECSYS_QDRANT_API_KEY")["valueFrom"]
     ["secretKeyRef"].update(name="recsys-api", key="RECSYS_API_TOKEN"), None, None,
     "RECSYS_QDRANT_API_KEY from ('secret', 'recsys-api', 'RECSYS_API_TOKEN'), the server's key is Secret "
     "recsys-qdrant"),
    (None, lambda v: v["runLauncher"]["config"]["k8sRunLauncher"].update(envSecrets=[{"name": "recsys-redis"}]), None,
     "Dagster run pods: reads RECSYS_QDRANT_URL but gets no RECSYS_QDRANT_API_KEY"),
    (None, lambda v: v["dagster-user-deployments"]["deployments"][0].update(envSecrets=[{"name": "recsys-redis"}]),
     None, "Dagster user code: reads RECSYS_QDRANT_URL but gets no RECSYS_QDRANT_API_KEY"),
])
def test_qdrant_without_a_key_or_a_client_without_the_same_key_fails(edit_objects, edit_values, edit_secrets,
                                                                    expected):
    if expected is None:
        expected = "reads key 'RECSYS_QDRANT_API_KEY' of Secret recsys-qdrant, which `deploy/render.py secrets` " \
                   "does not fill"
    errors = _exposure_errors(edit_objects, edit_values, edit_secrets)
    assert any(expected in e for e in errors), errors

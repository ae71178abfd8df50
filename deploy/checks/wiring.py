"""Wiring between objects, which no schema sees: Services select pods that exist and have the target port;
the Ingress is GKE's (class annotation), its backend has network endpoint groups and an existing
BackendConfig; every Secret and key a workload reads is one `deploy/render.py secrets` creates; values a
library parses (Feast's Redis string, MLflow's database URI and allowed hosts) parse, with that library, to
what the pods have (the CA file they mount, the proxy port they run); every Cloud Storage FUSE volume's pod
carries the annotation that brings GKE's sidecar."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit

GCSFUSE_DRIVER = "gcsfuse.csi.storage.gke.io"
GCSFUSE_ANNOTATION = "gke-gcsfuse/volumes"
NEG_ANNOTATION = "cloud.google.com/neg"
BACKEND_CONFIG_ANNOTATION = "cloud.google.com/backend-config"


def pod_templates(node, where: str) -> Iterator[tuple[str, dict]]:
    """(where, template) of every pod template under node."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "template" and isinstance(value, dict) and "spec" in value:
                yield where, value
            else:
                yield from pod_templates(value, f"{where}.{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from pod_templates(value, f"{where}[{n}]")


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _serve_services(objects: list[dict]) -> list[tuple[dict, dict]]:
    """(Service as KubeRay builds it from spec.serveService, the head's pod template) of each RayService."""
    found = []
    for obj in objects:
        if obj["kind"] != "RayService":
            continue
        head = obj["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
        custom = obj["spec"].get("serveService") or {}
        ports = [{"name": p["name"], "port": p["containerPort"], "targetPort": p["containerPort"]}
                 for c in head["spec"]["containers"] for p in c.get("ports", []) if p.get("name") == "serve"]
        metadata = {"name": f"{obj['metadata']['name']}-serve-svc", **(custom.get("metadata") or {})}
        found.append(({"kind": "Service", "metadata": metadata,
                       "spec": {"ports": (custom.get("spec") or {}).get("ports") or ports}}, head))
    return found


def service_errors(objects: list[dict], pods: dict[str, dict]) -> list[str]:
    """Each Service's selector matches a pod template that has each target port (by name or number)."""
    errors = []
    for obj in objects:
        if obj["kind"] != "Service":
            continue
        name, selector = obj["metadata"]["name"], obj["spec"].get("selector") or {}
        matching = [t for t in pods.values() if selects(selector, t.get("metadata", {}).get("labels") or {})]
        if not matching:
            errors.append(f"Service {name}: its selector {selector} matches no pod of the manifests")
            continue
        for port in obj["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            if not any(_has_port(t["spec"], target) for t in matching):
                errors.append(f"Service {name}: port {port['port']} targets {target!r}, which no selected pod's "
                              "container declares")
    return errors


def _has_port(spec: dict, target) -> bool:
    ports = [p for c in spec.get("containers", []) for p in c.get("ports", [])]
    return any(p.get("name") == target if isinstance(target, str) else p["containerPort"] == target for p in ports)


def ingress_errors(objects: list[dict], api_address_name: str) -> list[str]:
    errors = []
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    services.update({s["metadata"]["name"]: s for s, _ in _serve_services(objects)})
    backend_configs = {o["metadata"]["name"] for o in objects if o["kind"] == "BackendConfig"}
    for obj in objects:
        if obj["kind"] != "Ingress":
            continue
        name, annotations = obj["metadata"]["name"], obj["metadata"].get("annotations") or {}
        if annotations.get("kubernetes.io/ingress.class") not in ("gce", "gce-internal"):
            errors.append(f"Ingress {name}: no `kubernetes.io/ingress.class: gce` annotation: GKE's controller "
                          "ignores it (it reads the class from the annotation)")
        if "ingressClassName" in obj["spec"]:
            errors.append(f"Ingress {name}: spec.ingressClassName is set: GKE's controller skips such an Ingress, "
                          "and Kubernetes refuses it beside the class annotation")
        address = annotations.get("kubernetes.io/ingress.global-static-ip-name")
        if address != api_address_name:
            errors.append(f"Ingress {name}: static IP {address!r}, Terraform reserves {api_address_name!r}")
        for backend in _backends(obj["spec"]):
            service = services.get(backend["name"])
            if service is None:
                errors.append(f"Ingress {name}: backend Service {backend['name']} is not among the manifests "
                              "(nor a RayService's serve Service)")
                continue
            service_annotations = service["metadata"].get("annotations") or {}
            try:
                neg = json.loads(service_annotations.get(NEG_ANNOTATION, "{}"))
            except json.JSONDecodeError as exc:
                neg = {}
                errors.append(f"Service {backend['name']}: {NEG_ANNOTATION} is not JSON: {exc}")
            if neg.get("ingress") is not True:
                errors.append(f"Service {backend['name']}: no `{NEG_ANNOTATION}: '{{\"ingress\": true}}'`: with "
                              "network policy enforcement GKE adds no NEGs, and a ClusterIP backend without them "
                              "never becomes healthy")
            config = json.loads(service_annotations.get(BACKEND_CONFIG_ANNOTATION, "{}") or "{}")
            for referenced in {config.get("default"), *(config.get("ports") or {}).values()} - {None}:
                if referenced not in backend_configs:
                    errors.append(f"Service {backend['name']}: BackendConfig {referenced} is not among the manifests")
            ports = {p["port"] for p in service["spec"].get("ports", [])} | {p.get("name") for p in
                                                                            service["spec"].get("ports", [])}
            wanted = backend["port"].get("number", backend["port"].get("name"))
            if wanted not in ports:
                errors.append(f"Ingress {name}: Service {backend['name']} has no port {wanted}")
    return errors


def _backends(spec: dict) -> Iterator[dict]:
    if "defaultBackend" in spec:
        yield spec["defaultBackend"]["service"]
    for rule in spec.get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            yield path["backend"]["service"]


def secret_references(objects: list[dict], values: dict) -> Iterator[tuple[str, str, str | None]]:
    """(where, Secret name, key or None for the whole Secret) of every Secret a pod or the chart reads."""
    for obj in objects:
        for where, template in pod_templates(obj.get("spec", {}), f"{obj['kind']}/{obj['metadata']['name']}"):
            yield from _pod_secret_references(where, template["spec"])
    deployment = values["dagster-user-deployments"]["deployments"][0]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for where, section in (("Dagster user code", deployment), ("Dagster run launcher", launcher)):
        for secret in section.get("envSecrets", []):
            yield where, secret["name"], None
        yield from _volume_secret_references(where, section.get("volumes", []))
    if not values.get("generatePostgresqlPasswordSecret", True):
        name = values.get("global", {}).get("postgresqlSecretName", "dagster-postgresql-secret")
        yield "Dagster chart (instance storage)", name, "postgresql-password"


def _pod_secret_references(where: str, spec: dict) -> Iterator[tuple[str, str, str | None]]:
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                yield where, source["secretRef"]["name"], None
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield where, ref["name"], ref["key"]
    yield from _volume_secret_references(where, spec.get("volumes", []))


def _volume_secret_references(where: str, volumes: list[dict]) -> Iterator[tuple[str, str, str | None]]:
    for volume in volumes:
        secret = volume.get("secret")
        if secret:
            for item in secret.get("items") or [None]:
                yield where, secret["secretName"], item["key"] if item else None


def secret_errors(objects: list[dict], values: dict, created: dict[str, dict]) -> list[str]:
    """Every Secret (and key) read is one `deploy/render.py secrets` creates."""
    errors = []
    for where, name, key in secret_references(objects, values):
        if name not in created:
            errors.append(f"{where}: reads Secret {name}, which `deploy/render.py secrets` does not create")
        elif key is not None and key not in created[name]:
            errors.append(f"{where}: reads key {key!r} of Secret {name}, which holds {sorted(created[name])}")
    return errors


def _mounted_files(spec: dict, container: dict) -> set[str]:
    """Files a container sees from Secret volumes that list their items."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files = set()
    for mount in container.get("volumeMounts", []):
        secret = volumes.get(mount["name"], {}).get("secret")
        for item in (secret or {}).get("items") or []:
            files.add(f"{mount['mountPath'].rstrip('/')}/{item['path']}")
    return files


def redis_errors(created: dict[str, dict], outputs: dict, pods: dict[str, dict]) -> list[str]:
    """RECSYS_REDIS_URL read by Feast's own parser (and ours, which must agree): Memorystore's host and port,
    its AUTH string, TLS, and a CA file that every pod reading the variable mounts."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    from recsys_assets.redis_connection import connection_kwargs

    value = created.get("recsys-redis", {}).get("RECSYS_REDIS_URL")
    if value is None:
        return ["Secret recsys-redis has no RECSYS_REDIS_URL"]
    nodes, params = RedisOnlineStore._parse_connection_string(value)
    errors = []
    where_feast_reads = (nodes[0].get("host"), str(nodes[0].get("port"))) if nodes else None
    if where_feast_reads != (outputs["redis_host"], str(outputs["redis_port"])):
        errors.append(f"RECSYS_REDIS_URL: Feast reads host:port {nodes[:1]}, Memorystore is at "
                      f"{outputs['redis_host']}:{outputs['redis_port']}")
    if str(params.get("password")) != str(outputs["redis_auth"]):
        errors.append("RECSYS_REDIS_URL: Feast reads no password equal to Memorystore's AUTH string")
    if params.get("ssl") is not True:
        errors.append("RECSYS_REDIS_URL: Feast reads no ssl=true, and Memorystore requires TLS")
    ours = connection_kwargs(value)
    feast = {**(nodes[0] if nodes else {}), **params}
    if {k: str(v) for k, v in feast.items()} != {k: str(v) for k, v in ours.items()}:
        errors.append(f"RECSYS_REDIS_URL: recsys_assets.redis_connection reads {ours}, Feast {feast}")
    ca = params.get("ssl_ca_certs")
    for where, template in pods.items():
        for container in template["spec"].get("containers", []):
            if _reads_variable(container, "RECSYS_REDIS_URL", template["spec"]) and ca not in _mounted_files(
                    template["spec"], container):
                errors.append(f"{where}: reads RECSYS_REDIS_URL but does not mount its CA file {ca}")
    return errors


def _reads_variable(container: dict, name: str, spec: dict) -> bool:
    if any(e["name"] == name for e in container.get("env", [])):
        return True
    return any(s.get("secretRef", {}).get("name") == "recsys-redis" for s in container.get("envFrom", []))


def mlflow_errors(objects: list[dict], created: dict[str, dict]) -> list[str]:
    """The server's --allowed-hosts admits the Host header of every RECSYS_MLFLOW_URI (MLflow's own check);
    its database URI parses (SQLAlchemy) to the Auth Proxy the pod runs."""
    from mlflow.server.security_utils import is_allowed_host_header
    from sqlalchemy.engine import make_url

    errors = []
    server = next((o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow"), None)
    if server is None:
        return ["no Deployment mlflow among the manifests"]
    spec = server["spec"]["template"]["spec"]
    command = [a for c in spec["containers"] if c["name"] == "mlflow" for a in c.get("command", []) + c.get("args", [])]
    allowed = next((a.split("=", 1)[1].split(",") for a in command if a.startswith("--allowed-hosts=")), None)
    for obj in objects:
        uri = (obj.get("data") or {}).get("RECSYS_MLFLOW_URI") if obj["kind"] == "ConfigMap" else None
        if uri and (allowed is None or not is_allowed_host_header(allowed, urlsplit(uri).netloc)):
            errors.append(f"ConfigMap {obj['metadata']['name']}: RECSYS_MLFLOW_URI {uri}: the MLflow server answers "
                          f"403 to Host {urlsplit(uri).netloc} (--allowed-hosts {allowed})")
    uri = created.get("recsys-mlflow-db", {}).get("MLFLOW_BACKEND_URI")
    if uri is None:
        return errors + ["Secret recsys-mlflow-db has no MLFLOW_BACKEND_URI"]
    url = make_url(uri)
    if url.get_backend_name() != "postgresql":
        errors.append(f"MLFLOW_BACKEND_URI: backend {url.get_backend_name()}, Cloud SQL is PostgreSQL")
    proxy_ports = {int(a.split("=", 1)[1]) for c in [*spec.get("initContainers", []), *spec["containers"]]
                   if "cloud-sql-proxy" in c["image"] for a in c.get("args", []) if a.startswith("--port=")}
    if url.host not in ("127.0.0.1", "localhost") or url.port not in proxy_ports:
        errors.append(f"MLFLOW_BACKEND_URI: {url.host}:{url.port}, the pod's Cloud SQL Auth Proxy listens on "
                      f"127.0.0.1:{sorted(proxy_ports)}")
    return errors


def gcsfuse_errors(pods: dict[str, dict], buckets: set[str]) -> list[str]:
    """A Cloud Storage FUSE volume needs the pod annotation (GKE injects the sidecar only then) and a bucket
    Terraform makes."""
    errors = []
    for where, template in pods.items():
        for volume in template["spec"].get("volumes", []):
            csi = volume.get("csi") or {}
            if csi.get("driver") != GCSFUSE_DRIVER:
                continue
            annotations = template.get("metadata", {}).get("annotations") or {}
            if annotations.get(GCSFUSE_ANNOTATION) != "true":
                errors.append(f"{where}: mounts Cloud Storage FUSE volume {volume['name']} without the pod "
                              f"annotation {GCSFUSE_ANNOTATION}: \"true\" (the pod would never start)")
            bucket = (csi.get("volumeAttributes") or {}).get("bucketName")
            if bucket not in buckets:
                errors.append(f"{where}: volume {volume['name']} mounts bucket {bucket}, not one Terraform makes")
    return errors


def qdrant_errors(objects: list[dict]) -> list[str]:
    """The Qdrant server's image is one the installed qdrant-client calls compatible (its own check: the same
    major version, at most one minor apart), the unprivileged variant (uid 1000 writes its own folders)."""
    from importlib.metadata import version

    from qdrant_client.common.version_check import is_compatible

    errors = []
    for where, template in (item for obj in objects for item in pod_templates(obj.get("spec", {}), obj["kind"])):
        for container in template["spec"].get("containers", []):
            image = container.get("image", "")
            if not image.startswith("qdrant/qdrant:"):
                continue
            tag = image.split(":", 1)[1]
            server = tag.removeprefix("v").removesuffix("-unprivileged")
            if not is_compatible(version("qdrant-client"), server):
                errors.append(f"{where}: Qdrant {server} is not compatible with qdrant-client "
                              f"{version('qdrant-client')} (the client's own rule)")
            if not tag.endswith("-unprivileged"):
                errors.append(f"{where}: {image} runs as root; the -unprivileged image runs as uid 1000")
    return errors


def apply_order_errors(documents: list[dict]) -> list[str]:
    """In one file kubectl applies documents in order: a namespace before what lives in it."""
    errors, made = [], set()
    for obj in documents:
        if obj["kind"] == "Namespace":
            made.add(obj["metadata"]["name"])
        namespace = obj["metadata"].get("namespace")
        if namespace and namespace not in made:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} comes before its Namespace {namespace}")
    return errors

"""The platform's pods as they will run (labels and ports from the rendered manifests, plus what the Dagster
chart, dagster-k8s and KubeRay add), the addresses outside the cluster it talks to, and the flows it needs.
A flow missing from the policies fails `make deploy-check` with its name (network.flow_errors)."""

from __future__ import annotations

from .network import Address, Flow, Pod

NAMESPACE = "recsys"
KUBERAY_NAMESPACE = "kuberay-system"  # README, "Deploy to GKE": helm install kuberay-operator -n kuberay-system
GMP_NAMESPACE = "gmp-system"  # where GKE runs Google Managed Prometheus' collectors
RELEASE = "dagster"  # the Helm release name the README installs the chart as
# Labels the Dagster chart gives its pods (helm/dagster/templates/deployment-*.yaml, _helpers.tpl).
CHART_LABELS = {
    "dagster-webserver": {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": RELEASE,
                          "component": "dagster-webserver"},
    "dagster-daemon": {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": RELEASE,
                       "component": "dagster-daemon", "deployment": "daemon"},
}
# Addresses outside the cluster (documentation ranges where the real one is only known after apply).
EXTERNAL = {
    "google-load-balancer": Address("130.211.0.10"),
    "google-health-checker": Address("35.191.0.10"),
    "metadata-server": Address("169.254.169.254"),  # workload identity tokens (GKE metadata server)
    "google-apis": Address("199.36.153.8"),  # BigQuery, GCS, IAM credentials (private.googleapis.com)
}


def _container_ports(spec: dict) -> dict:
    return {p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
            for c in spec.get("containers", []) for p in c.get("ports", []) if "name" in p}


def _pod(template: dict, extra: dict | None = None, namespace: str = NAMESPACE) -> Pod:
    labels = {**(template.get("metadata", {}).get("labels") or {}), **(extra or {})}
    return Pod(namespace, labels, _container_ports(template.get("spec", {})))


def _ray_pods(name: str, spec: dict, cluster: str) -> dict[str, Pod]:
    """KubeRay's head and worker pods: our template labels plus the operator's (ray.io/cluster, for a
    RayService `<name>-<suffix>`, changing on each new cluster; ray.io/node-type; ray.io/serve)."""
    base = {"ray.io/cluster": cluster, "ray.io/is-ray-node": "yes"}
    pods = {f"{name}-head": _pod(spec["headGroupSpec"]["template"],
                                 {**base, "ray.io/node-type": "head", "ray.io/group": "headgroup",
                                  "ray.io/serve": "true"})}
    for group in spec.get("workerGroupSpecs", []):
        pods[f"{name}-worker"] = _pod(group["template"], {**base, "ray.io/node-type": "worker",
                                                          "ray.io/group": group["groupName"], "ray.io/serve": "true"})
    return pods


def workloads(objects: list[dict], run_pod: dict, step_pod: dict, user_code_pod: dict, outputs: dict
              ) -> dict[str, Pod | Address]:
    """Every party to a flow: the rendered objects' pods, the Dagster chart's, dagster-k8s's run and step pods
    (as dagster-k8s builds them from our values), the KubeRay operator, kube-dns, and the outside addresses."""
    found: dict[str, Pod | Address] = dict(EXTERNAL)
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in ("Deployment", "StatefulSet"):
            found[name] = _pod(obj["spec"]["template"])
        elif kind == "RayService":
            found.update(_ray_pods("serving", obj["spec"]["rayClusterConfig"], f"{name}-x7k2p"))
        elif kind == "RayCluster":
            found.update(_ray_pods("training", obj["spec"], name))
    found["dagster-run"] = _pod(run_pod["spec"]["template"])
    found["dagster-step"] = _pod(step_pod["spec"]["template"])
    found["dagster-code-server"] = Pod(NAMESPACE, {
        "app.kubernetes.io/name": "dagster-user-deployments", "app.kubernetes.io/instance": RELEASE,
        "component": "user-deployments", "deployment": user_code_pod["metadata"]["name"],
        **user_code_pod["metadata"].get("labels", {})}, _container_ports(user_code_pod["spec"]))
    for name, labels in CHART_LABELS.items():
        found[name] = Pod(NAMESPACE, labels)
    found["kuberay-operator"] = Pod(KUBERAY_NAMESPACE, {"app.kubernetes.io/name": "kuberay-operator",
                                                        "app.kubernetes.io/instance": "kuberay-operator"})
    found["kube-dns"] = Pod("kube-system", {"k8s-app": "kube-dns"}, {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")})
    # Google Managed Prometheus' collectors (GKE's managed collection: DaemonSet `collector` in gmp-system,
    # labels of prometheus-engine's charts/operator/templates/_helpers.tpl).
    found["gmp-collector"] = Pod(GMP_NAMESPACE, {"app.kubernetes.io/name": "collector",
                                                 "app": "managed-prometheus-collector"})
    # Its managed Alertmanager (StatefulSet `alertmanager` in gmp-system, Service port 9093, same source).
    found["gmp-alertmanager"] = Pod(GMP_NAMESPACE, {"app.kubernetes.io/name": "alertmanager",
                                                    "app": "managed-prometheus-alertmanager"},
                                    {"alertmanager": (9093, "TCP")})
    found.update(OUTSIDERS)
    found["cloud-sql"] = Address(outputs["postgres_host"])
    found["memorystore"] = Address(outputs["redis_host"])
    return found


def namespaces(objects: list[dict]) -> dict[str, dict]:
    """Namespace labels, with the one Kubernetes sets on every namespace (kubernetes.io/metadata.name)."""
    found = {name: {"kubernetes.io/metadata.name": name}
             for name in ("kube-system", KUBERAY_NAMESPACE, GMP_NAMESPACE, NAMESPACE)}
    for obj in objects:
        if obj["kind"] == "Namespace":
            name = obj["metadata"]["name"]
            found[name] = {**(obj["metadata"].get("labels") or {}), "kubernetes.io/metadata.name": name}
    return found


# The pods that use MLflow and Qdrant: they, and nothing else, reach them (outsider_flows).
MLFLOW_CLIENTS = ("dagster-code-server", "dagster-run", "dagster-step", "training-head", "training-worker",
                  "serving-head", "serving-worker")
QDRANT_CLIENTS = ("dagster-code-server", "dagster-run", "dagster-step", "serving-head", "serving-worker")
# Parties that must not reach the stores: a pod of ours that is no client (labelled part-of: recsys, as the
# webserver's neighbours are), a pod in another namespace that copies the client labels, an address in the VPC.
OUTSIDERS = {
    "recsys-pod": Pod(NAMESPACE, {"app.kubernetes.io/part-of": "recsys", "app.kubernetes.io/name": "other"}),
    "other-namespace-pod": Pod("default", {"app.kubernetes.io/part-of": "recsys", "recsys-mlflow-client": "true",
                                           "recsys-qdrant-client": "true"}),
    "vpc-address": Address("10.10.9.9"),
}


def outsider_flows(workloads: dict[str, Pod | Address]) -> list[Flow]:
    """Flows the NetworkPolicies must refuse: every party other than a store's clients to that store's ports."""
    stores = {"mlflow": ((5000,), MLFLOW_CLIENTS), "qdrant": ((6333, 6334), QDRANT_CLIENTS),
              # the pipeline's metrics: read by Google Managed Prometheus' collectors only
              "recsys-pipeline-exporter": ((9108,), ("gmp-collector",))}
    return [Flow(f"{source}-to-{store}", source, store, port, why="only the store's clients may reach it")
            for store, (ports, clients) in stores.items() for source in workloads
            if source not in clients and source != store for port in ports]


def flows(redis_port: int) -> list[Flow]:
    """Who talks to whom: each line is something the platform does not work without."""
    ours = ["dagster-code-server", "dagster-run", "dagster-step", "serving-head", "serving-worker", "training-head",
            "training-worker", "mlflow", "qdrant", "dagster-webserver", "dagster-daemon", "recsys-pipeline-exporter"]
    needed = [
        Flow("code-location-load", "dagster-webserver", "dagster-code-server", 3030, why="the UI lists the assets"),
        Flow("sensors-and-automation", "dagster-daemon", "dagster-code-server", 3030,
             why="sensors, schedules, automation, run launches"),
        *(Flow(f"{w}-ray-client", w, "training-head", 10001, why="Ray Train and Tune through RAY_ADDRESS")
          for w in ("dagster-run", "dagster-step")),
        *(Flow(f"{w}-mlflow", w, "mlflow", 5000, why="runs, the registry, models")
          for w in MLFLOW_CLIENTS),
        *(Flow(f"{w}-qdrant", w, "qdrant", port, why="index builds and queries")
          for w in QDRANT_CLIENTS for port in (6333, 6334)),
        *(Flow(f"{c}-worker-to-head", f"{c}-worker", f"{c}-head", 6379, why="Ray's GCS")
          for c in ("serving", "training")),
        *(Flow(f"{c}-head-to-worker", f"{c}-head", f"{c}-worker", 10002, why="Ray's worker ports")
          for c in ("serving", "training")),
        *(Flow(f"{c}-worker-to-worker", f"{c}-worker", f"{c}-worker", 10002, why="object transfers, DDP")
          for c in ("serving", "training")),
        Flow("kuberay-serve-status", "kuberay-operator", "serving-head", 8265, why="serveConfigV2, Serve status"),
        Flow("kuberay-proxy-health", "kuberay-operator", "serving-head", 8000, why="the head joins the serve Service"),
        Flow("kuberay-training-dashboard", "kuberay-operator", "training-head", 8265, why="the cluster's status"),
        *(Flow(f"{source}-to-{w}", source, w, 8000, why="the public API and its health check")
          for source in ("google-load-balancer", "google-health-checker") for w in ("serving-head", "serving-worker")),
        *(Flow(f"{w}-dagster-postgres", w, "cloud-sql", 5432, why="the Dagster instance")
          for w in ("dagster-code-server", "dagster-run", "dagster-step", "dagster-webserver", "dagster-daemon",
                    "recsys-pipeline-exporter")),
        *(Flow(f"gmp-scrapes-{w}", "gmp-collector", w, 8080, why="Ray's metrics export (PodMonitoring recsys-serving)")
          for w in ("serving-head", "serving-worker")),
        Flow("gmp-scrapes-pipeline-exporter", "gmp-collector", "recsys-pipeline-exporter", 9108,
             why="the pipeline's metrics (PodMonitoring recsys-pipeline)"),
        Flow("run-failure-alert", "dagster-code-server", "gmp-alertmanager", 9093,
             why="the run-failure sensor posts to Alertmanager (RECSYS_ALERTMANAGER_URL)"),
        Flow("pipeline-exporter-redis", "recsys-pipeline-exporter", "memorystore", redis_port,
             why="the served release, for the freshness lag"),
        Flow("mlflow-cloud-sql-proxy", "mlflow", "cloud-sql", 3307, why="the Auth Proxy's port on the instance"),
        *(Flow(f"{w}-redis", w, "memorystore", redis_port, why="Feast online store, serving store")
          for w in ("dagster-step", "dagster-code-server", "serving-head", "serving-worker")),
        *(Flow(f"{w}-dns", w, "kube-dns", 53, "UDP", why="cluster DNS") for w in ours),
        *(Flow(f"{w}-metadata-server", w, "metadata-server", 80, why="workload identity tokens") for w in ours),
        *(Flow(f"{w}-google-apis", w, "google-apis", 443, why="BigQuery, GCS") for w in ours),
    ]
    return needed

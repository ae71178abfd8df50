"""What the deployment exposes, and to whom (issue 33, "safe defaults"):

* the public Ingress serves HTTPS (a ManagedCertificate for every host it routes, or `spec.tls`) and plain HTTP
  serves no API (a FrontendConfig redirecting to HTTPS, or `kubernetes.io/ingress.allow-http: "false"`);
* it routes the read API and the demo page, and neither `/metrics` nor a write path (a route that asks for
  the bearer token): the paths come from the app itself, matched the way GKE matches Ingress paths (Exact,
  Prefix, ImplementationSpecific `/*`, and a defaultBackend for everything else);
* MLflow and Qdrant are reached by the pods that use them and by nothing else (flows.outsider_flows, evaluated
  against the NetworkPolicies like the needed flows), and no Service or Ingress takes them outside the cluster;
* Qdrant requires an API key from a Secret, and every pod that reads RECSYS_QDRANT_URL gets
  RECSYS_QDRANT_API_KEY from that same Secret and key.
"""

from __future__ import annotations

from types import SimpleNamespace

CERTIFICATES_ANNOTATION = "networking.gke.io/managed-certificates"
FRONTEND_CONFIG_ANNOTATION = "networking.gke.io/v1beta1.FrontendConfig"
ALLOW_HTTP_ANNOTATION = "kubernetes.io/ingress.allow-http"
METRICS_PATH = "/metrics"
PROBES = {"/healthz", "/readyz"}  # the load balancer's health check reaches the pods directly (NEGs)
QDRANT_KEY_VARIABLE = "QDRANT__SERVICE__API_KEY"  # Qdrant's config service.api_key, from the environment
CLIENT_KEY_VARIABLE = "RECSYS_QDRANT_API_KEY"


def _ingresses(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "Ingress"
            and (o["metadata"].get("annotations") or {}).get("kubernetes.io/ingress.class") == "gce"]


def _named(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def tls_errors(objects: list[dict], api_domain: str) -> list[str]:
    """Each external Ingress serves HTTPS for every host it routes, and plain HTTP serves no API."""
    errors = []
    certificates, frontends = _named(objects, "ManagedCertificate"), _named(objects, "FrontendConfig")
    for ingress in _ingresses(objects):
        name, annotations = ingress["metadata"]["name"], ingress["metadata"].get("annotations") or {}
        covered: set[str] = set()
        for cert in filter(None, (c.strip() for c in annotations.get(CERTIFICATES_ANNOTATION, "").split(","))):
            if cert not in certificates:
                errors.append(f"Ingress {name}: ManagedCertificate {cert} is not among the manifests")
            else:
                covered |= set(certificates[cert]["spec"].get("domains") or [])
        for tls in ingress["spec"].get("tls") or []:
            if tls.get("secretName"):
                covered |= set(tls.get("hosts") or [])
        if not covered:
            errors.append(f"Ingress {name}: no TLS: neither a `{CERTIFICATES_ANNOTATION}` ManagedCertificate nor "
                          "spec.tls: the API would be served over plain HTTP only")
        hosts = [rule.get("host") for rule in ingress["spec"].get("rules") or []]
        for host in hosts:
            if host is None:
                errors.append(f"Ingress {name}: a rule without a host: requests for any name (the bare address) are "
                              "routed, and no certificate is for them")
            elif covered and host not in covered:
                errors.append(f"Ingress {name}: host {host} has no certificate (certificates for {sorted(covered)})")
        if api_domain not in hosts:
            errors.append(f"Ingress {name}: routes no rule for {api_domain} (Terraform's api_domain)")
        if str(annotations.get(ALLOW_HTTP_ANNOTATION, "true")).lower() == "false":
            continue
        frontend = annotations.get(FRONTEND_CONFIG_ANNOTATION)
        redirect = ((frontends.get(frontend) or {}).get("spec") or {}).get("redirectToHttps") or {}
        if frontend and frontend not in frontends:
            errors.append(f"Ingress {name}: FrontendConfig {frontend} is not among the manifests")
        elif redirect.get("enabled") is not True:
            errors.append(f"Ingress {name}: plain HTTP serves the API: set `{ALLOW_HTTP_ANNOTATION}: \"false\"` or a "
                          f"FrontendConfig (`{FRONTEND_CONFIG_ANNOTATION}`) with redirectToHttps.enabled: true")
    return errors


def app_routes() -> list[tuple[str, set[str], bool]]:
    """(path, methods, private) of every API route of the serving app as `create_app` builds it; private:
    `/metrics` and every route that asks for the bearer token (a write)."""
    from fastapi.routing import APIRoute

    from recsys_assets.serving.app import create_app
    from recsys_assets.serving.routes.interactions import bearer

    def calls(dependant) -> set:
        return {dependant.call} | {c for d in dependant.dependencies for c in calls(d)}

    def walk(routes, prefix: str = "", dependencies=()):
        for route in routes:
            if isinstance(route, APIRoute):
                yield prefix + route.path, route, dependencies
            elif hasattr(route, "original_router"):  # FastAPI >= 0.16x keeps included routers whole
                context = route.include_context
                yield from walk(route.original_router.routes, prefix + context.prefix,
                                (*dependencies, *(d.dependency for d in context.dependencies)))

    app = create_app(SimpleNamespace(telemetry=None))  # routes only: no request is served
    found = [(path, set(route.methods), path == METRICS_PATH or bearer in calls(route.dependant)
              or bearer in included) for path, route, included in walk(app.routes)]
    if not any(private for *_, private in found) or not any(not private for *_, private in found):
        raise RuntimeError(f"the serving app's routes were not found ({found}): the public-route check needs them")
    return found


def _matches(rule_path: str, path_type: str, path: str) -> bool:
    """GKE's Ingress path matching (Exact; Prefix element-wise; ImplementationSpecific: `/x/*` a prefix, else
    exact)."""
    if path_type == "Exact":
        return path == rule_path
    if path_type == "Prefix":
        prefix = rule_path.rstrip("/")
        return prefix == "" or path == prefix or path.startswith(prefix + "/")
    if rule_path.endswith("/*"):
        return path.startswith(rule_path[:-1]) or path == rule_path[:-2]
    return path == rule_path


def routed_backend(spec: dict, host: str, path: str) -> str | None:
    """The Service a request for host and path goes to (None: the load balancer's own 404)."""
    for rule in spec.get("rules") or []:
        if rule.get("host") not in (None, host):
            continue
        for candidate in (rule.get("http") or {}).get("paths") or []:
            if _matches(candidate.get("path", "/"), candidate.get("pathType", "ImplementationSpecific"), path):
                return candidate["backend"]["service"]["name"]
    default = spec.get("defaultBackend")
    return default["service"]["name"] if default else None


def route_errors(objects: list[dict], routes: list[tuple[str, set[str], bool]], api_domain: str) -> list[str]:
    """No public route to `/metrics` or a write path; the read API and the demo page are routed."""
    errors = []
    serving = {o["metadata"]["name"] + "-serve-svc" for o in objects if o["kind"] == "RayService"}
    for ingress in _ingresses(objects):
        name, spec = ingress["metadata"]["name"], ingress["spec"]
        hosts = {rule.get("host") or api_domain for rule in spec.get("rules") or []} | {api_domain, "203.0.113.1"}
        for path, methods, private in routes:
            reached = {routed_backend(spec, host, path) for host in hosts} & serving
            if private and reached:
                what = "Prometheus metrics" if path == METRICS_PATH else f"a write ({', '.join(sorted(methods))})"
                errors.append(f"Ingress {name}: routes {path} ({what}) to the public: it must stay in the cluster "
                              "(GKE's Ingress cannot filter by method, so the path must not be routed at all)")
            elif not private and path not in PROBES and routed_backend(spec, api_domain, path) not in serving:
                errors.append(f"Ingress {name}: does not route {path} ({', '.join(sorted(methods))}), part of the "
                              "public read API or the demo page")
    return errors


def store_exposure_errors(objects: list[dict], stores: set[str] = frozenset({"mlflow", "qdrant"})) -> list[str]:
    """No Service takes MLflow or Qdrant outside the cluster, and no Ingress routes to them."""
    errors = []
    for obj in objects:
        if obj["kind"] == "Service":
            selector = (obj["spec"].get("selector") or {}).get("app.kubernetes.io/name")
            kind = obj["spec"].get("type", "ClusterIP")
            if selector in stores and kind != "ClusterIP":
                errors.append(f"Service {obj['metadata']['name']}: type {kind} exposes {selector} outside the "
                              "cluster; only our pods may reach it")
        if obj["kind"] == "Ingress":
            spec = obj["spec"]
            names = {(spec.get("defaultBackend") or {}).get("service", {}).get("name")} | {
                p["backend"]["service"]["name"] for r in spec.get("rules") or []
                for p in (r.get("http") or {}).get("paths") or []}
            services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
            for service in sorted(n for n in names if n in services):
                selector = (services[service]["spec"].get("selector") or {}).get("app.kubernetes.io/name")
                if selector in stores:
                    errors.append(f"Ingress {obj['metadata']['name']}: routes to {service} ({selector}), which only "
                                  "our pods may reach")
    return errors


def _variable_sources(container: dict, config_maps: dict[str, dict], created: dict[str, dict]
                      ) -> dict[str, tuple]:
    """{variable: where its value comes from} for a container: ("value",), ("configMap", name),
    ("secret", name, key); `env` wins over `envFrom`, as in Kubernetes."""
    found: dict[str, tuple] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            for key in config_maps.get(source["configMapRef"]["name"], {}):
                found[prefix + key] = ("configMap", source["configMapRef"]["name"])
        if "secretRef" in source:
            for key in created.get(source["secretRef"]["name"], {}):
                found[prefix + key] = ("secret", source["secretRef"]["name"], key)
    for variable in container.get("env") or []:
        ref = (variable.get("valueFrom") or {}).get("secretKeyRef")
        found[variable["name"]] = ("secret", ref["name"], ref["key"]) if ref else ("value",)
    return found


def qdrant_key_errors(objects: list[dict], pods: dict[str, dict], created: dict[str, dict]) -> list[str]:
    """Qdrant takes its API key from a Secret `render.py secrets` creates; every pod reading RECSYS_QDRANT_URL
    gets RECSYS_QDRANT_API_KEY from the same Secret and key."""
    config_maps = {o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}
    errors, server_key = [], None
    for where, template in pods.items():
        for container in template["spec"].get("containers", []):
            if not container.get("image", "").startswith("qdrant/qdrant:"):
                continue
            source = _variable_sources(container, config_maps, created).get(QDRANT_KEY_VARIABLE)
            if source is None:
                errors.append(f"{where}: Qdrant runs without {QDRANT_KEY_VARIABLE}: any pod that reaches it reads "
                              "and writes every collection")
            elif source[0] != "secret":
                errors.append(f"{where}: {QDRANT_KEY_VARIABLE} is not read from a Secret (a key written in a "
                              "manifest or a ConfigMap is no secret)")
            elif not (created.get(source[1]) or {}).get(source[2]):
                errors.append(f"{where}: {QDRANT_KEY_VARIABLE} reads key {source[2]!r} of Secret {source[1]}, which "
                              "`deploy/render.py secrets` does not fill")
            else:
                server_key = source[1:]
    if server_key is None:
        return errors or ["no Qdrant server with an API key among the manifests"]
    for where, template in pods.items():
        for container in template["spec"].get("containers", []):
            sources = _variable_sources(container, config_maps, created)
            if "RECSYS_QDRANT_URL" not in sources:
                continue
            source = sources.get(CLIENT_KEY_VARIABLE)
            if source is None:
                errors.append(f"{where}: reads RECSYS_QDRANT_URL but gets no {CLIENT_KEY_VARIABLE}: Qdrant refuses it")
            elif source[1:] != server_key:
                errors.append(f"{where}: {CLIENT_KEY_VARIABLE} from {source}, the server's key is Secret "
                              f"{server_key[0]}, key {server_key[1]}")
    return errors

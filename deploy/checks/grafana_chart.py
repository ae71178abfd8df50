"""Grafana's Helm values (deploy/observability/grafana-values.yaml) offline, with no helm binary here, against the
chart's own default values (`grafana` chart of grafana/helm-charts, vendored: deploy/schemas/README.md):

* every key path the values set is one of the chart's defaults, with the same kind of value (map, list or
  scalar; and a boolean where the default is one, and only there: a quoted "false" is true to the chart's `if`),
  except below the free-form keys (`FREE_FORM_PATHS`, `FREE_FORM_NAMES`) and for the few keys the chart only
  shows in comments (`DOCUMENTED_IN_COMMENTS`); a list replaces the default list whole, so only the kind of
  its items is compared with the default's;
* each file under `datasources` is a Grafana data source provisioning file (apiVersion 1; each data source has
  a name and a type, `access` proxy or direct, an http(s) URL; at most one default per organisation; names and
  uids unique), as Grafana's `pkg/services/provisioning/datasources` reads it: an unknown field is an error
  (Grafana's YAML reading would drop it silently);
* the dashboard sidecar is on and finds every dashboard ConfigMap rendered for the cluster: their label
  (`sidecar.dashboards.label` = `labelValue`) in a namespace it searches (`searchNamespace`, else Grafana's own);
* the data source is Google Managed Prometheus' query frontend as the README says to deploy it (the `frontend`
  Service of prometheus-engine's examples/frontend.yaml, port 9090, in Grafana's namespace);
* the sidecar may read those ConfigMaps and nothing more: the chart's RBAC namespaced (its default, a ClusterRole
  on every ConfigMap and Secret of the cluster, would let Grafana read every Secret), the sidecar watching
  ConfigMaps only, and in each namespace it searches besides Grafana's own a Role granting ConfigMaps' get,
  list and watch bound to Grafana's ServiceAccount (the chart's name for the release, or `serviceAccount.name`);
* the helm command in the file's header installs the vendored chart version, in the namespace checked here.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
REPO = DEPLOY.parent
GRAFANA_CHART = "10.5.11"  # the chart version the header's `helm upgrade --install ... --version` pins
CHART_VALUES = DEPLOY / "schemas" / f"grafana-{GRAFANA_CHART}" / "values.yaml"
VALUES = DEPLOY / "observability" / "grafana-values.yaml"
README = REPO / "README.md"

# Google Managed Prometheus' query frontend as Google's "Query using Grafana" guide deploys it: the Service of
# examples/frontend.yaml in github.com/GoogleCloudPlatform/prometheus-engine (`frontend`, port `web` 9090),
# applied in Grafana's namespace.
FRONTEND_SERVICE, FRONTEND_PORT = "frontend", 9090

# Maps whose content is not the chart's to know (their default is empty, or an example, and is meant to be
# filled; the chart copies them as they are): no key below them is compared with the defaults.
FREE_FORM_PATHS = {
    # Grafana provisioning files, one entry per file name ("datasources.yaml": ...), written out as they are
    # (values.yaml: "ref: http://docs.grafana.org/administration/provisioning/#datasources", "#dashboards", ...);
    # `datasources` is checked as Grafana reads it, by datasource_errors below.
    "datasources", "alerting", "notifiers", "dashboardProviders",
    # dashboards per provider name, and ConfigMap names per provider name
    "dashboards", "dashboardsConfigMaps",
    # Grafana's own configuration, sections and keys: "values in map will be converted to ini format"
    "grafana.ini",
    # environment variables rendered into a Secret, by name
    "envRenderSecret",
}
# Wherever they sit: Kubernetes fields the chart passes through with toYaml (labels, annotations, resources,
# selectors, probes, security contexts, PodDisruptionBudget and HPA behaviour, lifecycle hooks, DNS config,
# a Deployment strategy) and environment variables by name: their keys are Kubernetes' or ours, not the chart's.
FREE_FORM_NAMES = {
    "labels", "annotations", "extraLabels", "extraPvcLabels", "resources", "nodeSelector", "affinity",
    "securityContext", "containerSecurityContext", "readinessProbe", "livenessProbe", "podDisruptionBudget",
    "behavior", "lifecycleHooks", "dnsConfig", "deploymentStrategy", "explicitNamespacesSelector", "tlsConfig",
    "basicAuth", "env", "envValueFrom",
}
# Keys the chart's values.yaml shows only as comments (so not among the parsed defaults) and its templates
# read (`.Values.<key>` in charts/grafana/templates at the vendored version).
DOCUMENTED_IN_COMMENTS = {
    "adminPassword", "annotations", "podAnnotations", "podLabels", "configMapAnnotations", "priorityClassName",
    "schedulerName", "command", "args", "serviceAccount.annotations", "ingress.ingressClassName",
    "persistence.storageClassName", "persistence.existingClaim", "persistence.annotations", "persistence.subPath",
    "persistence.selectorLabels", "persistence.inMemory.sizeLimit", "sidecar.logLevel", "sidecar.skipTlsVerify",
    *(f"sidecar.dashboards.{key}" for key in (
        "logLevel", "ignoreAlreadyProcessed", "restartPolicy", "startupProbe", "watchServerTimeout",
        "watchClientTimeout", "maxTotalRetries", "maxConnectRetries", "maxReadRetries")),
}

# Grafana's data source provisioning file, version 1: the YAML fields of configsV1 and
# upsertDataSourceFromConfigV1 in grafana/grafana's pkg/services/provisioning/datasources/types.go.
PROVISIONING_KEYS = {"apiVersion", "datasources", "deleteDatasources"}
DATASOURCE_KEYS = {"orgId", "orgName", "version", "name", "type", "access", "url", "user", "database", "basicAuth",
                   "basicAuthUser", "withCredentials", "isDefault", "correlations", "jsonData", "secureJsonData",
                   "editable", "uid"}


@functools.cache
def chart_defaults() -> dict:
    if not CHART_VALUES.exists():
        raise FileNotFoundError(f"{CHART_VALUES} is missing: the Grafana chart's default values "
                                "(deploy/schemas/README.md)")
    return yaml.safe_load(CHART_VALUES.read_text())


def _kind(value) -> str:
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    return "scalar"  # a string or a number: the chart prints either the same way


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _did_you_mean(key, choices, where: tuple[str, ...] = ()) -> str:
    near = difflib.get_close_matches(str(key), sorted(map(str, choices)), n=1)
    return f" (did you mean {'.'.join((*where, near[0]))}?)" if near else ""


def _free_form(path: tuple[str, ...]) -> bool:
    return ".".join(path) in FREE_FORM_PATHS or path[-1] in FREE_FORM_NAMES


def key_errors(values: dict, defaults: dict | None = None, where: tuple[str, ...] = ()) -> list[str]:
    """Each key path of `values` against the chart's defaults: it exists there, with a value of the same kind."""
    defaults = chart_defaults() if defaults is None else defaults
    errors = []
    for key, value in values.items():
        path = (*where, str(key))
        shown = ".".join(path)
        if key not in defaults:
            if shown in DOCUMENTED_IN_COMMENTS:
                continue
            errors.append(f"{shown}: not a key of the grafana chart {GRAFANA_CHART}'s values"
                          + _did_you_mean(key, defaults, where))
            continue
        default = defaults[key]
        if value is None or default is None:  # null: Helm drops the key; a null default says nothing of a type
            continue
        if _kind(value) != _kind(default):
            errors.append(f"{shown}: a {_kind(value)} ({_short(value)}) where the chart has a {_kind(default)} "
                          f"({_short(default)} by default)")
        elif isinstance(value, dict) and not _free_form(path):
            errors += key_errors(value, default, path)
        elif isinstance(value, list) and default:
            kinds = {_kind(item) for item in default}
            errors += [f"{shown}[{n}]: a {_kind(item)} where the chart's items are {' or '.join(sorted(kinds))}"
                       for n, item in enumerate(value) if item is not None and _kind(item) not in kinds]
    return errors


def _provisioning_file(content):
    """A `datasources` entry is the file itself, or `{secret: file}` (the chart then writes it into a Secret)."""
    return content["secret"] if isinstance(content, dict) and "secret" in content else content


def datasource_errors(values: dict) -> list[str]:
    """The `datasources` files as Grafana's data source provisioning reads them (and refuses them)."""
    errors: list[str] = []
    files = values.get("datasources") or {}
    if not isinstance(files, dict):
        return []  # key_errors says it: a map of file names is expected
    defaults: Counter = Counter()
    names: Counter = Counter()
    uids: Counter = Counter()
    for file_name, content in files.items():
        where = f"datasources.{file_name}"
        if not re.search(r"\.ya?ml$", str(file_name)):
            errors.append(f"{where}: Grafana reads only *.yaml and *.yml provisioning files")
        content = _provisioning_file(content)
        if not isinstance(content, dict):
            errors.append(f"{where}: a provisioning file (apiVersion, datasources) expected, got {_short(content)}")
            continue
        if content.get("apiVersion") != 1:
            errors.append(f"{where}.apiVersion: {content.get('apiVersion')!r}, Grafana's provisioning files are "
                          "apiVersion 1")
        errors += [f"{where}.{key}: not a field of a data source provisioning file "
                   f"({', '.join(sorted(PROVISIONING_KEYS))})" for key in content if key not in PROVISIONING_KEYS]
        sources = content.get("datasources") or []
        if not isinstance(sources, list):
            errors.append(f"{where}.datasources: a list of data sources expected")
            continue
        for n, source in enumerate(sources):
            at = f"{where}.datasources[{n}]"
            if not isinstance(source, dict):
                errors.append(f"{at}: a data source (name, type, url, ...) expected")
                continue
            errors += [f"{at}.{key}: not a field of a provisioned data source" + _did_you_mean(key, DATASOURCE_KEYS)
                       for key in source if key not in DATASOURCE_KEYS]
            for field in ("name", "type"):
                if not isinstance(source.get(field), str) or not source.get(field):
                    errors.append(f"{at}.{field}: missing (Grafana requires a data source's {field})")
            # Grafana takes a missing access as proxy, and any other value too, with only a warning in its log.
            if "access" in source and source["access"] not in ("proxy", "direct"):
                errors.append(f"{at}.access: {source['access']!r}, not proxy or direct")
            url = source.get("url")
            if url is not None and "{{" not in str(url):  # a templated URL is only known once Helm renders it
                parts = urlsplit(str(url))
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    errors.append(f"{at}.url: {url!r} is not an http(s) URL")
            if "isDefault" in source and not isinstance(source["isDefault"], bool):
                errors.append(f"{at}.isDefault: {source['isDefault']!r}, true or false expected")
            org = source.get("orgId") or 1  # Grafana's default organisation
            if source.get("isDefault") is True:
                defaults[str(org)] += 1
            if isinstance(source.get("name"), str):
                names[(str(org), source["name"])] += 1
            if source.get("uid"):
                uids[str(source["uid"])] += 1
    errors += [f"datasources: {count} data sources marked isDefault in organisation {org}: Grafana refuses more "
               "than one" for org, count in defaults.items() if count > 1]
    errors += [f"datasources: the name {name!r} is used {count} times in organisation {org} (the later one "
               "overwrites the earlier)" for (org, name), count in names.items() if count > 1]
    errors += [f"datasources: the uid {uid!r} is used {count} times" for uid, count in uids.items() if count > 1]
    return errors


def _searched_namespaces(dashboards: dict, grafana_namespace: str) -> set[str] | None:
    """The namespaces the dashboard sidecar reads (None: all of them)."""
    search = dashboards.get("searchNamespace")
    if not search:
        return {grafana_namespace}
    found = {search} if isinstance(search, str) else set(search)
    found = {n.strip() for item in found for n in str(item).split(",")}  # the chart joins a list with ","
    return None if "ALL" in found else found


def sidecar_errors(values: dict, objects: list[dict], grafana_namespace: str,
                   dashboard_files: set[str] | None = None) -> list[str]:
    """The dashboard sidecar is on and loads every dashboard ConfigMap rendered for the cluster: those holding
    one of `dashboard_files` (default: any *.json)."""
    sidecar = values.get("sidecar") or {}
    dashboards = sidecar.get("dashboards") if isinstance(sidecar, dict) else None
    if dashboards is not None and not isinstance(dashboards, dict):
        return []  # key_errors says it
    dashboards = dashboards or {}
    defaults = chart_defaults()["sidecar"]["dashboards"]
    if dashboards.get("enabled") is not True:
        return ["sidecar.dashboards.enabled: not true, so no dashboard ConfigMap is loaded"]
    label = dashboards.get("label", defaults["label"])
    label_value = dashboards.get("labelValue", defaults["labelValue"])
    if not isinstance(label, str) or not isinstance(label_value, (str, int, float)) or isinstance(label_value, bool):
        return []  # a map, a list or a boolean there: key_errors says it
    if not label:
        return ["sidecar.dashboards.label: empty, a label name expected"]
    if not isinstance(label_value, str):
        return [f"sidecar.dashboards.labelValue: {label_value!r}, a string expected (Kubernetes label values "
                "are strings, and the chart passes it through tpl, which fails on a number)"]
    namespaces = _searched_namespaces(dashboards, grafana_namespace)
    config_maps = [o for o in objects if o.get("kind") == "ConfigMap" and any(
        name in dashboard_files if dashboard_files is not None else str(name).endswith(".json")
        for name in o.get("data") or {})]
    if not config_maps:
        return ["no dashboard ConfigMap rendered for the sidecar to load"]
    errors = []
    for config_map in config_maps:
        metadata = config_map["metadata"]
        name, namespace = metadata["name"], metadata.get("namespace", "default")
        labels = metadata.get("labels") or {}
        if label not in labels:
            errors.append(f"sidecar.dashboards.label: {label!r}, but ConfigMap {namespace}/{name} carries "
                          f"{sorted(labels)}: the sidecar would not load it")
        elif label_value and str(labels[label]) != label_value:
            errors.append(f"sidecar.dashboards.labelValue: {label_value!r}, but ConfigMap {namespace}/{name} has "
                          f"{label}={labels[label]!r}: the sidecar would not load it")
        if namespaces is not None and namespace not in namespaces:
            errors.append(f"sidecar.dashboards.searchNamespace: {dashboards.get('searchNamespace')!r} (searches "
                          f"{sorted(namespaces)}), but ConfigMap {name} is in namespace {namespace!r}")
    return errors


def header_command(text: str) -> tuple[str | None, str | None, str | None]:
    """(namespace, chart version, release name) of the `helm upgrade --install` command in the values file's
    header."""
    header = "\n".join(line.lstrip("# ").rstrip("\\ ") for line in text.splitlines() if line.startswith("#"))
    command = re.search(r"helm upgrade --install .*?-f \S*grafana-values\.yaml", header, re.S)
    if not command:
        return None, None, None
    namespace = re.search(r"(?:-n|--namespace)[ =](\S+)", command.group(0))
    version = re.search(r"--version[ =](\S+)", command.group(0))
    release = re.match(r"helm upgrade --install (\S+)", command.group(0))
    return (namespace.group(1) if namespace else None), (version.group(1) if version else None), release.group(1)


def service_account(values: dict, release: str) -> str:
    """The ServiceAccount the chart's pods run as (`grafana.serviceAccountName`): `serviceAccount.name`, else,
    when the chart creates one, its `grafana.fullname` (`fullnameOverride`, else the release name when it
    contains the chart's name, `nameOverride` standing for it, else release-name; cut to 63 characters, one
    trailing "-" dropped), else `default`."""
    account = values.get("serviceAccount") if isinstance(values.get("serviceAccount"), dict) else {}
    if account.get("name"):
        return str(account["name"])
    if account.get("create") is False:
        return "default"
    if values.get("fullnameOverride"):
        full = str(values["fullnameOverride"])
    else:
        name = str(values.get("nameOverride") or "grafana")
        full = release if name in release else f"{release}-{name}"
    return full[:63].removesuffix("-")


# Built-in ClusterRoles that grant ConfigMaps' get, list and watch (a RoleBinding may bind one in a namespace).
CONFIG_MAP_READING_CLUSTER_ROLES = {"view", "edit", "admin", "cluster-admin"}


def _grants_config_maps(role: dict) -> bool:
    """A rule of the Role lets one list and watch every ConfigMap (a rule limited to resourceNames cannot list)."""
    return any("" in (rule.get("apiGroups") or []) and {"configmaps", "*"} & set(rule.get("resources") or [])
               and not rule.get("resourceNames")
               and ({"get", "list", "watch"} <= set(rule.get("verbs") or []) or "*" in (rule.get("verbs") or []))
               for rule in role.get("rules") or [])


def access_errors(values: dict, objects: list[dict], grafana_namespace: str, release: str) -> list[str]:
    """The dashboard sidecar reads the ConfigMaps of the namespaces it searches, and no Secret beyond Grafana's
    namespace: namespaced RBAC, ConfigMaps only, a Role and RoleBinding for its ServiceAccount in each of them."""
    rbac = values.get("rbac") if isinstance(values.get("rbac"), dict) else {}
    dashboards = ((values.get("sidecar") or {}).get("dashboards") or {}) if isinstance(values.get("sidecar"),
                                                                                       dict) else {}
    if not isinstance(dashboards, dict) or rbac.get("create") is False:
        return []  # key_errors says it; without the chart's RBAC the operator grants access themselves
    errors = []
    if rbac.get("namespaced") is not True:
        errors.append("rbac.namespaced: not true, so the chart grants Grafana a ClusterRole on every ConfigMap and "
                      "Secret of the cluster (its sidecar's rule): set it, and grant the dashboards' namespace's "
                      "ConfigMaps with a Role there")
    if dashboards.get("resource", "both") != "configmap":
        errors.append(f"sidecar.dashboards.resource: {dashboards.get('resource', 'both')!r}: the sidecar would watch "
                      "Secrets too (it needs the dashboards' ConfigMaps only, and may read no Secret there): "
                      "'configmap'")
    namespaces = _searched_namespaces(dashboards, grafana_namespace)
    if rbac.get("namespaced") is not True or namespaces is None:
        return errors + (["sidecar.dashboards.searchNamespace: ALL needs the chart's ClusterRole: name the "
                          "dashboards' namespaces"] if namespaces is None else [])
    account = service_account(values, release)
    for namespace in sorted(namespaces - {grafana_namespace}):
        granting = {("Role", o["metadata"]["name"]) for o in objects if o.get("kind") == "Role"
                    and o["metadata"].get("namespace") == namespace and _grants_config_maps(o)}
        granting |= {("ClusterRole", o["metadata"]["name"]) for o in objects if o.get("kind") == "ClusterRole"
                     and _grants_config_maps(o)} | {("ClusterRole", n) for n in CONFIG_MAP_READING_CLUSTER_ROLES}
        bound = [o for o in objects if o.get("kind") == "RoleBinding" and o["metadata"].get("namespace") == namespace
                 and ((o.get("roleRef") or {}).get("kind"), (o.get("roleRef") or {}).get("name")) in granting
                 and any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                         and s.get("namespace") == grafana_namespace for s in o.get("subjects") or [])]
        if not bound:
            errors.append(f"sidecar.dashboards.searchNamespace: {namespace!r}, but no RoleBinding there binds a Role "
                          f"granting ConfigMaps' get, list and watch to Grafana's ServiceAccount "
                          f"{grafana_namespace}/{account}: the sidecar would be forbidden to list the dashboards")
    return errors


def frontend_errors(values: dict, grafana_namespace: str, readme: str) -> list[str]:
    """The Prometheus data source is the GMP query frontend that the README says to deploy."""
    files = values.get("datasources") if isinstance(values.get("datasources"), dict) else {}
    sources = []
    for file_name, content in files.items():
        content = _provisioning_file(content)
        listed = content.get("datasources") if isinstance(content, dict) else None
        sources += [(f"datasources.{file_name}", source) for source in (listed if isinstance(listed, list) else [])
                    if isinstance(source, dict) and source.get("type") == "prometheus"]
    if not sources:
        return ["datasources: no prometheus data source (Google Managed Prometheus' query frontend)"]
    service = f"{FRONTEND_SERVICE}.{grafana_namespace}.svc"
    wanted = f"http://{service}:{FRONTEND_PORT}"
    errors = []
    for where, source in sources:
        url = str(source.get("url", "")).rstrip("/")
        if url not in (wanted, f"http://{service}.cluster.local:{FRONTEND_PORT}"):
            errors.append(f"{where}: {source.get('name')!r} url {url!r}: GMP's query frontend is the Service "
                          f"{FRONTEND_SERVICE!r} port {FRONTEND_PORT} in Grafana's namespace "
                          f"{grafana_namespace!r}: {wanted}")
        elif url not in readme:
            errors.append(f"{where}: {source.get('name')!r} url {url!r}: README.md does not name it (it says where "
                          "the query frontend is deployed: keep both the same)")
    return errors


def errors(objects: list[dict], dashboard_files: set[str] | None = None, values_path: Path = VALUES,
           readme: str | None = None) -> list[str]:
    """Everything above for the values file, given the rendered objects (the dashboards' ConfigMaps, those
    holding one of `dashboard_files`)."""
    text = values_path.read_text()
    values = yaml.safe_load(text) or {}
    found = []
    namespace, version, release = header_command(text)
    if version != GRAFANA_CHART:
        found.append(f"header: the helm command installs chart version {version!r}, the vendored defaults are "
                     f"{GRAFANA_CHART} (--version {GRAFANA_CHART})")
    if not namespace:
        found.append("header: the helm command names no namespace (-n)")
    namespace = namespace or "default"
    readme = README.read_text() if readme is None else readme
    found += key_errors(values) + datasource_errors(values)
    found += sidecar_errors(values, objects, namespace, dashboard_files) + frontend_errors(values, namespace, readme)
    found += access_errors(values, objects, namespace, release or "grafana")
    return found

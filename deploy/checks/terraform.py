"""Terraform, without providers or a cloud: every reference resolves, every argument is one the pinned
provider knows, every API a resource calls is enabled before it.

The providers' argument tables (deploy/schemas/terraform-providers/) were taken from the providers' own
schema source at the pinned versions; `terraform validate` would need the provider binaries, which cannot be
downloaded here.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent
TERRAFORM = DEPLOY / "terraform"
PROVIDER_SCHEMAS = DEPLOY / "schemas" / "terraform-providers"
META_ARGUMENTS = {"count", "for_each", "depends_on", "lifecycle", "provider"}
# The API each resource type calls (google_project_service names). Types not listed here are an error:
# say which API a new type needs.
API_OF = {
    "google_artifact_registry_": "artifactregistry.googleapis.com",
    "google_bigquery_": "bigquery.googleapis.com",
    "google_compute_": "compute.googleapis.com",
    "google_container_": "container.googleapis.com",
    "google_iam_workload_identity_pool": "iam.googleapis.com",
    "google_project_iam_": "cloudresourcemanager.googleapis.com",
    "google_redis_": "redis.googleapis.com",
    "google_service_account": "iam.googleapis.com",
    "google_service_networking_": "servicenetworking.googleapis.com",
    "google_sql_": "sqladmin.googleapis.com",
    "google_storage_": "storage.googleapis.com",
}
# On in every project (enabling any API needs them): listed, never waited for.
PREREQUISITE_APIS = {"cloudresourcemanager.googleapis.com", "serviceusage.googleapis.com"}
# What the workloads call at run time, beyond what Terraform creates: workload identity's tokens (iamcredentials,
# sts for the CI's federation), BigQuery and GCS from the pods.
RUNTIME_APIS = {"iamcredentials.googleapis.com", "sts.googleapis.com", "bigquery.googleapis.com",
                "storage.googleapis.com"}
NOT_AN_API = ("random_",)


def unquote(value):
    return value.strip('"') if isinstance(value, str) else value


@functools.cache
def parsed(folder: Path = TERRAFORM) -> dict[str, list]:
    """Every block of folder/*.tf, merged by block type (python-hcl2's shape)."""
    import hcl2

    merged: dict = {}
    for path in sorted(folder.glob("*.tf")):
        with path.open() as f:
            for kind, blocks in hcl2.load(f).items():
                merged.setdefault(kind, []).extend(blocks)
    return merged


def labelled(tf: dict, kind: str) -> dict[tuple[str, ...], dict]:
    """{(type, name): body} of every resource/data block, {(name,): body} of variables and outputs."""
    out = {}
    for block in tf.get(kind, []):
        for first, body in block.items():
            if kind in ("resource", "data"):
                for second, inner in body.items():
                    out[(unquote(first), unquote(second))] = inner
            else:
                out[(unquote(first),)] = body
    return out


def locals_defined(tf: dict) -> set[str]:
    return {name for block in tf.get("locals", []) for name in block if not name.startswith("__")}


@functools.cache
def provider_schemas(folder: Path = PROVIDER_SCHEMAS) -> dict[str, dict]:
    """{resource or data source type: its block schema}, across the vendored provider tables."""
    if not folder.exists() or not any(folder.glob("*.json")):
        raise FileNotFoundError(f"{folder} has no provider tables (deploy/schemas/terraform-providers/README.md)")
    found = {}
    for path in sorted(folder.glob("*.json")):
        table = json.loads(path.read_text())
        found.update({("resource", t): s for t, s in table.get("resources", {}).items()})
        found.update({("data", t): s for t, s in table.get("data_sources", {}).items()})
    return found


def pinned_providers(tf: dict) -> dict[str, str]:
    """{provider name: the exact version versions.tf pins}."""
    pins = {}
    for block in tf.get("terraform", []):
        for providers in block.get("required_providers", []):
            for name, spec in providers.items():
                if isinstance(spec, dict):
                    pins[name] = unquote(spec.get("version", "")).lstrip("= ").strip()
    return pins


def _strings(node) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if not key.startswith("__"):
                yield key
                yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def expressions(text: str) -> list[str]:
    """The expression parts of a parsed value: a `${...}` whole or each interpolation of a "quoted" one, with
    string literals inside them blanked (a domain name is not a reference)."""
    found, depth, start = [], 0, None
    for i, char in enumerate(text):
        if text.startswith("${", i) and depth == 0:
            start, depth = i + 2, 1
        elif start is not None and i >= start:
            depth += (char == "{") - (char == "}")
            if depth == 0:
                found.append(text[start:i])
                start = None
    return [re.sub(r'"(?:[^"\\]|\\.)*"', '""', e) for e in found]


REFERENCE = re.compile(r"(?<![\w.])(var|local|data\.[a-z0-9_]+|[a-z][a-z0-9]*_[a-z0-9_]+)\.([A-Za-z_][\w-]*)"
                       r"((?:\[[^\]]*\])?(?:\.[A-Za-z_][\w]*)?)")


def references(body) -> set[tuple[str, str, str]]:
    """(kind, name, attribute) of every reference in a block: kind var, local, data.<type> or a resource type."""
    refs = set()
    for text in _strings(body):
        for expression in expressions(text):
            for kind, name, rest in REFERENCE.findall(expression):
                attribute = rest.rsplit(".", 1)[1] if "." in rest else ""
                refs.add((kind, name, attribute))
    return refs


def _depends_on(body) -> set[tuple[str, str, str]]:
    """References in depends_on, with the instance key kept: google_project_service.api["x.googleapis.com"]."""
    out = set()
    for entry in body.get("depends_on", []) if isinstance(body, dict) else []:
        match = re.match(r'\$\{([a-z0-9_]+)\.([a-z0-9_-]+)(?:\["([^"]+)"\])?\}', entry)
        if match:
            out.add(match.groups(default=""))
    return out


def _api_references(body) -> set[str]:
    """The APIs a block names through google_project_service.api["..."] (depends_on or an expression)."""
    apis = {key for kind, _, key in _depends_on(body) if kind == "google_project_service"}
    for text in _strings(body):
        apis |= set(re.findall(r'google_project_service\.[a-z0-9_]+\[\\?"([^"\\]+)\\?"\]', text))
    return apis


def api_of(resource_type: str) -> str | None:
    if resource_type.startswith(NOT_AN_API) or resource_type == "google_project_service":
        return None
    for prefix, api in API_OF.items():
        if resource_type.startswith(prefix):
            return api
    raise KeyError(resource_type)


def reference_errors(tf: dict) -> list[str]:
    """var., local., data. and resource references that name nothing declared, or an attribute the
    provider's schema lacks."""
    variables = {name for (name,) in labelled(tf, "variable")}
    locals_ = locals_defined(tf)
    resources, data = labelled(tf, "resource"), labelled(tf, "data")
    schemas = provider_schemas()
    errors = []
    blocks = [(f"resource {t}.{n}", body) for (t, n), body in resources.items()]
    blocks += [(f"data {t}.{n}", body) for (t, n), body in data.items()]
    blocks += [(f"output {n}", body) for (n,), body in labelled(tf, "output").items()]
    blocks += [("locals", block) for block in tf.get("locals", [])]
    blocks += [("provider", block) for block in tf.get("provider", [])]
    for where, body in blocks:
        for kind, name, attribute in sorted(references(body)):
            if kind == "var" and name not in variables:
                errors.append(f"{where}: var.{name} is not a declared variable")
            elif kind == "local" and name not in locals_:
                errors.append(f"{where}: local.{name} is defined in no locals block")
            elif kind.startswith("data."):
                if (kind[5:], name) not in data:
                    errors.append(f"{where}: {kind}.{name} is not a declared data source")
                elif attribute and not _has_attribute(schemas.get(("data", kind[5:])), attribute):
                    errors.append(f"{where}: {kind}.{name}.{attribute}: the provider's {kind[5:]} has no such "
                                  "attribute")
            elif kind not in ("var", "local") and kind.startswith(("google_", "random_")):
                if (kind, name) not in resources:
                    errors.append(f"{where}: {kind}.{name} is not a declared resource")
                elif attribute and not _has_attribute(schemas.get(("resource", kind)), attribute):
                    errors.append(f"{where}: {kind}.{name}.{attribute}: the provider's {kind} has no such attribute")
    return errors


def _has_attribute(schema: dict | None, attribute: str) -> bool:
    if schema is None:
        return True  # the type itself is reported by argument_errors
    return attribute in {*schema.get("arguments", []), *schema.get("attributes", []), *schema.get("blocks", {})}


def argument_errors(tf: dict) -> list[str]:
    """Arguments and nested blocks the pinned provider does not define, and types it has no table for."""
    schemas, errors = provider_schemas(), []
    for kind in ("resource", "data"):
        for (type_, name), body in labelled(tf, kind).items():
            schema = schemas.get((kind, type_))
            if schema is None:
                errors.append(f"{kind} {type_}.{name}: {type_} is in no provider table under "
                              "deploy/schemas/terraform-providers (add the provider's schema for it)")
                continue
            errors += _block_errors(schema, body, f"{kind} {type_}.{name}")
    return errors


def _block_errors(schema: dict, body: dict, where: str, top: bool = True) -> list[str]:
    errors = []
    settable = set(schema.get("arguments", []))
    blocks = schema.get("blocks", {})
    for key, value in body.items():
        if key.startswith("__") or (top and key in META_ARGUMENTS):
            continue
        is_block = isinstance(value, list) and value and all(isinstance(v, dict) and v.get("__is_block__")
                                                             for v in value)
        if is_block:
            if key not in blocks:
                hint = " (an argument, written `=`)" if key in settable else ""
                errors.append(f"{where}: block {key} is not defined by the provider{hint}")
                continue
            for n, inner in enumerate(value):
                errors += _block_errors(blocks[key], inner, f"{where}.{key}", top=False)
        elif key not in settable:
            hint = " (a block, written without `=`)" if key in blocks else \
                " (read-only: the provider computes it)" if key in schema.get("attributes", []) else ""
            errors.append(f"{where}: argument {key} is not defined by the provider{hint}")
    return errors


def api_errors(tf: dict) -> list[str]:
    """Every resource's API enabled (local.apis) and waited for: the resource names google_project_service
    for it in depends_on, or references a resource that does."""
    enabled = _enabled_apis(tf)
    resources = labelled(tf, "resource")
    errors = [f"API {api} is used at run time but not enabled in apis.tf" for api in sorted(RUNTIME_APIS - enabled)]
    waits = {key: _api_references(body) for key, body in resources.items()}
    graph = {key: {(kind, name) for kind, name, _ in references(body) if (kind, name) in resources}
             | {(kind, name) for kind, name, _ in _depends_on(body) if (kind, name) in resources}
             for key, body in resources.items()}

    @functools.cache
    def waited(key: tuple[str, str]) -> frozenset[str]:
        found = set(waits[key])
        for other in graph[key] - {key}:
            found |= waited(other)
        return frozenset(found)

    for (type_, name) in sorted(resources):
        try:
            api = api_of(type_)
        except KeyError:
            errors.append(f"resource {type_}.{name}: which API does {type_} call? (deploy/checks/terraform.py API_OF)")
            continue
        if api is None:
            continue
        if api not in enabled:
            errors.append(f"resource {type_}.{name}: API {api} is not enabled in apis.tf (local.apis)")
        elif api not in PREREQUISITE_APIS and api not in waited((type_, name)):
            errors.append(f"resource {type_}.{name}: does not wait for API {api} (depends_on "
                          f"google_project_service.api[\"{api}\"], directly or through a resource it uses)")
    return errors


def _enabled_apis(tf: dict) -> set[str]:
    for block in tf.get("locals", []):
        if "apis" in block:
            return set(re.findall(r'"([a-z0-9.-]+\.googleapis\.com)\\?"', str(block["apis"])))
    return set()


def provider_version_errors(tf: dict) -> list[str]:
    """The provider tables are of the versions versions.tf pins."""
    errors = []
    for name, version in pinned_providers(tf).items():
        if not (PROVIDER_SCHEMAS / f"{name}-{version}.json").exists():
            errors.append(f"provider {name} is pinned to {version}, but deploy/schemas/terraform-providers has no "
                          f"{name}-{version}.json: its arguments cannot be checked")
    return errors


def output_errors(tf: dict, used: set[str], example: set[str]) -> list[str]:
    """The outputs deploy/render.py reads are declared; the example outputs name exactly the declared ones."""
    declared = {name for (name,) in labelled(tf, "output")}
    errors = [f"output {name}: deploy/render.py reads it, outputs.tf does not declare it"
              for name in sorted(used - declared)]
    errors += [f"deploy/example/terraform-outputs.json lacks output {name}" for name in sorted(declared - example)]
    errors += [f"deploy/example/terraform-outputs.json has {name}, which outputs.tf does not declare"
               for name in sorted(example - declared)]
    return errors


def errors(tf: dict | None = None, used_outputs: set[str] | None = None, example_outputs: set[str] | None = None
           ) -> list[str]:
    tf = parsed() if tf is None else tf
    found = provider_version_errors(tf) + reference_errors(tf) + argument_errors(tf) + api_errors(tf)
    if used_outputs is not None and example_outputs is not None:
        found += output_errors(tf, used_outputs, example_outputs)
    return found


BROAD_ROLES = {"roles/owner", "roles/editor", "roles/storage.admin", "roles/storage.objectAdmin",
               "roles/bigquery.admin", "roles/container.admin", "roles/iam.serviceAccountAdmin"}


def platform_requirement_errors(tf: dict, uses_gcsfuse: bool) -> list[str]:
    """What the platform needs of these resources, beyond the provider's rules: a login for every database,
    node pools that run as our node account, the FUSE driver where pods mount buckets, Redis with AUTH and
    TLS, and no broad role granted."""
    resources = labelled(tf, "resource")
    errors = []
    databases = [body for (t, _), body in resources.items() if t == "google_sql_database"]
    users = [body for (t, _), body in resources.items() if t == "google_sql_user"]
    for database in databases:
        if not any(user.get("for_each") == database.get("for_each") and "password" in user for user in users):
            errors.append(f"google_sql_database for_each {database.get('for_each')}: no google_sql_user with a "
                          "password for each database (the Secrets carry one per login)")
    for (type_, name), body in resources.items():
        if type_ in ("google_container_node_pool", "google_container_cluster"):
            for node_config in body.get("node_config", []):
                account = str(node_config.get("service_account", ""))
                if "google_service_account." not in account:
                    errors.append(f"resource {type_}.{name}: node_config runs as the Compute Engine default "
                                  "account (no roles in organisations made since May 2024: image pulls fail); "
                                  "set service_account to our node account")
            if type_ == "google_container_node_pool" and not any(node.get("service_account") for node in
                                                                 body.get("node_config", [])):
                errors.append(f"resource {type_}.{name}: no node_config.service_account")
        if type_ == "google_container_cluster" and uses_gcsfuse:
            addons = (body.get("addons_config") or [{}])[0]
            fuse = (addons.get("gcs_fuse_csi_driver_config") or [{}])[0]
            if fuse.get("enabled") is not True:
                errors.append(f"resource {type_}.{name}: pods mount Cloud Storage FUSE volumes but "
                              "addons_config.gcs_fuse_csi_driver_config is not enabled (they would hang in "
                              "ContainerCreating)")
        if type_ == "google_redis_instance":
            if body.get("auth_enabled") is not True:
                errors.append(f"resource {type_}.{name}: auth_enabled is not true")
            if unquote(body.get("transit_encryption_mode")) != "SERVER_AUTHENTICATION":
                errors.append(f"resource {type_}.{name}: transit_encryption_mode is not SERVER_AUTHENTICATION "
                              "(AUTH strings would cross the VPC in clear)")
        role = unquote(body.get("role", ""))
        if role in BROAD_ROLES:
            errors.append(f"resource {type_}.{name}: grants {role}; grant the narrow role the workload needs")
    for block in tf.get("locals", []):
        for name, value in block.items():
            for role in sorted(BROAD_ROLES):
                if role in str(value):
                    errors.append(f"local.{name}: grants {role}; grant the narrow role the workload needs")
    return errors

"""The Dagster Helm values against the chart's own values.schema.json (vendored: deploy/schemas/README.md),
strictly: a key the chart does not define is refused, as `helm` would refuse it, with no helm binary here.

The chart's schema points its Kubernetes types at kubernetes-json-schema v1.19.0 on the internet; here they
resolve to the definitions of the Kubernetes version the cluster runs (kubernetes-validate's, strict).
`required` is judged only for list items: Helm merges our values over the chart's defaults, which hold the
other required keys, while a list we set replaces the default list whole.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .strict import strict

DEPLOY = Path(__file__).resolve().parent.parent
CHART_SCHEMA = DEPLOY / "schemas" / "dagster-master-2bdb2395" / "values.schema.json"
KUBERNETES_DEFINITIONS = ("https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/v1.19.0/"
                          "_definitions.json")


def _item_definitions(schema) -> set[str]:
    """The $defs that describe list items (`items: {$ref: #/$defs/X}`)."""
    found = set()
    if isinstance(schema, dict):
        items = schema.get("items")
        if isinstance(items, dict) and str(items.get("$ref", "")).startswith("#/$defs/"):
            found.add(items["$ref"].rsplit("/", 1)[1])
        for value in schema.values():
            found |= _item_definitions(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= _item_definitions(value)
    return found


def without_merged_requirements(schema: dict) -> dict:
    """`required` kept only where Helm does not merge the chart's defaults in: list items."""
    keep = _item_definitions(schema)

    def strip(node, keep_here: bool):
        if isinstance(node, dict):
            return {k: strip(v, keep_here) for k, v in node.items() if k != "required" or keep_here}
        if isinstance(node, list):
            return [strip(v, keep_here) for v in node]
        return node

    out = strip({k: v for k, v in schema.items() if k != "$defs"}, False)
    out["$defs"] = {name: strip(body, name in keep) for name, body in schema.get("$defs", {}).items()}
    return out


@functools.cache
def validator(kubernetes_version: str) -> Draft202012Validator:
    import kubernetes_validate.utils as kv

    if not CHART_SCHEMA.exists():
        raise FileNotFoundError(f"{CHART_SCHEMA} is missing: the Dagster chart's values schema "
                                "(deploy/schemas/README.md)")
    version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(kubernetes_version)][-1]
    definitions = kv.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json",
                                     kubernetes_version)
    # The chart points at `#/definitions/...`, kubernetes-validate's file keeps them under `$defs`.
    contents = {"definitions": definitions["$defs"], "$defs": definitions["$defs"]}
    registry = Registry().with_resource(KUBERNETES_DEFINITIONS, Resource.from_contents(
        contents, default_specification=DRAFT202012))
    return Draft202012Validator(strict(without_merged_requirements(json.loads(CHART_SCHEMA.read_text()))),
                                registry=registry)


def errors(values: dict, kubernetes_version: str) -> list[str]:
    return sorted({f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
                   for error in validator(kubernetes_version).iter_errors(values) for e in _reasons(error)})


def _reasons(error) -> list:
    """An anyOf/oneOf error (a section or null) as the errors of the branch the value was meant for: the one
    whose failures are not a type mismatch; elsewhere the error itself."""
    if not error.context:
        return [error]
    branches: dict[int, list] = {}
    for inner in error.context:
        branches.setdefault(inner.relative_schema_path[0], []).append(inner)
    meant = [b for b in branches.values() if not all(e.validator == "type" and not e.path for e in b)]
    return [reason for inner in (meant[0] if meant else error.context) for reason in _reasons(inner)]

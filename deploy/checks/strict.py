"""JSON schemas made strict: an unknown key is an error, as the API server (or Helm) would make it."""

from __future__ import annotations


def strict(schema):
    """The schema with `additionalProperties: false` on every object schema that lists `properties`, does not
    preserve unknown fields and says nothing of additional properties itself."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema

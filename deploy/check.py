"""Offline checks of the GKE manifests under deploy/ (`make deploy-check`, part of `make test`), no cluster:

* KubeRay objects (RayService, RayCluster, RayJob) against the CRD schemas of the KubeRay version we pin
  (deploy/schemas/), made strict: a field the CRD does not define is an error, pod templates included;
* a RayService's serveConfigV2 through Ray Serve's own ServeDeploySchema, plus unknown keys (that schema
  lets them through), and each application's `import_path` imported and built from its `args`;
* `rayVersion` equal to the installed Ray (the image is built from the same lock);
* every RECSYS_* variable a manifest sets is one the code reads (a misspelled one would be ignored).

    python deploy/check.py [files...]     (default: every *.yaml under deploy/)
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import sys
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
KUBERAY_VERSION = "v1.7.0"
SCHEMAS = DEPLOY / "schemas" / f"kuberay-{KUBERAY_VERSION}"
KUBERAY_KINDS = {"RayService": "rayservice.json", "RayCluster": "raycluster.json", "RayJob": "rayjob.json"}


def strict(schema: dict) -> dict:
    """The schema with unknown fields refused: `additionalProperties: false` on every object that lists
    `properties`, does not preserve unknown fields and says nothing of additional properties itself."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def kuberay_validator(kind: str) -> Draft202012Validator:
    path = SCHEMAS / KUBERAY_KINDS[kind]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the KubeRay {KUBERAY_VERSION} CRD schemas (deploy/schemas/README.md)")
    return Draft202012Validator(strict(json.loads(path.read_text())))


def kuberay_errors(obj: dict) -> list[str]:
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in kuberay_validator(obj["kind"]).iter_errors(obj)]
    if obj.get("apiVersion") != "ray.io/v1":
        errors.append(f"apiVersion: {obj.get('apiVersion')!r}, the pinned CRDs serve ray.io/v1")
    return errors


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
            with tempfile.TemporaryDirectory() as home, _environment(RECSYS_HOME=home):
                built = target(app.get("args") or {}) if callable(target) and not isinstance(target, Application) \
                    else target
            if not isinstance(built, Application):
                errors.append(f"serveConfigV2 {app['name']}: {app['import_path']} built {type(built).__name__}, "
                              "not a Serve application")
        except Exception as exc:
            errors.append(f"serveConfigV2 {app['name']}: {app['import_path']} with args {app.get('args')}: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return errors


class _environment:
    def __init__(self, **values: str):
        self.values, self.saved = values, {}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@functools.cache
def variables_the_code_reads() -> frozenset[str]:
    """RECSYS_* names that appear in the code (what `Settings`, the resources and serving read)."""
    names = set()
    for path in (REPO / "recsys_assets").rglob("*.py"):
        names |= set(re.findall(r"\bRECSYS_[A-Z0-9_]+\b", path.read_text()))
    return frozenset(names)


def environment_errors(obj: dict) -> list[str]:
    """RECSYS_* variables a ConfigMap or a container sets that the code never reads."""
    names = set(obj.get("data", {})) if obj.get("kind") == "ConfigMap" else set()
    for container in _containers(obj):
        names |= {e["name"] for e in container.get("env", [])}
    return [f"{name}: set here, read nowhere in recsys_assets (misspelled?)"
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


def object_errors(obj: dict) -> list[str]:
    errors = environment_errors(obj)
    if obj.get("kind") in KUBERAY_KINDS:
        errors += kuberay_errors(obj) + ray_version_errors(obj)
        if obj["kind"] == "RayService" and "serveConfigV2" in obj.get("spec", {}):
            errors += serve_config_errors(obj["spec"]["serveConfigV2"])
    return errors


def check_files(paths: list[Path]) -> dict[str, list[str]]:
    """Errors per `file: kind/name`; empty when everything passes."""
    found: dict[str, list[str]] = {}
    for path in paths:
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            errors = object_errors(obj)
            if errors:
                name = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: " \
                       f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
                found[name] = errors
    return found


def manifests() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if "schemas" not in p.parts)


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv] or manifests()
    found = check_files(paths)
    for name, errors in found.items():
        print(f"FAIL {name}")
        for error in errors:
            print(f"  {error}")
    print(f"deploy-check: {len(paths)} file(s), " + ("all valid" if not found else f"{len(found)} object(s) invalid"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

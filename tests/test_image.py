"""The image's dependency step as the Dockerfile runs it (deploy/docker/install-dependencies.sh: uv export of
uv.lock, torch pointed at the variant), resolved on PyPI with the locked versions (a dry run; torch from PyPI's
index, PyTorch's being out of reach here), and holding what each workload imports at start."""

import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

from recsys_assets.settings import REPO_ROOT

DOCKER = REPO_ROOT / "deploy" / "docker"
sys.path.insert(0, str(DOCKER))
import requirements  # noqa: E402  (deploy/docker/requirements.py, the transform the image runs)

UV = REPO_ROOT / ".tools" / "bin" / "uv"
# What each workload imports as it starts (its entry point's modules), by the pods that run our image.
WORKLOAD_IMPORTS = {
    "dagster code server, run and step pods": ["dagster", "dagster_k8s", "dagster_postgres", "dagster_gcp",
                                               "dagster_dbt", "dagster_mlflow", "dbt.adapters.bigquery",
                                               "feast", "google.cloud.bigquery", "psycopg2"],
    "mlflow server (postgresql:// backend, gs:// artifacts)": ["mlflow.server", "psycopg2", "google.cloud.storage"],
    "serving (Ray Serve)": ["ray.serve", "fastapi", "uvicorn", "redis", "qdrant_client", "feast", "orjson"],
    "training (Ray Train and Tune)": ["ray.train", "ray.tune", "torch", "torchrec", "fbgemm_gpu", "mlflow"],
}


def _export() -> list[str]:
    out = subprocess.run([str(UV), "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--format",
                          "requirements-txt"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return out.stdout.splitlines(keepends=True)


def test_the_transform_points_torch_at_the_variant_as_uv_exports_it():
    lines = _export()
    assert any(re.match(r"^file://.*/torch-2\.13\.0\+cpu-.*\.whl", line) for line in lines)  # uv 0.13's bare line
    cpu, overrides = requirements.transform(lines, "cpu")
    assert "torch==2.13.0+cpu" in cpu and not any("file://" in line for line in cpu)
    assert overrides == ["fbgemm-gpu ; sys_platform == 'never'"]
    cuda, overrides = requirements.transform(lines, "cu128")
    assert "torch==2.13.0+cu128" in cuda and "fbgemm-gpu==1.8.0" in cuda
    assert not any(line.startswith("fbgemm-gpu-cpu") for line in cuda) and overrides == ["fbgemm-gpu==1.8.0"]
    assert "torch==2.13.0" in requirements.transform(lines, "pypi")[0]
    # the old form, `torch @ file://...`, is read the same; an export with no torch line fails the build
    assert "torch==2.13.0+cpu" in requirements.transform(["torch @ file:///w/torch-2.13.0%2Bcpu-cp311-x.whl\n"],
                                                         "cpu")[0]
    with pytest.raises(ValueError, match="no local torch wheel line"):
        requirements.transform(["numpy==2.4.6\n"], "cpu")


def test_the_dockerfile_runs_the_tested_script_and_the_context_admits_it():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert 'deploy/docker/install-dependencies.sh "${TORCH}"' in dockerfile
    # the code runs from /app beside dbt_project/ (settings.REPO_ROOT), never from a site-packages copy
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "PYTHONPATH=/app" in final and "WORKDIR /app" in final
    assert not any(line.startswith("RUN") and "install" in line and " ." in line for line in dockerfile.splitlines())
    assert "COPY deploy/docker/requirements.py deploy/docker/install-dependencies.sh ./deploy/docker/" in dockerfile
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[0].startswith("#") and "*" in ignore  # everything out unless named
    for needed in ("!deploy/docker/requirements.py", "!deploy/docker/install-dependencies.sh", "!uv.lock",
                   "!recsys_assets/", "!dbt_project/"):
        assert needed in ignore
    assert not any(line.strip() in ("!.venv", "!.venv/", "!var/") for line in ignore)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, str]:
    """{distribution: version} the image's dependency step would install (uv's dry run against PyPI)."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([str(UV), "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{UV.parent}:{os.environ['PATH']}"}
    out = subprocess.run([str(DOCKER / "install-dependencies.sh"), "pypi", "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    found = dict(re.findall(r"^ \+ ([A-Za-z0-9_.-]+)==(\S+)$", out.stdout + out.stderr, re.M))
    assert found, out.stderr[-2000:]
    return {name.lower().replace("_", "-"): version for name, version in found.items()}


def _locked() -> dict[str, str]:
    """{distribution: version} of the export's pins whose markers hold here (Linux, Python 3.11)."""
    from packaging.markers import Marker

    locked = {}
    for line in _export():
        pin = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)\s*(?:;\s*(.+))?$", line.strip())
        if pin and (pin.group(3) is None or Marker(pin.group(3)).evaluate()):
            locked[pin.group(1).lower().replace("_", "-")] = pin.group(2)
    return locked


def test_the_dependency_step_resolves_on_pypi_at_the_locked_versions(resolved):
    locked = _locked()
    for name, version in locked.items():
        assert resolved.get(name) == version, f"{name}: locked {version}, the image would install {resolved.get(name)}"
    assert resolved["torch"] == "2.13.0" and "fbgemm-gpu" not in resolved


def test_the_image_holds_what_every_workload_imports(resolved):
    """Each module's distribution (as this environment, built from the same lock, maps it) is in the image's
    set, and imports here; ray's `serve` extra comes whole."""
    by_module = importlib.metadata.packages_distributions()
    for workload, modules in WORKLOAD_IMPORTS.items():
        for module in modules:
            top = module.split(".")[0]
            distributions = {d.lower().replace("_", "-") for d in by_module.get(top, [])}
            assert distributions & set(resolved), f"{workload}: {module} ({distributions}) is not in the image"
    every = sorted({m for modules in WORKLOAD_IMPORTS.values() for m in modules})  # one fresh interpreter
    out = subprocess.run([sys.executable, "-c", "; ".join(f"import {m}" for m in every)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    serve_extra = [re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0].lower().replace("_", "-")
                   for r in importlib.metadata.requires("ray") if re.search(r"""extra == ["']serve["']""", r)]
    missing = [name for name in serve_extra if name not in resolved]
    assert serve_extra and not missing, f"ray[serve] needs {missing}"

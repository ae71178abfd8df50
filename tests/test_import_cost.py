"""Every run pays for importing the code location: its worker, the code server, each `dagster` command. Defining
the assets needs none of the training, feature-store, registry and index libraries; the assets, resources and
sensors import them when they run. Importing them at load took most of a run's ~20 s start."""

import ast
import os
import subprocess
import sys

# What the definitions must not import: Feast, torch (and torchrec), MLflow, Qdrant's client, Ray.
HEAVY = ("feast", "torch", "torchrec", "mlflow", "dagster_mlflow", "qdrant_client", "ray")
# Under gcp the executor is dagster-k8s (a step per Kubernetes Job); locally nothing needs Kubernetes' client.
KUBERNETES = ("dagster_k8s", "kubernetes")

LOAD = ("import sys; from dagster import Definitions; import recsys_assets.definitions as d; "
        "Definitions.validate_loadable(d.defs); "
        "print(sorted(m for m in {names!r} if m in sys.modules))")


def _imported(env: str, names: tuple[str, ...], tmp_path) -> list[str]:
    environment = {**os.environ, "RECSYS_ENV": env, "RECSYS_HOME": str(tmp_path), "RECSYS_GCP_PROJECT": "example-project",
                   "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json"), "NO_PROXY": "*"}
    out = subprocess.run([sys.executable, "-c", LOAD.format(names=names)], env=environment, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_loading_the_code_location_imports_no_heavy_library(tmp_path):
    assert _imported("local", HEAVY + KUBERNETES, tmp_path) == []


def test_the_gcp_code_location_imports_only_its_executor_beside(tmp_path):
    assert _imported("gcp", HEAVY + KUBERNETES, tmp_path) == sorted(KUBERNETES)

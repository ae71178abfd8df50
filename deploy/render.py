"""Render the GKE deployment from Terraform's outputs: the one input is deploy/terraform's `terraform.tfvars`.

The manifests under deploy/k8s, deploy/kuberay and deploy/dagster are templates whose `${NAME}` fields
(project, images, buckets, service accounts, the Cloud SQL address...) come from `terraform output -json`;
nothing project-specific is written in them. Why not envsubst or kustomize: envsubst writes an empty
string for a variable it lacks (a silent broken manifest) and would also eat Kubernetes' own `$(VAR)`;
kustomize cannot substitute inside strings such as the MLflow command line or a CSI volume's bucket.

    python deploy/render.py [--outputs FILE] [--tag TAG] [--out DIR]   manifests and Helm values -> DIR
    python deploy/render.py secrets [--outputs FILE]                     the Secrets, on stdout (for kubectl)

Without --outputs, `terraform -chdir=deploy/terraform output -json` is run. The files written:
`manifests.yaml` (namespace first, then everything kubectl applies before Helm), `dagster-values.yaml`
(`helm upgrade --install dagster ... -f`), `kuberay.yaml` (the RayService and the training RayCluster, once the
KubeRay operator's CRDs exist), `observability.yaml` (PodMonitorings, the alert Rules, the dashboards'
ConfigMaps). Secrets never touch the disk: pipe them to `kubectl apply -f -`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
TERRAFORM = DEPLOY / "terraform"
BUILD = DEPLOY / "build"
# What each rendered file holds, in apply order.
MANIFESTS = {
    "manifests.yaml": ["k8s/namespace.yaml", "dagster/env.yaml", "k8s/mlflow.yaml", "k8s/qdrant.yaml",
                       "k8s/networkpolicies.yaml", "k8s/ingress.yaml", "k8s/pipeline-exporter.yaml"],
    "kuberay.yaml": ["kuberay/serving-env.yaml", "kuberay/rayservice.yaml", "kuberay/raycluster-training.yaml"],
    "dagster-values.yaml": ["dagster/values.yaml"],
    # Google Managed Prometheus' scrape targets and alert rules, the Grafana dashboards (generated files:
    # deploy/observability/alerts.py, dashboards.py) and Grafana's access to them; GKE's managed collection
    # provides the CRDs.
    "observability.yaml": ["observability/gke/podmonitorings.yaml", "observability/gke/rules.yaml",
                           "observability/gke/dashboards.yaml", "observability/gke/grafana-access.yaml"],
}
FIELD = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
# Where pods mount Memorystore's CA (the Secret recsys-redis, key ca.pem); the connection string names it.
REDIS_CA_DIR = "/etc/recsys/redis"
REDIS_CA_FILE = "ca.pem"
NAMESPACE = "recsys"


def terraform_outputs(path: Path | None = None) -> dict:
    """`terraform output -json` as {name: value}, from a file or from the configuration's state."""
    if path is not None:
        raw = json.loads(path.read_text())
    else:
        out = subprocess.run(["terraform", f"-chdir={TERRAFORM}", "output", "-json"], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"terraform output failed (run `terraform init` and `apply` first):\n{out.stderr}")
        raw = json.loads(out.stdout)
    if not raw:
        raise SystemExit("Terraform has no outputs yet: apply deploy/terraform first")
    return {name: entry["value"] if isinstance(entry, dict) and "value" in entry else entry
            for name, entry in raw.items()}


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def fields(outputs: dict, tag: str) -> dict[str, str]:
    """The template fields, each from one Terraform output (deploy/check.py checks the outputs exist)."""
    buckets, datasets, accounts = outputs["buckets"], outputs["bigquery_datasets"], outputs["workload_service_accounts"]
    return {
        "PROJECT_ID": outputs["project_id"],
        "IMAGE_REPOSITORY": outputs["image_repository"],
        "IMAGE_TAG": tag,
        "IMAGE": f"{outputs['image_repository']}/recsys:{tag}",
        "IMAGE_CUDA": f"{outputs['image_repository']}/recsys-cuda:{tag}",
        "LANDING_BUCKET": buckets["landing"],
        "ARTIFACTS_BUCKET": buckets["artifacts"],
        "FEAST_BUCKET": buckets["feast"],
        "BQ_LOCATION": outputs["bigquery_location"],
        "BQ_RAW_DATASET": datasets["raw"],
        "BQ_FEATURES_DATASET": datasets["features"],
        "API_ADDRESS_NAME": outputs["api_address_name"],
        "API_DOMAIN": outputs["api_domain"],
        "SA_DAGSTER": accounts["dagster"],
        "SA_SERVING": accounts["serving"],
        "SA_TRAINING": accounts["training"],
        "SA_MLFLOW": accounts["mlflow"],
        "POSTGRES_HOST": outputs["postgres_host"],
        "POSTGRES_CONNECTION_NAME": outputs["postgres_connection_name"],
    }


def fill(text: str, values: dict[str, str], where: str = "template") -> str:
    """Every `${NAME}` replaced; a name without a value is an error (never an empty string)."""
    missing = sorted({m for m in FIELD.findall(text) if m not in values})
    if missing:
        raise KeyError(f"{where}: no value for {', '.join(missing)}")
    return FIELD.sub(lambda m: str(values[m.group(1)]), text)


def render(outputs: dict, tag: str) -> dict[str, str]:
    """{file name: rendered text} for every file of MANIFESTS."""
    values = fields(outputs, tag)
    rendered = {}
    for name, sources in MANIFESTS.items():
        parts = [fill((DEPLOY / source).read_text(), values, source) for source in sources]
        rendered[name] = "---\n".join(part if part.endswith("\n") else part + "\n" for part in parts)
    return rendered


def _secret(name: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": NAMESPACE}, "stringData": data}


def redis_connection_string(outputs: dict) -> str:
    """Feast's form (`host:port,password=...,ssl=true,ssl_ca_certs=...`): what RECSYS_REDIS_URL holds. Feast
    reads a redis:// URL's `:password@host` as the host; Memorystore's TLS is verified against its CA."""
    return (f"{outputs['redis_host']}:{outputs['redis_port']},password={outputs['redis_auth']},ssl=true,"
            f"ssl_ca_certs={REDIS_CA_DIR}/{REDIS_CA_FILE}")


def secrets(outputs: dict) -> list[dict]:
    """Every Secret a workload reads, from Terraform's (sensitive) outputs."""
    passwords = outputs["postgres_passwords"]
    return [
        _secret("recsys-redis", {"RECSYS_REDIS_URL": redis_connection_string(outputs),
                                 REDIS_CA_FILE: outputs["redis_ca_certificate"]}),
        _secret("recsys-api", {"RECSYS_API_TOKEN": outputs["api_token"]}),
        # Qdrant's API key, under the name our clients read (envFrom in the Dagster pods); the server takes the
        # same key as QDRANT__SERVICE__API_KEY (deploy/k8s/qdrant.yaml).
        _secret("recsys-qdrant", {"RECSYS_QDRANT_API_KEY": outputs["qdrant_api_key"]}),
        # MLflow reaches Cloud SQL through its Auth Proxy sidecar on localhost.
        _secret("recsys-mlflow-db", {"MLFLOW_BACKEND_URI":
                                     f"postgresql://mlflow:{passwords['mlflow']}@127.0.0.1:5432/mlflow"}),
        # The Dagster chart's instance storage reads this name and key (generatePostgresqlPasswordSecret: false).
        _secret("dagster-postgresql-secret", {"postgresql-password": passwords["dagster"]}),
    ]


class _SecretDumper(yaml.SafeDumper):
    """Multi-line values (a CA certificate) as literal blocks, as kubectl writes them."""


_SecretDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["manifests", "secrets"], default="manifests")
    parser.add_argument("--outputs", type=Path, help="a saved `terraform output -json` (default: run terraform)")
    parser.add_argument("--tag", default=None, help="the image tag (default: the project's version)")
    parser.add_argument("--out", type=Path, default=BUILD)
    args = parser.parse_args(argv)
    outputs = terraform_outputs(args.outputs)
    if args.what == "secrets":
        yaml.dump_all(secrets(outputs), sys.stdout, Dumper=_SecretDumper, sort_keys=False)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in render(outputs, args.tag or project_version()).items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

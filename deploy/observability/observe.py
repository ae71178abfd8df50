"""`make observe`: Prometheus and Alertmanager (Debian's packages) on 127.0.0.1, watching the local platform.

Prometheus finds its targets in RECSYS_HOME/observability/targets/*.json (file_sd: `recsys serve` writes
serving.json for Ray's metrics export, the pipeline exporter pipeline.json, each removes its file when it
stops), evaluates deploy/observability/alerts.yml and sends what fires to Alertmanager
(deploy/observability/alertmanager.yml). Their data lives under RECSYS_HOME/observability/. The pipeline exporter
is started too when no live one has written its target. Ctrl-C stops everything this started.

    python deploy/observability/observe.py [--prometheus-port 9090] [--alertmanager-port 9093]

The tests (tests/observability) run the same configuration through `LocalStack`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "alerts.yml"
ALERTMANAGER_CONFIG = HERE / "alertmanager.yml"
PIPELINE_EXPORTER_PORT = 9108


def observability_dir(home: Path) -> Path:
    return Path(home) / "observability"


def targets_dir(home: Path) -> Path:
    return observability_dir(home) / "targets"


def prometheus_config(home: Path, alertmanager: str, scrape_interval: str = "15s") -> dict:
    """Prometheus' configuration: every file_sd target of this home (its `job` label comes from the file),
    the alert rules, the local Alertmanager."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                   "scrape_timeout": scrape_interval if _seconds(scrape_interval) < 10 else "10s"},
        "rule_files": [str(RULES)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{
            "job_name": "recsys",  # each file names its own job (recsys-serving, recsys-pipeline)
            "file_sd_configs": [{"files": [str(targets_dir(home) / "*.json")], "refresh_interval": "5s"}],
        }],
    }


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    raise ValueError(f"not a duration: {duration!r}")


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    raise FileNotFoundError(f"{names[0]} is missing: `make setup` installs Debian's prometheus and "
                            "prometheus-alertmanager (scripts/system-packages.sh)")


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")


def stop(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM to the process group (each child here is a group leader), SIGKILL if it outstays `timeout_s`."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def _process(command: list[str], log: Path, ready_url: str, env: dict | None = None):
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    try:
        wait_ready(ready_url, proc, log)
        yield proc
    finally:
        stop(proc)


@dataclass
class LocalStack:
    prometheus: str  # base URLs
    alertmanager: str


@contextmanager
def local_stack(home: Path, prometheus_port: int = 9090, alertmanager_port: int = 9093,
                scrape_interval: str = "15s"):
    """Prometheus and Alertmanager on 127.0.0.1 over `home`'s targets, stopped on exit."""
    base = observability_dir(home)
    targets_dir(home).mkdir(parents=True, exist_ok=True)
    for port in (prometheus_port, alertmanager_port):
        if not port_free(port):
            raise SystemExit(f"127.0.0.1:{port} is taken (another make observe?): pass other ports "
                             "(make observe PROMETHEUS_PORT=... ALERTMANAGER_PORT=...)")
    config = base / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(home, f"127.0.0.1:{alertmanager_port}", scrape_interval),
                                     sort_keys=False))
    alertmanager = f"http://127.0.0.1:{alertmanager_port}"
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    with ExitStack() as stack:
        stack.enter_context(_process(
            [_binary("prometheus-alertmanager", "alertmanager"), f"--config.file={ALERTMANAGER_CONFIG}",
             f"--storage.path={base / 'alertmanager'}", f"--web.listen-address=127.0.0.1:{alertmanager_port}",
             "--cluster.listen-address=",  # no peers: otherwise it listens on 0.0.0.0:9094 for a cluster
             f"--web.external-url={alertmanager}"],
            base / "alertmanager.log", f"{alertmanager}/-/ready"))
        stack.enter_context(_process(
            [_binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={base / 'prometheus'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}", f"--web.external-url={prometheus}",
             "--storage.tsdb.retention.time=15d"],
            base / "prometheus.log", f"{prometheus}/-/ready"))
        yield LocalStack(prometheus, alertmanager)


def live_target(home: Path, name: str) -> str | None:
    """The address in targets/<name>.json when something answers /metrics there."""
    path = targets_dir(home) / f"{name}.json"
    try:
        address = json.loads(path.read_text())[0]["targets"][0]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=2):
            return address
    except (OSError, ValueError, KeyError, IndexError):
        return None


@contextmanager
def pipeline_exporter(home: Path, port: int = PIPELINE_EXPORTER_PORT, dagster_home: Path | None = None):
    """`recsys pipeline-exporter` over `home` on 127.0.0.1:port until exit; yields its address. The instance
    read is `dagster_home`, else the home's own (RECSYS_HOME/dagster), never one an outer environment names
    for another home (make exports DAGSTER_HOME for the repository's var/)."""
    command = [sys.executable, "-m", "recsys_assets.cli", "pipeline-exporter", "--port", str(port)]
    env = {"RECSYS_HOME": str(home), "DAGSTER_HOME": str(dagster_home or Path(home) / "dagster")}
    with _process(command, observability_dir(home) / "pipeline-exporter.log",
                  f"http://127.0.0.1:{port}/metrics", env) as proc:
        yield f"127.0.0.1:{port}", proc


LOOK_HERE = """
Observing {home}
  Prometheus     {prometheus}            graphs: {prometheus}/graph   targets: {prometheus}/targets
                 alerts and their state: {prometheus}/alerts    rules: {prometheus}/rules
  Alertmanager   {alertmanager}            (firing alerts, silences)
  Targets        serving: {serving}
                 pipeline: {pipeline}
  Saved views (the dashboards' main questions, README "Operations: where to look"):
{links}
Dagster's run-failure sensor posts here too when `make dev` runs with
  RECSYS_ALERTMANAGER_URL={alertmanager}
Ctrl-C stops Prometheus, Alertmanager{and_exporter}.
"""

# A few of the dashboards' queries as Prometheus graph links: what a user sees locally instead of Grafana.
SAVED_VIEWS = {
    "is it healthy and fast (p99 per endpoint)":
        "histogram_quantile(0.99, sum by (le, endpoint) (rate(ray_recsys_request_latency_seconds_bucket[1m])))",
    "errors (5xx per second)": 'sum by (endpoint) (rate(ray_recsys_requests_total{status=~"5.."}[1m]))',
    "which release and models are served": "count by (release, day, two_tower_version, ranker_version, index) "
                                           "(ray_recsys_release_info == 1)",
    "is the data fresh (days behind)": "recsys_freshness_lag_days",
    "did the last run pass its checks": "recsys_asset_check_passed == 0 or recsys_last_run_failed == 1",
    "are models getting better": "recsys_model_evaluation",
    "has the data drifted (PSI)": "recsys_drift_psi",
}


def graph_link(prometheus: str, expr: str) -> str:
    from urllib.parse import urlencode

    return f"{prometheus}/graph?" + urlencode({"g0.expr": expr, "g0.tab": "0", "g0.range_input": "1h"})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus-port", type=int, default=int(os.environ.get("PROMETHEUS_PORT", 9090)))
    parser.add_argument("--alertmanager-port", type=int, default=int(os.environ.get("ALERTMANAGER_PORT", 9093)))
    parser.add_argument("--exporter-port", type=int, default=PIPELINE_EXPORTER_PORT)
    args = parser.parse_args(argv)
    home = Path(os.environ.get("RECSYS_HOME", HERE.parent.parent / "var")).resolve()
    # SIGTERM as Ctrl-C: both unwind the stacks below, which stop each process
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with ExitStack() as stack:
        try:
            pipeline = live_target(home, "pipeline")
            started = False
            if pipeline is None:
                if not port_free(args.exporter_port):
                    raise SystemExit(f"127.0.0.1:{args.exporter_port} is taken and no pipeline exporter of "
                                     f"{home} answers there: pass --exporter-port")
                pipeline, _ = stack.enter_context(pipeline_exporter(home, args.exporter_port,
                                                                    os.environ.get("DAGSTER_HOME")))
                started = True
            stack_urls = stack.enter_context(local_stack(home, args.prometheus_port, args.alertmanager_port))
            serving = live_target(home, "serving") or "none yet (`make serve` adds it when it starts)"
            links = "\n".join(f"    {what}:\n      {graph_link(stack_urls.prometheus, expr)}"
                              for what, expr in SAVED_VIEWS.items())
            print(LOOK_HERE.format(home=home, prometheus=stack_urls.prometheus, alertmanager=stack_urls.alertmanager,
                                   serving=serving, pipeline=pipeline + (" (started here)" if started else ""),
                                   links=links, and_exporter=" and the pipeline exporter" if started else ""),
                  flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Ray Serve: the FastAPI app as a deployment (built inside each replica), and `recsys serve`."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from dataclasses import replace

from pydantic import BaseModel, Field
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.schema import LoggingConfig

from recsys_assets.observability.targets import remove_target, target_path, write_target
from recsys_assets.serving.app import create_app
from recsys_assets.serving.config import ServingConfig, serving_kv
from recsys_assets.serving.ports import server_port
from recsys_assets.serving.routes.recommendations import rerank_group
from recsys_assets.serving.runtime import Runtime
from recsys_assets.serving.telemetry import SERVING_JOB, Telemetry, json_logs
from recsys_assets.serving_data.candidates import POPULAR, POPULAR_KEY, SEQUENCE, CandidateStore
from recsys_assets.serving_data.release import ReleaseStore

APP_NAME = "recsys"
_FORWARDED_ENV = ("RECSYS_", "MLFLOW_", "FEAST_", "HF_", "DO_NOT_TRACK", "OTEL_")  # OTEL_*: where spans go


def build_app():
    """Runs in each replica: one Runtime (models, index copy, store connections) per replica process."""
    import torch

    torch.set_num_threads(1)  # replicas share few cores; one thread per request keeps latency steady
    logging.basicConfig(level=logging.INFO)
    json_logs()
    config = ServingConfig.from_env()
    # Dynamic batching: the reranks that arrived while the replica was busy are answered together, one
    # feature read and one forward pass each (about half the CPU per rerank at batches of 8). No wait for
    # a batch to fill: alone, a request goes at once.
    batched = serve.batch(max_batch_size=config.max_ongoing_requests, batch_wait_timeout_s=0.0)(rerank_group)
    telemetry = Telemetry.in_replica(config.telemetry, config.metrics_port)
    return create_app(Runtime(config, telemetry=telemetry), under_ray_serve=True, batched_rerank=batched)


# Serve's own lines (access log, replica events) as JSON in Ray's log folder, with the request id: the app's own
# lines are JSON on stderr (`telemetry.json_logs`).
@serve.deployment(name="recsys", health_check_period_s=2, graceful_shutdown_timeout_s=5,
                  logging_config=LoggingConfig(encoding="JSON"))
@serve.ingress(build_app)
class RecsysIngress:
    """The ingress deployment; its routes are the FastAPI app's."""


def application(config: ServingConfig):
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV)}
    env.update(config.environment(), RECSYS_HOME=str(config.settings.home))  # the args and flags reach replicas
    return RecsysIngress.options(
        **config.replica_options(),
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=config.retry_after_s),
        ray_actor_options={"num_cpus": 0.5, "runtime_env": {"env_vars": env}}).bind()


class BuilderArgs(BaseModel, extra="forbid"):
    """What a Serve config's `args` may set for `app_builder` (a RayService's serveConfigV2); the rest comes
    from the pods' environment (RECSYS_*), as for `recsys serve`. Unknown keys are refused."""
    replicas: int | None = Field(None, ge=1)
    max_replicas: int | None = Field(None, ge=1)
    max_ongoing_requests: int | None = Field(None, ge=1)
    max_queued_requests: int | None = Field(None, ge=-1)
    reload_interval_s: float | None = Field(None, gt=0)
    canary_share: float | None = Field(None, ge=0, le=1)


def app_builder(args: dict):
    """The application from plain args (what Serve passes an `import_path` builder): a RayService's
    serveConfigV2 imports `recsys_assets.serving.deploy:app_builder`."""
    overrides = BuilderArgs.model_validate(args or {}).model_dump(exclude_none=True)
    return application(replace(ServingConfig.from_env(), **overrides))


def run(config: ServingConfig, blocking: bool = True) -> None:
    """Start a local Ray (or join RAY_ADDRESS), Serve bound to config.host:port, and the app."""
    import ray

    joined = bool(os.environ.get("RAY_ADDRESS"))
    if not joined:
        # Ray's metrics agent exports every replica's metrics on a port we know (on the node's address: 127.0.0.1
        # for a loopback host), so a scraper finds them; replicas learn it (RECSYS_METRICS_PORT) for /metrics.
        config = replace(config, metrics_port=config.metrics_port or server_port())
    # Ray's and Serve's own INFO lines (controller, proxy, replicas starting) go to their log files under
    # /tmp/ray; the console keeps warnings and what a user needs (the welcome below).
    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if blocking:
        # From the start: a SIGTERM while Ray starts (a supervisor stopping a service it just started) still
        # goes through the cleanup below instead of ending the process with Ray and its target left behind.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    metrics = None
    try:
        _start(config, joined)
        # The export listens on the node's address (127.0.0.1 when served on loopback); named before the app
        # answers, so a scraper knows it by the time the service is ready.
        metrics = None if joined else f"{ray.util.get_node_ip_address()}:{config.metrics_port}"
        if metrics:
            write_target(config.settings.home, "serving", metrics, SERVING_JOB)
        serve.run(application(config), name=APP_NAME, route_prefix="/", blocking=False)
        print(_welcome(config, metrics), flush=True)
        if not blocking:
            return
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if blocking:
            if metrics:
                remove_target(config.settings.home, "serving")
            shutdown(own_cluster=not joined)


def _start(config: ServingConfig, joined: bool) -> None:
    """Ray (ours, or the cluster we join) and Serve's HTTP ingress on config.host:port."""
    import ray

    if not ray.is_initialized():
        # "local": a Ray of our own even when another runs on this machine. Without an address Ray joins the
        # latest local cluster (/tmp/ray/ray_current_cluster), and a second `recsys serve` (another home,
        # another port) would replace the first one's app in it.
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=False,
                 num_cpus=None if joined else max(2, os.cpu_count() or 2),
                 _metrics_export_port=None if joined else config.metrics_port)
    # HAProxy or Ray's proxy listens on config.port; with one direct-ingress replica on it instead, Ray's
    # proxy still runs, on a free loopback port.
    proxy_port = server_port() if config.ingress == "direct" and config.direct_ingress else config.port
    serve.start(http_options={"host": config.host, "port": proxy_port})


def _welcome(config: ServingConfig, metrics: str | None = None) -> str:
    """Where to look, with a user the current release knows. `metrics`: host:port of Ray's metrics export."""
    url = f"http://{config.host}:{config.port}"
    lines = [f"recsys serving on {url}/  (demo page; API docs at {url}/docs)"]
    if metrics:
        lines.append(f"metrics of every replica (Ray's export): http://{metrics}/metrics  (Prometheus file_sd: "
                     f"{target_path(config.settings.home, 'serving')})")
    if not config.telemetry:
        lines.append("telemetry off (RECSYS_TELEMETRY=0): no recsys metrics or spans are recorded")
    if not config.api_token:
        lines.append("POST /interactions disabled: set RECSYS_API_TOKEN (the demo page's likes need it)")
    try:
        return "\n".join(lines + _examples(config, url))
    except Exception as error:  # a store that stalls at this moment must not end the service it welcomes
        return "\n".join(lines + [f"the serving store did not answer ({type(error).__name__}: {error}); "
                                   f"replicas keep trying: see {url}/readyz"])


def _examples(config: ServingConfig, url: str) -> list[str]:
    """The current release, and requests to try with a user and an item it knows."""
    lines = []
    kv = serving_kv(config.settings)
    release = ReleaseStore(kv).current()
    if release is None:
        lines.append("no release yet: run `make pipeline`; serving picks it up when it is published")
        return lines
    lines.append(f"release {release.id} of {release.day}: " + (
        f"models {release.models}" if release.models else f"{release.pipeline} (no model has passed the gate yet)"))
    store = CandidateStore(kv)
    # A release may lack a kind (a popularity release written by hand): the example then names a placeholder.
    users = store.ids(SEQUENCE, release.candidates[SEQUENCE]) if SEQUENCE in release.candidates else []
    user = users[len(users) // 2] if users else "some-user"
    popular = (store.read(POPULAR, release.candidates[POPULAR], [POPULAR_KEY])[0]
               if POPULAR in release.candidates else None) or [["some-item", 0]]
    lines += [f"try:  curl '{url}/recs/u2i/rerank?user_id={user}&count=5'",
              f"      curl '{url}/recs/popular?count=5'"]
    if config.api_token:
        # The variable's name, never its value: the console and its logs must not hold the secret.
        lines.append(f"      curl -X POST {url}/interactions -H \"Authorization: Bearer $RECSYS_API_TOKEN\" "
                     f"-H 'content-type: application/json' "
                     f"-d '{{\"user_id\": \"{user}\", \"item_id\": \"{popular[0][0]}\"}}'")
    return lines


def shutdown(own_cluster: bool = True) -> None:
    """Stop serving: the whole local Ray we started (its processes go with it, at once), or only our app on
    a cluster we joined."""
    import ray

    if own_cluster:
        started = _descendants()
        # HAProxy holds the port: it goes first, before Ray's shutdown (seconds), which a supervisor's SIGKILL
        # may cut short.
        _kill_survivors([p for p in started if _is_haproxy(p)], wait_s=1.0)
        ray.shutdown()
        # Ray's workers run in process groups of their own, and HAProxy is a child of one: whatever outlived
        # the shutdown (HAProxy holding the port) goes now, so a stop leaves nothing behind.
        _kill_survivors(started)
        # HAProxy's private folder (`ServingConfig.ray_serve_environment`) goes with the cluster.
        state = os.environ.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE", "")
        if os.path.basename(state).startswith("recsys-haproxy-"):
            shutil.rmtree(state, ignore_errors=True)
    else:
        serve.delete(APP_NAME)


def _descendants() -> list:
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _is_haproxy(process) -> bool:
    import psutil

    try:
        return "haproxy" in process.name()
    except psutil.Error:
        return False


def _kill_survivors(processes: list, wait_s: float = 5.0) -> None:
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=0)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=wait_s)

"""Ray Serve: the FastAPI app as a deployment (built inside each replica), and `recsys serve`."""

from __future__ import annotations

import logging
import os
import signal
import sys

from ray import serve

from recsys_assets.serving.app import create_app
from recsys_assets.serving.config import ServingConfig
from recsys_assets.serving.runtime import Runtime

APP_NAME = "recsys"
_FORWARDED_ENV = ("RECSYS_", "MLFLOW_", "FEAST_", "HF_", "DO_NOT_TRACK")


def build_app():
    """Runs in each replica: one Runtime (models, index copy, store connections) per replica process."""
    import torch

    torch.set_num_threads(1)  # replicas share few cores; one thread per request keeps latency steady
    logging.basicConfig(level=logging.INFO)
    return create_app(Runtime(ServingConfig.from_env()))


@serve.deployment(name="recsys", max_ongoing_requests=32, health_check_period_s=5)
@serve.ingress(build_app)
class RecsysIngress:
    """The ingress deployment; its routes are the FastAPI app's."""


def application(config: ServingConfig):
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV)}
    env["RECSYS_HOME"] = str(config.settings.home)
    return RecsysIngress.options(num_replicas=config.replicas, ray_actor_options={
        "num_cpus": 0.5, "runtime_env": {"env_vars": env}}).bind()


def run(config: ServingConfig, blocking: bool = True) -> None:
    """Start a local Ray (or join RAY_ADDRESS), Serve bound to config.host:port, and the app."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 num_cpus=None if os.environ.get("RAY_ADDRESS") else max(2, os.cpu_count() or 2))
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(application(config), name=APP_NAME, route_prefix="/", blocking=False)
    print(f"recsys serving on http://{config.host}:{config.port}/ (docs: /docs)", flush=True)
    if blocking:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            signal.pause()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            shutdown()


def shutdown() -> None:
    import ray

    try:
        serve.shutdown()
    finally:
        ray.shutdown()

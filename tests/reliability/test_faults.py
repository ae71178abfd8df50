"""The fault suite's fast part: each fault injected for real (a file removed, a store made unreadable) under a
closed-loop load on the running service. For each: requests failed (target: at most 0.1%), what was served
meanwhile (the previous release: never a silent popularity fallback), time to recover (target: 30 s).

`bench/reliability.py` (`make soak`) runs the same faults longer and writes bench/results/reliability.json.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest

from recsys_assets.models.registry import load_extras
from recsys_assets.serving.config import serving_kv
from recsys_assets.serving_data.index import VectorIndex
from recsys_assets.serving_data.release import Release, ReleaseStore
from tests.support.faults import MAX_RECOVERY_S, ClosedLoopLoad, check_fault, measure_fault, serving_release

HOLD_S = float(os.environ.get("RECSYS_FAULT_HOLD_S", "6"))


@pytest.fixture(scope="module")
def load(service, served_home):
    reviews = pd.concat([pd.read_parquet(p) for p in sorted(served_home.landing.path.glob("recsys_data_upto_*"))])
    users = reviews["user_id"].value_counts().index[:100].tolist()
    with ClosedLoopLoad(str(service.base_url), users) as running:
        yield running


@pytest.fixture
def releases(served_home, service):
    """The release store; whatever a test publishes, the release it found is current again after it."""
    store = ReleaseStore(serving_kv(served_home.settings))
    good = store.current()
    yield store
    store.publish(good)
    assert _wait(lambda: serving_release(str(service.base_url), good.id)), "serving did not come back"


def _wait(condition, timeout_s: float = MAX_RECOVERY_S) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def _copy(release: Release, **changes) -> Release:
    return Release(**{**release.__dict__, "published_at": "", **changes})


def test_a_release_naming_a_missing_model_keeps_the_served_one(load, releases, service):
    good = releases.current()
    broken = _copy(good, models={**good.models, "ranker": "999"})
    url = str(service.base_url)
    result = measure_fault("release names a model version that does not exist", load,
                           inject=lambda: releases.publish(broken), hold_s=HOLD_S,
                           restore=lambda: releases.publish(good), recovered=lambda: serving_release(url, good.id))
    check_fault(result, good.id)


def test_a_removed_index_collection_keeps_the_served_release(load, releases, service, served_home):
    """The newest collection is built, then removed before any replica opened it."""
    good = releases.current()
    settings = served_home.settings
    index = VectorIndex.open(settings.qdrant_dir, settings.qdrant_url)
    folder = load_extras(served_home.resources()["serving"].registry(), "two_tower", good.models["two_tower"])
    ids = json.loads((folder / "items.json").read_text())
    newest = index.build("two_tower_items", "fault-removed", ids, np.load(folder / "item_vectors.npy"))
    index.retire("two_tower_items", keep=set(index.collections("two_tower_items")) - {newest})
    assert newest not in index.collections("two_tower_items")
    moved = _copy(good, collections={**good.collections, "two_tower_items": newest})
    url = str(service.base_url)
    result = measure_fault("newest Qdrant collection removed", load, inject=lambda: releases.publish(moved),
                           hold_s=HOLD_S, restore=lambda: releases.publish(good),
                           recovered=lambda: serving_release(url, good.id))
    check_fault(result, good.id)


def test_an_unreadable_model_store_delays_a_release_without_failing_requests(load, releases, service, served_home):
    """MLflow's store cannot be read while a new release is published: replicas keep the served release,
    and move to the new one once the store is back."""
    good = releases.current()
    store = served_home.settings.home / "mlflow" / "mlflow.db"
    original = store.read_bytes()

    def overwrite(content: bytes) -> None:
        # In place: the replicas' open connections read the same file (a rename would leave them the old one).
        with open(store, "r+b") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())

    # The same models with the challenger flipped: a new release id, so every replica loads it from MLflow.
    new = _copy(good, challengers={} if good.challengers else {"ranker": good.models["ranker"]})
    url = str(service.base_url)
    result = measure_fault("MLflow store unreadable while a release is published", load,
                           inject=lambda: (overwrite(b"\0" * len(original)), releases.publish(new)), hold_s=HOLD_S,
                           restore=lambda: overwrite(original), recovered=lambda: serving_release(url, new.id))
    check_fault(result, good.id, during_fault_only=new.id)

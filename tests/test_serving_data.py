"""What the pipeline writes for serving, on real stores: the key-value store (SQLite and a real Redis),
candidate computations on hand-made data, versioned Qdrant collections behind aliases (local mode), the
release record and the interaction log."""

import json
import threading
from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys_assets.serving_data.candidates import (
    I2I,
    POPULAR,
    CandidateStore,
    catalogue_rows,
    item_neighbours,
    last_items,
    popular_items,
    user_top_items,
)
from recsys_assets.serving_data.events import EventLog
from recsys_assets.serving_data.index import VectorIndex
from recsys_assets.serving_data.release import Published, Release, ReleaseStore


def test_key_value_store_reads_a_batch_in_order(kv):
    kv.put_many([("a:1", [1, "x"]), ("a:2", {"k": 2}), ("b:1", 3)])
    assert kv.get_many(["a:2", "missing", "a:1"]) == [{"k": 2}, None, [1, "x"]]
    kv.put_many([("a:1", "replaced")])
    assert kv.get_many(["a:1"]) == ["replaced"]
    assert sorted(kv.keys_with_prefix("a:")) == ["a:1", "a:2"]
    assert kv.delete_prefix("a:") == 2 and kv.get_many(["a:1", "b:1"]) == [None, 3]


def test_candidate_versions_are_written_whole_and_retired(kv):
    store = CandidateStore(kv)
    store.write(I2I, "d1", [("x", [["y", 0.9]]), ("y", [["x", 0.9]])])
    store.write(I2I, "d1", [("x", [["z", 0.5]])])  # a re-run replaces the version: y is gone
    assert store.read(I2I, "d1", ["x", "y"]) == [[["z", 0.5]], None]
    store.write(I2I, "d2", [("x", [["y", 0.1]])])
    assert store.versions(I2I) == ["d1", "d2"]
    assert store.retire(I2I, keep={"d2"}) == ["d1"]
    assert store.read(I2I, "d1", ["x"]) == [None] and store.count(I2I, "d2") == 1
    with pytest.raises(ValueError):
        store.write("nonsense", "d1", [])


def test_popular_items_counts_real_interactions_with_ties_by_id():
    events = pd.DataFrame({"parent_asin": ["b", "a", "c", "b", "a", "c", "c"]})
    assert popular_items(events, k=2) == [["c", 3], ["a", 2]]


def test_item_neighbours_by_cosine_without_the_item_itself():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    out = dict(item_neighbours(["a", "b", "c", "d"], vectors, k=2, chunk=3))
    assert [n for n, _ in out["a"]] == ["b", "c"]
    assert [n for n, _ in out["d"]] == ["c", "b"]
    assert out["a"][0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-5)
    # a prior per neighbour (popularity weight x log(1 + reviews)) lifts a popular, less similar item
    lifted = dict(item_neighbours(["a", "b", "c", "d"], vectors, k=2, chunk=3, prior=np.array([0, 0, 1.5, 0])))
    assert [n for n, _ in lifted["a"]] == ["c", "b"] and lifted["a"][0][1] == pytest.approx(1.5, abs=1e-5)


def test_user_top_items_leave_out_what_the_user_has_seen():
    items = ["a", "b", "c"]
    item_vectors = np.array([[1, 0], [0.5, 0.5], [0, 1]], dtype=np.float32)
    users = np.array([[1, 0], [0, 1]], dtype=np.float32)
    out = dict(user_top_items(["u", "v"], users, items, item_vectors, {"u": {"a"}}, k=2))
    assert [i for i, _ in out["u"]] == ["b", "c"]
    assert [i for i, _ in out["v"]] == ["c", "b"]


def test_last_items_are_the_newest_ten_oldest_first():
    events = pd.DataFrame({"user_id": ["u"] * 12 + ["v"], "parent_asin": [f"i{n:02d}" for n in range(12)] + ["x"],
                           "timestamp": list(range(12, 0, -1)) + [5]})
    out = dict(last_items(events, n=10))
    assert out["u"]["timestamps"] == list(range(3, 13))
    assert out["u"]["items"][-1] == "i00" and out["v"] == {"items": ["x"], "timestamps": [5]}


def test_catalogue_rows_show_what_a_card_needs():
    meta = pd.DataFrame({"parent_asin": ["a"], "title": ["T"], "main_category": ["Books"],
                         "categories": [["Books", "Cooking"]], "price": [None], "image_url": [None]})
    assert dict(catalogue_rows(meta)) == {"a": {"title": "T", "category": "Cooking", "price": None, "image_url": None}}


def _vectors(n=300, d=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32), [f"item{i}" for i in range(n)]


def test_a_collection_moves_behind_its_alias_only_after_its_check(tmp_path):
    index = VectorIndex(path=tmp_path / "qdrant")
    vectors, ids = _vectors()
    first = index.build("items", "v1", ids, vectors)
    check = index.check(first, ids, vectors)
    assert check.passed and check.count == 300
    assert index.point_alias("items", first) is None and index.resolve("items") == first
    # A build whose points do not match what was meant to go in fails its check.
    second = index.build("items", "v2", ids, vectors[::-1].copy())
    assert not index.check(second, ids, vectors).passed
    assert not index.check(second, ids[:-1], vectors[::-1][:-1]).passed  # count differs
    with pytest.raises(ValueError):
        index.build("items", "v1", ids, vectors)  # never rebuilt while an alias points to it
    assert index.retire("items", keep=set()) == [second]
    reader = index.open_reader(index.resolve("items"))
    assert reader.search(vectors[7], limit=1)[0][0] == "item7"
    reader.close()


def test_local_readers_and_a_rebuild_work_at_once(tmp_path):
    """Local mode allows one client per folder: readers get private copies, builds get new folders."""
    index = VectorIndex(path=tmp_path / "qdrant")
    vectors, ids = _vectors()
    current = index.build("items", "v1", ids, vectors)
    index.point_alias("items", current)
    readers = [index.open_reader(current) for _ in range(3)]
    errors = []

    def query(reader):
        try:
            for i in range(50):
                assert reader.search(vectors[i], limit=1)[0][0] == ids[i]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=query, args=(r,)) for r in readers]
    for t in threads:
        t.start()
    rebuilt = index.build("items", "v2", ids, vectors)  # while they read
    for t in threads:
        t.join()
    assert not errors
    index.point_alias("items", rebuilt)
    assert index.resolve("items") == rebuilt
    for r in readers:
        r.close()


def test_release_is_published_once_per_content(kv):
    releases = ReleaseStore(kv)
    release = Release(day="2024-01-02", models={"two_tower": "3"}, collections={"two_tower_items": "c"},
                      candidates={POPULAR: "p"})
    assert releases.publish(release) is Published.PUBLISHED
    assert releases.publish(Release(**{**release.__dict__, "published_at": "later"})) is Published.UNCHANGED
    moved = Release(day="2024-01-02", models={"two_tower": "2"}, collections={"two_tower_items": "c"},
                    candidates={POPULAR: "p"})
    assert releases.publish(moved) is Published.PUBLISHED
    assert releases.current().id == moved.id and [r.id for r in releases.history()] == [release.id, moved.id]


def test_event_log_appends_per_day_and_skips_a_torn_line(tmp_path):
    log = EventLog(tmp_path / "events")
    log.append("u", "a", 5, 1_704_067_200_000)  # 2024-01-01T00:00Z
    log.append("v", "b", 3, 1_704_153_599_999)  # 2024-01-01T23:59:59.999Z
    log.append("u", "c", 4, 1_704_153_600_000)  # 2024-01-02
    with open(log.path("2024-01-01"), "a") as f:
        f.write('{"user_id": "half')
    assert log.days() == ["2024-01-01", "2024-01-02"]
    day = log.read("2024-01-01")
    assert day["parent_asin"].tolist() == ["a", "b"] and day["rating"].tolist() == [5.0, 3.0]
    assert json.loads(log.path("2024-01-02").read_text())["parent_asin"] == "c"


def test_the_redis_event_log_keeps_each_day_and_lands_it_once_in_the_gcs_bucket(redis_url, gcs_emulator, tmp_path):
    """On GKE interactions go to one Redis stream per UTC day (every serving pod appends, the pod that lands
    the day reads) and land in the GCS landing bucket: nothing lives on a pod's disk."""
    from google.cloud import storage

    from recsys_assets.data.landing import GCSLandingZone
    from recsys_assets.serving_data.events import RedisEventLog, land_events, open_event_log

    log = open_event_log(tmp_path / "unused", redis_url)
    assert isinstance(log, RedisEventLog)
    for day in log.days():
        log.client.delete(log.PREFIX + day)
    log.append("u", "a", 5, 1_704_067_200_000)  # 2024-01-01T00:00Z
    log.append("v", "b", 3, 1_704_153_599_999)  # 2024-01-01T23:59:59.999Z
    log.append("u", "c", 4, 1_704_153_600_000)  # 2024-01-02
    assert log.days() == ["2024-01-01", "2024-01-02"]
    day = log.read("2024-01-01")
    assert day["parent_asin"].tolist() == ["a", "b"] and day["rating"].tolist() == [5.0, 3.0]
    assert day["timestamp"].tolist() == [1_704_067_200_000, 1_704_153_599_999]
    storage.Client(project="recsys-project").create_bucket("recsys-project-landing")
    zone = GCSLandingZone("recsys-project-landing", "landing/", "recsys-project")
    assert land_events(log, zone, date(2024, 1, 1)) == 2
    assert land_events(log, zone, date(2024, 1, 1)) == 0  # idempotent
    assert list(zone.list_files()) == ["recsys_data_upto_2024_01_01.parquet"]
    assert zone.read_parquet("recsys_data_upto_2024_01_01.parquet").column("parent_asin").to_pylist() == ["a", "b"]
    assert not (tmp_path / "unused").exists()

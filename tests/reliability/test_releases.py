"""What serving uses is never taken away or moved back by a publisher: releases are published in one
transaction, and retiring index collections keeps every collection a recent release serves."""

import threading

import numpy as np
from dagster import build_asset_context

from recsys_assets.defs.serving.index import publish_collection
from recsys_assets.defs.shared.resources import resources_for
from recsys_assets.serving_data.release import Published, Release, ReleaseStore
from recsys_assets.settings import Settings


def _release(day: str) -> Release:
    return Release(day=day, models={"two_tower": day}, collections={}, candidates={})  # each day its own model


def test_an_older_days_release_never_replaces_a_newer_one(kv):
    releases = ReleaseStore(kv)
    assert releases.publish(_release("2024-01-03")) is Published.PUBLISHED
    assert releases.publish(_release("2024-01-02")) is Published.NEWER_SERVED
    assert releases.current().day == "2024-01-03" and len(releases.history()) == 1


def test_concurrent_publishers_end_on_the_newest_day(kv):
    """Publishers of many days at once (a backfill beside the daily run): the newest day is served at the end,
    and the history only ever moves forward."""
    releases = ReleaseStore(kv)
    days = [f"2024-01-{d:02d}" for d in range(1, 17)]
    start = threading.Barrier(len(days))

    def publish(day: str) -> None:
        start.wait()
        releases.publish(_release(day))

    threads = [threading.Thread(target=publish, args=(day,)) for day in reversed(days)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = [r.day for r in releases.history()]
    assert releases.current().day == days[-1]
    assert history == sorted(history) and len(set(history)) == len(history)


def test_retiring_collections_keeps_what_the_current_release_serves(tmp_path):
    """The alias moves twice before a release is published (the second build's release failed): the third
    build must not delete the collection the served release still reads."""
    serving = resources_for(Settings(home=tmp_path, env="local"))["serving"]
    index, releases = serving.index(), ReleaseStore(serving.kv())
    ids = [f"i{n}" for n in range(40)]
    vectors = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    context = build_asset_context()
    built = []
    for version in ("v1", "v2", "v3"):
        result = publish_collection(context, serving, "items", version, ids, vectors, {})
        built.append(result.metadata["collection"])
        if version == "v1":
            releases.publish(Release(day="2024-01-01", models={}, collections={"items": built[0]}, candidates={}))
    assert releases.current().collections["items"] == built[0]
    assert built[0] in index.collections("items"), "the served release's collection was retired"
    assert index.resolve("items") == built[2]
    reader = index.open_reader(built[0])
    try:
        assert reader.search(vectors[3], 1)[0][0] == "i3"
    finally:
        reader.close()

"""Declarative automation over the whole graph, keyed to the newest landed day (never the calendar's).

The instance's event log is all that automation reads, so each scenario states the world as events
(materializations and passed checks, as the runs would have recorded them) and evaluates every asset's
condition with Dagster's own evaluator. The data is from 2024 while the clock is today's: a day that
lands long after it ended must still flow all the way to serving.
"""

from datetime import date, datetime, timedelta, timezone

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    evaluate_automation_conditions,
)

FEATURES = ["stg_reviews", "user_rating_stats", "parent_asin_rating_stats", "online_features"]
NEWEST_DAY_CHAIN = ["item_tags", "tag_embeddings", "training_dataset", "item2vec", "two_tower", "ranker",
                    "model_evaluation", "promotion", "two_tower_index", "item2vec_index", "tag_index",
                    "popular_items", "i2i_candidates", "u2i_candidates", "ease_candidates", "recent_popularity",
                    "user_sequences", "item_catalog",
                    "serving_release"]
# What reads the catalogue only, not the reviews: a replaced review file leaves it be.
CATALOGUE_ONLY = {"item_tags", "tag_embeddings", "tag_index", "item_catalog"}
LANDED_BY_SENSOR = {"raw_reviews", "item_metadata"}
DAYS = [str(date(2024, 3, 1) + timedelta(days=i)) for i in range(5)]


@pytest.fixture(scope="module")
def graph():
    from recsys_assets.definitions import defs

    return defs, defs.get_repository_def().asset_graph


class World:
    """A Dagster instance whose event log says what has been materialized, and the automation cursor."""

    def __init__(self, defs, asset_graph):
        self.defs, self.graph = defs, asset_graph
        self.instance = DagsterInstance.ephemeral()
        self.cursor = None
        self.checked: set = set()

    def record(self, name: str, day: str | None = None, checks: bool | None = None) -> None:
        """A materialization, with its checks passed when `checks` (by default: for what the landing sensor
        loads). Checks of the automated assets are left unrecorded otherwise: a new day's never ran, and
        they must not hold the chain back a tick (the run itself enforces them)."""
        key = AssetKey(name)
        self.instance.report_runless_asset_event(AssetMaterialization(key, partition=day))
        for check in self.graph.get(key).check_keys if (name in LANDED_BY_SENSOR if checks is None else checks) else ():
            if (check, day) in self.checked:  # the event log keeps one runless evaluation per partition
                continue
            self.checked.add((check, day))
            self.instance.report_runless_asset_event(
                AssetCheckEvaluation(asset_key=key, check_name=check.name, passed=True, partition=day))

    def tick(self) -> dict[str, list[str]]:
        """One automation tick: asset name -> requested partitions (sorted); `checks_requested` beside."""
        result = evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        requested, self.checks_requested = {}, set()
        for r in result.results:
            if not r.true_subset.size:
                continue
            if isinstance(r.key, AssetKey):
                value = r.true_subset.get_internal_value()
                requested[r.key.to_user_string()] = sorted(value.get_partition_keys()) if value is not True else []
            else:
                self.checks_requested.add(r.key)
        return requested


@pytest.fixture
def world(graph) -> World:
    """Five landed days with features, and the newest day's models and serving all materialized."""
    w = World(*graph)
    for name in ("item_metadata", "feast_definitions"):
        w.record(name)
    for day in DAYS:  # all done by earlier runs, their checks passed
        for name in ["raw_reviews", *FEATURES]:
            w.record(name, day, checks=True)
    for name in NEWEST_DAY_CHAIN:
        w.record(name, DAYS[-1], checks=True)
    w.tick()  # the first evaluation only takes stock
    return w


def test_nothing_new_requests_nothing(world):
    assert world.tick() == {}
    assert world.tick() == {}


def test_a_new_newest_day_flows_through_models_to_serving(world):
    """Long after the day ended (2024 data on today's clock), the whole chain runs for exactly that day."""
    new_day = str(date.fromisoformat(DAYS[-1]) + timedelta(days=1))
    assert date.fromisoformat(new_day) < datetime.now(timezone.utc).date() - timedelta(days=30)
    world.record("raw_reviews", new_day)
    requested = world.tick()
    assert requested == {name: [new_day] for name in FEATURES + NEWEST_DAY_CHAIN}
    # The dbt tests go with their models (the run puts them in; the other checks of the chain ride along).
    dbt_tests = {key for name in FEATURES[:3] for key in world.graph.get(AssetKey(name)).check_keys}
    assert dbt_tests and world.checks_requested == dbt_tests
    assert world.tick() == {}  # requested once

    # The day's runs land: nothing more to do.
    for name in FEATURES + NEWEST_DAY_CHAIN:
        world.record(name, new_day)
    assert world.tick() == {}


def test_the_chain_follows_in_order_across_runs(world):
    """When the day's upstream lands in an earlier run (e.g. the features of a backfill), the next tick
    carries the newest day on to the models; an old day's features never retrain old models."""
    new_day = str(date.fromisoformat(DAYS[-1]) + timedelta(days=1))
    for name in ["raw_reviews", *FEATURES]:
        world.record(name, new_day, checks=True)  # an earlier run, its checks passed
    requested = world.tick()
    assert requested == {name: [new_day] for name in NEWEST_DAY_CHAIN}


def test_a_replaced_old_day_refreshes_later_features_and_only_the_newest_models(world):
    replaced = DAYS[1]
    world.record("raw_reviews", replaced)
    requested = world.tick()
    assert requested.pop("stg_reviews") == [replaced]
    for name in FEATURES[1:]:
        assert requested.pop(name) == DAYS[1:], name  # every day whose windows reach the replaced one
    assert requested == {name: [DAYS[-1]] for name in NEWEST_DAY_CHAIN if name not in CATALOGUE_ONLY}


def test_an_old_day_landing_late_does_not_move_the_newest_day(world):
    """A late file for a day before the newest (a gap filled) refreshes features, models of the newest only."""
    late = str(date.fromisoformat(DAYS[0]) - timedelta(days=1))
    world.record("raw_reviews", late)
    requested = world.tick()
    assert requested["stg_reviews"] == [late]
    assert requested["online_features"] == [late, *DAYS]
    assert requested["serving_release"] == [DAYS[-1]]


def test_cross_partition_dependency_is_declared(graph):
    """The UI's lineage and stale markers see that a feature day reads the days before it."""
    _, asset_graph = graph
    from recsys_assets.feature_contract import LOOKBACK_DAYS

    for name in ("user_rating_stats", "parent_asin_rating_stats", "popular_items", "user_sequences"):
        node = asset_graph.get(AssetKey(name))
        parent = next(k for k in node.parent_keys if k.to_user_string() in ("stg_reviews", "raw_reviews"))
        mapping = asset_graph.get_partition_mapping(node.key, parent)
        assert mapping.start_offset == -LOOKBACK_DAYS, name


def test_freshness_checks_fail_until_the_newest_day_reaches_the_online_store_and_serving(home):
    """The checks judge by the newest landed day: stale while a new day is on its way, fresh once served."""
    from dagster import build_asset_check_context, build_sensor_context

    from recsys_assets.defs.automation.freshness import (
        fresh_for_newest_landed_day,
        freshness_sensor,
        serves_newest_landed_day,
    )
    from recsys_assets.serving_data.release import Release, ReleaseStore

    instance = DagsterInstance.ephemeral()
    serving = home.resources()["serving"]
    releases = ReleaseStore(serving.kv())

    def check(fn, **resources):
        return fn(build_asset_check_context(instance=instance), **resources)

    def land(name, day):
        instance.report_runless_asset_event(AssetMaterialization(AssetKey(name), partition=day))

    assert check(fresh_for_newest_landed_day).passed  # nothing landed: nothing is stale
    land("raw_reviews", DAYS[0])
    assert not check(fresh_for_newest_landed_day).passed
    assert not check(serves_newest_landed_day, serving=serving).passed
    land("online_features", DAYS[0])
    releases.publish(Release(day=DAYS[0], models={}, collections={}, candidates={}, pipeline="popularity"))
    assert check(fresh_for_newest_landed_day).passed
    assert check(serves_newest_landed_day, serving=serving).passed

    land("raw_reviews", DAYS[0])  # the day's file replaced: the online store predates it
    assert not check(fresh_for_newest_landed_day).passed
    land("online_features", DAYS[0])
    land("raw_reviews", DAYS[1])  # a new day: serving lags until its release
    result = check(serves_newest_landed_day, serving=serving)
    assert not result.passed and DAYS[1] in result.description

    # The sensor records the evaluations whose verdict changed (never evaluated: both), no run needed.
    def sensor_tick():
        result = freshness_sensor(build_sensor_context(instance=instance, resources={"serving": serving}))
        for event in getattr(result, "asset_events", []):
            instance.report_runless_asset_event(event)  # what the daemon does with a sensor's asset events
        return {e.check_name: e.passed for e in getattr(result, "asset_events", [])}

    assert sensor_tick() == {"fresh_for_newest_landed_day": False, "serves_newest_landed_day": False}
    assert sensor_tick() == {}  # unchanged: nothing recorded again
    land("online_features", DAYS[1])
    assert sensor_tick() == {"fresh_for_newest_landed_day": True}
    releases.publish(Release(day=DAYS[1], models={}, collections={}, candidates={"popular": DAYS[1]},
                             pipeline="popularity"))
    assert sensor_tick() == {"serves_newest_landed_day": True}
    land("raw_reviews", DAYS[2])
    assert sensor_tick() == {"fresh_for_newest_landed_day": False, "serves_newest_landed_day": False}

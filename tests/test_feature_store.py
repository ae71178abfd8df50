"""Feast feature store: apply/materialize/read round trip, fresh views, point-in-time retrieval, consistency."""

import dataclasses
from datetime import date, datetime, timezone

import duckdb
import pandas as pd
import pytest

from recsys_assets.defs.feature_store.assets import APPLY_WHEN_NEW_OR_CHANGED, feast_definitions, online_features
from recsys_assets.defs.shared.resources import FeatureStoreResource
from recsys_assets.feature_store.asof_offline_store import asof_applies
from recsys_assets.feature_store.consistency import compare_online_with_offline
from recsys_assets.feature_store.definitions import DEFINITIONS_VERSION, ITEM_VIEW, USER_VIEW, fresh_view
from recsys_assets.feature_store.online import BATCH, FRESH, MISSING, OnlineFeatures
from recsys_assets.feature_store.push import push_interaction
from recsys_assets.feature_store.repository import FeatureRepository, FeatureStoreConfig
from recsys_assets.feature_store.retrieval import point_in_time_features
from recsys_assets.settings import GcpSettings, Settings
from recsys_assets.warehouse.stores import DuckDBWarehouse

DAY_MS = 86_400_000


def _warehouse_rows(home, sql: str) -> pd.DataFrame:
    con = duckdb.connect(str(home.settings.warehouse_path), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def _latest_user_rows(home) -> pd.DataFrame:
    """Each user's newest row in the dbt table, read straight from DuckDB (not through Feast)."""
    return _warehouse_rows(home, """
        select * from main.user_rating_stats
        qualify row_number() over (partition by user_id order by timestamp desc) = 1
        order by user_id""").set_index("user_id")


def _check_results(result, asset_name: str) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()
            if e.asset_key.to_user_string() == asset_name}


def test_online_store_serves_each_users_latest_state(featured_home):
    latest = _latest_user_rows(featured_home)
    users = list(latest.index[:50])
    rows = OnlineFeatures(featured_home.feature_repository().store).users(users)
    assert rows.keys == users and set(rows.source) <= {BATCH, FRESH}
    for i, user in enumerate(users):
        want = latest.loc[user]
        got = rows.row(i)
        assert got["user_rating_cnt_90d"] == want["user_rating_cnt_90d"]
        assert got["user_rating_avg_prev_rating_90d"] == pytest.approx(want["user_rating_avg_prev_rating_90d"])
        assert got["user_rating_list_10_recent_asin"] == list(want["user_rating_list_10_recent_asin"])
        assert got["user_rating_list_10_recent_asin_timestamp"] == list(want["user_rating_list_10_recent_asin_timestamp"])


def test_latest_state_includes_the_users_last_review(featured_home):
    """What serving reads is the state after the newest review, not before it."""
    last = _warehouse_rows(featured_home, """
        select user_id, parent_asin, timestamp from raw.raw_reviews
        qualify row_number() over (partition by user_id order by timestamp desc, parent_asin desc) = 1
        limit 20""")
    rows = OnlineFeatures(featured_home.feature_repository().store).users(list(last.user_id))
    for i, review in last.iterrows():
        assert rows.row(i)["user_rating_list_10_recent_asin"][-1] == review.parent_asin
        assert rows.row(i)["user_rating_list_10_recent_asin_timestamp"][-1] == review.timestamp


def test_unknown_entities_come_back_with_defaults(featured_home):
    reader = OnlineFeatures(featured_home.feature_repository().store)
    known_item = _warehouse_rows(featured_home, "select parent_asin from main.parent_asin_rating_stats limit 1").iloc[0, 0]
    users, items = reader.for_ranking("no-such-user", [known_item, "no-such-item"])
    assert users.source == [MISSING]
    assert users.row(0) == {"user_rating_cnt_90d": 0, "user_rating_avg_prev_rating_90d": None,
                            "user_rating_list_10_recent_asin": [], "user_rating_list_10_recent_asin_timestamp": []}
    assert items.source == [BATCH, MISSING]
    assert items.row(0)["parent_asin_rating_cnt_365d"] > 0
    assert items.row(1)["parent_asin_rating_cnt_365d"] == 0 and items.row(1)["parent_asin_rating_avg_prev_rating_7d"] is None
    assert reader.users([]).keys == [] and reader.items([]).columns["parent_asin_rating_cnt_7d"] == []


def test_user_and_candidates_are_read_in_one_call(featured_home):
    store = featured_home.feature_repository().store
    latest = _latest_user_rows(featured_home)
    user = latest.index[0]
    candidates = list(_warehouse_rows(featured_home, "select distinct parent_asin from raw.raw_reviews order by 1 limit 100").parent_asin)
    calls = []
    original = store.get_online_features
    store.get_online_features = lambda **kw: calls.append(kw) or original(**kw)
    users, items = OnlineFeatures(store).for_ranking(user, candidates)
    assert len(calls) == 1 and len(calls[0]["entity_rows"]) == 100
    store.get_online_features = original
    separately = OnlineFeatures(store)
    assert users.as_dicts() == separately.users([user]).as_dicts()
    assert items.as_dicts() == separately.items(candidates).as_dicts()


def test_pushed_interaction_is_read_first_and_older_pushes_lose_to_batch(featured_home):
    store = featured_home.feature_repository().store
    reader = OnlineFeatures(store)
    latest = _latest_user_rows(featured_home).sort_values("user_rating_cnt_90d", kind="stable")
    user = latest.index[0]  # among the least active: never the most active user the serving tests read
    before = reader.users([user]).row(0)
    item = "B0PUSHED01"
    last_ms = before["user_rating_list_10_recent_asin_timestamp"][-1]

    state = push_interaction(store, user, item, 5.0, last_ms + 60_000)
    after = reader.users([user])
    assert after.source == [FRESH] and after.row(0) == state
    assert after.row(0)["user_rating_list_10_recent_asin"] == [*before["user_rating_list_10_recent_asin"], item][-10:]
    assert after.row(0)["user_rating_cnt_90d"] == before["user_rating_cnt_90d"] + 1
    expected_avg = (before["user_rating_avg_prev_rating_90d"] * before["user_rating_cnt_90d"] + 5) / (before["user_rating_cnt_90d"] + 1)
    assert after.row(0)["user_rating_avg_prev_rating_90d"] == pytest.approx(expected_avg)
    pushed_item = reader.items([item])
    assert pushed_item.source == [FRESH] and pushed_item.row(0)["parent_asin_rating_cnt_7d"] == 1

    # A fresh row older than the batch row is stale: the batch state wins.
    other = latest.index[1]
    batch_state = reader.users([other]).row(0)
    push_interaction(store, other, item, 1.0, batch_state["user_rating_list_10_recent_asin_timestamp"][0] - DAY_MS)
    assert reader.users([other]).source == [BATCH] and reader.users([other]).row(0) == batch_state

    with pytest.raises(ValueError, match="rating"):
        push_interaction(store, user, item, 9.0, last_ms + 120_000)


def _expected_state_before(events: pd.DataFrame, user: str, item: str, t: int) -> dict:
    """Computed here from raw events: the state as of the entity's last review moment strictly before t."""
    expected = {}
    mine = events[(events.user_id == user) & (events.timestamp < t)].sort_values(["timestamp", "parent_asin"])
    if len(mine):
        stamp = int(mine.timestamp.max()) + 1
        window = mine[mine.timestamp >= stamp - 90 * DAY_MS]
        expected.update(user_rating_cnt_90d=len(window), user_rating_avg_prev_rating_90d=window.rating.mean(),
                        user_rating_list_10_recent_asin=list(mine.parent_asin[-10:]),
                        user_rating_list_10_recent_asin_timestamp=list(mine.timestamp[-10:]))
    else:
        expected.update(user_rating_cnt_90d=0, user_rating_avg_prev_rating_90d=None,
                        user_rating_list_10_recent_asin=[], user_rating_list_10_recent_asin_timestamp=[])
    theirs = events[(events.parent_asin == item) & (events.timestamp < t)]
    for days in (7, 365):
        stamp = int(theirs.timestamp.max()) + 1 if len(theirs) else t
        window = theirs[theirs.timestamp >= stamp - days * DAY_MS]
        expected[f"parent_asin_rating_cnt_{days}d"] = len(window)
        expected[f"parent_asin_rating_avg_prev_rating_{days}d"] = window.rating.mean() if len(window) else None
    return expected


def test_point_in_time_training_rows_never_see_the_event_or_later(featured_home):
    events = _warehouse_rows(featured_home, "select user_id, parent_asin, rating, timestamp from raw.raw_reviews")
    sample = events.sample(n=80, random_state=3).reset_index(drop=True)
    got = point_in_time_features(featured_home.feature_repository().store, sample)
    assert list(got.user_id) == list(sample.user_id) and list(got.timestamp) == list(sample.timestamp)
    for i, row in sample.iterrows():
        # No leak, stated directly: nothing in an example comes from its own moment or after it.
        assert all(ts < row.timestamp for ts in got.user_rating_list_10_recent_asin_timestamp[i])
        expected = _expected_state_before(events, row.user_id, row.parent_asin, row.timestamp)
        for name, value in expected.items():
            actual = got[name][i]
            if isinstance(value, list):
                assert list(actual) == value, (i, name)
            elif value is None:
                assert actual is None or actual != actual, (i, name)
            else:
                assert actual == pytest.approx(value), (i, name)


def test_asof_join_returns_what_feasts_own_join_returns(featured_home):
    """The local offline store answers point-in-time requests with DuckDB's ASOF JOIN: the same rows as
    Feast's DuckDB join, at the exact feature stamps too (a row stamped t is seen by an entity row at t,
    not at t - 1 ms), and for users and items with no state yet."""
    store = featured_home.feature_repository().store
    assert type(store._get_provider().offline_store).__name__ == "AsofDuckDBOfflineStore"
    stamps = _warehouse_rows(featured_home, "select user_id, epoch_ms(timestamp) as timestamp from "
                                            "main.user_rating_stats using sample reservoir(40 rows) repeatable (5)")
    events = _warehouse_rows(featured_home, "select user_id, parent_asin, timestamp from raw.raw_reviews")
    at_stamp = stamps.assign(parent_asin=events.parent_asin.iloc[:40].to_numpy(),
                             timestamp=stamps.timestamp.astype("int64"))
    unknown = pd.DataFrame({"user_id": ["nobody"], "parent_asin": ["nothing"], "timestamp": [0]})
    entities = pd.concat([events.sample(n=200, random_state=4), at_stamp,
                          at_stamp.assign(timestamp=at_stamp.timestamp - 1), unknown], ignore_index=True)
    feasts_own = FeatureRepository(dataclasses.replace(
        FeatureStoreConfig.local(featured_home.settings.feast_dir), offline_store={"type": "duckdb"})).store
    asof = point_in_time_features(store, entities)
    pd.testing.assert_frame_equal(asof, point_in_time_features(feasts_own, entities))
    assert asof.user_rating_cnt_90d.iloc[-1] == 0 and (asof.user_rating_cnt_90d.iloc[200:240] > 0).all()
    # What it cannot answer the same way goes to Feast's join: the fresh views (push-fed, a ttl), an SQL entity
    # query, the created-timestamp cutoff.
    views = {view.name: view for view in store.list_feature_views()}
    assert asof_applies([views[USER_VIEW], views[ITEM_VIEW]], entities, [], False)
    assert not asof_applies([views[USER_VIEW], views[fresh_view(USER_VIEW)]], entities, [], False)
    assert not asof_applies([views[USER_VIEW]], "select 1", [], False)
    assert not asof_applies([views[USER_VIEW]], entities, [], True)


def test_consistency_check_catches_a_tampered_online_store_and_a_rerun_repairs_it(featured_home):
    repo = featured_home.feature_repository()
    last_day = featured_home.days[-1]
    assert compare_online_with_offline(repo, [last_day], seed=11).passed
    victim = repo.entity_sample(USER_VIEW, [last_day], 200, seed=11)[0]
    row = _latest_user_rows(featured_home).loc[[victim]].reset_index()
    row["user_rating_cnt_90d"] = row["user_rating_cnt_90d"] + 1000
    repo.store.write_to_online_store(USER_VIEW, row.drop(columns=["partition_date"]))

    report = compare_online_with_offline(repo, [last_day], seed=11)
    assert not report.passed
    assert [(m["user_id"], m["feature"]) for m in report.mismatches] == [(victim, "user_rating_cnt_90d")]

    result = featured_home.materialize([online_features], str(last_day))
    assert _check_results(result, "online_features")["online_matches_offline"].passed
    assert compare_online_with_offline(repo, [last_day], seed=11).passed


def test_rerunning_an_older_day_keeps_newer_states_online(featured_home):
    first = str(featured_home.days[0])
    result = featured_home.materialize([online_features], first)
    metadata = result.asset_materializations_for_node("online_features")[0].metadata
    assert metadata["window_end"].value > f"{featured_home.days[-1]}"  # reached over the later days again
    assert _check_results(result, "online_features")["online_matches_offline"].passed
    assert compare_online_with_offline(featured_home.feature_repository(), featured_home.days, seed=5).passed


def test_a_missing_registry_is_applied_by_the_run_itself(featured_home):
    """The original failed its first run until someone ran `feast apply`; here the run applies."""
    repo = featured_home.feature_repository()
    (featured_home.settings.feast_dir / "registry.db").unlink()
    assert repo.applied_version() is None
    result = featured_home.materialize([online_features], str(featured_home.days[-1]))
    metadata = result.asset_materializations_for_node("online_features")[0].metadata
    assert metadata["definitions_reapplied"].value is True
    assert FeatureRepository(repo.config).applied_version() == DEFINITIONS_VERSION
    # The asset records what it applied; nothing to do a second time.
    featured_home.materialize_unpartitioned([feast_definitions])
    assert FeatureRepository(repo.config).ensure_applied() is False


def test_changed_definitions_are_reapplied_by_automation(tmp_path):
    """The daemon evaluates the deployed code, the code changes, the next evaluation re-applies."""
    from dagster import AssetSpec, DagsterInstance, Definitions, evaluate_automation_conditions, materialize

    instance = DagsterInstance.ephemeral()
    resources = {"feature_store": FeatureStoreResource(feast_dir=str(tmp_path / "feast"), environment="local")}
    materialize([feast_definitions], instance=instance, resources=resources)
    deployed = Definitions(assets=[AssetSpec("feast_definitions", code_version="an-older-version",
                                             automation_condition=APPLY_WHEN_NEW_OR_CHANGED)])
    current = Definitions(assets=[feast_definitions], resources=resources)

    result = evaluate_automation_conditions(defs=deployed, instance=instance)
    assert result.total_requested == 0
    result = evaluate_automation_conditions(defs=current, instance=instance, cursor=result.cursor)
    assert result.total_requested == 1
    result = evaluate_automation_conditions(defs=current, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0


def test_redis_online_store_round_trip(generated_home, redis_url, tmp_path):
    config = FeatureStoreConfig.local(tmp_path / "feast", online="redis", redis_url=redis_url)
    repo = FeatureRepository(config)
    assert repo.ensure_applied() is True
    days = generated_home.days
    rows = repo.sync_offline(DuckDBWarehouse(generated_home.settings.warehouse_path), days)
    assert rows[USER_VIEW] > 0 and rows[ITEM_VIEW] > 0
    repo.materialize_days(days[0], days[-1])
    assert compare_online_with_offline(repo, days, seed=2).passed

    latest = _latest_user_rows(generated_home)
    user = latest.index[3]
    reader = OnlineFeatures(repo.store)
    assert reader.users([user]).row(0)["user_rating_cnt_90d"] == latest.loc[user, "user_rating_cnt_90d"]
    stamp = int(datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    assert reader.items(["B0REDIS001"]).source == [MISSING]  # Redis answers "present, empty" for it
    push_interaction(repo.store, user, "B0REDIS001", 4.0, stamp)
    assert reader.users([user]).source == [FRESH]
    assert reader.items(["B0REDIS001"]).row(0)["parent_asin_rating_cnt_365d"] == 1
    assert reader.users(["nobody"]).source == [MISSING]


def test_offline_export_is_idempotent(featured_home):
    repo = featured_home.feature_repository()
    warehouse = DuckDBWarehouse(featured_home.settings.warehouse_path)
    day = featured_home.days[2]
    first = repo.sync_offline(warehouse, [day])
    again = repo.sync_offline(warehouse, [day])
    assert first == again
    files = sorted((featured_home.settings.feast_dir / "offline" / USER_VIEW).glob("*.parquet"))
    assert [f.stem for f in files] == [str(d) for d in featured_home.days]
    exported = pd.concat(pd.read_parquet(f) for f in files)
    assert len(exported) == _warehouse_rows(featured_home, "select count(*) n from main.user_rating_stats").n[0]
    assert date.fromisoformat(files[-1].stem) == featured_home.days[-1]


def test_gcp_configuration_builds_offline(tmp_path):
    """RECSYS_ENV=gcp: BigQuery sources over the dbt tables, Redis online, registry on GCS; no network."""
    from feast.infra.offline_stores.bigquery_source import BigQuerySource

    from recsys_assets.feature_store.definitions import build_repository

    settings = Settings(env="gcp", home=tmp_path, gcp=GcpSettings(gcp_project="p"))
    config = FeatureStoreConfig.for_settings(settings)
    repo_config = config.repo_config()
    assert repo_config.offline_store.type == "bigquery" and repo_config.online_store.type == "redis"
    assert repo_config.registry.path == "gs://p-feast/registry.db"
    assert repo_config.offline_store.location == "US" and repo_config.online_store.connection_string == "redis-master:6379"
    sources = {o.name: o.batch_source.table for o in build_repository(config.sources)
               if getattr(o, "batch_source", None) is not None and isinstance(o.batch_source, BigQuerySource)}
    assert sources[USER_VIEW] == "p.features.user_rating_stats"
    assert sources[ITEM_VIEW] == "p.features.parent_asin_rating_stats"


def test_item_feature_cache_reads_misses_in_one_call_and_expires(featured_home):
    from recsys_assets.feature_store.online import ItemFeatureCache

    store = featured_home.feature_repository().store
    reader = OnlineFeatures(store)
    items = _warehouse_rows(featured_home, "select distinct parent_asin from main.parent_asin_rating_stats "
                                          "order by 1 limit 30")["parent_asin"].tolist()
    calls = []
    original = reader.items
    reader.items = lambda ids: calls.append(list(ids)) or original(ids)
    cache = ItemFeatureCache(reader, ttl_s=60)
    first = cache.items(items[:20] + ["B0NOSUCH01"])
    assert first.as_dicts() == original(items[:20] + ["B0NOSUCH01"]).as_dicts() and first.source[-1] == MISSING
    again = cache.items(items[10:30])  # 10 cached, 10 new: one call for the 10 new
    assert calls == [items[:20] + ["B0NOSUCH01"], items[20:30]]
    assert again.as_dicts() == original(items[10:30]).as_dicts()

    # Within the TTL a cached row may be stale by design; a cache with ttl 0 always reads through.
    push_interaction(store, "cache-test-user", items[0], 5.0, 1_900_000_000_000)
    assert cache.items([items[0]]).row(0) == first.row(0)
    assert ItemFeatureCache(reader, ttl_s=0).items([items[0]]).source == [FRESH]

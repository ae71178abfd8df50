"""The Ray Serve app over real HTTP on 127.0.0.1, started as `recsys serve` over a trained, released home:
every endpoint, cold start, bad input, the token, live interactions, and a release switch under load."""

import json
import os
import signal
import threading
import time
from functools import partial

import httpx
import pandas as pd
import psutil
import pytest
from conftest import SERVICE_TOKEN, recsys_env, serving_assets

from recsys_assets.data.schema import ITEMS_FILE
from recsys_assets.serving.config import serving_kv
from recsys_assets.serving_data.release import Release, ReleaseStore
from tests.support.scrape import wait_for_samples
from tests.support.wrk import run_wrk

TOKEN = SERVICE_TOKEN
VERSION_FIELDS = ("model_version", "index_version", "request_id")


@pytest.fixture(scope="module")
def known(served_home):
    """An active user (most reviews) and catalogue items, from the landed data."""
    reviews = pd.concat([pd.read_parquet(p) for p in sorted(served_home.landing.path.glob("recsys_data_upto_*"))])
    user = reviews.groupby("user_id").size().sort_index().sort_values(ascending=False, kind="stable").index[0]
    items = pd.read_parquet(served_home.landing.path / ITEMS_FILE)["parent_asin"].tolist()
    return {"user": user, "items": items, "seen": set(reviews.loc[reviews["user_id"] == user, "parent_asin"])}


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    for field in VERSION_FIELDS:
        assert body[field], (field, body)
    return body


def test_popular_i2i_and_last_item_i2i(service, known):
    popular = _ok(service.get("/recs/popular", params={"count": 5}))["items"]
    assert len(popular) == 5 and all(p["title"] for p in popular)
    counts = [p["score"] for p in popular]
    assert counts == sorted(counts, reverse=True)

    item = popular[0]["item_id"]
    similar = _ok(service.get("/recs/i2i", params={"item_id": item, "count": 7}))["items"]
    assert len(similar) == 7 and item not in {s["item_id"] for s in similar}

    last = _ok(service.get("/recs/u2i/last_item_i2i", params={"user_id": known["user"], "count": 5}))
    assert last["cold_start"] is False and last["last_item"] in known["seen"]
    assert len(last["items"]) == 5


def test_rerank_scores_retrieved_candidates_minus_seen(service, known, served_home):
    body = _ok(service.get("/recs/u2i/rerank", params={"user_id": known["user"], "top_k_retrieval": 100,
                                                        "count": 10, "debug": True}))
    items = body["items"]
    assert body["cold_start"] is False and len(items) == 10
    assert len({i["item_id"] for i in items}) == 10
    recent = set(_ok(service.get("/features/user", params={"user_id": known["user"]}))["features"][
        "user_rating_list_10_recent_asin"])
    assert not recent & {i["item_id"] for i in items}
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    # the two-tower's top 100 (of the items the user has not seen) + EASE's + recently popular + last-item i2i
    # + popular, deduplicated
    assert body["debug"]["candidates"] >= min(100, len(known["items"]) - len(known["seen"]))
    assert {i["source"] for i in items} <= {"two_tower", "ease", "recent_popular", "last_item_i2i", "popular"}
    assert all(0 <= i["ranker_probability"] <= 1 for i in items)
    # Ordered as validation chose for this ranker version (its tags), each expert's score shown.
    report = json.loads((served_home.path / "evaluation" / "latest.json").read_text())
    if body["debug"]["ranker"] == report["versions"]["ranker"]:
        fusion = report["choices"]["fusion"]
        assert body["debug"]["fusion"] == fusion
        assert all(i["ease_score"] is not None for i in items if i["source"] == "ease")
        assert fusion["ease_weight"] == 0 or any(i["ease_score"] is not None for i in items)
        assert fusion["recent_weight"] == 0 or all(i["recent_popularity"] is not None for i in items)


def test_seq_rating_prediction_and_user_features(service, known):
    items = known["items"][:4]
    body = _ok(service.post("/score/seq_rating_prediction", json={"user_id": known["user"], "item_ids": items}))
    assert [s["item_id"] for s in body["scores"]] == items
    assert all(0 < s["score"] < 1 for s in body["scores"])
    features = _ok(service.get("/features/user", params={"user_id": known["user"]}))
    assert features["features"]["user_rating_cnt_90d"] > 0


def test_unknown_user_gets_popular_as_cold_start(service):
    popular = [p["item_id"] for p in _ok(service.get("/recs/popular", params={"count": 5}))["items"]]
    for path in ("/recs/u2i/rerank", "/recs/u2i/last_item_i2i"):
        body = _ok(service.get(path, params={"user_id": "never-seen-user", "count": 5}))
        assert body["cold_start"] is True and [i["item_id"] for i in body["items"]] == popular
    assert service.get("/features/user", params={"user_id": "never-seen-user"}).status_code == 404


@pytest.mark.parametrize("method,path,kwargs,status", [
    ("get", "/recs/popular", {"params": {"count": 0}}, 422),
    ("get", "/recs/popular", {"params": {"count": "ten"}}, 422),
    ("get", "/recs/u2i/rerank", {"params": {}}, 422),
    ("get", "/recs/u2i/rerank", {"params": {"user_id": "u", "top_k_retrieval": 5}}, 422),
    ("get", "/recs/u2i/rerank", {"params": {"user_id": "u", "count": 51}}, 422),
    ("get", "/recs/u2i/rerank", {"params": {"user_id": "u", "debug": "maybe"}}, 422),
    ("get", "/recs/i2i", {"params": {"item_id": "no-such-item"}}, 404),
    ("post", "/score/seq_rating_prediction", {"json": {"user_id": "u", "item_ids": []}}, 422),
    ("post", "/score/seq_rating_prediction", {"json": {"user_id": "u", "item_ids": ["no-such-item"]}}, 404),
    ("post", "/score/seq_rating_prediction", {"content": b"{not json", "headers": {"content-type": "application/json"}},
     422),
])
def test_bad_input_gets_a_clear_4xx(service, method, path, kwargs, status):
    response = getattr(service, method)(path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["detail"] and body["request_id"]


def test_interactions_need_the_bearer_token(service, known):
    body = {"user_id": known["user"], "item_id": known["items"][0]}
    assert service.post("/interactions", json=body).status_code == 401
    assert service.post("/interactions", json=body, headers={"authorization": "Bearer wrong"}).status_code == 401
    bad = service.post("/interactions", json={**body, "rating": 7}, headers={"authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 422
    unknown = service.post("/interactions", json={**body, "item_id": "no-such-item"},
                           headers={"authorization": f"Bearer {TOKEN}"})
    assert unknown.status_code == 404


@pytest.mark.parametrize("timestamp_ms", [99999999999999999, int(time.time() * 1000) + 3 * 86_400_000, 5])
def test_an_interaction_out_of_the_allowed_time_window_is_a_422_that_says_the_window(service, known, timestamp_ms):
    response = service.post("/interactions", headers={"authorization": f"Bearer {TOKEN}"},
                            json={"user_id": known["user"], "item_id": known["items"][0], "timestamp_ms": timestamp_ms})
    assert response.status_code == 422, response.text
    message = response.json()["detail"][0]["msg"]
    assert "server's clock" in message or "greater than or equal" in message


def test_request_ids_and_bodies_are_bounded(service, known):
    plain = service.get("/healthz", headers={"x-request-id": "abc-123"})
    assert plain.headers["x-request-id"] == "abc-123"
    long = service.get("/healthz", headers={"x-request-id": "x" * 9_000})
    assert long.status_code == 200 and long.headers.get_list("x-request-id") != ["x" * 9_000]
    assert [len(v) <= 128 for v in long.headers.get_list("x-request-id")] == [True]
    huge = service.get("/healthz", headers={"x-request-id": "x" * 20_000})  # past the ingress's 16 KB of headers
    assert huge.status_code in (200, 400) and all(len(v) <= 128 for v in huge.headers.get_list("x-request-id"))
    body = {"user_id": known["user"], "item_ids": ["x" * 250] * 2000}  # ~0.5 MB
    response = service.post("/score/seq_rating_prediction", json=body)
    assert response.status_code == 413 and response.json()["request_id"]
    schema = service.get("/openapi.json").json()["components"]["schemas"]
    assert schema["ScoreRequest"]["properties"]["item_ids"]["maxItems"] == 500
    assert schema["Interaction"]["properties"]["timestamp_ms"]["anyOf"][0]["minimum"] > 0


def test_an_interaction_shows_in_the_next_rerank_and_in_the_event_log(service, known, served_home):
    user = known["user"]
    before = _ok(service.get("/recs/u2i/rerank", params={"user_id": user, "count": 10, "debug": True}))
    liked = before["items"][0]["item_id"]
    stamp = int(time.time() * 1000)
    response = service.post("/interactions", headers={"authorization": f"Bearer {TOKEN}"},
                            json={"user_id": user, "item_id": liked, "rating": 5, "timestamp_ms": stamp})
    assert response.status_code == 201, response.text
    assert response.json()["recent_items"][-1] == liked

    after = _ok(service.get("/recs/u2i/rerank", params={"user_id": user, "count": 10, "debug": True}))
    assert after["debug"]["feature_source"] == "fresh" and after["debug"]["retrieval"] == "qdrant"
    assert liked not in {i["item_id"] for i in after["items"]}  # now seen
    assert _ok(service.get("/recs/u2i/last_item_i2i", params={"user_id": user}))["last_item"] == liked

    day = time.strftime("%Y-%m-%d", time.gmtime(stamp / 1000))
    logged = [json.loads(line) for line in (served_home.path / "events" / f"{day}.jsonl").read_text().splitlines()]
    assert {"user_id": user, "parent_asin": liked, "timestamp": stamp}.items() <= logged[-1].items()


def test_healthz_readyz_metrics_and_docs(service):
    assert service.get("/healthz").json() == {"status": "ok"}
    ready = _ok(service.get("/readyz"))
    assert ready["ready"] is True
    # /metrics answers Ray's export of every replica (telemetry.py), which lags requests by a report interval.
    scrape = lambda: service.get("/metrics").text  # noqa: E731
    wait_for_samples(scrape, "ray_recsys_requests_total", endpoint="/recs/u2i/rerank", status="200")
    wait_for_samples(scrape, "ray_recsys_release_info")
    paths = set(service.get("/openapi.json").json()["paths"])
    assert {"/recs/popular", "/recs/i2i", "/recs/u2i/last_item_i2i", "/recs/u2i/rerank",
            "/score/seq_rating_prediction", "/features/user", "/interactions", "/healthz", "/readyz"} <= paths
    assert service.get("/docs").status_code == 200
    assert "Get Recommendations" in service.get("/").text


@pytest.mark.timeout(600)
def test_rollback_moves_serving_with_zero_failed_requests(service, served_home, known):
    """A champion moved outside a run: the sensor asks for the serving assets, the release is published,
    and every replica moves to the other model and index within 60 s while requests keep succeeding."""
    from dagster import AssetKey, DagsterRun, DagsterRunStatus, SkipReason, build_sensor_context

    from recsys_assets.defs.models.assets import item2vec, ranker, two_tower
    from recsys_assets.defs.serving.release import champion_sensor
    from recsys_assets.defs.shared.resources import mlflow_store
    from recsys_assets.models.registry import MODEL_NAMES, set_champion

    day = str(served_home.days[-1])
    before = _ok(service.get("/readyz"))
    # A second version of every model (the same day retrained), made champion by hand like a rollback.
    served_home.materialize([item2vec, two_tower, ranker], day)
    client = mlflow_store(served_home.settings).client()
    new = {name: max(int(v.version) for v in client.search_model_versions(f"name='{name}'")) for name in MODEL_NAMES}
    assert new != {k: int(v) for k, v in before["model_version"].items()}

    failures, answered, stop = [], [], threading.Event()

    def load():
        with httpx.Client(base_url=str(service.base_url), timeout=30) as c:
            while not stop.is_set():
                r = c.get("/recs/u2i/rerank", params={"user_id": known["user"], "count": 5})
                (answered if r.status_code == 200 else failures).append(r)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for name, version in new.items():
            set_champion(client, name, str(version))
        resources = served_home.resources()

        def tick():
            with recsys_env(served_home.path):
                return champion_sensor(build_sensor_context(instance=served_home.instance,
                                                            resources={"serving": resources["serving"]}))

        # While a run that publishes a release is on its way (the day's chain that just promoted), it waits.
        running = served_home.instance.add_run(DagsterRun(job_name="__ASSET_JOB", status=DagsterRunStatus.STARTED,
                                                          asset_selection=frozenset({AssetKey("serving_release")})))
        assert isinstance(tick(), SkipReason)
        served_home.instance.delete_run(running.run_id)
        request = tick()
        assert request.partition_key == day
        served_home.materialize(serving_assets(), day)
        release = ReleaseStore(serving_kv(served_home.settings)).current()
        assert release.models == {k: str(v) for k, v in new.items()}
        _wait_for_release(service, release.id)
        time.sleep(2)  # requests keep flowing after the switch
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, [f.text for f in failures[:3]]
    assert len(answered) > 20
    moved = _ok(service.get("/recs/u2i/rerank", params={"user_id": known["user"]}))
    assert moved["model_version"] == release.models
    assert moved["index_version"] == release.collections["two_tower_items"] != before["index_version"]

    # Back to the previous versions and forward again on the same day: each move is a request of its own.
    keys = [request.run_key]
    for versions in (before["model_version"], new):
        for name, version in versions.items():
            set_champion(client, name, str(version))
        keys.append(tick().run_key)
        served_home.materialize(serving_assets(), day)
    assert len(set(keys)) == 3, keys
    _wait_for_release(service, ReleaseStore(serving_kv(served_home.settings)).current().id)


def _wait_for_release(service, release_id: str, timeout_s: float = 60, answers: int = 12) -> None:
    """Until `answers` readyz in a row (spread over the replicas by the ingress) name the release."""
    deadline, streak = time.monotonic() + timeout_s, 0
    while streak < answers:
        streak = streak + 1 if service.get("/readyz").json().get("release") == release_id else 0
        assert time.monotonic() < deadline, f"serving did not move to {release_id} within {timeout_s} s"
        if not streak:
            time.sleep(0.5)


def test_a_release_that_cannot_load_leaves_the_served_one_in_place(service, served_home, known):
    releases = ReleaseStore(serving_kv(served_home.settings))
    good = releases.current()
    broken = Release(day=good.day, models={**good.models, "ranker": "999"}, collections=good.collections,
                     candidates=good.candidates)
    releases.publish(broken)
    try:
        wait_for_samples(lambda: service.get("/metrics").text, "ray_recsys_release_reloads_total",
                         outcome="load_failed")
        body = _ok(service.get("/recs/u2i/rerank", params={"user_id": known["user"]}))
        assert body["release"] == good.id and body["model_version"] == good.models
    finally:
        releases.publish(good)


def test_canary_share_goes_to_the_challenger_ranker(service, served_home, known):
    """With RECSYS_CANARY_SHARE=0.5 and a challenger in the release (a ranker the gate did not promote),
    about half the reranks are answered by it, and each answer says which."""
    releases = ReleaseStore(serving_kv(served_home.settings))
    current = releases.current()
    other = "1" if current.models["ranker"] != "1" else "2"
    canary = Release(day=current.day, models=current.models, collections=current.collections,
                     candidates=current.candidates, challengers={"ranker": other})
    releases.publish(canary)
    try:
        _wait_for_release(service, canary.id)
        variants = [_ok(service.get("/recs/u2i/rerank", params={"user_id": known["user"]}))["ranker_variant"]
                    for _ in range(60)]
        assert 10 <= variants.count("challenger") <= 50 and set(variants) == {"champion", "challenger"}
        wait_for_samples(lambda: service.get("/metrics").text, "ray_recsys_rerank_variant_total", variant="challenger")
    finally:
        releases.publish(Release(day=current.day, models=current.models, collections=current.collections,
                                 candidates=current.candidates))


def test_without_a_champion_the_release_serves_popularity(service, served_home, known):
    """No model has ever passed the gate (popularity wins on some data): the serving assets still
    materialize, the release serves popularity, every endpoint answers and says so; the first champion
    that appears takes over again."""
    from recsys_assets.defs.shared.resources import mlflow_store
    from recsys_assets.models.registry import CHAMPION, champion_versions, set_champion

    day = str(served_home.days[-1])
    client = mlflow_store(served_home.settings).client()
    champions = champion_versions(client)
    releases = ReleaseStore(serving_kv(served_home.settings))
    wait_for = partial(_wait_for_release, service)

    try:
        for name in champions:
            client.delete_registered_model_alias(name, CHAMPION)
        result = served_home.materialize(serving_assets(), day)
        assert result.success
        release = releases.current()
        assert release.pipeline == "popularity" and release.models == {}
        wait_for(release.id)

        def answer(response: httpx.Response) -> dict:
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["pipeline"] == "popularity" and body["release"] == release.id and body["request_id"]
            return body

        popular = [i["item_id"] for i in answer(service.get("/recs/popular", params={"count": 20}))["items"]]
        rerank = answer(service.get("/recs/u2i/rerank", params={"user_id": known["user"], "count": 5}))
        recent = set(answer(service.get("/features/user", params={"user_id": known["user"]}))["features"][
            "user_rating_list_10_recent_asin"])
        assert [i["item_id"] for i in rerank["items"]] == [i for i in popular if i not in recent][:5]
        similar = answer(service.get("/recs/i2i", params={"item_id": popular[0], "count": 5}))["items"]
        assert [i["item_id"] for i in similar] == popular[1:6]
        assert len(answer(service.get("/recs/u2i/last_item_i2i", params={"user_id": known["user"]}))["items"]) == 10
        scores = answer(service.post("/score/seq_rating_prediction",
                                     json={"user_id": known["user"], "item_ids": popular[:2]}))["scores"]
        assert scores[0]["score"] == 1.0 and 0 < scores[1]["score"] <= 1.0
        assert service.get("/recs/i2i", params={"item_id": "NOT-AN-ITEM"}).status_code == 404
    finally:
        for name, version in champions.items():
            set_champion(client, name, version)
        served_home.materialize(serving_assets(), day)
    back = releases.current()
    assert back.pipeline == "rerank" and back.models == champions
    wait_for(back.id)


# -- capacity: both cores, load shedding, a replica that dies (last: they load the service hard) --------------


@pytest.fixture(scope="module")
def active_users_file(served_home, tmp_path_factory):
    reviews = pd.concat([pd.read_parquet(p) for p in sorted(served_home.landing.path.glob("recsys_data_upto_*"))])
    path = tmp_path_factory.mktemp("load") / "users.txt"
    path.write_text("\n".join(reviews["user_id"].value_counts().index[:300]) + "\n")
    return path


def _replica_pids(home) -> list[int]:
    """The Serve replicas of this home's service (Ray names their processes ray::ServeReplica:...)."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if (proc.info["cmdline"] or [""])[0].startswith("ray::ServeReplica:recsys") and \
                    proc.environ().get("RECSYS_HOME") == str(home):
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return pids


def test_the_service_runs_one_replica_per_core_behind_haproxy(service, served_home):
    assert len(_replica_pids(served_home.path)) == (os.cpu_count() or 1)
    assert service.get("/readyz").status_code == 200


def test_overload_is_refused_fast_with_503_and_retry_after(service, active_users_file):
    result = run_wrk(str(service.base_url), active_users_file, clients=200, seconds=6)
    refused = result["statuses"].get("503", 0)
    assert refused > 0 and result["refused_with_retry_after"] == refused, result
    assert result["timeouts"] == 0 and result["connect_errors"] == 0 and result["read_errors"] == 0, result
    assert result["statuses"].get("200", 0) > 100 and set(result["statuses"]) <= {"200", "503"}, result
    _answers_within(service, 10)


def _answers_within(service, seconds: float) -> None:
    """/readyz answers 200 within `seconds` (the queues the load left behind drain first)."""
    deadline = time.monotonic() + seconds
    while service.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, f"no answer within {seconds} s"
        time.sleep(0.1)


@pytest.mark.timeout(300)
def test_a_killed_replica_costs_no_request_and_comes_back(service, served_home, active_users_file):
    """kill -9 of a replica 10 s into a 40 s run at 10 clients: at most 0.1% of requests fail, the service
    answers within 10 s (HAProxy sends the requests that found it dead to the other one), and Serve starts a
    new replica."""
    before = _replica_pids(served_home.path)
    outcome = {}
    load = threading.Thread(target=lambda: outcome.update(
        run_wrk(str(service.base_url), active_users_file, clients=10, seconds=40)))
    load.start()
    time.sleep(10)
    os.kill(before[0], signal.SIGKILL)
    _answers_within(service, 10)
    load.join()
    answered = outcome["statuses"].get("200", 0)
    failed = outcome["requests"] - answered + outcome["timeouts"] + outcome["connect_errors"] + outcome["read_errors"]
    assert answered > 400 and failed <= 0.001 * outcome["requests"], outcome
    deadline = time.monotonic() + 120
    while len(set(_replica_pids(served_home.path)) - {before[0]}) < len(before):
        assert time.monotonic() < deadline, "Serve did not replace the killed replica within 2 minutes"
        time.sleep(1)


def test_replicas_scale_on_ongoing_requests_when_a_maximum_is_set(tmp_path, monkeypatch):
    """RECSYS_SERVE_MAX_REPLICAS turns the fixed count into Serve autoscaling (what GKE runs); the options
    are ones Ray Serve accepts; an unknown ingress is refused by name."""
    from recsys_assets.serving.config import ServingConfig
    from recsys_assets.serving.deploy import application

    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    monkeypatch.setenv("RECSYS_SERVE_REPLICAS", "2")
    monkeypatch.setenv("RECSYS_SERVE_MAX_REPLICAS", "6")
    scaling = ServingConfig.from_env()
    assert scaling.replica_options()["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 6,
                                                               "target_ongoing_requests": 4}
    deployment = application(scaling)._bound_deployment  # validated by Ray Serve's DeploymentConfig
    assert deployment.max_queued_requests == 24 and deployment._deployment_config.autoscaling_config.max_replicas == 6
    monkeypatch.delenv("RECSYS_SERVE_MAX_REPLICAS")
    fixed = ServingConfig.from_env().replica_options()
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    monkeypatch.setenv("RECSYS_SERVE_INGRESS", "nginx")
    with pytest.raises(ValueError, match="RECSYS_SERVE_INGRESS"):
        ServingConfig.from_env()

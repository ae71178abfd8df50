"""Issue 33: an acknowledged interaction is never lost or doubled. The event log on real files (a real torn
write, fsync seen by strace), concurrent feature pushes from real processes on the real Feast store, late
events landed by the schedule, and POST /interactions on `recsys serve` (Ray Serve, two replicas sharing the
log) under concurrent clients that retry with the same Idempotency-Key."""

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import Home

from recsys_assets.data.schema import day_start_ms, review_file_name
from recsys_assets.feature_store.repository import FeatureRepository, FeatureStoreConfig
from recsys_assets.serving_data.events import EventLog, land_events
from tests.support.filesystems import fill, small_filesystem
from tests.support.processes import kill_service, serve_process

ROOT = Path(__file__).resolve().parents[2]  # the checkout under test (subprocesses import its code)
TOKEN = "reliability-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
ITEMS = [f"B0LIVE{i:04d}" for i in range(20)]


def _python(code: str, *args: str, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


# -- the event log ------------------------------------------------------------------------------------------

def test_an_append_is_fsynced_before_it_returns(tmp_path):
    """The 2xx acknowledges a durable event: the write reaches the disk (fsync) before append returns."""
    trace = tmp_path / "strace.txt"
    code = ("import sys; from recsys_assets.serving_data.events import EventLog; "
            "EventLog(sys.argv[1]).append('u', 'i', 5, 1_704_067_200_000)")
    done = _python(code, str(tmp_path / "events"), prefix=["strace", "-f", "-e", "trace=openat,write,fsync,fdatasync,close",
                                                          "-o", str(trace)])
    assert done.returncode == 0, done.stderr
    calls = trace.read_text().splitlines()
    opened = next(i for i, c in enumerate(calls) if "2024-01-01.jsonl" in c and "openat" in c)
    fd = re.search(r"= (\d+)$", calls[opened]).group(1)
    on_fd = [c.split(None, 1)[1] for c in calls[opened + 1:] if re.search(rf"\b(write|fsync|fdatasync|close)\({fd}\b", c)]
    names = [c.split("(")[0] for c in on_fd]
    closed = names.index("close")
    assert "write" in names[:closed], on_fd
    assert {"fsync", "fdatasync"} & set(names[names.index("write"):closed]), on_fd


def test_a_torn_last_line_loses_only_itself(tmp_path):
    """A writer killed mid-write leaves a line without its newline; the next event starts a line of its own,
    so only the torn event (never acknowledged) is lost."""
    log = EventLog(tmp_path / "events")
    day_ms = day_start_ms(date(2024, 1, 1))
    log.append("u1", "i1", 5, day_ms + 1)
    path = log.path("2024-01-01")
    whole = json.dumps({"user_id": "u2", "parent_asin": "i2", "rating": 4.0, "timestamp": day_ms + 2, "source": "api"})
    with open(path, "a") as f:
        f.write(whole[: len(whole) // 2])  # what a kill mid-write leaves
    log.append("u3", "i3", 3, day_ms + 3)
    assert log.read("2024-01-01")["user_id"].tolist() == ["u1", "u3"]


def test_landing_counts_a_logged_event_once_by_its_id(tmp_path):
    """The same event logged twice (a retry whose first request died after the append) lands once; distinct
    events with equal fields but distinct ids are still distinct only when their times differ."""
    from recsys_assets.data.landing import LocalLandingZone

    log, zone = EventLog(tmp_path / "events"), LocalLandingZone(tmp_path / "landing")
    day_ms = day_start_ms(date(2024, 1, 1))
    log.append("u1", "i1", 5, day_ms + 10, event_id="k-same")
    log.append("u1", "i1", 5, day_ms + 99, event_id="k-same")  # the retry, logged again
    log.append("u1", "i1", 5, day_ms + 20, event_id="other")
    assert land_events(log, zone, date(2024, 1, 1)) == 2
    assert sorted(zone.read_parquet(review_file_name(date(2024, 1, 1))).column("timestamp").to_pylist()) == [
        day_ms + 10, day_ms + 20]


# -- the feature push ---------------------------------------------------------------------------------------

PUSHER = """
import sys
from recsys_assets.feature_store.push import push_interaction
from recsys_assets.feature_store.repository import FeatureRepository, FeatureStoreConfig
store = FeatureRepository(FeatureStoreConfig.local(sys.argv[1])).store
for i in range(int(sys.argv[3])):
    push_interaction(store, "hot-user", f"{sys.argv[2]}-{i}", 4.0, 1_900_000_000_000 + i)
"""


def test_concurrent_pushes_for_one_user_from_several_processes_all_count(tmp_path):
    """Replicas push for the same user at once: every push counts (no read-modify-write lost)."""
    feast_dir = tmp_path / "feast"
    FeatureRepository(FeatureStoreConfig.local(feast_dir)).ensure_applied()
    processes, pushes = 3, 15
    workers = [subprocess.Popen([sys.executable, "-c", PUSHER, str(feast_dir), f"p{n}", str(pushes)], cwd=ROOT,
                                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, stderr=subprocess.PIPE,
                                text=True) for n in range(processes)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()
    from recsys_assets.feature_store.online import FRESH, OnlineFeatures

    rows = OnlineFeatures(FeatureRepository(FeatureStoreConfig.local(feast_dir)).store).users(["hot-user"])
    assert rows.source == [FRESH]
    assert rows.row(0)["user_rating_cnt_90d"] == processes * pushes


# -- landing ------------------------------------------------------------------------------------------------

def test_a_late_event_lands_at_the_next_tick(home: Home):
    """An event posted for a day three days back lands at the next tick; a landed day is not asked again
    until more events reach it."""
    from dagster import build_schedule_context

    from recsys_assets.defs.ingest.interactions import land_interactions_schedule, landed_interactions

    serving = home.resources()["serving"]
    log = EventLog(home.settings.events_dir)
    today = date(2024, 1, 10)
    tick = datetime(2024, 1, 10, 0, 15, tzinfo=timezone.utc)

    def requested(at: datetime) -> list[str]:
        context = build_schedule_context(scheduled_execution_time=at, resources={"serving": serving})
        return [r.partition_key for r in land_interactions_schedule(context)]

    yesterday, late = today - timedelta(days=1), today - timedelta(days=3)
    log.append("u", "i1", 5, day_start_ms(yesterday) + 1000)
    log.append("u", "i2", 4, day_start_ms(late) + 2000)  # a late event: its day ended three days ago
    log.append("u", "i3", 4, day_start_ms(today) + 3000)  # today's: still arriving, not yet
    assert requested(tick) == [str(late), str(yesterday)]
    for day in (late, yesterday):
        home.materialize([landed_interactions], str(day))
    assert requested(tick + timedelta(days=1)) == [str(today)]  # the older days are landed
    assert home.landing.read_parquet(review_file_name(late)).column("parent_asin").to_pylist() == ["i2"]

    log.append("u", "i4", 3, day_start_ms(late) + 4000)  # later still
    assert requested(tick + timedelta(days=1)) == [str(late), str(today)]


# -- POST /interactions on recsys serve -----------------------------------------------------------------------

def _live_home(path: Path) -> Home:
    """What POST /interactions needs, no pipeline: the Feast registry, an item catalogue, a popularity release."""
    from recsys_assets.serving.config import serving_kv
    from recsys_assets.serving_data.candidates import ITEM, POPULAR, POPULAR_KEY, SEQUENCE, CandidateStore
    from recsys_assets.serving_data.release import Release, ReleaseStore

    home = Home(path)
    FeatureRepository(FeatureStoreConfig.for_settings(home.settings)).ensure_applied()
    kv = serving_kv(home.settings)
    candidates = CandidateStore(kv)
    candidates.write(ITEM, "v1", [(item, {"title": item}) for item in ITEMS])
    candidates.write(POPULAR, "v1", [(POPULAR_KEY, [[item, 1] for item in ITEMS])])
    candidates.write(SEQUENCE, "v1", [("some-user", [])])
    ReleaseStore(kv).publish(Release(day="2024-01-06", models={}, collections={}, pipeline="popularity",
                                     candidates={ITEM: "v1", POPULAR: "v1", SEQUENCE: "v1"}))
    kv.close()
    return home


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    # The home on a small filesystem of its own, so a test can fill it (a real full disk under the event log).
    root = tmp_path_factory.mktemp("live")
    with small_filesystem(root, size_mb=256) as mounted:
        home = _live_home(root / "recsys_home")
        home.own_filesystem = mounted
        # Ray's own proxy in front of two replicas that share the log and the claims.
        env = {"RECSYS_API_TOKEN": TOKEN, "RECSYS_SERVE_REPLICAS": "2", "RECSYS_SERVE_INGRESS": "proxy"}
        home.serve_env, home.serve_log = env, tmp_path_factory.mktemp("live-log") / "serve.log"
        with serve_process(home.path, env=env, log_path=home.serve_log) as url:
            with httpx.Client(base_url=url, timeout=60) as client:
                yield home, client


def _user_count(home: Home, user: str) -> int:
    from recsys_assets.feature_store.online import OnlineFeatures

    store = FeatureRepository(FeatureStoreConfig.for_settings(home.settings)).store
    return OnlineFeatures(store).users([user]).row(0)["user_rating_cnt_90d"]


def test_a_failed_append_changes_no_features(live):
    """The log is the record: when its append fails the answer is a 5xx and the features are unchanged."""
    home, client = live
    user, stamp = f"fail-{uuid.uuid4().hex[:8]}", day_start_ms(date(2024, 1, 3)) + 5000
    blocker = home.settings.events_dir / "2024-01-03.jsonl"
    blocker.mkdir(parents=True)  # the day's file cannot be opened for append: a real failed write
    try:
        response = client.post("/interactions", headers=AUTH,
                               json={"user_id": user, "item_id": ITEMS[0], "timestamp_ms": stamp})
        assert response.status_code == 500, response.text
        assert _user_count(home, user) == 0
    finally:
        blocker.rmdir()


def test_a_retry_with_the_same_idempotency_key_is_recorded_once(live):
    home, client = live
    user, key = f"retry-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    body = {"user_id": user, "item_id": ITEMS[1]}  # no timestamp: the server's, once
    first = client.post("/interactions", headers={**AUTH, "idempotency-key": key}, json=body)
    again = client.post("/interactions", headers={**AUTH, "idempotency-key": key}, json=body)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["timestamp_ms"] == first.json()["timestamp_ms"]
    assert again.json()["event_id"] == first.json()["event_id"]
    assert _user_count(home, user) == 1
    day = datetime.fromtimestamp(first.json()["timestamp_ms"] / 1000, tz=timezone.utc).date().isoformat()
    logged = EventLog(home.settings.events_dir).read(day)
    assert (logged["user_id"] == user).sum() == 1
    other = client.post("/interactions", headers={**AUTH, "idempotency-key": key}, json={**body, "rating": 2})
    assert other.status_code == 422 and "different body" in other.text


def test_a_timestamp_before_the_first_partition_is_refused(live):
    _, client = live
    before = day_start_ms(date(2024, 1, 1)) - 1  # RECSYS_START_DATE's default: 2024-01-01
    response = client.post("/interactions", headers=AUTH,
                           json={"user_id": "early", "item_id": ITEMS[0], "timestamp_ms": before})
    assert response.status_code == 422, response.text
    assert "first daily partition" in response.json()["detail"][0]["msg"]


@pytest.mark.timeout(300)
def test_concurrent_clients_with_retries_land_every_acknowledged_event_once(live):
    """4 clients x 25 interactions, each sent with an Idempotency-Key and every third one sent again (a client
    or proxy retry; any failure is retried with the same key too), to two replicas; then landing: each
    acknowledged event is in the landing file once and counted once in the features."""
    home, client = live
    day = date(2024, 1, 5)
    acknowledged: dict[str, int] = {}
    not_pushed: dict[str, str] = {}  # acknowledged (logged) but the feature push failed: the batch counts them
    errors: list[str] = []
    lock = threading.Lock()

    def run_client(n: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            for i in range(25):
                key, user = f"c{n}-{i}-{uuid.uuid4().hex[:6]}", f"load-{n}"
                body = {"user_id": user, "item_id": ITEMS[i % len(ITEMS)], "rating": 1 + i % 5,
                        "timestamp_ms": day_start_ms(day) + n * 100_000 + i}
                sends = 0
                while sends < (2 if i % 3 == 0 else 1) or key not in acknowledged:  # as a client retries
                    sends += 1
                    if sends > 60:
                        errors.append(f"{key}: no 201 after 60 sends")
                        return
                    try:
                        response = own.post("/interactions", headers={**AUTH, "idempotency-key": key}, json=body)
                    except httpx.TransportError:
                        time.sleep(0.2)
                        continue
                    if response.status_code not in (201, 409, 500, 503):
                        errors.append(f"{key}: {response.status_code} {response.text[:200]}")
                        return
                    if response.status_code == 201:
                        with lock:
                            acknowledged[key] = body["timestamp_ms"]
                            if response.json().get("features_updated") is False:
                                not_pushed[key] = user
                    else:
                        time.sleep(0.5)  # busy or still recording: a client backs off

    threads = [threading.Thread(target=run_client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert len(acknowledged) == 100

    from recsys_assets.data.landing import LocalLandingZone

    assert land_events(EventLog(home.settings.events_dir), LocalLandingZone(home.settings.landing_dir), day) == 100
    landed = home.landing.read_parquet(review_file_name(day)).to_pandas()
    load = landed[landed["user_id"].str.startswith("load-")]
    assert len(load) == 100 and sorted(load["timestamp"]) == sorted(acknowledged.values())
    # Each pushed event counted once (never twice); one whose push failed was said so in its answer.
    expected = [25 - sum(1 for u in not_pushed.values() if u == f"load-{n}") for n in range(4)]
    assert [_user_count(home, f"load-{n}") for n in range(4)] == expected, not_pushed
    assert pd.Series(load["timestamp"]).is_unique


@pytest.mark.timeout(300)
def test_a_full_disk_acknowledges_only_what_it_kept(live):
    """The event log's filesystem fills up: interactions are refused (never a 2xx for an event not on disk)
    while reads keep answering; once space is freed the clients' retries (same keys) are recorded, and every
    acknowledged event is in the log exactly once."""
    home, client = live
    if not home.own_filesystem:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN)")
    day, user = date(2024, 1, 4), f"full-{uuid.uuid4().hex[:8]}"
    bodies = {f"full-{i}-{uuid.uuid4().hex[:6]}": {"user_id": user, "item_id": ITEMS[i % len(ITEMS)],
                                                  "timestamp_ms": day_start_ms(day) + 7_000 + i} for i in range(10)}
    acknowledged, refused = {}, 0
    filler = fill(home.path.parent)
    try:
        for key, body in bodies.items():
            response = client.post("/interactions", headers={**AUTH, "idempotency-key": key}, json=body)
            if response.status_code == 201:
                acknowledged[key] = response.json()["event_id"]
            else:
                refused += 1
                assert response.status_code >= 500, response.text
        assert client.get("/recs/popular", params={"count": 3}).status_code == 200  # reads are untouched
    finally:
        filler.unlink()
    freed = time.monotonic()
    for key, body in bodies.items():  # the clients retry what was refused, with the same keys
        deadline = time.monotonic() + 60
        while key not in acknowledged:
            assert time.monotonic() < deadline, f"{key} still refused 60 s after the space came back"
            response = client.post("/interactions", headers={**AUTH, "idempotency-key": key}, json=body)
            if response.status_code == 201:
                acknowledged[key] = response.json()["event_id"]
            else:
                time.sleep(0.5)
    recovered_s = time.monotonic() - freed
    assert refused > 0, "the disk was full, yet every interaction was acknowledged"
    logged = EventLog(home.settings.events_dir).read(day.isoformat())
    mine = logged[logged["user_id"] == user]
    assert sorted(mine["event_id"]) == sorted(acknowledged.values()), (len(mine), len(acknowledged))
    assert _user_count(home, user) == len(bodies)
    print(f"disk full: {refused} of {len(bodies)} refused, all recorded {recovered_s:.1f} s after space was freed")


class Poster:
    """A client posting interactions with an Idempotency-Key, each sent until a 201 acknowledges it (through
    refused connections, 5xx and 409s: what a client of an at-least-once API does)."""

    def __init__(self, url: str, n: int, bodies: list[dict], deadline: float):
        self.url, self.n, self.bodies, self.deadline = url, n, bodies, deadline
        self.acknowledged: dict[str, dict] = {}  # key -> body
        self.answers: Counter = Counter()
        self.error: str | None = None

    def __call__(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for i, body in enumerate(self.bodies):
                key = f"kill-{self.n}-{i}-{uuid.uuid4().hex[:6]}"
                while key not in self.acknowledged:
                    if time.monotonic() > self.deadline:
                        self.error = f"{key}: no 201 before the deadline ({dict(self.answers)})"
                        return
                    try:
                        response = client.post("/interactions", headers={**AUTH, "idempotency-key": key}, json=body)
                    except httpx.TransportError:
                        self.answers["no answer"] += 1
                        time.sleep(0.5)
                        continue
                    self.answers[response.status_code] += 1
                    if response.status_code == 201:
                        self.acknowledged[key] = body
                    elif response.status_code in (409, 500, 502, 503, 504):  # 503 also while restarting
                        time.sleep(0.5)
                    else:
                        self.error = f"{key}: {response.status_code} {response.text[:200]}"
                        return


@pytest.mark.timeout(900)
def test_acknowledged_events_survive_a_kill_a_torn_write_and_a_landing_run(live):
    """Deliverable 3 of issue 33: 4 clients post 40 interactions each while (1) `landed_interactions` runs for
    their day, (2) the whole service is killed with SIGKILL and started again, (3) the kill leaves a torn line in
    the day's log. Every acknowledged event is in the day's landing file exactly once after the next landing.
    Runs last in the module: it replaces the module's service with a restarted one."""
    from recsys_assets.defs.ingest.interactions import landed_interactions

    home, client = live
    day, url = date(2024, 1, 2), str(client.base_url)
    clients, per_client = 4, 40
    posters = [Poster(url, n, [{"user_id": f"kill-{n}", "item_id": ITEMS[i % len(ITEMS)], "rating": 1 + i % 5,
                                "timestamp_ms": day_start_ms(day) + n * 100_000 + i} for i in range(per_client)],
                      deadline=time.monotonic() + 600) for n in range(clients)]
    threads = [threading.Thread(target=poster) for poster in posters]
    for thread in threads:
        thread.start()

    def acknowledged() -> int:
        return sum(len(p.acknowledged) for p in posters)

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 300
        while acknowledged() < count and any(t.is_alive() for t in threads):
            assert time.monotonic() < deadline, f"{acknowledged()} acknowledged, waiting for {count}"
            time.sleep(0.05)

    total = clients * per_client
    wait_for(total // 4)
    home.materialize([landed_interactions], str(day))  # a landing run while the clients post
    wait_for(total // 2)
    killed = kill_service(home.path)
    with open(home.settings.events_dir / f"{day}.jsonl", "a") as log:  # what a kill mid-append leaves
        log.write('{"user_id": "kill-torn", "parent_asin": "B0LIVE0000", "rat')
    # A restarted service takes over the claims of requests the kill cut short after 10 s, not 2 minutes.
    with serve_process(home.path, env={**home.serve_env, "RECSYS_IDEMPOTENCY_PENDING_S": "10"},
                       port=int(url.rsplit(":", 1)[1]), log_path=home.serve_log):
        for thread in threads:
            thread.join()
        assert not [p.error for p in posters if p.error], [p.error for p in posters if p.error]
        answers = sum((p.answers for p in posters), Counter())
        assert acknowledged() == total, answers
        home.materialize([landed_interactions], str(day))  # the next tick
    landed = home.landing.read_parquet(review_file_name(day)).to_pandas()
    for poster in posters:
        mine = landed[landed["user_id"] == f"kill-{poster.n}"]
        expected = sorted(body["timestamp_ms"] for body in poster.acknowledged.values())
        assert sorted(mine["timestamp"]) == expected, (poster.n, len(mine), len(expected))
    assert not (landed["user_id"] == "kill-torn").any()
    print(f"kill -9 of {killed} processes under {clients} posting clients: {total} acknowledged, each landed once; "
          f"answers {dict(answers)}")


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_only_the_claims_owner_answers_or_releases_it(backend, tmp_path, request):
    """A claim taken over (its first request seemed dead) is no longer the first request's: its late answer or
    release changes nothing, the new owner's answer is the one replayed."""
    from recsys_assets.serving_data import idempotency

    pending_s = 0.5  # RECSYS_IDEMPOTENCY_PENDING_S: after this the first request counts as dead
    store = (idempotency.SQLiteIdempotency(tmp_path / "idempotency.sqlite", pending_s=pending_s) if backend == "sqlite"
             else idempotency.RedisIdempotency(request.getfixturevalue("redis_url"), pending_s=pending_s))
    key, proposed = f"k-{uuid.uuid4().hex}", {"fingerprint": "f", "event_id": "e", "timestamp_ms": 1}
    first = store.claim(key, proposed)
    assert store.claim(key, proposed).status == "pending"
    time.sleep(pending_s + 0.1)
    second = store.claim(key, proposed)
    assert first.status == second.status == "new" and first.record["owner"] != second.record["owner"]
    store.release(key, first.record)  # the first request fails late: the claim is not its to drop
    store.complete(key, first.record, {"from": "first"})  # nor to answer
    store.complete(key, second.record, {"from": "second"})
    replay = store.claim(key, proposed)
    assert replay.status == "done" and replay.record["answer"] == {"from": "second"}

"""The serving process's safety and robustness, with real processes (issue 33): `recsys serve` over HTTP on
127.0.0.1, a real redis-server that is stopped, a real HAProxy left holding the port, a port held by another
process. The service serves a popularity release written straight into its store (no pipeline run)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from recsys_assets.serving.config import haproxy_binary
from recsys_assets.serving.ports import haproxy_folder, server_port
from recsys_assets.serving_data.candidates import ITEM, KINDS, POPULAR, POPULAR_KEY, CandidateStore
from recsys_assets.serving_data.kv import open_kv
from recsys_assets.serving_data.release import CURRENT, POPULARITY, Release
from recsys_assets.settings import Settings
from tests.support.processes import stop_process_group, wait_ready
from tests.support.redis_server import local_redis

TOKEN = "s3cret-tøken-ä1"  # non-ASCII on purpose: the server must compare it as bytes
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def write_popularity_release(home: Path, redis_url: str | None = None, day: str = "2024-01-06") -> str:
    """A popularity release of `day` with two items, in the serving store (SQLite under home, or Redis); its id."""
    kv = open_kv(Settings(home=home, env="local").serving_db_path, redis_url)
    store = CandidateStore(kv)
    store.write(POPULAR, "v1", [(POPULAR_KEY, [["item-a", 3], ["item-b", 2]])])
    store.write(ITEM, "v1", [("item-a", {"title": "A"}), ("item-b", {"title": "B"})])
    release = Release(day=day, models={}, collections={}, candidates={k: "v1" for k in KINDS},
                      pipeline=POPULARITY)
    kv.put_many([(CURRENT, release.as_dict())])
    kv.close()
    return release.id


@dataclass
class Service:
    url: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]


@contextmanager
def serving(home: Path, port: int, env: dict[str, str]):
    """`recsys serve` over home on 127.0.0.1:port with one replica, its output in home/serve.log."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "serve.log"
    child_env = {**os.environ, "RECSYS_HOME": str(home), "RECSYS_SERVE_PORT": str(port),
                 "RECSYS_SERVE_REPLICAS": "1", **env}
    if "RECSYS_API_TOKEN" not in env:
        child_env.pop("RECSYS_API_TOKEN", None)  # the default: none
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "recsys_assets.cli", "serve"], env=child_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout_s=240)
        yield Service(f"http://127.0.0.1:{port}", proc, log)
    finally:
        stop_process_group(proc)


@contextmanager
def stale_haproxy(home: Path, port: int):
    """A real HAProxy on 127.0.0.1:port (answering 503: never taken for the service), its config in a folder
    made as `recsys serve` makes one for home, and no Ray actor above it: what a killed service leaves."""
    folder = Path(haproxy_folder(home))
    config = folder / "haproxy.cfg"
    config.write_text(f"""global
  maxconn 16
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
frontend stale
  bind 127.0.0.1:{port}
  http-request return status 503 content-type text/plain string stale
""")
    proc = subprocess.Popen([haproxy_binary(), "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the stale HAProxy did not start"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _listeners(processes: list[psutil.Process]) -> list[tuple[str, str, int]]:
    found = []
    for process in processes:
        try:
            found += [(process.name(), c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One service for the module, with a token, started on a port a stale HAProxy of its home held."""
    home = tmp_path_factory.mktemp("faults") / "recsys_home"
    write_popularity_release(home)
    port = server_port()
    with stale_haproxy(home, port) as stale:
        with serving(home, port, {"RECSYS_API_TOKEN": TOKEN}) as running:
            running.stale = stale
            running.home = home
            yield running


def test_a_stale_haproxy_of_the_same_home_is_stopped_at_start(service):
    assert service.stale.poll() is not None, "the HAProxy left by an earlier service still runs"
    assert httpx.get(f"{service.url}/readyz", timeout=30).status_code == 200


def test_a_non_ascii_bearer_token_is_refused_with_401(service):
    for given in ("Bearer wrong-tøken".encode(), f"Bearer {TOKEN}x".encode(), "Bearer ü".encode("latin-1")):
        response = httpx.post(f"{service.url}/interactions", timeout=30, headers={"authorization": given},
                              json={"user_id": "u", "item_id": "item-a"})
        assert response.status_code == 401, (given, response.status_code, response.text)


def _chunks(size: int, piece: int = 16 * 1024):
    for start in range(0, size, piece):
        yield b" " * min(piece, size - start)


def test_a_chunked_body_over_the_limit_is_refused_with_413(service):
    from recsys_assets.serving.app import MAX_BODY_BYTES

    for path in ("/interactions", "/score/seq_rating_prediction"):
        response = httpx.post(f"{service.url}{path}", timeout=30, content=_chunks(MAX_BODY_BYTES + 1),
                              headers={"authorization": f"Bearer {TOKEN}".encode(),
                                       "content-type": "application/json"})
        assert response.status_code == 413, (path, response.status_code, response.text[:200])
    # A chunked body within the limit reaches the route whole: its validation reads the field.
    small = b'{"user_id": "u1", "item_ids": []}'
    response = httpx.post(f"{service.url}/score/seq_rating_prediction", timeout=30,
                          content=iter([small[:10], small[10:]]),
                          headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "item_ids"]]


def test_the_token_is_never_printed_or_logged(service):
    deadline = time.monotonic() + 60  # the welcome lines follow readiness by a moment
    while "recsys serving on" not in (out := service.output()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "recsys serving on" in out and "Bearer $RECSYS_API_TOKEN" in out
    assert TOKEN not in out
    # Nor in Ray's own logs of this service's session.
    sessions = {arg.split("=", 1)[1] for p in service.tree() for arg in _cmdline(p)
                if arg.startswith("--session-dir=") or arg.startswith("--session_dir=")}
    assert sessions, "no Ray session found"
    for session in sessions:
        for path in Path(session, "logs").rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_every_port_of_ray_and_haproxy_is_on_loopback(service):
    listeners = _listeners(service.tree())
    assert any(port == int(service.url.rsplit(":", 1)[1]) for _, _, port in listeners)
    exposed = [entry for entry in listeners if entry[1] not in LOOPBACK]
    # The one Ray Serve cannot move: each replica's gRPC server for calls between deployments binds "[::]:0"
    # in its code (ray/serve/_private/replica.py), whatever the node's address.
    replica_grpc = [entry for entry in exposed if entry[0].startswith("ray::ServeReplica") and entry[1] == "::"]
    assert len(replica_grpc) <= 1  # one replica
    exposed = [entry for entry in exposed if entry not in replica_grpc]
    assert not exposed, f"listening beyond 127.0.0.1: {exposed}"


def test_a_port_held_by_another_process_stops_the_start_clearly(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**os.environ, "RECSYS_HOME": str(tmp_path / "home"), "RECSYS_SERVE_PORT": str(port)}
        done = subprocess.run([sys.executable, "-m", "recsys_assets.cli", "serve"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {port} is in use by pid {os.getpid()}" in done.stderr and "RECSYS_SERVE_PORT" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_stop_leaves_nothing_behind(service):
    """What a supervisor does: SIGTERM to the process group, then SIGKILL to what is left of it. Runs last:
    it stops the module's service."""
    processes = service.tree()
    assert any("haproxy" in p.name() for p in processes)
    os.killpg(service.proc.pid, signal.SIGTERM)
    time.sleep(1.0)
    try:
        os.killpg(service.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    service.proc.wait(timeout=30)
    _, alive = psutil.wait_procs(processes, timeout=20)
    assert not [(p.pid, _name(p)) for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not _listening(int(service.url.rsplit(":", 1)[1]))


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return "?"


def test_a_replica_that_cannot_reach_redis_answers_fast_and_says_it_is_degraded(tmp_path):
    home = tmp_path / "home"
    with local_redis() as redis:  # nothing on disk: a restart comes back empty
        env = {"RECSYS_SERVING_STORE": "redis", "RECSYS_REDIS_URL": redis.url}
        write_popularity_release(home, redis.url)
        with serving(home, server_port(), env) as running:
            # The first answer may be slow on a busy machine (the replica warms up); later ones are timed.
            assert httpx.get(f"{running.url}/recs/popular", timeout=60).status_code == 200
            redis.stop()
            for path in ("/readyz", "/recs/popular"):
                started = time.monotonic()
                response = httpx.get(f"{running.url}{path}", timeout=30)
                # A Redis that is gone costs a request a timeout or two, not redis-py's seconds of retries
                # (the popular list may come from the replica's memory).
                assert time.monotonic() - started < 3.0, (path, time.monotonic() - started, response.status_code)
            # Still in rotation (every replica shares the store: a 503 would take them all out), and says why.
            ready = httpx.get(f"{running.url}/readyz", timeout=30)
            assert ready.status_code == 200 and ready.json()["degraded"].startswith("redis: "), ready.text
            # Redis back (empty: the release is written again): no longer degraded.
            redis.start()
            write_popularity_release(home, redis.url)
            deadline = time.monotonic() + 20
            while "degraded" in (ready := httpx.get(f"{running.url}/readyz", timeout=30)).json():
                assert time.monotonic() < deadline, f"still degraded after Redis came back: {ready.text}"
                time.sleep(0.5)
            assert ready.status_code == 200


def test_two_services_on_one_machine_each_serve_their_own_home(tmp_path):
    """Without an address Ray joins the machine's latest cluster: a second `recsys serve` (another home, another
    port) replaced the first one's app, and each port answered with the other's release."""
    homes = {day: tmp_path / day for day in ("2024-01-05", "2024-01-06")}
    ids = {day: write_popularity_release(home, day=day) for day, home in homes.items()}
    with serving(homes["2024-01-05"], server_port(), {}) as first, serving(homes["2024-01-06"], server_port(), {}) as second:
        for day, running in (("2024-01-05", first), ("2024-01-06", second)):
            for _ in range(5):
                assert httpx.get(f"{running.url}/readyz", timeout=30).json()["release"] == ids[day], day
        assert not {p.pid for p in first.tree()} & {p.pid for p in second.tree()}

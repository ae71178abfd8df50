"""Serving telemetry: every replica's metrics through Ray's export, scraped where `recsys serve`'s Prometheus
file_sd target says (a real service, 2 replicas behind HAProxy); spans of a request and its stages (the SDK's
in-memory exporter) and over OTLP/HTTP; JSON log lines with request and trace ids; the off switch."""

import io
import json
import logging
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from recsys_assets.observability.targets import target_path
from recsys_assets.serving.app import create_app
from recsys_assets.serving.config import ServingConfig, serving_kv
from recsys_assets.serving.runtime import Runtime
from recsys_assets.serving.telemetry import (
    JsonLogFormatter,
    Telemetry,
    merged,
    stage_seconds,
    tracer_provider,
)
from recsys_assets.serving_data.release import ReleaseStore
from tests.support.processes import serve_process
from tests.support.scrape import samples, wait_for_samples

RERANK = "/recs/u2i/rerank"


@pytest.fixture(scope="module")
def users(served_home):
    from recsys_assets.serving_data.candidates import SEQUENCE, CandidateStore

    kv = serving_kv(served_home.settings)
    release = ReleaseStore(kv).current()
    return CandidateStore(kv).ids(SEQUENCE, release.candidates[SEQUENCE])[:40]


# -- plain functions -------------------------------------------------------------------------------------------

def test_stage_seconds_sum_each_stage_and_merged_joins_consecutive_intervals():
    stages = [("features", 0, 1_000_000), ("retrieval", 1_000_000, 3_000_000), ("retrieval", 3_000_000, 4_000_000),
              ("features", 4_000_000, 4_500_000), ("ranking", 5_000_000, 7_000_000)]
    assert stage_seconds(stages) == {"features": 0.0015, "retrieval": 0.003, "ranking": 0.002}
    assert merged(stages) == [("features", 0, 1_000_000), ("retrieval", 1_000_000, 4_000_000),
                              ("features", 4_000_000, 4_500_000), ("ranking", 5_000_000, 7_000_000)]


def test_no_tracer_without_an_otlp_endpoint(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracer_provider() is None
    assert Telemetry.local().tracer is None


def test_spans_go_over_otlp_http_when_an_endpoint_is_configured(monkeypatch):
    """A real OTLP/HTTP receiver on 127.0.0.1 gets the spans as protobuf at /v1/traces."""
    received = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, ExportTraceServiceRequest.FromString(body)))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "recsys-serving-test")
        provider = tracer_provider()
        with provider.get_tracer("t").start_as_current_span("GET /recs/u2i/rerank"):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.shutdown()
    path, request = received[0]
    assert path == "/v1/traces"
    resource = request.resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "recsys-serving-test"
    assert [s.name for s in request.resource_spans[0].scope_spans[0].spans] == ["GET /recs/u2i/rerank"]


# -- the app outside Ray (prometheus_client backend, in-memory spans) ----------------------------------------

@pytest.fixture(scope="module")
def traced(served_home):
    exporter = InMemorySpanExporter()
    runtime = Runtime(ServingConfig.from_settings(served_home.settings), poll=False,
                      telemetry=Telemetry.local(span_exporter=exporter))
    with TestClient(create_app(runtime)) as client:
        yield client, exporter
    runtime.close()


def _request_spans(exporter, request_id):
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind == SpanKind.SERVER and s.attributes["recsys.request_id"] == request_id]
    assert len(server) == 1, [s.name for s in spans]
    children = [s for s in spans if s.parent is not None and s.parent.span_id == server[0].context.span_id]
    return server[0], children


def test_a_rerank_is_a_server_span_with_its_stages_as_children(traced, users):
    client, exporter = traced
    answer = client.get(RERANK, params={"user_id": users[0]}, headers={"x-request-id": "trace-me-1"})
    assert answer.status_code == 200 and answer.json()["items"]
    server, children = _request_spans(exporter, "trace-me-1")
    assert server.name == f"GET {RERANK}"
    assert server.attributes["http.route"] == RERANK and server.attributes["http.response.status_code"] == 200
    assert {c.name for c in children} == {"features", "retrieval", "ranking"}
    for child in children:
        assert child.attributes["recsys.request_id"] == "trace-me-1"
        assert child.context.trace_id == server.context.trace_id
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time


def test_a_callers_traceparent_is_continued(traced, users):
    client, exporter = traced
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    client.get(RERANK, params={"user_id": users[1]},
               headers={"x-request-id": "trace-me-2", "traceparent": f"00-{trace_id}-{parent}-01"})
    server, _ = _request_spans(exporter, "trace-me-2")
    assert format(server.context.trace_id, "032x") == trace_id
    assert format(server.parent.span_id, "016x") == parent


def test_log_lines_are_json_with_request_and_trace_ids(traced):
    client, exporter = traced
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("recsys.serving")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        answer = client.get("/recs/i2i", params={"item_id": "no-such-item"}, headers={"x-request-id": "log-me-1"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    assert answer.status_code == 404
    events = [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is one JSON object
    mine = [e for e in events if e.get("request_id") == "log-me-1"]
    assert mine and mine[-1]["status"] == 404 and mine[-1]["level"] == "INFO"
    server, _ = _request_spans(exporter, "log-me-1")
    assert mine[-1]["trace_id"] == format(server.context.trace_id, "032x")


def test_metrics_outside_ray_use_the_same_names(traced, users):
    client, _ = traced
    client.get(RERANK, params={"user_id": "nobody-at-all"})
    text = client.get("/metrics").text
    assert samples(text, "ray_recsys_requests_total", endpoint=RERANK, status="200")
    assert {s.labels["stage"] for s in samples(text, "ray_recsys_rerank_stage_seconds_count")} == {
        "features", "retrieval", "ranking"}
    assert samples(text, "ray_recsys_rerank_candidates_count")[0].value >= 1
    assert samples(text, "ray_recsys_recommendations_total", endpoint=RERANK, cold_start="true")[0].value >= 1
    assert samples(text, "ray_recsys_rerank_variant_total", variant="champion")
    assert samples(text, "ray_recsys_release_reloads_total", outcome="loaded")[0].value == 1
    assert [s.value for s in samples(text, "ray_recsys_release_info")] == [1.0]


def test_telemetry_off_records_nothing_and_still_answers(served_home, users):
    config = replace(ServingConfig.from_settings(served_home.settings), telemetry=False)
    runtime = Runtime(config, poll=False)
    try:
        with TestClient(create_app(runtime)) as client:
            assert client.get(RERANK, params={"user_id": users[0]}).status_code == 200
            assert client.get("/metrics").status_code == 404
        assert runtime.telemetry.tracer is None and runtime.metrics.registry is None
    finally:
        runtime.close()


# -- a real `recsys serve`, 2 replicas -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service(served_home):
    """2 replicas; Ray's agent gets their numbers every 2 s (default 10 s) so the scrapes below wait less."""
    env = {"RECSYS_SERVE_REPLICAS": "2", "RAY_metrics_report_interval_ms": "2000", "RECSYS_RELOAD_INTERVAL_S": "1"}
    running = serve_process(served_home.path, env=env)
    url = running.__enter__()
    target = target_path(served_home.path, "serving")
    yield {"url": url, "target": target, "scrape_config": json.loads(target.read_text()),
           "stop": lambda: running.__exit__(None, None, None)}
    running.__exit__(None, None, None)


def _scrape(service) -> str:
    return httpx.get(f"http://{service['scrape_config'][0]['targets'][0]}/metrics", timeout=30).text


def test_the_file_sd_target_names_rays_metrics_export_on_loopback(service):
    [entry] = service["scrape_config"]
    assert entry["labels"] == {"job": "recsys-serving"}
    host, port = entry["targets"][0].rsplit(":", 1)
    assert host == "127.0.0.1"
    listening = {c.laddr.ip for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == int(port)}
    assert listening == {"127.0.0.1"}


def _load(service, users, clients: int = 4) -> None:
    """Reranks from concurrent clients (HAProxy spreads them over the replicas), and one cold start."""
    def client_run():
        with httpx.Client(base_url=service["url"], timeout=30) as client:
            for user in users:
                assert client.get(RERANK, params={"user_id": user}).status_code == 200
            client.get(RERANK, params={"user_id": "nobody-at-all"})

    threads = [threading.Thread(target=client_run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_every_replicas_requests_reach_the_scrape(service, users, served_home):
    def load_then_scrape():
        # Ready means one replica answers: on a busy machine the other may still be loading, and HAProxy sends it
        # nothing until it is healthy. Load again until both have answered.
        _load(service, users)
        return _scrape(service)

    def both_replicas_and_every_request(found):  # the agent gets a replica's numbers every 2 s: wait for all
        return len({s.labels["replica"] for s in found}) == 2 and sum(s.value for s in found) >= 4 * len(users)

    requests = wait_for_samples(load_then_scrape, "ray_recsys_requests_total", timeout_s=180,
                                until=both_replicas_and_every_request, endpoint=RERANK, status="200")
    assert all(s.labels["deployment"] == "recsys" and s.labels["application"] == "recsys" for s in requests)
    text = _scrape(service)
    assert {s.labels["stage"] for s in samples(text, "ray_recsys_rerank_stage_seconds_bucket")} == {
        "features", "retrieval", "ranking"}
    assert samples(text, "ray_recsys_rerank_candidates_bucket")
    assert samples(text, "ray_recsys_request_latency_seconds_bucket", endpoint=RERANK)
    assert samples(text, "ray_recsys_recommendations_total", endpoint=RERANK, cold_start="true")
    assert samples(text, "ray_serve_num_http_requests_total")
    release = ReleaseStore(serving_kv(served_home.settings)).current()
    info = samples(text, "ray_recsys_release_info", release=release.id, day=release.day,
                   two_tower_version=release.models["two_tower"], ranker_version=release.models["ranker"])
    assert {s.labels["replica"] for s in info} == {s.labels["replica"] for s in requests}
    assert all(s.value == 1 for s in info)
    # The API's own /metrics answers the same export (one node: every replica), not one replica's numbers.
    api = httpx.get(f"{service['url']}/metrics", timeout=30).text
    assert len({s.labels["replica"] for s in samples(api, "ray_recsys_requests_total", endpoint=RERANK)}) == 2


def test_the_release_info_outlives_the_agents_gauge_expiry(service):
    """Ray's agent drops a gauge not set again within two report intervals (4 s here): the release poller sets it
    again, so the info stays scrapeable long after the release was loaded."""
    import time

    time.sleep(10)
    assert samples(_scrape(service), "ray_recsys_release_info")


def test_a_stopped_service_removes_its_target(service):
    """Runs last: stops the module's service."""
    service["stop"]()
    assert not service["target"].exists()

"""Serving telemetry, in one place: Prometheus metrics from every replica, OpenTelemetry traces, JSON logs.

**Metrics.** The app records through `ServingMetrics` once, one way; the backend decides where it goes:

* in a Ray Serve replica, `ray.serve.metrics` (Serve adds the `deployment`, `replica` and `application` tags),
  exported by Ray's metrics agent on every node (`recsys serve` starts its Ray with the export on a known
  port, `RECSYS_METRICS_PORT`, and writes a Prometheus file_sd target for it: `observability/targets.py`). Every
  replica's series reach the scraper, never one replica picked by the load balancer;
* outside Ray (bare uvicorn in bench/bare_app.py, FastAPI's TestClient), a private prometheus_client registry
  the app's /metrics serves, under the same names;
* with `RECSYS_TELEMETRY=0`, nothing (`NULL`): what bench/serving.py compares against.

Names as Prometheus scrapes them from Ray 2.60's exporter (measured by scraping it, tests/test_serving_telemetry.py
asserts them): Ray prefixes `ray_`; a Counter named `recsys_requests` is exported as the counter
`ray_recsys_requests_total` (Ray's OpenTelemetry backend, the default, no longer adds the old gauge twin);
histograms as `_bucket{le=...}`, `_sum`, `_count` with `le` in the recorded unit (seconds here); labels are
the tag keys as given, plus Serve's `deployment`, `replica`, `application` and Ray's `Component`,
`NodeAddress`, `SessionName`, `Version`, `WorkerId`, `otel_scope_name`, `otel_scope_schema_url`,
`otel_scope_version`. A gauge's value is dropped by the agent when it is not set again within two report
intervals (2 x 10 s): the release info is set again at every release poll. So, each series with those labels:

* `ray_recsys_requests_total{endpoint,status}`, `ray_recsys_request_latency_seconds_bucket/_sum/_count{endpoint}`
* `ray_recsys_rerank_stage_seconds_bucket{stage}` (features, retrieval, ranking), `ray_recsys_rerank_candidates_bucket`
* `ray_recsys_recommendations_total{endpoint,cold_start}` (the user endpoints: rerank, last_item_i2i)
* `ray_recsys_release_info{release,day,two_tower_version,ranker_version,index}` 1 for the served release (the
  one it replaced: 0, then gone)
* `ray_recsys_release_reloads_total{outcome}` (loaded, load_failed, read_failed),
  `ray_recsys_rerank_variant_total{variant}`, `ray_recsys_degraded_answers_total{endpoint}`
* Ray Serve's own: `ray_serve_num_http_requests_total{route,method,status_code}`,
  `ray_serve_http_request_latency_ms_*{route}`, `ray_serve_num_http_error_requests_total` (the replicas'
  direct ingress behind HAProxy records them), per replica `ray_serve_deployment_request_counter_total`,
  `ray_serve_deployment_processing_latency_ms_*`, `ray_serve_deployment_replica_healthy`,
  `ray_serve_replica_processing_queries`, batching (`ray_serve_actual_batch_size_*`), ...

Recording stays cheap: label-bound children are cached, a request costs a handful of calls, none per candidate.

**Traces.** With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set, each request is a server span
(`recsys.request_id`, route, status; a caller's `traceparent` continues) and a rerank's stages are its children,
exported over OTLP/HTTP in batches. Unset, no tracer exists and no span is made.

**Logs.** The app's own loggers (`recsys.*`) write one JSON object a line to stderr, with `request_id` and,
inside a span, `trace_id`/`span_id` (hex, as Tempo shows them): Loki joins them to traces. Ray Serve's own lines
(access log) are JSON too (`LoggingConfig(encoding="JSON")`, in Ray's log folder), carrying the same request id.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone

import orjson

log = logging.getLogger("recsys.serving")

LATENCY_BUCKETS_S = (.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5)
STAGE_BUCKETS_S = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1)
CANDIDATE_BUCKETS = (10, 25, 50, 100, 150, 200, 300, 500, 1000)
STAGES = ("features", "retrieval", "ranking")
SERVING_JOB = "recsys-serving"

# The request being answered, for log lines (set by the app's middleware).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("recsys_request_id", default=None)


# -- metric backends: each makes families whose label-bound children have inc / observe / set -----------------

class _Family:
    """A metric and its label-bound children, made once per label values and kept."""

    def __init__(self, bind):
        self._bind, self._children = bind, {}

    def child(self, *values):
        try:
            return self._children[values]
        except KeyError:
            child = self._children[values] = self._bind(values)
            return child


class _Nothing:
    def inc(self, amount: float = 1.0) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass


class _NullBackend:
    """Telemetry off: every child is the same do-nothing object."""

    def counter(self, name, doc, labels=(), buckets=()):
        return _Family(lambda values: _NOTHING)

    histogram = gauge = counter


_NOTHING = _Nothing()


class _PrometheusBackend:
    """prometheus_client in a private registry (outside Ray). The names carry Ray's `ray_` prefix too, so one
    dashboard query reads both."""

    def __init__(self):
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()

    def _family(self, metric, labels):
        return _Family(lambda values: metric.labels(*values) if labels else metric)

    def counter(self, name, doc, labels=()):
        from prometheus_client import Counter

        return self._family(Counter(f"ray_{name}", doc, labels, registry=self.registry), labels)

    def histogram(self, name, doc, labels=(), buckets=LATENCY_BUCKETS_S):
        from prometheus_client import Histogram

        return self._family(Histogram(f"ray_{name}", doc, labels, registry=self.registry, buckets=buckets), labels)

    def gauge(self, name, doc, labels=()):
        from prometheus_client import Gauge

        return self._family(Gauge(f"ray_{name}", doc, labels, registry=self.registry), labels)


class _RayChild:
    """A `ray.serve.metrics` metric with its tags bound (the dict is made once)."""

    __slots__ = ("_metric", "_tags")

    def __init__(self, metric, tags):
        self._metric, self._tags = metric, tags

    def inc(self, amount: float = 1.0) -> None:
        self._metric.inc(amount, self._tags)

    def observe(self, value: float) -> None:
        self._metric.observe(value, self._tags)

    def set(self, value: float) -> None:
        self._metric.set(value, self._tags)


class _RayBackend:
    """`ray.serve.metrics` in a replica: exported by Ray's metrics agent, Serve's tags added."""

    @staticmethod
    def _family(metric, labels):
        return _Family(lambda values: _RayChild(metric, dict(zip(labels, map(str, values))) if labels else None))

    def counter(self, name, doc, labels=()):
        from ray.serve.metrics import Counter

        return self._family(Counter(name, doc, tuple(labels)), labels)

    def histogram(self, name, doc, labels=(), buckets=LATENCY_BUCKETS_S):
        from ray.serve.metrics import Histogram

        return self._family(Histogram(name, doc, list(buckets), tuple(labels)), labels)

    def gauge(self, name, doc, labels=()):
        from ray.serve.metrics import Gauge

        return self._family(Gauge(name, doc, tuple(labels)), labels)


RELEASE_LABELS = ("release", "day", "two_tower_version", "ranker_version", "index")


class ServingMetrics:
    """What the app records (the names in the module docstring, less the `ray_` prefix)."""

    def __init__(self, backend):
        self.backend = backend
        self._requests = backend.counter("recsys_requests", "HTTP requests by endpoint and status",
                                         ("endpoint", "status"))
        self._latency = backend.histogram("recsys_request_latency_seconds", "Request latency by endpoint",
                                          ("endpoint",), LATENCY_BUCKETS_S)
        self._stages = backend.histogram("recsys_rerank_stage_seconds", "Rerank time by stage (features: user and "
                                         "item feature reads; retrieval: user tower and candidates; ranking: "
                                         "ranker forward pass and fusion)", ("stage",), STAGE_BUCKETS_S)
        self._candidates = backend.histogram("recsys_rerank_candidates", "Candidates scored per rerank", (),
                                             CANDIDATE_BUCKETS).child()
        self._recommendations = backend.counter("recsys_recommendations", "Recommendation answers for a user, "
                                                "by endpoint and cold start", ("endpoint", "cold_start"))
        self._release = backend.gauge("recsys_release_info", "1 for the release being served, 0 for one replaced",
                                      RELEASE_LABELS)
        self._reloads = backend.counter("recsys_release_reloads", "Release loads by outcome", ("outcome",))
        self._variants = backend.counter("recsys_rerank_variant", "Reranks by ranker variant (the canary share)",
                                         ("variant",))
        self._degraded = backend.counter("recsys_degraded_answers", "Answers given without the serving store",
                                         ("endpoint",))
        self._served: tuple | None = None

    @property
    def registry(self):
        """The prometheus_client registry (outside Ray), else None."""
        return getattr(self.backend, "registry", None)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self._requests.child(endpoint, status).inc()
        self._latency.child(endpoint).observe(seconds)

    def rerank(self, stage_seconds: dict[str, float], candidates: int) -> None:
        for stage, seconds in stage_seconds.items():
            self._stages.child(stage).observe(seconds)
        if candidates:
            self._candidates.observe(candidates)

    def recommendation(self, endpoint: str, cold_start: bool) -> None:
        self._recommendations.child(endpoint, "true" if cold_start else "false").inc()

    def variant(self, variant: str) -> None:
        self._variants.child(variant).inc()

    def degraded(self, endpoint: str) -> None:
        self._degraded.child(endpoint).inc()

    def reload(self, outcome: str) -> None:
        self._reloads.child(outcome).inc()

    def release(self, labels: dict[str, str] | None = None) -> None:
        """The served release's info series goes to 1, the one it replaced to 0; without labels, the served
        one is set again (Ray's agent forgets a gauge that is not)."""
        if labels is None:
            if self._served is not None:
                self._release.child(*self._served).set(1)
            return
        served = tuple(str(labels.get(k, "")) for k in RELEASE_LABELS)
        if self._served is not None and self._served != served:
            self._release.child(*self._served).set(0)
        self._release.child(*served).set(1)
        self._served = served


# -- traces ---------------------------------------------------------------------------------------------------

_EPOCH_OFFSET_NS = time.time_ns() - time.perf_counter_ns()  # perf_counter_ns() + this = Unix time in ns


def otlp_configured() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def tracer_provider(span_exporter=None):
    """A tracer provider exporting over OTLP/HTTP when an endpoint is configured, or to `span_exporter` (tests:
    the SDK's InMemorySpanExporter, spans handed over at once); None otherwise, and then no span is ever made.
    It is serving's own, not the process-wide one: nothing else in the process starts tracing."""
    if span_exporter is None and not otlp_configured():
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "recsys-serving"}))
    if span_exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # its endpoint from OTEL_* variables
    else:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


def stage_seconds(stages: Iterable[tuple[str, int, int]]) -> dict[str, float]:
    """Seconds spent per stage from (stage, start_ns, end_ns) intervals."""
    total: dict[str, float] = {}
    for stage, start, end in stages:
        total[stage] = total.get(stage, 0.0) + (end - start) / 1e9
    return total


def merged(stages: Iterable[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Consecutive intervals of one stage as one (the user tower and the candidate reads are both retrieval)."""
    out: list[tuple[str, int, int]] = []
    for stage, start, end in stages:
        if out and out[-1][0] == stage:
            out[-1] = (stage, out[-1][1], end)
        else:
            out.append((stage, start, end))
    return out


class Telemetry:
    """A replica's (or bare app's) metrics, tracer and the /metrics answer."""

    def __init__(self, metrics: ServingMetrics, provider=None, node_metrics_url: str | None = None):
        self.metrics, self.provider, self.node_metrics_url = metrics, provider, node_metrics_url
        self.tracer = provider.get_tracer("recsys.serving") if provider is not None else None

    @classmethod
    def local(cls, enabled: bool = True, span_exporter=None) -> Telemetry:
        """Outside Ray: a prometheus_client registry."""
        if not enabled:
            return cls(ServingMetrics(_NullBackend()))
        return cls(ServingMetrics(_PrometheusBackend()), tracer_provider(span_exporter))

    @classmethod
    def in_replica(cls, enabled: bool, metrics_port: int | None) -> Telemetry:
        """In a Ray Serve replica: Ray's metrics. `metrics_port`: the node's Ray export when `recsys serve`
        started the Ray (one node: that export holds every replica); None on a cluster we joined."""
        url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
        if not enabled:
            return cls(ServingMetrics(_NullBackend()), node_metrics_url=url)
        return cls(ServingMetrics(_RayBackend()), tracer_provider(), node_metrics_url=url)

    def reranked(self, endpoint: str, stats, answer: dict, variant: str, request_id: str) -> None:
        """A rerank's metrics (variant, stage times, candidates, cold start, degraded) and stage spans."""
        metrics = self.metrics
        metrics.variant(variant)
        metrics.rerank(stage_seconds(stats.stages), stats.candidates)
        metrics.recommendation(endpoint, answer.get("cold_start", False))
        if "degraded" in answer:
            metrics.degraded(endpoint)
        self.stage_spans(stats.stages, request_id)

    def stage_spans(self, stages: Iterable[tuple[str, int, int]], request_id: str) -> None:
        """A rerank's stages as children of the current (request) span, at the times they ran."""
        if self.tracer is None:
            return
        for stage, start, end in merged(stages):
            span = self.tracer.start_span(stage, start_time=start + _EPOCH_OFFSET_NS,
                                          attributes={"recsys.request_id": request_id, "recsys.stage": stage})
            span.end(end_time=end + _EPOCH_OFFSET_NS)


def server_span(tracer, method: str, headers: dict, request_id: str):
    """A server span for a request, continuing the caller's trace when it sent `traceparent`."""
    from opentelemetry.trace import SpanKind

    context = None
    if b"traceparent" in headers:
        from opentelemetry.propagate import extract

        context = extract({k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()
                           if k in (b"traceparent", b"tracestate")})
    return tracer.start_as_current_span(method, context=context, kind=SpanKind.SERVER,
                                        attributes={"http.request.method": method, "recsys.request_id": request_id})


def end_server_span(span, endpoint: str, status: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.update_name(f"{span.name} {endpoint}")
    span.set_attribute("http.route", endpoint)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


# -- logs -----------------------------------------------------------------------------------------------------

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, trace_id/span_id inside a span, and
    whatever the call passed as `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        event = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        request_id = REQUEST_ID.get()
        if request_id:
            event["request_id"] = request_id
        event.update(trace_ids())
        event.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


def trace_ids() -> dict[str, str]:
    """The current span's trace and span ids (hex), if a span is being recorded."""
    if "opentelemetry.trace" not in sys.modules:  # no tracer was ever made: no span can be current
        return {}
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def json_logs(stream=None) -> None:
    """The app's loggers (`recsys.*`) write JSON lines to stderr (the process's own: in a replica Ray Serve
    swaps sys.stderr for its logger, which would wrap each line in one of its own)."""
    logger = logging.getLogger("recsys")
    if any(isinstance(h.formatter, JsonLogFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(stream or sys.__stderr__)
    handler.setFormatter(JsonLogFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

"""The HTTP API (FastAPI), served by Ray Serve (`deploy`); bench/bare_app.py serves it on bare uvicorn for
comparison. The app, its request middleware and its routers (`routes/`).

Every answer carries `request_id`, `model_version`, `index_version` and `release`. Bad parameters get 422,
unknown items 404, unknown users the popular list with `cold_start: true`, a service with no release yet
503; nothing a client sends can cause a 500.
"""

import logging
import time
from collections.abc import Awaitable, Callable

import orjson

# Before anything imports feast: importing feast.metrics sets PROMETHEUS_MULTIPROC_DIR, and a prometheus_client
# first imported after that keeps every metric's values in mmap files, shared by all registries in the process.
import prometheus_client  # noqa: F401
from fastapi import FastAPI

from recsys_assets.serving.ingress import accepted_request_id
from recsys_assets.serving.recommender import Recommender, RerankQuery
from recsys_assets.serving.routes import features, interactions, operations, recommendations
from recsys_assets.serving.routes.recommendations import rerank_alone
from recsys_assets.serving.routes.shared import ERROR_HANDLERS
from recsys_assets.serving.runtime import Runtime
from recsys_assets.serving.telemetry import REQUEST_ID, Telemetry, end_server_span, server_span

log = logging.getLogger("recsys.serving")
MAX_BODY_BYTES = 256 * 1024  # the largest valid body (500 ids of 256 characters) is about 130 KB


class ObserveRequests:
    """Request id (`accepted_request_id`) in request.state, the response header and the log lines' context;
    count + latency per route and status (`ServingMetrics.request`), a server span when tracing is on, a JSON
    log line per failed request; a body over MAX_BODY_BYTES is refused with 413: at once when its
    Content-Length says so, after reading no more than that when it is chunked (no length).
    Plain ASGI: Starlette's BaseHTTPMiddleware cost about a millisecond a request here."""

    def __init__(self, app, telemetry: Telemetry, echo_request_id: bool = True):
        # Under Ray Serve its own middleware echoes the id (bounded by `BoundedRequestId`): not twice.
        self.app, self.telemetry, self.echo_request_id = app, telemetry, echo_request_id

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        request_id = accepted_request_id(headers.get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        try:
            if self.telemetry.tracer is None:
                return await self._observed(scope, receive, send, headers, request_id, None)
            with server_span(self.telemetry.tracer, scope["method"], headers, request_id) as span:
                return await self._observed(scope, receive, send, headers, request_id, span)
        finally:
            REQUEST_ID.reset(token)

    async def _observed(self, scope, receive, send, headers, request_id, span):
        status, started = 500, time.perf_counter()

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.echo_request_id:
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            length = headers.get(b"content-length")
            if length is None and b"transfer-encoding" in headers:
                # A chunked body declares no length: read it (up to the limit) before the app sees it.
                receive = await _read_bounded(receive)
            if (length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES) or receive is None:
                await _too_large(request_id, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            endpoint = route.path if route is not None else "unmatched"
            elapsed = time.perf_counter() - started
            self.telemetry.metrics.request(endpoint, status, elapsed)
            if span is not None:
                end_server_span(span, endpoint, status)
            if status >= 400:
                log.info("request answered %s", status,
                         extra={"path": scope.get("path"), "status": status, "ms": round(elapsed * 1000, 2)})


async def _read_bounded(receive):
    """The body's messages read ahead and replayed to the app, or None once the body passes MAX_BODY_BYTES."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        size += len(message.get("body", b""))
        if size > MAX_BODY_BYTES:
            return None
        if message["type"] != "http.request" or not message.get("more_body", False):
            break

    async def replay():
        return messages.pop(0) if messages else await receive()

    return replay


async def _too_large(request_id: str, send) -> None:
    body = orjson.dumps({"detail": f"request body over {MAX_BODY_BYTES} bytes", "request_id": request_id})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(runtime: Runtime, under_ray_serve: bool = False,
               batched_rerank: Callable[[tuple[Recommender, RerankQuery]], Awaitable[dict]] | None = None
               ) -> FastAPI:
    """`batched_rerank`: `rerank_group` wrapped by Ray Serve's dynamic batching (`deploy.build_app`); without
    it each rerank is answered alone."""
    app = FastAPI(title="recsys", version="1", exception_handlers=ERROR_HANDLERS,
                  description="Recommendations from the latest promoted release (Ray Serve + FastAPI).")
    # What the routes reach through request.app.state (`routes.shared.runtime_of`, the rerank route).
    app.state.runtime = runtime
    app.state.rerank = batched_rerank or rerank_alone
    app.add_middleware(ObserveRequests, telemetry=runtime.telemetry, echo_request_id=not under_ray_serve)
    # The OpenAPI document lists the paths in this order.
    for router in (recommendations.router, features.router, interactions.router, operations.router):
        app.include_router(router)
    return app

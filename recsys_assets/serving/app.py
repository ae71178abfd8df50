"""The HTTP API (FastAPI), served by Ray Serve (`deployment`) or, for comparison, bare uvicorn.

Every answer carries `request_id`, `model_version`, `index_version` and `release`. Bad parameters get 422,
unknown items 404, unknown users the popular list with `cold_start: true`, a service with no release yet
503; nothing a client sends can cause a 500.
"""

import json
import logging
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

from collections.abc import Awaitable, Callable

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, field_validator

from recsys_assets.serving.config import ServingConfig
from recsys_assets.serving.recommender import NotFound, Recommender, RerankQuery
from recsys_assets.serving.ingress import accepted_request_id, nodelay_on_every_tcp_socket
from recsys_assets.serving.runtime import Runtime

log = logging.getLogger("recsys.serving")
PAGE = Path(__file__).parent / "static" / "index.html"
UserId = Annotated[str, Query(min_length=1, max_length=256, description="a user id as in the raw data")]
ItemId = Annotated[str, Query(min_length=1, max_length=256, description="a parent_asin")]
# An interaction's time: from the first day of Amazon reviews to a day past the server's clock (clock skew).
MIN_TIMESTAMP_MS = int(datetime(1995, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
FUTURE_SLACK_MS = 86_400_000
MAX_BODY_BYTES = 256 * 1024  # the largest valid body (500 ids of 256 characters) is about 130 KB


class ScoreRequest(BaseModel):
    user_id: str = Field(min_length=1, max_length=256)
    item_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(min_length=1, max_length=500)


class Interaction(BaseModel):
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    rating: float = Field(5.0, ge=1, le=5)
    timestamp_ms: int | None = Field(
        None, ge=MIN_TIMESTAMP_MS, description="event time in ms since the epoch, from 1995-01-01 to one day past "
                                               "the server's clock; default: now")

    @field_validator("timestamp_ms")
    @classmethod
    def _not_in_the_future(cls, value: int | None) -> int | None:
        latest = int(time.time() * 1000) + FUTURE_SLACK_MS
        if value is not None and value > latest:
            raise ValueError(f"must be at most {latest} (one day past the server's clock); got {value}")
        return value


class FastJSONResponse(JSONResponse):
    """JSON through orjson (several times faster than the standard library's encoder)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content)


class ObserveRequests:
    """Request id (`accepted_request_id`) in request.state and the response header, Prometheus count +
    latency per route, a JSON log line per failed request; a body declared over MAX_BODY_BYTES is refused with
    413 before it is read. Plain ASGI: Starlette's BaseHTTPMiddleware cost about a millisecond a request here."""

    def __init__(self, app, metrics, echo_request_id: bool = True):
        # Under Ray Serve its own middleware echoes the id (bounded by `BoundedRequestId`): not twice.
        self.app, self.metrics, self.echo_request_id = app, metrics, echo_request_id

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        request_id = accepted_request_id(headers.get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        status, started = 500, time.perf_counter()

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.echo_request_id:
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            length = headers.get(b"content-length", b"0")
            if length.isdigit() and int(length) > MAX_BODY_BYTES:
                await _too_large(request_id, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            endpoint = route.path if route is not None else "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            if status >= 400:
                log.info(json.dumps({"request_id": request_id, "path": scope.get("path"), "status": status,
                                     "ms": round(elapsed * 1000, 2)}))


async def _too_large(request_id: str, send) -> None:
    body = orjson.dumps({"detail": f"request body over {MAX_BODY_BYTES} bytes", "request_id": request_id})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def rerank_group(queries: list[tuple[Recommender, RerankQuery]]) -> list[dict]:
    """Answers to concurrent rerank queries, each release's together (`Recommender.rerank_many`)."""
    answers: list = [None] * len(queries)
    for rec in {id(r): r for r, _ in queries}.values():
        mine = [k for k, (r, _) in enumerate(queries) if r is rec]
        for k, answer in zip(mine, rec.rerank_many([queries[k][1] for k in mine])):
            answers[k] = answer
    return answers


def create_app(runtime: Runtime, under_ray_serve: bool = False,
               batched_rerank: Callable[[tuple[Recommender, RerankQuery]], Awaitable[dict]] | None = None
               ) -> FastAPI:
    """`batched_rerank`: `rerank_group` wrapped by Ray Serve's dynamic batching (`deploy.build_app`); without
    it each rerank is answered alone."""
    # Handlers are `async def` on purpose: each request is a few ms of CPU (feature reads from a local store,
    # one forward pass); running them inline on the event loop beats a thread pool whose threads only take
    # turns on the GIL (measured: bench/serving.py).
    app = FastAPI(title="recsys", version="1",
                  description="Recommendations from the latest promoted release (Ray Serve + FastAPI).")
    app.state.runtime = runtime
    metrics = runtime.metrics

    app.add_middleware(ObserveRequests, metrics=metrics, echo_request_id=not under_ray_serve)

    def error(request: Request, status: int, detail) -> JSONResponse:
        return JSONResponse({"detail": detail, "request_id": request.state.request_id}, status_code=status)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return error(request, 404, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        detail = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return error(request, 422, detail)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"detail": exc.detail, "request_id": request.state.request_id},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("request %s failed", request.state.request_id)
        return error(request, 500, "internal error; see the server log for this request_id")

    async def recommender() -> Recommender:
        current = runtime.current
        if current is None:
            raise HTTPException(503, "no release published yet: run the pipeline (`make pipeline`) first")
        return current

    Rec = Annotated[Recommender, Depends(recommender)]

    def answer(request: Request, rec: Recommender, body: dict, status: int = 200) -> JSONResponse:
        # A ready response: FastAPI's own encoding pass over plain dicts and lists would only repeat the work.
        return FastJSONResponse({**body, **rec.versions, "request_id": request.state.request_id}, status_code=status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text())

    @app.get("/recs/popular", summary="Most interacted items of the release's window")
    async def popular(request: Request, rec: Rec, count: Annotated[int, Query(ge=1, le=100)] = 10):
        return answer(request, rec, {"items": rec.popular(count)})

    @app.get("/recs/i2i", summary="Items like an item (item2vec neighbours)")
    async def i2i(request: Request, rec: Rec, item_id: ItemId, count: Annotated[int, Query(ge=1, le=100)] = 10):
        return answer(request, rec, {"item_id": item_id, "items": rec.i2i(item_id, count)})

    @app.get("/recs/u2i/last_item_i2i", summary="Items like the user's latest item")
    async def last_item_i2i(request: Request, rec: Rec, user_id: UserId,
                            count: Annotated[int, Query(ge=1, le=100)] = 10):
        return answer(request, rec, {"user_id": user_id, **rec.last_item_i2i(user_id, count)})

    @app.get("/recs/u2i/rerank", summary="Two-tower ANN + last-item i2i + popular, reranked by the ranker")
    async def rerank(request: Request, rec: Rec, user_id: UserId,
               top_k_retrieval: Annotated[int, Query(ge=10, le=500)] = 100,
               count: Annotated[int, Query(ge=1, le=50)] = 10, debug: bool = False):
        ranker, variant = runtime.choose_ranker(rec)
        metrics.variants.labels(variant).inc()
        query = (rec, RerankQuery(user_id, top_k_retrieval, count, debug, ranker))
        body = await batched_rerank(query) if batched_rerank else (await rerank_group([query]))[0]
        return answer(request, rec, {"user_id": user_id, "ranker_variant": variant, **body})

    @app.post("/score/seq_rating_prediction", summary="The ranker's interaction probability per item")
    async def score(request: Request, rec: Rec, body: ScoreRequest):
        return answer(request, rec, {"user_id": body.user_id, **rec.seq_rating_prediction(body.user_id,
                                                                                            body.item_ids)})

    @app.get("/features/user", summary="The user's online features (fresh views first)")
    async def user_features(request: Request, rec: Rec, user_id: UserId):
        return answer(request, rec, rec.user_features(user_id))

    async def bearer(authorization: Annotated[str | None, Header()] = None) -> None:
        token = runtime.config.api_token
        if token is None:
            raise HTTPException(403, "interactions are disabled: set RECSYS_API_TOKEN on the server")
        given = authorization.removeprefix("Bearer ").strip() if authorization else ""
        if not authorization or not authorization.startswith("Bearer ") or not secrets.compare_digest(given, token):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/interactions", status_code=201, dependencies=[Depends(bearer)],
              summary="Record an interaction: fresh features now, the next day's landing file later")
    async def interactions(request: Request, rec: Rec, body: Interaction):
        timestamp_ms = body.timestamp_ms if body.timestamp_ms is not None else int(time.time() * 1000)
        state = rec.record_interaction(body.user_id, body.item_id, body.rating, timestamp_ms)
        runtime.events.append(body.user_id, body.item_id, body.rating, timestamp_ms)
        return answer(request, rec, {**state, "timestamp_ms": timestamp_ms}, status=201)

    @app.get("/healthz", summary="The process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="A release is loaded")
    async def readyz(request: Request):
        current = runtime.current
        if current is None:
            return error(request, 503, "no release loaded")
        return answer(request, current, {"ready": True, "day": current.release.day})

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def bare_app() -> FastAPI:
    """The same app without Ray Serve, for `uvicorn --factory` (the benchmark's baseline). Run with
    `--loop asyncio` as Serve's replicas are; uvicorn's own multi-worker socket needs the same TCP_NODELAY
    fix as theirs."""
    import torch

    nodelay_on_every_tcp_socket()
    torch.set_num_threads(1)
    return create_app(Runtime(ServingConfig.from_env()))

"""Beside the API: liveness, readiness (a release is loaded, its store answers), Prometheus metrics, and the demo page."""

import urllib.request
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from recsys_assets.serving.routes.shared import answer, error, runtime_of

PAGE = Path(__file__).parents[1] / "static" / "index.html"

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page():
    return HTMLResponse(PAGE.read_text())


@router.get("/healthz", summary="The process answers")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="A release is loaded (`degraded` says when the serving store does not answer)")
async def readyz(request: Request):
    runtime = runtime_of(request)
    current = runtime.current
    if current is None:
        return error(request, 503, "no release loaded")
    body = {"ready": True, "day": current.release.day}
    # Ready, though degraded, when the store (Redis) does not answer: the replica ranks with the release it
    # holds and fails fast where it cannot (recommender.py). Every replica shares the store, so a 503 here
    # would take them all out of the load balancer at once: a total outage in place of a degraded one.
    if problem := await run_in_threadpool(runtime.store_problem):  # a network call: off the event loop
        body["degraded"] = problem
    return answer(request, current, body)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus(request: Request):
    """Outside Ray, this process's metrics. Under Ray Serve a request reaches one replica of several, whose own
    numbers would be a random replica's: the answer is the node's Ray metrics export instead, which holds every
    replica on the node (with `recsys serve`, one node: all of them). On a cluster we joined (GKE) there is no
    one answer: 404 saying where to scrape. The public route never reaches it there (deploy/: ingress)."""
    telemetry = runtime_of(request).telemetry
    if telemetry.metrics.registry is not None:
        return Response(generate_latest(telemetry.metrics.registry), media_type=CONTENT_TYPE_LATEST)
    if telemetry.node_metrics_url:
        body, content_type = await run_in_threadpool(_fetch, telemetry.node_metrics_url)
        return Response(body, media_type=content_type)
    return error(request, 404, "serving metrics are exported by Ray's metrics agent on every node (its metrics "
                               "export port; KubeRay's 8080, scraped by the PodMonitor), or telemetry is off")


def _fetch(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), response.headers.get("content-type", CONTENT_TYPE_LATEST)

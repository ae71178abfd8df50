"""Beside the API: liveness, readiness (a release is loaded), Prometheus metrics, and the demo page."""

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsys_assets.serving.routes.shared import answer, error, runtime_of

PAGE = Path(__file__).parents[1] / "static" / "index.html"

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page():
    return HTMLResponse(PAGE.read_text())


@router.get("/healthz", summary="The process answers")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="A release is loaded")
async def readyz(request: Request):
    current = runtime_of(request).current
    if current is None:
        return error(request, 503, "no release loaded")
    return answer(request, current, {"ready": True, "day": current.release.day})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus(request: Request):
    return Response(generate_latest(runtime_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)

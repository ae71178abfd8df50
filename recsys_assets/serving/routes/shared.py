"""What every route module uses: the app's Runtime and current recommender (dependencies), answers that carry
the release's versions and the request id, and the error answers in the same shape (the app's exception
handlers)."""

import logging
from typing import Annotated

import orjson
from fastapi import Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from recsys_assets.serving.recommender import NotFound, Recommender
from recsys_assets.serving.runtime import Runtime
from recsys_assets.serving_data.kv import StoreUnavailable

log = logging.getLogger("recsys.serving")
UserId = Annotated[str, Query(min_length=1, max_length=256, description="a user id as in the raw data")]
ItemId = Annotated[str, Query(min_length=1, max_length=256, description="a parent_asin")]


class FastJSONResponse(JSONResponse):
    """JSON through orjson (several times faster than the standard library's encoder)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def request_id(request: Request) -> str:
    """The id the app's `ObserveRequests` middleware gave this request."""
    return request.state.request_id


def runtime_of(request: Request) -> Runtime:
    """The replica's Runtime (`create_app` keeps it in app.state)."""
    return request.app.state.runtime


async def recommender(request: Request) -> Recommender:
    """The current release's recommender; 503 while none is published."""
    current = runtime_of(request).current
    if current is None:
        raise HTTPException(503, "no release published yet: run the pipeline (`make pipeline`) first")
    return current


Rec = Annotated[Recommender, Depends(recommender)]


def answer(request: Request, rec: Recommender, body: dict, status: int = 200) -> JSONResponse:
    # A ready response: FastAPI's own encoding pass over plain dicts and lists would only repeat the work.
    return FastJSONResponse({**body, **rec.versions, "request_id": request_id(request)}, status_code=status)


def error(request: Request, status: int, detail) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": request_id(request)}, status_code=status)


async def not_found(request: Request, exc: NotFound):
    return error(request, 404, str(exc))


async def invalid(request: Request, exc: RequestValidationError):
    detail = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    return error(request, 422, detail)


async def http_error(request: Request, exc: HTTPException):
    return JSONResponse({"detail": exc.detail, "request_id": request_id(request)},
                        status_code=exc.status_code, headers=exc.headers)


async def unexpected(request: Request, exc: Exception):
    log.exception("request %s failed", request_id(request))
    return error(request, 500, "internal error; see the server log for this request_id")


# FastAPI's HTTPException only: Starlette's own (an unknown path, a wrong method) keeps Starlette's answer.
async def store_unavailable(request: Request, exc: StoreUnavailable):
    """A read the answer needs found the serving store unreachable: the client may retry (nothing was written)."""
    response = error(request, 503, str(exc))
    response.headers["Retry-After"] = "1"
    return response


ERROR_HANDLERS = {NotFound: not_found, RequestValidationError: invalid, HTTPException: http_error,
                  StoreUnavailable: store_unavailable, Exception: unexpected}

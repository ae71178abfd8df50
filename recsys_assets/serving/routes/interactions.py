"""Interactions as they happen (the demo page's likes), behind a bearer token: the user's fresh features
at once, the event log (the next day's landing file) later."""

import secrets
import time
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, Field, field_validator

from recsys_assets.serving.routes.shared import Rec, answer, runtime_of

# An interaction's time: from the first day of Amazon reviews to a day past the server's clock (clock skew).
MIN_TIMESTAMP_MS = int(datetime(1995, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
FUTURE_SLACK_MS = 86_400_000

router = APIRouter()


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


async def bearer(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    token = runtime_of(request).config.api_token
    if token is None:
        raise HTTPException(403, "interactions are disabled: set RECSYS_API_TOKEN on the server")
    given = authorization.removeprefix("Bearer ").strip() if authorization else ""
    # As bytes: compare_digest raises on non-ASCII str (a 500). A header arrives decoded as latin-1, so
    # encoding it back gives the bytes sent, compared with the token's UTF-8.
    if not authorization or not authorization.startswith("Bearer ") or not secrets.compare_digest(
            given.encode("latin-1"), token.encode("utf-8")):
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


@router.post("/interactions", status_code=201, dependencies=[Depends(bearer)],
             summary="Record an interaction: fresh features now, the next day's landing file later")
async def interactions(request: Request, rec: Rec, body: Interaction):
    timestamp_ms = body.timestamp_ms if body.timestamp_ms is not None else int(time.time() * 1000)
    state = rec.record_interaction(body.user_id, body.item_id, body.rating, timestamp_ms)
    runtime_of(request).events.append(body.user_id, body.item_id, body.rating, timestamp_ms)
    return answer(request, rec, {**state, "timestamp_ms": timestamp_ms}, status=201)

"""Interactions as they happen (the demo page's likes), behind a bearer token: the durable event log first
(the day's landing file later), then the user's fresh features. A 201 means the event is logged (fsync'd);
a retry with the same `Idempotency-Key` header gets the first answer back and records nothing again."""

import asyncio
import hashlib
import json
import logging
import secrets
import time
from datetime import date, datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from recsys_assets.data.schema import day_start_ms
from recsys_assets.serving.recommender import Recommender
from recsys_assets.serving.routes.shared import Rec, answer, runtime_of
from recsys_assets.serving.runtime import Runtime
from recsys_assets.serving_data.events import new_event_id
from recsys_assets.serving_data.idempotency import event_id_for

log = logging.getLogger("recsys.serving")

# An interaction's time: from the first day of Amazon reviews to a day past the server's clock (clock skew).
MIN_TIMESTAMP_MS = int(datetime(1995, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
FUTURE_SLACK_MS = 86_400_000
IN_PROGRESS_WAIT_S = 5.0  # a retry arriving while its first request records waits this long for its answer

router = APIRouter()


class Interaction(BaseModel):
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    rating: float = Field(5.0, ge=1, le=5)
    timestamp_ms: int | None = Field(
        None, ge=MIN_TIMESTAMP_MS, description="event time in ms since the epoch, from the first daily partition "
                                               "(RECSYS_START_DATE) to one day past the server's clock; default: now")

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


IdempotencyKey = Annotated[str | None, Header(
    min_length=1, max_length=255, description="the same key on a retry: recorded once, the first answer returned "
                                              "(remembered at least a day, by every replica)")]


@router.post("/interactions", status_code=201, dependencies=[Depends(bearer)],
             summary="Record an interaction: logged durably, fresh features now, the day's landing file later")
async def interactions(request: Request, rec: Rec, body: Interaction, idempotency_key: IdempotencyKey = None):
    runtime = runtime_of(request)
    _refuse_before_first_partition(body.timestamp_ms, runtime.config.settings.start_date)
    if idempotency_key is None:
        event = {"event_id": new_event_id(), "timestamp_ms": _timestamp(body)}
        return answer(request, rec, await run_in_threadpool(_record, runtime, rec, body, event), status=201)
    return await _record_once(request, runtime, rec, body, idempotency_key)


def _timestamp(body: Interaction) -> int:
    return body.timestamp_ms if body.timestamp_ms is not None else int(time.time() * 1000)


def _refuse_before_first_partition(timestamp_ms: int | None, start: date) -> None:
    """A day before the first partition can never land: refused rather than acknowledged and kept forever."""
    if timestamp_ms is not None and timestamp_ms < day_start_ms(start):
        raise RequestValidationError([{
            "loc": ("body", "timestamp_ms"), "type": "value_error",
            "msg": f"must be at least {day_start_ms(start)} ({start}, the first daily partition, RECSYS_START_DATE): "
                   f"earlier days are never landed; got {timestamp_ms}"}])


def _record(runtime: Runtime, rec: Recommender, body: Interaction, event: dict) -> dict:
    """The durable record first, then the features. A failed append changes nothing and raises (the 5xx is the
    truth: not recorded, retry). Once logged the interaction is recorded, whatever follows: a failed push is
    answered 201 with `features_updated: false` (the day's batch counts it), never a 5xx that a client would
    retry into a second push."""
    rec.known_items([body.item_id])  # an unknown item: 404 before anything is written
    runtime.events.append(body.user_id, body.item_id, body.rating, event["timestamp_ms"], event_id=event["event_id"])
    try:
        state = rec.record_interaction(body.user_id, body.item_id, body.rating, event["timestamp_ms"])
    except Exception:
        log.exception("interaction %s logged; its fresh features were not updated", event["event_id"])
        return {**event, "features_updated": False}
    return {**state, **event, "features_updated": True}


async def _record_once(request: Request, runtime: Runtime, rec: Recommender, body: Interaction, key: str):
    """Claim the key (every replica shares the claims), record once, store the answer for the retries."""
    fingerprint = hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()
    proposed = {"fingerprint": fingerprint, "event_id": event_id_for(key), "timestamp_ms": _timestamp(body)}
    deadline = time.monotonic() + IN_PROGRESS_WAIT_S
    # Files, locks and stores block: each step runs in the thread pool, never on the replica's event loop.
    claim = await run_in_threadpool(runtime.idempotency.claim, key, proposed)
    while claim.status == "pending" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the first request is recording it (on another replica): wait for its answer
        claim = await run_in_threadpool(runtime.idempotency.claim, key, proposed)
    if claim.status == "mismatch":
        raise HTTPException(422, "this Idempotency-Key was already used with a different body")
    if claim.status == "pending":
        raise HTTPException(409, "a request with this Idempotency-Key is still being recorded: retry later",
                            headers={"Retry-After": "1"})
    if claim.status == "done":
        response = answer(request, rec, claim.record["answer"], status=201)
        response.headers["Idempotent-Replayed"] = "true"
        return response
    event = {"event_id": claim.record["event_id"], "timestamp_ms": claim.record["timestamp_ms"]}
    try:
        result = await run_in_threadpool(_record, runtime, rec, body, event)
    except BaseException:
        # Not logged (`_record` raises only before or at the append): a retry may record it.
        await run_in_threadpool(runtime.idempotency.release, key, claim.record)
        raise
    await run_in_threadpool(runtime.idempotency.complete, key, claim.record, result)
    return answer(request, rec, result, status=201)

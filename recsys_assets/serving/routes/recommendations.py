"""Recommendations: popular items, items like an item, items for a user (like their latest item, or the
reranked blend of retrievers), and the ranker's scores for given items."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from recsys_assets.serving.recommender import Recommender, RerankQuery
from recsys_assets.serving.routes.shared import ItemId, Rec, UserId, answer, request_id, runtime_of

router = APIRouter()


class ScoreRequest(BaseModel):
    user_id: str = Field(min_length=1, max_length=256)
    item_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(min_length=1, max_length=500)


async def rerank_group(queries: list[tuple[Recommender, RerankQuery]]) -> list[dict]:
    """Answers to concurrent rerank queries, each release's together (`Recommender.rerank_many`)."""
    answers: list = [None] * len(queries)
    for rec in {id(r): r for r, _ in queries}.values():
        mine = [k for k, (r, _) in enumerate(queries) if r is rec]
        for k, result in zip(mine, rec.rerank_many([queries[k][1] for k in mine])):
            answers[k] = result
    return answers


async def rerank_alone(query: tuple[Recommender, RerankQuery]) -> dict:
    """One rerank answered by itself (without Ray Serve's batching)."""
    return (await rerank_group([query]))[0]


@router.get("/recs/popular", summary="Most interacted items of the release's window")
async def popular(request: Request, rec: Rec, count: Annotated[int, Query(ge=1, le=100)] = 10):
    return answer(request, rec, {"items": rec.popular(count)})


@router.get("/recs/i2i", summary="Items like an item (item2vec neighbours)")
async def i2i(request: Request, rec: Rec, item_id: ItemId, count: Annotated[int, Query(ge=1, le=100)] = 10):
    return answer(request, rec, {"item_id": item_id, "items": rec.i2i(item_id, count)})


@router.get("/recs/u2i/last_item_i2i", summary="Items like the user's latest item")
async def last_item_i2i(request: Request, rec: Rec, user_id: UserId,
                        count: Annotated[int, Query(ge=1, le=100)] = 10):
    body = rec.last_item_i2i(user_id, count)
    runtime_of(request).metrics.recommendation("/recs/u2i/last_item_i2i", body["cold_start"])
    return answer(request, rec, {"user_id": user_id, **body})


@router.get("/recs/u2i/rerank", summary="Two-tower ANN + last-item i2i + popular, reranked by the ranker")
async def rerank(request: Request, rec: Rec, user_id: UserId,
                 top_k_retrieval: Annotated[int, Query(ge=10, le=500)] = 100,
                 count: Annotated[int, Query(ge=1, le=50)] = 10, debug: bool = False):
    runtime = runtime_of(request)
    ranker, variant = runtime.choose_ranker(rec)
    query = RerankQuery(user_id, top_k_retrieval, count, debug, ranker)
    # app.state.rerank: `rerank_alone`, or under Ray Serve the batched `rerank_group` (see `create_app`).
    body = await request.app.state.rerank((rec, query))
    runtime.telemetry.reranked("/recs/u2i/rerank", query.stats, body, variant, request_id(request))
    return answer(request, rec, {"user_id": user_id, "ranker_variant": variant, **body})


@router.post("/score/seq_rating_prediction", summary="The ranker's interaction probability per item")
async def score(request: Request, rec: Rec, body: ScoreRequest):
    return answer(request, rec, {"user_id": body.user_id, **rec.seq_rating_prediction(body.user_id, body.item_ids)})

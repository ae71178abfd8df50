"""A user's online features, as the recommender reads them."""

from fastapi import APIRouter, Request

from recsys_assets.serving.routes.shared import Rec, UserId, answer

router = APIRouter()


@router.get("/features/user", summary="The user's online features (fresh views first)")
async def user_features(request: Request, rec: Rec, user_id: UserId):
    return answer(request, rec, rec.user_features(user_id))

"""What Ray Serve's HTTP servers load from us (serving/ingress.py), on a real ASGI stack (Starlette)."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from recsys_assets.serving.ingress import NoRouteIsUnavailable

RAY_404 = "Path '/interactions' not found. Ping http://.../-/routes for available routes."


def _client(status: int, json: bool, text: str = RAY_404) -> TestClient:
    async def answer(request):
        if json:
            return JSONResponse({"detail": "unknown user"}, status_code=status)
        return PlainTextResponse(text, status_code=status)
    return TestClient(Starlette(routes=[Route("/interactions", answer, methods=["GET", "POST"])],
                                middleware=[Middleware(NoRouteIsUnavailable)]))


def test_no_application_deployed_yet_is_a_503_to_retry_not_a_404():
    # Ray's proxy before (or while) the app is deployed: a client must retry, not give up on the path.
    response = _client(404, json=False).post("/interactions", json={})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "no application deployed yet" in response.text


def test_the_apps_own_answers_pass_unchanged():
    response = _client(404, json=True).get("/interactions")  # the app's 404 (JSON): final, as it says
    assert response.status_code == 404 and response.json() == {"detail": "unknown user"}
    assert _client(200, json=False).get("/interactions").status_code == 200
    other = _client(404, json=False, text="Not Found").get("/interactions")  # a 404 that is not Ray's
    assert other.status_code == 404 and other.text == "Not Found"

"""What Ray Serve's HTTP servers (its proxy, each replica's direct ingress) load from us before they accept a
connection, through RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH = `ray_http_middlewares` (a light module):

* request ids: a caller's `x-request-id` is kept when it is a plain id, else replaced by a new one (a 20 KB
  header must not come back whole);
* no application deployed yet (a service starting, restarting or stopping): a 503 with Retry-After instead of
  Ray's plain-text 404 "Path ... not found" (`NoRouteIsUnavailable`; HAProxy's own is amended by
  haproxy_wrapper.sh the same way);
* TCP_NODELAY on every connection (`nodelay_on_every_tcp_socket`).
"""

import asyncio.base_events
import re
import socket
import uuid

from starlette.middleware import Middleware

REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Ray Serve then awaits the handler directly instead of racing it against a task that watches for the
# client's disconnect (two tasks and an asyncio.wait a request): answers take milliseconds, a client that
# leaves costs that much at most.
DISCONNECT_DISABLED = b"x-request-disconnect-disabled"


def accepted_request_id(given: bytes | None) -> str:
    """The caller's `x-request-id` when it is a plain id of at most 128 characters, else a new one."""
    text = (given or b"").decode("latin-1")
    return text if REQUEST_ID.fullmatch(text) else uuid.uuid4().hex


class BoundedRequestId:
    """Replaces a caller's `x-request-id` that is not a plain id with a new one before Ray Serve's own request
    id middleware reads (and echoes) it: Ray Serve adds it through `ray_http_middlewares`, outside its own."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            given = scope.get("headers") or []
            request_id = accepted_request_id(dict(given).get(b"x-request-id"))
            kept = [(k, v) for k, v in given if k not in (b"x-request-id", DISCONNECT_DISABLED)]
            scope["headers"] = [*kept, (b"x-request-id", request_id.encode()), (DISCONNECT_DISABLED, b"?1")]
        await self.app(scope, receive, send)


NO_APPLICATION = b"no application deployed yet: the service is starting or stopping; retry"
RAY_NOT_FOUND = b"/-/routes for available routes"  # the end of Ray Serve's "Path '...' not found" answer


class NoRouteIsUnavailable:
    """Ray's proxy answers a path no application is deployed on with a plain-text 404: a client (rightly) takes
    that as final, yet our app is mounted at "/" and takes every path once deployed (its own 404s are JSON), so
    such a 404 only means the app is not there yet (seen: clients posting through a restart got "404 Path
    '/interactions' not found" for a few requests). It becomes a 503 with Retry-After, as HAProxy's does; any
    other 404 (the app's own) passes unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held = None  # a 404's start, until its body says whose it is
        replaced = False

        async def amended(message):
            nonlocal held, replaced
            if message["type"] == "http.response.start" and message["status"] == 404:
                held = message
            elif held is not None and message["type"] == "http.response.body" and not replaced:
                if RAY_NOT_FOUND in message.get("body", b""):
                    replaced = True
                    await send({"type": "http.response.start", "status": 503, "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1"),
                        (b"content-length", str(len(NO_APPLICATION)).encode())]})
                    await send({"type": "http.response.body", "body": NO_APPLICATION})
                else:
                    start, held = held, None
                    await send(start)
                    await send(message)
            elif not replaced:
                await send(message)

        await self.app(scope, receive, amended)


def nodelay_on_every_tcp_socket() -> None:
    """asyncio turns Nagle's algorithm off only on sockets made with proto=IPPROTO_TCP; Ray Serve's
    direct-ingress socket is made with proto 0, so its connections keep Nagle on, and each keep-alive
    response (headers, then body: two writes) waited ~40 ms for the client's delayed ACK (measured: 48 ms
    instead of 5 ms a request at one client). uvloop sets it on every TCP socket, asyncio's loop must too."""
    def set_nodelay(sock: socket.socket) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    asyncio.base_events._set_nodelay = set_nodelay


def ray_http_middlewares() -> list[Middleware]:
    """RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH points here (`ServingConfig.ray_serve_environment`)."""
    nodelay_on_every_tcp_socket()
    return [Middleware(NoRouteIsUnavailable), Middleware(BoundedRequestId)]

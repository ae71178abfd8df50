"""Redis connection strings: one value (RECSYS_REDIS_URL) for Feast's Redis online store and our own clients.

Feast reads `host:port,key=value,...` (its `connection_string`: `password=`, `ssl=true`, `ssl_ca_certs=`, `db=`
become redis-py keyword arguments, values JSON-decoded). A `redis://[:password@]host[:port][/db]` or
`rediss://` URL is turned into that form, since Feast would read the URL's `:password@host` as the host.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, unquote, urlsplit


def connection_string(url: str) -> str:
    """Feast's `host:port,options` form of a Redis URL (returned unchanged when already in that form)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"a Redis URL starts with redis:// or rediss://, got {parts.scheme}://")
    if not parts.hostname:
        raise ValueError(f"the Redis URL {url.split('@')[-1]!r} names no host")
    options = []
    if parts.username:
        options.append(f"username={unquote(parts.username)}")
    if parts.password:
        options.append(f"password={unquote(parts.password)}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
    if parts.path.strip("/"):
        options.append(f"db={int(parts.path.strip('/'))}")
    options += [f"{k}={v}" for k, v in parse_qsl(parts.query)]
    for option in options:
        if "," in option:
            raise ValueError("a Redis connection option may not contain ',' (Feast splits options on it)")
    return ",".join([f"{parts.hostname}:{parts.port or 6379}", *options])


def connection_kwargs(url: str) -> dict:
    """What a URL or connection string says, as redis-py keyword arguments read the way Feast's Redis online
    store reads it (the first `host:port`, then every `key=value`, values JSON-decoded where they parse)."""
    text = connection_string(url)
    nodes = [part for part in text.split(",") if "=" not in part]
    if not nodes:
        raise ValueError(f"the Redis connection string names no host:port: {text.split(',')[0]!r}")
    host, _, port = nodes[0].partition(":")
    kwargs: dict = {"host": host, "port": int(port or 6379)}
    for part in text.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            try:
                kwargs[key] = json.loads(value)
            except json.JSONDecodeError:
                kwargs[key] = value
    if not kwargs["host"]:
        raise ValueError("the Redis connection string has an empty host")
    return kwargs


def client_kwargs(url: str) -> dict:
    """Our clients' redis-py keyword arguments: the connection string's, and our retry policy."""
    kwargs = connection_kwargs(url)
    # redis-py's default retries 3 times with backoff of up to 10 s: a request would wait seconds for a Redis
    # that is gone. One immediate retry replaces a pooled connection that a Redis restart closed.
    kwargs.setdefault("retry", _one_retry())
    return kwargs


def _one_retry():
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), retries=1)


def with_timeouts(url: str, timeout_s: float) -> str:
    """The connection string with connect and read timeouts of `timeout_s` (what `client_kwargs` and Feast
    pass to redis-py), unless it sets its own: without them a call waits as long as the socket does."""
    text = connection_string(url)
    given = {part.split("=", 1)[0] for part in text.split(",") if "=" in part}
    return ",".join([text, *(f"{name}={timeout_s}" for name in ("socket_connect_timeout", "socket_timeout")
                             if name not in given)])

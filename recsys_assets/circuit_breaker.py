"""A circuit breaker for reads on the request path (serving's key-value store, the online feature store).

A store that stops answering (a frozen or restarting Redis) would cost every request its client timeout, on a
replica's event loop too. Behind the breaker the first failed read raises StoreUnavailable and opens the
circuit for `cooldown_s`; meanwhile reads fail at once; then one read tries the store again.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """A store did not answer a read (unreachable, timed out, failing): a retry may succeed."""


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store that cannot answer raises: SQLite's and the socket's errors, and redis-py's."""
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)
    try:
        import redis
    except ImportError:
        return errors
    return (*errors, redis.RedisError)


class CircuitBreaker:
    def __init__(self, name: str, cooldown_s: float = 1.0):
        self.name, self.cooldown_s = name, cooldown_s
        self._errors = store_errors()
        self._open_until, self._why = 0.0, ""

    def call(self, read: Callable[..., T], *args) -> T:
        if time.monotonic() < self._open_until:
            raise StoreUnavailable(self._why)
        try:
            return read(*args)
        except self._errors as exc:
            self._why = f"{self.name} unreachable: {type(exc).__name__}: {exc}"
            self._open_until = time.monotonic() + self.cooldown_s
            raise StoreUnavailable(self._why) from exc

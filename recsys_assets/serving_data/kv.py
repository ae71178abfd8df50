"""A key -> JSON value store: SQLite locally, Redis when configured. One batched read per call.

SQLite runs in WAL mode, so Serve replicas keep reading while an asset writes a new version; each thread
gets its own connection (FastAPI runs sync endpoints in a thread pool).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from recsys_assets.circuit_breaker import CircuitBreaker, StoreUnavailable

__all__ = ["GuardedKV", "KeyValueStore", "RedisKV", "SQLiteKV", "StoreUnavailable", "open_kv"]

_SQLITE_CHUNK = 900  # below SQLite's default limit of bound parameters
WATCH_ATTEMPTS = 100  # an optimistic Redis transaction gives up (an error, not a spin) after this many conflicts


class KeyValueStore(Protocol):
    def get_many(self, keys: list[str]) -> list[object | None]: ...

    def put_many(self, items: Iterable[tuple[str, object]]) -> int: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def keys_with_prefix(self, prefix: str) -> list[str]: ...

    def transact(self, keys: list[str], change: Change) -> list[tuple[str, object]]: ...

    def close(self) -> None: ...


# Given the current values of some keys, what to write (nothing: an empty list). Called again on a conflict.
Change = Callable[[list[object | None]], list[tuple[str, object]]]


class SQLiteKV:
    def __init__(self, path: Path, timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._connection() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def get_many(self, keys: list[str]) -> list[object | None]:
        found: dict[str, str] = {}
        conn = self._connection()
        for i in range(0, len(keys), _SQLITE_CHUNK):
            chunk = keys[i:i + _SQLITE_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(conn.execute(f"SELECT key, value FROM kv WHERE key IN ({marks})", chunk).fetchall())
        return [json.loads(found[k]) if k in found else None for k in keys]

    def put_many(self, items: Iterable[tuple[str, object]]) -> int:
        rows = [(k, json.dumps(v, separators=(",", ":"))) for k, v in items]
        with self._connection() as conn:  # one transaction: all or nothing
            conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", rows)
        return len(rows)

    def delete_prefix(self, prefix: str) -> int:
        with self._connection() as conn:
            return conn.execute("DELETE FROM kv WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff")).rowcount

    def keys_with_prefix(self, prefix: str) -> list[str]:
        rows = self._connection().execute("SELECT key FROM kv WHERE key >= ? AND key < ?",
                                          (prefix, prefix + "\uffff")).fetchall()
        return [r[0] for r in rows]

    def transact(self, keys: list[str], change: Change) -> list[tuple[str, object]]:
        """Read `keys` and write what `change` makes of them, with no other writer in between (SQLite's write
        lock is taken before the read); returns what was written."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            items = change(self.get_many(keys))
            conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)",
                             [(k, json.dumps(v, separators=(",", ":"))) for k, v in items])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back itself (disk full, I/O error)
                conn.execute("ROLLBACK")
            raise
        return items

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def redis_client(url: str):
    """A client from Feast's connection string style (host:port[,options]) or a redis[s]:// URL."""
    import redis  # only where Redis is configured

    from recsys_assets.redis_connection import client_kwargs

    return redis.Redis(**client_kwargs(url))


class RedisKV:
    def __init__(self, url: str):
        self.client = redis_client(url)

    def get_many(self, keys: list[str]) -> list[object | None]:
        if not keys:
            return []
        return [json.loads(v) if v is not None else None for v in self.client.mget(keys)]

    def put_many(self, items: Iterable[tuple[str, object]]) -> int:
        pipe, n = self.client.pipeline(transaction=True), 0
        for key, value in items:
            pipe.set(key, json.dumps(value, separators=(",", ":")))
            n += 1
        pipe.execute()
        return n

    def delete_prefix(self, prefix: str) -> int:
        keys = self.keys_with_prefix(prefix)
        for i in range(0, len(keys), 1000):
            self.client.unlink(*keys[i:i + 1000])
        return len(keys)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return [k.decode() for k in self.client.scan_iter(match=prefix.replace("*", r"\*") + "*", count=1000)]

    def transact(self, keys: list[str], change: Change) -> list[tuple[str, object]]:
        """Optimistic: WATCH the keys, read, write in MULTI/EXEC; a write by another client in between makes
        EXEC fail, and the change is computed again on the new values."""
        import redis

        for _ in range(WATCH_ATTEMPTS):
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*keys)
                    current = [json.loads(v) if v is not None else None for v in pipe.mget(keys)]
                    items = change(current)
                    pipe.multi()
                    for key, value in items:
                        pipe.set(key, json.dumps(value, separators=(",", ":")))
                    pipe.execute()
                    return items
                except redis.WatchError:
                    continue
        raise RuntimeError(f"{keys}: changed by other writers {WATCH_ATTEMPTS} times in a row; not written")

    def close(self) -> None:
        self.client.close()


def open_kv(sqlite_path: Path, redis_url: str | None = None) -> KeyValueStore:
    """Redis when a URL is given, else the SQLite file."""
    return RedisKV(redis_url) if redis_url else SQLiteKV(sqlite_path)


class GuardedKV:
    """Reads on the request path go through a circuit breaker (`recsys_assets/circuit_breaker.py`: a failed
    read raises StoreUnavailable, and the next ones fail at once for `cooldown_s` instead of each waiting out
    its timeout). Writes and scans go straight to the store."""

    def __init__(self, kv: KeyValueStore, cooldown_s: float = 1.0):
        self.kv = kv
        self.breaker = CircuitBreaker("serving store", cooldown_s)

    def get_many(self, keys: list[str]) -> list[object | None]:
        return self.breaker.call(self.kv.get_many, keys)

    def put_many(self, items: Iterable[tuple[str, object]]) -> int:
        return self.kv.put_many(items)

    def delete_prefix(self, prefix: str) -> int:
        return self.kv.delete_prefix(prefix)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return self.kv.keys_with_prefix(prefix)

    def transact(self, keys: list[str], change: Change) -> list[tuple[str, object]]:
        return self.kv.transact(keys, change)

    def close(self) -> None:
        self.kv.close()

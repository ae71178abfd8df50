"""Idempotency keys of POST /interactions, shared by every replica: a SQLite file beside the event log (one
machine), or the Redis that holds the log (GKE).

A request claims its key before it records anything. The claim carries what the event will be (its id and
timestamp), so a retry that takes over a claim whose request died records the very same event (the log's
dedupe by id then keeps one); once recorded, the claim holds the answer, which a retry gets back.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recsys_assets.serving_data.kv import WATCH_ATTEMPTS, redis_client

KEEP_S = 2 * 86_400  # a key is remembered at least this long (the promise is a day)
Status = Literal["new", "done", "pending", "mismatch"]


@dataclass(frozen=True)
class Claim:
    """new: record the event in `record` (yours now); done: answered, `record["answer"]` is the answer;
    pending: another request is recording it; mismatch: the key was used with another body."""
    status: Status
    record: dict


def event_id_for(key: str) -> str:
    """The event id a key stands for: the same on every retry, on every replica."""
    return "k-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _decide(current: dict | None, proposed: dict, now: float, pending_s: float) -> tuple[Status, dict, bool]:
    """What a claim finds, the record it returns and whether that record is (re)written as claimed now."""
    # Each claim has its owner (a fresh token): only the request holding it may answer or release it.
    if current is None or current["claimed_at"] < now - KEEP_S:
        return "new", {**proposed, "answer": None, "claimed_at": now, "owner": uuid.uuid4().hex}, True
    if current["fingerprint"] != proposed["fingerprint"]:
        return "mismatch", current, False
    if current["answer"] is not None:
        return "done", current, False
    if current["claimed_at"] < now - pending_s:
        # Its request died: the same event (id, timestamp), recorded again by a new owner.
        return "new", {**current, "claimed_at": now, "owner": uuid.uuid4().hex}, True
    return "pending", current, False


class SQLiteIdempotency:
    def __init__(self, path: Path, pending_s: float, timeout_s: float = 30.0):
        self.path, self.pending_s = Path(path), pending_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self._local = threading.local()
        with self._connection() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, record TEXT NOT NULL, "
                         "claimed_at REAL NOT NULL)")
            # Each claim purges the expired ones: by this index, not a scan of two days of keys.
            conn.execute("CREATE INDEX IF NOT EXISTS claims_by_time ON claims (claimed_at)")

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            conn.execute("PRAGMA synchronous=FULL")  # a claim or an answer survives a crash once written
        return conn

    def claim(self, key: str, proposed: dict) -> Claim:
        conn, now = self._connection(), time.time()
        conn.execute("BEGIN IMMEDIATE")  # the write lock before the read: one claimer per key
        try:
            conn.execute("DELETE FROM claims WHERE claimed_at < ?", (now - KEEP_S,))
            row = conn.execute("SELECT record FROM claims WHERE key = ?", (key,)).fetchone()
            status, record, write = _decide(json.loads(row[0]) if row else None, proposed, now, self.pending_s)
            if write:
                conn.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (key, json.dumps(record), now))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back itself (disk full, I/O error)
                conn.execute("ROLLBACK")
            raise
        return Claim(status, record)

    def complete(self, key: str, record: dict, answer: dict) -> None:
        self._connection().execute("UPDATE claims SET record = ? WHERE key = ? AND json_extract(record, '$.owner') = ?",
                                   (json.dumps({**record, "answer": answer}), key, record["owner"]))

    def release(self, key: str, record: dict) -> None:
        """The request failed before it was answered: a retry may record it (unless another owns it now)."""
        self._connection().execute("DELETE FROM claims WHERE key = ? AND json_extract(record, '$.answer') IS NULL "
                                   "AND json_extract(record, '$.owner') = ?", (key, record["owner"]))


class RedisIdempotency:
    PREFIX = "idempotency:"

    def __init__(self, url: str, pending_s: float):
        self.client, self.pending_s = redis_client(url), pending_s

    def claim(self, key: str, proposed: dict) -> Claim:
        import redis

        name = self.PREFIX + key
        for _ in range(WATCH_ATTEMPTS):  # optimistic: WATCH, read, write in MULTI/EXEC; another claimer: again
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(name)
                    value = pipe.get(name)
                    status, record, write = _decide(json.loads(value) if value else None, proposed, time.time(),
                                                    self.pending_s)
                    pipe.multi()
                    if write:
                        pipe.set(name, json.dumps(record), ex=KEEP_S)
                    pipe.execute()
                    return Claim(status, record)
                except redis.WatchError:
                    continue
        raise RuntimeError(f"Idempotency-Key {key!r}: contended {WATCH_ATTEMPTS} times in a row")

    # Compare-and-set on the owner, in one step on the server (a GET then a SET could overwrite a new owner).
    _IF_OWNER = ("local v = redis.call('GET', KEYS[1]) if v and cjson.decode(v)['owner'] == ARGV[1] then "
                 "if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end "
                 "return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end return 0")

    def complete(self, key: str, record: dict, answer: dict) -> None:
        self.client.eval(self._IF_OWNER, 1, self.PREFIX + key, record["owner"],
                         json.dumps({**record, "answer": answer}), KEEP_S)

    def release(self, key: str, record: dict) -> None:
        self.client.eval(self._IF_OWNER, 1, self.PREFIX + key, record["owner"], "", KEEP_S)


def open_idempotency(folder: Path, redis_url: str | None, pending_s: float) -> SQLiteIdempotency | RedisIdempotency:
    """Beside the event log: the Redis that holds it, else `idempotency.sqlite` in its folder. A claim unanswered
    after `pending_s` (RECSYS_IDEMPOTENCY_PENDING_S) belongs to a request that died: a retry takes it."""
    if redis_url:
        return RedisIdempotency(redis_url, pending_s=pending_s)
    return SQLiteIdempotency(Path(folder) / "idempotency.sqlite", pending_s=pending_s)

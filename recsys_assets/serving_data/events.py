"""The log of interactions received live, one per UTC day, merged into that day's landing file so the batch
pipeline sees them: JSON-lines files under a file lock (one machine, several Serve replicas), or Redis
streams where serving uses Redis (GKE: durable, and shared by every serving pod and the run pod that lands
the day)."""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa

from recsys_assets.data.landing import LandingZone
from recsys_assets.data.schema import REVIEW_SCHEMA, day_of_ms, review_file_name
from recsys_assets.serving_data.kv import redis_client

KEY = ["user_id", "parent_asin", "timestamp"]
COLUMNS = ["user_id", "parent_asin", "rating", "timestamp", "source", "event_id"]


def new_event_id() -> str:
    """An event's own id (the log's dedupe key), for a POST without an Idempotency-Key."""
    return uuid.uuid4().hex


def _event(user_id: str, parent_asin: str, rating: float, timestamp_ms: int, source: str, event_id: str) -> dict:
    return {"user_id": user_id, "parent_asin": parent_asin, "rating": float(rating), "timestamp": int(timestamp_ms),
            "source": source, "event_id": event_id}


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


class EventLog:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, day: str) -> Path:
        return self.folder / f"{day}.jsonl"

    def append(self, user_id: str, parent_asin: str, rating: float, timestamp_ms: int, source: str = "api",
               event_id: str | None = None) -> None:
        """Durable when it returns (fsync: the API's 2xx acknowledges it). A torn last line (a writer killed
        mid-write, never acknowledged) is closed first, so this event starts its own line and reads back."""
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_event(user_id, parent_asin, rating, timestamp_ms, source, event_id or new_event_id()))
        fd = os.open(self.path(day_of_ms(timestamp_ms).isoformat()), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the close
            size = os.fstat(fd).st_size
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            _write_all(fd, (b"\n" if torn else b"") + line.encode() + b"\n")
            os.fsync(fd)
            if size == 0:  # a new file: its directory entry must be durable too
                _fsync_dir(self.folder)
        finally:
            os.close(fd)

    def days(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.jsonl")) if self.folder.exists() else []

    def read(self, day: str) -> pd.DataFrame:
        """The day's logged interactions (user_id, parent_asin, rating, timestamp, source, event_id); a torn
        line (a writer killed mid-write) is skipped."""
        rows = []
        path = self.path(day)
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return pd.DataFrame(rows, columns=COLUMNS)

    # What has been landed: the file's size when land_events read it (the file only grows).
    def version(self, day: str) -> str:
        path = self.path(day)
        return str(path.stat().st_size) if path.exists() else "0"

    def _landed_path(self, day: str) -> Path:
        return self.folder / "landed" / day

    def landed_version(self, day: str) -> str | None:
        path = self._landed_path(day)
        return path.read_text() if path.exists() else None

    def mark_landed(self, day: str, version: str) -> None:
        path = self._landed_path(day)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{day}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(version)
        tmp.replace(path)  # atomic: a reader sees the old or the new version


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RedisEventLog:
    """The same log as one Redis stream per UTC day (`events:<day>`, XADD / XRANGE)."""

    PREFIX = "events:"
    LANDED = "events-landed:"  # what land_events read of a day: its stream's last entry id

    def __init__(self, url: str):
        self.client = redis_client(url)

    def append(self, user_id: str, parent_asin: str, rating: float, timestamp_ms: int, source: str = "api",
               event_id: str | None = None) -> None:
        event = _event(user_id, parent_asin, rating, timestamp_ms, source, event_id or new_event_id())
        self.client.xadd(self.PREFIX + day_of_ms(timestamp_ms).isoformat(), {k: str(v) for k, v in event.items()})

    def days(self) -> list[str]:
        return sorted(k.decode()[len(self.PREFIX):] for k in self.client.scan_iter(match=self.PREFIX + "*"))

    def read(self, day: str) -> pd.DataFrame:
        entries = self.client.xrange(self.PREFIX + day)
        rows = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        return frame.astype({"rating": float, "timestamp": "int64"})

    def version(self, day: str) -> str:
        last = self.client.xrevrange(self.PREFIX + day, count=1)
        return last[0][0].decode() if last else "0"

    def landed_version(self, day: str) -> str | None:
        value = self.client.get(self.LANDED + day)
        return value.decode() if value is not None else None

    def mark_landed(self, day: str, version: str) -> None:
        self.client.set(self.LANDED + day, version)


def open_event_log(folder: Path, redis_url: str | None = None) -> EventLog | RedisEventLog:
    """Redis streams when serving uses Redis (`Settings.serving_redis_url`), else the files under `folder`."""
    return RedisEventLog(redis_url) if redis_url else EventLog(folder)


def distinct_events(events: pd.DataFrame) -> pd.DataFrame:
    """Each event once: by its id (a retried POST with the same Idempotency-Key logs the same id; lines logged
    before ids existed get their key as id), then by (user_id, parent_asin, timestamp) as the landing file is."""
    if events.empty:
        return events
    ids = events["event_id"].where(events["event_id"].notna() & (events["event_id"] != ""),
                                   events[KEY].astype(str).agg("|".join, axis=1))
    return events.loc[~ids.duplicated()].drop_duplicates(KEY, keep="first")


def days_to_land(log: EventLog | RedisEventLog, first: str, before: str) -> list[str]:
    """The logged days in [first, before) with events that land_events has not landed yet (late ones
    included: a day's log grows whenever an event for it arrives)."""
    return [d for d in log.days() if first <= d < before and log.version(d) != log.landed_version(d)]


def land_events(log: EventLog | RedisEventLog, zone: LandingZone, day: date) -> int:
    """Merge the day's logged interactions into the day's landing file (created when absent); returns the
    rows added. Idempotent: an event already in the file, by (user_id, parent_asin, timestamp), is skipped,
    and a logged event counts once (`distinct_events`). Records the log's version it read, so `days_to_land`
    asks again only when events arrive later. A changed file is what the landing sensor picks up, so the day
    is ingested again with them."""
    version = log.version(day.isoformat())  # before the read: whatever arrives after it lands next time
    events = distinct_events(log.read(day.isoformat()))
    added = _merge_into_landing(events, zone, day) if not events.empty else 0
    log.mark_landed(day.isoformat(), version)
    return added


def _merge_into_landing(events: pd.DataFrame, zone: LandingZone, day: date) -> int:
    n = len(events)
    logged = pa.Table.from_pydict({
        "user_id": events["user_id"].astype(str).tolist(), "parent_asin": events["parent_asin"].astype(str).tolist(),
        "asin": events["parent_asin"].astype(str).tolist(), "rating": events["rating"].astype(float).tolist(),
        "timestamp": events["timestamp"].astype("int64").tolist(), "title": [""] * n, "text": [""] * n,
        "helpful_vote": [0] * n, "verified_purchase": [False] * n, "images": [[] for _ in range(n)],
    }, schema=REVIEW_SCHEMA)
    name = review_file_name(day)
    existing = zone.read_parquet(name).select(REVIEW_SCHEMA.names).cast(REVIEW_SCHEMA) \
        if name in zone.list_files() else REVIEW_SCHEMA.empty_table()
    merged = pa.concat_tables([existing, logged]).to_pandas()
    merged = merged.drop_duplicates(KEY, keep="first")
    added = len(merged) - existing.num_rows
    if added:
        zone.write_parquet(name, pa.Table.from_pandas(merged, schema=REVIEW_SCHEMA, preserve_index=False))
    return added

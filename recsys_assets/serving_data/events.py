"""The log of interactions received live, one per UTC day, merged into that day's landing file so the batch
pipeline sees them: JSON-lines files under a file lock (one machine, several Serve replicas), or Redis
streams where serving uses Redis (GKE: durable, and shared by every serving pod and the run pod that lands
the day)."""

from __future__ import annotations

import fcntl
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa

from recsys_assets.data.landing import LandingZone
from recsys_assets.data.schema import REVIEW_SCHEMA, day_of_ms, review_file_name
from recsys_assets.serving_data.kv import redis_client

KEY = ["user_id", "parent_asin", "timestamp"]
COLUMNS = ["user_id", "parent_asin", "rating", "timestamp", "source"]


def _event(user_id: str, parent_asin: str, rating: float, timestamp_ms: int, source: str) -> dict:
    return {"user_id": user_id, "parent_asin": parent_asin, "rating": float(rating), "timestamp": int(timestamp_ms),
            "source": source}


class EventLog:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, day: str) -> Path:
        return self.folder / f"{day}.jsonl"

    def append(self, user_id: str, parent_asin: str, rating: float, timestamp_ms: int, source: str = "api") -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_event(user_id, parent_asin, rating, timestamp_ms, source)) + "\n"
        with open(self.path(day_of_ms(timestamp_ms).isoformat()), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(line)
                f.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def days(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.jsonl")) if self.folder.exists() else []

    def read(self, day: str) -> pd.DataFrame:
        """The day's logged interactions (user_id, parent_asin, rating, timestamp, source); a torn last line
        (a writer killed mid-write) is skipped."""
        rows = []
        path = self.path(day)
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return pd.DataFrame(rows, columns=COLUMNS)


class RedisEventLog:
    """The same log as one Redis stream per UTC day (`events:<day>`, XADD / XRANGE)."""

    PREFIX = "events:"

    def __init__(self, url: str):
        self.client = redis_client(url)

    def append(self, user_id: str, parent_asin: str, rating: float, timestamp_ms: int, source: str = "api") -> None:
        event = _event(user_id, parent_asin, rating, timestamp_ms, source)
        self.client.xadd(self.PREFIX + day_of_ms(timestamp_ms).isoformat(), {k: str(v) for k, v in event.items()})

    def days(self) -> list[str]:
        return sorted(k.decode()[len(self.PREFIX):] for k in self.client.scan_iter(match=self.PREFIX + "*"))

    def read(self, day: str) -> pd.DataFrame:
        entries = self.client.xrange(self.PREFIX + day)
        rows = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        return frame.astype({"rating": float, "timestamp": "int64"})


def open_event_log(folder: Path, redis_url: str | None = None) -> EventLog | RedisEventLog:
    """Redis streams when serving uses Redis (`Settings.serving_redis_url`), else the files under `folder`."""
    return RedisEventLog(redis_url) if redis_url else EventLog(folder)


def land_events(log: EventLog | RedisEventLog, zone: LandingZone, day: date) -> int:
    """Merge the day's logged interactions into the day's landing file (created when absent); returns the
    rows added. Idempotent: an event already in the file, by (user_id, parent_asin, timestamp), is skipped.
    A changed file is what the landing sensor picks up, so the day is ingested again with them."""
    events = log.read(day.isoformat())
    if events.empty:
        return 0
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

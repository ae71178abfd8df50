"""The log of interactions received live: one JSON-lines file per UTC day, appended under a file lock so
several Serve replicas can write, merged into that day's landing file so the batch pipeline sees them."""

from __future__ import annotations

import fcntl
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa

from recsys_assets.data.landing import LandingZone
from recsys_assets.data.schema import REVIEW_SCHEMA, day_of_ms, review_file_name

KEY = ["user_id", "parent_asin", "timestamp"]


class EventLog:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, day: str) -> Path:
        return self.folder / f"{day}.jsonl"

    def append(self, user_id: str, parent_asin: str, rating: float, timestamp_ms: int, source: str = "api") -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"user_id": user_id, "parent_asin": parent_asin, "rating": float(rating),
                           "timestamp": int(timestamp_ms), "source": source}) + "\n"
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
        return pd.DataFrame(rows, columns=["user_id", "parent_asin", "rating", "timestamp", "source"])


def land_events(log: EventLog, zone: LandingZone, day: date) -> int:
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

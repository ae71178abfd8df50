"""The log of interactions received live: one JSON-lines file per UTC day, appended under a file lock so
several Serve replicas can write, merged into that day's landing file so the batch pipeline sees them."""

from __future__ import annotations

import fcntl
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd


def event_day(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc).date().isoformat()


class EventLog:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, day: str) -> Path:
        return self.folder / f"{day}.jsonl"

    def append(self, user_id: str, parent_asin: str, rating: float, timestamp_ms: int, source: str = "api") -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"user_id": user_id, "parent_asin": parent_asin, "rating": float(rating),
                           "timestamp": int(timestamp_ms), "source": source}) + "\n"
        with open(self.path(event_day(timestamp_ms)), "a") as f:
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

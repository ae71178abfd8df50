"""The release: which model versions, index collections and candidate versions serving uses, together.

The pipeline publishes a release once everything in it exists and passed its checks; serving polls the
current one and moves to it as a whole (a two-tower version only makes sense with its own item vectors).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from recsys_assets.serving_data.kv import KeyValueStore

CURRENT, HISTORY = "release:current", "release:history"
KEEP_HISTORY = 20
RERANK, POPULARITY = "rerank", "popularity"  # what a release serves: the models, or popularity alone


@dataclass(frozen=True)
class Release:
    day: str
    models: dict[str, str]  # registered model name -> version
    collections: dict[str, str]  # index alias -> versioned collection
    candidates: dict[str, str]  # candidate kind -> version
    # Models trained beside the champions but not promoted (name -> version): a canary may serve them.
    challengers: dict[str, str] = field(default_factory=dict)
    # POPULARITY while no model has passed the gate: every endpoint answers from popular items.
    pipeline: str = RERANK
    published_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def id(self) -> str:
        """Identifies the content (not when it was published): republishing the same content is no change."""
        body = json.dumps([self.models, self.collections, self.candidates, self.challengers, self.pipeline],
                          sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        return {**asdict(self), "id": self.id}

    @classmethod
    def from_dict(cls, raw: dict) -> Release:
        return cls(day=raw["day"], models=dict(raw["models"]), collections=dict(raw["collections"]),
                   candidates=dict(raw["candidates"]), challengers=dict(raw.get("challengers") or {}),
                   pipeline=raw.get("pipeline", RERANK), published_at=raw.get("published_at", ""))


class ReleaseStore:
    def __init__(self, kv: KeyValueStore):
        self.kv = kv

    def current(self) -> Release | None:
        raw = self.kv.get_many([CURRENT])[0]
        return Release.from_dict(raw) if raw else None

    def history(self) -> list[Release]:
        return [Release.from_dict(r) for r in (self.kv.get_many([HISTORY])[0] or [])]

    def publish(self, release: Release) -> bool:
        """Make `release` current; False (and nothing written) when it already is."""
        current = self.current()
        if current is not None and current.id == release.id:
            return False
        history = [r.as_dict() for r in self.history()][-(KEEP_HISTORY - 1):] + [release.as_dict()]
        self.kv.put_many([(HISTORY, history), (CURRENT, release.as_dict())])
        return True

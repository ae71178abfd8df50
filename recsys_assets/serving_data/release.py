"""The release: which model versions, index collections and candidate versions serving uses, together.

The pipeline publishes a release once everything in it exists and passed its checks; serving polls the
current one and moves to it as a whole (a two-tower version only makes sense with its own item vectors).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum

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


class Published(str, Enum):
    PUBLISHED = "published"
    UNCHANGED = "unchanged"  # the same content is current already
    NEWER_SERVED = "newer_served"  # a release of a later day is current: serving never moves back


class ReleaseStore:
    def __init__(self, kv: KeyValueStore):
        self.kv = kv

    def current(self) -> Release | None:
        raw = self.kv.get_many([CURRENT])[0]
        return Release.from_dict(raw) if raw else None

    def history(self) -> list[Release]:
        return [Release.from_dict(r) for r in (self.kv.get_many([HISTORY])[0] or [])]

    def recent(self, count: int = 2) -> list[Release]:
        """The last `count` releases published, the current one last: what a replica may still serve while
        it moves to the current one (what retiring old collections and candidates keeps)."""
        return self.history()[-count:]

    def publish(self, release: Release) -> Published:
        """Make `release` current unless it already is, or a release of a later day is: the check and the write
        are one transaction, so two publishers at once cannot move serving back a day."""
        outcome = Published.PUBLISHED

        def change(values: list) -> list[tuple[str, object]]:
            nonlocal outcome
            raw_current, raw_history = values
            current = Release.from_dict(raw_current) if raw_current else None
            if current is not None and current.id == release.id:
                outcome = Published.UNCHANGED
            elif current is not None and current.day > release.day:
                outcome = Published.NEWER_SERVED
            else:
                outcome = Published.PUBLISHED
                history = list(raw_history or [])[-(KEEP_HISTORY - 1):] + [release.as_dict()]
                return [(HISTORY, history), (CURRENT, release.as_dict())]
            return []

        self.kv.transact([CURRENT, HISTORY], change)
        return outcome

"""Whether a day's two-tower or ranker retrains from scratch or continues from the champion (issue 35).

An incremental day warm-starts from the champion's weights as validation judged them (its fit-only state:
weights that never saw the day's validation period, so validation stays fair) and trains on the last
`window_days` of the fit period for `epochs` epochs; the refresh on the validation period follows as on a full
day. A full retrain starts from scratch on the whole fit period, every `full_every_days` days of a lineage, when
there is no champion to start from (or one from before incremental training), when the last incremental version
fell behind the champion at the gate, or when asked for (the run tag `recsys/retrain=full`).

Each registered version is tagged with how it trained (`training`) and its lineage's last full retrain
(`full_retrain_day`), which is what the next day decides by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from recsys_assets.models.data import TIME

TRAINING_TAG = "training"  # full | incremental
FULL_RETRAIN_DAY_TAG = "full_retrain_day"
STARTED_FROM_TAG = "started_from"
RETRAIN_RUN_TAG = "recsys/retrain"  # = "full": the run's models retrain from scratch
FULL, INCREMENTAL = "full", "incremental"
DAY_MS = 86_400_000


@dataclass(frozen=True)
class IncrementalPolicy:
    enabled: bool
    window_days: int  # of the fit period an incremental day trains on
    epochs: int
    full_every_days: int


@dataclass(frozen=True)
class Version:
    """A registered version and its tags."""
    version: str
    tags: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Start:
    """How the day's model starts."""
    mode: str  # FULL or INCREMENTAL
    reason: str
    full_retrain_day: str  # its lineage's last full retrain: the day itself when FULL
    started_from: str | None = None  # the champion version an incremental day continues

    def tags(self) -> dict[str, str]:
        return {TRAINING_TAG: self.mode, FULL_RETRAIN_DAY_TAG: self.full_retrain_day,
                **({STARTED_FROM_TAG: self.started_from} if self.started_from else {})}


def choose_start(day: str, policy: IncrementalPolicy, champion: Version | None, latest: Version | None,
                 full_asked: bool = False) -> Start:
    """FULL or INCREMENTAL for `day`, and why. `champion`: the version serving now; `latest`: the newest
    registered version (yesterday's, promoted or not)."""
    def full(reason: str) -> Start:
        return Start(FULL, reason, day)

    if not policy.enabled:
        return full("incremental training is off (RECSYS_TRAIN_INCREMENTAL)")
    if full_asked:
        return full(f"a full retrain was asked for (run tag {RETRAIN_RUN_TAG}=full)")
    if champion is None:
        return full("no champion to start from")
    last_full = champion.tags.get(FULL_RETRAIN_DAY_TAG)
    if last_full is None:
        return full(f"the champion {champion.version} was trained before incremental training")
    age = (date.fromisoformat(day) - date.fromisoformat(last_full)).days
    if age >= policy.full_every_days:
        return full(f"the lineage's last full retrain ({last_full}) is {age} days old (every "
                    f"{policy.full_every_days} days)")
    if latest is not None and latest.version != champion.version and latest.tags.get(TRAINING_TAG) == INCREMENTAL:
        return full(f"the last incremental version {latest.version} fell behind the champion {champion.version} "
                    f"at the gate")
    return Start(INCREMENTAL, f"continues the champion {champion.version} (full retrain of {last_full})",
                 last_full, champion.version)


def recent(frame: pd.DataFrame, before_ms: int, window_days: int) -> pd.DataFrame:
    """The rows of the `window_days` days before `before_ms` (the validation boundary): what an incremental
    day trains on."""
    times = frame[TIME].to_numpy(np.int64)
    return frame[(times >= before_ms - window_days * DAY_MS) & (times < before_ms)]

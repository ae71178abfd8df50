"""Does the online store serve what the offline store says is the latest value?

For a sample of entities, compare each batch view's online values with the point-in-time latest offline
row as of the end of what was materialized. A mismatch means the online store was written by something
else, went stale, or lost rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from recsys_assets.feature_store.definitions import BATCH_VIEWS, FEATURES_BY_VIEW, KEY_BY_VIEW
from recsys_assets.feature_store.repository import FeatureRepository
from recsys_assets.feature_store.retrieval import point_in_time_features


@dataclass
class ConsistencyReport:
    as_of: str | None
    checked: dict[str, int] = field(default_factory=dict)
    mismatches: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.as_of is not None and not self.mismatches


def _same(online, offline) -> bool:
    if isinstance(offline, float) and isinstance(online, (int, float)):
        return math.isclose(online, offline, rel_tol=1e-9, abs_tol=1e-12)
    if hasattr(offline, "tolist"):
        offline = offline.tolist()
    if hasattr(online, "tolist"):
        online = online.tolist()
    return online == offline


def compare_online_with_offline(repo: FeatureRepository, days: list, sample_size: int = 200,
                                seed: int = 0) -> ConsistencyReport:
    as_of = repo.materialized_until()
    report = ConsistencyReport(as_of=as_of.isoformat() if as_of else None)
    if as_of is None:
        return report
    as_of_ms = int(as_of.timestamp() * 1000)
    for view in BATCH_VIEWS:
        key = KEY_BY_VIEW[view]
        keys = repo.entity_sample(view, days, sample_size, seed)
        report.checked[view] = len(keys)
        if not keys:
            continue
        offline = point_in_time_features(repo.store, pd.DataFrame({key: keys, "as_of": as_of_ms}),
                                         time_column="as_of", views=(view,))
        features = FEATURES_BY_VIEW[view]
        online = repo.store.get_online_features(
            features=[f"{view}:{f.name}" for f in features], entity_rows=[{key: k} for k in keys]
        ).to_dict()
        for i, k in enumerate(keys):
            for feature in features:
                got, want = online[feature.name][i], offline[feature.name][i]
                if not _same(got, want):
                    report.mismatches.append(
                        {"view": view, key: k, "feature": feature.name, "online": repr(got), "offline": repr(want)}
                    )
    return report

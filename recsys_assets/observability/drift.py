"""Population stability of a day against the previous one: the day's ratings, how its interactions spread over
items by the previous day's popularity, and a ranker's score distribution on a fixed sample.

PSI = sum over bins of (today's share - previous share) * ln(today's share / previous share), shares floored at
`FLOOR` so an empty bin counts without dividing by zero. Usual reading: < 0.1 stable, 0.1-0.2 a moderate shift,
> 0.2 (`PSI_THRESHOLD`) a significant one. Plain numpy: the Dagster checks (`defs/ingest/drift.py`,
`defs/models/drift.py`) and the tests call these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PSI_THRESHOLD = 0.2
FLOOR = 1e-4  # share given to an empty bin (a common choice: 0.01%)
POPULARITY_BINS = 5  # bins of about equal shares of the previous day's interactions (`popularity_bins`)
SCORE_BINS = 10  # deciles of the previous model's scores
RATING_VALUES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class DriftResult:
    """A PSI with the counts behind it; `psi` None when there is nothing to compare (`reason` says why: the
    first day, a day without rows)."""
    psi: float | None
    bins: list[str] = field(default_factory=list)
    previous: list[int] = field(default_factory=list)
    current: list[int] = field(default_factory=list)
    reason: str = ""
    threshold: float = PSI_THRESHOLD

    @property
    def drifted(self) -> bool:
        return self.psi is not None and self.psi > self.threshold

    def describe(self, what: str) -> str:
        if self.psi is None:
            return f"{what}: {self.reason}"
        verdict = "drifted" if self.drifted else "stable"
        return f"{what}: PSI {self.psi:.3f} ({verdict}; threshold {self.threshold})"


def psi(previous_counts, current_counts, floor: float = FLOOR) -> float:
    """PSI of two histograms over the same bins (counts, not shares)."""
    expected, actual = np.asarray(previous_counts, np.float64), np.asarray(current_counts, np.float64)
    if expected.shape != actual.shape:
        raise ValueError(f"histograms over different bins: {expected.shape} vs {actual.shape}")
    if expected.sum() <= 0 or actual.sum() <= 0:
        raise ValueError("PSI needs both histograms non-empty")
    e = np.maximum(expected / expected.sum(), floor)
    a = np.maximum(actual / actual.sum(), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def _compare(bins: list[str], previous: np.ndarray, current: np.ndarray, threshold: float) -> DriftResult:
    if previous.sum() == 0:
        return DriftResult(None, bins, previous.tolist(), current.tolist(), "no previous day to compare with",
                           threshold)
    if current.sum() == 0:
        return DriftResult(None, bins, previous.tolist(), current.tolist(), "the day has no rows", threshold)
    return DriftResult(round(psi(previous, current), 6), bins, previous.astype(int).tolist(),
                       current.astype(int).tolist(), threshold=threshold)


def rating_counts(ratings) -> np.ndarray:
    """Ratings per star 1..5 (a half star rounds to the nearest, off-scale values clip to the ends)."""
    stars = np.clip(np.rint(np.asarray(ratings, np.float64)), RATING_VALUES[0], RATING_VALUES[-1]).astype(int)
    return np.bincount(stars - RATING_VALUES[0], minlength=len(RATING_VALUES))


def rating_drift(previous_ratings, current_ratings, threshold: float = PSI_THRESHOLD) -> DriftResult:
    """The day's rating distribution against the previous day's."""
    return _compare([str(v) for v in RATING_VALUES], rating_counts(previous_ratings),
                    rating_counts(current_ratings), threshold)


def popularity_bins(previous_items, bins: int = POPULARITY_BINS) -> dict[str, int]:
    """Each item the previous day saw -> its popularity bin then: items ordered by their interactions (most
    first, ties by id, so the binning is reproducible) and cut where the interactions before them pass each
    1/`bins` share, so each bin holds about as many of the previous day's interactions (bin 0: the hits)."""
    items, counts = np.unique(np.asarray(previous_items, dtype=object).astype(str), return_counts=True)
    order = np.lexsort((items, -counts))
    items, counts = items[order], counts[order]
    before = (np.cumsum(counts) - counts) / max(counts.sum(), 1)
    return dict(zip(items.tolist(), np.minimum((before * bins).astype(int), bins - 1).tolist()))


def item_popularity_drift(previous_items, current_items, bins: int = POPULARITY_BINS,
                          threshold: float = PSI_THRESHOLD) -> DriftResult:
    """How the day's interactions spread over the previous day's popularity bins (`popularity_bins`; an item
    the previous day did not see counts in the tail bin) against the previous day's own spread: attention
    moving from the hits to the tail or to new items, or the other way.

    Why quintiles of interactions, not deciles of items: on the default generated data (5,000 items, ~5,000
    reviews a day) a fifth of a day's reviews go to items not reviewed the day before, so per-item deciles or a
    bin of their own for unseen items gave a PSI of 0.3-1.5 every day; these bins give a median of 0.12 and
    cross 0.2 on about one day in ten (the generator's bursts of new releases)."""
    bins_of = popularity_bins(previous_items, bins)
    tail = bins - 1

    def histogram(items) -> np.ndarray:
        index = np.fromiter((bins_of.get(str(i), tail) for i in items), dtype=np.int64)
        return np.bincount(index, minlength=bins)

    labels = [f"quintile {b + 1}" if bins == 5 else f"bin {b + 1}" for b in range(bins)]
    return _compare(labels, histogram(previous_items), histogram(current_items), threshold)


def score_drift(previous_scores, current_scores, bins: int = SCORE_BINS, threshold: float = PSI_THRESHOLD
                ) -> DriftResult:
    """A model's scores on a fixed sample against the previous model's on the same sample, over the previous
    scores' deciles (edges shared by ties merged; outside values fall in the end bins)."""
    previous, current = np.asarray(previous_scores, np.float64), np.asarray(current_scores, np.float64)
    if not len(previous):
        return DriftResult(None, reason="no previous model to compare with", threshold=threshold)
    if not len(current):
        return DriftResult(None, reason="no scores to compare", threshold=threshold)
    inner = np.unique(np.quantile(previous, np.linspace(0, 1, bins + 1)[1:-1]))
    labels = [f"<= {e:.4g}" for e in inner] + [f"> {inner[-1]:.4g}" if len(inner) else "all"]
    return _compare(labels, np.bincount(np.searchsorted(inner, previous, side="left"), minlength=len(labels)),
                    np.bincount(np.searchsorted(inner, current, side="left"), minlength=len(labels)), threshold)

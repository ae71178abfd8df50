"""How the served rerank orders a user's candidates: four experts' scores, fused with weights chosen on
validation (`evaluation.evaluate`) and carried by the ranker version's tags to serving.

* the ranker's log p(item | user) estimate (`ranker.ranking_scores`),
* the two-tower's (cosine / temperature),
* EASE's item-item score of the user's history (`baselines.py`), refitted on every release's data: plain EASE
  or the time-aware one (`baselines.TimeAwareEase`: recent interactions count more), each with the values it
  chose alone on validation; which of the two, validation decides with the weights,
* recent popularity: log(1 + the item's reviews, each counted 0.5 ** (age / half-life)) (`data.recent_popularity`,
  the half-life the recent-popularity baseline chose on validation). Popularity drifts (releases, trends) and
  none of the models sees time: on data with drift this is what moves with it.

Each is standardised over the user's candidates (scores on different scales become comparable; a model that
cannot score a candidate gives it its lowest score), then
    fused = (1 - ease_weight - recent_weight) * ((1 - retrieval_weight) * ranker + retrieval_weight * two_tower)
            + ease_weight * ease + recent_weight * recent.
ease_weight 1 is EASE's order, recent_weight 1 recent popularity's; 0 and 0 the two models' pipeline alone.
Validation picks among them, so the pipeline is never chosen to be worse there than its best part.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

TAG_PREFIX = "fusion_"
EASE_DEPTH = 100  # EASE's own top candidates, added to the retriever's
RECENT_DEPTH = 50  # the most recently popular items, added too
RETRIEVAL_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
EASE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
RECENT_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Fusion:
    retrieval_weight: float = 0.5
    ease_weight: float = 0.0
    ease_l2: float = 200.0  # EASE's regularisation, chosen on validation with the baselines
    recent_weight: float = 0.0
    recent_half_life_days: float = 7.0  # recent popularity's, chosen on validation with the baselines
    # The EASE expert's half-lives (`baselines.TimeAwareEase`, chosen with the baselines); 0 and 0: plain EASE
    # (also what a version tagged before them serves).
    ease_gram_half_life_days: float = 0.0
    ease_history_half_life_days: float = 0.0

    @property
    def uses_ease(self) -> bool:
        return self.ease_weight > 0

    @property
    def time_aware_ease(self) -> bool:
        return bool(self.ease_gram_half_life_days or self.ease_history_half_life_days)

    @property
    def uses_recent(self) -> bool:
        return self.recent_weight > 0

    def describe(self) -> str:
        """The order in words: each expert's share of the fused (standardised) score, e.g. `0.75 recent
        popularity (half-life 3 d) + 0.12 ranker + 0.12 two-tower`; one expert alone: its order."""
        models = 1 - self.ease_weight - self.recent_weight
        shares = [(self.recent_weight, f"recent popularity (half-life {self.recent_half_life_days:g} d)"),
                  (self.ease_weight, self._ease_words()),
                  (models * (1 - self.retrieval_weight), "ranker"), (models * self.retrieval_weight, "two-tower")]
        listed = [(weight, name) for weight, name in shares if weight > 0]
        if len(listed) == 1:
            return f"{listed[0][1]} alone"
        return " + ".join(f"{weight:.2g} {name}" for weight, name in listed)

    def _ease_words(self) -> str:
        if not self.time_aware_ease:
            return f"EASE (l2 {self.ease_l2:g})"
        return (f"time-aware EASE (l2 {self.ease_l2:g}, half-lives {self.ease_gram_half_life_days:g} d / "
                f"{self.ease_history_half_life_days:g} d)")

    def tags(self) -> dict[str, str]:
        return {TAG_PREFIX + key: str(value) for key, value in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Fusion:
        """From a ranker version's tags; a version evaluated before fusion was chosen: the even mix of the two
        models it ran with, no EASE."""
        known = {key: float(tags[TAG_PREFIX + key]) for key in asdict(cls()) if TAG_PREFIX + key in tags}
        return cls(**known)

    def scores(self, ranker: np.ndarray, retrieval: np.ndarray, ease: np.ndarray | None = None,
               recent: np.ndarray | None = None) -> np.ndarray:
        """Fused scores over the last axis (one user's candidates, or users x candidates). An expert that is
        absent (None: e.g. a user EASE's batch did not cover) drops out; the others keep their proportions."""
        models = (1 - self.retrieval_weight) * standardise(ranker) + self.retrieval_weight * standardise(retrieval)
        return self.combine(models, standardise(ease) if ease is not None else None,
                            standardise(recent) if recent is not None else None)

    def combine(self, models: np.ndarray, ease: np.ndarray | None, recent: np.ndarray | None) -> np.ndarray:
        """`scores` from already standardised parts (evaluation standardises once for the whole grid)."""
        fused = (1 - self.ease_weight - self.recent_weight) * models
        if ease is not None:
            fused = fused + self.ease_weight * ease
        if recent is not None:
            fused = fused + self.recent_weight * recent
        return fused


def standardise(scores: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the last axis. -inf (a candidate the model cannot score) becomes the row's lowest
    finite score first; NaN is padding (rows of unequal length), ignored and kept NaN. A constant row: zeros."""
    x = np.asarray(scores, dtype=np.float64)
    padding = np.isnan(x)
    finite = np.isfinite(x)
    lowest = np.where(finite, x, np.inf).min(axis=-1, keepdims=True)
    x = np.where(finite | padding, x, np.where(np.isfinite(lowest), lowest, 0.0))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-padding row: NaN, as it should
        mean = np.nanmean(x, axis=-1, keepdims=True) if padding.any() else x.mean(axis=-1, keepdims=True)
        spread = np.nanstd(x, axis=-1, keepdims=True) if padding.any() else x.std(axis=-1, keepdims=True)
    return (x - mean) / np.where(spread > 0, spread, 1.0)


def grid(eases: Sequence[tuple[float, float, float]] = (),
         recent_half_life_days: float = Fusion.recent_half_life_days) -> list[Fusion]:
    """Every fusion validation scores. `eases`: the EASE experts to choose among, each (l2, co-occurrence
    half-life, profile half-life) (`baselines.TimeAwareEase`; none: no EASE weight). Weights of EASE and recent
    popularity sum to at most 1, and with all on them the models' mix does not matter (listed once); a fusion
    without EASE is listed once too (with the first EASE's settings)."""
    out = []
    for n, ease in enumerate(eases or [(Fusion.ease_l2, 0.0, 0.0)]):
        for e in (EASE_WEIGHTS if eases else (0.0,)):
            if e == 0 and n > 0:
                continue
            for p in RECENT_WEIGHTS:
                if e + p <= 1:
                    out += [Fusion(r, e, ease[0], p, recent_half_life_days, ease[1], ease[2])
                            for r in (RETRIEVAL_WEIGHTS if e + p < 1 else (0.5,))]
    return out

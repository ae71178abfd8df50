"""Every answer the API gives, over one release: plain Python, no web framework.

Reads: precomputed candidates (one batched read per kind), online features (Feast, fresh views first),
the release's Qdrant collection for two-tower retrieval, the release's models. The rerank orders the
two-tower's, EASE's and the recently popular candidates (and the last item's neighbours, popular items) by
the fused scores of the ranker, the two-tower, EASE and recent popularity (`models/fusion.py`, as the ranker
version's evaluation chose). Time for the ranker's
time-delta buckets is the release's data time (the end of its day) or the user's latest event if later:
a model trained on day D sees the world as of D.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from recsys_assets.data.schema import day_start_ms
from recsys_assets.feature_store.online import BATCH, MISSING, ItemFeatureCache, OnlineFeatures
from recsys_assets.feature_store.push import push_interaction
from recsys_assets.models.bundles import Ranker, Retriever
from recsys_assets.models.data import USER
from recsys_assets.models.fusion import EASE_DEPTH, RECENT_DEPTH
from recsys_assets.serving_data.candidates import (
    EASE,
    I2I,
    ITEM,
    POPULAR,
    POPULAR_KEY,
    RECENT,
    RECENT_TOP_KEY,
    U2I,
    CandidateStore,
)
from recsys_assets.serving_data.index import IndexReader
from recsys_assets.serving_data.release import Release

HISTORY_ITEMS = "user_rating_list_10_recent_asin"
HISTORY_TIMES = "user_rating_list_10_recent_asin_timestamp"
TWO_TOWER_INDEX = "two_tower_items"


def _number(value) -> float | None:
    """A score for JSON: rounded, None where it is not finite (an item a model has never seen)."""
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


class NotFound(LookupError):
    """An id the platform does not know (answered 404 with the message)."""


@dataclass
class Recommender:
    release: Release
    retriever: Retriever | None  # None (with ranker and index) when the release serves popularity
    ranker: Ranker | None
    index: IndexReader | None
    candidates: CandidateStore
    features: OnlineFeatures
    item_features: ItemFeatureCache
    retrieval_extra: int = 20
    challenger: Ranker | None = None  # canary: answers the share of reranks the runtime routes to it

    @property
    def versions(self) -> dict:
        return {"model_version": dict(self.release.models), "index_version": self.release.collections.get(
            TWO_TOWER_INDEX), "release": self.release.id, "pipeline": self.release.pipeline}

    @property
    def serves_models(self) -> bool:
        return self.ranker is not None

    @property
    def data_time_ms(self) -> int:
        return day_start_ms(date.fromisoformat(self.release.day) + timedelta(days=1))

    # -- reads ---------------------------------------------------------------------------------------
    def _read(self, kind: str, ids: list[str]) -> list:
        return self.candidates.read(kind, self.release.candidates[kind], ids)

    def items_info(self, ids: list[str]) -> list[dict | None]:
        return self._read(ITEM, ids)

    def known_items(self, ids: list[str]) -> None:
        unknown = [i for i, info in zip(ids, self.items_info(ids)) if info is None]
        if unknown:
            raise NotFound(f"unknown item_id: {', '.join(unknown[:10])}")

    def _cards(self, scored: list[tuple[str, float]], extra: list[dict] | None = None) -> list[dict]:
        """Product cards: id, score and what the catalogue says, read in one batch."""
        infos = self.items_info([i for i, _ in scored])
        cards = []
        for n, ((item, score), info) in enumerate(zip(scored, infos)):
            card = {"item_id": item, "score": _number(score), **(info or {})}
            if extra:
                card.update(extra[n])
            cards.append(card)
        return cards

    def _popular(self) -> list[list]:
        return self._read(POPULAR, [POPULAR_KEY])[0] or []

    def _user(self, user_id: str) -> tuple[dict, str]:
        rows = self.features.users([user_id])
        return rows.row(0), rows.source[0]

    # -- endpoints -----------------------------------------------------------------------------------
    def popular(self, count: int, exclude: set[str] = frozenset()) -> list[dict]:
        top = [(i, n) for i, n in self._popular() if i not in exclude][:count]
        return self._cards(top)

    def i2i(self, item_id: str, count: int, exclude: set[str] = frozenset()) -> list[dict]:
        if not self.serves_models:  # no item2vec has passed the gate yet: popular items instead
            self.known_items([item_id])
            return self.popular(count, exclude={*exclude, item_id})
        neighbours = self._read(I2I, [item_id])[0]
        if neighbours is None:
            raise NotFound(f"unknown item_id: {item_id}")
        return self._cards([(i, s) for i, s in neighbours if i not in exclude and i != item_id][:count])

    def last_item_i2i(self, user_id: str, count: int) -> dict:
        user, source = self._user(user_id)
        history = list(user[HISTORY_ITEMS])
        if source == MISSING or not history:
            return {"cold_start": True, "items": self.popular(count)}
        last = history[-1]
        try:
            items = self.i2i(last, count, exclude=set(history))
        except NotFound:  # the last item is newer than the release's candidates
            items = self.popular(count, exclude=set(history))
        return {"cold_start": False, "last_item": last, "items": items}

    def _ease_scores(self, user_id: str, ranker: Ranker) -> dict[str, float]:
        """EASE's precomputed best items for the user with their scores (best first), when the ranker's fusion
        uses EASE and the release has them; empty for a user the batch did not cover."""
        if not ranker.fusion.uses_ease or EASE not in self.release.candidates:
            return {}
        return {i: s for i, s in self._read(EASE, [user_id])[0] or []}

    def _now_ms(self, user: dict) -> int:
        stamps = list(user[HISTORY_TIMES])
        return max(self.data_time_ms, max(stamps) + 1 if stamps else 0)

    def rerank(self, user_id: str, top_k_retrieval: int, count: int, debug: bool = False,
               ranker: Ranker | None = None) -> dict:
        started = time.perf_counter()
        ranker = ranker or self.ranker
        user, source = self._user(user_id)
        if source == MISSING:
            return {"cold_start": True, "items": self.popular(count)}
        history = list(user[HISTORY_ITEMS])
        seen = set(history)
        if not self.serves_models:
            return {"cold_start": False, "items": self.popular(count, exclude=seen)}
        now_ms = self._now_ms(user)
        user_frame = pd.DataFrame([{USER: user_id, **user}])
        vector = self.retriever.user_vector(user_frame, now_ms)
        timings = {"features_user_ms": (time.perf_counter() - started) * 1000}

        t = time.perf_counter()
        # A user with no event since the batch has the same ANN answer precomputed (u2i): one key read.
        precomputed = self._read(U2I, [user_id])[0] if source == BATCH else None
        if precomputed is not None and len(precomputed) >= top_k_retrieval:
            retrieval = "precomputed_u2i"
            ann = [(i, s) for i, s in precomputed if i not in seen]
        else:
            retrieval = "qdrant"
            ann = [(i, s) for i, s in self.index.search(vector, top_k_retrieval + len(seen)) if i not in seen]
        ann = ann[:top_k_retrieval]
        origin = {i: "two_tower" for i, _ in ann}
        ease = self._ease_scores(user_id, ranker)
        uses_recent = ranker.fusion.uses_recent and RECENT in self.release.candidates
        trending = [i for i, _ in self._read(RECENT, [RECENT_TOP_KEY])[0] or []] if uses_recent else []
        for name, extra in (("ease", list(ease)[:EASE_DEPTH]), ("recent_popular", trending[:RECENT_DEPTH])):
            for i in extra:
                if i not in seen:
                    origin.setdefault(i, name)
        last_item_i2i = (self._read(I2I, [history[-1]])[0] or []) if history else []
        for name, extra in (("last_item_i2i", last_item_i2i), ("popular", self._popular())):
            for i, _ in extra[:self.retrieval_extra]:
                if i not in seen:
                    origin.setdefault(i, name)
        candidates = list(origin)
        timings["retrieval_ms"] = (time.perf_counter() - t) * 1000
        if not candidates:
            return {"cold_start": False, "items": []}

        t = time.perf_counter()
        item_rows = self.item_features.items(candidates)
        timings["features_items_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        probability, ranking = ranker.score(user_frame, candidates, item_rows.columns, now_ms)
        logits = self.retriever.logits(vector, candidates)
        ease_scores = np.array([ease.get(c, -np.inf) for c in candidates]) if ease else None
        recent = None
        if uses_recent:  # log(1 + the item's reviews in the last days)
            recent = np.log1p(np.array([n or 0 for n in self._read(RECENT, candidates)], dtype=np.float64))
        fused = ranker.fusion.scores(ranking, logits, ease_scores, recent)
        order = np.argsort(-fused, kind="stable")[:count]
        timings["ranking_ms"] = (time.perf_counter() - t) * 1000
        scored = [(candidates[j], float(fused[j])) for j in order]
        extra = None
        if debug:
            extra = [{"source": origin[candidates[j]], "ranker_probability": _number(probability[j]),
                      "ranker_score": _number(ranking[j]), "retrieval_score": _number(logits[j]),
                      "ease_score": _number(ease_scores[j]) if ease_scores is not None else None,
                      "recent_popularity": _number(recent[j]) if recent is not None else None} for j in order]
        out = {"cold_start": False, "items": self._cards(scored, extra)}
        if debug:
            out["debug"] = {"candidates": len(candidates), "feature_source": source, "retrieval": retrieval,
                            "ranker": ranker.version, "fusion": asdict(ranker.fusion), "now_ms": now_ms,
                            "timings": {k: round(v, 3) for k, v in timings.items()}}
        return out

    def seq_rating_prediction(self, user_id: str, item_ids: list[str]) -> dict:
        """The ranker's probability that the user interacts with each item (given order), one forward pass."""
        self.known_items(item_ids)
        user, source = self._user(user_id)
        if not self.serves_models:  # the item's share of the most popular item's count (0 beyond the top)
            counts = dict(self._popular())
            top = max(counts.values(), default=1) or 1
            return {"cold_start": source == MISSING,
                    "scores": [{"item_id": i, "score": _number(counts.get(i, 0) / top)} for i in item_ids]}
        item_rows = self.item_features.items(item_ids)
        probability, _ = self.ranker.score(pd.DataFrame([{USER: user_id, **user}]), item_ids, item_rows.columns,
                                           self._now_ms(user))
        return {"cold_start": source == MISSING,
                "scores": [{"item_id": i, "score": _number(p)} for i, p in zip(item_ids, probability)]}

    def user_features(self, user_id: str) -> dict:
        user, source = self._user(user_id)
        if source == MISSING:
            raise NotFound(f"unknown user_id: {user_id}")
        return {"user_id": user_id, "source": source, "features": user}

    def record_interaction(self, user_id: str, item_id: str, rating: float, timestamp_ms: int) -> dict:
        self.known_items([item_id])
        state = push_interaction(self.features.store, user_id, item_id, rating, timestamp_ms)
        return {"user_id": user_id, "recent_items": state[HISTORY_ITEMS]}

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
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from recsys_assets.data.schema import day_start_ms
from recsys_assets.feature_contract import RECENT_ITEMS, RECENT_ITEMS_TIMESTAMPS, TWO_TOWER_ITEMS
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
from recsys_assets.serving_data.kv import StoreUnavailable
from recsys_assets.serving_data.release import Release

SHARED_KINDS = frozenset({ITEM, I2I, POPULAR, RECENT})  # keyed by item (or one key), not by user
MAX_SHARED_ENTRIES = 500_000  # per kind and replica; past it, reads go to the store


def _number(value) -> float | None:
    """A score for JSON: rounded, None where it is not finite (an item a model has never seen)."""
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


@dataclass
class RerankStats:
    """What a rerank did, for the caller's metrics and trace: (stage, start, end) intervals in
    `time.perf_counter_ns()` (stage: features, retrieval or ranking; a batch's shared steps are each query's),
    and how many candidates were scored."""
    stages: list[tuple[str, int, int]] = field(default_factory=list)
    candidates: int = 0


@dataclass(frozen=True)
class RerankQuery:
    user_id: str
    top_k_retrieval: int = 100
    count: int = 10
    debug: bool = False
    ranker: Ranker | None = None  # None: the release's champion (the canary passes the challenger)
    stats: RerankStats = field(default_factory=RerankStats, compare=False, repr=False)


@dataclass(eq=False)
class _Pending:
    """One query of a `rerank_many` batch on its way through the stages."""
    index: int
    query: RerankQuery
    ranker: Ranker
    user: dict
    source: str
    now_ms: int
    frame: pd.DataFrame | None = None  # one row: user_id + the user's features
    vector: np.ndarray | None = None
    retrieval: str = ""
    origin: dict = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    ease: dict = field(default_factory=dict)
    uses_recent: bool = False
    item_stats: dict = field(default_factory=dict)
    probability: np.ndarray | None = None
    ranking: np.ndarray | None = None
    timings: dict = field(default_factory=dict)
    degraded: set[str] = field(default_factory=set)  # what the answer went without (the store unreachable)


def _said(degraded: set[str]) -> dict:
    return {"degraded": sorted(degraded)} if degraded else {}


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
    # What every user reads alike (item cards, neighbours, popular lists) is fixed for a release: read once.
    _shared: dict = field(default_factory=dict, repr=False)

    @property
    def versions(self) -> dict:
        return {"model_version": dict(self.release.models), "index_version": self.release.collections.get(
            TWO_TOWER_ITEMS), "release": self.release.id, "pipeline": self.release.pipeline}

    @property
    def serves_models(self) -> bool:
        return self.ranker is not None

    @property
    def data_time_ms(self) -> int:
        return day_start_ms(date.fromisoformat(self.release.day) + timedelta(days=1))

    # -- reads ---------------------------------------------------------------------------------------
    def _read(self, kind: str, ids: list[str]) -> list:
        if kind not in SHARED_KINDS:
            return self.candidates.read(kind, self.release.candidates[kind], ids)
        cache = self._shared.setdefault(kind, {})
        missing = [i for i in ids if i not in cache]
        if missing:
            found = dict(zip(missing, self.candidates.read(kind, self.release.candidates[kind], missing)))
            if len(cache) < MAX_SHARED_ENTRIES:
                cache.update(found)
            return [cache[i] if i in cache else found[i] for i in ids]
        return [cache[i] for i in ids]

    def items_info(self, ids: list[str]) -> list[dict | None]:
        return self._read(ITEM, ids)

    def known_items(self, ids: list[str]) -> None:
        unknown = [i for i, info in zip(ids, self.items_info(ids)) if info is None]
        if unknown:
            raise NotFound(f"unknown item_id: {', '.join(unknown[:10])}")

    def _optional(self, degraded: set[str] | None, kind: str, ids: list[str]) -> list:
        """A read an answer can go without: while the store is unreachable a rerank is ranked by the same
        release's models over the candidates the replica can still get (the index, its cached lists) and
        says what it lacked in `degraded`. Without `degraded` (a read the answer needs) the error stands."""
        try:
            return self._read(kind, ids)
        except StoreUnavailable as exc:
            if degraded is None:
                raise
            degraded.add(f"{kind}: {exc}")
            return [None] * len(ids)

    def _cards(self, scored: list[tuple[str, float]], extra: list[dict] | None = None,
               degraded: set[str] | None = None) -> list[dict]:
        """Product cards: id, score and what the catalogue says, read in one batch."""
        infos = self._optional(degraded, ITEM, [i for i, _ in scored])
        cards = []
        for n, ((item, score), info) in enumerate(zip(scored, infos)):
            card = {"item_id": item, "score": _number(score), **(info or {})}
            if extra:
                card.update(extra[n])
            cards.append(card)
        return cards

    def _popular(self, degraded: set[str] | None = None) -> list[list]:
        return self._optional(degraded, POPULAR, [POPULAR_KEY])[0] or []

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
        history = list(user[RECENT_ITEMS])
        if source == MISSING or not history:
            return {"cold_start": True, "items": self.popular(count)}
        last = history[-1]
        try:
            items = self.i2i(last, count, exclude=set(history))
        except NotFound:  # the last item is newer than the release's candidates
            items = self.popular(count, exclude=set(history))
        return {"cold_start": False, "last_item": last, "items": items}

    def _ease_scores(self, user_id: str, ranker: Ranker, degraded: set[str] | None = None) -> dict[str, float]:
        """EASE's precomputed best items for the user with their scores (best first), when the ranker's fusion
        uses EASE and the release has them; empty for a user the batch did not cover."""
        if not ranker.fusion.uses_ease or EASE not in self.release.candidates:
            return {}
        return {i: s for i, s in self._optional(degraded, EASE, [user_id])[0] or []}

    def _now_ms(self, user: dict) -> int:
        stamps = list(user[RECENT_ITEMS_TIMESTAMPS])
        return max(self.data_time_ms, max(stamps) + 1 if stamps else 0)

    def rerank(self, user_id: str, top_k_retrieval: int, count: int, debug: bool = False,
               ranker: Ranker | None = None) -> dict:
        return self.rerank_many([RerankQuery(user_id, top_k_retrieval, count, debug, ranker)])[0]

    def rerank_many(self, queries: list[RerankQuery]) -> list[dict]:
        """Answers to several rerank queries at once (what Serve's batching gathers from concurrent
        requests): one online-feature read and one user-tower pass for all users, one ranker forward pass
        per ranker for all candidates; the rest per user."""
        clock = time.perf_counter_ns
        started = clock()
        rows = self.features.users([q.user_id for q in queries])
        read = clock()
        for query in queries:
            query.stats.stages.append(("features", started, read))
        answers: list[dict | None] = [None] * len(queries)
        pending = []
        for n, query in enumerate(queries):
            user, source = rows.row(n), rows.source[n]
            if source == MISSING:
                answers[n] = {"cold_start": True, "items": self.popular(query.count)}
            elif not self.serves_models:
                answers[n] = {"cold_start": False, "items": self.popular(query.count, exclude=set(user[RECENT_ITEMS]))}
            else:
                pending.append(_Pending(n, query, query.ranker or self.ranker, user, source, self._now_ms(user)))
        if not pending:
            return answers
        frame = pd.DataFrame([{USER: p.query.user_id, **p.user} for p in pending])
        vectors = self.retriever.user_vectors(frame, np.array([p.now_ms for p in pending]))
        towered = clock()
        for k, (p, vector) in enumerate(zip(pending, vectors)):
            p.frame, p.vector = frame.iloc[[k]], vector
            t = clock()
            self._candidates(p)
            t2 = clock()
            p.item_stats = self.item_features.items(p.candidates).columns if p.candidates else {}
            t3 = clock()
            p.query.stats.stages += [("retrieval", read, towered), ("retrieval", t, t2), ("features", t2, t3)]
            p.query.stats.candidates = len(p.candidates)
            p.timings = {"features_user_ms": (read - started) / 1e6, "user_tower_ms": (towered - read) / 1e6,
                         "retrieval_ms": (t2 - t) / 1e6, "features_items_ms": (t3 - t2) / 1e6}
        for ranker in {id(p.ranker): p.ranker for p in pending if p.candidates}.values():
            group = [p for p in pending if p.ranker is ranker and p.candidates]
            t = clock()
            scored = ranker.score_many([(p.frame, p.candidates, p.item_stats, p.now_ms) for p in group])
            t2 = clock()
            for p, (probability, ranking) in zip(group, scored):
                p.probability, p.ranking = probability, ranking
                p.timings["ranker_forward_ms"] = (t2 - t) / 1e6  # shared by the batch
                p.query.stats.stages.append(("ranking", t, t2))
        for p in pending:
            answers[p.index] = self._fused(p) if p.candidates else {"cold_start": False, "items": []}
        return answers

    def _candidates(self, p: _Pending) -> None:
        """The user's candidates (unseen): the two-tower's (precomputed, or from the index), EASE's, the
        recently popular, the last item's neighbours, the popular; each item's first source in `origin`."""
        history = list(p.user[RECENT_ITEMS])
        seen = set(history)
        # A user with no event since the batch has the same ANN answer precomputed (u2i): one key read.
        precomputed = self._optional(p.degraded, U2I, [p.query.user_id])[0] if p.source == BATCH else None
        top_k = p.query.top_k_retrieval
        if precomputed is not None and len(precomputed) >= top_k:
            p.retrieval = "precomputed_u2i"
            ann = [(i, s) for i, s in precomputed if i not in seen]
        else:
            p.retrieval = "qdrant"
            ann = [(i, s) for i, s in self.index.search(p.vector, top_k + len(seen)) if i not in seen]
        origin = {i: "two_tower" for i, _ in ann[:top_k]}
        p.ease = self._ease_scores(p.query.user_id, p.ranker, p.degraded)
        p.uses_recent = p.ranker.fusion.uses_recent and RECENT in self.release.candidates
        trending = ([i for i, _ in self._optional(p.degraded, RECENT, [RECENT_TOP_KEY])[0] or []]
                    if p.uses_recent else [])
        for name, extra in (("ease", list(p.ease)[:EASE_DEPTH]), ("recent_popular", trending[:RECENT_DEPTH])):
            for i in extra:
                if i not in seen:
                    origin.setdefault(i, name)
        last_item_i2i = (self._optional(p.degraded, I2I, [history[-1]])[0] or []) if history else []
        for name, extra in (("last_item_i2i", last_item_i2i), ("popular", self._popular(p.degraded))):
            for i, _ in extra[:self.retrieval_extra]:
                if i not in seen:
                    origin.setdefault(i, name)
        p.origin, p.candidates = origin, list(origin)

    def _fused(self, p: _Pending) -> dict:
        """The user's candidates ordered by the ranker's fusion of the experts' scores, as cards."""
        t = time.perf_counter_ns()
        candidates = p.candidates
        logits = self.retriever.logits(p.vector, candidates)
        ease_scores = np.array([p.ease.get(c, -np.inf) for c in candidates]) if p.ease else None
        recent = None
        if p.uses_recent:  # log(1 + the item's reviews, each decayed by age: `recent_popularity`'s table)
            recent = np.log1p(np.array([n or 0 for n in self._optional(p.degraded, RECENT, candidates)],
                                       dtype=np.float64))
        fused = p.ranker.fusion.scores(p.ranking, logits, ease_scores, recent)
        order = np.argsort(-fused, kind="stable")[:p.query.count]
        done = time.perf_counter_ns()
        p.query.stats.stages.append(("ranking", t, done))
        p.timings["fusion_ms"] = (done - t) / 1e6
        scored = [(candidates[j], float(fused[j])) for j in order]
        if not p.query.debug:
            return {"cold_start": False, "items": self._cards(scored, degraded=p.degraded), **_said(p.degraded)}
        extra = [{"source": p.origin[candidates[j]], "ranker_probability": _number(p.probability[j]),
                  "ranker_score": _number(p.ranking[j]), "retrieval_score": _number(logits[j]),
                  "ease_score": _number(ease_scores[j]) if ease_scores is not None else None,
                  "recent_popularity": _number(recent[j]) if recent is not None else None} for j in order]
        items = self._cards(scored, extra, p.degraded)
        return {"cold_start": False, "items": items, **_said(p.degraded),
                "debug": {"candidates": len(candidates), "feature_source": p.source, "retrieval": p.retrieval,
                          "ranker": p.ranker.version, "fusion": asdict(p.ranker.fusion), "now_ms": p.now_ms,
                          "timings": {k: round(v, 3) for k, v in p.timings.items()}}}

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
        return {"user_id": user_id, "recent_items": state[RECENT_ITEMS]}

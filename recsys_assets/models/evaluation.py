"""Offline evaluation, every model beside the baselines (popularity, recent popularity, EASE, item-kNN:
`baselines.py`), one protocol (`metrics.py`), on two periods (`dataset.Cut`):

* validation (the end of the training period; the models learned from what precedes it): every choice is made
  here (the rerank's fusion, the baselines' hyper-parameters, the last-item i2i's popularity weight) and the
  gate compares here;
* holdout (after the training period): reported only, never used to choose.

Validation judges the weights learned from the fit period (`validation_models`); the holdout, the refreshed
weights that are served (refreshed on the validation period, as the baselines are refitted on it).

Users are evaluated as of the period's start: their features, last item and history are what was known
then. Rerank = the two-tower's top `rerank_depth` candidates, EASE's top `fusion.EASE_DEPTH` (plain or
time-aware, `baselines.TimeAwareEase`: chosen with the fusion) and the most recently popular items
(`data.recent_popularity`), ordered by the ranker's, the two-tower's, EASE's and recent popularity's scores
fused (`fusion.py`, weights chosen on validation), as served.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from recsys_assets.models.baselines import BaselineConfig, TimeAwareEase, evaluate_baselines, search_grid
from recsys_assets.models.data import ITEM, TIME, USER, Vocabulary, popularity, recent_popularity
from recsys_assets.models.dataset import Cut, TrainingData, pack_items, pack_ranker, pack_ranker_by_user, pack_users
from recsys_assets.models.features import Catalogue
from recsys_assets.models.fusion import EASE_DEPTH, RECENT_DEPTH, Fusion, grid, standardise
from recsys_assets.models.item2vec import I2I_POPULARITY_WEIGHTS
from recsys_assets.models.metrics import classification_report, per_user_recall_ndcg, ranking_report, top_k
from recsys_assets.models.promotion import GATE_EVIDENCE, GATE_METRIC  # what every choice maximises
from recsys_assets.models.ranker import score
from recsys_assets.models.two_tower import encode

K_MAX = 50


@dataclass(frozen=True)
class EvaluationConfig:
    max_users: int = 3000  # a fixed sample of each period's users keeps evaluation time bounded
    rerank_depth: int = 100
    seed: int = 0


@dataclass
class Models:
    item2vec: np.ndarray | None = None  # item embeddings by the models' item index
    two_tower: torch.nn.Module | None = None
    ranker: torch.nn.Module | None = None
    # The vocabularies the models were trained with; None: the evaluated data's own (the day's models). An
    # older champion keeps its own, so it is judged on the same split as the day's candidate: items it never
    # saw it cannot recommend, users it never saw it meets as unknown.
    users: Vocabulary | None = None
    catalogue: Catalogue | None = None
    fusion: Fusion | None = None  # a served pipeline's own; None: chosen on validation (`fusion.grid`)
    i2i_popularity_weight: float | None = None  # likewise (`item2vec.I2I_POPULARITY_WEIGHTS`)


def _users_to_evaluate(later: pd.DataFrame, cfg: EvaluationConfig) -> list[str]:
    users = sorted(set(later[USER]))
    if len(users) > cfg.max_users:
        users = sorted(np.random.default_rng(cfg.seed).choice(users, cfg.max_users, replace=False).tolist())
    return users


def _seen_and_relevant(cut: Cut, items: Vocabulary, users: list[str]
                       ) -> tuple[pd.DataFrame, list[np.ndarray], list[set[int]]]:
    """The period's past events with their item index (`item`); per user, the items not to recommend (padding
    and what they took before) and those they take in the period (indices into `items`)."""
    past = cut.past.assign(item=items.index(cut.past[ITEM].to_numpy()))
    later = cut.later[cut.later[USER].isin(set(users))]
    relevant_by_user = later.assign(item=items.index(later[ITEM].to_numpy())).groupby(USER)["item"].apply(set)
    seen = past.groupby(USER)["item"].apply(lambda s: np.unique(s.to_numpy()))
    exclude = [np.concatenate([[0], seen.get(u, np.zeros(0, np.int64))]) for u in users]
    return past, exclude, [relevant_by_user.get(u, set()) for u in users]


def _in_evaluated_items(model_scores: np.ndarray, to_model: np.ndarray) -> np.ndarray:
    """Scores over the models' items -> over the evaluated items (-inf where the models lack the item)."""
    scores = model_scores[:, to_model]
    scores[:, to_model == 0] = -np.inf
    return scores


def _union(*sources: np.ndarray | None) -> np.ndarray:
    """Per row, the items of each source in turn, those already listed skipped; -1 pads rows to one width."""
    present = [s for s in sources if s is not None]
    rows = []
    for parts in zip(*present):
        row = parts[0]
        for part in parts[1:]:
            row = np.concatenate([row, part[~np.isin(part, row)]])
        rows.append(row)
    width = max(len(r) for r in rows)
    return np.stack([np.pad(r, (0, width - len(r)), constant_values=-1) for r in rows])


@dataclass(frozen=True)
class PeriodScores:
    """`Models` scored on one period (`_score_period`)."""
    models: dict[str, dict]  # each model's metrics (the last-item i2i's: with its best popularity weight)
    rerank_by_fusion: dict[Fusion, dict]  # the rerank's metrics with each fusion scored
    rerank_ndcg_by_user: dict[Fusion, np.ndarray]  # and its NDCG@10 per user
    popularity_ndcg_by_user: np.ndarray
    i2i_by_weight: dict[float, dict]  # the last-item i2i's metrics with each popularity weight scored


@dataclass(frozen=True)
class _Period:
    """One period as every model meets it: the evaluated users, per user the items not to recommend and those
    they take in the period (`_seen_and_relevant`), and the models' items over the evaluated ones."""
    cut: Cut
    users: list[str]
    items: Vocabulary  # the evaluated item space: the split's training items
    past: pd.DataFrame  # the events before the period, with their item index (`item`)
    exclude: list[np.ndarray]
    relevant: list[set[int]]
    user_vocabulary: Vocabulary  # the models'
    catalogue: Catalogue  # the models'
    to_model: np.ndarray  # each evaluated item's index among the models' items (0: they lack it)

    @classmethod
    def of(cls, cut: Cut, users: list[str], catalogue: Catalogue, models: Models, user_vocabulary: Vocabulary
           ) -> _Period:
        model_catalogue = models.catalogue if models.catalogue is not None else catalogue
        items = catalogue.items
        past, exclude, relevant = _seen_and_relevant(cut, items, users)
        return cls(cut, users, items, past, exclude, relevant, user_vocabulary, model_catalogue,
                   np.concatenate([[0], model_catalogue.items.index(items.ids)]))

    def report(self, ranked: np.ndarray) -> dict:
        return ranking_report(ranked, self.relevant, len(self.items) - 1)


@dataclass(frozen=True)
class _Alternatives:
    """What scoring one period weighs: the rerank's fusions (one recent popularity half-life between them; with
    `with_ease`, each EASE they name, fitted on the events before the period, adds its top candidates to every
    user's) and the last-item i2i's popularity weights."""
    fusions: list[Fusion]
    with_ease: bool
    i2i_weights: Sequence[float]


def _score_period(period: _Period, models: Models, cfg: EvaluationConfig, alternatives: _Alternatives
                  ) -> PeriodScores:
    """`models` on one period. The metrics of `item2vec` are those of the best of the i2i weights there (and of
    larger weights while the largest is best); each fusion orders the rerank's candidates with its own."""
    results: dict[str, dict] = {}
    pop = popularity(period.cut.past, period.items)
    pop_ranked = top_k(np.tile(pop, (len(period.users), 1)), period.exclude, K_MAX)
    results["popularity"] = period.report(pop_ranked)
    i2i_by_weight = {}
    if models.item2vec is not None:
        i2i_by_weight = _score_i2i(period, models.item2vec, pop, alternatives.i2i_weights)
        results["item2vec"] = i2i_by_weight[best_i2i_weight(i2i_by_weight)]
    by_fusion, ndcg_by_user = {}, {}
    if models.two_tower is not None:
        retrieval = _retrieve(period, models.two_tower, max(K_MAX, cfg.rerank_depth))
        results["two_tower"] = period.report(retrieval.ranked)
        if models.ranker is not None:
            for fusion, ranked in _rerank(period, models.ranker, retrieval, cfg.rerank_depth, alternatives):
                by_fusion[fusion] = period.report(ranked)
                ndcg_by_user[fusion] = per_user_recall_ndcg(ranked, period.relevant, 10)[1]
    return PeriodScores(results, by_fusion, ndcg_by_user, per_user_recall_ndcg(pop_ranked, period.relevant, 10)[1],
                        i2i_by_weight)


def _score_i2i(period: _Period, embeddings: np.ndarray, pop: np.ndarray, weights: Sequence[float]
               ) -> dict[float, dict]:
    """The last-item i2i's metrics per popularity weight: cosine to the user's last item (`embeddings` by the
    models' item index) + weight x log(1 + the item's popularity before the period, `pop`)."""
    last = period.past.sort_values([TIME, "item"]).groupby(USER)["item"].last()
    query = period.to_model[np.array([last[u] for u in period.users])]
    cosine = _in_evaluated_items(embeddings[query] @ embeddings.T, period.to_model)
    prior = np.log1p(pop)[None, :]
    # A best weight at the grid's end searches on past it, as the baselines' values do.
    return search_grid(tuple(weights), lambda w: period.report(top_k(cosine + w * prior, period.exclude, K_MAX)),
                       BaselineConfig())


@dataclass(frozen=True)
class _Retrieval:
    """The two-tower on one period: each user's score of every evaluated item (-inf where the models lack the
    item) and top `depth` items, the users' features as of the period's start."""
    users_at_start: pd.DataFrame
    scores: np.ndarray
    ranked: np.ndarray
    temperature: float  # the two-tower's: its scores / temperature are the logits it was trained on


def _retrieve(period: _Period, two_tower: torch.nn.Module, depth: int) -> _Retrieval:
    cut, users, model_items = period.cut, period.users, period.catalogue.items
    at_start = cut.users_at.set_index(USER).loc[users].reset_index()
    start = np.full(len(users), cut.boundary, dtype=np.int64)
    user_vectors = encode(two_tower.user_vectors, pack_users(at_start, period.user_vocabulary, model_items, start))
    item_stats = cut.items_at.set_index(ITEM).reindex(pd.Index(model_items.ids, name=ITEM)).reset_index()
    item_vectors = encode(two_tower.item_vectors,
                          pack_items(np.arange(1, len(model_items)), item_stats, period.catalogue))
    scores = _in_evaluated_items(np.concatenate(
        [np.full((len(users), 1), -np.inf, np.float32), user_vectors @ item_vectors.T], axis=1), period.to_model)
    return _Retrieval(at_start, scores, top_k(scores, period.exclude, depth), two_tower.cfg.temperature)


def _ease_experts(period: _Period, fusions: list[Fusion]) -> dict[TimeAwareEase, tuple]:
    """Each EASE expert the fusions name (plain, time-aware), fitted on the events before the period: its
    model and the evaluated users' profiles."""
    cut = period.cut
    past_users = Vocabulary(cut.past[USER])
    rows = past_users.index(np.asarray(period.users, dtype=object))
    return {spec: (spec.fit(cut.past, past_users, period.items, cut.boundary, BaselineConfig().max_items),
                   spec.history(cut.past, past_users, period.items, cut.boundary)[rows])
            for spec in dict.fromkeys(TimeAwareEase.of(f) for f in fusions)}


@dataclass(frozen=True)
class _Experts:
    """Each expert's scores of every user's rerank candidates, standardised once for the whole grid (as
    `Fusion.scores` standardises them): NaN past a user's candidates; an EASE's -inf where it did not list one."""
    ranker: np.ndarray
    two_tower: np.ndarray
    recent: np.ndarray
    ease: dict[TimeAwareEase, np.ndarray]

    def fused(self, fusion: Fusion) -> np.ndarray:
        mix = (1 - fusion.retrieval_weight) * self.ranker + fusion.retrieval_weight * self.two_tower
        return np.nan_to_num(fusion.combine(mix, self.ease.get(TimeAwareEase.of(fusion)), self.recent), nan=-np.inf)


def _rerank(period: _Period, ranker: torch.nn.Module, retrieval: _Retrieval, depth: int,
            alternatives: _Alternatives) -> Iterator[tuple[Fusion, np.ndarray]]:
    """Each fusion and its order of every user's rerank candidates: the two-tower's top `depth`, each EASE
    expert's top `EASE_DEPTH` and the `RECENT_DEPTH` most recently popular items, as served."""
    fusions, exclude = alternatives.fusions, period.exclude
    eases = _ease_experts(period, fusions) if alternatives.with_ease and fusions else {}
    ease_all = {spec: model.scores(profiles) for spec, (model, profiles) in eases.items()}
    ease_top = {spec: top_k(scores, exclude, EASE_DEPTH) for spec, scores in ease_all.items()}
    half_lives = {f.recent_half_life_days for f in fusions}
    if len(half_lives) != 1:
        raise ValueError(f"the fusions scored together share one recent half-life, got {half_lives}")
    recent = np.log1p(recent_popularity(period.cut.past, period.items, period.cut.boundary, half_lives.pop()))
    recent_top = top_k(np.tile(recent, (len(period.users), 1)), exclude, RECENT_DEPTH)
    candidates = _union(retrieval.ranked[:, :depth], *ease_top.values(), recent_top)
    valid = candidates >= 0
    safe = np.where(valid, candidates, 0)
    ranker_scores = np.full(candidates.shape, np.nan)
    ranker_scores[valid] = _ranker_scores(ranker, retrieval.users_at_start, candidates, valid, period.cut,
                                          period.user_vocabulary, period.catalogue, period.items)
    logits = np.where(valid, np.take_along_axis(retrieval.scores, safe, axis=1) / retrieval.temperature, np.nan)
    ease_parts = {}
    for spec, top in ease_top.items():  # EASE scores its own top candidates only, as serving reads them
        listed = (safe[:, :, None] == top[:, None, :]).any(axis=2)
        full = np.take_along_axis(ease_all.pop(spec), safe, axis=1)  # each users x items matrix freed once read
        ease_parts[spec] = standardise(np.where(valid, np.where(listed, full, -np.inf), np.nan))
    experts = _Experts(standardise(ranker_scores), standardise(logits),
                       standardise(np.where(valid, recent[safe], np.nan)), ease_parts)
    for fusion in fusions:
        yield fusion, np.take_along_axis(candidates, np.argsort(-experts.fused(fusion), axis=1, kind="stable"), axis=1)


def best_i2i_weight(reports: dict[float, dict]) -> float:
    """The popularity weight of the best last-item i2i (ties: the smaller weight)."""
    return max(reports, key=lambda w: (round(reports[w][GATE_METRIC], 6), -w))


def paired_difference(ndcg: np.ndarray, baseline_ndcg: np.ndarray) -> dict:
    """The mean per-user NDCG@10 gain over a baseline scored on the same users, and its standard error: how far
    the gain stands above what a different sample of users could have given."""
    gain = ndcg - baseline_ndcg
    return {"gain": float(gain.mean()),
            "standard_error": float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else 0.0,
            "users": len(gain)}


def choose_fusion(ndcg_by_user: dict[Fusion, np.ndarray]) -> Fusion:
    """The fusion with the best mean NDCG@10 (ties: the least EASE and recent popularity, plain EASE, then the
    even mix of the two models), except that the time-aware EASE must earn its place: when the best fuses it,
    the best fusing plain EASE instead is chosen unless it trails by more than one standard error of the paired
    per-user difference (the one-standard-error rule: of two choices validation cannot tell apart, the simpler).
    Validation picks the best of ~190 fusions on a few thousand users or fewer; the time-aware EASE's fusions
    won it by noise on the default data (0.1616 vs 0.1612, standard error 0.002) and lost the holdout (0.147 vs
    0.157), where on MovieLens-1M they win by more than noise (0.196 vs 0.178). The rule weighs one EASE against
    the other only: whether to fuse EASE at all is the weights' choice."""
    def best(candidates: list[Fusion]) -> Fusion:
        return max(candidates, key=lambda f: (round(float(ndcg_by_user[f].mean()), 6), -f.ease_weight - f.recent_weight,
                                              -f.time_aware_ease, -abs(f.retrieval_weight - 0.5)))

    chosen = best(list(ndcg_by_user))
    plain = [f for f in ndcg_by_user if f.uses_ease and not f.time_aware_ease]
    if not (chosen.uses_ease and chosen.time_aware_ease) or not plain:
        return chosen
    simpler = best(plain)
    paired = paired_difference(ndcg_by_user[chosen], ndcg_by_user[simpler])
    return chosen if paired["gain"] > paired["standard_error"] else simpler


def evaluate(data: TrainingData, catalogue: Catalogue, models: Models,
             cfg: EvaluationConfig = EvaluationConfig(), baselines: BaselineConfig | None = None,
             holdout: bool = True, validation_models: Models | None = None,
             baseline_choice: dict | None = None) -> dict:
    """`report["validation"]`: every model on the validation period, the rerank's fusion chosen there
    (`report["choices"]`); `report["models"]`: the same pipelines on the holdout, reported (with
    `holdout=False`, validation only: how a champion is judged). `validation_models`: the weights before the
    refresh on the validation period, which validation judges (default: `models`, not refreshed). With
    `baselines`, EASE and item-kNN beside them, their hyper-parameters chosen on validation too
    (`report["baselines"]`), and EASE joins the rerank's candidates and fusion, plain or time-aware (each with
    the values it chose), as recent popularity with its chosen half-life does; `baseline_choice`
    (`baselines.reusable_choice`): their values chosen earlier, judged as they are instead of searched for."""
    judged = validation_models if validation_models is not None else models
    users_vocab = models.users if models.users is not None else data.users
    validation, holdout_cut = data.cut("validation"), data.cut("holdout")
    validation_users = _users_to_evaluate(validation.later, cfg)
    holdout_users = _users_to_evaluate(holdout_cut.later, cfg)
    tuned = reported = None
    report: dict = {"split": {k: data.summary[k] for k in (
        "boundary_timestamp", "train_events", "holdout_events", "holdout_users",
        "validation_boundary_timestamp", "fit_events", "validation_events", "validation_users")}}
    if baselines is not None:
        tuned, reported, report["baselines"] = evaluate_baselines(validation, validation_users, holdout_cut,
                                                                  holdout_users, baselines, baseline_choice)
    on_validation = _score_period(_Period.of(validation, validation_users, catalogue, judged, users_vocab), judged,
                                  cfg, _validation_alternatives(models, report.get("baselines")))
    chosen = _choose_on_validation(report, on_validation, len(validation_users), tuned)
    if not holdout:
        return report

    on_holdout = _score_period(_Period.of(holdout_cut, holdout_users, catalogue, models, users_vocab), models, cfg,
                               chosen.alternatives())
    results = dict(on_holdout.models)
    if on_holdout.rerank_by_fusion:
        results["rerank"] = on_holdout.rerank_by_fusion[chosen.fusion]
    results.update(reported or {})
    report.update({"evaluated_users": len(holdout_users), "models": results})
    if models.ranker is not None:
        frame = data.ranker_holdout
        x = pack_ranker(frame, users_vocab, models.catalogue if models.catalogue is not None else catalogue,
                        frame[TIME].to_numpy())
        report["ranker"] = classification_report(frame["label"].to_numpy(), score(models.ranker, x))
    return report


def _validation_alternatives(models: Models, fitted_baselines: dict | None) -> _Alternatives:
    """What validation weighs: a served pipeline's own fusion and i2i weight; else every i2i weight and the
    fusion grid, with EASE as the baselines chose its values (`fitted_baselines`; none: without EASE)."""
    if models.fusion is not None:
        fusions, with_ease = [models.fusion], models.fusion.uses_ease
    elif fitted_baselines is not None:
        # Both EASEs are the rerank's to choose: alone the time-aware one wins validation where things drift, yet
        # beside the models plain EASE can add more (on the default data the fusions with it scored NDCG@10 0.162
        # on validation and 0.157 on the holdout, with the time-aware one 0.161 and 0.147).
        time_aware = fitted_baselines["time_aware_ease"]
        eases = dict.fromkeys([(fitted_baselines["ease"]["l2"], 0.0, 0.0), (
            time_aware["l2"], time_aware["gram_half_life_days"], time_aware["history_half_life_days"])])
        fusions = grid(list(eases), recent_half_life_days=fitted_baselines["recent_popularity"]["half_life_days"])
        with_ease = True
    else:
        fusions, with_ease = grid(), False
    i2i_weights = (I2I_POPULARITY_WEIGHTS if models.i2i_popularity_weight is None
                   else (models.i2i_popularity_weight,))
    return _Alternatives(fusions, with_ease, i2i_weights)


@dataclass(frozen=True)
class _Chosen:
    """What validation chose, the holdout scores alone: the rerank's fusion and the last-item i2i's popularity
    weight (None: no such model)."""
    fusion: Fusion | None
    i2i_weight: float | None

    def alternatives(self) -> _Alternatives:
        return _Alternatives([self.fusion] if self.fusion is not None else [],
                             self.fusion is not None and self.fusion.uses_ease,
                             (self.i2i_weight,) if self.i2i_weight is not None else ())


def _choose_on_validation(report: dict, scores: PeriodScores, users: int, tuned: dict | None) -> _Chosen:
    """Choose the i2i weight and the rerank's fusion on validation, and record in `report` validation's metrics
    (the baselines' `tuned` ones beside), the rerank's gain over popularity and what each choice weighed."""
    on_validation = dict(scores.models)
    report["validation"] = {"evaluated_users": users, "models": on_validation}
    i2i_weight = best_i2i_weight(scores.i2i_by_weight) if scores.i2i_by_weight else None
    if i2i_weight is not None:
        report["i2i"] = {"popularity_weight": i2i_weight, f"validation_{GATE_METRIC}_by_weight": {
            str(w): round(r[GATE_METRIC], 5) for w, r in scores.i2i_by_weight.items()}}
    fusion = None
    if scores.rerank_by_fusion:
        fusion = choose_fusion(scores.rerank_ndcg_by_user)
        on_validation["rerank"] = scores.rerank_by_fusion[fusion]
        report["validation"][GATE_EVIDENCE] = paired_difference(scores.rerank_ndcg_by_user[fusion],
                                                                scores.popularity_ndcg_by_user)
        report["choices"] = {"fusion": asdict(fusion), f"validation_{GATE_METRIC}_by_fusion": {
            label(f): round(r[GATE_METRIC], 5) for f, r in scores.rerank_by_fusion.items()}}
    on_validation.update(tuned or {})
    return _Chosen(fusion, i2i_weight)


def label(fusion: Fusion) -> str:
    """A fusion's weights in a few words, the EASE named when it is the time-aware one."""
    ease = " (time-aware)" if fusion.uses_ease and fusion.time_aware_ease else ""
    return (f"retrieval {fusion.retrieval_weight} ease {fusion.ease_weight}{ease} "
            f"recent {fusion.recent_weight}")


def _ranker_scores(ranker, at_start: pd.DataFrame, candidates: np.ndarray, valid: np.ndarray, cut: Cut,
                   users: Vocabulary, catalogue: Catalogue, items: Vocabulary) -> np.ndarray:
    """The ranker's ranking score of each user's `valid` candidates (indices into `items`; the ranker's
    vocabularies: `users`, `catalogue`; user and item features as of the period's start), flat; packed and
    scored a chunk of users at a time."""
    return _scores(ranker, _ranker_row_chunks(at_start, candidates, valid, cut, users, catalogue, items))


def _scores(ranker, chunks) -> np.ndarray:
    return np.concatenate([score(ranker, x, ranking=True) for x in chunks] or [np.zeros(0, np.float32)])


# ~30 MB of packed rows at a time: a period's ~300k rows in one array took a GB, and allocating (then
# concatenating) arrays that large cost seconds each on this machine.
RANKER_CHUNK_ROWS = 16_384


def _ranker_row_chunks(at_start: pd.DataFrame, candidates: np.ndarray, valid: np.ndarray, cut: Cut,
                       users: Vocabulary, catalogue: Catalogue, items: Vocabulary) -> Iterator[np.ndarray]:
    """`pack_ranker`'s rows, a chunk of users at a time, each user's part built once and repeated over its
    candidates (`dataset.pack_ranker_by_user`, as serving does): built a row per candidate, each user's history
    was read again for each of its ~100 candidates (a third of the default data's evaluation time)."""
    counts = valid.sum(axis=1)
    ids = np.asarray(items.ids, dtype=object)
    stats = cut.items_at.set_index(ITEM)
    stats = stats[[column for column in stats.columns if column.startswith("parent_asin_rating_")]]
    step = max(1, RANKER_CHUNK_ROWS // max(1, int(counts.max(initial=0))))
    for start in range(0, len(counts), step):
        block = slice(start, start + step)
        item_ids = ids[candidates[block][valid[block]] - 1]
        yield pack_ranker_by_user(at_start.iloc[block], counts[block], item_ids, stats.reindex(item_ids), users,
                                  catalogue, cut.boundary)


@dataclass
class RankerValidation:
    """The ranker's score after each epoch (`training.train_loop`; with patience, when it stops): validation
    NDCG@10 of its order over each validation user's candidates, the `DEPTH` most popular and most recently
    popular items of the fit period the user has not taken: the rerank's task (ordering items that could all
    fit) on candidates no other model has to give. Its validation loss does not follow this: on
    MovieLens-100k it was lowest after the second epoch, while the order's NDCG@10 (on the rerank's own
    candidates) rose to the fifth (0.165, 0.215, 0.231, 0.236, 0.238, then 0.230). In another run the two
    candidate sets gave the same curve, these / the rerank's: 0.184 / 0.178, 0.243 / 0.245, 0.225 / 0.231,
    0.233 / 0.236, 0.239 / 0.239. Rows are packed once, in chunks of users; each call scores them."""
    chunks: list[np.ndarray]
    candidates: np.ndarray
    valid: np.ndarray
    relevant: list[set[int]]

    DEPTH = 100
    HALF_LIFE_DAYS = 7.0

    @classmethod
    def of(cls, data: TrainingData, catalogue: Catalogue, cfg: EvaluationConfig = EvaluationConfig()
           ) -> RankerValidation:
        """On the users `evaluate` judges the validation period with (`cfg`)."""
        cut, items = data.cut("validation"), catalogue.items
        users = _users_to_evaluate(cut.later, cfg)
        _, exclude, relevant = _seen_and_relevant(cut, items, users)
        by = lambda counts: top_k(np.tile(counts, (len(users), 1)), exclude, cls.DEPTH)  # noqa: E731
        candidates = _union(by(popularity(cut.past, items)),
                            by(recent_popularity(cut.past, items, cut.boundary, cls.HALF_LIFE_DAYS)))
        valid = candidates >= 0
        at_start = cut.users_at.set_index(USER).loc[users].reset_index()
        return cls(list(_ranker_row_chunks(at_start, candidates, valid, cut, data.users, catalogue, items)),
                   candidates, valid, relevant)

    def __call__(self, ranker: torch.nn.Module) -> float:
        scores = np.full(self.candidates.shape, -np.inf)
        scores[self.valid] = _scores(getattr(ranker, "module", ranker), self.chunks)  # a DDP one: its model
        ranked = np.take_along_axis(self.candidates, np.argsort(-scores, axis=1, kind="stable"), axis=1)
        return float(per_user_recall_ndcg(ranked, self.relevant, 10)[1].mean())

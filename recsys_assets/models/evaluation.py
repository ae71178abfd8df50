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

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from recsys_assets.models.baselines import BaselineConfig, TimeAwareEase, evaluate_baselines, search_grid
from recsys_assets.models.data import ITEM, TIME, USER, Vocabulary, popularity, recent_popularity
from recsys_assets.models.dataset import Cut, TrainingData, pack_items, pack_ranker, pack_users
from recsys_assets.models.features import Catalogue
from recsys_assets.models.metrics import classification_report, per_user_recall_ndcg, ranking_report, top_k
from recsys_assets.models.fusion import EASE_DEPTH, RECENT_DEPTH, Fusion, grid, standardise
from recsys_assets.models.item2vec import I2I_POPULARITY_WEIGHTS
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


def _score_cut(cut: Cut, catalogue: Catalogue, models: Models, users_vocab: Vocabulary, eval_users: list[str],
               cfg: EvaluationConfig, fusions: list[Fusion], with_ease: bool, i2i_weights: Sequence[float]
               ) -> tuple[dict, dict, dict, np.ndarray, dict]:
    """(metrics per model, rerank metrics per fusion, rerank NDCG@10 per user per fusion, popularity's NDCG@10 per
    user, last-item i2i metrics per popularity weight) of `models` on one period; when `with_ease`, each EASE
    the fusions name (fitted on the events before the period) adds its top candidates to every user's, and each
    fusion orders the union with its own. The fusions share one recent popularity half-life. The metrics of
    `item2vec` are those of the best of `i2i_weights` there (and of larger weights while the largest is best)."""
    model_catalogue = models.catalogue if models.catalogue is not None else catalogue
    items = catalogue.items  # the evaluated item space: the split's training items
    n_items = len(items)
    to_model = np.concatenate([[0], model_catalogue.items.index(items.ids)])
    past, exclude, relevant = _seen_and_relevant(cut, items, eval_users)
    report = lambda ranked: ranking_report(ranked, relevant, n_items - 1)  # noqa: E731
    eases = {}  # each EASE expert the fusions name (plain, time-aware): its model, the evaluated users' profiles
    if with_ease and fusions and models.ranker is not None:
        past_users = Vocabulary(cut.past[USER])
        rows = past_users.index(np.asarray(eval_users, dtype=object))
        for spec in dict.fromkeys(TimeAwareEase.of(f) for f in fusions):
            eases[spec] = (spec.fit(cut.past, past_users, items, cut.boundary, BaselineConfig().max_items),
                           spec.history(cut.past, past_users, items, cut.boundary)[rows])

    results: dict[str, dict] = {}
    pop = popularity(cut.past, items)
    pop_ranked = top_k(np.tile(pop, (len(eval_users), 1)), exclude, K_MAX)
    results["popularity"] = report(pop_ranked)
    popularity_ndcg = per_user_recall_ndcg(pop_ranked, relevant, 10)[1]

    i2i_by_weight = {}
    if models.item2vec is not None:
        last = past.sort_values([TIME, "item"]).groupby(USER)["item"].last()
        query = to_model[np.array([last[u] for u in eval_users])]
        cosine = _in_evaluated_items(models.item2vec[query] @ models.item2vec.T, to_model)
        prior = np.log1p(pop)[None, :]
        # A best weight at the grid's end searches on past it, as the baselines' values do.
        i2i_by_weight = search_grid(tuple(i2i_weights), lambda w: report(top_k(cosine + w * prior, exclude, K_MAX)),
                                    BaselineConfig())
        results["item2vec"] = i2i_by_weight[best_i2i_weight(i2i_by_weight)]

    by_weight, ndcg_by_user = {}, {}
    if models.two_tower is not None:
        at_start = cut.users_at.set_index(USER).loc[eval_users].reset_index()
        start = np.full(len(eval_users), cut.boundary, dtype=np.int64)
        model_items = model_catalogue.items
        user_vectors = encode(models.two_tower.user_vectors, pack_users(at_start, users_vocab, model_items, start))
        item_stats = cut.items_at.set_index(ITEM).reindex(pd.Index(model_items.ids, name=ITEM)).reset_index()
        item_vectors = encode(models.two_tower.item_vectors,
                              pack_items(np.arange(1, len(model_items)), item_stats, model_catalogue))
        scores = _in_evaluated_items(np.concatenate(
            [np.full((len(eval_users), 1), -np.inf, np.float32), user_vectors @ item_vectors.T], axis=1), to_model)
        retrieved = top_k(scores, exclude, max(K_MAX, cfg.rerank_depth))
        results["two_tower"] = report(retrieved)

        if models.ranker is not None:
            candidates = retrieved[:, :cfg.rerank_depth]
            ease_all = {spec: model.scores(profiles) for spec, (model, profiles) in eases.items()}
            ease_top = {spec: top_k(scores_, exclude, EASE_DEPTH) for spec, scores_ in ease_all.items()}
            half_lives = {f.recent_half_life_days for f in fusions}
            if len(half_lives) != 1:
                raise ValueError(f"the fusions scored together share one recent half-life, got {half_lives}")
            recent = np.log1p(recent_popularity(cut.past, items, cut.boundary, half_lives.pop()))
            recent_top = top_k(np.tile(recent, (len(eval_users), 1)), exclude, RECENT_DEPTH)
            candidates = _union(candidates, *ease_top.values(), recent_top)
            valid = candidates >= 0
            ranker_scores = np.full(candidates.shape, np.nan)
            ranker_scores[valid] = _ranker_scores(models.ranker, at_start, candidates, valid, cut, users_vocab,
                                                  model_catalogue, items)
            safe = np.where(valid, candidates, 0)
            logits = np.where(valid, np.take_along_axis(scores, safe, axis=1) / models.two_tower.cfg.temperature,
                              np.nan)
            ease_parts = {}
            for spec, top in ease_top.items():  # EASE scores its own top candidates only, as serving reads them
                listed = (safe[:, :, None] == top[:, None, :]).any(axis=2)
                full = np.take_along_axis(ease_all.pop(spec), safe, axis=1)
                ease_parts[spec] = standardise(np.where(valid, np.where(listed, full, -np.inf), np.nan))
            parts = {name: standardise(x) for name, x in (("ranker", ranker_scores), ("two_tower", logits))}
            parts["recent"] = standardise(np.where(valid, recent[safe], np.nan))
            for fusion in fusions:  # as `Fusion.scores` does, the parts standardised once for the whole grid
                mix = (1 - fusion.retrieval_weight) * parts["ranker"] + fusion.retrieval_weight * parts["two_tower"]
                fused = np.nan_to_num(fusion.combine(mix, ease_parts.get(TimeAwareEase.of(fusion)), parts["recent"]),
                                      nan=-np.inf)
                ranked = np.take_along_axis(candidates, np.argsort(-fused, axis=1, kind="stable"), axis=1)
                by_weight[fusion] = report(ranked)
                ndcg_by_user[fusion] = per_user_recall_ndcg(ranked, relevant, 10)[1]
    return results, by_weight, ndcg_by_user, popularity_ndcg, i2i_by_weight


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
             holdout: bool = True, validation_models: Models | None = None) -> dict:
    """`report["validation"]`: every model on the validation period, the rerank's fusion chosen there
    (`report["choices"]`); `report["models"]`: the same pipelines on the holdout, reported (with
    `holdout=False`, validation only: how a champion is judged). `validation_models`: the weights before the
    refresh on the validation period, which validation judges (default: `models`, not refreshed). With
    `baselines`, EASE and item-kNN beside them, their hyper-parameters chosen on validation too
    (`report["baselines"]`), and EASE joins the rerank's candidates and fusion, plain or time-aware (each with
    the values it chose), as recent popularity with its chosen half-life does."""
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
                                                                  holdout_users, baselines)
    if models.fusion is not None:
        fusions, with_ease = [models.fusion], models.fusion.uses_ease
    elif baselines is not None:
        fitted = report["baselines"]
        # Both EASEs are the rerank's to choose: alone the time-aware one wins validation where things drift, yet
        # beside the models plain EASE can add more (on the default data the fusions with it scored NDCG@10 0.162
        # on validation and 0.157 on the holdout, with the time-aware one 0.161 and 0.147).
        time_aware = fitted["time_aware_ease"]
        eases = dict.fromkeys([(fitted["ease"]["l2"], 0.0, 0.0), (
            time_aware["l2"], time_aware["gram_half_life_days"], time_aware["history_half_life_days"])])
        fusions = grid(list(eases), recent_half_life_days=fitted["recent_popularity"]["half_life_days"])
        with_ease = True
    else:
        fusions, with_ease = grid(), False
    i2i_weights = (I2I_POPULARITY_WEIGHTS if models.i2i_popularity_weight is None
                   else (models.i2i_popularity_weight,))
    on_validation, rerank_by_fusion, ndcg_by_user, popularity_ndcg, i2i_by_weight = _score_cut(
        validation, catalogue, judged, users_vocab, validation_users, cfg, fusions, with_ease, i2i_weights)
    report["validation"] = {"evaluated_users": len(validation_users), "models": on_validation}
    i2i_weight = best_i2i_weight(i2i_by_weight) if i2i_by_weight else None
    if i2i_weight is not None:
        report["i2i"] = {"popularity_weight": i2i_weight, f"validation_{GATE_METRIC}_by_weight": {
            str(w): round(r[GATE_METRIC], 5) for w, r in i2i_by_weight.items()}}
    chosen = None
    if rerank_by_fusion:
        chosen = choose_fusion(ndcg_by_user)
        on_validation["rerank"] = rerank_by_fusion[chosen]
        report["validation"][GATE_EVIDENCE] = paired_difference(ndcg_by_user[chosen], popularity_ndcg)
        report["choices"] = {"fusion": asdict(chosen), f"validation_{GATE_METRIC}_by_fusion": {
            label(f): round(r[GATE_METRIC], 5) for f, r in rerank_by_fusion.items()}}
    on_validation.update(tuned or {})
    if not holdout:
        return report

    served = [chosen] if chosen is not None else []
    results, by_fusion, _, _, _ = _score_cut(holdout_cut, catalogue, models, users_vocab, holdout_users, cfg, served,
                                             chosen is not None and chosen.uses_ease,
                                             (i2i_weight,) if i2i_weight is not None else ())
    if by_fusion:
        results["rerank"] = by_fusion[chosen]
    results.update(reported or {})
    report.update({"evaluated_users": len(holdout_users), "models": results})
    if models.ranker is not None:
        frame = data.ranker_holdout
        x = pack_ranker(frame, users_vocab, models.catalogue if models.catalogue is not None else catalogue,
                        frame[TIME].to_numpy())
        report["ranker"] = classification_report(frame["label"].to_numpy(), score(models.ranker, x))
    return report


def label(fusion: Fusion) -> str:
    """A fusion's weights in a few words, the EASE named when it is the time-aware one."""
    ease = " (time-aware)" if fusion.uses_ease and fusion.time_aware_ease else ""
    return (f"retrieval {fusion.retrieval_weight} ease {fusion.ease_weight}{ease} "
            f"recent {fusion.recent_weight}")


def _ranker_scores(ranker, at_start: pd.DataFrame, candidates: np.ndarray, valid: np.ndarray, cut: Cut,
                   users: Vocabulary, catalogue: Catalogue, items: Vocabulary) -> np.ndarray:
    """The ranker's ranking score of each user's `valid` candidates (indices into `items`; the ranker's
    vocabularies: `users`, `catalogue`; user and item features as of the period's start), flat."""
    return score(ranker, _ranker_rows(at_start, candidates, valid, cut, users, catalogue, items), ranking=True)


def _ranker_rows(at_start: pd.DataFrame, candidates: np.ndarray, valid: np.ndarray, cut: Cut, users: Vocabulary,
                 catalogue: Catalogue, items: Vocabulary) -> np.ndarray:
    """`_ranker_scores`' packed rows."""
    rows = at_start.loc[at_start.index.repeat(valid.sum(axis=1))].reset_index(drop=True)
    rows[ITEM] = [items.id_of(int(i)) for i in candidates[valid]]
    stats = cut.items_at.set_index(ITEM)
    for column in stats.columns:
        if column.startswith("parent_asin_rating_"):
            rows[column] = stats[column].reindex(rows[ITEM]).to_numpy()
    return pack_ranker(rows, users, catalogue, np.full(len(rows), cut.boundary, dtype=np.int64))


@dataclass
class RankerValidation:
    """The ranker's score after each epoch (`training.train_loop`; with patience, when it stops): validation
    NDCG@10 of its order over each validation user's candidates, the `DEPTH` most popular and most recently
    popular items of the fit period the user has not taken: the rerank's task (ordering items that could all
    fit) on candidates no other model has to give. Its validation loss does not follow this: on
    MovieLens-100k it was lowest after the second epoch, while the order's NDCG@10 (on the rerank's own
    candidates) rose to the fifth (0.165, 0.215, 0.231, 0.236, 0.238, then 0.230). In another run the two
    candidate sets gave the same curve, these / the rerank's: 0.184 / 0.178, 0.243 / 0.245, 0.225 / 0.231,
    0.233 / 0.236, 0.239 / 0.239. Rows are packed once; each call scores them."""
    x: np.ndarray
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
        return cls(_ranker_rows(at_start, candidates, valid, cut, data.users, catalogue, items), candidates, valid,
                   relevant)

    def __call__(self, ranker: torch.nn.Module) -> float:
        scores = np.full(self.candidates.shape, -np.inf)
        scores[self.valid] = score(getattr(ranker, "module", ranker), self.x, ranking=True)  # a DDP one: its model
        ranked = np.take_along_axis(self.candidates, np.argsort(-scores, axis=1, kind="stable"), axis=1)
        return float(per_user_recall_ndcg(ranked, self.relevant, 10)[1].mean())

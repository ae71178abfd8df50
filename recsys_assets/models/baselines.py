"""The classical baselines every evaluation reports beside our models: EASE and item-kNN (cosine).

A learned pipeline pays for itself only if it beats these on the same split. Both score a user by the items
the user interacted with in training (a binary user x item matrix X):

* EASE (Steck, 2019): item-item weights B = I - P / diag(P), P = (X'X + l2 I)^-1, zero diagonal; closed
  form, one items x items inversion (Cholesky, float32). Above `max_items` it keeps the most popular items
  only (the inversion is cubic in the catalogue);
* item-kNN: cosine similarity of item columns, each item's `neighbours` most similar items kept;
* time-aware EASE (`TimeAwareEase`, ours: one of the rerank's two EASE experts, reported beside the references): EASE
  where each interaction counts 0.5 ** (age / half-life), in X'X and in the user's profile;
* recent popularity (trending): every interaction counted 0.5 ** (age / half-life) as of the period's start
  (`data.recent_popularity`). Popularity drifts (releases, seasons, bursts): on a real ~100k-rating set it
  scored NDCG@10 0.226 on the temporal holdout, EASE 0.182 and all-time popularity 0.151.

Hyper-parameters (l2, neighbours, half-life) are chosen on the validation period at the end of the training
period: fit on what precedes it, scored on it, then refit on the whole training period with the chosen value
(the half-life is judged on earlier periods too: `_earlier_origin_scores`). A best value at an end of its grid
extends the search past that end (`search_grid`). The holdout is never looked at for a choice. Between full
retrains the daily evaluation reuses the last choices (`reusable_choice`), each fitted and judged once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recsys_assets.models.data import DAY_MS, ITEM, TIME, USER, Vocabulary, recent_popularity
from recsys_assets.models.metrics import ranking_report, top_k

# What `evaluate_baselines` reports: the classical references, and the time-aware EASE the rerank may use as
# its EASE expert (reported beside them, so a user sees what it adds; not a reference: `promotion.BASELINE_MODELS`).
BASELINES = ("ease", "item_knn", "recent_popularity", "time_aware_ease")
SELECTION_METRIC = "ndcg@10"


@dataclass(frozen=True)
class BaselineConfig:
    ease_l2: tuple[float, ...] = (10.0, 50.0, 200.0, 800.0, 3000.0)
    knn_neighbours: tuple[int, ...] = (10, 50, 200, 1000)
    recent_half_life_days: tuple[float, ...] = (1.0, 3.0, 7.0, 14.0, 30.0, 90.0, 365.0)
    # A grid's best at one of its ends: the search goes on past that end, `edge_growth` times further each step,
    # up to `edge_steps` more values (sparse review data wants EASE's l2 above 3000: on a 3-year Amazon-like
    # set validation NDCG@10 rose 0.085 -> 0.102 from l2 10 to 3000, the end).
    edge_steps: int = 3
    edge_growth: float = 4.0
    # The time-aware EASE's half-lives (co-occurrence, profile), each also 0: no decay.
    ease_half_life_days: tuple[float, ...] = (7.0, 30.0, 90.0, 365.0)
    recent_origins: int = 3  # the validation period and earlier ones the half-life is judged on
    max_users: int = 3000  # per earlier origin, a fixed sample
    max_items: int = 10_000


def interaction_matrix(events: pd.DataFrame, users: Vocabulary, items: Vocabulary, now_ms: int | None = None,
                       half_life_days: float = 0.0) -> sp.csr_matrix:
    """User x item matrix (vocabulary indices; unknown ids fall on row/column 0, which stays empty): 1 where the
    user interacted with the item; with a half-life, 0.5 ** (age / half-life) of the latest interaction as of
    `now_ms` instead (0: binary)."""
    if half_life_days > 0:
        events = events.sort_values(TIME, kind="stable").drop_duplicates([USER, ITEM], keep="last")
    rows, cols = users.index(events[USER].to_numpy()), items.index(events[ITEM].to_numpy())
    known = (rows > 0) & (cols > 0)
    values = np.ones(int(known.sum()), np.float32)
    if half_life_days > 0:
        age_days = (now_ms - events[TIME].to_numpy()[known]) / DAY_MS
        values = np.power(0.5, np.maximum(age_days, 0.0) / half_life_days).astype(np.float32)
    matrix = sp.csr_matrix((values, (rows[known], cols[known])), shape=(len(users), len(items)))
    matrix.sum_duplicates()
    if half_life_days <= 0:
        matrix.data[:] = 1.0
    return matrix


def _gram(x: sp.csr_matrix) -> np.ndarray:
    return np.asarray((x.T @ x).todense(), dtype=np.float32)


def _kept_items(x: sp.csr_matrix, max_items: int) -> np.ndarray:
    """Column indices EASE models: all, or the `max_items` most interacted with."""
    counts = np.asarray(x.sum(axis=0)).ravel()
    counts[0] = 0
    order = np.flatnonzero(counts > 0)
    if len(order) > max_items:
        order = np.sort(order[np.argsort(-counts[order], kind="stable")[:max_items]])
    return order


# EASE fits by (the Gram's digest, l2): an evaluation fits the same EASE for the baselines and again as the
# rerank's experts (and for the champion): each items x items inversion took ~8 s of ~180 on the default data.
_EASE_FITS: OrderedDict[tuple[str, float], np.ndarray] = OrderedDict()
_EASE_FITS_KEPT = 4  # ~100 MB each at 5,000 items


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's item-item matrix from the Gram matrix X'X (float32, zero diagonal; read-only: the same fit may
    be handed out again)."""
    key = (hashlib.blake2b(np.ascontiguousarray(gram).data, digest_size=16).hexdigest() + str(gram.shape), float(l2))
    if key in _EASE_FITS:
        _EASE_FITS.move_to_end(key)
        return _EASE_FITS[key]
    regularised = torch.from_numpy(gram.copy())
    regularised.diagonal().add_(float(l2))
    precision = torch.cholesky_inverse(torch.linalg.cholesky(regularised))
    weights = -precision / precision.diagonal()[None, :]
    weights.fill_diagonal_(0.0)
    fitted = weights.numpy()
    fitted.setflags(write=False)
    _EASE_FITS[key] = fitted
    while len(_EASE_FITS) > _EASE_FITS_KEPT:
        _EASE_FITS.popitem(last=False)
    return fitted


def cosine_neighbours(gram: np.ndarray, neighbours: int) -> np.ndarray:
    """Cosine similarity of item columns, only each row's `neighbours` largest kept (zero diagonal)."""
    norms = np.sqrt(np.maximum(np.diag(gram), 1e-12))
    sim = gram / norms[:, None] / norms[None, :]
    np.fill_diagonal(sim, 0.0)
    if neighbours < sim.shape[1]:
        threshold = -np.partition(-sim, neighbours - 1, axis=1)[:, neighbours - 1]
        sim[sim < threshold[:, None]] = 0.0
    return sim


class ItemItemModel:
    """Scores = user's training items (binary) @ an item-item matrix over `columns` of the vocabulary."""

    def __init__(self, weights: np.ndarray, columns: np.ndarray, n_items: int):
        self.weights, self.columns, self.n_items = weights, columns, n_items

    def scores(self, history: sp.csr_matrix) -> np.ndarray:
        """users x items scores (vocabulary indices); -inf for items the model does not cover."""
        out = np.full((history.shape[0], self.n_items), -np.inf, dtype=np.float32)
        out[:, self.columns] = np.asarray(history[:, self.columns] @ self.weights)
        return out


@dataclass(frozen=True)
class ItemGram:
    """X'X over the modelled columns: what every item-item model here is fitted from (computed once per
    data, whatever the number of models and values fitted from it)."""
    columns: np.ndarray
    gram: np.ndarray
    n_items: int

    @classmethod
    def of(cls, x: sp.csr_matrix, max_items: int) -> ItemGram:
        columns = _kept_items(x, max_items)
        return cls(columns, _gram(x[:, columns]), x.shape[1])

    def model(self, weights_from, value) -> ItemItemModel:
        return ItemItemModel(weights_from(self.gram, value), self.columns, self.n_items)


def fit_ease(x: sp.csr_matrix, l2: float, max_items: int) -> ItemItemModel:
    return ItemGram.of(x, max_items).model(ease_weights, l2)


@dataclass(frozen=True)
class TimeAwareEase:
    """EASE where an interaction counts 0.5 ** (age / half-life) as of the moment scored: in the Gram (which
    items go together lately) and in the user's profile (what the user took lately); 0: no decay, plain EASE.
    Tastes and catalogues drift: on the temporal holdouts of MovieLens-100k and -1M a prototype with half-lives
    chosen on validation scored NDCG@10 0.216 and 0.295 where plain EASE scored 0.182 and 0.288; where nothing
    drifts validation keeps little or no decay. The rerank's EASE expert where its fusion beats plain EASE's by
    more than noise (`evaluation.choose_fusion`)."""
    l2: float
    gram_half_life_days: float = 0.0
    history_half_life_days: float = 0.0

    def fit(self, events: pd.DataFrame, users: Vocabulary, items: Vocabulary, now_ms: int,
            max_items: int) -> ItemItemModel:
        return fit_ease(interaction_matrix(events, users, items, now_ms, self.gram_half_life_days), self.l2, max_items)

    def history(self, events: pd.DataFrame, users: Vocabulary, items: Vocabulary, now_ms: int) -> sp.csr_matrix:
        """The users' profiles the model scores (rows by `users`)."""
        return interaction_matrix(events, users, items, now_ms, self.history_half_life_days)

    @classmethod
    def of(cls, fusion) -> TimeAwareEase:
        """The EASE expert of a `fusion.Fusion`."""
        return cls(fusion.ease_l2, fusion.ease_gram_half_life_days, fusion.ease_history_half_life_days)


@dataclass
class Protocol:
    """Who is evaluated and against what: rows of `history` are the evaluated users' training items,
    `relevant` their later items (vocabulary indices); seen items are never recommended."""
    history: sp.csr_matrix
    relevant: list[set[int]]
    n_items: int

    @cached_property
    def exclude(self) -> list[np.ndarray]:
        """Per evaluated user: the padding index and the user's own items (never recommended)."""
        return [np.concatenate([[0], self.history[r].indices]) for r in range(self.history.shape[0])]

    def report(self, model: ItemItemModel, k: int = 50) -> dict:
        return self.report_scores(model.scores(self.history), k)

    def report_scores(self, scores: np.ndarray, k: int = 50) -> dict:
        """Metrics of users x items scores, or of one row of item scores for every user (popularity)."""
        if scores.ndim == 1:
            scores = np.tile(scores, (self.history.shape[0], 1))
        return ranking_report(top_k(scores, self.exclude, k), self.relevant, self.n_items - 1)


def protocol(train: pd.DataFrame, later: pd.DataFrame, users: list, user_vocab: Vocabulary, items: Vocabulary
             ) -> Protocol:
    rows = user_vocab.index(np.asarray(users, dtype=object))
    x = interaction_matrix(train, user_vocab, items)
    later_items = later.assign(_item=items.index(later[ITEM].to_numpy()))
    by_user = later_items[later_items["_item"] > 0].groupby(USER)["_item"].apply(set)
    return Protocol(x[rows], [by_user.get(u, set()) for u in users], len(items))


def _earlier_origin_scores(train: pd.DataFrame, fit_events: int, items: Vocabulary, trending,
                           cfg: BaselineConfig) -> dict[float, list[float]]:
    """NDCG@10 of recent popularity per half-life at the `cfg.recent_origins - 1` origins before the
    validation period's, half a validation period apart, each scoring as many events as the validation period
    holds (rolling-origin evaluation). One period's trends are one draw: on a real ~100k-rating set the
    validation period alone chose 1 day (0.211 vs 3 days' 0.198) and the holdout preferred 3 (0.226 vs 0.195);
    over three origins 3 days wins. Cheap: no model is fitted."""
    stamps = np.sort(train[TIME].to_numpy())
    width = len(stamps) - fit_events
    scores: dict[float, list[float]] = {h: [] for h in cfg.recent_half_life_days}
    for origin in range(1, cfg.recent_origins):
        start = fit_events - origin * width // 2
        if start <= 0 or width <= 0:
            break
        now = stamps[start]
        end = stamps[start + width] if start + width < len(stamps) else np.iinfo(np.int64).max
        past, later = train[train[TIME] < now], train[(train[TIME] >= now) & (train[TIME] < end)]
        users = sorted(set(later[USER]) & set(past[USER]))
        if not users:
            continue
        if len(users) > cfg.max_users:
            users = sorted(np.random.default_rng(origin).choice(users, cfg.max_users, replace=False).tolist())
        judged = protocol(past, later, users, Vocabulary(past[USER]), items)
        for h in scores:
            scores[h].append(judged.report_scores(trending(past, now, h))[SELECTION_METRIC])
    return scores


FITTERS = {"ease": (ease_weights, "l2", "ease_l2"), "item_knn": (cosine_neighbours, "neighbours", "knn_neighbours")}


def _best(reports: dict) -> float:
    return max(reports, key=lambda v: (reports[v][SELECTION_METRIC], -v))  # ties: the smaller value


def search_grid(values: tuple, report_of, cfg: BaselineConfig, usable=lambda value: value > 0) -> dict:
    """Reports of every value of the grid, then of values past its end while the best lies at that end
    (each `cfg.edge_growth` times further, at most `cfg.edge_steps`; integer grids stay integers; `usable`
    says which values mean something). A grid of one value is a fixed choice: no search."""
    reports = {v: report_of(v) for v in values}
    for _ in range(cfg.edge_steps if len(values) > 1 else 0):
        top = round(max(r[SELECTION_METRIC] for r in reports.values()), 6)
        best = [v for v, r in reports.items() if round(r[SELECTION_METRIC], 6) == top]
        if best == [max(reports)]:  # strictly the best: a tie is no reason to go on
            value = best[0] * cfg.edge_growth
        elif best == [min(reports)]:
            value = best[0] / cfg.edge_growth
        else:
            break
        value = type(best[0])(round(value)) if isinstance(best[0], int) else value
        if value in reports or not usable(value):
            break
        reports[value] = report_of(value)
    return reports


def _decay_order(half_life_days: float) -> float:
    """Ties go to less decay: a longer half-life, none (0) the longest."""
    return half_life_days if half_life_days > 0 else np.inf


def choose_time_aware_ease(cut, judged: Protocol, users: list, items: Vocabulary, plain: ItemGram, l2: float,
                           cfg: BaselineConfig, fixed: TimeAwareEase | None = None
                           ) -> tuple[TimeAwareEase, dict, dict[str, float]]:
    """A time-aware EASE's half-lives and l2, chosen on the period `cut` (`dataset.Cut`) for `users`, by
    coordinate ascent from plain EASE (`plain`: the Gram of `cut.past`, `l2`: plain EASE's chosen value): the
    profile's half-life, then the co-occurrence's, then l2 around its value (decay shrinks the Gram, so the
    regularisation that suits it moves), then the profile's again. One items x items model at a time (each is
    up to `max_items` squared floats). Returns the choice, its metrics on `cut`, and the NDCG@10 of every
    setting judged. Kept over l2 fixed at plain EASE's, or scaled by how much decay shrinks the Gram: on
    MovieLens-1M's holdout this scored 0.296, those 0.278 and 0.286 (a prototype on the same split; plain EASE
    0.286); on MovieLens-100k 0.192, those 0.216 and 0.176 (plain 0.182): the only one never below plain EASE
    there. `fixed`: that setting only, judged (an earlier choice reused)."""
    vocab = Vocabulary(cut.past[USER])  # `judged`: `users` of `cut` by this vocabulary (`protocol`)
    rows = vocab.index(np.asarray(users, dtype=object))
    half_lives = (0.0, *cfg.ease_half_life_days) if fixed is None else (fixed.history_half_life_days,)
    profiles = {h: interaction_matrix(cut.past, vocab, items, cut.boundary, h)[rows] for h in half_lives}
    scored: dict[TimeAwareEase, dict] = {}

    def described(scores: dict[TimeAwareEase, dict]) -> dict[str, float]:
        return {f"l2 {s.l2:g}, half-lives {s.gram_half_life_days:g} d co-occurrence, {s.history_half_life_days:g} d "
                "profile": round(r[SELECTION_METRIC], 5) for s, r in scores.items()}

    if fixed is not None:
        gram = plain if not fixed.gram_half_life_days else ItemGram.of(
            interaction_matrix(cut.past, vocab, items, cut.boundary, fixed.gram_half_life_days), cfg.max_items)
        scored[fixed] = judged.report_scores(gram.model(ease_weights, fixed.l2).scores(profiles[half_lives[0]]))
        return fixed, scored[fixed], described(scored)

    def judge(spec: TimeAwareEase, model: ItemItemModel) -> dict:
        scored[spec] = judged.report_scores(model.scores(profiles[spec.history_half_life_days]))
        return scored[spec]

    def best(specs: list[TimeAwareEase]) -> TimeAwareEase:
        return max(specs, key=lambda s: (round(scored[s][SELECTION_METRIC], 6), _decay_order(s.gram_half_life_days),
                                         _decay_order(s.history_half_life_days), -s.l2))

    def profile_step(spec: TimeAwareEase, model: ItemItemModel) -> TimeAwareEase:
        candidates = [replace(spec, history_half_life_days=h) for h in half_lives]
        for candidate in candidates:
            judge(candidate, model)
        return best(candidates)

    spec = profile_step(TimeAwareEase(l2), plain.model(ease_weights, l2))
    gram = plain
    for g in cfg.ease_half_life_days:
        decayed = ItemGram.of(interaction_matrix(cut.past, vocab, items, cut.boundary, g), cfg.max_items)
        candidate = replace(spec, gram_half_life_days=g)
        judge(candidate, decayed.model(ease_weights, l2))
        if best([spec, candidate]) == candidate:
            spec, gram = candidate, decayed
    by_l2 = search_grid((l2 / cfg.edge_growth, l2, l2 * cfg.edge_growth),
                        lambda v: judge(replace(spec, l2=v), gram.model(ease_weights, v)), cfg)
    spec = replace(spec, l2=_best(by_l2))
    spec = profile_step(spec, gram.model(ease_weights, spec.l2))
    return spec, scored[spec], described(scored)


def reusable_choice(previous: dict | None, cfg: BaselineConfig) -> dict | None:
    """`previous` (an earlier evaluation's `report["baselines"]`) when its values were chosen under `cfg`'s
    grids: what `evaluate_baselines` may reuse instead of searching again."""
    if not previous or previous.get("config") != json.loads(json.dumps(asdict(cfg))):
        return None
    try:
        return {"ease": previous["ease"]["l2"], "item_knn": previous["item_knn"]["neighbours"],
                "recent_popularity": previous["recent_popularity"]["half_life_days"],
                "time_aware_ease": TimeAwareEase(**{f.name: previous["time_aware_ease"][f.name]
                                                    for f in fields(TimeAwareEase)})}
    except (KeyError, TypeError):
        return None


def evaluate_baselines(validation, validation_users: list, holdout, holdout_users: list,
                       cfg: BaselineConfig = BaselineConfig(), chosen: dict | None = None) -> tuple[dict, dict, dict]:
    """(validation metrics, holdout metrics, how each was fitted) per baseline. `validation` and `holdout` are
    periods (`dataset.Cut`: events before, events in). Each baseline's value is the one whose fit on the events
    before validation scores best on validation; refitted with it on the events before the holdout, it is
    reported there. Metrics follow `metrics.py` over the training items, as in `evaluation.evaluate`.
    `chosen` (`reusable_choice`): the values an earlier evaluation chose, each then fitted and judged once
    instead of searched for (the search is most of the baselines' time: 90 of ~100 s on the default data)."""
    started = time.perf_counter()
    searched = cfg
    if chosen is not None:
        cfg = replace(cfg, ease_l2=(chosen["ease"],), knn_neighbours=(chosen["item_knn"],),
                      recent_half_life_days=(chosen["recent_popularity"],))
    items = Vocabulary(holdout.past[ITEM])
    fit_users = Vocabulary(validation.past[USER])
    judged = protocol(validation.past, validation.later, validation_users, fit_users, items)
    fitted = ItemGram.of(interaction_matrix(validation.past, fit_users, items), cfg.max_items)
    tuned, details = {}, {"config": asdict(searched), "reused_choice": chosen is not None}
    usable = {"ease": lambda l2: l2 > 0, "item_knn": lambda k: 1 <= k <= len(fitted.columns)}
    for name, (weights_from, param, grid_field) in FITTERS.items():
        reports = search_grid(getattr(cfg, grid_field), lambda v: judged.report(fitted.model(weights_from, v)), cfg,
                              usable[name])
        best = _best(reports)
        tuned[name] = reports[best]
        details[name] = {param: best, f"validation_{SELECTION_METRIC}": {
            str(v): round(r[SELECTION_METRIC], 5) for v, r in reports.items()}}
    trending = lambda past, now, half_life: recent_popularity(past, items, now, half_life)  # noqa: E731
    reports = {h: judged.report_scores(trending(validation.past, validation.boundary, h))
               for h in cfg.recent_half_life_days}
    earlier = _earlier_origin_scores(holdout.past, len(validation.past), items, trending, cfg)
    rolling = {h: float(np.mean([r[SELECTION_METRIC], *earlier[h]])) for h, r in reports.items()}
    half_life = max(rolling, key=lambda h: (round(rolling[h], 6), h))  # ties: the longer, the steadier
    tuned["recent_popularity"] = reports[half_life]
    details["recent_popularity"] = {"half_life_days": half_life, f"validation_{SELECTION_METRIC}": {
        str(h): round(r[SELECTION_METRIC], 5) for h, r in reports.items()}, f"rolling_origin_{SELECTION_METRIC}": {
        str(h): round(v, 5) for h, v in rolling.items()}}
    time_aware, tuned["time_aware_ease"], judged_settings = choose_time_aware_ease(
        validation, judged, validation_users, items, fitted, details["ease"]["l2"], cfg,
        chosen["time_aware_ease"] if chosen is not None else None)
    details["time_aware_ease"] = {**asdict(time_aware), f"validation_{SELECTION_METRIC}": judged_settings}
    details["selection_seconds"] = round(time.perf_counter() - started, 2)

    users = Vocabulary(holdout.past[USER])
    judged = protocol(holdout.past, holdout.later, holdout_users, users, items)
    t = time.perf_counter()
    fitted = ItemGram.of(interaction_matrix(holdout.past, users, items), cfg.max_items)
    gram_seconds = time.perf_counter() - t
    reported = {}
    for name, (weights_from, param, _) in FITTERS.items():
        t = time.perf_counter()
        model = fitted.model(weights_from, details[name][param])
        details[name].update(fit_seconds=round(gram_seconds + time.perf_counter() - t, 2),
                             items_modelled=len(model.columns))
        reported[name] = judged.report(model)
    reported["recent_popularity"] = judged.report_scores(trending(holdout.past, holdout.boundary, half_life))
    t = time.perf_counter()
    model = time_aware.fit(holdout.past, users, items, holdout.boundary, cfg.max_items)
    profiles = time_aware.history(holdout.past, users, items, holdout.boundary)
    reported["time_aware_ease"] = judged.report_scores(
        model.scores(profiles[users.index(np.asarray(holdout_users, dtype=object))]))
    details["time_aware_ease"]["fit_seconds"] = round(time.perf_counter() - t, 2)
    return tuned, reported, details

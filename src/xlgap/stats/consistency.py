"""Cross-lingual consistency of candidate rankings and of answers.

Input per language: ``scores`` of shape ``(Q, M)``, the log-probability of each of an
item's candidates, with the *same candidate order in every language* (candidate j is the
same entity everywhere). Items with fewer candidates are padded with NaN. ``gold`` of
shape ``(Q,)`` indexes the gold candidate (the same in every language, since the order is
shared).

* :func:`rank_consistency`: mean per-item Spearman correlation of the candidate ranks.
* :func:`rankc`: the RankC score of Qi et al. (2023): per item
  ``sum_j w_j * P@j`` with ``P@j = |top_j(a) & top_j(b)| / j`` and softmax weights
  ``w_j = exp(N - j) / sum_k exp(N - k)`` over the item's N candidates, so agreement at the
  top of the ranking dominates; averaged over items.
* :func:`shared_rates`: how often both languages are right, or wrong with the same answer.

A candidate is used for an item only where both languages have a score (not NaN).

All of these are means over items, so a bootstrap replicate is the same mean over the
drawn items (an item drawn twice counts twice), computed for all replicates at once; the
chance level pairs item i of language a with a random item of language b (its scores and
its gold), which is what the figures look like without any correspondence between the
languages. :func:`consistency_matrix` reports both with ``n_boot`` / ``n_shuffles``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from xlgap.errors import ConfigError, DataError
from xlgap.io import finite
from xlgap.stats.bootstrap import figure, item_counts, nan_mean, shuffles, weighted_mean

__all__ = [
    "average_ranks",
    "consistency_matrix",
    "per_item",
    "rank_consistency",
    "rankc",
    "shared_rates",
]


def _check_scores(a: np.ndarray, b: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2:
        raise DataError(f"{where}: scores must be 2-D (items, candidates), got shapes "
                        f"{a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise DataError(f"{where}: score arrays differ in shape: {a.shape} vs {b.shape}")
    if np.isinf(a).any() or np.isinf(b).any():
        raise DataError(f"{where}: scores contain infinite values (use NaN for padding)")
    return a, b


def average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, tied values sharing the mean of their ranks."""
    v = np.asarray(v)
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    # Boundaries of runs of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx = average_ranks(x)
    ry = average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return math.nan if den == 0 else float(rx @ ry) / den


def rank_consistency_per_item(scores_a: np.ndarray, scores_b: np.ndarray) -> np.ndarray:
    """Per item, the Spearman correlation of the candidate ranks; NaN where it is skipped
    (fewer than 2 shared candidates, or a constant ranking: correlation undefined)."""
    return _per_item(scores_a, scores_b, _spearman, "rank_consistency")


def _per_item(scores_a: np.ndarray, scores_b: np.ndarray,
              statistic: Callable[[np.ndarray, np.ndarray], float], where: str) -> np.ndarray:
    """``statistic`` of each item's candidates scored in both languages (NaN scores are
    candidates a language lacks); NaN for items with fewer than 2 shared candidates."""
    a, b = _check_scores(scores_a, scores_b, where)
    out = np.full(a.shape[0], np.nan)
    for i, (row_a, row_b) in enumerate(zip(a, b, strict=True)):
        ok = ~(np.isnan(row_a) | np.isnan(row_b))
        if ok.sum() >= 2:
            out[i] = statistic(row_a[ok], row_b[ok])
    return out



def rank_consistency(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """Mean over items of the Spearman correlation of candidate ranks in the two languages.

    Items with fewer than 2 shared candidates, or where one language scores all
    candidates equally (correlation undefined), are skipped; NaN if no item remains.
    """
    return nan_mean(rank_consistency_per_item(scores_a, scores_b))


def _rankc_item(x: np.ndarray, y: np.ndarray) -> float:
    n = len(x)
    # Rank by decreasing score; equal scores keep candidate order (stable sort).
    top_x = np.argsort(-x, kind="stable")
    top_y = np.argsort(-y, kind="stable")
    # pos_y[c]: position of candidate c in y's ranking. Candidate top_x[i] is in both
    # top-j sets for all j >= max(i, pos_y[top_x[i]]) + 1.
    pos_y = np.empty(n, dtype=np.int64)
    pos_y[top_y] = np.arange(n)
    enter = np.maximum(np.arange(n), pos_y[top_x])  # 0-based j-1 where it enters the overlap
    overlap = np.cumsum(np.bincount(enter, minlength=n))  # |top_j(x) & top_j(y)| for j=1..n
    p_at = overlap / np.arange(1, n + 1)
    w = np.exp(-np.arange(n, dtype=np.float64))  # exp(N - j) up to a constant factor
    return float(np.sum(w * p_at) / w.sum())


def rankc_per_item(scores_a: np.ndarray, scores_b: np.ndarray) -> np.ndarray:
    """Per item, the RankC of its shared candidates; NaN with fewer than 2 of them."""
    return _per_item(scores_a, scores_b, _rankc_item, "rankc")


def rankc(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """RankC of Qi et al. (2023): softmax-weighted precision@j of the two rankings.

    Per item over its N shared candidates: ``sum_{j=1..N} w_j |top_j(a) & top_j(b)| / j``
    with ``w_j = exp(N-j) / sum_k exp(N-k)``; mean over items with at least 2 shared
    candidates (NaN if none). 1 for identical rankings.
    """
    return nan_mean(rankc_per_item(scores_a, scores_b))


def _predictions(scores: np.ndarray, where: str) -> np.ndarray:
    """Arg-max candidate per item; NaN padding never wins; ties go to the lower index."""
    all_nan = np.isnan(scores).all(axis=1)
    if all_nan.any():
        raise DataError(f"{where}: item(s) {np.flatnonzero(all_nan)[:10].tolist()} have no "
                        "scored candidate")
    return np.argmax(np.where(np.isnan(scores), -np.inf, scores), axis=1)


def _check_gold(g: np.ndarray, q: int, m: int) -> np.ndarray:
    g = np.asarray(g)
    if g.shape != (q,):
        raise DataError(f"shared_rates: gold must have shape ({q},), got {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise DataError(f"shared_rates: gold must hold integer candidate indices, got {g.dtype}")
    if ((g < 0) | (g >= m)).any():
        raise DataError(f"shared_rates: gold index out of range 0..{m - 1}")
    return g


RATES = ("tr_plus", "tr_minus", "a_only", "b_only", "both_wrong", "same_answer")


def shared_rates_per_item(scores_a: np.ndarray, scores_b: np.ndarray, gold: np.ndarray,
                          gold_b: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per item 0/1 indicators of :func:`shared_rates` (``gold_b``: language b's gold when
    its items are not those of a, as in a shuffled pairing; default ``gold``)."""
    a, b = _check_scores(scores_a, scores_b, "shared_rates")
    if a.shape[0] == 0:
        raise DataError("shared_rates: no items")
    ga = _check_gold(gold, a.shape[0], a.shape[1])
    gb = ga if gold_b is None else _check_gold(gold_b, a.shape[0], a.shape[1])
    pa = _predictions(a, "shared_rates (language a)")
    pb = _predictions(b, "shared_rates (language b)")
    ca = pa == ga
    cb = pb == gb
    flags = {"tr_plus": ca & cb, "tr_minus": ~ca & ~cb & (pa == pb), "a_only": ca & ~cb,
             "b_only": ~ca & cb, "both_wrong": ~ca & ~cb, "same_answer": pa == pb}
    return {key: v.astype(np.float64) for key, v in flags.items()}


def shared_rates(scores_a: np.ndarray, scores_b: np.ndarray,
                 gold: np.ndarray) -> dict[str, float]:
    """Agreement of the two languages' answers (arg-max candidate) with gold and each other.

    ``tr_plus``: share of items right in both; ``tr_minus``: wrong in both with the same
    wrong answer; ``a_only`` / ``b_only``: right in one language only; ``both_wrong``:
    wrong in both (any answers); ``same_answer``: same arg-max in both.
    """
    flags = shared_rates_per_item(scores_a, scores_b, gold)
    return {"n": len(flags["tr_plus"]), **{key: float(flags[key].mean()) for key in RATES}}


#: the figures of a language pair that get an interval and a chance level
UNCERTAIN = ("rank_consistency", "rankc", "tr_plus", "tr_minus", "same_answer")


def per_item(scores_a: np.ndarray, scores_b: np.ndarray, gold: np.ndarray,
             gold_b: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-item values of every figure in :data:`UNCERTAIN` (NaN = item skipped)."""
    rates = shared_rates_per_item(scores_a, scores_b, gold, gold_b)
    return {"rank_consistency": rank_consistency_per_item(scores_a, scores_b),
            "rankc": rankc_per_item(scores_a, scores_b),
            **{key: rates[key] for key in ("tr_plus", "tr_minus", "same_answer")}}


def _summary(a: np.ndarray, b: np.ndarray, g: np.ndarray, counts: np.ndarray | None,
             perms: np.ndarray | None) -> dict[str, Any]:
    values = per_item(a, b, g)
    chance: dict[str, list[float]] = {key: [] for key in UNCERTAIN}
    for perm in perms if perms is not None else []:
        shuffled = per_item(a, b[perm], g, g[perm])
        for key in UNCERTAIN:
            chance[key].append(nan_mean(shuffled[key]))
    return {key: figure(nan_mean(values[key]),
                        None if counts is None else weighted_mean(values[key], counts),
                        nan_mean(np.array(chance[key])) if perms is not None else None)
            for key in UNCERTAIN}


def consistency_matrix(scores_by_lang: Mapping[str, np.ndarray],
                       gold: np.ndarray | Mapping[str, np.ndarray], *, n_boot: int = 0,
                       n_shuffles: int = 0, seed: int = 0) -> dict[str, Any]:
    """All pairwise consistency measures.

    ``gold`` is one array shared by all languages (the candidate order is shared) or a
    mapping per language, which must then agree. Returns ``{"languages", "pairs": [{"a",
    "b", "rank_consistency", "rankc", "tr_plus", ...}], "matrices": {metric: L x L list}}``;
    matrices are symmetric with 1.0 on the diagonal for the rank measures and the
    language's own accuracy on the diagonal of ``tr_plus``. NaN becomes None.

    With ``n_boot`` (bootstrap replicates over items, the same draws for every pair) or
    ``n_shuffles`` (shuffled pairings), each pair also gets ``"summary": {figure:
    {"estimate", "ci", "chance"}}`` for the figures in :data:`UNCERTAIN`.
    """
    if n_boot < 0 or n_shuffles < 0:
        raise ConfigError(f"consistency_matrix: n_boot and n_shuffles must be >= 0, got "
                          f"{n_boot} and {n_shuffles}")
    langs = list(scores_by_lang)
    if len(langs) < 2:
        raise DataError(f"consistency_matrix: need at least 2 languages, got {langs}")
    if isinstance(gold, Mapping):
        missing = [lang for lang in langs if lang not in gold]
        if missing:
            raise DataError(f"consistency_matrix: no gold for languages {missing}")
        g = np.asarray(gold[langs[0]])
        for lang in langs[1:]:
            if not np.array_equal(np.asarray(gold[lang]), g):
                raise DataError(f"consistency_matrix: gold of {lang!r} differs from gold of "
                                f"{langs[0]!r}; candidate order must be shared")
    else:
        g = np.asarray(gold)
    n = len(langs)
    n_items = len(g)
    counts = item_counts(n_items, n_boot, seed) if n_boot and n_items else None
    perms = shuffles(n_items, n_shuffles, seed) if n_shuffles and n_items else None
    keys = UNCERTAIN
    mats = {key: [[None] * n for _ in range(n)] for key in keys}
    pairs: list[dict[str, Any]] = []
    for (i, la), (j, lb) in itertools.combinations(enumerate(langs), 2):
        where = f"consistency_matrix {la}-{lb}"
        try:
            rates = shared_rates(scores_by_lang[la], scores_by_lang[lb], g)
            row: dict[str, Any] = {
                "a": la, "b": lb,
                "rank_consistency": finite(rank_consistency(scores_by_lang[la],
                                                                  scores_by_lang[lb])),
                "rankc": finite(rankc(scores_by_lang[la], scores_by_lang[lb])),
                **rates}
            if n_boot or n_shuffles:
                row["summary"] = _summary(np.asarray(scores_by_lang[la], dtype=np.float64),
                                          np.asarray(scores_by_lang[lb], dtype=np.float64),
                                          g, counts, perms)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from exc
        pairs.append(row)
        for key in keys:
            mats[key][i][j] = mats[key][j][i] = row[key]
    for i, lang in enumerate(langs):
        s = np.asarray(scores_by_lang[lang], dtype=np.float64)
        acc = float(np.mean(_predictions(s, f"consistency_matrix ({lang})") == g))
        mats["rank_consistency"][i][i] = 1.0
        mats["rankc"][i][i] = 1.0
        mats["tr_plus"][i][i] = acc
        mats["tr_minus"][i][i] = 1.0 - acc
        mats["same_answer"][i][i] = 1.0
    out: dict[str, Any] = {"languages": langs, "pairs": pairs, "matrices": mats}
    if n_boot or n_shuffles:
        out.update({"n_boot": n_boot, "n_shuffles": n_shuffles, "seed": seed, "ci_level": 0.95,
                    "chance_method": "language b's items shuffled (its scores and gold), "
                                     "mean over the shuffles"})
    return out

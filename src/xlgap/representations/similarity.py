"""Cross-lingual similarity of parallel representations, layer by layer.

Three views of how close two languages' representations of the same sentences are:

* cosine of parallel pairs (row i of A with row i of B) against non-parallel pairs
  (i != j); their difference isolates the translation-specific alignment from the
  anisotropy every layer has (all vectors pointing roughly the same way);
* linear CKA (Kornblith et al., 2019), which compares the geometry of the two point clouds
  and is invariant to orthogonal transforms and isotropic scaling. The default is the
  *debiased* estimator, built on the unbiased HSIC estimator of Song et al. (2012): with
  fewer items than dimensions the usual (biased) CKA of two unrelated representations is
  far above 0, the debiased one is near 0 (see :func:`linear_cka`). The biased one stays
  available as :func:`linear_cka_biased` (metric ``cka_biased``);
* top-1 parallel-sentence retrieval by cosine, the most practical reading of alignment.

Every metric can come with a 95% bootstrap interval over items and a chance level from
shuffled pairings (:mod:`xlgap.stats.bootstrap`); :func:`pair_replicates`
says how each metric is recomputed on a replicate.

Cosine with a zero vector is 0 (see :func:`xlgap.representations.ilo.normalise_rows`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from xlgap.errors import ConfigError, DataError
from xlgap.io import finite
from xlgap.representations.extract import States, layer_plan
from xlgap.representations.ilo import normalise_rows
from xlgap.stats.bootstrap import (
    figure,
    item_counts,
    nan_mean_rows,
    shuffles,
    weighted_mean,
)

__all__ = [
    "METRICS",
    "layerwise_similarity",
    "linear_cka",
    "linear_cka_biased",
    "pair_chance",
    "pair_metrics",
    "pair_replicates",
    "parallel_cosine",
    "retrieval_accuracy",
    "retrieval_accuracy_directed",
    "retrieval_hits",
]

METRICS = ("cos_parallel", "cos_non_parallel", "cos_difference", "cka", "cka_biased",
           "retrieval", "retrieval_ab", "retrieval_ba")


def _check_pair(a: np.ndarray, b: np.ndarray, where: str, same_dim: bool = True,
                min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise DataError(f"{where}: expected two 2-D arrays (n, d), got shapes {a.shape} and "
                        f"{b.shape}")
    if a.shape[0] != b.shape[0]:
        raise DataError(f"{where}: parallel arrays need the same number of rows, got "
                        f"{a.shape[0]} and {b.shape[0]}")
    if same_dim and a.shape[1] != b.shape[1]:
        raise DataError(f"{where}: arrays have different dimensions {a.shape[1]} and {b.shape[1]}")
    if a.shape[0] < min_rows:
        raise DataError(f"{where}: need at least {min_rows} rows, got {a.shape[0]}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise DataError(f"{where}: arrays contain NaN or infinite values")
    return a, b


def parallel_cosine(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean cosine of parallel pairs, of non-parallel pairs (i != j), and their difference.

    The non-parallel mean is exact without an n x n matrix: the sum over all (i, j) of
    a_i . b_j equals (sum_i a_i) . (sum_j b_j), and the parallel terms are subtracted.
    """
    a, b = _check_pair(a, b, "parallel_cosine", min_rows=2)
    an = normalise_rows(a).astype(np.float64)
    bn = normalise_rows(b).astype(np.float64)
    n = an.shape[0]
    diag = np.einsum("ij,ij->i", an, bn)
    par_sum = float(diag.sum())
    all_sum = float(an.sum(axis=0) @ bn.sum(axis=0))
    parallel = par_sum / n
    non_parallel = (all_sum - par_sum) / (n * (n - 1))
    return {"parallel": parallel, "non_parallel": non_parallel,
            "difference": parallel - non_parallel}


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0)


def _gram_cheaper(n: int, d1: int, d2: int) -> bool:
    """Whether n x n Gram products cost less than d1 x d2 feature products."""
    return n * (d1 + d2) < d1 * d2


def _hsic_unbiased(cross_sq: float, sx: np.ndarray, sy: np.ndarray) -> float:
    """Unbiased HSIC of column-centred X, Y from ``||X^T Y||_F^2`` and the row norms.

    The estimator of Song et al. (2012) with zero-diagonal Grams K~, L~:
    ``[tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``. With centred
    columns ``X^T 1 = 0``, so ``K~1 = -sx`` (sx: squared row norms), which turns every
    term into a sum over rows: no n x n matrix is needed.
    """
    n = len(sx)
    trace = cross_sq - float(sx @ sy)
    return (trace + float(sx.sum() * sy.sum()) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * float(sx @ sy)) / (n * (n - 3))


class _CkaPair:
    """What both CKA estimators need from X and Y, computed once.

    The self terms ``||Xc^T Xc||_F^2`` and ``||Yc^T Yc||_F^2`` do not change when Y's rows
    are shuffled, so the chance level (:func:`pair_chance`) recomputes only the cross
    term per shuffle. Products are taken in feature space (d x d) or as n x n Grams,
    whichever is cheaper (both give the same numbers).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.xc, self.yc = _centred(x), _centred(y)
        self.n = self.xc.shape[0]
        self.sx = np.einsum("ij,ij->i", self.xc, self.xc)
        self.sy = np.einsum("ij,ij->i", self.yc, self.yc)
        self.gram = _gram_cheaper(self.n, self.xc.shape[1], self.yc.shape[1])
        if self.gram:
            self.kx, self.ky = self.xc @ self.xc.T, self.yc @ self.yc.T
            self.xx, self.yy = float(np.sum(self.kx ** 2)), float(np.sum(self.ky ** 2))
        else:
            self.xx = float(np.linalg.norm(self.xc.T @ self.xc) ** 2)
            self.yy = float(np.linalg.norm(self.yc.T @ self.yc) ** 2)

    def values(self, perm: np.ndarray | None = None) -> tuple[float, float]:
        """(debiased, biased) CKA of X with Y, or with Y's rows taken in order ``perm``."""
        sy = self.sy if perm is None else self.sy[perm]
        if self.gram:
            ky = self.ky if perm is None else self.ky[np.ix_(perm, perm)]
            xy = float(np.sum(self.kx * ky))
        else:
            yc = self.yc if perm is None else self.yc[perm]
            xy = float(np.linalg.norm(self.xc.T @ yc) ** 2)
        biased = xy / math.sqrt(self.xx * self.yy) if self.xx > 0 and self.yy > 0 else math.nan
        if self.n < 4:
            return math.nan, biased
        hxx = _hsic_unbiased(self.xx, self.sx, self.sx)
        hyy = _hsic_unbiased(self.yy, sy, sy)
        if hxx <= 0 or hyy <= 0:
            return math.nan, biased
        return _hsic_unbiased(xy, self.sx, sy) / math.sqrt(hxx * hyy), biased


def linear_cka_biased(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA as usually computed (biased HSIC), columns centred.

    ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, in float64. NaN when either side
    is constant. With fewer items than dimensions it is biased upward: two independent
    random representations of 50 items in 640 dimensions score about 0.9.
    """
    x, y = _check_pair(x, y, "linear_cka_biased", same_dim=False, min_rows=2)
    return _CkaPair(x, y).values()[1]


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased linear CKA of two representations of the same n items (n >= 4).

    Unbiased HSIC estimates in place of the biased ones, ``HSIC_u(K, L) /
    sqrt(HSIC_u(K, K) HSIC_u(L, L))``: unrelated representations score near 0 (slightly
    negative values occur) whatever the number of items or dimensions, and identical
    ones (up to rotation, isotropic scaling and shift) score 1. NaN when n < 4 or
    either side has no estimated variance. The biased variant is :func:`linear_cka_biased`.
    """
    x, y = _check_pair(x, y, "linear_cka", same_dim=False, min_rows=2)
    return _CkaPair(x, y).values()[0]


def retrieval_hits(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Per row i of ``a``: is row i the most cosine-similar row of ``b``? ``(n,)`` bool.

    Ties go to the lower index (so a tie with an earlier row counts as a miss unless
    that row is the parallel one). Chunked: memory O(n * chunk).
    """
    a, b = _check_pair(a, b, "retrieval_accuracy")
    if chunk < 1:
        raise ConfigError(f"retrieval_accuracy: chunk must be >= 1, got {chunk}")
    an = normalise_rows(a)
    bn = normalise_rows(b)
    n = an.shape[0]
    hits = np.empty(n, dtype=bool)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        hits[start:stop] = np.argmax(an[start:stop] @ bn.T, axis=1) == np.arange(start, stop)
    return hits


def retrieval_accuracy_directed(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> float:
    """Share of rows i of ``a`` whose most cosine-similar row of ``b`` is row i (ties to
    the lower index; see :func:`retrieval_hits`)."""
    return float(np.mean(retrieval_hits(a, b, chunk)))


def retrieval_accuracy(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> float:
    """Top-1 parallel retrieval accuracy, averaged over both directions (a->b and b->a)."""
    return 0.5 * (retrieval_accuracy_directed(a, b, chunk)
                  + retrieval_accuracy_directed(b, a, chunk))


def pair_metrics(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> dict[str, float]:
    """All similarity metrics for one language pair at one layer."""
    a, b = _check_pair(a, b, "pair_metrics", min_rows=2)
    return _metrics(a, b, _CkaPair(a, b).values(), chunk)


def _metrics(a: np.ndarray, b: np.ndarray, cka: tuple[float, float], chunk: int
             ) -> dict[str, float]:
    cos = parallel_cosine(a, b)
    ab = retrieval_accuracy_directed(a, b, chunk)
    ba = retrieval_accuracy_directed(b, a, chunk)
    return {"cos_parallel": cos["parallel"], "cos_non_parallel": cos["non_parallel"],
            "cos_difference": cos["difference"], "cka": cka[0], "cka_biased": cka[1],
            "retrieval": 0.5 * (ab + ba), "retrieval_ab": ab, "retrieval_ba": ba}


# -- bootstrap replicates ----------------------------------------------------------------------


def _power_sums(w: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple((w ** p).sum(axis=1) for p in (1, 2, 3, 4))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _hsic_replicates(w: np.ndarray, a_w: np.ndarray, b_w: np.ndarray, m: np.ndarray
                     ) -> np.ndarray:
    """Unbiased HSIC per replicate for zero-diagonal Grams A~, B~ (``m`` = A~ * B~).

    ``w`` ``(n_boot, n)`` are the draw counts, ``a_w = w @ A~``, ``b_w = w @ B~``. The
    U-statistic ``S2/N2 + S4/N4 - 2 S3/N3`` over tuples of *distinct items*, each tuple
    weighted by the product of its items' draws: S2 = sum_{i!=j} w_i w_j A_ij B_ij,
    S3 = sum over distinct (i, j, q) of w_i w_j w_q A_ij B_iq, S4 = sum over distinct
    (i, j, q, r) of w_i w_j w_q w_r A_ij B_qr, and N2..N4 the same sums of the weights
    alone. Copies of one item are never paired (that would pair a sentence with itself
    and inflate HSIC); with all w = 1 this is exactly Song et al.'s estimator. The sums
    over distinct tuples come from sums over all tuples by inclusion-exclusion.
    """
    w2 = w * w
    wm, w2m = w @ m, w2 @ m
    s2_ = np.sum(w * wm, axis=1)
    q_ = np.sum(w2 * w2m, axis=1)  # pairs (i, j) counted with w_i^2 w_j^2
    r_ = np.sum(w * w2m, axis=1)  # triples (i, j, j)
    s3 = np.sum(w * a_w * b_w, axis=1) - r_
    t_ = np.sum(w2 * a_w * b_w, axis=1) - q_  # quadruples sharing exactly one index
    s4 = np.sum(w * a_w, axis=1) * np.sum(w * b_w, axis=1) - 4 * t_ - 2 * q_
    p1, p2, p3, p4 = _power_sums(w)
    n2 = p1 ** 2 - p2
    n3 = p1 ** 3 - 3 * p1 * p2 + 2 * p3
    n4 = p1 ** 4 - 6 * p1 ** 2 * p2 + 3 * p2 ** 2 + 8 * p1 * p3 - 6 * p4
    # fewer than 4 distinct items drawn: the estimator is undefined
    return np.where(n4 > 0, _ratio(s2_, n2) + _ratio(s4, n4) - 2 * _ratio(s3, n3), np.nan)


def _cka_replicates(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Debiased linear CKA per replicate, from n x n Grams: O(n_boot n^2).

    In a simulation its intervals matched the spread of the estimate over fresh samples
    when there are many more items than dimensions, and were up to twice as wide (so
    conservative) with dimensions comparable to the items or more, where the
    second-order part of the U-statistic, which the bootstrap over-reproduces, dominates.
    """
    xc, yc = _centred(x), _centred(y)
    k, lg = xc @ xc.T, yc @ yc.T
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(lg, 0.0)
    kw, lw = w @ k, w @ lg
    xy = _hsic_replicates(w, kw, lw, k * lg)
    xx = _hsic_replicates(w, kw, kw, k * k)
    yy = _hsic_replicates(w, lw, lw, lg * lg)
    ok = (xx > 0) & (yy > 0)
    return _ratio(np.where(ok, xy, np.nan), np.sqrt(np.where(ok, xx * yy, 0.0)))


def pair_replicates(a: np.ndarray, b: np.ndarray, counts: np.ndarray,
                    chunk: int = 2048) -> dict[str, np.ndarray]:
    """The metrics of :func:`pair_metrics` recomputed on each bootstrap replicate.

    ``counts`` ``(n_boot, n)``: how often each item is drawn (the same for both languages).

    * Cosine means: an item drawn twice is two parallel pairs; pairs of its copies are
      not non-parallel pairs.
    * Debiased CKA: the unbiased HSIC as a U-statistic over distinct drawn items, each
      tuple weighted by its items' draws (copies of one item are never paired with each
      other; see :func:`_hsic_replicates`). O(n_boot n^2).
    * Retrieval: the drawn items are the queries, the candidate pool stays all n items.
      Accuracy depends on the pool's size (chance is 1/n): a pool of only the ~63%
      distinct drawn items would make retrieval easier, and intervals of unrelated
      states came out several times above their estimate that way.
    * The biased CKA gets no replicates (``cka_biased`` is absent): it counts each
      sentence paired with itself, so copies in a resample inflate it (0.59 against an
      estimate of 0.44 in a simulation), and its interval would mislead.

    Returns ``{metric: (n_boot,)}``, NaN where a metric is undefined on a replicate.
    """
    a, b = _check_pair(a, b, "pair_replicates", min_rows=2)
    w = np.asarray(counts, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != a.shape[0]:
        raise DataError(f"pair_replicates: counts must be (n_boot, {a.shape[0]}), got "
                        f"{w.shape}")
    an = normalise_rows(a).astype(np.float64)
    bn = normalise_rows(b).astype(np.float64)
    diag = np.einsum("ij,ij->i", an, bn)
    total = w.sum(axis=1)
    out: dict[str, np.ndarray] = {"cos_parallel": (w @ diag) / total}
    cross = np.sum((w @ an) * (w @ bn), axis=1) - (w * w) @ diag
    out["cos_non_parallel"] = _ratio(cross, total ** 2 - np.sum(w * w, axis=1))
    out["cos_difference"] = out["cos_parallel"] - out["cos_non_parallel"]
    out["cka"] = _cka_replicates(a, b, w)
    out["retrieval_ab"] = weighted_mean(retrieval_hits(a, b, chunk), w)
    out["retrieval_ba"] = weighted_mean(retrieval_hits(b, a, chunk), w)
    out["retrieval"] = 0.5 * (out["retrieval_ab"] + out["retrieval_ba"])
    return out


def pair_chance(a: np.ndarray, b: np.ndarray, perms: np.ndarray,
                chunk: int = 2048) -> dict[str, float]:
    """Mean of each metric over shuffled pairings: row i of ``a`` with row ``perm[i]`` of ``b``."""
    a, b = _check_pair(a, b, "pair_chance", min_rows=2)
    cka = _CkaPair(a, b)
    draws = [_metrics(a, b[perm], cka.values(perm), chunk) for perm in perms]
    return {key: float(nan_mean_rows(np.array([[d[key]] for d in draws]))[0])
            for key in draws[0]}


# -- per layer ---------------------------------------------------------------------------------


def _pairs(langs: list[str], pivot: str | None) -> list[tuple[str, str]]:
    if pivot is None:
        return list(itertools.combinations(langs, 2))
    if pivot not in langs:
        raise ConfigError(f"layerwise_similarity: pivot {pivot!r} is not among the languages "
                          f"{langs}")
    return [(pivot, lang) for lang in langs if lang != pivot]


def _mean_replicates(reps: list[dict[str, np.ndarray]], key: str) -> np.ndarray | None:
    """Per replicate, the mean over pairs (None when the metric has no replicates)."""
    if not reps or key not in reps[0]:
        return None
    return nan_mean_rows(np.array([r[key] for r in reps]))


def _mean_chance(chances: list[dict[str, float]], key: str) -> float | None:
    if not chances or key not in chances[0]:
        return None
    return float(nan_mean_rows(np.array([[c[key]] for c in chances]))[0])


CHANCE_METHOD = ("the second language's rows shuffled (item i paired with a random item), "
                 "mean over the shuffles")


def layerwise_similarity(states: States, pivot: str | None = None, *,
                         layers: Sequence[int] | None = None, n_layers: int | None = None,
                         chunk: int = 2048, n_boot: int = 0, n_shuffles: int = 0,
                         seed: int = 0) -> dict[str, Any]:
    """Similarity metrics per layer for all language pairs (or pairs with ``pivot``).

    ``states`` is ``{lang: (n, n_layers, d)}``, a list of per-layer ``{lang: (n, d)}``, a
    loader ``i -> {lang: (n, d)}`` (give ``n_layers`` or ``layers``) or a
    ``HiddenStateSet``; one layer is processed at a time.
    Returns ``{"languages", "pivot", "pairs", "metrics", "layers": [{"layer": i, "pairs":
    [{"a", "b", <metrics>}], "mean": {<metric>: mean over pairs}}]}``; NaN becomes None.

    With ``n_boot`` (bootstrap replicates over items, the same draws for every pair and
    layer) or ``n_shuffles`` (shuffled pairings for the chance level), every pair row and
    every layer also get ``"summary": {<metric>: {"estimate", "ci", "chance"}}``; for the
    layer, the interval is that of the mean over pairs.
    """
    if n_boot < 0 or n_shuffles < 0:
        raise ConfigError(f"layerwise_similarity: n_boot and n_shuffles must be >= 0, got "
                          f"{n_boot} and {n_shuffles}")
    ids, load = layer_plan(states, layers, n_layers, "layerwise_similarity")
    out_layers: list[dict[str, Any]] = []
    langs: list[str] | None = None
    pairs: list[tuple[str, str]] = []
    counts: np.ndarray | None = None
    perms: np.ndarray | None = None
    uncertain = bool(n_boot or n_shuffles)
    for i in ids:
        vecs = load(i)
        if langs is None:
            langs = list(vecs)
            if len(langs) < 2:
                raise DataError(f"layerwise_similarity: need at least 2 languages, got {langs}")
            pairs = _pairs(langs, pivot)
            n_items = len(vecs[langs[0]])
            # the same item draws and shuffles for every pair and layer
            counts = item_counts(n_items, n_boot, seed) if n_boot else None
            perms = shuffles(n_items, n_shuffles, seed) if n_shuffles else None
        elif list(vecs) != langs:
            raise DataError(f"layerwise_similarity: layer {i} has languages {list(vecs)}, "
                            f"expected {langs}")
        rows: list[dict[str, Any]] = []
        reps: list[dict[str, np.ndarray]] = []
        chances: list[dict[str, float]] = []
        for la, lb in pairs:
            try:
                m = pair_metrics(vecs[la], vecs[lb], chunk)
                rep = pair_replicates(vecs[la], vecs[lb], counts, chunk) if n_boot else {}
                ch = pair_chance(vecs[la], vecs[lb], perms, chunk) if n_shuffles else {}
            except DataError as exc:
                raise DataError(f"layer {i}, pair {la}-{lb}: {exc}") from exc
            row: dict[str, Any] = {"a": la, "b": lb, **{key: finite(v) for key, v in m.items()}}
            if uncertain:
                row["summary"] = {key: figure(m[key], rep.get(key), ch.get(key))
                                  for key in METRICS}
            rows.append(row)
            reps.append(rep)
            chances.append(ch)
        mean: dict[str, float | None] = {}
        for key in METRICS:
            vals = [r[key] for r in rows if r[key] is not None]
            mean[key] = float(np.mean(vals)) if vals else None
        entry: dict[str, Any] = {"layer": int(i), "pairs": rows, "mean": mean}
        if uncertain:
            entry["summary"] = {key: figure(mean[key], _mean_replicates(reps, key),
                                            _mean_chance(chances, key)) for key in METRICS}
        out_layers.append(entry)
    result: dict[str, Any] = {"languages": langs or [], "pivot": pivot,
                              "pairs": [list(p) for p in pairs], "metrics": list(METRICS),
                              "cka": "debiased (unbiased HSIC); cka_biased: the usual estimator",
                              "layers": out_layers}
    if uncertain:
        result.update({"n_boot": n_boot, "n_shuffles": n_shuffles, "seed": seed,
                       "ci_level": 0.95, "chance_method": CHANCE_METHOD})
    return result

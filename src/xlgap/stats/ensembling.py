"""Ensembling curves: source-target distance as the number of pooled answers grows.

For ensemble size k = 1..K, take k of an item's K source answers and k of its K target
answers (without replacement), form the two empirical distributions and measure their
distance; average over several random subsets and over items. Pooling answers averages
the sampling spread away but keeps each language's centre, so the curve falls towards
the distance between the two centres: far down when the gap is variance (same centre),
barely when it is bias (another centre).

Subsets come from random permutations: the first k answers of a uniformly random
permutation are a uniform k-subset, so one permutation per (item, repeat) gives every k
at once with a cumulative sum (the subsets for different k are nested, which does not
change any k's average). All items and repeats are processed as one array.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from xlgap.errors import DataError
from xlgap.io import finite
from xlgap.runs import MISSING, OTHER
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, item_counts
from xlgap.stats.metrics import chi2_distance

_BLOCK_FLOATS = 1 << 24  # items per block: about this many R x K x O floats (64 MiB)


def samples_from_probs(probs: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Draw ``k`` answer concepts (column indices) per row of ``probs`` ``(Q, O)``.

    Exact-mode runs have distributions, not answers; their ensembling curve is computed
    on answers drawn from the distributions with a fixed seed, so it shows what pooling
    ``k`` sampled answers would do. Rows without mass give MISSING.
    """
    p = np.asarray(probs, dtype=np.float64)
    q, o = p.shape
    rng = np.random.default_rng(seed)
    mass = p.sum(axis=1)
    ok = np.isfinite(mass) & (mass > 0)
    cdf = np.cumsum(np.where(ok[:, None], p, 0.0), axis=1)
    u = rng.random((q, k)) * np.where(ok, cdf[:, -1], 1.0)[:, None]
    idx = np.minimum((u[:, :, None] > cdf[:, None, :]).sum(axis=-1), o - 1)
    return np.where(ok[:, None], idx, MISSING).astype(np.int64)


def _cumulative_counts(cols: np.ndarray, perm: np.ndarray, o: int) -> np.ndarray:
    """``(Q, R, K, O)`` counts of the first k permuted answers, for every k."""
    picked = np.take_along_axis(cols[:, None, :], perm, axis=2)  # (Q, R, K)
    onehot = picked[..., None] == np.arange(o)
    return np.cumsum(onehot, axis=2, dtype=np.float32)


def _l2(p: np.ndarray, q: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """L2 between the candidate-renormalised mean embeddings; NaN without candidates."""
    def centre(x: np.ndarray) -> np.ndarray:
        cand = x[..., :emb.shape[1]]
        mass = cand.sum(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(mass > 0, cand / np.where(mass > 0, mass, 1.0), np.nan)
        return np.einsum("qrkm,qmd->qrkd", w, emb)

    d = centre(p) - centre(q)
    return np.sqrt((d ** 2).sum(axis=-1))


def per_item_curves(source: np.ndarray, target: np.ndarray, n_options: np.ndarray, *,
                    embeddings: np.ndarray | None = None, repeats: int = 20, seed: int = 0
                    ) -> dict[str, np.ndarray | None]:
    """Per-item distance curves ``(Q, K)`` (mean over ``repeats`` random subsets).

    ``source`` and ``target`` are ``(Q, K)`` answer concepts as in :class:`xlgap.runs.Run`
    (candidates ``0..M_max-1``, then other-answer concepts; -2 missing). A bare -1 (an
    "other" answer without its text) is a "no answer" of its own language, so it never
    matches the other side. An item with a missing side is NaN. ``embeddings`` is
    ``(Q, M_max, d)`` or None (then no L2).
    """
    src = np.asarray(source, dtype=np.int64)
    tgt = np.asarray(target, dtype=np.int64)
    if src.shape != tgt.shape or src.ndim != 2:
        raise DataError(f"ensembling: source and target answers must be (Q, K) of one "
                        f"shape, got {src.shape} and {tgt.shape}")
    q, k = src.shape
    m_max = int(np.max(n_options, initial=1))
    top = int(max(src.max(initial=-1), tgt.max(initial=-1), m_max - 1))
    # two extra columns: the "no answer" (-1) concept of each side, distinct from each other
    o = top + 3
    ok = np.all(src != MISSING, axis=1) & np.all(tgt != MISSING, axis=1)
    src_cols = np.where(src == OTHER, top + 1, src)
    tgt_cols = np.where(tgt == OTHER, top + 2, tgt)
    chi2 = np.full((q, k), np.nan)
    l2 = np.full((q, k), np.nan) if embeddings is not None else None
    l2sq = np.full((q, k), np.nan) if embeddings is not None else None
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, k + 1, dtype=np.float32)[None, None, :, None]
    rows = np.nonzero(ok)[0]
    block = max(1, _BLOCK_FLOATS // (repeats * k * o))
    for a in range(0, rows.size, block):
        r = rows[a:a + block]
        perm_s = rng.random((r.size, repeats, k)).argsort(axis=2)
        perm_t = rng.random((r.size, repeats, k)).argsort(axis=2)
        p = _cumulative_counts(src_cols[r], perm_s, o) / sizes
        qd = _cumulative_counts(tgt_cols[r], perm_t, o) / sizes
        chi2[r] = chi2_distance(p, qd).mean(axis=1)
        if l2 is not None and l2sq is not None and embeddings is not None:
            emb = np.asarray(embeddings[r], dtype=np.float32)
            dist = _l2(p, qd, emb)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # no candidate in a subset
                l2[r] = np.nanmean(dist, axis=1)
                l2sq[r] = np.nanmean(dist ** 2, axis=1)
    return {"chi2": chi2, "l2": l2, "l2sq": l2sq}


def vector_curves(source: np.ndarray, target: np.ndarray, *, repeats: int = 20,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Per-item L2 curves ``(Q, K)`` from embeddings of every answer (open questions).

    ``source`` and ``target`` are ``(Q, K, d)``. For k = 1..K the distance is between the
    means of k random source answers and k random target answers (without replacement),
    averaged over ``repeats`` subsets; ``l2sq`` is the mean squared distance, which falls
    as ``bias^2 + variance / k`` (see :func:`variance_share`). A NaN answer (an empty one:
    nothing to embed) is left out of each subset it falls in; a subset without any answer
    on a side is left out of the average, and an item without answers on a side is NaN.
    """
    src = np.asarray(source, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    if src.shape != tgt.shape or src.ndim != 3:
        raise DataError(f"ensembling: answer vectors must be two (Q, K, d) arrays of one "
                        f"shape, got {src.shape} and {tgt.shape}")
    q, k, _ = src.shape
    has_s, has_t = np.isfinite(src).all(axis=2), np.isfinite(tgt).all(axis=2)  # (Q, K)
    ok = has_s.any(axis=1) & has_t.any(axis=1)
    l2 = np.full((q, k), np.nan)
    l2sq = np.full((q, k), np.nan)
    rng = np.random.default_rng(seed)

    def means(vec: np.ndarray, has: np.ndarray, perm: np.ndarray) -> np.ndarray:
        """(R, K, d): the mean of the answers among the first k of each permutation."""
        total = np.cumsum(np.where(has[:, None], vec, 0.0)[perm], axis=1)
        n = np.cumsum(has[perm], axis=1)[..., None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.nan)

    for i in np.nonzero(ok)[0]:
        ps = rng.random((repeats, k)).argsort(axis=1)
        pt = rng.random((repeats, k)).argsort(axis=1)
        d2 = ((means(src[i], has_s[i], ps) - means(tgt[i], has_t[i], pt)) ** 2).sum(axis=-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a size no subset had answers
            l2[i], l2sq[i] = np.nanmean(np.sqrt(d2), axis=0), np.nanmean(d2, axis=0)
    return {"l2": l2, "l2sq": l2sq}


def fit_bias_variance(curve: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of ``curve[k-1] = bias2 + variance / k`` (k = 1..K)."""
    y = np.asarray(curve, dtype=np.float64)
    x = 1.0 / np.arange(1, y.size + 1)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    variance, bias2 = np.polyfit(x[ok], y[ok], 1)
    return float(bias2), float(variance)


def variance_share(l2sq: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                   alpha: float = 0.05) -> dict[str, Any]:
    """The variance share of the one-answer squared L2 distance, from the ensembling curve.

    The mean over items of the squared distance between k-answer means falls as
    ``bias^2 + variance / k``: pooling answers averages the spread away and keeps the
    distance between the centres. Both are fitted to the curve (least squares in 1/k);
    the share is ``variance / (variance + bias^2)`` (bias^2 clipped at 0; a curve from a
    finite set of K answers without replacement keeps this form, since its finite-
    population term is linear in 1/k too). CI: percentile bootstrap over items.

    ``l2sq`` is ``(Q, K)`` or ``(Q, T, K)`` per (item, target); NaN rows are left out. With
    several targets each target's share is fitted on its own curve and the estimate is
    their mean (every target weighs the same; a pooled curve would be dominated by the
    targets whose answers lie farthest away); ``per_target`` lists them. The bootstrap
    resamples items once for all targets. The share is a share of squared distance summed
    over the embedding's dimensions, not a share of items.
    """
    arr = np.asarray(l2sq, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    ok = np.isfinite(arr).all(axis=-1)  # (Q, T)
    vals = np.where(ok[..., None], arr, 0.0)  # (Q, T, K)
    keep = ok.any(axis=1)
    empty = {"estimate": None, "ci": [None, None], "bias2": None, "variance": None,
             "n": 0, "per_target": [None] * arr.shape[1]}
    if not keep.any():
        return empty
    vals, ok = vals[keep], ok[keep].astype(np.float64)

    def shares(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per target (share, bias2, variance) with item weights ``w``."""
        total = np.einsum("q,qtk->tk", w, vals)
        n = w @ ok
        out = np.full((3, total.shape[0]), np.nan)
        for t in range(total.shape[0]):
            if n[t] > 0:
                bias2, var = fit_bias_variance(total[t] / n[t])
                denom = var + max(bias2, 0.0)
                share = var / denom if denom > 0 else float("nan")
                out[:, t] = [min(max(share, 0.0), 1.0), bias2, var]
        return out[0], out[1], out[2]

    def mean(x: np.ndarray) -> float:
        return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")

    est, bias2, var = shares(np.ones(vals.shape[0]))

    w = item_counts(vals.shape[0], n_boot, seed)
    reps = np.array([mean(shares(wi)[0]) for wi in w])
    reps = reps[np.isfinite(reps)]
    lo, hi = (np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if reps.size
              else (float("nan"), float("nan")))
    return {"estimate": finite(mean(est)), "ci": [finite(float(lo)), finite(float(hi))],
            "bias2": finite(mean(bias2)), "variance": finite(mean(var)),
            "n": int(ok.sum()), "per_target": [finite(float(x)) for x in est]}


def summarise_curves(curves: dict[str, np.ndarray | None]) -> dict[str, Any]:
    """Average per-item curves over items (NaN skipped) and compute the drop.

    ``drop = (d(1) - d(K)) / d(1)`` on the chi-square curve: the share of the one-answer
    distance that pooling all K answers removes.
    """
    chi2 = curves["chi2"]
    assert chi2 is not None
    k = chi2.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no items
        c = np.nanmean(chi2, axis=0) if chi2.size else np.full(k, np.nan)
        l2c = curves.get("l2")
        l2 = np.nanmean(l2c, axis=0) if l2c is not None and l2c.size else None
    drop = float((c[0] - c[-1]) / c[0]) if k and np.isfinite(c[0]) and c[0] > 0 else None
    l2_drop = None
    if l2 is not None and np.isfinite(l2[0]) and l2[0] > 0:
        l2_drop = float((l2[0] - l2[-1]) / l2[0])

    return {"k": list(range(1, k + 1)), "chi2": finite(c),
            "l2": finite(l2) if l2 is not None else None, "drop": drop, "l2_drop": l2_drop,
            "n_items": int(np.isfinite(chi2[:, 0]).sum()) if k else 0}


def ensembling_curve(source: np.ndarray, target: np.ndarray, n_options: np.ndarray, *,
                     embeddings: np.ndarray | None = None, repeats: int = 20, seed: int = 0
                     ) -> dict[str, Any]:
    """Mean ensembling curve of one source-target pair (see :func:`per_item_curves`)."""
    return summarise_curves(per_item_curves(source, target, n_options, embeddings=embeddings,
                                            repeats=repeats, seed=seed))

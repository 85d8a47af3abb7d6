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


L2_NULL_PERMUTATIONS = 199  # language-label permutations behind the L2 share's null


def share_parts(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item the two terms of the squared L2 curve ``bias2 + variance / k``.

    ``source`` and ``target`` are ``(Q, K, d)`` answer vectors (a NaN row: no answer).
    With ``n`` answers on a side, ``v`` the trace of their covariance (ddof 1) and ``m``
    their mean, ``variance = v_s + v_t`` (the one-answer spread) and ``bias2 = |m_s -
    m_t|^2 - v_s / n_s - v_t / n_t`` (an unbiased estimate of the squared distance
    between the centres). The curve of k-answer subsets drawn without replacement has
    exactly this form (``|m_s - m_t|^2 + (v_s + v_t)(1/k - 1/K)``), so these are what a
    least-squares fit of the curve converges to as its random subsets grow. NaN where a
    side has fewer than two answers.
    """
    src = np.asarray(source, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    if src.ndim != 3 or tgt.ndim != 3 or src.shape[0] != tgt.shape[0] \
            or src.shape[2] != tgt.shape[2]:
        raise DataError(f"L2 share: answer vectors must be (Q, K, d) with one Q and d, got "
                        f"{src.shape} and {tgt.shape}")

    def side(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        has = np.isfinite(x).all(axis=2)
        n = has.sum(axis=1)
        z = np.where(has[..., None], x, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = z.sum(axis=1) / n[:, None]
            v = (((z - m[:, None]) ** 2).sum(axis=2) * has).sum(axis=1) / (n - 1)
        return n, m, v

    ns, ms, vs = side(src)
    nt, mt, vt = side(tgt)
    ok = (ns >= 2) & (nt >= 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias2 = ((ms - mt) ** 2).sum(axis=1) - vs / ns - vt / nt
    return np.where(ok, vs + vt, np.nan), np.where(ok, bias2, np.nan)


def permuted_share_parts(source: np.ndarray, target: np.ndarray, n_perm: int, seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(n_perm, Q)`` :func:`share_parts` with the language labels permuted within items.

    Each item's source and target answers are pooled and ``n_s`` of them, drawn at
    random, called the source: the parts the data would give if the target's answers
    were exchangeable with the source's (same beliefs, same spread, same place in the
    space). Computed from each item's Gram matrix, so no vector is copied per draw.
    """
    src = np.asarray(source, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    x = np.concatenate([src, tgt], axis=1)  # (Q, 2K, d)
    has = np.isfinite(x).all(axis=2)
    z = np.where(has[..., None], x, 0.0)
    gram = np.einsum("qid,qjd->qij", z, z)
    sq = np.einsum("qii->qi", gram)
    n_s = np.isfinite(src).all(axis=2).sum(axis=1)
    n_t = has.sum(axis=1) - n_s
    ok = (n_s >= 2) & (n_t >= 2)
    rng = np.random.default_rng(seed)
    var = np.full((n_perm, src.shape[0]), np.nan)
    bias2 = np.full((n_perm, src.shape[0]), np.nan)
    ns_, nt_ = np.maximum(n_s, 1)[:, None], np.maximum(n_t, 1)[:, None]
    for b in range(n_perm):
        keys = np.where(has, rng.random(has.shape), np.inf)
        rank = keys.argsort(axis=1).argsort(axis=1)
        in_s = has & (rank < n_s[:, None])
        in_t = has & ~in_s
        a, c = in_s / ns_, in_t / nt_
        ga, gc = np.einsum("qij,qj->qi", gram, a), np.einsum("qij,qj->qi", gram, c)
        mss, mtt, mst = (a * ga).sum(1), (c * gc).sum(1), (a * gc).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            vs = ((sq * in_s).sum(1) - n_s * mss) / (n_s - 1)
            vt = ((sq * in_t).sum(1) - n_t * mtt) / (n_t - 1)
            var[b] = np.where(ok, vs + vt, np.nan)
            bias2[b] = np.where(ok, mss + mtt - 2 * mst - vs / n_s - vt / n_t, np.nan)
    return var, bias2


def candidate_vectors(answers: np.ndarray, embeddings: np.ndarray,
                      n_options: np.ndarray) -> np.ndarray:
    """``(Q, K, d)`` vectors of ``(Q, K)`` answer concepts: a candidate's embedding
    (``embeddings`` ``(Q, M_max, d)``), NaN for an answer naming no candidate or missing
    (the curves' L2 renormalises over candidates the same way)."""
    a = np.asarray(answers, dtype=np.int64)
    emb = np.asarray(embeddings, dtype=np.float64)
    ok = (a >= 0) & (a < np.asarray(n_options)[:, None]) & (a < emb.shape[1])
    vec = np.take_along_axis(emb, np.where(ok, a, 0)[..., None], axis=1)
    return np.where(ok[..., None], vec, np.nan)


def combined_parts(parts: list[tuple[np.ndarray, np.ndarray] | None]
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Per item the first of several :func:`share_parts` (same shapes) that is finite
    there: open items' answer vectors before candidate embeddings."""
    got = [p for p in parts if p is not None]
    if not got:
        return None
    var, bias2 = (np.array(x, dtype=np.float64) for x in got[0])
    for v, b in got[1:]:
        fill = ~(np.isfinite(var) & np.isfinite(bias2))
        var, bias2 = np.where(fill, v, var), np.where(fill, b, bias2)
    return var, bias2


def _shares(var: np.ndarray, bias2: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per target ``variance / (variance + max(bias2, 0))`` of item-weighted means.

    ``var`` and ``bias2`` are ``(..., Q, T)``, ``w`` is ``(Q,)`` or ``(B, Q)`` item weights."""
    ok = np.isfinite(var) & np.isfinite(bias2)
    v, b = np.where(ok, var, 0.0), np.where(ok, bias2, 0.0)
    sub = "q,...qt->...t" if w.ndim == 1 else "bq,bqt->bt"
    n = np.einsum(sub, w, ok.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        mv, mb = np.einsum(sub, w, v) / n, np.einsum(sub, w, b) / n
        share = mv / (mv + np.maximum(mb, 0.0))
    return np.clip(np.where(n > 0, share, np.nan), 0.0, 1.0)


def _mean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis (targets), NaN skipped (every target weighs the same)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no target with a share
        return np.nanmean(x, axis=-1)


def variance_share(var: np.ndarray, bias2: np.ndarray, null_var: np.ndarray | None = None,
                   null_bias2: np.ndarray | None = None, *, n_boot: int = DEFAULT_N_BOOT,
                   seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """The variance share of the one-answer squared L2 distance, against its null.

    ``var`` and ``bias2`` are :func:`share_parts` per item, ``(Q,)`` or ``(Q, T)`` per
    (item, target). Per target the share is ``variance / (variance + bias2)`` of their
    means over items (bias2 clipped at 0): the part of the one-answer squared distance
    that pooling answers removes. The estimate is the mean of the per-target shares (each
    target weighs the same; ``per_target`` lists them); CI: percentile bootstrap over
    items (all targets resampled together).

    The share is of squared distance summed over the embedding's dimensions, not a share
    of items, and anything that sets the languages' answers apart in the space counts
    against it, a different scale or orientation of a language's answers as much as other
    beliefs. So it is read against ``null``: the same share with the language labels
    permuted within items (``null_var``, ``null_bias2``: ``(P, Q[, T])`` from
    :func:`permuted_share_parts`), i.e. what these answers give when the target's are
    exchangeable with the source's; ``null.estimate`` is its mean, ``null.ci`` its central
    95% range, and ``p`` (one-sided, floor ``p_floor``) how often a relabelling gives a
    share as low as the observed one.
    """
    v = np.asarray(var, dtype=np.float64)
    b = np.asarray(bias2, dtype=np.float64)
    if v.ndim == 1:
        v, b = v[:, None], b[:, None]
    keep = (np.isfinite(v) & np.isfinite(b)).any(axis=1)
    n_targets = v.shape[1]
    out: dict[str, Any] = {"estimate": None, "ci": [None, None], "bias2": None,
                           "variance": None, "n": 0, "per_target": [None] * n_targets,
                           "null": None, "p": None, "p_floor": None}
    if not keep.any():
        return out
    v, b = v[keep], b[keep]
    ones = np.ones(v.shape[0])
    est = _shares(v, b, ones)
    reps = _mean(_shares(np.broadcast_to(v, (n_boot, *v.shape)),
                         np.broadcast_to(b, (n_boot, *b.shape)),
                         item_counts(v.shape[0], n_boot, seed)))
    reps = reps[np.isfinite(reps)]
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    lo, hi = np.percentile(reps, q) if reps.size else (np.nan, np.nan)
    ok = np.isfinite(v) & np.isfinite(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mv = np.nanmean(np.where(ok, v, np.nan), axis=0)
        mb = np.nanmean(np.where(ok, b, np.nan), axis=0)
    estimate = float(_mean(est))
    out.update({"estimate": finite(estimate), "ci": [finite(float(lo)), finite(float(hi))],
                "bias2": finite(float(_mean(mb))), "variance": finite(float(_mean(mv))),
                "n": int(ok.sum()), "per_target": [finite(float(x)) for x in est]})
    if null_var is not None and null_bias2 is not None and np.isfinite(estimate):
        nv = np.asarray(null_var, dtype=np.float64)
        nb = np.asarray(null_bias2, dtype=np.float64)
        if nv.ndim == 2:
            nv, nb = nv[..., None], nb[..., None]
        null = _mean(_shares(nv[:, keep], nb[:, keep], ones))
        null = null[np.isfinite(null)]
        if null.size:
            nlo, nhi = np.percentile(null, q)
            out["null"] = {"estimate": finite(float(null.mean())),
                           "ci": [finite(float(nlo)), finite(float(nhi))],
                           "n": int(null.size), "method": "language labels permuted "
                           "within items"}
            # add-one: the observed labelling is one of the permutations
            out["p"] = float((1 + np.sum(null <= estimate + 1e-12)) / (null.size + 1))
            out["p_floor"] = float(1 / (null.size + 1))
    return out


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

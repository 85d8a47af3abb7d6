"""Per-item metrics of the cross-lingual gap, over answer distributions.

A distribution is a row of ``(Q, O)`` over answer *concepts* (see :class:`xlgap.runs.Run`):
the item's candidates (``M_max`` columns, zero padding beyond an item's own count), then
one column per distinct "other" answer (normalised text), and "no answer" columns that
belong to one language only. So two answers that name no candidate agree only when their
normalised texts match, and two empty or unparseable answers never do; every function
here (modes, agreement, chi-square, the mismatch estimator, ensembling) inherits that
rule from the columns. A row that is all NaN (or all zero) is a missing (item, language)
pair and gives NaN, which every summary skips.

Two families compare a source with a target. The *ensembled* ones (agreement, overall
success, transfer) compare the modes: correct means the mode is gold, so they describe
the answer of an ensemble (the argmax of an exact distribution is the infinite
ensemble, the mode of R sampled answers an R-answer one). The *per-response* ones
(:func:`response_agreement_per_item`, :func:`response_success_per_item`,
:func:`response_transfer_parts`) compare one source answer with one independent target
answer, as the statistical-viewpoint paper measures transfer: with exact distributions
they are expectations over the answer pair, with R sampled answers per language the
share of the R x R (source answer, target answer) pairs (the sample distribution is the
share of answers, so the one formula covers both). A variance-type gap keeps the
source's mode, so the ensembled figures do not see it while the per-response ones do;
the difference between the two is what ensembling can recover.

Modes are sets: options can tie at the maximum (common with K = 20 samples). Correctness
in one language is then its expectation under a uniformly random tie-break; in two
languages at once (overall success, transfer) the tie-break is one shared draw, and
agreement is the overlap of the two mode sets (Jaccard). Both choices make a target that
equals its source agree with it and transfer fully, ties included. Each function returns
per-item values; :mod:`xlgap.stats.bootstrap` turns them into estimates with CIs over
items.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xlgap.errors import DataError


def _valid(p: np.ndarray) -> np.ndarray:
    """Rows that hold a distribution (finite, some mass)."""
    return np.all(np.isfinite(p), axis=-1) & (np.nansum(p, axis=-1) > 0)


def mode_mask(p: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """Boolean ``(Q, O)`` mask of each row's modes (all options tied at the maximum).

    Invalid rows get an empty mask.
    """
    p = np.asarray(p, dtype=np.float64)
    ok = _valid(p)
    safe = np.where(ok[:, None], p, 0.0)
    top = safe.max(axis=-1, keepdims=True)
    return (safe >= top - rtol * np.maximum(top, 1e-300)) & ok[:, None]


def _check_pair(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise DataError(f"metrics: distributions must be two (Q, O) arrays of one shape, "
                        f"got {p.shape} and {q.shape}")
    return p, q


def _gold_index(gold: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
    gold = np.asarray(gold, dtype=np.int64)
    if gold.shape != (q,):
        raise DataError(f"metrics: gold has shape {gold.shape}, expected ({q},)")
    known = gold >= 0
    return np.where(known, gold, 0), known


def accuracy_per_item(p: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Probability mass on the gold option: the share of sampled answers that are gold
    (sample mode) or the exact probability of gold (exact mode). NaN if gold unknown."""
    p = np.asarray(p, dtype=np.float64)
    g, known = _gold_index(gold, p.shape[0])
    out = p[np.arange(p.shape[0]), g]
    return np.where(known & _valid(p), out, np.nan)


def mode_correct_per_item(p: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Whether the mode is gold (fractional under ties). NaN if gold unknown or no data."""
    p = np.asarray(p, dtype=np.float64)
    g, known = _gold_index(gold, p.shape[0])
    a = mode_mask(p)
    n_a = a.sum(axis=-1)
    hit = a[np.arange(p.shape[0]), g]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = hit / n_a
    return np.where(known & (n_a > 0), out, np.nan)


def agreement_per_item(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Whether source and target modes coincide: ``|A & B| / |A | B|`` for mode sets A, B
    (1 when the sets are equal, 0 when disjoint; single modes give 1 or 0)."""
    p, q = _check_pair(p, q)
    a, b = mode_mask(p), mode_mask(q)
    n = (a | b).sum(axis=-1)
    ok = (a.sum(axis=-1) > 0) & (b.sum(axis=-1) > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a & b).sum(axis=-1) / n
    return np.where(ok, out, np.nan)


def overall_success_per_item(p: np.ndarray, q: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """ECLeKTic overall success: correct (mode is gold) in both source and target.

    Under ties both languages are resolved by one shared random draw: a random order of
    the answers, each language taking the first of its mode set (the coupling under
    which agreement is ``|A & B| / |A | B|``). Both are gold exactly when gold comes first
    among ``A | B``: ``[g in A & B] / |A | B|``. A target identical to its source is
    correct exactly when the source is (transfer 1), ties included.
    """
    p, q = _check_pair(p, q)
    g, known = _gold_index(gold, p.shape[0])
    a, b = mode_mask(p), mode_mask(q)
    rows = np.arange(p.shape[0])
    n = (a | b).sum(axis=-1)
    ok = known & (a.sum(axis=-1) > 0) & (b.sum(axis=-1) > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a[rows, g] & b[rows, g]) / n
    return np.where(ok, out, np.nan)


def transfer_parts(p: np.ndarray, q: np.ndarray, gold: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Numerator and denominator of the ECLeKTic transfer score, per item.

    Transfer = share of pairs correct in the target among the pairs correct in the
    source = ``sum(both) / sum(source correct)``.
    """
    p, q = _check_pair(p, q)
    src = mode_correct_per_item(p, gold)
    both = overall_success_per_item(p, q, gold)
    return both, np.where(np.isfinite(both), src, np.nan)


def _normalised(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to sum 1 (answer shares), and which rows hold a distribution."""
    ok = _valid(p)
    safe = np.where(ok[:, None], p, 0.0)
    total = np.where(ok, safe.sum(axis=-1), 1.0)
    return safe / total[:, None], ok


def response_agreement_per_item(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """P(one source answer and one independent target answer are the same concept):
    ``sum_j p_j q_j`` over every answer column (an "other" text agrees only with the same
    text, a "no answer" column belongs to one language, so it never agrees). NaN where a
    distribution is missing."""
    p, q = _check_pair(p, q)
    pn, ok_p = _normalised(p)
    qn, ok_q = _normalised(q)
    ok = ok_p & ok_q
    return np.where(ok, (pn * qn).sum(axis=-1), np.nan)


def response_success_per_item(p: np.ndarray, q: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """P(one source answer and one independent target answer are both gold):
    ``p_gold * q_gold``. NaN where gold is unknown or a distribution is missing."""
    p, q = _check_pair(p, q)
    g, known = _gold_index(gold, p.shape[0])
    pn, ok_p = _normalised(p)
    qn, ok_q = _normalised(q)
    rows = np.arange(p.shape[0])
    return np.where(known & ok_p & ok_q, pn[rows, g] * qn[rows, g], np.nan)


def response_transfer_parts(p: np.ndarray, q: np.ndarray, gold: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Numerator ``p_gold * q_gold`` and denominator ``p_gold`` of per-response transfer,
    ``sum(p_gold q_gold) / sum(p_gold)``: the share of answer pairs right in the target
    among those right in the source (pooled over items and targets)."""
    both = response_success_per_item(p, q, gold)
    src = accuracy_per_item(_normalised(np.asarray(p, dtype=np.float64))[0], gold)
    return both, np.where(np.isfinite(both), src, np.nan)


def chi2_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``sum_x (p_x - q_x)^2 / (p_x + q_x)`` over the last axis, terms with ``p+q = 0``
    skipped; any leading shape (used on ensembles of shape (Q, R, K, options) too)."""
    s = p + q
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(s > 0, (p - q) ** 2 / np.where(s > 0, s, 1.0), 0.0)
    return terms.sum(axis=-1)


def chi2_per_item(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Chi-square distance per item, NaN where a distribution is missing. 0 for identical
    distributions, 2 for disjoint ones."""
    p, q = _check_pair(p, q)
    return np.where(_valid(p) & _valid(q), chi2_distance(p, q), np.nan)


def js_per_item(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between source and target answer
    distributions, over all answer columns (candidates and "other" answers, as the run
    holds them; rows are normalised to sum 1). 0 for identical distributions, 1 for
    disjoint ones; NaN where a distribution is missing."""
    p, q = _check_pair(p, q)
    ok = _valid(p) & _valid(q)
    p = np.where(ok[:, None], p, 0.0)
    q = np.where(ok[:, None], q, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / np.where(ok, p.sum(axis=-1), 1.0)[:, None]
        q = q / np.where(ok, q.sum(axis=-1), 1.0)[:, None]
        m = (p + q) / 2

        def kl(a: np.ndarray) -> np.ndarray:
            return np.where(a > 0, a * np.log2(np.where(a > 0, a, 1.0) / np.where(m > 0, m, 1.0)),
                            0.0).sum(axis=-1)

        out = np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0)
    return np.where(ok, out, np.nan)


def mean_embedding(p: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """``sum_j p_j e_j`` over candidates with other answers dropped and the rest
    renormalised.

    ``p`` is ``(..., O)`` with the ``M_max`` candidate columns first, ``emb`` ``(M_max, d)``
    or batched ``(Q, M_max, d)`` matching ``p``'s first axis. Rows with no candidate mass
    are NaN.
    """
    cand = p[..., :emb.shape[-2]]
    mass = cand.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(mass > 0, cand / np.where(mass > 0, mass, 1.0), np.nan)
    if emb.ndim == 2:
        return w @ emb
    return np.einsum("q...m,qmd->q...d", w, emb)


def l2_per_item(p: np.ndarray, q: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """L2 distance between the probability-weighted answer embeddings of p and q.

    ``emb`` is ``(Q, M_max, d)`` (zero rows for padding; an item without embeddings is
    NaN). NaN when either side has no candidate mass.
    """
    p, q = _check_pair(p, q)
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 3 or emb.shape[0] != p.shape[0] or emb.shape[1] > p.shape[1]:
        raise DataError(f"metrics: embeddings have shape {emb.shape}, expected "
                        f"({p.shape[0]}, M_max <= {p.shape[1]}, d)")
    d = mean_embedding(p, emb) - mean_embedding(q, emb)
    return np.sqrt((d ** 2).sum(axis=-1))


def confidence_per_item(p: np.ndarray) -> np.ndarray:
    """Source confidence: the probability of the mode (the mode's share of answers)."""
    p = np.asarray(p, dtype=np.float64)
    return np.where(_valid(p), np.where(_valid(p)[:, None], p, 0.0).max(axis=-1), np.nan)


def confidence_bins(confidence: np.ndarray, agreement: np.ndarray, n_options: int, *,
                    n_bins: int = 5) -> dict[str, Any]:
    """Mean agreement per bin of source confidence.

    The bins split ``[1/M, 1]`` (M = ``n_options``, the typical option count) into
    ``n_bins`` equal parts; a confidence below 1/M (possible with "other" answers or
    more options) falls in the first bin. ``confidence`` and ``agreement`` are per item
    or per (item, pair) (same shape, NaN skipped). Empty bins report agreement null.
    """
    c = np.asarray(confidence, dtype=np.float64).ravel()
    a = np.asarray(agreement, dtype=np.float64).ravel()
    if c.shape != a.shape:
        raise DataError("metrics: confidence and agreement differ in shape")
    ok = np.isfinite(c) & np.isfinite(a)
    c, a = c[ok], a[ok]
    edges = np.linspace(1.0 / max(n_options, 1), 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    total = np.bincount(which, weights=a, minlength=n_bins)
    agree = [float(total[i] / count[i]) if count[i] else None for i in range(n_bins)]
    return {"bins": [[float(edges[i]), float(edges[i + 1])] for i in range(n_bins)],
            "agreement": agree, "count": [int(x) for x in count]}

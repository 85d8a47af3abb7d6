"""Bootstrap over items: percentile confidence intervals and a paired test.

Items (questions) are the unit of resampling everywhere: responses to one item are
correlated, items are (nearly) independent. A resample of Q items is represented by a
vector of multinomial counts (how often each item was drawn), so the mean of any
per-item quantity over all replicates is one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from xlgap.errors import DataError
from xlgap.io import finite


def resample_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` counts: how many times each of ``n`` items is drawn per replicate."""
    if n == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item: sum of its finite values and how many there are (NaN = not observed)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    v = v.reshape(v.shape[0], -1)
    ok = np.isfinite(v)
    return np.where(ok, v, 0.0).sum(axis=1), ok.sum(axis=1).astype(np.float64)


def nan_mean(values: np.ndarray) -> float:
    """Mean of the finite entries (NaN marks a missing item or pair); NaN if none."""
    total, count = _rows(values)
    return float(total.sum() / count.sum()) if count.sum() else float("nan")


def bootstrap_ci(values: np.ndarray, stat: Callable[[np.ndarray], float] | None = None, *,
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
                 ) -> tuple[float, float]:
    """Percentile ``1 - alpha`` interval of a statistic over items resampled with replacement.

    ``values`` has items on its first axis. Without ``stat`` the statistic is the mean of
    the finite entries (rows may hold several pairs per item, e.g. one per target; NaN
    marks what is missing), computed for all replicates at once. With ``stat`` it is
    ``stat(values[idx])`` for each replicate's item indices ``idx``. Returns ``(nan, nan)``
    when there is nothing to resample.
    """
    if not 0 < alpha < 1:
        raise DataError(f"bootstrap: alpha must be in (0, 1), got {alpha}")
    arr = np.asarray(values)
    n = arr.shape[0] if arr.ndim else 0
    rng = np.random.default_rng(seed)
    if stat is None:
        total, count = _rows(arr)
        keep = count > 0
        total, count = total[keep], count[keep]
        if total.size == 0:
            return float("nan"), float("nan")
        w = resample_weights(total.size, n_boot, rng)
        reps = (w @ total) / (w @ count)
    else:
        if n == 0:
            return float("nan"), float("nan")
        reps = np.array([stat(arr[rng.integers(0, n, n)]) for _ in range(n_boot)])
        reps = reps[np.isfinite(reps)]
        if reps.size == 0:
            return float("nan"), float("nan")
    lo, hi = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def ratio_ci(num: np.ndarray, den: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
             alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of ``sum(num) / sum(den)`` with items resampled (vectorised).

    ``num`` and ``den`` have items on the first axis (NaN entries are dropped from both).
    Replicates whose denominator is 0 are skipped.
    """
    n_tot, _ = _rows(np.where(np.isfinite(den), num, np.nan))
    d_tot, _ = _rows(np.where(np.isfinite(num), den, np.nan))
    if n_tot.size == 0:
        return float("nan"), float("nan")
    w = resample_weights(n_tot.size, n_boot, np.random.default_rng(seed))
    top, bottom = w @ n_tot, w @ d_tot
    ok = bottom > 0
    if not ok.any():
        return float("nan"), float("nan")
    lo, hi = np.percentile(top[ok] / bottom[ok], [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def summary(estimate: float, ci: tuple[float, float], n: int | None = None
            ) -> dict[str, Any]:
    """``{"estimate": x, "ci": [lo, hi]}`` with NaN written as null (valid JSON)."""
    out: dict[str, Any] = {"estimate": finite(estimate),
                           "ci": [finite(ci[0]), finite(ci[1])]}
    if n is not None:
        out["n"] = int(n)
    return out


def pooled_ratio(num: np.ndarray, den: np.ndarray) -> float:
    """``sum(num) / sum(den)`` over the entries where both are finite (NaN when that
    denominator is 0): a pooled rate such as transfer."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    ok = np.isfinite(num) & np.isfinite(den)
    total = float(den[ok].sum())
    return float(num[ok].sum()) / total if total > 0 else float("nan")


def ratio_with_ci(num: np.ndarray, den: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                  alpha: float = 0.05) -> dict[str, Any]:
    """:func:`summary` of :func:`pooled_ratio` and its :func:`ratio_ci`; ``n`` counts the
    entries with both parts."""
    n = int((np.isfinite(np.asarray(num, dtype=np.float64))
             & np.isfinite(np.asarray(den, dtype=np.float64))).sum())
    return summary(pooled_ratio(num, den),
                   ratio_ci(num, den, n_boot=n_boot, seed=seed, alpha=alpha), n)


def mean_with_ci(values: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> dict[str, Any]:
    """:func:`summary` of the NaN-aware mean of per-item values and its bootstrap CI."""
    _, count = _rows(np.asarray(values))
    return summary(nan_mean(values), bootstrap_ci(values, n_boot=n_boot, seed=seed,
                                                  alpha=alpha), int(count.sum()))


def paired_bootstrap_pvalue(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000,
                            seed: int = 0) -> float:
    """Two-sided bootstrap p-value for ``mean(a) == mean(b)`` with paired per-item values.

    Method: d = a - b per item (items where either is NaN are dropped); draw ``n_boot``
    resamples of the items; p = 2 * min(share of replicate means of d that are <= 0,
    share that are >= 0), each share counted as ``(1 + hits) / (1 + n_boot)`` so that
    p is never 0, and capped at 1. This is the p-value at which the percentile interval
    of the mean difference starts to contain 0. All-zero differences give p = 1.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise DataError(f"paired bootstrap: shapes differ ({a.shape} vs {b.shape})")
    d = a - b
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    w = resample_weights(d.size, n_boot, np.random.default_rng(seed))
    means = (w @ d) / d.size
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    below = (1 + np.sum(means <= tol)) / (1 + n_boot)
    above = (1 + np.sum(means >= -tol)) / (1 + n_boot)
    return float(min(1.0, 2 * min(below, above)))


def paired_ratio_pvalue(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray,
                        den_b: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value for ``sum(num_a)/sum(den_a) == sum(num_b)/sum(den_b)``.

    The test of a pooled ratio (such as ECLeKTic transfer) as the table reports it: items
    are resampled once per replicate for both A and B (the pairing), each ratio is
    recomputed on the replicate, and p = 2 * min(share of differences <= 0, share >= 0),
    each share counted as ``(1 + hits) / (1 + n_boot)``, capped at 1. Arrays have items on
    the first axis (several pairs per item allowed); NaN entries count as absent.
    Replicates where either denominator is 0 are skipped.
    """
    parts = []
    for num, den in ((num_a, den_a), (num_b, den_b)):
        n_tot, _ = _rows(np.where(np.isfinite(den), num, np.nan))
        d_tot, _ = _rows(np.where(np.isfinite(num), den, np.nan))
        parts.append((n_tot, d_tot))
    (na, da), (nb, db) = parts
    if na.shape != nb.shape:
        raise DataError(f"paired ratio test: item counts differ ({na.shape} vs {nb.shape})")
    if na.size == 0:
        return float("nan")
    w = resample_weights(na.size, n_boot, np.random.default_rng(seed))
    ta, ba, tb, bb = w @ na, w @ da, w @ nb, w @ db
    ok = (ba > 0) & (bb > 0)
    if not ok.any():
        return float("nan")
    diff = ta[ok] / ba[ok] - tb[ok] / bb[ok]
    tol = 1e-12
    n = int(ok.sum())
    below = (1 + np.sum(diff <= tol)) / (1 + n)
    above = (1 + np.sum(diff >= -tol)) / (1 + n)
    return float(min(1.0, 2 * min(below, above)))

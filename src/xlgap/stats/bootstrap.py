"""Bootstrap over items: percentile intervals, paired tests and shuffled chance levels.

The one bootstrap of xlgap; every analysis (diagnosis, interventions, steering,
fine-tuning, the representation read-outs) resamples through it, so all intervals mean
the same thing:

* **Items are the unit.** Responses to one item are correlated, items are (nearly)
  independent. A replicate draws the n items with replacement and is stored as counts,
  ``(n_boot, n)``: how often each item was drawn. The *same draw* serves every language,
  target, layer and arm of a comparison, so translations stay paired and figures are
  compared on the same resamples.
* **One RNG convention.** The item counts of seed ``s`` are always
  ``np.random.default_rng(s).multinomial(n, [1/n] * n, size=n_boot)``
  (:func:`item_counts`): two statistics over the same n items with the same seed see the
  same replicates. Other random draws take their own stream ``default_rng((s, k))``
  (shuffles: ``k = SHUFFLE_STREAM``), independent of the item draws.
* **One default.** :data:`DEFAULT_N_BOOT` resamples: the 2.5% and 97.5% points then sit
  at about the 25th smallest and largest replicate, whose Monte-Carlo wobble is about 2%
  of the interval's width, and the smallest two-sided p-value is 2/1001.
* **One rule for missing pairs.** NaN marks an (item, language) pair that is missing.
  An estimate uses the finite entries; an item (row) with no finite entry at all is
  dropped from the estimate *and* from the resampling pool, in means, pooled ratios and
  paired tests alike, so every interval resamples the items that carry data. A paired
  test compares the two arms on the entries finite in *both*, so that a difference is
  never one of which entries each arm counts.
* **Recomputed, not averaged.** Each replicate recomputes the statistic the estimate
  reports: a mean over (item, target) entries is the pooled ratio ``sum(values) /
  count(finite)``, a rate such as transfer ``sum(num) / sum(den)``. The interval is the
  ``alpha/2`` and ``1 - alpha/2`` percentiles of the finite replicates (replicates where
  a statistic is undefined, e.g. a zero denominator, are left out).
* **Paired tests** recompute both arms' statistics on each joint replicate and return
  one shape, ``{"estimate" (a - b), "ci", "p", "p_floor", "n", "a", "b"}``; p is
  ``2 * min(share of differences <= 0, share >= 0)``, each share counted as
  ``(1 + hits) / (1 + n)`` so that p is never 0, capped at 1. Its floor ``2 / (n + 1)``
  (n = replicates used) is stored as ``p_floor``: a p at the floor means "p < floor", and
  is printed so (or the bootstrap grows).
* **Chance** (representations) is a statistic after the rows of the second language are
  shuffled (:func:`shuffles`), a mean over a few shuffles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xlgap.errors import ConfigError, DataError
from xlgap.io import finite

__all__ = [
    "ALPHA",
    "DEFAULT_N_BOOT",
    "DEFAULT_N_SHUFFLES",
    "SHUFFLE_STREAM",
    "bootstrap_ci",
    "figure",
    "item_counts",
    "mean_with_ci",
    "nan_mean",
    "nan_mean_rows",
    "paired_bootstrap_pvalue",
    "paired_ratio_pvalue",
    "paired_ratio_test",
    "percentile_ci",
    "pooled_ratio",
    "ratio_ci",
    "ratio_replicates",
    "ratio_with_ci",
    "resample_weights",
    "shuffles",
    "summary",
    "weighted_mean",
]

DEFAULT_N_BOOT = 1000
#: a mean over 5 shuffles: the spread between shuffles is far below the gap to aligned data
DEFAULT_N_SHUFFLES = 5
ALPHA = 0.05
SHUFFLE_STREAM = 2  # default_rng((seed, SHUFFLE_STREAM)) draws the shuffles


# -- draws -------------------------------------------------------------------------------


def resample_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` counts: how many times each of ``n`` items is drawn per replicate."""
    if n == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _check(n: int, count: int, what: str) -> None:
    if n < 1:
        raise ConfigError(f"{what}: need at least one item, got {n}")
    if count < 0:
        raise ConfigError(f"{what}: the number of draws must be >= 0, got {count}")


def item_counts(n: int, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` float64 counts of the item bootstrap of ``seed`` (the one
    convention: ``default_rng(seed)``, see the module docstring)."""
    _check(n, n_boot, "item_counts")
    return resample_weights(n, n_boot, np.random.default_rng(seed))


def shuffles(n: int, n_shuffles: int = DEFAULT_N_SHUFFLES, seed: int = 0) -> np.ndarray:
    """``(n_shuffles, n)`` random permutations of the items (row i of B goes to pi(i))."""
    _check(n, n_shuffles, "shuffles")
    rng = np.random.default_rng((seed, SHUFFLE_STREAM))
    return np.array([rng.permutation(n) for _ in range(n_shuffles)], dtype=np.int64
                    ).reshape(n_shuffles, n)


# -- per-item reductions -----------------------------------------------------------------


def _rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item: sum of its finite values and how many there are (NaN = not observed)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    v = v.reshape(v.shape[0], -1)
    ok = np.isfinite(v)
    return np.where(ok, v, 0.0).sum(axis=1), ok.sum(axis=1).astype(np.float64)


def _ratio_rows(num: np.ndarray, den: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item: sums of ``num`` and ``den`` over the entries where both are finite, and
    how many such entries it has (0: the item carries no data)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    if num.shape != den.shape:
        raise DataError(f"bootstrap: numerator and denominator differ in shape "
                        f"({num.shape} vs {den.shape})")
    both = np.isfinite(num) & np.isfinite(den)
    top, count = _rows(np.where(both, num, np.nan))
    bottom, _ = _rows(np.where(both, den, np.nan))
    return top, bottom, count


def nan_mean(values: np.ndarray) -> float:
    """Mean of the finite entries (NaN marks a missing item or pair); NaN if none."""
    total, count = _rows(values)
    return float(total.sum() / count.sum()) if count.sum() else float("nan")


def nan_mean_rows(stack: np.ndarray) -> np.ndarray:
    """Mean over the first axis ignoring NaN (NaN where a column has no finite value)."""
    arr = np.asarray(stack, dtype=np.float64)
    ok = np.isfinite(arr)
    total = np.where(ok, arr, 0.0).sum(axis=0)
    count = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def weighted_mean(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per replicate, the mean of per-item ``values`` over the drawn items (NaN = skipped).

    This *is* the recomputed metric for any metric that is a mean over items (a
    duplicated item simply counts twice). NaN where a replicate drew no defined item.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    num = counts @ np.where(ok, v, 0.0)
    den = counts @ ok.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def pooled_ratio(num: np.ndarray, den: np.ndarray) -> float:
    """``sum(num) / sum(den)`` over the entries where both are finite (NaN when that
    denominator is 0): a pooled rate such as transfer."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    ok = np.isfinite(num) & np.isfinite(den)
    total = float(den[ok].sum())
    return float(num[ok].sum()) / total if total > 0 else float("nan")


# -- intervals ---------------------------------------------------------------------------


def percentile_ci(replicates: np.ndarray | Sequence[float], alpha: float = ALPHA
                  ) -> tuple[float, float]:
    """Percentile ``1 - alpha`` interval of the finite replicates; ``(nan, nan)`` if none."""
    if not 0 < alpha < 1:
        raise DataError(f"bootstrap: alpha must be in (0, 1), got {alpha}")
    reps = np.asarray(replicates, dtype=np.float64).ravel()
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def ratio_replicates(num: np.ndarray, den: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT,
                     seed: int = 0) -> np.ndarray:
    """``sum(num) / sum(den)`` on each item replicate (NaN where the denominator is 0);
    items with no finite pair are left out of the pool. Empty when no item has data."""
    top, bottom, count = _ratio_rows(num, den)
    keep = count > 0
    top, bottom = top[keep], bottom[keep]
    if top.size == 0:
        return np.zeros(0)
    w = item_counts(top.size, n_boot, seed)
    t, b = w @ top, w @ bottom
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, t / np.where(b > 0, b, 1.0), np.nan)


def ratio_ci(num: np.ndarray, den: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT,
             seed: int = 0, alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile interval of ``sum(num) / sum(den)`` with items resampled (vectorised).

    ``num`` and ``den`` have items on the first axis (several pairs per item allowed);
    entries where either is NaN are dropped from both, items left with none from the pool.
    Replicates whose denominator is 0 are skipped.
    """
    return percentile_ci(ratio_replicates(num, den, n_boot=n_boot, seed=seed), alpha)


def _mean_parts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A mean over finite entries as a pooled ratio: ``sum(values) / count(finite)``."""
    v = np.asarray(values, dtype=np.float64)
    return v, np.where(np.isfinite(v), 1.0, np.nan)


def bootstrap_ci(values: np.ndarray, stat: Callable[[np.ndarray], float] | None = None, *,
                 n_boot: int = DEFAULT_N_BOOT, seed: int = 0, alpha: float = ALPHA
                 ) -> tuple[float, float]:
    """Percentile ``1 - alpha`` interval of a statistic over items resampled with replacement.

    ``values`` has items on its first axis. Without ``stat`` the statistic is the mean of
    the finite entries (rows may hold several pairs per item, e.g. one per target; NaN
    marks what is missing; rows with none are dropped), computed for all replicates at
    once. With ``stat`` it is ``stat(values[idx])`` for each replicate's item indices
    ``idx``. Returns ``(nan, nan)`` when there is nothing to resample.
    """
    if not 0 < alpha < 1:
        raise DataError(f"bootstrap: alpha must be in (0, 1), got {alpha}")
    if stat is None:
        return ratio_ci(*_mean_parts(values), n_boot=n_boot, seed=seed, alpha=alpha)
    arr = np.asarray(values)
    n = arr.shape[0] if arr.ndim else 0
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    reps = np.array([stat(arr[rng.integers(0, n, n)]) for _ in range(n_boot)])
    return percentile_ci(reps, alpha)


def summary(estimate: float, ci: tuple[float, float], n: int | None = None
            ) -> dict[str, Any]:
    """``{"estimate": x, "ci": [lo, hi]}`` with NaN written as null (valid JSON)."""
    out: dict[str, Any] = {"estimate": finite(estimate),
                           "ci": [finite(ci[0]), finite(ci[1])]}
    if n is not None:
        out["n"] = int(n)
    return out


def figure(estimate: float | None, replicates: np.ndarray | None = None,
           chance: float | None = None, alpha: float = ALPHA) -> dict[str, Any]:
    """``{"estimate", "ci", "chance"}``; ``ci`` is null without replicates, NaN is null."""
    ci = None if replicates is None else list(percentile_ci(replicates, alpha))
    return finite({"estimate": estimate, "ci": ci, "chance": chance})


def ratio_with_ci(num: np.ndarray, den: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT,
                  seed: int = 0, alpha: float = ALPHA) -> dict[str, Any]:
    """:func:`summary` of :func:`pooled_ratio` and its :func:`ratio_ci`; ``n`` counts the
    entries with both parts."""
    _, _, count = _ratio_rows(num, den)
    return summary(pooled_ratio(num, den),
                   ratio_ci(num, den, n_boot=n_boot, seed=seed, alpha=alpha), int(count.sum()))


def mean_with_ci(values: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                 alpha: float = ALPHA) -> dict[str, Any]:
    """:func:`summary` of the NaN-aware mean of per-item values and its bootstrap CI."""
    return ratio_with_ci(*_mean_parts(values), n_boot=n_boot, seed=seed, alpha=alpha)


# -- paired tests ------------------------------------------------------------------------


def two_sided_p(diff: np.ndarray) -> tuple[float, float]:
    """p and its floor from replicate differences (see the module docstring)."""
    n = diff.size
    tol = 1e-12 * max(1.0, float(np.abs(diff).max())) if n else 0.0
    below = (1 + np.sum(diff <= tol)) / (1 + n)
    above = (1 + np.sum(diff >= -tol)) / (1 + n)
    return float(min(1.0, 2 * min(below, above))), 2.0 / (n + 1)


def paired_ratio_test(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray,
                      den_b: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                      alpha: float = ALPHA) -> dict[str, Any]:
    """Paired item bootstrap of ``sum(num_a)/sum(den_a) - sum(num_b)/sum(den_b)``.

    A and B are two arms on the same items (items on the first axis, several pairs per
    item allowed, NaN = absent). Both arms are first masked to the entries finite in
    *both* (all four parts): where their missing entries differ, pooling each arm over
    its own entries would count other entries in each and report that as a difference.
    Items left with no shared entry are dropped; the rest are resampled once per
    replicate for both arms (the pairing) and both pooled ratios recomputed, so the test
    is on the statistic ``a`` and ``b`` report. Replicates where either denominator is 0
    are skipped. Returns the one shape of a paired test, ``{"estimate" (a - b), "ci" (of
    the difference), "p", "p_floor", "n" (items used), "a", "b"}`` (``a``, ``b``: each
    arm's pooled ratio on the shared entries; NaN as null; p null below 2 items).
    """
    shapes = {np.shape(x) for x in (num_a, den_a, num_b, den_b)}
    if len(shapes) != 1:
        raise DataError(f"paired test: the arms' parts differ in shape ({sorted(shapes)}); "
                        "they must hold the same items and pairs")
    arrays = [np.asarray(x, dtype=np.float64) for x in (num_a, den_a, num_b, den_b)]
    shared = np.logical_and.reduce([np.isfinite(x) for x in arrays])
    num_a, den_a, num_b, den_b = (np.where(shared, x, np.nan) for x in arrays)
    ta, ba, ca = _ratio_rows(num_a, den_a)
    tb, bb, _ = _ratio_rows(num_b, den_b)
    a, b = pooled_ratio(num_a, den_a), pooled_ratio(num_b, den_b)
    keep = ca > 0
    out: dict[str, Any] = {"estimate": finite(a - b), "ci": [None, None], "p": None,
                           "p_floor": None, "n": int(keep.sum()), "a": finite(a),
                           "b": finite(b)}
    if keep.sum() < 2:
        return out
    w = item_counts(int(keep.sum()), n_boot, seed)
    top_a, bot_a, top_b, bot_b = (w @ x[keep] for x in (ta, ba, tb, bb))
    ok = (bot_a > 0) & (bot_b > 0)
    if not ok.any():
        return out
    diff = top_a[ok] / bot_a[ok] - top_b[ok] / bot_b[ok]
    p, floor = two_sided_p(diff)
    out.update(ci=[finite(x) for x in percentile_ci(diff, alpha)], p=p, p_floor=floor)
    return out


def paired_ratio_pvalue(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray,
                        den_b: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
                        ) -> float:
    """p of :func:`paired_ratio_test` (NaN when there is nothing to test)."""
    p = paired_ratio_test(num_a, den_a, num_b, den_b, n_boot=n_boot, seed=seed)["p"]
    return float("nan") if p is None else float(p)


def paired_bootstrap_pvalue(a: np.ndarray, b: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT,
                            seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value for ``mean(a) == mean(b)`` with per-item values.

    The means over the entries finite in both arms are compared, items resampled
    jointly; see :func:`paired_ratio_test`. All-zero differences give p = 1.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"paired bootstrap: shapes differ ({a.shape} vs {b.shape})")
    return paired_ratio_pvalue(*_mean_parts(a), *_mean_parts(b), n_boot=n_boot, seed=seed)

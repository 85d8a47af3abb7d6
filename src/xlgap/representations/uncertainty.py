"""Bootstrap intervals over items and shuffled-pairing chance baselines.

Shared by every representation metric, so they all mean the same thing:

* **Items are the unit.** A bootstrap replicate draws the n items (parallel sentences or
  questions) with replacement, and the *same draw is used in every language*, every
  language pair and every layer: translations stay paired, and figures of different
  layers or pairs are compared on the same resamples. A replicate is stored as counts,
  ``(n_boot, n)``: how often each item was drawn.
* **Recomputed, not averaged.** Each metric is recomputed on the replicate (its own
  module says how a metric treats an item drawn twice); the interval is the 2.5 and 97.5
  percentiles of the replicates (a 95% percentile interval). Replicates where a metric is
  undefined (NaN) are left out.
* **Chance** is the same metric after the rows of the second language are shuffled: item
  i of language A is paired with item pi(i) of language B for a random permutation pi,
  so whatever a metric gives without any translation correspondence shows. It is the
  mean over a few shuffles. (ILO ignores the pairing, so its chance level permutes
  language labels instead; see :func:`xlgap.representations.ilo.ilo_uncertainty`.)

Each figure is reported as ``{"estimate": x, "ci": [lo, hi], "chance": c}`` (NaN and
missing values as null).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xlgap.errors import ConfigError
from xlgap.io import finite

__all__ = [
    "ALPHA",
    "DEFAULT_N_BOOT",
    "DEFAULT_N_SHUFFLES",
    "figure",
    "item_counts",
    "percentile_ci",
    "shuffles",
    "weighted_mean",
]

#: 200 resamples put the 2.5% and 97.5% points at about the 5th smallest and largest
#: replicate; their Monte-Carlo wobble is about 5% of the interval's width (about 2% with
#: 1000), which is enough for a figure, and keeps the debiased CKA, whose replicates cost
#: O(n_boot n^2) per language pair and layer, affordable on every layer.
DEFAULT_N_BOOT = 200
#: a mean over 5 shuffles: the spread between shuffles is far below the gap to aligned data
DEFAULT_N_SHUFFLES = 5
ALPHA = 0.05


def _check(n: int, count: int, what: str) -> None:
    if n < 1:
        raise ConfigError(f"{what}: need at least one item, got {n}")
    if count < 0:
        raise ConfigError(f"{what}: the number of draws must be >= 0, got {count}")


def item_counts(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` float64 counts: how often each of ``n`` items is drawn per replicate."""
    _check(n, n_boot, "item_counts")
    rng = np.random.default_rng((seed, 1))  # its own stream: independent of the shuffles
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def shuffles(n: int, n_shuffles: int, seed: int = 0) -> np.ndarray:
    """``(n_shuffles, n)`` random permutations of the items (row i of B goes to pi(i))."""
    _check(n, n_shuffles, "shuffles")
    rng = np.random.default_rng((seed, 2))
    return np.array([rng.permutation(n) for _ in range(n_shuffles)], dtype=np.int64
                    ).reshape(n_shuffles, n)


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


def percentile_ci(replicates: np.ndarray | Sequence[float], alpha: float = ALPHA
                  ) -> tuple[float, float]:
    """Percentile ``1 - alpha`` interval of the finite replicates; ``(nan, nan)`` if none."""
    reps = np.asarray(replicates, dtype=np.float64).ravel()
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def figure(estimate: float | None, replicates: np.ndarray | None = None,
           chance: float | None = None, alpha: float = ALPHA) -> dict[str, Any]:
    """``{"estimate", "ci", "chance"}``; ``ci`` is null without replicates, NaN is null."""
    ci = None if replicates is None else list(percentile_ci(replicates, alpha))
    return finite({"estimate": estimate, "ci": ci, "chance": chance})


def nan_mean_rows(stack: np.ndarray) -> np.ndarray:
    """Mean over the first axis ignoring NaN (NaN where a column has no finite value)."""
    arr = np.asarray(stack, dtype=np.float64)
    ok = np.isfinite(arr)
    total = np.where(ok, arr, 0.0).sum(axis=0)
    count = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

"""The mismatch heuristic for pi, the variance share of the cross-lingual gap.

``pi_mismatch = 1 - mean over items of |p_i - q_i|`` where the source mode ``i`` differs
from the target mode (0 where they agree); see :mod:`xlgap.stats.pi` for the model it
approximates and for the maximum-likelihood fit. It reads the distribution over answer
*concepts*, so it only means something over candidates: with free-text "other" answers
every distinct text is its own column, the source mode's share is small and the
"mismatch" small whatever the target does. It is therefore computed over the candidate
columns renormalised (``n_candidates``), and the diagnosis leaves it null on open items
and when most answers name no candidate.
"""

from __future__ import annotations

import numpy as np

from xlgap.errors import DataError
from xlgap.stats.metrics import mode_mask

__all__ = ["candidate_distribution", "mismatch_per_item", "pi_mismatch"]


def candidate_distribution(p: np.ndarray, n_candidates: int) -> np.ndarray:
    """The first ``n_candidates`` columns renormalised to sum 1 (NaN rows where no mass
    falls on a candidate)."""
    cand = np.asarray(p, dtype=np.float64)[:, :n_candidates]
    mass = cand.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, cand / np.where(mass > 0, mass, 1.0), np.nan)


def mismatch_per_item(p: np.ndarray, q: np.ndarray, n_candidates: int | None = None
                      ) -> np.ndarray:
    """Per item: 0 where source and target modes agree, else ``|p_i - q_i|`` (i = source mode).

    With ``n_candidates`` (a run's ``M_max``), only the candidate columns count, each row
    renormalised over them (NaN where a side names no candidate). Ties are averaged over:
    with mode sets A (source) and B (target) the value is the mean over ``a in A, b in B``
    of ``[a != b] * |p_a - q_a|``, i.e. the expectation under a random tie-break.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise DataError(f"pi_mismatch: need two (Q, O) arrays of one shape, got {p.shape} "
                        f"and {q.shape}")
    if n_candidates is not None:
        p, q = candidate_distribution(p, n_candidates), candidate_distribution(q, n_candidates)
    a, b = mode_mask(p), mode_mask(q)
    n_a, n_b = a.sum(axis=-1), b.sum(axis=-1)
    # for each source mode a: how many target modes differ from it
    differ = n_b[:, None] - b
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.nansum(a * np.abs(p - q) * differ, axis=-1) / (n_a * n_b)
    return np.where(n_a * n_b > 0, out, np.nan)


def pi_mismatch(p: np.ndarray, q: np.ndarray, n_candidates: int | None = None) -> float:
    """The mismatch estimate ``1 - mean mismatch`` (rows with NaN are skipped)."""
    vals = mismatch_per_item(p, q, n_candidates)
    vals = vals[np.isfinite(vals)]
    return float(1.0 - vals.mean()) if vals.size else float("nan")

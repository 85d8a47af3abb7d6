"""Holm's adjustment against a step-down written out by hand."""

from __future__ import annotations

import numpy as np

from xlgap.stats.multiple import adjust_holm, adjust_holm_map


def _holm_by_hand(p: list[float]) -> list[float]:
    order = np.argsort(p)
    m = len(p)
    out = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


def test_holm_matches_the_step_down_by_hand() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = list(rng.uniform(0, 0.2, size=int(rng.integers(1, 9))))
        assert np.allclose(adjust_holm(p), _holm_by_hand(p))


def test_missing_tests_are_not_counted_in_the_family() -> None:
    assert adjust_holm([0.01, None, float("nan"), 0.04]) == [0.02, None, None, 0.04]
    named = adjust_holm_map({"tren-1": 0.01, "tea": 0.03, "vote-5": None})
    assert named == {"tren-1": 0.02, "tea": 0.03, "vote-5": None}


def test_an_adjusted_p_is_never_below_the_raw_one() -> None:
    p = [0.001, 0.2, 0.03, 0.5]
    assert all(a >= r for a, r in zip(adjust_holm(p), p, strict=True))

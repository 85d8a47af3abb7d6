"""Several tests at once: the one adjustment xlgap applies when a best is picked.

Where a sweep (steering's layers x alphas) or a list of strategies picks the best of k
compared arms, its unadjusted p is optimistic (the winner's curse). Every such headline
carries Holm's step-down adjustment over the family it was picked from, labelled
``p_holm``; "significant" is only ever said of an adjusted p. Holm controls the
family-wise error rate at alpha under any dependence between the tests, which matters
here: all arms are tested on the same item resamples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["HOLM_LABEL", "adjust_holm", "adjust_holm_map"]

HOLM_LABEL = "Holm-adjusted over {k} tests"


def adjust_holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input's order; None or NaN entries stay None.

    The family is the finite entries only: a test that could not be run is not counted.
    """
    from statsmodels.stats.multitest import multipletests

    values = np.array([np.nan if p is None else float(p) for p in pvalues], dtype=float)
    finite = np.isfinite(values)
    out: list[float | None] = [None] * len(values)
    if finite.any():
        adjusted = multipletests(values[finite], method="holm")[1]
        for index, p in zip(np.flatnonzero(finite), adjusted, strict=True):
            out[int(index)] = float(p)
    return out


def adjust_holm_map(pvalues: Mapping[str, float | None]) -> dict[str, float | None]:
    """:func:`adjust_holm` over a named family (arm name -> p)."""
    names = list(pvalues)
    return dict(zip(names, adjust_holm([pvalues[n] for n in names]), strict=True))

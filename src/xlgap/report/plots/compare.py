"""Figures that compare results, drawn only for the report (no command writes them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xlgap.report.plots.figures import new_figure

__all__ = ["draw_ensembling_curves"]


def draw_ensembling_curves(curves: Sequence[tuple[str, Sequence[float], Sequence[Any]]]
                           ) -> Any:
    """Overall source-target chi-square against ensemble size, one line per run:
    ``curves`` holds ``(label, k, chi2)``; a missing value (None) leaves a gap."""
    import numpy as np

    fig = new_figure(6.4, 3.8, dpi=110, layout="constrained")
    ax = fig.subplots()
    for label, ks, ys in curves:
        ax.plot(list(ks), np.array([np.nan if y is None else y for y in ys], dtype=float),
                marker="o", ms=3, label=label)
    ax.set_xlabel("ensemble size k (answers pooled per language)")
    ax.set_ylabel("chi-square distance")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Ensembling curves side by side (overall chi-square)")
    return fig

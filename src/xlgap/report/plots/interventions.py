"""The intervention comparison as a figure: per-response and ensembled transfer and
per-response overall success per strategy.

Input is the JSON-serialisable result of :func:`xlgap.interventions.evaluate.compare_runs`,
so the figure can be redrawn from a saved ``interventions.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xlgap.report.plots.figures import new_figure, save_figure

__all__ = ["draw_interventions", "plot_interventions"]


def draw_interventions(result: Mapping[str, Any]) -> Any:
    """Bar chart: per-response transfer, ensembled transfer and per-response overall
    success per strategy, with 95% CI error bars."""
    names = list(result["strategies"])
    fig = new_figure(max(5.0, 1.1 * len(names) + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.27
    first = next(iter(result["strategies"].values()), {}) if names else {}
    bars = (((-width, "response_transfer", "per-response transfer"),
             (0.0, "transfer", "ensembled transfer (modes)"),
             (width, "response_success", "per-response overall success"))
            if first.get("response_transfer") is not None else  # files older than them
            ((-width / 2, "transfer", "transfer"),
             (width / 2, "overall_success", "overall success")))
    for offset, key, label in bars:
        est, lo_err, hi_err = [], [], []
        for name in names:
            stat = result["strategies"][name].get(key) or {}
            e = stat.get("estimate")
            e = math.nan if e is None else 100 * e
            lo, hi = (stat.get("ci") or [None, None])[:2]
            est.append(e)
            lo_err.append(0.0 if lo is None or math.isnan(e) else max(0.0, e - 100 * lo))
            hi_err.append(0.0 if hi is None or math.isnan(e) else max(0.0, 100 * hi - e))
        xs = [i + offset for i in range(len(names))]
        ax.bar(xs, est, width, yerr=[lo_err, hi_err], capsize=3, label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title(f"{result['source']} -> {', '.join(result['targets'])} "
                 f"({result['n_items']} items)")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def plot_interventions(result: Mapping[str, Any], path: str | Path) -> Path:
    """Bar chart: transfer and overall success per strategy, with 95% CI error bars."""
    return save_figure(draw_interventions(result), path, dpi=120)

"""The figure of a plan (see ``docs/planning.md``): CI half-width against items, one
panel per planned quantity, pooled and per target, with the half-width asked for.

The points are the subsampled half-widths the plan read its numbers off (the band: their
10th-90th percentiles over draws); the dotted line is the ``c / sqrt(n)`` curve fitted
to them, which the plan uses only beyond the largest size drawn.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.report.plots.figures import new_figure, save_figure

PLOT_FILE = "plan.png"


def _values(xs: list[float | None]) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in xs], dtype=float)


def _curve(ax: Any, curve: dict[str, Any], label: str, pooled: bool) -> None:
    n = np.asarray(curve["n"], dtype=float)
    hw = _values(curve["halfwidth"])
    style = {"color": "black", "linewidth": 2.2} if pooled else {"linewidth": 1.0}
    (line,) = ax.plot(n, hw, marker="o", markersize=3, label=label, **style)
    if pooled:
        ax.fill_between(n, _values(curve["low"]), _values(curve["high"]), color="grey",
                        alpha=0.25, linewidth=0)
        ok = np.isfinite(hw) & (hw > 0)
        if ok.any():
            c = float(np.exp(np.mean(np.log(hw[ok]) + 0.5 * np.log(n[ok]))))
            grid = np.geomspace(n.min(), n.max() * 4, 50)
            ax.plot(grid, c / np.sqrt(grid), linestyle=":", color=line.get_color(),
                    linewidth=1.0)


def draw_plan(plan: dict[str, Any]) -> Any | None:
    """The half-width curves of every quantity that has one (None when none has)."""
    names = [n for n, e in plan["metrics"].items() if e.get("curve")]
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = new_figure(4.2 * cols, 3.2 * rows, dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    asked = plan.get("asked", {})
    for ax, name in zip(axes, names, strict=False):
        entry = plan["metrics"][name]
        for t, sub in (entry.get("per_target") or {}).items():
            if sub.get("curve"):
                _curve(ax, sub["curve"], t, pooled=False)
        _curve(ax, entry["curve"], "pooled", pooled=True)
        for key, style in (("for_ci", "--"), ("for_effect", "-.")):
            goal = entry.get(key)
            if goal:
                ax.axhline(goal["halfwidth"], color="tab:red", linestyle=style,
                           linewidth=1.0)
                if goal.get("items_needed"):
                    ax.axvline(goal["items_needed"], color="tab:red", linestyle=style,
                               linewidth=0.8, alpha=0.6)
        ax.axvline(entry["curve"]["n_pilot"], color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(entry.get("label", name), fontsize=9)
        ax.set_xlabel("items")
        ax.set_ylabel("CI half-width")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    what = ", ".join(f"{k} {v}" for k, v in asked.items() if v is not None and k != "alpha")
    fig.suptitle(f"CI half-width against items (pilot: {plan['pilot_items']} items; "
                 f"{what}; grey line: pilot size)", fontsize=10)
    return fig


def write_plan_plot(plan: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path | None:
    fig = draw_plan(plan)
    return None if fig is None else save_figure(fig, Path(out_dir) / PLOT_FILE)

"""Figures of ``xlgap steer`` (``steering.json``): the dev sweep, no steering against the
best setting on test, and ILO and parallel cosine by layer with and without steering.

Moved here from :mod:`xlgap.interventions.steering` (presentation belongs to the report);
the ``plot_*`` names write a file, the ``draw_*`` names return the figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.report.plots.figures import new_figure, save_figure

__all__ = ["METRIC_LABELS", "draw_before_after", "draw_inside", "draw_sweep",
           "plot_before_after", "plot_inside", "plot_sweep"]


METRIC_LABELS = {"accuracy": "target accuracy P(gold)", "agreement": "agreement with source",
                 "transfer": "transfer", "rankc": "RankC with source"}


def draw_sweep(result: Mapping[str, Any]) -> Any:
    """Heatmap per direction: layer settings x alpha, the dev selection metric minus no
    steering (blue better, red worse), values written in the cells."""
    metric = result["select"]
    base = result["baseline"]["dev"][metric]
    rows = result["sweep"]
    directions = list(dict.fromkeys(r["direction"] for r in rows))
    layer_labels = list(dict.fromkeys("+".join(map(str, r["layers"])) for r in rows))
    alphas = sorted({float(r["alpha"]) for r in rows})
    grids = []
    for d in directions:
        grid = np.full((len(layer_labels), len(alphas)), np.nan)
        for r in rows:
            if r["direction"] == d and r["dev"][metric] is not None:
                grid[layer_labels.index("+".join(map(str, r["layers"]))),
                     alphas.index(float(r["alpha"]))] = r["dev"][metric] - base
        grids.append(grid)
    span = max([float(np.nanmax(np.abs(g))) for g in grids if np.isfinite(g).any()] + [1e-6])
    fig = new_figure(1.5 + 1.2 * len(alphas) * len(directions), 1.2 + 0.45 * len(layer_labels))
    axes = np.atleast_1d(fig.subplots(1, len(directions), squeeze=False)[0])
    image = None
    for ax, d, grid in zip(axes, directions, grids, strict=True):
        image = ax.imshow(grid, cmap="RdBu", vmin=-span, vmax=span, aspect="auto")
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_yticks(range(len(layer_labels)), layer_labels)
        ax.set_xlabel("alpha")
        ax.set_ylabel("layers")
        ax.set_title(f"toward {d}")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8,
                     label=f"dev {METRIC_LABELS.get(metric, metric)} - no steering "
                           f"({base:.3f})")
    fig.suptitle("Steering sweep on the dev split", y=1.04)
    return fig


def draw_before_after(result: Mapping[str, Any]) -> Any:
    """Test split: no steering vs the best setting, per metric, pooled and per target,
    with 95% CIs."""
    base, best = result["baseline"]["test"], result["best"]["test"]
    groups = ["all", *base["per_target"]]
    metrics = list(METRIC_LABELS)
    fig = new_figure(3.2 * len(metrics), 3.4)
    axes = fig.subplots(1, len(metrics))
    x = np.arange(len(groups))
    for ax, metric in zip(axes, metrics, strict=True):
        for shift, block, label, color in ((-0.2, base, "no steering", "tab:gray"),
                                           (0.2, best, "best steering", "tab:blue")):
            stats = [block["all"][metric] if g == "all" else block["per_target"][g][metric]
                     for g in groups]
            est = np.array([np.nan if s["estimate"] is None else s["estimate"] for s in stats])
            lo = np.array([np.nan if s["ci"][0] is None else s["ci"][0] for s in stats])
            hi = np.array([np.nan if s["ci"][1] is None else s["ci"][1] for s in stats])
            err = np.vstack([np.clip(est - lo, 0, None), np.clip(hi - est, 0, None)])
            ax.bar(x + shift, est, 0.4, yerr=np.nan_to_num(err), capsize=2, color=color,
                   label=label)
        ax.set_xticks(x, groups)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    setting = result["best"]
    fig.suptitle(f"Test split: toward {setting['direction']}, layers "
                 f"{'+'.join(map(str, setting['layers']))}, alpha {setting['alpha']:g} "
                 "(95% CIs)")
    return fig


def draw_inside(result: Mapping[str, Any]) -> Any:
    """ILO and parallel cosine by layer, without and with the best steering (test items)."""
    inside = result["inside"]
    fig = new_figure(10, 3.4)
    axes = fig.subplots(1, 2)
    for key, ax, title in (("ilo", axes[0], "ILO (mean over languages)"),
                           ("cos_parallel", axes[1], "cosine of parallel pairs with source")):
        for name, color in (("baseline", "tab:gray"), ("steered", "tab:blue")):
            values = [np.nan if v is None else v for v in inside[name][key]]
            ax.plot(range(len(values)), values, marker="o", ms=3, color=color,
                    label="no steering" if name == "baseline" else "best steering")
        for layer in result["best"]["layers"]:
            ax.axvline(layer, color="tab:blue", ls=":", lw=1)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def plot_sweep(result: Mapping[str, Any], path: str | Path) -> Path:
    return save_figure(draw_sweep(result), path)


def plot_before_after(result: Mapping[str, Any], path: str | Path) -> Path:
    return save_figure(draw_before_after(result), path)


def plot_inside(result: Mapping[str, Any], path: str | Path) -> Path:
    return save_figure(draw_inside(result), path)

"""Figures of ``xlgap finetune`` (``finetune.json``): ILO and parallel cosine by layer
before and after, and transfer and accuracy per run.

Moved here from :mod:`xlgap.interventions.finetune` (presentation belongs to the report);
the ``plot_*`` names write a file, the ``draw_*`` names return the figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.report.plots.figures import new_figure, save_figure

__all__ = ["draw_ilo", "draw_transfer", "plot_ilo", "plot_transfer"]


def draw_ilo(result: Mapping[str, Any]) -> Any:
    """ILO and parallel cosine by layer: the base model and each N after fine-tuning."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(11, 3.6)
    axes = fig.subplots(1, 2)
    runs = result["runs"]
    cmap = colormaps["viridis"]
    for key, ax, title in (("ilo", axes[0], "ILO by layer (mean over languages)"),
                           ("cos", axes[1], "cosine of parallel pairs with the source")):
        before = runs[0][f"{key}_before"] if runs else []
        ax.plot(range(len(before)), [np.nan if v is None else v for v in before], color="black",
                lw=2.5, label="before (base model)")
        for j, run in enumerate(runs):
            after = [np.nan if v is None else v for v in run[f"{key}_after"]]
            ax.plot(range(len(after)), after, marker="o", ms=3,
                    color=cmap(j / max(1, len(runs) - 1) * 0.85),
                    label=f"after, first {run['freeze_first']} frozen"
                    + (f", seed {run['seed']}" if run.get("seed") is not None else ""))
            if run["freeze_first"] > 0:
                ax.axvline(run["freeze_first"], color=cmap(j / max(1, len(runs) - 1) * 0.85),
                           ls=":", lw=1)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Fine-tuning in {result['lang']} ({result['method']}, {result['steps']} steps)")
    return fig


def draw_transfer(result: Mapping[str, Any]) -> Any:
    """Pooled transfer and accuracy in the fine-tuning language: base vs each N (95% CIs)."""
    runs = result["runs"]
    labels = ["base", *[f"N={r['freeze_first']}" + (f"\ns{r['seed']}" if r.get("seed")
                                                     is not None else "") for r in runs]]
    lang = result["lang"]
    series = {
        "transfer (all targets)": [result["base"]["transfer"]["all"],
                                   *[r["transfer_after"]["all"] for r in runs]],
        f"accuracy in {lang}": [result["base"]["accuracy"].get(lang),
                                *[r["accuracy_after"].get(lang) for r in runs]],
    }
    fig = new_figure(9, 3.4)
    axes = fig.subplots(1, len(series))
    for ax, (title, stats) in zip(axes, series.items(), strict=True):
        est = np.array([np.nan if not s or s["estimate"] is None else s["estimate"]
                        for s in stats])
        lo = np.array([np.nan if not s or s["ci"][0] is None else s["ci"][0] for s in stats])
        hi = np.array([np.nan if not s or s["ci"][1] is None else s["ci"][1] for s in stats])
        err = np.nan_to_num(np.vstack([np.clip(est - lo, 0, None), np.clip(hi - est, 0, None)]))
        ax.bar(range(len(labels)), est, yerr=err, capsize=3,
               color=["tab:gray", *["tab:blue"] * len(runs)])
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Held-out items after fine-tuning in {lang} (N = first blocks frozen)")
    return fig


def plot_ilo(result: Mapping[str, Any], path: str | Path) -> Path:
    return save_figure(draw_ilo(result), path)


def plot_transfer(result: Mapping[str, Any], path: str | Path) -> Path:
    return save_figure(draw_transfer(result), path)

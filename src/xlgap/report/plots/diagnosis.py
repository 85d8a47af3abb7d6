"""PNG plots of a diagnosis dict (see ``docs/diagnosis.md``).

Figures are drawn with matplotlib's object API on the Agg canvas, so nothing here
touches pyplot's global state or needs a display.

* ``ensembling.png``: source-target chi-square (and L2) distance against ensemble size,
  one line per target plus the pooled curve;
* ``confidence.png``: source-target agreement per bin of source confidence, with counts;
* ``accuracy.png``: heatmap of languages x metrics (accuracy, mode accuracy, then per
  response transfer, agreement and success where the file has them, then the
  ensembled (mode-based) ones);
* ``pi.png``: pi per target and pooled, model estimate with its CI next to the mismatch
  heuristic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.report.plots.figures import new_figure


def _new(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    fig = new_figure(width, height, dpi=110, layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def _values(xs: list[float | None]) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in xs], dtype=float)


def draw_ensembling(diag: dict[str, Any]) -> Any:
    has_l2 = (diag["overall"].get("ensembling") or {}).get("l2") is not None
    fig, axes = _new(9.0 if has_l2 else 5.5, 3.8, 2 if has_l2 else 1)
    axes = np.atleast_1d(axes)
    series = [(t, diag["pairs"][t]["ensembling"]) for t in diag["targets"]]
    series.append(("overall", diag["overall"]["ensembling"]))
    for ax, key, label in zip(axes, ("chi2", "l2"), ("chi-square distance", "L2 distance"),
                              strict=False):
        for name, curve in series:
            ys = curve.get(key)
            if ys is None:
                continue
            overall = name == "overall"
            ax.plot(curve["k"], _values(ys), color="black" if overall else None,
                    linewidth=2.4 if overall else 1.2, linestyle="-" if overall else "--",
                    label=name if overall else f"{diag['source']}-{name}")
        ax.set_xlabel("ensemble size k (answers pooled per language)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Source-target distance as answers are pooled")
    return fig


def draw_confidence(diag: dict[str, Any]) -> Any:
    cva = diag["confidence_vs_agreement"]
    fig, ax = _new(5.5, 3.8)
    centres = [0.5 * (lo + hi) for lo, hi in cva["bins"]]
    width = 0.8 * (cva["bins"][0][1] - cva["bins"][0][0])
    ys = _values(cva["agreement"])
    ax.bar(centres, np.nan_to_num(ys), width=width, color="#4c72b0")
    for x, y, n in zip(centres, ys, cva["count"], strict=True):
        ax.text(x, (0 if np.isnan(y) else y) + 0.02, f"n={n}", ha="center", fontsize=8)
    ax.set_xlabel("source confidence (share of answers on the mode)")
    ax.set_ylabel("source-target mode agreement")
    ax.set_ylim(0, 1.1)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("Agreement by source confidence")
    return fig


PAIR_COLUMNS = (("response_transfer", "transfer\n(per response)"),
                ("response_agreement", "agreement\n(per response)"),
                ("response_success", "success\n(per response)"),
                ("transfer", "transfer\n(ensembled)"), ("agreement", "agreement\n(ensembled)"),
                ("overall_success", "success\n(ensembled)"))


def draw_accuracy(diag: dict[str, Any]) -> Any:
    langs = [diag["source"], *diag["targets"]]
    # per-response pair metrics first where the file has them; mode-based ones are ensembles
    pair_keys = [(key, label) for key, label in PAIR_COLUMNS
                 if any((p or {}).get(key) for p in diag["pairs"].values())]
    metrics = ["accuracy", "mode accuracy", *(label for _, label in pair_keys)]
    grid = np.full((len(langs), len(metrics)), np.nan)
    for i, lang in enumerate(langs):
        grid[i, 0] = (diag["accuracy"].get(lang) or {}).get("estimate") or np.nan
        grid[i, 1] = (diag["mode_accuracy"].get(lang) or {}).get("estimate") or np.nan
        pair = diag["pairs"].get(lang)
        if pair:
            for j, (key, _) in enumerate(pair_keys, start=2):
                val = (pair.get(key) or {}).get("estimate")
                grid[i, j] = np.nan if val is None else val
    fig, ax = _new(1.2 * len(metrics) + 2.0, 0.45 * len(langs) + 1.8)
    img = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(len(langs)):
        for j in range(len(metrics)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if grid[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(metrics)), metrics, rotation=20, ha="right")
    ax.set_yticks(range(len(langs)), [f"{lang} (source)" if lang == diag["source"] else lang
                                      for lang in langs])
    fig.colorbar(img, ax=ax, shrink=0.8)
    ax.set_title("Accuracy and transfer per language")
    return fig


def draw_pi(diag: dict[str, Any]) -> Any | None:
    model = (diag.get("pi") or {}).get("model")
    if not model:
        return None
    names = [*diag["targets"], "overall"]
    est, lo, hi, mism = [], [], [], []
    for name in names:
        fit = model if name == "overall" else (model.get("targets") or {}).get(name)
        pair = diag["overall"] if name == "overall" else diag["pairs"][name]
        if fit and fit.get("estimate") is not None:
            est.append(fit["estimate"])
            lo.append(fit["ci"][0])
            hi.append(fit["ci"][1])
        else:
            est.append(np.nan)
            lo.append(np.nan)
            hi.append(np.nan)
        mism.append(np.nan if pair.get("pi_mismatch") is None else pair["pi_mismatch"])
    x = np.arange(len(names))
    e = np.array(est)
    fig, ax = _new(max(4.0, 0.8 * len(names) + 2.0), 3.6)
    ax.errorbar(x, e, yerr=[e - np.array(lo), np.array(hi) - e], fmt="o", capsize=4,
                label="model (95% CI)")
    ax.plot(x, mism, "x", color="gray", label="mismatch heuristic")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pi (share of variance-type gap)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title("Variance share of the gap")
    return fig


def plot_ensembling(diag: dict[str, Any], path: Path) -> Path:
    draw_ensembling(diag).savefig(path)
    return path


def plot_confidence(diag: dict[str, Any], path: Path) -> Path:
    draw_confidence(diag).savefig(path)
    return path


def plot_accuracy(diag: dict[str, Any], path: Path) -> Path:
    draw_accuracy(diag).savefig(path)
    return path


def plot_pi(diag: dict[str, Any], path: Path) -> Path | None:
    fig = draw_pi(diag)
    if fig is None:
        return None
    fig.savefig(path)
    return path


def write_plots(diag: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write every plot the diagnosis supports to ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_ensembling(diag, out / "ensembling.png"),
               plot_confidence(diag, out / "confidence.png"),
               plot_accuracy(diag, out / "accuracy.png")]
    pi_plot = plot_pi(diag, out / "pi.png")
    if pi_plot is not None:
        written.append(pi_plot)
    return written

"""Figures for the representation analyses (matplotlib Agg canvas, written to files).

Inputs are the JSON-serialisable results of :mod:`xlgap.representations`, so a figure can
be redrawn from a saved result file without recomputing anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.errors import DataError
from xlgap.report.plots.figures import new_figure, save_figure

__all__ = ["draw_ilo_by_layer", "draw_logit_lens", "draw_pair_heatmap", "draw_similarity_by_layer",
           "plot_ilo_by_layer", "plot_logit_lens", "plot_pair_heatmap", "plot_similarity_by_layer"]


def _layers_list(layers_json: Sequence[Mapping[str, Any]] | Mapping[str, Any],
                 where: str) -> list[Mapping[str, Any]]:
    """Accept either the list of per-layer entries or a dict holding it under "layers"."""
    layers = layers_json.get("layers") if isinstance(layers_json, Mapping) else layers_json
    if not layers:
        raise DataError(f"{where}: no layers to plot")
    return list(layers)


def _nan(v: float | None) -> float:
    return np.nan if v is None else float(v)


def _band(layers: Sequence[Mapping[str, Any]], figure_of: Any
          ) -> tuple[list[float], list[float], list[float]] | None:
    """Lower and upper CI bounds and the chance level per layer, from each entry's figure
    ``{"estimate", "ci", "chance"}``; None when no layer has a figure."""
    figs = [figure_of(entry) or {} for entry in layers]
    if not any(figs):
        return None
    cis = [f.get("ci") or [None, None] for f in figs]
    return ([_nan(c[0]) for c in cis], [_nan(c[1]) for c in cis],
            [_nan(f.get("chance")) for f in figs])


def _integer_ticks(ax: Any) -> None:
    """Layer numbers only (no 0.5 layers on short axes)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_band(ax: Any, x: list[int], band: tuple[list[float], list[float], list[float]] | None,
               color: str, label: str | None = "95% CI", chance_label: str | None = "chance"
               ) -> None:
    """The CI band (shaded) and the chance level (dotted line) of one series."""
    if band is None:
        return
    lo, hi, chance = band
    if np.isfinite(lo).any():
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0, label=label)
    if np.isfinite(chance).any():
        ax.plot(x, chance, ls=":", lw=1.5, color=color, label=chance_label)


def draw_ilo_by_layer(layers_json: Sequence[Mapping[str, Any]] | Mapping[str, Any],
                      title: str = "Interlingual Local Overlap (ILO) by layer") -> Any:
    """One line per language's ILO across layers, plus the mean in bold with its 95% CI
    band and its fully language-mixed reference (language labels shuffled: the value if
    language left no trace in the geometry; not a floor) when the result has them."""
    layers = _layers_list(layers_json, "plot_ilo_by_layer")
    from matplotlib import colormaps

    x = [int(entry["layer"]) for entry in layers]
    langs = list(layers[0]["ilo"])
    fig = new_figure(8, 4.5)
    ax = fig.subplots()
    cmap = colormaps["tab20"]
    for j, lang in enumerate(langs):
        ax.plot(x, [entry["ilo"].get(lang, np.nan) for entry in layers], lw=1, alpha=0.6,
                color=cmap(j % 20), label=lang)
    _draw_band(ax, x, _band(layers, lambda e: e.get("summary", {}).get("mean")), "black",
               "mean: 95% CI", "mean: fully language-mixed reference")
    ax.plot(x, [entry["mean"] for entry in layers], lw=3, color="black", label="mean")
    ax.set_xlabel("layer (0 = embeddings)")
    _integer_ticks(ax)
    ax.set_ylabel("ILO")
    ax.set_ylim(-0.02, 1.02)
    if isinstance(layers_json, Mapping) and layers_json.get("preset"):
        title += (f" (preset {layers_json['preset']}: {layers_json.get('metric')}, "
                  f"k={layers_json.get('k')})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=max(1, (len(langs) + 4) // 12), loc="center left",
              bbox_to_anchor=(1.01, 0.5))
    return fig


def draw_similarity_by_layer(sim: Mapping[str, Any],
                             title: str = "Cross-lingual similarity by layer") -> Any:
    """Mean over language pairs, per layer: parallel vs non-parallel cosine, CKA (debiased,
    and the biased estimator faintly), retrieval; with 95% CI bands and chance levels
    (rows shuffled) when the result has them.

    ``sim`` is the result of :func:`xlgap.representations.layerwise_similarity`.
    """
    layers = _layers_list(sim, "plot_similarity_by_layer")
    x = [int(entry["layer"]) for entry in layers]

    def series(key: str) -> list[float]:
        return [_nan(entry["mean"].get(key)) for entry in layers]

    def band(key: str) -> tuple[list[float], list[float], list[float]] | None:
        return _band(layers, lambda e: e.get("summary", {}).get(key))

    fig = new_figure(13, 3.8)
    axes = fig.subplots(1, 3)
    axes[0].plot(x, series("cos_parallel"), marker="o", ms=3, color="tab:blue",
                 label="parallel pairs")
    _draw_band(axes[0], x, band("cos_parallel"), "tab:blue", None, "parallel: chance")
    axes[0].plot(x, series("cos_non_parallel"), marker="o", ms=3, color="tab:orange",
                 label="non-parallel pairs")
    _draw_band(axes[0], x, band("cos_non_parallel"), "tab:orange", None, None)
    axes[0].plot(x, series("cos_difference"), ls="--", color="gray", label="difference")
    axes[0].set_title("cosine")
    axes[0].legend(fontsize=8)
    axes[1].plot(x, series("cka"), marker="o", ms=3, color="tab:green", label="debiased")
    _draw_band(axes[1], x, band("cka"), "tab:green")
    if any(np.isfinite(series("cka_biased"))):
        axes[1].plot(x, series("cka_biased"), lw=1, alpha=0.5, color="tab:olive",
                     label="biased estimator")
    axes[1].set_title("linear CKA")
    axes[1].set_ylim(-0.1, 1.02)
    axes[1].legend(fontsize=8)
    axes[2].plot(x, series("retrieval"), marker="o", ms=3, color="tab:red", label="top-1")
    _draw_band(axes[2], x, band("retrieval"), "tab:red")
    axes[2].set_title("top-1 retrieval accuracy")
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("layer (0 = embeddings)")
        _integer_ticks(ax)
        ax.grid(alpha=0.3)
    pivot = sim.get("pivot") if isinstance(sim, Mapping) else None
    fig.suptitle(title + (f" (pairs with {pivot})" if pivot else " (mean over pairs)"))
    return fig


def draw_pair_heatmap(matrix: Sequence[Sequence[float | None]] | np.ndarray,
                      langs: Sequence[str], title: str,
                      vmin: float | None = None, vmax: float | None = None) -> Any:
    """Language x language heat map (e.g. a consistency matrix); None cells are blank."""
    m = np.array([[_nan(v) for v in row] for row in matrix], dtype=np.float64)
    if m.shape != (len(langs), len(langs)):
        raise DataError(f"plot_pair_heatmap: matrix shape {m.shape} does not match "
                        f"{len(langs)} languages")
    size = 1.5 + 0.45 * len(langs)
    fig = new_figure(size + 1.2, size)
    ax = fig.subplots()
    im = ax.imshow(m, cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(langs)), labels=list(langs), rotation=90)
    ax.set_yticks(range(len(langs)), labels=list(langs))
    if len(langs) <= 20:
        finite = m[np.isfinite(m)]
        mid = float(np.mean([finite.min(), finite.max()])) if finite.size else 0.0
        for i in range(len(langs)):
            for j in range(len(langs)):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if m[i, j] > mid else "white")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title)
    return fig


def draw_logit_lens(result: Mapping[str, Any]) -> Any:
    """Two panels: P(gold answer's first token) by layer, and the pivot language's share
    of the answer mass (the latent language) by layer."""
    fig = new_figure(11, 4)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    layers, pivot = result["layers"], result["pivot"]
    for lang, curves in result["languages"].items():
        left.plot(layers, curves["p_gold"], marker=".", label=lang)
        if curves.get("pivot_share") is not None and lang != pivot:
            right.plot(layers, curves["pivot_share"], marker=".", label=lang)
    left.set(title="Logit lens: P(gold answer's first token)", xlabel="layer (0 = embeddings)",
             ylabel="probability")
    right.set(title=f"Latent language: {pivot} share of answer mass",
              xlabel="layer (0 = embeddings)",
              ylabel=f"P({pivot}) / (P({pivot}) + P(target))", ylim=(0, 1))
    right.axhline(0.5, color="grey", lw=0.5, ls="--")
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# -- the same figures written to files (what the commands call) -----------------------------


def plot_ilo_by_layer(layers_json: Sequence[Mapping[str, Any]] | Mapping[str, Any],
                      path: str | Path,
                      title: str = "Interlingual Local Overlap (ILO) by layer") -> Path:
    return save_figure(draw_ilo_by_layer(layers_json, title), path, dpi=150)


def plot_similarity_by_layer(sim: Mapping[str, Any], path: str | Path,
                             title: str = "Cross-lingual similarity by layer") -> Path:
    return save_figure(draw_similarity_by_layer(sim, title), path, dpi=150)


def plot_pair_heatmap(matrix: Sequence[Sequence[float | None]] | np.ndarray,
                      langs: Sequence[str], title: str, path: str | Path,
                      vmin: float | None = None, vmax: float | None = None) -> Path:
    return save_figure(draw_pair_heatmap(matrix, langs, title, vmin, vmax), path, dpi=150)


def plot_logit_lens(result: Mapping[str, Any], path: str | Path) -> Path:
    return save_figure(draw_logit_lens(result), path, dpi=150)

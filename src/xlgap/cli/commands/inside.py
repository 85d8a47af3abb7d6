"""Commands for the white-box analyses: ``ilo``, ``similarity``, ``logit-lens``,
``consistency``, and ``inside`` (all four). Registered into ``xlgap`` by :mod:`xlgap.cli`.

Thin wrappers: the analyses are :mod:`xlgap.representations.layerwise` (``xlgap.look_inside``
from Python); a command adds the result files, the plots and the text summary."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlgap.cli import workspace
from xlgap.cli.config import RunConfig, opt
from xlgap.cli.registry import command
from xlgap.data.items import ParallelDataset
from xlgap.report.plots.representations import (
    plot_ilo_by_layer,
    plot_logit_lens,
    plot_pair_heatmap,
    plot_similarity_by_layer,
)
from xlgap.report.text import (
    format_consistency,
    format_ilo,
    format_logit_lens,
    format_similarity,
)
from xlgap.representations import layerwise
from xlgap.representations.ilo import DISTANCES, PRESETS
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, DEFAULT_N_SHUFFLES


@dataclass
class InsideConfig(RunConfig):
    pooling: str = opt("mean_no_bos", "pooling of token states: mean, mean_no_bos or last "
                       "(the BOS state is huge in many models and drowns the mean)",
                       choices=("mean", "mean_no_bos", "last"))
    preset: str = opt("xlgap", "ILO settings: 'xlgap' (cosine on centred states, k = 5) or "
                      "'paper' (as in Wilie et al., 2025: Euclidean distance, k = 10, states "
                      "not centred); --k, --distance and --center override it",
                      choices=tuple(PRESETS))
    k: int | None = opt(None, "ILO: nearest neighbours per point (None: the preset's, "
                          "5 or 10)")
    t: int | None = opt(None, "ILO: distinct other languages a bridging point's neighbours "
                        "must span (None: 3, or all others with fewer than 4 languages)")
    distance: str | None = opt(None, "ILO: cosine or euclidean (None: the preset's)",
                               choices=DISTANCES)
    pivot: str = opt("", "pivot language of the logit lens and the similarity pairs "
                     "(empty: the source language, --source)")
    shots: int = opt(3, "few-shot examples in logit-lens and scoring prompts")
    center: bool | None = opt(None, "subtract each layer's mean vector (over all languages) "
                              "before the similarity measures and ILO; without it a few huge "
                              "outlier dimensions make every pair look alike (None: on, "
                              "but off for ILO under --preset paper)")
    n_boot: int = opt(DEFAULT_N_BOOT, "bootstrap resamples of the items for the 95 percent "
                      "intervals (CKA's cost grows with it: O(n_boot n^2) per pair and layer)")
    n_shuffles: int = opt(DEFAULT_N_SHUFFLES, "shuffles averaged for each chance level "
                          "(0: no chance levels)")


@dataclass
class IloConfig(InsideConfig):
    vectors: str = opt("", "ILO of your own vectors: an .npz with one (n, d) array per "
                       "language (rows parallel); no model is run")


def _options(cfg: InsideConfig) -> dict[str, Any]:
    """The analysis keywords of :mod:`xlgap.representations.layerwise` from the flags."""
    return {"n_boot": cfg.n_boot, "n_shuffles": cfg.n_shuffles, "seed": cfg.seed}


def _ilo_options(cfg: InsideConfig) -> dict[str, Any]:
    return {"preset": cfg.preset, "k": cfg.k, "t": cfg.t, "distance": cfg.distance,
            **_options(cfg)}


def hidden_states(cfg: InsideConfig, backend: Any, dataset: ParallelDataset,
                  languages: Sequence[str], out: Path) -> Any:
    """The hidden states of ``ilo``, ``similarity``, ``inside`` and the demo
    (:func:`xlgap.representations.layerwise.hidden_states`, in ``OUT/hidden/``)."""
    return layerwise.hidden_states(backend, dataset, languages, out, pooling=cfg.pooling,
                                   batch_size=cfg.batch_size, progress=cfg.show_progress())


def run_ilo(cfg: InsideConfig, states: Any, out: Path) -> dict[str, Any]:
    result = layerwise.ilo(states, center=cfg.center, pooling=cfg.pooling, **_ilo_options(cfg))
    result.save(out / "ilo.json")
    plot_ilo_by_layer(result, out / "ilo.png")
    return result


def run_similarity(cfg: InsideConfig, states: Any, out: Path) -> dict[str, Any]:
    result = layerwise.similarity(states, pivot=cfg.pivot or cfg.source, center=cfg.center,
                                  **_options(cfg))
    result.save(out / "similarity.json")
    plot_similarity_by_layer(result, out / "similarity.png")
    return result


def run_logit_lens(cfg: InsideConfig, backend: Any, dataset: ParallelDataset,
                   languages: Sequence[str], out: Path) -> dict[str, Any]:
    result = layerwise.lens(backend, dataset, languages, pivot=cfg.pivot or cfg.source,
                            shots=cfg.shots, progress=cfg.show_progress())
    result.save(out / "logit_lens.json")
    plot_logit_lens(result, out / "logit_lens.png")
    return result


def run_consistency(cfg: InsideConfig, backend: Any, dataset: ParallelDataset,
                    languages: Sequence[str], out: Path) -> dict[str, Any]:
    result = layerwise.consistency(backend, dataset, languages, shots=cfg.shots,
                                   **_options(cfg))
    result.save(out / "consistency.json")
    for key, title in (("rank_consistency", "Rank consistency (Spearman of candidate ranks)"),
                       ("rankc", "RankC"), ("tr_plus", "Shared correct (tr+)"),
                       ("tr_minus", "Shared incorrect, same answer (tr-)")):
        plot_pair_heatmap(result["matrices"][key], result["languages"], title,
                          out / f"consistency_{key}.png")
    return result


def _setup(cfg: InsideConfig, default: str) -> tuple[Any, ParallelDataset, list[str], Path]:
    dataset, source, targets = workspace.open_dataset(cfg)
    out = Path(cfg.out) if cfg.out else workspace.default_out(default)
    out.mkdir(parents=True, exist_ok=True)
    return workspace.open_backend(cfg), dataset, layerwise.languages_of(source, targets), out


def _setup_states(cfg: InsideConfig, default: str
                  ) -> tuple[Any, ParallelDataset, list[str], Path, Any]:
    """``_setup`` plus the hidden states (:func:`hidden_states`)."""
    backend, dataset, languages, out = _setup(cfg, default)
    return backend, dataset, languages, out, hidden_states(cfg, backend, dataset, languages,
                                                           out)


@command("ilo", IloConfig)
def cmd_ilo(cfg: IloConfig) -> int:
    if cfg.vectors:
        out = Path(cfg.out) if cfg.out else Path(cfg.vectors).with_suffix("")
        out.mkdir(parents=True, exist_ok=True)
        result = layerwise.ilo_of_vectors(cfg.vectors, **_ilo_options(cfg))
        result.save(out / "ilo.json")
        print(format_ilo(result))
        print(f"[xlgap] wrote {out / 'ilo.json'}")
        return 0
    _, _, _, out, states = _setup_states(cfg, "ilo")
    result = run_ilo(cfg, states, out)
    print(format_ilo(result))
    print(f"[xlgap] wrote {out / 'ilo.json'} and {out / 'ilo.png'}")
    return 0


@command("similarity", InsideConfig)
def cmd_similarity(cfg: InsideConfig) -> int:
    _, _, _, out, states = _setup_states(cfg, "similarity")
    result = run_similarity(cfg, states, out)
    print(format_similarity(result))
    print(f"[xlgap] wrote {out / 'similarity.json'} and {out / 'similarity.png'}")
    return 0


@command("logit-lens", InsideConfig)
def cmd_logit_lens(cfg: InsideConfig) -> int:
    backend, dataset, languages, out = _setup(cfg, "logit-lens")
    result = run_logit_lens(cfg, backend, dataset, languages, out)
    print(format_logit_lens(result))
    print(f"[xlgap] wrote {out / 'logit_lens.json'} and {out / 'logit_lens.png'}")
    return 0


@command("consistency", InsideConfig)
def cmd_consistency(cfg: InsideConfig) -> int:
    backend, dataset, languages, out = _setup(cfg, "consistency")
    print(format_consistency(run_consistency(cfg, backend, dataset, languages, out)))
    print(f"[xlgap] wrote {out / 'consistency.json'} and heatmaps")
    return 0


@command("inside", InsideConfig, analysis=True, white_box=True)
def cmd_inside(cfg: InsideConfig) -> int:
    backend, dataset, languages, out, states = _setup_states(cfg, "inside")
    print(format_ilo(run_ilo(cfg, states, out)))
    print(format_similarity(run_similarity(cfg, states, out)))
    if dataset.has_candidates:
        print(format_logit_lens(run_logit_lens(cfg, backend, dataset, languages, out)))
        print(format_consistency(run_consistency(cfg, backend, dataset, languages, out)))
    print(f"[xlgap] wrote JSON and PNG files to {out}", file=sys.stderr)
    return 0

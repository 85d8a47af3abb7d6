"""Commands for the white-box analyses: ``ilo``, ``similarity``, ``logit-lens``,
``consistency``, and ``inside`` (all four). Registered into ``xlgap`` by :mod:`xlgap.cli`.

``ilo``, ``similarity``, ``inside`` and the demo get their hidden states through one
function, :func:`hidden_states` (extract or resume into ``OUT/hidden/``)."""

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
from xlgap.errors import ConfigError
from xlgap.io import dump_json
from xlgap.prompting.scoring import candidate_scores, parallel_texts
from xlgap.provenance import tagged
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
from xlgap.representations.extract import CenteredStates, load_or_extract
from xlgap.representations.ilo import (
    DISTANCES,
    MIXED_REFERENCE,
    PRESETS,
    default_t,
    ilo_by_layer,
    ilo_from_npz,
)
from xlgap.representations.logit_lens import logit_lens
from xlgap.representations.similarity import layerwise_similarity
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, DEFAULT_N_SHUFFLES
from xlgap.stats.consistency import consistency_matrix

ILO_NAME = ("Interlingual Local Overlap (ILO) of Wilie et al., 2025, 'High-Dimensional "
            "Interlingual Representations of Large Language Models', arXiv:2503.11280")


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


def _languages(source: str, targets: Sequence[str]) -> list[str]:
    return [source, *[t for t in targets if t != source]]


def hidden_states(cfg: InsideConfig, backend: Any, dataset: ParallelDataset,
                  languages: Sequence[str], out: Path) -> Any:
    """The one path to hidden states for ``ilo``, ``similarity``, ``inside`` and the demo:
    pooled states of the parallel texts, every layer, extracted into ``OUT/hidden/`` or
    resumed from there (a :class:`~xlgap.representations.extract.HiddenStateSet`)."""
    if not backend.supports_white_box:
        raise ConfigError(f"hidden states need a white-box model; {cfg.model!r} has none")
    return load_or_extract(backend, parallel_texts(dataset, languages), out,
                           pooling=cfg.pooling, batch_size=cfg.batch_size,
                           progress=cfg.show_progress())


def ilo_settings(cfg: InsideConfig, n_languages: int | None) -> dict[str, Any]:
    """The preset's ILO settings with the options given explicitly laid over them
    (``t`` stays None, to be resolved later, when the number of languages is unknown)."""
    base = PRESETS[cfg.preset]
    t = cfg.t
    if t is None and n_languages is not None:
        t = default_t(n_languages)
    return {"preset": cfg.preset, "metric": cfg.distance or base["metric"],
            "k": base["k"] if cfg.k is None else cfg.k, "t": t,
            "centered": base["center"] if cfg.center is None else cfg.center}


def _uncertainty(cfg: InsideConfig) -> dict[str, int]:
    return {"n_boot": cfg.n_boot, "n_shuffles": cfg.n_shuffles, "seed": cfg.seed}


def run_ilo(cfg: InsideConfig, states: Any, out: Path) -> dict[str, Any]:

    settings = ilo_settings(cfg, len(states.languages))
    source = CenteredStates(states) if settings["centered"] else states
    layers = ilo_by_layer(source, k=settings["k"], t=settings["t"], metric=settings["metric"],
                          **_uncertainty(cfg))
    result = {"score": ILO_NAME, **settings, "pooling": cfg.pooling, **_uncertainty(cfg),
              "ci_level": 0.95, "chance_method": MIXED_REFERENCE, "layers": layers}
    dump_json(tagged("ilo", result), out / "ilo.json")
    plot_ilo_by_layer(result, out / "ilo.png")
    return result


def run_similarity(cfg: InsideConfig, states: Any, out: Path) -> dict[str, Any]:

    center = True if cfg.center is None else cfg.center
    result = layerwise_similarity(CenteredStates(states) if center else states,
                                  pivot=cfg.pivot or cfg.source, **_uncertainty(cfg))
    result["centered"] = center
    dump_json(tagged("similarity", result), out / "similarity.json")
    plot_similarity_by_layer(result, out / "similarity.png")
    return result


def run_logit_lens(cfg: InsideConfig, backend: Any, dataset: ParallelDataset,
                   languages: Sequence[str], out: Path) -> dict[str, Any]:

    result = logit_lens(backend, dataset.items, languages, pivot=cfg.pivot or cfg.source,
                        shots=cfg.shots, progress=cfg.show_progress())
    dump_json(tagged("logit_lens", result), out / "logit_lens.json")
    plot_logit_lens(result, out / "logit_lens.png")
    return result


def run_consistency(cfg: InsideConfig, backend: Any, dataset: ParallelDataset,
                    languages: Sequence[str], out: Path) -> dict[str, Any]:

    scores, gold = candidate_scores(backend, dataset, languages, cfg.shots)
    result = consistency_matrix(scores, gold, **_uncertainty(cfg))
    dump_json(tagged("consistency", result), out / "consistency.json")
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
    return workspace.open_backend(cfg), dataset, _languages(source, targets), out


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
        settings = ilo_settings(cfg, None)
        result = ilo_from_npz(cfg.vectors, k=settings["k"], t=settings["t"],
                              metric=settings["metric"], **_uncertainty(cfg))
        # --vectors are used as given: no centring, whatever the preset says
        result = {"score": ILO_NAME, **settings, "centered": False, **result,
                  **_uncertainty(cfg), "ci_level": 0.95, "chance_method": MIXED_REFERENCE}
        dump_json(tagged("ilo", result), out / "ilo.json")
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


def demo_section(cfg: RunConfig, backend: Any, dataset: ParallelDataset,
                 languages: Sequence[str], out: Path, **options: Any) -> str:
    """The demo's short look inside: ILO and similarity by layer on the same items
    (``options`` override :class:`InsideConfig` fields, e.g. ``n_boot``)."""
    inside = InsideConfig(**{k: getattr(cfg, k) for k in RunConfig.__dataclass_fields__},
                          **options)
    out.mkdir(parents=True, exist_ok=True)
    states = hidden_states(inside, backend, dataset, languages, out)
    ilo_text = format_ilo(run_ilo(inside, states, out))
    sim_text = format_similarity(run_similarity(inside, states, out))
    return f"\n{ilo_text}\n\n{sim_text}\n[xlgap] plots: {out / 'ilo.png'}, " \
           f"{out / 'similarity.png'}"

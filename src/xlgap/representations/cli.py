"""Commands for the white-box analyses: ``ilo``, ``similarity``, ``logit-lens``,
``consistency``, and ``inside`` (all four). Registered into ``xlgap`` by :mod:`xlgap.cli`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.config import RunConfig, opt
from xlgap.data.items import MASK, ParallelDataset
from xlgap.errors import ConfigError
from xlgap.io import dump_json


@dataclass
class InsideConfig(RunConfig):
    pooling: str = opt("mean_no_bos", "pooling of token states: mean, mean_no_bos or last "
                       "(the BOS state is huge in many models and drowns the mean)",
                       choices=("mean", "mean_no_bos", "last"))
    k: int = opt(5, "ILO: nearest neighbours per point")
    t: int = opt(3, "ILO: distinct other languages a bridging point's neighbours must span")
    pivot: str = opt("en", "pivot language for the logit lens and similarity pairs")
    shots: int = opt(3, "few-shot examples in logit-lens and scoring prompts")
    center: bool = opt(True, "subtract each layer's mean vector (over all languages) before "
                       "cosine-based measures; without it a few huge outlier dimensions "
                       "make every pair look alike")


@dataclass
class IloConfig(InsideConfig):
    vectors: str = opt("", "ILO of your own vectors: an .npz with one (n, d) array per "
                       "language (rows parallel); no model is run")


def parallel_texts(dataset: ParallelDataset, languages: Sequence[str]) -> dict[str, list[str]]:
    """One sentence per item and language, rows parallel: cloze masks are filled with the
    gold candidate so each row is a natural sentence. Items lacking a language are left out
    of every language, so rows stay aligned."""
    texts: dict[str, list[str]] = {lang: [] for lang in languages}
    for item in dataset.items:
        if not all(item.has(lang) for lang in languages):
            continue
        for lang in languages:
            entry = item[lang]
            text = entry.prompt
            if MASK in text:
                fill = (entry.candidates[entry.gold] if entry.gold is not None and
                        entry.candidates else (entry.answers[0] if entry.answers else ""))
                text = text.replace(MASK, fill)
            texts[lang].append(text)
    if not texts[languages[0]]:
        raise ConfigError("no item has every requested language; pick --targets that the "
                          "data set covers")
    return texts


def _languages(source: str, targets: Sequence[str]) -> list[str]:
    return [source, *[t for t in targets if t != source]]


def hidden_state_set(cfg: InsideConfig, backend: Any, dataset: ParallelDataset,
                     languages: Sequence[str], out: Path):
    """Pooled hidden states of the parallel texts, every layer, on disk (resumable)."""
    from xlgap.representations.extract import extract_hidden_states

    if not backend.supports_white_box:
        raise ConfigError(f"hidden states need a white-box model; {cfg.model!r} has none")
    texts = parallel_texts(dataset, languages)
    # The per-layer files are the cache here: skip the store, which would hold every
    # vector a second time.
    inner = getattr(backend, "inner", backend)
    return extract_hidden_states(inner, texts, out / "hidden", pooling=cfg.pooling,
                                 batch_size=cfg.batch_size, progress=cfg.show_progress())


class CenteredStates:
    """A layer source whose vectors have the layer's global mean removed.

    The mean is taken over every language's points together, so only the direction that
    all texts share is removed (language identity is kept)."""

    def __init__(self, states: Any) -> None:
        self.states = states
        self.layer_ids = list(states.layer_ids)

    def layer(self, i: int) -> dict[str, np.ndarray]:
        vectors = self.states.layer(i)
        mean = np.concatenate(list(vectors.values())).mean(0, keepdims=True)
        return {lang: v - mean for lang, v in vectors.items()}


def _maybe_centered(cfg: InsideConfig, states: Any) -> Any:
    return CenteredStates(states) if cfg.center else states


def run_ilo(cfg: InsideConfig, states: Any, out: Path) -> dict[str, Any]:
    from xlgap.report.representation_plots import plot_ilo_by_layer
    from xlgap.representations.ilo import ilo_by_layer

    result = {"k": cfg.k, "t": cfg.t, "pooling": cfg.pooling, "centered": cfg.center,
              "layers": ilo_by_layer(_maybe_centered(cfg, states), k=cfg.k, t=cfg.t)}
    dump_json(result, out / "ilo.json")
    plot_ilo_by_layer(result["layers"], out / "ilo.png")
    return result


def run_similarity(cfg: InsideConfig, states: Any, out: Path) -> dict[str, Any]:
    from xlgap.report.representation_plots import plot_similarity_by_layer
    from xlgap.representations.similarity import layerwise_similarity

    result = layerwise_similarity(_maybe_centered(cfg, states), pivot=cfg.pivot or None)
    result["centered"] = cfg.center
    dump_json(result, out / "similarity.json")
    plot_similarity_by_layer(result, out / "similarity.png")
    return result


def run_logit_lens(cfg: InsideConfig, backend: Any, dataset: ParallelDataset,
                   languages: Sequence[str], out: Path) -> dict[str, Any]:
    from xlgap.report.representation_plots import plot_logit_lens
    from xlgap.representations.logit_lens import logit_lens

    result = logit_lens(backend, dataset.items, languages, pivot=cfg.pivot, shots=cfg.shots,
                        progress=cfg.show_progress())
    dump_json(result, out / "logit_lens.json")
    plot_logit_lens(result, out / "logit_lens.png")
    return result


def candidate_scores(backend: Any, dataset: ParallelDataset, languages: Sequence[str],
                     shots: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Log-probability of every candidate, per language: (Q, M) NaN-padded, and gold."""
    from xlgap.prompting.templates import PromptBuilder

    builder = PromptBuilder(backend, dataset.items, shots=shots)
    width = max((it.n_candidates for it in dataset.items), default=0)
    items = [it for it in dataset.items if all(it.has(lang) and it[lang].candidates
                                               for lang in languages)]
    scores: dict[str, np.ndarray] = {}
    gold: dict[str, np.ndarray] = {}
    for lang in languages:
        prompts = [builder.scoring_prompt(it, lang) for it in items]
        got = backend.score_batch([(p.prompt, list(p.continuations)) for p in prompts])
        arr = np.full((len(items), width), np.nan)
        for row, values in enumerate(got):
            arr[row, :len(values)] = values
        scores[lang] = arr
        gold[lang] = np.array([it[lang].gold if it[lang].gold is not None else -1
                               for it in items])
    return scores, gold


def run_consistency(cfg: InsideConfig, backend: Any, dataset: ParallelDataset,
                    languages: Sequence[str], out: Path) -> dict[str, Any]:
    from xlgap.report.representation_plots import plot_pair_heatmap
    from xlgap.representations.consistency import consistency_matrix

    scores, gold = candidate_scores(backend, dataset, languages, cfg.shots)
    result = consistency_matrix(scores, gold)
    dump_json(result, out / "consistency.json")
    for key, title in (("rank_consistency", "Rank consistency (Spearman of candidate ranks)"),
                       ("rankc", "RankC"), ("tr_plus", "Shared correct (tr+)"),
                       ("tr_minus", "Shared incorrect, same answer (tr-)")):
        plot_pair_heatmap(result["matrices"][key], result["languages"], title,
                          out / f"consistency_{key}.png")
    return result


def _setup(cfg: InsideConfig, default: str) -> tuple[Any, ParallelDataset, list[str], Path]:
    from xlgap.workspace import default_out, open_backend, open_dataset

    dataset, source, targets = open_dataset(cfg)
    out = Path(cfg.out) if cfg.out else default_out(default)
    out.mkdir(parents=True, exist_ok=True)
    return open_backend(cfg), dataset, _languages(source, targets), out


def cmd_ilo(cfg: IloConfig) -> int:
    if cfg.vectors:
        from xlgap.representations.ilo import ilo_from_npz

        out = Path(cfg.out) if cfg.out else Path(cfg.vectors).with_suffix("")
        out.mkdir(parents=True, exist_ok=True)
        result = ilo_from_npz(cfg.vectors, k=cfg.k, t=cfg.t)
        dump_json(result, out / "ilo.json")
        layer = result["layers"][0]
        print(f"ILO (k={cfg.k}, t={cfg.t}): mean {layer['mean']:.3f}; " + ", ".join(
            f"{lang} {v:.3f}" for lang, v in layer["ilo"].items()))
        print(f"[xlgap] wrote {out / 'ilo.json'}")
        return 0
    backend, dataset, languages, out = _setup(cfg, "ilo")
    result = run_ilo(cfg, hidden_state_set(cfg, backend, dataset, languages, out), out)
    print(format_ilo(result))
    print(f"[xlgap] wrote {out / 'ilo.json'} and {out / 'ilo.png'}")
    return 0


def cmd_similarity(cfg: InsideConfig) -> int:
    backend, dataset, languages, out = _setup(cfg, "similarity")
    result = run_similarity(cfg, hidden_state_set(cfg, backend, dataset, languages, out), out)
    print(format_similarity(result))
    print(f"[xlgap] wrote {out / 'similarity.json'} and {out / 'similarity.png'}")
    return 0


def cmd_logit_lens(cfg: InsideConfig) -> int:
    backend, dataset, languages, out = _setup(cfg, "logit-lens")
    result = run_logit_lens(cfg, backend, dataset, languages, out)
    print(format_logit_lens(result))
    print(f"[xlgap] wrote {out / 'logit_lens.json'} and {out / 'logit_lens.png'}")
    return 0


def cmd_consistency(cfg: InsideConfig) -> int:
    backend, dataset, languages, out = _setup(cfg, "consistency")
    print(format_consistency(run_consistency(cfg, backend, dataset, languages, out)))
    print(f"[xlgap] wrote {out / 'consistency.json'} and heatmaps")
    return 0


def cmd_inside(cfg: InsideConfig) -> int:
    backend, dataset, languages, out = _setup(cfg, "inside")
    states = hidden_state_set(cfg, backend, dataset, languages, out)
    print(format_ilo(run_ilo(cfg, states, out)))
    print(format_similarity(run_similarity(cfg, states, out)))
    if dataset.has_candidates:
        print(format_logit_lens(run_logit_lens(cfg, backend, dataset, languages, out)))
        print(format_consistency(run_consistency(cfg, backend, dataset, languages, out)))
    print(f"[xlgap] wrote JSON and PNG files to {out}", file=sys.stderr)
    return 0


def demo_section(cfg: RunConfig, backend: Any, dataset: ParallelDataset,
                 languages: Sequence[str], out: Path) -> str:
    """The demo's short look inside: ILO and similarity by layer on the same items."""
    inside = InsideConfig(**{k: getattr(cfg, k) for k in RunConfig.__dataclass_fields__})
    out.mkdir(parents=True, exist_ok=True)
    states = hidden_state_set(inside, backend, dataset, languages, out)
    ilo_text = format_ilo(run_ilo(inside, states, out))
    sim_text = format_similarity(run_similarity(inside, states, out))
    return f"\n{ilo_text}\n\n{sim_text}\n[xlgap] plots: {out / 'ilo.png'}, " \
           f"{out / 'similarity.png'}"


# -- text summaries ------------------------------------------------------------------------


def format_ilo(result: dict[str, Any]) -> str:
    layers = result["layers"]
    best = max(layers, key=lambda entry: entry["mean"])
    lines = [f"ILO by layer (k={result['k']}, t={result['t']}, mean over languages):"]
    lines += [f"  layer {e['layer']:>2}  {e['mean']:.3f}  {'#' * round(e['mean'] * 40)}"
              for e in layers]
    lines.append(f"  most shared: layer {best['layer']} (ILO {best['mean']:.3f})")
    return "\n".join(lines)


def format_similarity(result: dict[str, Any]) -> str:
    lines = ["Cross-lingual similarity by layer (means over language pairs):",
             "  layer  cos parallel  cos other  CKA    retrieval@1"]
    for e in result["layers"]:
        mean = e["mean"]
        lines.append(f"  {e['layer']:>5}  {_f(mean.get('cos_parallel')):>12}"
                     f"  {_f(mean.get('cos_non_parallel')):>9}  {_f(mean.get('cka')):>5}"
                     f"  {_f(mean.get('retrieval')):>11}")
    return "\n".join(lines)


def format_logit_lens(result: dict[str, Any]) -> str:
    lines = [f"Logit lens: P(gold first token) at the last layers, and the {result['pivot']} "
             "share of answer mass at its peak layer:"]
    for lang, c in result["languages"].items():
        share = c.get("pivot_share")
        peak = (f"{max(share):.2f} at layer {int(np.argmax(share))}" if share else "n/a")
        lines.append(f"  {lang:<6} P(gold) final {c['p_gold'][-1]:.3f}  "
                     f"{result['pivot']}-share peak {peak}")
    return "\n".join(lines)


def format_consistency(result: dict[str, Any]) -> str:
    lines = ["Consistency across languages (candidate scoring):",
             "  pair      Spearman  RankC   tr+     tr-"]
    for row in result["pairs"]:
        lines.append(f"  {row['a']}-{row['b']:<6} {_f(row['rank_consistency']):>8}  "
                     f"{_f(row['rankc']):>6}  {_f(row['tr_plus']):>6}  {_f(row['tr_minus']):>6}")
    return "\n".join(lines)


def _f(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) else "  -  "


COMMANDS: dict[str, tuple[type, Callable[..., int], str]] = {
    "ilo": (IloConfig, cmd_ilo, "interlingual overlap (ILO) per layer, from a model or "
            "from your own vectors (--vectors FILE.npz)"),
    "similarity": (InsideConfig, cmd_similarity, "cross-lingual cosine, CKA and retrieval "
                   "per layer"),
    "logit-lens": (InsideConfig, cmd_logit_lens, "answer probability and latent language "
                   "at each layer"),
    "consistency": (InsideConfig, cmd_consistency, "rank consistency and shared "
                    "correct/incorrect rates across languages"),
    "inside": (InsideConfig, cmd_inside, "all white-box analyses: ILO, similarity, logit "
               "lens, consistency"),
}

"""Inside the model (``ilo.json``, ``similarity.json``, ``logit_lens.json``,
``consistency.json`` of one directory): where the languages share representations, by
layer, with CIs and chance levels, and the figures of each analysis."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.blocks import Block, Cell, Details, Para, Table, cell, count_cell
from xlgap.report.discover import Artifact
from xlgap.report.format import finite, fmt_estimate, mapping, value
from xlgap.report.plots import representations as plots
from xlgap.report.sections import FigureSpec, Section, register

__all__ = ["InsideSection", "inside_summary", "layer_stat"]

SIMILARITY_LABELS = {"cos_parallel": "cosine, parallel",
                     "cos_non_parallel": "cosine, non-parallel",
                     "cka": "linear CKA", "retrieval": "retrieval@1"}
CONSISTENCY = {"rank_consistency": "Rank consistency (Spearman of candidate ranks)",
               "rankc": "RankC", "tr_plus": "Shared correct (tr+)",
               "tr_minus": "Shared incorrect, same answer (tr-)"}
COMMANDS = {"ilo": "ilo", "similarity": "similarity", "logit_lens": "logit-lens",
            "consistency": "consistency"}


def layer_stat(entry: Any, key: str = "mean", group: str | None = None) -> Any:
    """A per-layer (or per-pair) figure: from the entry's ``summary`` (estimate, CI and
    chance level) when the analysis computed one, else the plain value (older files, or
    no resampling). ``group`` is where the plain value sits (``entry[group][key]``); a
    summary may nest the same way or hold ``key`` directly."""
    if not isinstance(entry, Mapping):
        return None
    summary = entry.get("summary")
    if isinstance(summary, Mapping):
        nested = summary.get(group) if group else None
        for got in ((nested.get(key) if isinstance(nested, Mapping) else None),
                    summary.get(key)):
            if isinstance(got, Mapping) and "estimate" in got:
                return got
    holder = entry.get(group) if group else entry
    return holder.get(key) if isinstance(holder, Mapping) else None


def _layers(result: Any) -> list[Mapping[str, Any]]:
    layers = mapping(result).get("layers")
    return [e for e in layers if isinstance(e, Mapping)] if isinstance(layers, list) else []


def inside_summary(art: Artifact) -> str | None:
    """One sentence: the layer where the languages share representations most."""
    layers = [e for e in _layers(art.get("ilo")) if value(layer_stat(e)) is not None]
    sim_layers = {e.get("layer"): e for e in _layers(art.get("similarity"))}
    if layers:
        best = max(layers, key=lambda e: value(layer_stat(e)) or 0.0)
        if (value(layer_stat(best)) or 0.0) <= 0.0:
            return (f"no layer of {len(layers)} shows shared representations (ILO 0 "
                    "everywhere: each language keeps to its own neighbourhood)")
        text = (f"languages share representations most at layer {best.get('layer')} of "
                f"{len(layers)} (ILO {fmt_estimate(layer_stat(best), 2)})")
        retrieval = layer_stat(sim_layers.get(best.get("layer")), "retrieval", "mean")
        if value(retrieval) is not None:
            text += f"; parallel-sentence retrieval there {fmt_estimate(retrieval, 2)}"
        return text
    scored = [(layer, v) for layer, e in sim_layers.items()
              if (v := value(layer_stat(e, "retrieval", "mean"))) is not None]
    if scored:
        layer, v = max(scored, key=lambda lv: lv[1])
        return f"parallel-sentence retrieval peaks at layer {layer} ({v:.2f})"
    return None


def _layer_cell(e: Mapping[str, Any]) -> Cell:
    return Cell(str(e.get("layer")), finite(e.get("layer")), num=True)


def _ilo_table(ilo: Any) -> list[Block]:
    layers = _layers(ilo)
    if not layers:
        return []
    langs: list[str] = []
    for e in layers:
        langs += [lang for lang in mapping(e.get("ilo")) if lang not in langs]
    rows = [[_layer_cell(e), cell(layer_stat(e)),
             *(cell(layer_stat(e, lang, "ilo")) for lang in langs)] for e in layers]
    settings = ", ".join(f"{key}={ilo[key]}" for key in ("k", "t", "metric")
                         if mapping(ilo).get(key) is not None)
    return [Details(f"ILO by layer (table{': ' + settings if settings else ''})",
                    [Table(["layer", "mean", *langs], rows)])]


def _similarity_table(sim: Any) -> list[Block]:
    layers = _layers(sim)
    if not layers:
        return []
    rows = [[_layer_cell(e), *(cell(layer_stat(e, key, "mean")) for key in SIMILARITY_LABELS)]
            for e in layers]
    return [Details("similarity by layer (table)",
                    [Table(["layer", *SIMILARITY_LABELS.values()], rows)])]


def _consistency_table(cons: Any) -> list[Block]:
    rows = [[Cell(f"{r.get('a')}-{r.get('b')}"),
             *(cell(layer_stat(r, key)) for key in ("rank_consistency", "rankc", "tr_plus",
                                                    "tr_minus")),
             count_cell(r.get("n"))]
            for r in mapping(cons).get("pairs") or [] if isinstance(r, Mapping)]
    if not rows:
        return []
    return [Table(["pair", "Spearman", "RankC", "tr+ (both right)", "tr- (same wrong answer)",
                   "items"], rows, caption="Consistency of candidate rankings across languages")]


@register
class InsideSection(Section):
    kind = "inside"
    formats = ("ilo", "similarity", "logit_lens", "consistency")
    order = 3
    title = "Inside the model"
    card_label = "inside"
    command = "inside"

    def command_name(self, art: Artifact, config: Mapping[str, Any]) -> str:
        if "represent" in config:
            return "demo"
        present = [t for t in self.formats if t in art.formats]
        return COMMANDS[present[0]] if len(present) == 1 else "inside"

    def summary(self, art: Artifact) -> str | None:
        return inside_summary(art)

    def body(self, art: Artifact) -> list[Block]:
        out: list[Block] = []
        summary = self.summary(art)
        if summary:
            out.append(Para(summary, "verdict"))
        for tag, fn in (("ilo", _ilo_table), ("similarity", _similarity_table),
                        ("consistency", _consistency_table)):
            if art.get(tag) is not None:
                out += fn(art.get(tag))
        return out

    def figures(self, art: Artifact) -> list[FigureSpec]:
        ilo, sim, lens, cons = (art.get(t) for t in self.formats)
        specs: list[FigureSpec] = []
        if ilo is not None:
            specs.append(FigureSpec(
                "ilo.png", "Interlingual Local Overlap (ILO) by layer: high ILO means a "
                "language's sentences have neighbours in other languages (a shared space)",
                lambda: plots.draw_ilo_by_layer(ilo)))
        if sim is not None:
            specs.append(FigureSpec(
                "similarity.png", "Cross-lingual similarity by layer: parallel above "
                "non-parallel cosine, and retrieval above chance, mean translations are "
                "closer than unrelated sentences", lambda: plots.draw_similarity_by_layer(sim)))
        if lens is not None:
            specs.append(FigureSpec(
                "logit_lens.png", "Logit lens by layer: P(gold answer's first token), and "
                "the pivot language's share of the answer mass (the latent language seen "
                "through the logit lens)", lambda: plots.draw_logit_lens(lens)))
        mats, langs = mapping(mapping(cons).get("matrices")), mapping(cons).get("languages")
        for key, title in CONSISTENCY.items():
            if isinstance(langs, list) and key in mats:
                specs.append(FigureSpec(
                    f"consistency_{key}.png", f"{title}, language x language",
                    lambda m=mats[key], t=title: plots.draw_pair_heatmap(m, langs, t)))
        return specs

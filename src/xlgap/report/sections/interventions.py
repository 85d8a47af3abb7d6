"""An intervention comparison (``interventions.json``): the strategies against baseline,
with CIs and the paired test, per target, and the comparison figure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.blocks import (
    Block,
    Cell,
    Details,
    Note,
    Para,
    Table,
    cell,
    count_cell,
    metric_columns,
    p_cell,
)
from xlgap.report.discover import Artifact
from xlgap.report.format import (
    NOT_APPLICABLE,
    fmt_estimate,
    fmt_p,
    mapping,
    moot,
    points,
    value,
)
from xlgap.report.plots.interventions import draw_interventions
from xlgap.report.sections import FigureSpec, Section, n_boot_of, register
from xlgap.report.text import answers_per_pair

__all__ = ["InterventionsSection", "intervention_summary"]


def intervention_summary(result: Any) -> str | None:
    """One sentence: the best strategy against baseline on transfer, with its p-value."""
    result = mapping(result)
    strategies = mapping(result.get("strategies"))
    base_name = str(result.get("baseline") or "baseline")
    base_t = value(mapping(strategies.get(base_name)).get("transfer"))
    best = None
    for name, m in strategies.items():
        v = value(mapping(m).get("transfer"))
        if name != base_name and v is not None and (best is None or v > best[1]):
            best = (name, v, mapping(m))
    if best is None:
        return None
    name, v, m = best
    if base_t is None:
        return f"best strategy {name}: transfer {fmt_estimate(m.get('transfer'))}"
    p = value(m.get("p_vs_baseline"))
    p_txt = "" if p is None else f", p {_p_words(fmt_p(p, n_boot_of(result)))}"
    sig = "" if p is None else (", significant" if p < 0.05 else ", not significant")
    diff = v - base_t
    lead = f"{name} helped most" if diff > 0 else f"no strategy beat baseline; best was {name}"
    return (f"{lead}: transfer {100 * v:.1f}% against {100 * base_t:.1f}% for baseline "
            f"({points(diff)}{p_txt}{sig})")


def _p_words(text: str) -> str:
    """``= 0.034`` or ``< 0.002``: a p-value after the letter p."""
    return text if text.startswith("<") else f"= {text}"


@register
class InterventionsSection(Section):
    kind = "interventions"
    formats = ("interventions",)
    order = 2
    title = "Interventions"
    card_label = "what helped"
    command = "intervene"

    def summary(self, art: Artifact) -> str | None:
        return intervention_summary(art.get("interventions"))

    def body(self, art: Artifact) -> list[Block]:
        result = art.get("interventions")
        loaded = art.loaded("interventions")
        if not isinstance(result, Mapping):
            if loaded is not None and loaded.error:
                return []  # the read error is shown already
            return [Note("interventions.json: not a JSON object", "warn")]
        out: list[Block] = []
        summary = self.summary(art)
        if summary:
            out.append(Para(summary, "verdict"))
        strategies = {str(k): m for k, m in mapping(result.get("strategies")).items()
                      if isinstance(m, Mapping)}
        langs = [str(x) for x in (result.get("languages") or
                                  [result.get("source"), *(result.get("targets") or [])]) if x]
        n_boot = n_boot_of(result)
        rows = [[Cell(name), cell(m.get("transfer")), cell(m.get("overall_success")),
                 Cell(NOT_APPLICABLE) if moot(m, "transfer") else
                 p_cell(m.get("p_vs_baseline"), n_boot), cell(m.get("chi2")),
                 count_cell(mapping(m.get("parse_failures")).get("total")),
                 *(cell(mapping(m.get("accuracy")).get(lang)) for lang in langs)]
                for name, m in strategies.items()]
        out.append(Table(["strategy", "transfer [95% CI]", "overall success [95% CI]",
                          "p vs baseline", "chi-square s-t", "parse failures",
                          *(f"accuracy {lang}" for lang in langs)], rows,
                         caption=f"Strategies compared on {result.get('n_items')} items, "
                         f"{answers_per_pair(result)}"))
        per_rows = [[Cell(name), Cell(str(tgt)), cell(v.get("transfer")),
                     cell(v.get("overall_success")), cell(v.get("chi2"))]
                    for name, m in strategies.items()
                    for tgt, v in mapping(m.get("per_target")).items() if isinstance(v, Mapping)]
        metric_rows = []
        for name, m in strategies.items():
            tests = mapping(m.get("vs_baseline"))
            for key, label in metric_columns(result):
                if m.get(key) is None:
                    continue
                test = mapping(tests.get(key))
                metric_rows.append([Cell(name), Cell(label), cell(m.get(key)),
                                    cell({"estimate": test.get("difference"),
                                          "ci": test.get("ci")} if test else None),
                                    Cell(NOT_APPLICABLE) if moot(m, key) else
                                    p_cell(test.get("p"), n_boot)])
        if metric_rows:
            out.append(Details("every pair metric, against baseline", [Table(
                ["strategy", "metric", "estimate [95% CI]", "difference [95% CI]",
                 "p vs baseline"], metric_rows)]))
        if per_rows:
            out.append(Details("per target", [Table(["strategy", "target", "transfer",
                                                     "overall success", "chi-square"],
                                                    per_rows)]))
        return out

    def figures(self, art: Artifact) -> list[FigureSpec]:
        result = art.get("interventions")
        if not isinstance(result, Mapping):
            return []
        return [FigureSpec("interventions.png", "Transfer and overall success per strategy "
                           "(95% CI)", lambda: draw_interventions(result))]

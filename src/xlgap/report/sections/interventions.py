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
    fmt_adjusted_p,
    fmt_estimate,
    fmt_p,
    mapping,
    moot,
    points,
    value,
)
from xlgap.report.plots.interventions import draw_interventions
from xlgap.report.sections import FigureSpec, Section, n_boot_of, register
from xlgap.report.text import (
    LEGEND,
    answers_per_pair,
    baseline_test,
    holm_of,
    lead_metric,
    p_text,
    recovered,
    table_rows,
)

__all__ = ["InterventionsSection", "intervention_summary"]


def intervention_summary(result: Any) -> str | None:
    """One sentence: the strategy with the highest per-response transfer (the modes'
    transfer in files older than it) against baseline, with its p Holm-adjusted over the
    strategies it was picked from (``p_holm`` of the file: the report computes no
    statistics); "significant" is said of the adjusted p only. Where
    the winner's source answers differ from the baseline's, its transfer on the
    baseline's source-correct items follows."""
    result = mapping(result)
    strategies = {str(k): mapping(v) for k, v in mapping(result.get("strategies")).items()}
    base_name = str(result.get("baseline") or "baseline")
    key, label = lead_metric(result)
    base_t = value(strategies.get(base_name, {}).get(key))
    best = None
    for name, m in strategies.items():
        v = value(m.get(key))
        if name != base_name and v is not None and (best is None or v > best[1]):
            best = (name, v, m)
    if best is None:
        return None
    name, v, m = best
    if base_t is None:
        return f"best strategy {name}: {label} {fmt_estimate(m.get(key))}"
    family = [n for n, s in strategies.items() if n != base_name and s.get("vs_baseline")]
    p = value(baseline_test(m, key).get("p"))
    holm = holm_of(result, name, key)
    n_boot = n_boot_of(result)
    if p is None:
        p_txt, sig = "", ""
    elif len(family) <= 1:
        p_txt = f", p {_p_words(fmt_p(p, n_boot))}"
        sig = ", significant" if p < 0.05 else ", not significant"
    elif holm is None:  # a file written before p_holm: no verdict on a best-of-k p
        p_txt = (f", unadjusted p {_p_words(fmt_p(p, n_boot))} for the best of "
                 f"{len(family)} strategies")
        sig = ""
    else:
        adjusted = fmt_adjusted_p(holm, p, baseline_test(m, key).get("p_floor"), n_boot)
        p_txt = (f", p {_p_words(adjusted)} Holm-adjusted over {len(family)} "
                 f"strategies (unadjusted {fmt_p(p, n_boot)})")
        sig = ", significant" if holm < 0.05 else ", not significant"
    diff = v - base_t
    lead = f"{name} helped most" if diff > 0 else f"no strategy beat baseline; best was {name}"
    text = (f"{lead}: {label} {100 * v:.1f}% against {100 * base_t:.1f}% for baseline "
            f"({points(diff)}{p_txt}{sig})")
    gain = recovered(m)
    if key == "response_transfer" and gain is not None:
        text += (f"; the ensemble of its modes transfers {points(gain)} more "
                 "(what ensembling can recover)")
    fixed = value(mapping(m.get("on_baseline_source_correct")).get(key))
    if m.get("source_differs") and fixed is not None:
        text += (f"; its source answers differ from baseline's, and on baseline's "
                 f"source-correct items its {label} is {100 * fixed:.1f}%")
    return text


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
        header, text_rows = table_rows(result)
        rows = [[Cell(name), cell(m.get("response_transfer")),
                 Cell(p_text(result, name, "response_transfer")), cell(m.get("transfer")),
                 Cell(p_text(result, name, "transfer")), *(Cell(x) for x in row[5:8]),
                 cell(mapping(m.get("on_baseline_source_correct")).get("response_transfer")),
                 cell(m.get("chi2")),
                 count_cell(mapping(m.get("parse_failures")).get("total")),
                 *(cell(mapping(m.get("accuracy")).get(lang)) for lang in langs)]
                for (name, m), row in zip(strategies.items(), text_rows, strict=True)]
        out.append(Table([h.replace(" %", "") for h in header], rows,
                         caption=f"Strategies compared on {result.get('n_items')} items, "
                         f"{answers_per_pair(result)}. {LEGEND}."))
        per_rows = [[Cell(name), Cell(str(tgt)), cell(v.get("response_transfer")),
                     cell(v.get("transfer")), cell(v.get("response_success")),
                     cell(v.get("chi2"))]
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
                                    cell({"estimate": test.get("estimate"),
                                          "ci": test.get("ci")} if test else None),
                                    Cell(NOT_APPLICABLE) if moot(m, key) else
                                    p_cell(test.get("p"), n_boot)])
        if metric_rows:
            out.append(Details("every pair metric, against baseline", [Table(
                ["strategy", "metric", "estimate [95% CI]", "difference [95% CI]",
                 "p vs baseline"], metric_rows)]))
        if per_rows:
            out.append(Details("per target", [Table(
                ["strategy", "target", "per-response transfer", "ensembled transfer",
                 "per-response overall success", "chi-square"], per_rows)]))
        return out

    def figures(self, art: Artifact) -> list[FigureSpec]:
        result = art.get("interventions")
        if not isinstance(result, Mapping):
            return []
        return [FigureSpec("interventions.png", "Transfer and overall success per strategy "
                           "(95% CI)", lambda: draw_interventions(result))]

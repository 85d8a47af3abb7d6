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
    lead_metric,
    p_text,
    recovered,
    table_rows,
)

__all__ = ["InterventionsSection", "intervention_summary"]


def intervention_summary(result: Any) -> str | None:
    """One sentence: the strategy with the highest per-response transfer (the modes'
    transfer in files older than it) against baseline, with its p Holm-adjusted over the
    strategies it was picked from (the file's ``p_holm``: the report computes no
    statistics); "significant" is said of the adjusted p only.

    Where the file has it, every strategy is compared on the baseline's source-correct
    items (``on_baseline_source_correct``), so a strategy that changes its own source
    answers cannot win by losing source-correct items (a smaller denominator); its
    per-response overall success follows, and, where its source answers differ, the
    transfer on its own source-correct items."""
    result = mapping(result)
    strategies = {str(k): mapping(v) for k, v in mapping(result.get("strategies")).items()}
    base_name = str(result.get("baseline") or "baseline")
    key, label = lead_metric(result)
    fixed = any(isinstance(m.get("on_baseline_source_correct"), Mapping)
                for m in strategies.values())

    def scope(m: Mapping[str, Any]) -> Mapping[str, Any]:
        return mapping(m.get("on_baseline_source_correct")) if fixed else m

    if fixed:
        label += " on baseline's source-correct items"
    base_t = value(scope(strategies.get(base_name, {})).get(key))
    best = None
    for name, m in strategies.items():
        v = value(scope(m).get(key))
        if name != base_name and v is not None and (best is None or v > best[1]):
            best = (name, v, m)
    if best is None:
        return None
    name, v, m = best
    if base_t is None:
        return f"best strategy {name}: {label} {fmt_estimate(scope(m).get(key))}"
    family = [n for n, s in strategies.items() if n != base_name and scope(s).get("vs_baseline")]
    text = (f"{name} helped most" if v > base_t else
            f"no strategy beat baseline; best was {name}")
    text += (f": {label} {100 * v:.1f}% against {100 * base_t:.1f}% for baseline "
             f"({points(v - base_t)}{_test_words(result, scope(m), key, len(family))})")
    success, base_success = value(m.get("response_success")), value(
        strategies.get(base_name, {}).get("response_success"))
    if key == "response_transfer" and success is not None and base_success is not None:
        text += (f"; per-response overall success {100 * success:.1f}% against "
                 f"{100 * base_success:.1f}% ({points(success - base_success)}"
                 f"{_test_words(result, m, 'response_success', len(family))})")
    gain = recovered(m)
    if key == "response_transfer" and gain is not None:
        text += (f"; the ensemble of its modes transfers {points(gain)} more "
                 "(what ensembling can recover)")
    own = value(m.get(key))
    if fixed and m.get("source_differs") and own is not None:
        text += (f"; its source answers differ from baseline's (on its own source-correct "
                 f"items its {lead_metric(result)[1]} is {100 * own:.1f}%)")
    return text


def _test_words(result: Mapping[str, Any], arm: Mapping[str, Any], key: str, family: int
                ) -> str:
    """``, p = 0.040 Holm-adjusted over 2 strategies (unadjusted 0.027), significant``:
    an arm's paired test against baseline on ``key``, Holm-adjusted where it was picked
    among several (no verdict on a best-of-k p without the file's adjustment)."""
    test = baseline_test(arm, key)
    p = value(test.get("p"))
    n_boot = n_boot_of(result)
    if p is None:
        return ""
    if family <= 1:
        verdict = "significant" if p < 0.05 else "not significant"
        return f", p {_p_words(fmt_p(p, n_boot))}, {verdict}"
    holm = value(mapping(arm.get("p_holm")).get(key))
    if holm is None:  # a file written before p_holm: no verdict on a best-of-k p
        return f", unadjusted p {_p_words(fmt_p(p, n_boot))} for the best of {family} strategies"
    adjusted = fmt_adjusted_p(holm, p, test.get("p_floor"), n_boot)
    verdict = "significant" if holm < 0.05 else "not significant"
    return (f", p {_p_words(adjusted)} Holm-adjusted over {family} strategies "
            f"(unadjusted {fmt_p(p, n_boot)}), {verdict}")


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

"""Terminal and Markdown rendering of results: the intervention table (like the paper's
Table 1). Numbers go through :mod:`xlgap.report.format`, as on the HTML page.

Inputs are the JSON-serialisable result of :func:`xlgap.interventions.evaluate.compare_runs`,
so the table can be redrawn from a saved ``interventions.json`` (the figure is
:func:`xlgap.report.plots.interventions.plot_interventions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.format import fmt_estimate, fmt_number, fmt_p, value

__all__ = ["format_interventions_table", "interventions_markdown", "table_rows"]


def _pct(x: Any) -> str:
    """A share in percent, without the sign (the header says "%")."""
    return fmt_estimate(x, percent=True)


def _with_ci(stat: Mapping[str, Any] | None) -> str:
    """'42.0 [38.1, 45.9]' in percent."""
    return fmt_estimate(stat, percent=True, chance=False)


def answers_per_pair(result: Mapping[str, Any]) -> str:
    if not result.get("samples"):
        return "exact distributions over the candidates per item and language"
    return f"R = {result.get('samples')} final answers per item and language"


def _chi2(stat: Mapping[str, Any] | None) -> str:
    return fmt_number(value(stat))


def table_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per strategy: transfer and overall success with 95% CIs (in %),
    p against baseline (transfer), chi-square, parse failures and per-language accuracy."""
    langs = list(result.get("languages") or [result["source"], *result["targets"]])
    header = ["strategy", "transfer % [95% CI]", "overall success % [95% CI]", "p vs base",
              "chi2 s-t", "parse fail", *(f"acc {lang}" for lang in langs)]
    rows = []
    for name, m in result["strategies"].items():
        acc = m.get("accuracy", {})
        rows.append([name, _with_ci(m.get("transfer")), _with_ci(m.get("overall_success")),
                     fmt_p(m.get("p_vs_baseline"), result.get("n_boot")),
                     _chi2(m.get("chi2")),
                     str((m.get("parse_failures") or {}).get("total", 0)),
                     *(_pct(value(acc.get(lang))) for lang in langs)])
    return header, rows


def format_interventions_table(result: Mapping[str, Any]) -> str:
    """A plain-text aligned table for the terminal."""
    header, rows = table_rows(result)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    title = (f"Interventions: {result['source']} -> {', '.join(result['targets'])}, "
             f"{result['n_items']} items, {answers_per_pair(result)}")
    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *(line(r) for r in rows), rule,
                      "transfer (ECLeKTic): pairs right in the target among those right in the "
                      "source; overall success: right in both; right = the mode of the R "
                      "answers is gold; p: paired bootstrap test of the pooled transfer"])


def interventions_markdown(result: Mapping[str, Any]) -> str:
    """The table as Markdown, with per-target figures below it."""
    header, rows = table_rows(result)
    out = [f"# Interventions: {result['source']} -> {', '.join(result['targets'])}", "",
           f"{result['n_items']} items; {answers_per_pair(result)}; 95% bootstrap CIs over "
           "items "
           f"({result.get('n_boot')} resamples); p: paired bootstrap test of the pooled "
           "transfer against baseline (items resampled once for both).", "",
           "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += ["", "## Per target", "", "| strategy | target | transfer % | overall success % "
            "| chi2 | parse fail |", "|---|---|---|---|---|---|"]
    for name, m in result["strategies"].items():
        fails = (m.get("parse_failures") or {}).get("by_language", {})
        for tgt, t in (m.get("per_target") or {}).items():
            out.append(f"| {name} | {tgt} | {_with_ci(t.get('transfer'))} | "
                       f"{_with_ci(t.get('overall_success'))} | {_chi2(t.get('chi2'))} | "
                       f"{fails.get(tgt, 0)} |")
    return "\n".join(out) + "\n"

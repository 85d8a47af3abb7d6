"""Terminal and Markdown rendering of results: the intervention table (like the paper's
Table 1). Numbers go through :mod:`xlgap.report.format`, as on the HTML page.

Inputs are the JSON-serialisable result of :func:`xlgap.interventions.evaluate.compare_runs`,
so the table can be redrawn from a saved ``interventions.json`` (the figure is
:func:`xlgap.report.plots.interventions.plot_interventions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.format import (
    NOT_APPLICABLE,
    chance_of,
    ci_of,
    fmt_estimate,
    fmt_number,
    fmt_p,
    moot,
    value,
)

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
                     NOT_APPLICABLE if moot(m, "transfer") else
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


# -- representations: ILO, similarity, logit lens, consistency ----------------------------


def _ci(fig: Mapping[str, Any] | None) -> str:
    """`` [lo, hi]`` of a figure, or nothing without an interval."""
    lo, hi = ci_of(fig)
    return "" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]"


def _chance(fig: Mapping[str, Any] | None) -> str:
    c = chance_of(fig)
    return "  -  " if c is None else f"{c:.3f}"


def format_ilo(result: Mapping[str, Any]) -> str:
    layers = result["layers"]
    best = max(layers, key=lambda entry: entry["mean"])
    how = (f"preset {result.get('preset', 'xlgap')}: {result.get('metric', 'cosine')}, "
           f"k={result['k']}, t={result['t']}"
           + (", centred" if result.get("centered") else ""))
    lines = [f"Interlingual Local Overlap (ILO) by layer ({how}); mean over languages, "
             "95% CI, mixed = the fully language-mixed reference (language labels shuffled; "
             "0 means no language mixes with another):"]
    for e in layers:
        fig = e.get("summary", {}).get("mean")
        lines.append(f"  layer {e['layer']:>2}  {e['mean']:.3f}{_ci(fig):<17}  mixed "
                     f"{_chance(fig)}  {'#' * round(e['mean'] * 30)}")
    lines.append(f"  most shared: layer {best['layer']} (ILO {best['mean']:.3f})")
    return "\n".join(lines)


def format_similarity(result: Mapping[str, Any]) -> str:
    pivot = result.get("pivot")
    lines = ["Cross-lingual similarity by layer (means over language pairs"
             + (f" with {pivot}" if pivot else "") + "; 95% CI; chance = rows shuffled):",
             "  layer  cos par  cos other  CKA (debiased)                   "
             "retrieval@1"]
    for e in result["layers"]:
        mean, summ = e["mean"], e.get("summary", {})
        cka = f"{_f(mean.get('cka'))}{_ci(summ.get('cka'))}"
        ret = f"{_f(mean.get('retrieval'))}{_ci(summ.get('retrieval'))}"
        lines.append(f"  {e['layer']:>5}  {_f(mean.get('cos_parallel')):>7}  "
                     f"{_f(mean.get('cos_non_parallel')):>9}  {cka:<22} "
                     f"ch {_chance(summ.get('cka'))}  {ret:<22} "
                     f"ch {_chance(summ.get('retrieval'))}")
    return "\n".join(lines)


def format_logit_lens(result: Mapping[str, Any]) -> str:
    lines = [f"Logit lens: P(gold first token) at the last layers, and the {result['pivot']} "
             "share of answer mass at its peak layer:"]
    for lang, c in result["languages"].items():
        share = c.get("pivot_share")
        top = max(range(len(share)), key=share.__getitem__) if share else 0
        peak = f"{max(share):.2f} at layer {top}" if share else "n/a"
        lines.append(f"  {lang:<6} P(gold) final {c['p_gold'][-1]:.3f}  "
                     f"{result['pivot']}-share peak {peak}")
    return "\n".join(lines)


def format_consistency(result: Mapping[str, Any]) -> str:
    lines = ["Consistency across languages (candidate scoring; 95% CI; chance = items "
             "shuffled):",
             "  pair      Spearman                  RankC                     tr+     tr-"]
    for row in result["pairs"]:
        summ = row.get("summary", {})
        spear = f"{_f(row['rank_consistency'])}{_ci(summ.get('rank_consistency'))}"
        rc = f"{_f(row['rankc'])}{_ci(summ.get('rankc'))}"
        lines.append(f"  {row['a']}-{row['b']:<6} {spear:<24}  {rc:<24}  "
                     f"{_f(row['tr_plus']):>6}  {_f(row['tr_minus']):>6}")
    return "\n".join(lines)


def _f(v: Any) -> str:
    return "  -  " if value(v) is None else fmt_number(v)

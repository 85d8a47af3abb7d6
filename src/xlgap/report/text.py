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
    fmt_adjusted_p,
    fmt_estimate,
    fmt_number,
    fmt_p,
    mapping,
    moot,
    value,
)

__all__ = ["LEGEND", "baseline_test", "format_interventions_table", "holm_of",
           "interventions_markdown", "lead_metric", "p_text", "recovered", "table_rows"]


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


def baseline_test(strategy: Mapping[str, Any], metric: str) -> Mapping[str, Any]:
    """A strategy's paired test against baseline on ``metric`` (empty when it has none)."""
    tests = strategy.get("vs_baseline")
    test = tests.get(metric) if isinstance(tests, Mapping) else None
    return test if isinstance(test, Mapping) else {}


def holm_of(result: Mapping[str, Any], name: str, metric: str) -> float | None:
    """The Holm-adjusted p of strategy ``name`` on ``metric`` (over the strategies compared
    with baseline), as the result file stores it."""
    holm = mapping(mapping(result.get("strategies")).get(name)).get("p_holm")
    return value(holm.get(metric)) if isinstance(holm, Mapping) else None


def p_text(result: Mapping[str, Any], name: str, metric: str) -> str:
    """``0.030 (Holm 0.090)``: a strategy's p against baseline and, where several
    strategies were compared, its Holm-adjusted p; n/a where the metric cannot move."""
    m = mapping(mapping(result.get("strategies")).get(name))
    if moot(m, metric):
        return NOT_APPLICABLE
    n_boot = result.get("n_boot")
    test = baseline_test(m, metric)
    p = value(test.get("p"))
    if p is None:
        return "-"
    text = fmt_p(p, n_boot)
    compared = sum(1 for s in mapping(result.get("strategies")).values()
                   if isinstance(s, Mapping) and s.get("vs_baseline"))
    holm = holm_of(result, name, metric)
    if holm is not None and compared > 1:
        text += f" (Holm {fmt_adjusted_p(holm, p, test.get('p_floor'), n_boot)})"
    return text


def lead_metric(result: Mapping[str, Any]) -> tuple[str, str]:
    """The transfer the tables lead with: per response, or the modes' in older files."""
    for m in mapping(result.get("strategies")).values():
        if isinstance(m, Mapping) and m.get("response_transfer") is not None:
            return "response_transfer", "per-response transfer"
    return "transfer", "transfer (modes)"


def recovered(m: Mapping[str, Any]) -> float | None:
    """Ensembled minus per-response transfer: what ensembling can recover."""
    a, b = value(m.get("transfer")), value(m.get("response_transfer"))
    return None if a is None or b is None else a - b


def table_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per strategy: per-response transfer with its 95% CI and p
    against baseline (raw, and Holm-adjusted over the strategies), the ensembled
    transfer of the modes and what ensembling recovers (ensembled minus per response),
    per-response overall success, whether the strategy's source answers differ from the
    baseline's and its transfer on the baseline's source-correct items, chi-square,
    parse failures and per-language accuracy (P(gold))."""
    langs = list(result.get("languages") or [result["source"], *result["targets"]])
    header = ["strategy", "per-response transfer % [95% CI]", "p vs base",
              "ensembled transfer % [95% CI]", "p vs base", "recovered by ensembling",
              "per-response overall success %", "source answers",
              "per-response transfer on base's source-correct %",
              "chi2 s-t", "parse fail", *(f"acc {lang}" for lang in langs)]
    rows = []
    for name, m in result["strategies"].items():
        acc = m.get("accuracy", {})
        gain = recovered(m)
        fixed = mapping(m.get("on_baseline_source_correct"))
        differs = m.get("source_differs")
        rows.append([name, _with_ci(m.get("response_transfer")),
                     p_text(result, name, "response_transfer"), _with_ci(m.get("transfer")),
                     p_text(result, name, "transfer"),
                     "-" if gain is None else f"{100 * gain:+.1f} points",
                     _pct(value(m.get("response_success"))),
                     "-" if differs is None else "differ" if differs else "as baseline",
                     _with_ci(fixed.get("response_transfer")),
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
                      LEGEND])


LEGEND = ("per-response transfer: of one source answer and one target answer, the share "
          "right in the target among those right in the source; ensembled transfer "
          "(ECLeKTic): the same of the modes (the mode of the R answers, or the argmax of "
          "an exact distribution, is gold), which is what an ensemble gives; the "
          "difference is what ensembling recovers; p: paired bootstrap test against "
          "baseline (items resampled once for both), Holm-adjusted over the strategies "
          "in brackets; on base's source-correct: the denominator held at the baseline's "
          "source-correct items")


def interventions_markdown(result: Mapping[str, Any]) -> str:
    """The table as Markdown, with per-target figures below it."""
    header, rows = table_rows(result)
    out = [f"# Interventions: {result['source']} -> {', '.join(result['targets'])}", "",
           f"{result['n_items']} items; {answers_per_pair(result)}; 95% bootstrap CIs over "
           "items "
           f"({result.get('n_boot')} resamples). {LEGEND}.", "",
           "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += ["", "## Per target", "", "| strategy | target | per-response transfer % | "
            "ensembled transfer % | per-response overall success % | chi2 | parse fail |",
            "|---|---|---|---|---|---|---|"]
    for name, m in result["strategies"].items():
        fails = (m.get("parse_failures") or {}).get("by_language", {})
        for tgt, t in (m.get("per_target") or {}).items():
            out.append(f"| {name} | {tgt} | {_with_ci(t.get('response_transfer'))} | "
                       f"{_with_ci(t.get('transfer'))} | "
                       f"{_with_ci(t.get('response_success'))} | {_chi2(t.get('chi2'))} | "
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

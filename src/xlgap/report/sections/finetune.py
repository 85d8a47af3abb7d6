"""Fine-tuning (``finetune.json`` of ``xlgap finetune``): one row per run (blocks frozen),
loss, transfer before and after with CIs and paired p, ILO before and after, and the two
figures. A file of another shape falls back to the generic view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.blocks import Block, Cell, Details, Table, cell, p_cell
from xlgap.report.format import finite, fmt_number, fmt_p, mapping, points, value
from xlgap.report.plots import finetune as plots
from xlgap.report.sections import FigureSpec, n_boot_of, register
from xlgap.report.sections.extra import ShapedSection, change

__all__ = ["FinetuneSection", "finetune_summary"]


def _after(run: Mapping[str, Any]) -> Mapping[str, Any]:
    """Pooled transfer after fine-tuning, its paired test against the base as ``vs_base``."""
    return mapping(mapping(run.get("transfer_after")).get("all"))


def _layer_mean(x: Any) -> float | None:
    """ILO by layer (a list) -> its mean over layers; a single number stays itself."""
    if isinstance(x, list):
        vals = [value(v) for v in x]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None
    return value(x)


def finetune_summary(data: Any) -> str | None:
    """The headline: the freeze setting whose transfer on the base model's source-correct
    items moved most (mean of its seeds), with its p Holm-adjusted over the settings it
    was picked from and overall success beside it; files without a headline fall back to
    the run that moved transfer most, its p marked unadjusted."""
    data = mapping(data)
    head = mapping(data.get("headline"))
    n_boot = n_boot_of(data)
    if value(head.get("estimate")) is not None:
        seeds = data.get("seeds") or []
        success = mapping(head.get("overall_success"))
        return (f"{data.get('method', 'fine-tuning')} on {data.get('lang', '?')}, first "
                f"{head.get('freeze_first', '?')} blocks frozen (mean of {len(seeds)} "
                f"seeds): {head.get('label', 'transfer')} {points(value(head['estimate']))}, "
                f"p = {fmt_p(head.get('p_holm'), n_boot)} ({head.get('p_holm_label')}); "
                f"overall success {points(value(success.get('estimate')) or 0.0)}")
    best = None
    for run in data.get("runs") or []:
        run = mapping(run)
        before = mapping(run.get("transfer_before")).get("all")
        after = _after(run)
        b, a = value(before), value(after)
        if a is not None and (best is None or (a - (b or 0)) > best[0]):
            best = (a - (b or 0), run, before, after)
    if best is None:
        return None
    _, run, before, after = best
    runs = len(data.get("runs") or [])
    return (f"{data.get('method', 'fine-tuning')} on {data.get('lang', '?')}, first "
            f"{run.get('freeze_first', '?')} blocks frozen: transfer "
            f"{change(before, after, n_boot)}"
            + (f" (the largest of {runs} runs; p not adjusted for the pick)" if runs > 1
               else ""))


def finetune_table(data: Any) -> list[Block]:
    """One row per fine-tuning run (freeze setting and seed): loss, transfer and ILO
    (mean over layers) before and after."""
    rows: list[list[Cell]] = []
    for run in mapping(data).get("runs") or []:
        run = mapping(run)
        after = _after(run)
        ilo = [_layer_mean(run.get("ilo_before")), _layer_mean(run.get("ilo_after"))]
        label = str(run.get("freeze_first")) + (
            f" (seed {run['seed']})" if run.get("seed") is not None else "")
        rows.append([Cell(label, finite(run.get("freeze_first")), num=True),
                     Cell(f"{fmt_number(run.get('loss_first'))} -> "
                          f"{fmt_number(run.get('loss_last'))}"),
                     cell(mapping(run.get("transfer_before")).get("all")), cell(after),
                     p_cell(mapping(after.get("vs_base")).get("p"), n_boot_of(data)),
                     Cell(" -> ".join(fmt_number(x) for x in ilo))])
    if not rows:
        return []
    return [Table(["frozen first blocks", "loss", "transfer before", "transfer after",
                   "p (paired)", "ILO before -> after (mean over layers)"], rows,
                  caption="Fine-tuning runs (transfer pooled over targets, 95% CIs)")]


def settings_table(data: Any) -> list[Block]:
    """Per freeze setting, the mean of its seeds against the base model: transfer on the
    base model's source-correct items and overall success, each with its item CI, paired
    p and the SD between seeds."""
    rows: list[list[Cell]] = []
    n_boot = n_boot_of(data)
    for setting in mapping(data).get("settings") or []:
        setting = mapping(setting)
        pairs = mapping(setting.get("pairs_after"))
        for metric in ("transfer_base_items", "overall_success", "transfer"):
            m = mapping(pairs.get(metric))
            if not m:
                continue
            sd = mapping(m.get("seed_spread")).get("sd")
            rows.append([Cell(str(setting.get("freeze_first")), finite(
                setting.get("freeze_first")), num=True), Cell(metric), cell(m),
                cell(m.get("vs_base") or None),
                p_cell(mapping(m.get("vs_base")).get("p"), n_boot), Cell(fmt_number(sd))])
    if not rows:
        return []
    return [Table(["frozen first blocks", "metric", "after, mean of seeds [95% CI]",
                   "change vs base [95% CI]", "p (paired, unadjusted)", "SD between seeds"],
                  rows, caption="Freeze settings over their training seeds (item CIs; the "
                  "seeds' spread beside them). transfer_base_items: transfer on the base "
                  "model's source-correct items (fixed denominator)")]


def comparisons_table(data: Any) -> list[Block]:
    """Every two freeze settings against each other on the same held-out items."""
    rows = [[Cell(f"{c.get('a')} vs {c.get('b')}"), Cell(str(c.get("metric"))),
             cell(c.get("estimate_a")), cell(c.get("estimate_b")),
             cell({"estimate": c.get("estimate"), "ci": c.get("ci")}),
             p_cell(c.get("p"), n_boot_of(data))]
            for c in mapping(data).get("comparisons") or []
            if isinstance(c, Mapping) and "by_layer" not in c]
    if not rows:
        return []
    return [Details("freeze settings against each other", [Table(
        ["frozen blocks", "metric", "first", "second", "difference [95% CI]", "p (paired)"],
        rows, caption="Paired on the same held-out items")])]


@register
class FinetuneSection(ShapedSection):
    kind = "finetune"
    formats = ("finetune",)
    order = 5
    title = "Fine-tuning"
    card_label = "fine-tuning"
    command = "finetune"

    def describe(self, data: Any) -> str | None:
        return finetune_summary(data)

    def tables(self, data: Any) -> list[Block]:
        table = finetune_table(data)
        return [*settings_table(data), *table, *comparisons_table(data)] if table else []

    def specs(self, data: Mapping[str, Any]) -> list[FigureSpec]:
        return [FigureSpec("finetune_transfer.png", "Held-out items after fine-tuning: "
                           "transfer and accuracy per run (95% CIs)",
                           lambda: plots.draw_transfer(data)),
                FigureSpec("finetune_ilo.png", "ILO and parallel cosine by layer, before "
                           "and after fine-tuning", lambda: plots.draw_ilo(data))]

"""Fine-tuning (``finetune.json`` of ``xlgap finetune``): one row per run (blocks frozen),
loss, transfer before and after with CIs and paired p, ILO before and after, and the two
figures. A file of another shape falls back to the generic view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.blocks import Block, Cell, Details, Table, cell, p_cell
from xlgap.report.format import finite, fmt_number, mapping, value
from xlgap.report.plots import finetune as plots
from xlgap.report.sections import FigureSpec, n_boot_of, register
from xlgap.report.sections.extra import ShapedSection, change

__all__ = ["FinetuneSection", "finetune_summary"]


def _after(run: Mapping[str, Any]) -> dict[str, Any]:
    """Pooled transfer after fine-tuning, with its paired p folded in."""
    after = dict(mapping(mapping(run.get("transfer_after")).get("all")))
    p = mapping(run.get("transfer_after")).get("p_value")
    if isinstance(p, Mapping):
        after.setdefault("p_value", p.get("all"))
    return after


def finetune_summary(data: Any) -> str | None:
    """The fine-tuning run that moved transfer most, before -> after."""
    best = None
    for run in mapping(data).get("runs") or []:
        run = mapping(run)
        before = mapping(run.get("transfer_before")).get("all")
        after = _after(run)
        b, a = value(before), value(after)
        if a is not None and (best is None or (a - (b or 0)) > best[0]):
            best = (a - (b or 0), run, before, after)
    if best is None:
        return None
    _, run, before, after = best
    data = mapping(data)
    return (f"{data.get('method', 'fine-tuning')} on {data.get('lang', '?')}, first "
            f"{run.get('freeze_first', '?')} blocks frozen: transfer "
            f"{change(before, after, n_boot_of(data))}")


def finetune_table(data: Any) -> list[Block]:
    """One row per fine-tuning run: loss, transfer and ILO before and after."""
    rows: list[list[Cell]] = []
    for run in mapping(data).get("runs") or []:
        run = mapping(run)
        after = _after(run)
        ilo = [value(x) if not isinstance(x, list) else None
               for x in (run.get("ilo_before"), run.get("ilo_after"))]
        rows.append([Cell(str(run.get("freeze_first")), finite(run.get("freeze_first")),
                          num=True),
                     Cell(f"{fmt_number(run.get('loss_first'))} -> "
                          f"{fmt_number(run.get('loss_last'))}"),
                     cell(mapping(run.get("transfer_before")).get("all")), cell(after),
                     p_cell(after.get("p_value"), n_boot_of(data)),
                     Cell(" -> ".join(fmt_number(x) for x in ilo))])
    if not rows:
        return []
    return [Table(["frozen first blocks", "loss", "transfer before", "transfer after",
                   "p (paired)", "ILO before -> after"], rows,
                  caption="Fine-tuning runs (transfer pooled over targets, 95% CIs)")]


def comparisons_table(data: Any) -> list[Block]:
    """Every two freeze settings against each other on the same held-out items."""
    rows = [[Cell(f"{c.get('a')} vs {c.get('b')}"), Cell(str(c.get("metric"))),
             cell(c.get("estimate_a")), cell(c.get("estimate_b")),
             cell({"estimate": c.get("difference"), "ci": c.get("ci")}),
             p_cell(c.get("p"), n_boot_of(data))]
            for c in mapping(data).get("comparisons") or [] if isinstance(c, Mapping)]
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
        return [*table, *comparisons_table(data)] if table else []

    def specs(self, data: Mapping[str, Any]) -> list[FigureSpec]:
        return [FigureSpec("finetune_transfer.png", "Held-out items after fine-tuning: "
                           "transfer and accuracy per run (95% CIs)",
                           lambda: plots.draw_transfer(data)),
                FigureSpec("finetune_ilo.png", "ILO and parallel cosine by layer, before "
                           "and after fine-tuning", lambda: plots.draw_ilo(data))]

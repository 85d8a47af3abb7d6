"""Fine-tuning (``finetune.json`` of ``xlgap finetune``): one row per run (blocks frozen),
loss, transfer before and after with CIs and paired p, ILO before and after, and the two
figures. A file of another shape falls back to the generic view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.blocks import Block, Cell, Para, Table, cell, p_cell
from xlgap.report.discover import Artifact
from xlgap.report.format import finite, fmt_number, mapping, value
from xlgap.report.plots import finetune as plots
from xlgap.report.sections import FigureSpec, n_boot_of, register
from xlgap.report.sections.extra import ExtraSection, all_values, change

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


@register
class FinetuneSection(ExtraSection):
    kind = "finetune"
    formats = ("finetune",)
    order = 5
    title = "Fine-tuning"
    card_label = "fine-tuning"
    command = "finetune"

    def heading(self, art: Artifact) -> str:
        return super(ExtraSection, self).heading(art)

    def card(self, art: Artifact) -> Any:
        return super(ExtraSection, self).card(art)

    def toc_label(self, art: Artifact) -> str:
        return super(ExtraSection, self).toc_label(art)

    def command_name(self, art: Artifact, config: Mapping[str, Any]) -> str:
        return self.command

    def summary(self, art: Artifact) -> str | None:
        return finetune_summary(art.get(self.kind)) or super().summary(art)

    def body(self, art: Artifact) -> list[Block]:
        data = art.get(self.kind)
        if data is None:
            return []
        table = finetune_table(data)
        if not table:
            return super().body(art)
        summary = self.summary(art)
        return [*([Para(summary, "verdict")] if summary else []), *table,
                *all_values(art.formats[self.kind], data)]

    def figures(self, art: Artifact) -> list[FigureSpec]:
        data = art.get(self.kind)
        if not isinstance(data, Mapping) or not finetune_table(data):
            return []
        return [FigureSpec("finetune_transfer.png", "Held-out items after fine-tuning: "
                           "transfer and accuracy per run (95% CIs)",
                           lambda: plots.draw_transfer(data)),
                FigureSpec("finetune_ilo.png", "ILO and parallel cosine by layer, before "
                           "and after fine-tuning", lambda: plots.draw_ilo(data))]

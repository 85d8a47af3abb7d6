"""``by_source.json`` of ``xlgap sample --source item`` (ECLeKTic's protocol): transfer
measured from each item's own source language, per source group and pooled over all items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.blocks import Block, Cell, Table, cell, count_cell
from xlgap.report.discover import Artifact, data_label, load_json
from xlgap.report.format import fmt_estimate, mapping, value
from xlgap.report.sections import FigureSpec, register
from xlgap.report.sections.extra import ShapedSection


def by_source_summary(data: Any) -> str | None:
    """The headline: the pooled transfer, overall success and agreement, with the number of
    items and source languages they pool."""
    data = mapping(data)
    pooled, groups = mapping(data.get("pooled")), mapping(data.get("groups"))
    if not groups or not pooled:
        return None
    where = (f"{pooled.get('n_items', '?')} items asked from their own source language "
             f"({len(groups)} source{'s' if len(groups) != 1 else ''}: "
             f"{', '.join(map(str, groups))})")
    transfer = pooled.get("transfer")
    if value(transfer) is None:
        # transfer is conditional on a right answer in the source: none means no estimate
        return f"{where}: no transfer estimate (no item was answered right in its source)"
    return (f"{where}: pooled transfer {fmt_estimate(transfer)}, overall success "
            f"{fmt_estimate(pooled.get('overall_success'))}, agreement "
            f"{fmt_estimate(pooled.get('agreement'))}")


def _row(name: str, entry: Mapping[str, Any]) -> list[Cell]:
    targets = entry.get("targets")
    accuracy = entry.get("source_accuracy")
    return [Cell(name), count_cell(entry.get("n_items")),
            Cell(", ".join(map(str, targets)) if isinstance(targets, list) else "all"),
            cell(accuracy) if accuracy is not None else Cell("-"),
            cell(entry.get("transfer")), cell(entry.get("overall_success")),
            cell(entry.get("agreement"))]


def by_source_table(data: Any) -> list[Block]:
    data = mapping(data)
    groups = mapping(data.get("groups"))
    if not groups or not isinstance(data.get("pooled"), Mapping):
        return []
    rows = [_row(str(src), mapping(g)) for src, g in groups.items()]
    rows.append(_row("pooled", mapping(data["pooled"])))
    return [Table(["source", "items", "targets", "source accuracy", "transfer [95% CI]",
                   "overall success [95% CI]", "agreement [95% CI]"], rows,
                  caption="Each source group is its own run (source-<lang>/, diagnosed on "
                  "its own); 'pooled' sums the per-item transfer parts over all groups "
                  "and resamples items")]


@register
class BySourceSection(ShapedSection):
    kind = "by_source"
    formats = ("by_source",)
    order = 8  # after the other kinds: it pools runs shown above it
    title = "Transfer from each item's source"
    card_label = "by source"
    command = "sample"

    def heading(self, art: Artifact) -> str:
        # by_source.json names no model or data: its groups' runs (OUT/source-<lang>/) do
        if art.model == "unknown model":
            for group in mapping(mapping(art.get(self.kind)).get("groups")).values():
                run = mapping(load_json(art.dir / str(mapping(group).get("run")) /
                                        "run.json").data)
                if run.get("model"):
                    on = f" on {data_label(str(run.get('data') or ''))}"
                    return f"{self.title}: {run['model']}{on if run.get('data') else ''}"
        return super().heading(art)

    def describe(self, data: Any) -> str | None:
        return by_source_summary(data)

    def tables(self, data: Any) -> list[Block]:
        return by_source_table(data)

    def specs(self, data: Mapping[str, Any]) -> list[FigureSpec]:
        return []

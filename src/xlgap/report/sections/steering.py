"""Steering (``steering.json`` of ``xlgap steer``): the best setting chosen on dev against
no steering on held-out test items, each metric with its CI and paired p, and the
sweep, test and inside figures. A file of another shape falls back to the generic view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.blocks import Block, Cell, Para, Table, cell, p_cell
from xlgap.report.discover import Artifact
from xlgap.report.format import mapping, value
from xlgap.report.plots import steering as plots
from xlgap.report.sections import FigureSpec, n_boot_of, register
from xlgap.report.sections.extra import ExtraSection, all_values, change

__all__ = ["SteeringSection", "steering_summary"]

METRICS = ("transfer", "accuracy", "agreement", "rankc")


def steering_summary(data: Any) -> str | None:
    """The best steering setting (chosen on dev) against no steering, on test."""
    best = mapping(mapping(data).get("best"))
    after = mapping(mapping(best.get("test")).get("all"))
    before = mapping(mapping(mapping(mapping(data).get("baseline")).get("test")).get("all"))
    if value(after.get("transfer")) is None:
        return None
    layers = best.get("layers")
    where = f"layers {'+'.join(map(str, layers))}" if isinstance(layers, list) else "layers ?"
    moved = change(before.get("transfer"), after.get("transfer"), n_boot_of(data))
    return (f"steering toward {best.get('direction', '?')} at {where}, alpha "
            f"{best.get('alpha', '?')}: transfer {moved} on held-out items")


def steering_table(data: Any) -> list[Block]:
    """No steering against the best setting on test: each metric with its CI and p."""
    before = mapping(mapping(mapping(data).get("baseline")).get("test"))
    after = mapping(mapping(mapping(data).get("best")).get("test"))
    n_boot = n_boot_of(data)
    rows: list[list[Cell]] = []
    for target in ["all", *mapping(after.get("per_target"))]:
        b = mapping(before.get("all")) if target == "all" else \
            mapping(mapping(before.get("per_target")).get(target))
        a = mapping(after.get("all")) if target == "all" else \
            mapping(mapping(after.get("per_target")).get(target))
        for metric in METRICS:
            if metric in a:
                rows.append([Cell(target), Cell(metric), cell(b.get(metric)),
                             cell(a.get(metric)), p_cell(mapping(a[metric]).get("p_value"),
                                                         n_boot)])
    if not rows:
        return []
    return [Table(["targets", "metric", "no steering [95% CI]", "steered [95% CI]",
                   "p (paired)"], rows, caption="Held-out test items: the best setting chosen "
                  "on dev against no steering")]


@register
class SteeringSection(ExtraSection):
    kind = "steering"
    formats = ("steering",)
    order = 4
    title = "Steering"
    card_label = "steering"
    command = "steer"

    def heading(self, art: Artifact) -> str:
        return super(ExtraSection, self).heading(art)

    def card(self, art: Artifact) -> Any:
        return super(ExtraSection, self).card(art)

    def toc_label(self, art: Artifact) -> str:
        return super(ExtraSection, self).toc_label(art)

    def command_name(self, art: Artifact, config: Mapping[str, Any]) -> str:
        return self.command

    def summary(self, art: Artifact) -> str | None:
        return steering_summary(art.get(self.kind)) or super().summary(art)

    def body(self, art: Artifact) -> list[Block]:
        data = art.get(self.kind)
        if data is None:
            return []
        table = steering_table(data)
        if not table:  # not the shape this page knows: the generic view
            return super().body(art)
        summary = self.summary(art)
        return [*([Para(summary, "verdict")] if summary else []), *table,
                *all_values(art.formats[self.kind], data)]

    def figures(self, art: Artifact) -> list[FigureSpec]:
        data = art.get(self.kind)
        if not isinstance(data, Mapping) or not steering_table(data):
            return []
        return [FigureSpec("steering_test.png", "Test split: no steering against the best "
                           "setting (95% CIs)", lambda: plots.draw_before_after(data)),
                FigureSpec("steering_sweep.png", "Steering sweep on the dev split",
                           lambda: plots.draw_sweep(data)),
                FigureSpec("steering_inside.png", "ILO and parallel cosine by layer, with "
                           "and without steering", lambda: plots.draw_inside(data))]


"""Steering (``steering.json`` of ``xlgap steer``): the best setting chosen on dev against
no steering on held-out test items, each metric with its CI and paired p, and the
sweep, test and inside figures. A file of another shape falls back to the generic view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.blocks import Block, Cell, Table, cell, p_cell
from xlgap.report.format import mapping, value
from xlgap.report.plots import steering as plots
from xlgap.report.sections import FigureSpec, n_boot_of, register
from xlgap.report.sections.extra import ShapedSection, change

__all__ = ["SteeringSection", "steering_summary"]

def _holm(data: Any, target: str, metric: str) -> Any:
    """The best setting's Holm-adjusted p on test (None in files written before it)."""
    holm = mapping(mapping(mapping(data).get("best")).get("holm"))
    return mapping(mapping(holm.get("p")).get(target)).get(metric)


def steering_summary(data: Any) -> str | None:
    """The best steering setting (chosen on dev) against no steering on test: the change
    of transfer with its Holm-adjusted p (over every metric and target tested), and where
    it ranks among the random directions."""
    best = mapping(mapping(data).get("best"))
    after = dict(mapping(mapping(best.get("test")).get("all")))
    before = mapping(mapping(mapping(mapping(data).get("baseline")).get("test")).get("all"))
    if value(after.get("transfer")) is None:
        return None
    layers = best.get("layers")
    where = f"layers {'+'.join(map(str, layers))}" if isinstance(layers, list) else "layers ?"
    transfer = dict(mapping(after.get("transfer")))
    holm = _holm(data, "all", "transfer")
    label = mapping(best.get("holm")).get("label")
    if holm is not None:
        # the headline carries the adjusted p, labelled below
        transfer["vs_base"] = {**mapping(transfer.get("vs_base")), "p": holm}
    moved = change(before.get("transfer"), transfer, n_boot_of(data))
    text = (f"steering toward {best.get('direction', '?')} at {where}, alpha "
            f"{best.get('alpha', '?')}: transfer {moved} on held-out items")
    text += f" (p {label})" if holm is not None and label else " (p not adjusted)"
    control = mapping(mapping(data).get("control"))
    rank = mapping(mapping(control.get("rank")).get("transfer"))
    if value(rank.get("percentile")) is not None:
        text += (f"; {rank['percentile']:.0f}th percentile among {control.get('draws')} "
                 f"random directions")
    return text


def _arm(data: Any, arm: str, target: str) -> Mapping[str, Any]:
    test = mapping(mapping(mapping(data).get(arm)).get("test"))
    return mapping(test.get("all")) if target == "all" else \
        mapping(mapping(test.get("per_target")).get(target))


def steering_table(data: Any) -> list[Block]:
    """No steering, the best setting and the random control on test: every metric with its
    CI, each arm's paired p against no steering (the best setting's also Holm-adjusted),
    and, pooled, the steered effect's percentile among the random directions'."""
    after = mapping(mapping(mapping(data).get("best")).get("test"))
    n_boot = n_boot_of(data)
    control_block = mapping(mapping(data).get("control"))
    has_control = bool(control_block.get("test"))
    draws = control_block.get("draws") or 1
    rank = mapping(control_block.get("rank"))
    has_holm = bool(mapping(mapping(data).get("best")).get("holm"))
    # steered against the control, pooled: is it the direction or any push of that size?
    versus = mapping(control_block.get("best_vs_control"))
    rows: list[list[Cell]] = []
    for target in ["all", *mapping(after.get("per_target"))]:
        before, best = _arm(data, "baseline", target), _arm(data, "best", target)
        control = _arm(data, "control", target)
        for metric in best:
            a, c = mapping(best.get(metric)), mapping(control.get(metric))
            pct = mapping(rank.get(metric)).get("percentile") if target == "all" else None
            rows.append([Cell(target), Cell(metric), cell(before.get(metric)), cell(a),
                         p_cell(mapping(a.get("vs_base")).get("p"), n_boot),
                         *([p_cell(_holm(data, target, metric), n_boot)] if has_holm else []),
                         *([cell(c or None), p_cell(mapping(c.get("vs_base")).get("p"), n_boot),
                            p_cell(mapping(mapping(versus.get(metric)).get("vs_control")).get("p")
                                   if target == "all" else None, n_boot),
                            Cell("-" if pct is None else f"{pct:.0f}", pct, num=True)]
                           if has_control else [])])
    if not rows:
        return []
    control_cols = ([f"random control, mean of {draws} [95% CI]", "p control",
                     "p steered vs control", f"percentile among {draws} random"]
                    if has_control else [])
    holm_cols = ["p (Holm)"] if has_holm else []
    return [Table(["targets", "metric", "no steering [95% CI]", "steered [95% CI]",
                   "p (paired)", *holm_cols, *control_cols], rows,
                  caption="Held-out test items: the best setting chosen on dev against no "
                  f"steering, and {draws} random directions (one per draw shared by the "
                  "setting's layers, the same total push); the percentile places the "
                  "steered effect among the random directions' effects. p (paired) is "
                  "unadjusted; p (Holm) is adjusted over every test in the table's "
                  "steered column")]


@register
class SteeringSection(ShapedSection):
    kind = "steering"
    formats = ("steering",)
    order = 4
    title = "Steering"
    card_label = "steering"
    command = "steer"

    def describe(self, data: Any) -> str | None:
        return steering_summary(data)

    def tables(self, data: Any) -> list[Block]:
        return steering_table(data)

    def specs(self, data: Mapping[str, Any]) -> list[FigureSpec]:
        return [FigureSpec("steering_test.png", "Test split: no steering against the best "
                           "setting (95% CIs)", lambda: plots.draw_before_after(data)),
                FigureSpec("steering_sweep.png", "Steering sweep on the dev split",
                           lambda: plots.draw_sweep(data)),
                FigureSpec("steering_inside.png", "ILO and parallel cosine by layer, with "
                           "and without steering", lambda: plots.draw_inside(data))]

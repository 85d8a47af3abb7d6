"""``xlgap plan PILOT_DIR``: how many items (and samples, and money, and time) a study
needs, from a pilot run. The analysis is :func:`xlgap.stats.plan_study.plan`; this
command writes ``plan.json`` and ``plan.png`` and prints a table."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from xlgap.cli.config import opt
from xlgap.cli.registry import command
from xlgap.errors import ConfigError
from xlgap.report.plots.planning import write_plan_plot
from xlgap.stats.plan_study import plan


@dataclass
class PlanConfig:
    positional: ClassVar[tuple[str, str]] = ("pilot", "?")  # xlgap plan PILOT_DIR
    pilot: str = opt("", "the pilot: a run directory (xlgap sample), or an interventions "
                     "directory (xlgap intervene) to plan strategy differences too")
    ci: float | None = opt(None, "the CI half-width wanted, e.g. 0.03")
    effect: float | None = opt(None, "the smallest effect to detect, e.g. 0.05")
    power: float = opt(0.8, "with --effect: the power wanted")
    metrics: str = opt("", "pair metrics to plan, comma-separated (default: the headline "
                       "ones registered: transfer, agreement, overall_success, response_*)")
    strategy_metric: str = opt("transfer", "the metric of strategy differences")
    pi: bool = opt(True, "plan pi too: refits on subsamples and the K curve on the "
                   "simulator (--no-pi: much faster)")
    reps: int = opt(20, "draws of items per subsample size")
    n_boot: int = opt(400, "bootstrap resamples per draw")
    price_in: float | None = opt(None, "price per million prompt tokens")
    price_out: float | None = opt(None, "price per million answer tokens")
    out: str = opt("", "where to write plan.json and plan.png (default: the pilot dir)")
    seed: int = opt(0, "random seed")


def _fmt(entry: dict[str, Any]) -> str:
    n = entry.get("items_needed")
    if n is None:
        return "-"
    goal = entry.get("for_ci") or entry.get("for_effect") or {}
    return f"{n}{'*' if goal.get('extrapolated') else ''}"


def format_plan(result: dict[str, Any]) -> str:
    """The plan as a short text table (items pooled and per target)."""
    targets = sorted({t for e in result["metrics"].values() for t in e.get("per_target", {})})
    lines = [f"{'metric':<26} {'pooled':>7}  " + " ".join(f"{t:>6}" for t in targets)]
    for name, e in result["metrics"].items():
        per = e.get("per_target", {})
        lines.append(f"{name:<26} {_fmt(e):>7}  "
                     + " ".join(f"{_fmt(per[t]) if t in per else '':>6}" for t in targets))
        if e.get("why"):
            lines.append(f"  ({e['why']})")
    lines.append("(* beyond the largest size drawn: from the fitted c/sqrt(n))")
    run = result["run"]
    if run["items"] is None:
        lines.append("\nno plan: no quantity can be measured from this pilot (see above)")
    else:
        lines.append(f"\nplanned run: {run['items']} items (driven by {run['driven_by']}), "
                     f"K = {run['samples'] if run['samples'] else 'n/a (exact)'}")
    spi = result.get("samples_per_item") or {}
    if spi and not spi.get("applies", True):
        lines.append(f"samples per item: {spi['why']}")
    elif spi.get("k_needed"):
        lines.append(f"samples per item for pi: K = {spi['k_needed']} (simulator coverage "
                     f"{spi['coverage_at_k']:.2f})")
    cost = result.get("cost") or {}
    if cost and not cost.get("recorded"):
        lines.append(f"cost: {cost.get('why')}")
    for kind, c in (cost.get("backends") or {}).items():
        parts = [f"{c['calls']:.0f} calls"]
        if c.get("prompt_tokens") is not None:
            parts.append(f"{c['prompt_tokens']:.0f} prompt + {c['answer_tokens']:.0f} "
                         "answer tokens")
        if c.get("cost") is not None:
            parts.append(f"cost {c['cost']:.2f}")
        if c.get("expected_seconds") is not None:
            parts.append(f"about {c['expected_seconds']:.0f} s")
        lines.append(f"cost ({kind}): " + ", ".join(parts))
    return "\n".join(lines)


@command("plan", PlanConfig)
def cmd_plan(cfg: PlanConfig) -> int:
    if not cfg.pilot:
        raise ConfigError("xlgap plan PILOT_DIR: give the pilot's directory")
    metrics = [m.strip() for m in cfg.metrics.split(",") if m.strip()] or None
    result = plan(cfg.pilot, ci=cfg.ci, effect=cfg.effect, power=cfg.power, metrics=metrics,
                  strategy_metric=cfg.strategy_metric, pi=cfg.pi, reps=cfg.reps,
                  n_boot=cfg.n_boot, seed=cfg.seed, price_in=cfg.price_in,
                  price_out=cfg.price_out)
    out = Path(cfg.out) if cfg.out else Path(cfg.pilot)
    path = result.save(out / "plan.json")
    figure = write_plan_plot(result, out)
    print(format_plan(result))
    print(f"\n[xlgap] wrote {path}" + (f" and {figure}" if figure else ""), file=sys.stderr)
    return 0

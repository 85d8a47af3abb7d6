"""Pool the runs of ``xlgap sample --source item``: one run per source language.

ECLeKTic asks each question from the language its fact comes from, so a run per source
group measures transfer from there. :func:`pool_by_source` gathers the groups: per group
the estimates of its ``diagnosis.json``, and over all groups the pooled transfer
(sum of the per-item numerators over the sum of the denominators, the way one run pools
its targets) with overall success and agreement, each with an item-bootstrap CI. Items are
the resampling unit; every item belongs to exactly one group.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.io import dump_json
from xlgap.provenance import provenance, tagged
from xlgap.runs import load_run
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, mean_with_ci, ratio_with_ci
from xlgap.stats.diagnose import distribution
from xlgap.stats.metrics import agreement_per_item, overall_success_per_item, transfer_parts

FORMAT = "by_source"  # the format tag of by_source.json
PARTS = ("transfer_num", "transfer_den", "overall_success", "agreement")


def group_parts(run_dir: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per-item ``(Q, T)`` arrays of one run (NaN: pair missing) for :data:`PARTS`, and
    its targets, computed as its diagnosis does (source against each target)."""
    run = load_run(run_dir)
    targets = [t for t in run.targets if t in run.present]
    p = distribution(run, run.source)
    cols: dict[str, list[np.ndarray]] = {key: [] for key in PARTS}
    for t in targets:
        q = distribution(run, t)
        num, den = transfer_parts(p, q, run.gold)
        cols["transfer_num"].append(num)
        cols["transfer_den"].append(den)
        cols["overall_success"].append(overall_success_per_item(p, q, run.gold))
        cols["agreement"].append(agreement_per_item(p, q))
    shape = (run.n_items, 0)
    return ({key: np.stack(v, axis=1) if v else np.empty(shape) for key, v in cols.items()},
            targets)


def _stack_rows(arrays: list[np.ndarray]) -> np.ndarray:
    """Groups' ``(Q_g, T_g)`` arrays as one ``(sum Q_g, max T_g)``, NaN-padded: the groups
    have different targets, and the pooled statistics only reduce over each item's row."""
    width = max((a.shape[1] for a in arrays), default=0)
    out = np.full((sum(a.shape[0] for a in arrays), width), np.nan)
    row = 0
    for a in arrays:
        out[row:row + a.shape[0], :a.shape[1]] = a
        row += a.shape[0]
    return out


def _sums(num: np.ndarray, den: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(num) & np.isfinite(den)
    return {"numerator": float(num[ok].sum()), "denominator": float(den[ok].sum())}


def _diagnosis(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "diagnosis.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def pool_by_source(runs: Mapping[str, str | Path], *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
                   ) -> dict[str, Any]:
    """``by_source.json`` of the runs ``source language -> run directory`` (see
    docs/run-format.md): per group its run, item count, targets, source accuracy, and
    overall transfer, overall success and agreement from its ``diagnosis.json`` (null
    where it has none) with the transfer parts; ``pooled``: the same over all items."""
    groups: dict[str, Any] = {}
    parts: dict[str, list[np.ndarray]] = {key: [] for key in PARTS}
    for src, run_dir in runs.items():
        per, targets = group_parts(run_dir)
        for key in PARTS:
            parts[key].append(per[key])
        diag = _diagnosis(Path(run_dir))
        overall = diag.get("overall") or {}
        groups[src] = {"run": Path(run_dir).name, "n_items": int(per["transfer_num"].shape[0]),
                       "targets": targets,
                       "source_accuracy": (diag.get("accuracy") or {}).get(src),
                       **{key: overall.get(key)
                          for key in ("transfer", "overall_success", "agreement")},
                       "transfer_parts": _sums(per["transfer_num"], per["transfer_den"]),
                       "verdict": diag.get("verdict")}
    stacked = {key: _stack_rows(v) for key, v in parts.items()}
    num, den = stacked["transfer_num"], stacked["transfer_den"]
    pooled = {"n_items": int(num.shape[0]),
              "transfer": ratio_with_ci(num, den, n_boot=n_boot, seed=seed),
              "transfer_parts": _sums(num, den),
              "overall_success": mean_with_ci(stacked["overall_success"], n_boot=n_boot,
                                              seed=seed),
              "agreement": mean_with_ci(stacked["agreement"], n_boot=n_boot, seed=seed)}
    return tagged(FORMAT, {"sources": list(groups), "groups": groups, "pooled": pooled,
                           "n_boot": n_boot, "seed": seed,
                           "provenance": provenance(runs={k: str(v) for k, v in runs.items()})})


def format_by_source(result: dict[str, Any]) -> str:
    """The pooled summary as a short table: one row per source group, then all pooled."""

    def fmt(entry: dict[str, Any] | None) -> str:
        if not entry or entry.get("estimate") is None:
            return "-"
        lo, hi = entry.get("ci") or (None, None)
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        return f"{entry['estimate']:.3f}{ci}"

    lines = [f"{'source':<10} {'items':>6}  {'transfer':<24} {'overall success':<24} "
             f"{'agreement':<24}"]
    rows = [*result["groups"].items(), ("pooled", result["pooled"])]
    for name, row in rows:
        lines.append(f"{name:<10} {row['n_items']:>6}  {fmt(row.get('transfer')):<24} "
                     f"{fmt(row.get('overall_success')):<24} {fmt(row.get('agreement')):<24}")
    return "\n".join(lines)


def write_by_source(out: str | Path, runs: Mapping[str, str | Path], **kw: Any
                    ) -> dict[str, Any]:
    """:func:`pool_by_source` written to ``OUT/by_source.json``; returns it."""
    result = pool_by_source(runs, **kw)
    dump_json(result, Path(out) / "by_source.json")
    return result

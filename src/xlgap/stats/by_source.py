"""Pool the runs of ``xlgap sample --source item``: one run per source language.

ECLeKTic asks each question from the language its fact comes from, so a run per source
group measures transfer from there. :func:`pool_by_source` gathers the groups: per group
its estimates, recomputed from its run (a ``diagnosis.json`` left from older answers
cannot leak in), and over all groups the pooled transfer (sum of the per-item numerators
over the sum of the denominators, the way one run pools its targets and ECLeKTic pools
its sources) with overall success and agreement, each with an item-bootstrap CI. The
pooled figures weigh a group by its source-correct pairs, so ``macro`` gives the mean of
the per-group figures beside them (every source language weighs the same). Items are the
resampling unit, resampled within each group (a stratified bootstrap: the groups' sizes
are fixed by the data set, not drawn); every item belongs to exactly one group.
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
from xlgap.stats.bootstrap import (
    ALPHA,
    DEFAULT_N_BOOT,
    percentile_ci,
    resample_weights,
    summary,
)
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


def _rows(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item the sums of ``num`` and ``den`` over its entries where both are finite."""
    ok = np.isfinite(num) & np.isfinite(den)
    return np.where(ok, num, 0.0).sum(axis=1), np.where(ok, den, 0.0).sum(axis=1)


def _ratio(w: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (w @ num) / (w @ den)
    return np.where(np.isfinite(out), out, np.nan)


def stratified_summaries(groups: list[tuple[np.ndarray, np.ndarray]], *,
                         n_boot: int = DEFAULT_N_BOOT, seed: int = 0, alpha: float = ALPHA
                         ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Per group, pooled and macro (mean over groups) ratio ``sum num / sum den``.

    ``groups`` holds each group's ``(Q_g, T_g)`` numerators and denominators (NaN:
    missing; a mean metric has 1 where defined as its denominator). One bootstrap draws
    every group's items within the group (``default_rng((seed, g))`` for group g), so a
    replicate keeps the groups' sizes and the pooled, macro and per-group intervals come
    from the same draws; ``n`` counts entries with both parts."""
    rows = [_rows(num, den) for num, den in groups]
    weights = [resample_weights(rn.size, n_boot, np.random.default_rng((seed, g)))
               for g, (rn, _) in enumerate(rows)]
    per_est = [_ratio(np.ones(rn.size), rn, rd) for rn, rd in rows]
    per_rep = [_ratio(w, rn, rd) for w, (rn, rd) in zip(weights, rows, strict=True)]
    counts = [int((np.isfinite(n) & np.isfinite(d)).sum()) for n, d in groups]
    per = [summary(float(e), percentile_ci(r, alpha), c)
           for e, r, c in zip(per_est, per_rep, counts, strict=True)]
    all_n = np.concatenate([rn for rn, _ in rows]) if rows else np.zeros(0)
    all_d = np.concatenate([rd for _, rd in rows]) if rows else np.zeros(0)
    w_all = np.concatenate(weights, axis=1) if rows else np.zeros((n_boot, 0))
    pooled = summary(float(_ratio(np.ones(all_n.size), all_n, all_d)),
                     percentile_ci(_ratio(w_all, all_n, all_d), alpha), sum(counts))

    def macro(vals: list[np.ndarray]) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            stack = np.stack(vals, axis=-1)
            ok = np.isfinite(stack)
            return np.where(ok.any(axis=-1), np.nansum(stack, axis=-1)
                            / np.maximum(ok.sum(axis=-1), 1), np.nan)

    mac = (summary(float(macro([np.asarray(e) for e in per_est])),
                   percentile_ci(macro(per_rep), alpha), sum(counts)) if rows
           else summary(float("nan"), (float("nan"), float("nan")), 0))
    return per, pooled, mac


def _mean_parts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(values)
    return np.where(ok, values, np.nan), np.where(ok, 1.0, np.nan)


def _diagnosis(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "diagnosis.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def pool_by_source(runs: Mapping[str, str | Path], *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
                   ) -> dict[str, Any]:
    """``by_source.json`` of the runs ``source language -> run directory`` (see
    docs/run-format.md): per group its run, item count, targets, source accuracy, and
    transfer, overall success and agreement recomputed from its run, with the transfer
    parts (its verdict and source accuracy from its ``diagnosis.json``, null where it has
    none); ``pooled``: the same over all items; ``macro``: the mean over groups."""
    groups: dict[str, Any] = {}
    parts: dict[str, list[np.ndarray]] = {key: [] for key in PARTS}
    for src, run_dir in runs.items():
        per, targets = group_parts(run_dir)
        for key in PARTS:
            parts[key].append(per[key])
        diag = _diagnosis(Path(run_dir))
        groups[src] = {"run": Path(run_dir).name, "n_items": int(per["transfer_num"].shape[0]),
                       "targets": targets,
                       "source_accuracy": (diag.get("accuracy") or {}).get(src),
                       "transfer_parts": _sums(per["transfer_num"], per["transfer_den"]),
                       "verdict": diag.get("verdict")}
    metrics = {"transfer": list(zip(parts["transfer_num"], parts["transfer_den"],
                                    strict=True)),
               **{key: [_mean_parts(v) for v in parts[key]]
                  for key in ("overall_success", "agreement")}}
    pooled: dict[str, Any] = {"n_items": sum(g["n_items"] for g in groups.values())}
    macro: dict[str, Any] = {}
    for key, arms in metrics.items():
        per_group, pooled[key], macro[key] = stratified_summaries(arms, n_boot=n_boot,
                                                                  seed=seed)
        for g, entry in zip(groups.values(), per_group, strict=True):
            g[key] = entry
    pooled["transfer_parts"] = {
        k: sum(g["transfer_parts"][k] for g in groups.values())
        for k in ("numerator", "denominator")}
    return tagged(FORMAT, {"sources": list(groups), "groups": groups, "pooled": pooled,
                           "macro": macro, "n_boot": n_boot, "seed": seed,
                           "bootstrap": "items resampled within each source group",
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
    if result.get("macro"):
        rows.append(("macro", {"n_items": result["pooled"]["n_items"], **result["macro"]}))
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

"""The whole plan of a study from a pilot: items per metric (:mod:`xlgap.stats.planning`),
samples per item for pi (from the simulator fitted to the pilot), and what the planned
run costs (calls, tokens, money, time) from the pilot's own ``usage.jsonl``.

:func:`plan` returns the ``plan`` result (``plan.json``, documented in
``docs/planning.md``); the ``xlgap plan`` command writes it and draws its figure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.errors import ConfigError, DataError
from xlgap.io import finite
from xlgap.provenance import provenance
from xlgap.results import Result, result_class
from xlgap.runs import USAGE_FILE, Run, load_run, read_usage
from xlgap.stats.bootstrap import ALPHA
from xlgap.stats.pi import PiFitOptions, fit_pi_model
from xlgap.stats.planning import (
    DEFAULT_FACTORS,
    PLAN_PI_OPTIONS,
    pi_counts,
    pilot_quantities,
    plan_quantities,
    strategy_differences,
)
from xlgap.stats.simulate import simulate_arrays

__all__ = ["FORMAT", "plan", "plan_cost", "samples_per_item"]

FORMAT = "plan"
DEFAULT_KS = (2, 5, 10, 20, 40)
#: K "stops narrowing" where pi's CI half-width is within this share of the narrowest
#: half-width of any K tried
NARROWING_TOLERANCE = 0.10
#: simulated studies for the K curve hold at most this many items (a pi fit grows with
#: items; the K at which the per-item noise stops mattering changes slowly with n)
MAX_SIM_ITEMS = 400
EXACT_K_NOTE = ("exact (candidate-scored) run: each (item, language) yields its whole "
                "answer distribution in one scoring call, with no sampling noise, so the "
                "number of samples per item (K) does not apply")


def _common_m(n_options: np.ndarray) -> int:
    values, counts = np.unique(n_options[n_options >= 2], return_counts=True)
    return int(values[np.argmax(counts)]) if values.size else 2


def _counts(answers: np.ndarray, m: int) -> np.ndarray:
    return np.stack([(answers == j).sum(axis=1) for j in range(m)], axis=1).astype(float)


def samples_per_item(run: Run, *, n_items: int | None = None,
                     ks: Sequence[int] = DEFAULT_KS, reps: int = 6, seed: int = 0,
                     alpha: float = ALPHA) -> dict[str, Any]:
    """For pi: the K at which its CI stops narrowing, on the simulator fitted to the pilot.

    The pilot's pi, tau and eta (the model fit) set up :func:`simulate_arrays` with the
    pilot's targets and most common option count; for each K, ``reps`` simulated studies
    of ``n_items`` items (default: the pilot's; at most :data:`MAX_SIM_ITEMS`) are fitted,
    giving pi's mean CI half-width and the share of CIs that hold the true pi
    (coverage). ``k_needed`` is the smallest K whose half-width is within
    :data:`NARROWING_TOLERANCE` of the narrowest. Exact runs: K does not apply."""
    if run.mode == "exact":
        return {"applies": False, "why": EXACT_K_NOTE}
    targets = [t for t in run.targets if t in run.present]
    s_counts, t_counts = pi_counts(run, targets)
    opts = PiFitOptions(**{**PLAN_PI_OPTIONS.__dict__, "seed": seed, "alpha": alpha})
    fit = fit_pi_model(s_counts, t_counts, run.n_options, options=opts).overall
    if fit is None:
        return {"applies": True, "k_needed": None,
                "why": "the pilot's pi fit failed (no usable pairs)"}
    pi, tau, eta = float(fit.pi), float(fit.tau), float(fit.eta)
    m = _common_m(run.n_options)
    n = min(int(n_items or run.n_items), MAX_SIM_ITEMS)
    by_k = []
    for k in sorted({int(k) for k in ks if int(k) >= 1}):
        widths, covered = [], []
        for r in range(reps):
            sim = simulate_arrays(pi=pi, tau=tau, eta=eta, questions=n, samples=k,
                                  options=m, targets=len(targets), seed=seed * 1000 + r)
            est = fit_pi_model(_counts(sim.samples[sim.source], m),
                               {t: _counts(sim.samples[t], m) for t in sim.targets}, m,
                               options=PiFitOptions(**{**opts.__dict__, "seed": r})).overall
            if est is None:
                continue
            widths.append((est.pi_ci[1] - est.pi_ci[0]) / 2)
            covered.append(est.pi_ci[0] <= pi <= est.pi_ci[1])
        by_k.append({"k": k, "halfwidth": finite(float(np.mean(widths))) if widths else None,
                     "coverage": float(np.mean(covered)) if covered else None,
                     "runs": len(widths)})
    ok = [row for row in by_k if row["halfwidth"] is not None]
    best = min(row["halfwidth"] for row in ok) if ok else None
    chosen = (next(row for row in ok if row["halfwidth"] <= best * (1 + NARROWING_TOLERANCE))
              if ok and best is not None else None)
    return {"applies": True, "fitted": {"pi": pi, "tau": tau, "eta": eta, "options": m},
            "pilot_k": run.k, "n_items": n, "by_k": by_k,
            "k_needed": None if chosen is None else chosen["k"],
            "coverage_at_k": None if chosen is None else chosen["coverage"],
            "rule": f"smallest K whose pi CI half-width is within "
                    f"{NARROWING_TOLERANCE:.0%} of the narrowest of K in {list(ks)}"}


def _total(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r.get(key) for r in rows]
    return None if any(v is None for v in vals) else float(sum(vals))  # type: ignore[misc]


def plan_cost(run_dir: str | os.PathLike[str], *, items: int, languages: int,
              samples: int | None = None, pilot_samples: int | None = None,
              price_in: float | None = None, price_out: float | None = None
              ) -> dict[str, Any]:
    """Calls, prompt and answer tokens, money (prices per million tokens) and time of a
    run of ``items`` items in ``languages`` languages, per backend kind, scaled from the
    pilot's ``usage.jsonl`` per (item, language) pair. ``samples`` (K) other than the
    pilot's scales the answers generated, the answer tokens and the time with it (a
    prompt is sent once however many answers it gets)."""
    rows = read_usage(run_dir)
    if not rows:
        return {"recorded": False,
                "why": f"the pilot has no {USAGE_FILE} (runs record calls, tokens and time "
                       "from this version of xlgap on): rerun the pilot to price the plan"}
    pairs_planned = items * languages
    scale = (samples / pilot_samples) if samples and pilot_samples else 1.0
    out: dict[str, Any] = {"recorded": True, "items": items, "languages": languages,
                           "pairs": pairs_planned, "samples": samples, "backends": {}}
    for kind in sorted({str(r.get("backend")) for r in rows}):
        mine = [r for r in rows if str(r.get("backend")) == kind]
        pairs = _total(mine, "pairs") or 0.0
        if pairs <= 0:
            continue
        per = pairs_planned / pairs

        def scaled(key: str, factor: float = 1.0, rows: list[dict[str, Any]] = mine,
                   per: float = per) -> float | None:
            tot = _total(rows, key)
            return None if tot is None else tot * per * factor

        entry: dict[str, Any] = {
            "pilot_pairs": int(pairs), "calls": scaled("prompts"),
            "answers": scaled("completions", scale),
            "prompt_tokens": scaled("prompt_tokens"),
            "answer_tokens": scaled("answer_tokens", scale),
            "prompt_chars": scaled("prompt_chars"),
            "answer_chars": scaled("answer_chars", scale)}
        if entry["prompt_tokens"] is None:
            entry["tokens_note"] = ("tokens were not counted for every chunk (no tokenizer "
                                    "here, and no counts reported by the server, or a "
                                    "pilot from an older xlgap): characters were")
        if price_in is not None and price_out is not None:
            entry["cost"] = (None if entry["prompt_tokens"] is None else
                             entry["prompt_tokens"] * price_in / 1e6
                             + entry["answer_tokens"] * price_out / 1e6)
        if kind != "openai":  # a local model: the pilot's throughput prices the time
            entry.update(_timing(mine, pairs_planned, scale))
        out["backends"][kind] = entry
    return out


def _timing(rows: list[dict[str, Any]], pairs_planned: int, scale: float
            ) -> dict[str, Any]:
    """Expected time of ``pairs_planned`` pairs: the throughput of the chunks after the
    first of each run call (steady state), plus the first chunks' extra time (warm-up:
    loading and compiling) once. Lines written before ``first`` was recorded: the file's
    first line is the warm-up."""
    first = [bool(r.get("first", i == 0)) for i, r in enumerate(rows)]
    steady = [r for r, f in zip(rows, first, strict=True) if not f]
    warm = [r for r, f in zip(rows, first, strict=True) if f]
    base = steady or rows
    secs, pairs = float(sum(r["seconds"] for r in base)), float(sum(r["pairs"] for r in base))
    rate = pairs / secs if secs > 0 else None
    startup = 0.0
    if steady and rate:
        extra = [r["seconds"] - r["pairs"] / rate for r in warm]
        startup = max(0.0, float(np.mean(extra))) if extra else 0.0
    return {"pilot_pairs_per_second": rate,
            "startup_seconds": startup,
            "expected_seconds": (None if not rate else
                                 pairs_planned / rate * scale + startup),
            "time_note": ("the pilot's steady throughput (chunks after the first of each "
                          "run call) on its machine, plus its warm-up once; answers the "
                          "result store already held count as fast")}


def _pilot(path: Path) -> tuple[Path, Path | None]:
    """The baseline run of a pilot and the interventions directory, if it is one."""
    if (path / "run.json").exists():
        return path, None
    if (path / "baseline" / "run.json").exists():
        return path / "baseline", path
    raise DataError(f"{path}: not a pilot: give a run directory (xlgap sample) or an "
                    "interventions directory (xlgap intervene, with baseline/)")


def plan(pilot: str | os.PathLike[str], *, ci: float | None = None,
         effect: float | None = None, power: float = 0.8, alpha: float = ALPHA,
         metrics: Sequence[str] | None = None, strategy_metric: str = "transfer",
         reps: int = 20, factors: Sequence[float] = DEFAULT_FACTORS, n_boot: int = 400,
         seed: int = 0, pi: bool = True, ks: Sequence[int] = DEFAULT_KS, k_reps: int = 6,
         price_in: float | None = None, price_out: float | None = None) -> Result:
    """Plan a study from the pilot in ``pilot`` (a run, or an interventions directory
    whose strategies are then planned as paired differences against the baseline).
    Returns the ``plan`` result; see ``docs/planning.md``."""
    if ci is None and effect is None:
        raise ConfigError("plan: give a CI half-width (ci=0.03, --ci) or an effect "
                          "(effect=0.05, --effect)")
    if (price_in is None) != (price_out is None):
        raise ConfigError("plan: give both --price-in and --price-out (per million tokens)")
    run_dir, strategies_dir = _pilot(Path(pilot))
    run = load_run(run_dir)
    quantities, checks = pilot_quantities(run, metrics=metrics, pi=pi, n_boot=n_boot,
                                          alpha=alpha, seed=seed)
    if strategies_dir is not None:
        quantities += strategy_differences(strategies_dir, metric=strategy_metric,
                                           n_boot=n_boot, alpha=alpha)
    planned = plan_quantities(quantities, ci=ci, effect=effect, power=power, alpha=alpha,
                              factors=factors, reps=reps, seed=seed)
    needs = {name: e["items_needed"] for name, e in planned.items()
             if e.get("items_needed") is not None}
    items = max(needs.values()) if needs else None
    samples = (samples_per_item(run, n_items=items, ks=ks, reps=k_reps, seed=seed,
                                alpha=alpha) if pi else None)
    k = (samples or {}).get("k_needed") or (run.k if run.mode == "sample" else None)
    languages = 1 + len([t for t in run.targets if t in run.present])
    cost = (plan_cost(run_dir, items=items, languages=languages, samples=k,
                      pilot_samples=run.k if run.mode == "sample" else None,
                      price_in=price_in, price_out=price_out) if items else None)
    return result_class(FORMAT)(FORMAT, {
        "pilot": str(run_dir), "strategies": None if strategies_dir is None
        else str(strategies_dir), "mode": run.mode, "pilot_items": run.n_items,
        "pilot_k": run.k if run.mode == "sample" else None, "source": run.source,
        "targets": [t for t in run.targets if t in run.present],
        "asked": {"ci": ci, "effect": effect, "power": power if effect else None,
                  "alpha": alpha},
        "method": ("items drawn with replacement from the pilot at several sizes, item-"
                   f"bootstrap CI ({n_boot} resamples) on each draw, mean half-width per "
                   "size; items needed interpolated between the sizes (log-log), c/sqrt(n) "
                   "only beyond the largest; power by the normal approximation"),
        "checks": {"source_above_chance": checks["source_above_chance"],
                   "source_accuracy": checks["source_accuracy"],
                   "chance_accuracy": checks["chance_accuracy"]},
        "metrics": planned,
        "run": {"items": items, "driven_by": (max(needs, key=lambda n: needs[n])
                                              if needs else None), "samples": k},
        "samples_per_item": samples, "cost": cost,
        "provenance": provenance(None, data=run.meta.get("data"), pilot=str(run_dir))})

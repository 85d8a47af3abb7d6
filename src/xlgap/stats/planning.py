"""Plan a study from a pilot: how many items a CI half-width or an effect needs.

Nothing here assumes how a metric's interval shrinks with the number of items. For
each headline quantity the pilot's items are *subsampled with replacement* at several
sizes n (below and beyond the pilot's own size: drawing more items than the pilot has
resamples it), and the quantity's item-bootstrap CI (:mod:`xlgap.stats.bootstrap`, the
one bootstrap every result uses) is computed on each subsample; the half-width at n is
the mean over subsamples. The items needed for a half-width ``h`` are read off those
points (log-log interpolation between the two that bracket ``h``); a curve ``c / sqrt(n)``
is fitted only to go beyond the largest n drawn, and its largest relative miss on the
drawn points is reported (``fit_error``) so a metric that does not follow it shows.

Power: a two-sided test at level ``alpha`` detects a true effect ``d`` with probability
``power`` when the CI half-width is ``d * z(1 - alpha/2) / (z(1 - alpha/2) + z(power))``
(the usual normal approximation relating a CI to a test); the items for that width
answer ``--effect --power``.

Quantities (:func:`pilot_quantities`): every pair metric named (default: the headline
ones of the registry, :data:`HEADLINE`, whichever are registered), accuracy per
language, the L2 variance share (:func:`xlgap.stats.ensembling.variance_share`), pi
(the model fit, :mod:`xlgap.stats.pi`, refitted on each subsample) and, from an
interventions pilot, each strategy's paired difference against the baseline
(:func:`xlgap.stats.bootstrap.paired_ratio_test`). Each is planned pooled over targets
and per target.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from xlgap.errors import ConfigError, DataError
from xlgap.io import finite
from xlgap.runs import Run, load_run
from xlgap.stats.bootstrap import (
    ALPHA,
    mean_with_ci,
    paired_ratio_test,
    ratio_with_ci,
)
from xlgap.stats.diagnose import answers, distribution, embedding_array, verdict_checks
from xlgap.stats.ensembling import (
    candidate_vectors,
    share_parts,
    variance_share,
)
from xlgap.stats.metrics import accuracy_per_item
from xlgap.stats.pairs import PAIR_METRICS, Part, pair_metric, pair_parts, stack_parts
from xlgap.stats.pi import PiFitOptions, counts_from_probs, fit_pi_model

__all__ = ["HEADLINE", "MIN_ITEMS", "Quantity", "halfwidth_curve", "items_needed",
           "pilot_quantities", "plan_quantities", "power_halfwidth", "strategy_differences"]

#: headline pair metrics, planned when registered (per-response ones come from another
#: module's registration; a name that is not registered is skipped)
HEADLINE = ("transfer", "agreement", "overall_success", "response_transfer",
            "response_agreement", "response_success")
#: metrics that condition on the source being right: meaningless when it is at chance
TRANSFER_METRICS = ("transfer", "response_transfer")
#: the smallest run a plan proposes: below about 10 items a percentile bootstrap over
#: items has too few distinct resamples to give an interval at all
MIN_ITEMS = 10
#: subsample sizes, as multiples of the pilot's items (plus MIN_ITEMS)
DEFAULT_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0)
#: a lighter pi fit than ``diagnose``'s (fewer particles and resamples): planning needs
#: the width of many refits, not one precise estimate; its Monte-Carlo noise widens the
#: interval a little, so pi plans err on the side of more items
PLAN_PI_OPTIONS = PiFitOptions(n_boot=200, n_particles=4000, n_eps=32, n_post=64)

#: ``(item indices into the pilot, seed) -> (estimate, half-width)``, None where undefined
Interval = Callable[[np.ndarray, int], tuple[float | None, float | None]]


@dataclass
class Quantity:
    """One planned figure: how its interval is computed on any draw of pilot items,
    pooled and per target (or per language); ``cost`` scales how many subsamples it
    gets (a pi refit costs seconds, a ratio interval milliseconds)."""

    name: str
    label: str
    pooled: Interval | None
    per_target: dict[str, Interval] = field(default_factory=dict)
    n_pilot: int = 0
    cost: float = 1.0
    not_measurable: str | None = None


def _half(ci: Sequence[Any] | None) -> float | None:
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return (float(ci[1]) - float(ci[0])) / 2.0


def part_interval(part: Part, n_boot: int, alpha: float) -> Interval:
    """The interval of a pooled ``sum(num) / sum(den)`` on the drawn items."""
    num, den = part.num, part.den

    def interval(idx: np.ndarray, seed: int) -> tuple[float | None, float | None]:
        out = ratio_with_ci(num[idx], den[idx], n_boot=n_boot, seed=seed, alpha=alpha)
        return out["estimate"], _half(out["ci"])
    return interval


def _column(part: Part, t: int) -> Part:
    return Part(part.num[:, t], part.den[:, t])


def _share_interval(var: np.ndarray, bias2: np.ndarray, n_boot: int, alpha: float
                    ) -> Interval:
    """The L2 share as the diagnosis defines it (:func:`variance_share` of the per-item
    :func:`share_parts`), on a subsample of items; its null is not needed for a width."""
    def interval(idx: np.ndarray, seed: int) -> tuple[float | None, float | None]:
        out = variance_share(var[idx], bias2[idx], n_boot=n_boot, seed=seed, alpha=alpha)
        return out["estimate"], _half(out["ci"])
    return interval


def _pi_interval(src: np.ndarray, tgts: dict[str, np.ndarray], n_options: np.ndarray,
                 which: str | None, alpha: float, cache: dict[Any, Any]) -> Interval:
    """pi refitted on the drawn items; one fit serves the pooled figure and every target
    (``cache``, keyed by the draw: the curves of all of them draw the same items)."""
    def interval(idx: np.ndarray, seed: int) -> tuple[float | None, float | None]:
        key = (idx.tobytes(), seed)
        if key not in cache:
            opts = PiFitOptions(**{**PLAN_PI_OPTIONS.__dict__, "seed": seed, "alpha": alpha})
            cache[key] = fit_pi_model(src[idx], {t: c[idx] for t, c in tgts.items()},
                                      n_options[idx], options=opts)
        fit = cache[key]
        est = fit.overall if which is None else fit.targets.get(which)
        if est is None:
            return None, None
        return finite(est.pi), _half(est.pi_ci)
    return interval


def pi_counts(run: Run, targets: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Source and target counts as the pi fit takes them (exact runs: expected counts)."""
    if run.mode == "sample":
        assert run.counts is not None
        return run.counts[run.source], {t: run.counts[t] for t in targets}
    k = PLAN_PI_OPTIONS.k_eff
    return (counts_from_probs(run.probs[run.source], k),
            {t: counts_from_probs(run.probs[t], k) for t in targets})


def _checks(run: Run, targets: list[str], n_boot: int) -> dict[str, Any]:
    acc = mean_with_ci(accuracy_per_item(distribution(run, run.source), run.gold),
                       n_boot=n_boot)
    checks = verdict_checks(run, acc, targets)
    checks["source_accuracy"] = acc
    return checks


def pilot_quantities(run: Run, *, metrics: Sequence[str] | None = None, pi: bool = True,
                     l2_share: bool = True, n_boot: int = 400, alpha: float = ALPHA,
                     seed: int = 0) -> tuple[list[Quantity], dict[str, Any]]:
    """The headline quantities of a pilot run and the checks they rest on (source above
    chance: :func:`xlgap.stats.diagnose.verdict_checks`)."""
    targets = [t for t in run.targets if t in run.present]
    if not targets:
        raise DataError(f"{run.path}: the pilot has no target languages")
    names = ([n for n in HEADLINE if n in PAIR_METRICS] if metrics is None
             else [pair_metric(m).name for m in metrics])
    checks = _checks(run, targets, n_boot)
    chance_note = unparsed = None
    if checks["mostly_other"] or checks["mostly_no_answer"]:
        worst = max((v, k) for key in ("other_share", "no_answer_share")
                    for k, v in checks[key].items() if v is not None)
        unparsed = (f"most answers name no candidate or none at all ({worst[0]:.0%} in "
                    f"{worst[1]}): every metric would measure the prompts or the parser, "
                    "not the model; fix those before planning")
    if not checks["source_above_chance"]:
        acc = checks["source_accuracy"]
        chance_note = (f"the source ({run.source}) answers no better than chance (accuracy "
                       f"{acc['estimate']:.3f}, CI {acc['ci']}, chance "
                       f"{checks['chance_accuracy']:.3f}): transfer counts target answers "
                       "among right source answers, which are luck here, so no number of "
                       "items makes it measure transfer")
    gold, emb = run.gold, embedding_array(run)
    src = distribution(run, run.source)
    per = [pair_parts(src, distribution(run, t), gold, emb, metrics=names) for t in targets]
    stacked = stack_parts(per)
    out: list[Quantity] = []
    q = run.n_items
    for name in names:
        part = stacked[name]
        if part is None:
            continue
        out.append(Quantity(
            name, PAIR_METRICS[name].label, part_interval(part, n_boot, alpha),
            {t: part_interval(_column(part, i), n_boot, alpha) for i, t in enumerate(targets)},
            n_pilot=q,
            not_measurable=unparsed or (chance_note if name in TRANSFER_METRICS else None)))
    acc = {lang: Part.mean(accuracy_per_item(distribution(run, lang), gold))
           for lang in [run.source, *targets]}
    pooled_acc = stack_parts([{"a": acc[t]} for t in targets])["a"]
    assert pooled_acc is not None
    out.append(Quantity("accuracy", "accuracy (targets pooled; per language)",
                        part_interval(pooled_acc, n_boot, alpha),
                        {lang: part_interval(p, n_boot, alpha) for lang, p in acc.items()},
                        n_pilot=q, not_measurable=unparsed))
    if l2_share and emb is not None:
        src_vectors = candidate_vectors(answers(run, run.source, seed), emb, run.n_options)
        parts = [share_parts(src_vectors, candidate_vectors(answers(run, t, seed + 1), emb,
                                                            run.n_options)) for t in targets]
        var = np.stack([v for v, _ in parts], axis=1)
        bias2 = np.stack([b for _, b in parts], axis=1)
        boot = max(100, n_boot // 2)
        out.append(Quantity("l2_share", "variance share of the L2 distance",
                            _share_interval(var, bias2, boot, alpha),
                            {t: _share_interval(var[:, [i]], bias2[:, [i]], boot, alpha)
                             for i, t in enumerate(targets)}, n_pilot=q, cost=4.0,
                            not_measurable=unparsed))
    if pi:
        s_counts, t_counts = pi_counts(run, targets)
        cache: dict[Any, Any] = {}
        out.append(Quantity("pi", "pi (model fit)",
                            _pi_interval(s_counts, t_counts, run.n_options, None, alpha,
                                         cache),
                            {t: _pi_interval(s_counts, t_counts, run.n_options, t, alpha,
                                             cache) for t in targets}, n_pilot=q, cost=20.0,
                            not_measurable=unparsed))
    return out, checks


def strategy_differences(out_dir: str | os.PathLike[str], *, metric: str = "transfer",
                         n_boot: int = 400, alpha: float = ALPHA) -> list[Quantity]:
    """From an interventions pilot (``OUT/<strategy>/`` runs beside ``OUT/baseline/``):
    each strategy's paired difference in ``metric`` against the baseline, items paired
    by id (those both runs hold)."""
    root = Path(out_dir)
    base_dir = root / "baseline"
    if not (base_dir / "run.json").exists():
        raise DataError(f"{root}: no baseline/ run; a strategy pilot is the output of "
                        "`xlgap intervene`")
    base = load_run(base_dir)
    name = pair_metric(metric).name
    out = []
    for d in sorted(p for p in root.iterdir() if (p / "run.json").exists()):
        if d.name == "baseline":
            continue
        arm = load_run(d)
        ids = [i for i in base.item_ids if i in set(arm.item_ids)]
        targets = [t for t in base.targets if t in arm.present and t in base.present]
        if len(ids) < 2 or not targets:
            continue
        a_parts, b_parts = ([_run_parts(r, ids, targets, name) for r in (arm, base)])

        def interval(a: Part, b: Part) -> Interval:
            def inner(idx: np.ndarray, seed: int) -> tuple[float | None, float | None]:
                res = paired_ratio_test(a.num[idx], a.den[idx], b.num[idx], b.den[idx],
                                        n_boot=n_boot, seed=seed, alpha=alpha)
                return res["estimate"], _half(res["ci"])
            return inner

        out.append(Quantity(
            f"difference:{d.name}", f"{d.name} - baseline ({name})",
            interval(a_parts, b_parts),
            {t: interval(_column(a_parts, i), _column(b_parts, i))
             for i, t in enumerate(targets)}, n_pilot=len(ids)))
    return out


def _run_parts(run: Run, ids: list[str], targets: list[str], name: str) -> Part:
    index = {item: i for i, item in enumerate(run.item_ids)}
    rows = np.array([index[i] for i in ids])
    src = distribution(run, run.source)[rows]
    per = [pair_parts(src, distribution(run, t)[rows], run.gold[rows], metrics=[name])
           for t in targets]
    part = stack_parts(per)[name]
    if part is None:
        raise DataError(f"{run.path}: metric {name!r} cannot be computed on this run")
    return part


# -- curves and the items they call for --------------------------------------------------


def subsample_sizes(n_pilot: int, factors: Sequence[float] = DEFAULT_FACTORS) -> list[int]:
    """The item counts drawn: MIN_ITEMS and the pilot's size times ``factors``."""
    if n_pilot < 2:
        raise DataError(f"a pilot needs at least 2 items with data, got {n_pilot}")
    sizes = {MIN_ITEMS, *(max(2, round(n_pilot * f)) for f in factors)}
    return sorted(sizes)


def halfwidth_curve(interval: Interval, n_pilot: int, sizes: Sequence[int], *,
                    reps: int = 20, seed: int = 0) -> dict[str, Any]:
    """Half-width of ``interval`` at each size in ``sizes``: ``reps`` draws of that many
    pilot items with replacement, one item bootstrap on each. Returns ``{"n": [...],
    "halfwidth": [...] (mean), "low"/"high": [...] (10th/90th percentiles over draws),
    "log_sd": [...] (standard deviation of log half-width over draws), "estimate": pilot
    estimate}``; a size where no draw gave an interval is null."""
    rng = np.random.default_rng((seed, 11))  # its own stream: the draws of items
    est, _ = interval(np.arange(n_pilot), seed)
    hw: list[float | None] = []
    lo: list[float | None] = []
    hi: list[float | None] = []
    sd: list[float | None] = []
    for n in sizes:
        vals = []
        for r in range(reps):
            _, h = interval(rng.integers(0, n_pilot, size=int(n)), seed + r)
            if h is not None and np.isfinite(h):
                vals.append(h)
        arr = np.asarray(vals, dtype=float)
        pos = arr[arr > 0]
        hw.append(float(arr.mean()) if arr.size else None)
        lo.append(float(np.percentile(arr, 10)) if arr.size else None)
        hi.append(float(np.percentile(arr, 90)) if arr.size else None)
        sd.append(float(np.std(np.log(pos), ddof=1)) if pos.size > 1 else None)
    return {"n": [int(n) for n in sizes], "halfwidth": hw, "low": lo, "high": hi,
            "log_sd": sd, "estimate": finite(est), "reps": reps}


def power_halfwidth(effect: float, power: float, alpha: float = ALPHA) -> float:
    """The CI half-width at which a two-sided level-``alpha`` test has ``power`` to see
    a true difference ``effect`` (normal approximation; see the module docstring)."""
    if not 0 < power < 1 or effect <= 0:
        raise ConfigError(f"--effect must be > 0 and --power in (0, 1); got {effect}, {power}")
    z = NormalDist().inv_cdf
    za = z(1 - alpha / 2)
    return effect * za / (za + z(power))


def items_needed(curve: dict[str, Any], target: float) -> dict[str, Any]:
    """Items for a CI half-width ``target`` from a :func:`halfwidth_curve`.

    Interpolated (log-log) between the drawn sizes that bracket ``target``; beyond the
    largest drawn size, ``c / sqrt(n)`` fitted to the drawn points (``extrapolated``:
    true). ``fit_error``: that curve's largest relative miss on the drawn points. A
    quantity with no spread (every half-width 0) needs the minimal run."""
    if target <= 0:
        raise ConfigError(f"the CI half-width asked for must be > 0, got {target}")
    pts = [(n, h) for n, h in zip(curve["n"], curve["halfwidth"], strict=True)
           if h is not None]
    if not pts:
        return {"items_needed": None, "why": "no subsample gave an interval"}
    ns = np.array([p[0] for p in pts], dtype=float)
    hs = np.array([p[1] for p in pts], dtype=float)
    if np.all(hs <= 1e-12):
        return {"items_needed": MIN_ITEMS, "extrapolated": False, "fit_error": 0.0,
                "why": "no spread across items in the pilot: the smallest run measures it"}
    pos = hs > 0
    c = float(np.exp(np.mean(np.log(hs[pos]) + 0.5 * np.log(ns[pos]))))
    fit_error = float(np.max(np.abs(c / np.sqrt(ns[pos]) / hs[pos] - 1.0)))
    out: dict[str, Any] = {"c": c, "fit_error": fit_error, "extrapolated": False}
    if hs[0] <= target:
        n = MIN_ITEMS if ns[0] <= MIN_ITEMS else (c / target) ** 2
    elif hs[-1] > target:
        n = (c / target) ** 2
        out["extrapolated"] = True
    else:
        j = int(np.argmax(hs <= target))  # first drawn size at or below the target
        n0, n1, h0, h1 = ns[j - 1], ns[j], hs[j - 1], hs[j]
        if h1 <= 0 or h0 <= h1:
            n = n1
        else:  # straight line in log n vs log h between the two drawn sizes
            frac = (np.log(h0) - np.log(target)) / (np.log(h0) - np.log(h1))
            n = float(np.exp(np.log(n0) + frac * (np.log(n1) - np.log(n0))))
    out["items_needed"] = max(MIN_ITEMS, int(np.ceil(n)))
    return out


#: the Monte-Carlo wobble of one bootstrap interval's width (about 2% at 1000
#: resamples, see xlgap.stats.bootstrap), as a relative sd
BOOTSTRAP_WOBBLE = 0.02


def predicted_halfwidth(curve: dict[str, Any], n: int, level: float = 0.9
                        ) -> dict[str, Any]:
    """The half-width the curve predicts at ``n`` items, and a ``range`` (a ``level``
    band) for the half-width a run of ``n`` items will show. Three things move it, as
    relative (log-scale) sds added in quadrature: the pilot's own uncertainty (the
    spread of the half-width over draws of the pilot's size: how far a width read off
    that few items can be from the truth), the planned run's own variability (the
    spread over draws of size ``n``; beyond the largest size drawn, that spread shrunk
    by ``sqrt(largest / n)``) and the bootstrap's Monte-Carlo wobble."""
    pts = [(m, h, s) for m, h, s in zip(curve["n"], curve["halfwidth"],
                                        curve.get("log_sd") or [None] * len(curve["n"]),
                                        strict=True) if h is not None and h > 0]
    if not pts:
        return {"halfwidth": 0.0, "range": [0.0, 0.0]}
    ns = np.array([p[0] for p in pts], dtype=float)
    hs = np.array([p[1] for p in pts])
    sds = np.array([np.nan if p[2] is None else p[2] for p in pts])
    if ns[0] <= n <= ns[-1]:
        h = float(np.exp(np.interp(np.log(n), np.log(ns), np.log(hs))))
    else:
        c = float(np.exp(np.mean(np.log(hs) + 0.5 * np.log(ns))))
        h = c / np.sqrt(n)
    ok = np.isfinite(sds)
    if not ok.any():
        return {"halfwidth": h, "range": [h, h]}
    n_pilot = curve.get("n_pilot") or ns[len(ns) // 2]
    s_pilot = float(np.interp(np.log(n_pilot), np.log(ns[ok]), sds[ok]))
    s_run = (float(np.interp(np.log(n), np.log(ns[ok]), sds[ok])) if n <= ns[ok][-1]
             else float(sds[ok][-1] * np.sqrt(ns[ok][-1] / n)))
    spread = float(np.sqrt(s_pilot ** 2 + s_run ** 2 + BOOTSTRAP_WOBBLE ** 2))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return {"halfwidth": h, "range": [h * float(np.exp(-z * spread)),
                                      h * float(np.exp(z * spread))],
            "level": level, "relative_sd": spread}


def plan_quantities(quantities: Sequence[Quantity], *, ci: float | None = None,
                    effect: float | None = None, power: float = 0.8, alpha: float = ALPHA,
                    factors: Sequence[float] = DEFAULT_FACTORS, reps: int = 20,
                    seed: int = 0, per_target: bool = True) -> dict[str, Any]:
    """``{NAME: {"items_needed", "per_target": {T: {...}}, "curve", ...}}`` for a CI
    half-width ``ci`` and/or an ``effect`` at ``power``; ``items_needed`` is for ``ci``
    when given, else for the effect (both are listed under ``for_ci``/``for_effect``)."""
    if ci is None and effect is None:
        raise ConfigError("plan: give a CI half-width (--ci) or an effect (--effect)")
    goals = {}
    if ci is not None:
        goals["for_ci"] = float(ci)
    if effect is not None:
        goals["for_effect"] = power_halfwidth(effect, power, alpha)

    def one(interval: Interval, n_pilot: int, cost: float) -> dict[str, Any]:
        sizes = subsample_sizes(n_pilot, factors)
        curve = halfwidth_curve(interval, n_pilot, sizes,
                                reps=max(3, round(reps / cost)), seed=seed)
        curve["n_pilot"] = n_pilot
        entry: dict[str, Any] = {"estimate": curve["estimate"], "curve": curve}
        for key, width in goals.items():
            need = items_needed(curve, width)
            need["halfwidth"] = width
            if need.get("items_needed") is not None:
                need["predicted"] = predicted_halfwidth(curve, need["items_needed"])
            entry[key] = need
        first = entry["for_ci" if ci is not None else "for_effect"]
        entry["items_needed"] = first.get("items_needed")
        return entry

    out: dict[str, Any] = {}
    for qty in quantities:
        if qty.not_measurable:
            out[qty.name] = {"label": qty.label, "items_needed": None,
                             "why": qty.not_measurable,
                             "per_target": {t: {"items_needed": None,
                                                "why": qty.not_measurable}
                                            for t in qty.per_target}}
            continue
        entry = one(qty.pooled, qty.n_pilot, qty.cost) if qty.pooled else {}
        entry["label"] = qty.label
        if per_target:
            entry["per_target"] = {t: one(fn, qty.n_pilot, qty.cost)
                                   for t, fn in qty.per_target.items()}
        out[qty.name] = entry
    return out

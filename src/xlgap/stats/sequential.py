"""Sampling that stops when the answer is clear: add items in batches until a metric's
pooled CI half-width is under a target, or the data run out.

Looking at the interval after every batch and stopping the first time it is narrow is
a data-dependent stop: runs that happen to look tight early stop there, and the interval
reported at the stop holds the truth less often than it says (:func:`coverage` measures
it on the simulator). The correction used here is **Bonferroni over the planned looks**:
the looks are fixed before any answer is seen (:func:`look_sizes`: the items double from
one look to the next, up to the whole data set, so there are few of them), and every
look's interval is the item-bootstrap percentile interval at level ``1 - alpha / L`` for
``L`` looks. All ``L`` intervals then hold the truth together with probability at least
``1 - alpha`` (the union bound), so the one reported at whichever look stops does too.
The price is width: the stop comes later than a naive rule would take it.

Items are taken in one fixed random order (seeded), so the run is a random sample of the
data set at every look, and a resumed run (same seed) takes the same items in the same
order and repeats its looks from the answers it holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.data.items import ParallelDataset
from xlgap.errors import ConfigError, DataError
from xlgap.io import dump_json
from xlgap.provenance import tagged
from xlgap.runs import Run, load_run
from xlgap.stats.bootstrap import ALPHA, DEFAULT_N_BOOT, ratio_with_ci
from xlgap.stats.diagnose import distribution
from xlgap.stats.pairs import Part, pair_metric, pair_parts, stack_parts
from xlgap.stats.simulate import simulate_arrays

__all__ = [
    "FIRST_LOOK",
    "FORMAT",
    "coverage",
    "look_sizes",
    "run_parts",
    "run_until_ci",
    "stop_check",
]

FORMAT = "sequential"
FILE = "sequential.json"
#: items at the first look (a percentile bootstrap needs a few dozen items to mean much)
FIRST_LOOK = 30


def look_sizes(n_total: int, first: int = FIRST_LOOK) -> list[int]:
    """The planned looks: ``first`` items, then doubling, the last at ``n_total``."""
    if n_total < 1:
        raise DataError("sequential sampling: the data set has no items")
    sizes, n = [], max(1, min(first, n_total))
    while n < n_total:
        sizes.append(n)
        n *= 2
    sizes.append(n_total)
    return sizes


def stop_check(part: Part, *, target: float, looks: int, alpha: float = ALPHA,
               n_boot: int = DEFAULT_N_BOOT, seed: int = 0, correct: bool = True
               ) -> dict[str, Any]:
    """One look: the pooled estimate and its interval at level ``1 - alpha / looks``
    (``correct``; the naive rule: ``1 - alpha``), and whether its half-width is at most
    ``target``."""
    level = alpha / looks if correct else alpha
    res = ratio_with_ci(part.num, part.den, n_boot=n_boot, seed=seed, alpha=level)
    lo, hi = res["ci"]
    half = None if lo is None or hi is None else (hi - lo) / 2
    return {**res, "alpha": level, "halfwidth": half,
            "stop": half is not None and half <= target}


def run_parts(run: Run, metric: str) -> Part:
    """Per-item parts ``(Q, T)`` of ``metric`` over the run's targets (the registry's
    definition, as ``diagnose`` computes it)."""
    targets = [t for t in run.targets if t in run.present]
    if not targets:
        raise DataError(f"{run.path}: no target languages to measure {metric!r} on")
    src = distribution(run, run.source)
    part = stack_parts([pair_parts(src, distribution(run, t), run.gold, metrics=[metric])
                        for t in targets])[metric]
    if part is None:
        raise ConfigError(f"--metric {metric!r} needs inputs this run lacks (e.g. answer "
                          "embeddings)")
    return part


def run_until_ci(dataset: ParallelDataset, out: str | os.PathLike[str], *, target: float,
                 make: Callable[[ParallelDataset], Any], metric: str = "transfer",
                 alpha: float = ALPHA, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
                 ) -> dict[str, Any]:
    """Grow the run in ``out`` look by look (``make(subset)`` answers a data set whose
    items are the first n of a seeded random order; a resumable run maker such as
    :func:`xlgap.sampling.make_run`) until the pooled ``metric`` CI half-width is at most
    ``target`` (corrected for the looks) or the data run out. Writes and returns the
    ``sequential`` record (``sequential.json`` in ``out``)."""
    if target <= 0:
        raise ConfigError(f"--until-ci must be > 0, got {target}")
    name = pair_metric(metric).name
    order = np.random.default_rng((seed, 5)).permutation(len(dataset))
    items = [dataset.items[i] for i in order]
    sizes = look_sizes(len(items))
    record: dict[str, Any] = {
        "metric": name, "target": target, "alpha": alpha, "looks_planned": sizes,
        "correction": f"Bonferroni over {len(sizes)} planned looks: each look's interval "
                      f"at level 1 - {alpha}/{len(sizes)}", "looks": [], "seed": seed}
    for n in sizes:
        make(replace(dataset, items=items[:n]))
        run = load_run(out)
        ids = {it.id for it in items[:n]}
        keep = np.array([i in ids for i in run.item_ids])
        part = run_parts(run, name)
        look = stop_check(Part(part.num[keep], part.den[keep]), target=target,
                          looks=len(sizes), alpha=alpha, n_boot=n_boot, seed=seed)
        record["looks"].append({"items": n, **look})
        if look["stop"]:
            break
    last = record["looks"][-1]
    record.update(items=last["items"], estimate=last["estimate"], ci=last["ci"],
                  halfwidth=last["halfwidth"], reached=bool(last["stop"]),
                  why=None if last["stop"] else
                  f"the data ran out ({last['items']} items) before the half-width reached "
                  f"{target}")
    dump_json(tagged(FORMAT, record), Path(out) / FILE, indent=1)
    return record


def _population_parts(metric: str, questions: int, samples: int, targets: int,
                      seed: int, **model: Any) -> Part:
    """Per-item parts of ``metric`` on a simulated population (distributions = counts/K)."""
    sim = simulate_arrays(questions=questions, samples=samples, targets=targets, seed=seed,
                          **model)
    m = sim.n_options

    def probs(a: np.ndarray) -> np.ndarray:
        return np.stack([(a == j).mean(axis=1) for j in range(m)], axis=1)

    src = probs(sim.samples[sim.source])
    part = stack_parts([pair_parts(src, probs(sim.samples[t]), sim.gold, metrics=[metric])
                        for t in sim.targets])[metric]
    assert part is not None
    return part


def coverage(*, target: float, metric: str = "transfer", runs: int = 200,
             population: int = 4000, data_items: int = 2000, samples: int = 10,
             targets: int = 2, alpha: float = ALPHA, n_boot: int = 500, seed: int = 0,
             first: int = FIRST_LOOK, rules: Sequence[str] = ("naive", "bonferroni"),
             sizes: Sequence[int] | None = None, **model: Any) -> dict[str, Any]:
    """Coverage of the stopping rule on the simulator.

    A population of simulated items (:func:`xlgap.stats.simulate.simulate_arrays`,
    ``model`` passes its settings) fixes the truth: ``metric`` pooled over all of them.
    Each of ``runs`` studies draws ``data_items`` items from it (its data set), takes
    them look by look and stops by the rule; the share of studies whose interval at the
    stop holds the truth is the coverage (``sizes``: other looks than
    :func:`look_sizes`). Per rule: ``coverage``, ``items`` (mean at the
    stop), ``reached`` (share that got under the target before the data ran out)."""
    part = _population_parts(pair_metric(metric).name, population, samples, targets, seed,
                             **model)
    ok = np.isfinite(part.num) & np.isfinite(part.den)
    truth = float(np.where(ok, part.num, 0).sum() / np.where(ok, part.den, 0).sum())
    sizes = list(sizes) if sizes is not None else look_sizes(data_items, first)
    rng = np.random.default_rng((seed, 9))
    out: dict[str, Any] = {"truth": truth, "target": target, "looks": sizes, "runs": runs,
                           "alpha": alpha, "rules": {}}
    draws = [rng.integers(0, population, size=data_items) for _ in range(runs)]
    for rule in rules:
        hits, used, reached = [], [], []
        for r, idx in enumerate(draws):
            for n in sizes:
                look = stop_check(Part(part.num[idx[:n]], part.den[idx[:n]]), target=target,
                                  looks=len(sizes), alpha=alpha, n_boot=n_boot,
                                  seed=seed + r, correct=rule == "bonferroni")
                if look["stop"]:
                    break
            lo, hi = look["ci"]
            hits.append(lo is not None and lo <= truth <= hi)
            used.append(n)
            reached.append(bool(look["stop"]))
        out["rules"][rule] = {"coverage": float(np.mean(hits)), "items": float(np.mean(used)),
                              "reached": float(np.mean(reached))}
    return out

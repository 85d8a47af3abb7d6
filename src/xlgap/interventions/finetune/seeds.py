"""Fine-tuning over several training seeds: what a freeze setting does, beside how much
one training run differs from another.

Item CIs say how far the held-out items could move an estimate; they say nothing about
training noise (LoRA's random start, the batch order). So every freeze setting N is
trained with several seeds, and each setting is summarised by

* the seed-mean estimate: per item, the metric parts averaged over the seeds, pooled
  (the ratio pooled over every seed's pairs), with its item-bootstrap CI and paired test
  against the base model on the same items;
* the spread between seeds (``seed_spread``: each seed's estimate, their SD and range),
  reported beside the item CI;
* paired ILO and parallel-cosine changes by layer, per seed and their mean and spread.

Fine-tuning changes the source language too, so transfer after it is a ratio over a
different set of source-correct items. ``transfer_base_items`` fixes the denominator: the
target is scored on the base model's source-correct items (:func:`fixed_transfer_parts`),
and overall success, which has no such denominator, is shown with it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xlgap.interventions.arms import VS_BASE, mean_parts, point_estimates, versus
from xlgap.representations.ilo import ilo_difference
from xlgap.representations.layerwise import cosine_difference
from xlgap.stats.metrics import transfer_parts
from xlgap.stats.multiple import HOLM_LABEL, adjust_holm
from xlgap.stats.pairs import Part, paired_test, summarise

#: the name of transfer on the base model's source-correct items
FIXED = "transfer_base_items"
FIXED_LABEL = "transfer on the base model's source-correct items (fixed denominator)"


def fixed_transfer_parts(base_probs: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray],
                         gold: np.ndarray, source: str, targets: Sequence[str]) -> Part:
    """``(Q, T)`` parts of transfer with the base model's source arm: numerator "source
    correct before and target correct after", denominator "source correct before" (the
    transfer definition, :func:`xlgap.stats.metrics.transfer_parts`, with the source's
    distribution taken from the base model). On the base model itself it is transfer."""
    parts = [transfer_parts(base_probs[source], probs[t], gold) for t in targets]
    return Part(np.stack([num for num, _ in parts], axis=1),
                np.stack([den for _, den in parts], axis=1))


def _estimate(test: Mapping[str, Any] | None) -> float | None:
    """A paired test's difference (its ``estimate``)."""
    return test.get("estimate") if test else None


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Each seed's value, their SD (ddof 1) and range."""
    v = np.array([np.nan if x is None else float(x) for x in values], dtype=float)
    ok = v[np.isfinite(v)]
    return {"values": [None if not np.isfinite(x) else float(x) for x in v],
            "sd": float(ok.std(ddof=1)) if len(ok) > 1 else None,
            "range": [float(ok.min()), float(ok.max())] if len(ok) else None}


def _with_test(summary: Mapping[str, Any] | None, test: Mapping[str, Any] | None,
               seed_values: Sequence[float | None]) -> dict[str, Any] | None:
    """One estimate ``{estimate, ci, n, vs_base, seed_spread}``: ``vs_base`` is the paired
    test against the reference arm in the one estimate shape (:func:`versus`)."""
    if summary is None:
        return None
    out = dict(summary)
    if test:
        out[VS_BASE] = versus(test)
    out["seed_spread"] = spread(seed_values)
    return out


def setting_summary(n: int, seeds: Sequence[int], evals: Sequence[Mapping[str, Any]],
                    base: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], *,
                    n_boot: int, seed: int) -> dict[str, Any]:
    """One freeze setting over its seeds (``evals`` and ``runs`` in seed order; each eval
    carries ``_parts`` with ``all``, ``accuracy`` and ``fixed``)."""
    pooled = mean_parts([{"x": e["_parts"]["all"]} for e in evals])["x"]
    pooled[FIXED] = mean_parts([{"x": {FIXED: e["_parts"]["fixed"]}} for e in evals])["x"][FIXED]
    ref = {**base["_parts"]["all"], FIXED: base["_parts"]["all"]["transfer"]}
    tests = paired_test(pooled, ref, n_boot, seed)
    stats = summarise(pooled, n_boot, seed)
    acc = mean_parts([{"x": e["_parts"]["accuracy"]} for e in evals])["x"]
    acc_tests = paired_test(acc, base["_parts"]["accuracy"], n_boot, seed)
    acc_stats = summarise(acc, n_boot, seed)

    def per_seed(metric: str) -> list[float | None]:
        # each seed's own pooled estimate (the spread between training runs)
        return [point_estimates({"x": e["_parts"]["fixed"] if metric == FIXED
                                    else e["_parts"]["all"][metric]})["x"] for e in evals]

    def per_seed_accuracy(lang: str) -> list[float | None]:
        return [point_estimates({"a": e["_parts"]["accuracy"][lang]})["a"] for e in evals]

    def by_layer(key: str) -> list[dict[str, Any]]:
        layers = len(runs[0][key])
        return [{"estimate": float(np.mean([_estimate(r[key][i]) for r in runs])),
                 "seed_spread": spread([_estimate(r[key][i]) for r in runs])}
                for i in range(layers)]

    return {"freeze_first": n, "seeds": list(seeds),
            "pairs_after": {m: _with_test(stats.get(m), tests.get(m), per_seed(m))
                            for m in stats},
            "accuracy_after": {lang: _with_test(acc_stats.get(lang), acc_tests.get(lang),
                                                per_seed_accuracy(lang)) for lang in acc_stats},
            "ilo_change": by_layer("ilo_change"), "cos_change": by_layer("cos_change"),
            "estimate": "per item, the parts averaged over the seeds, pooled; ci over items; "
                        "seed_spread: each seed's own estimate"}


def setting_comparisons(settings: Sequence[tuple[int, Sequence[Mapping[str, Any]]]],
                        source: str, *, k: int, n_boot: int, seed: int
                        ) -> list[dict[str, Any]]:
    """Every two freeze settings against each other on the same held-out items: each
    pooled metric (seed-mean parts, paired test), and the ILO and cosine change by layer
    (seed by seed, a paired item bootstrap each; their mean and spread)."""
    out = []
    for (na, ea), (nb, eb) in itertools.combinations(settings, 2):
        pa = mean_parts([{"x": {**e["_parts"]["all"], FIXED: e["_parts"]["fixed"]}}
                         for e in ea])["x"]
        pb = mean_parts([{"x": {**e["_parts"]["all"], FIXED: e["_parts"]["fixed"]}}
                         for e in eb])["x"]
        acc_a = mean_parts([{"x": e["_parts"]["accuracy"]} for e in ea])["x"]
        acc_b = mean_parts([{"x": e["_parts"]["accuracy"]} for e in eb])["x"]
        tests = {**paired_test(pa, pb, n_boot, seed),
                 **{f"accuracy.{lang}": t
                    for lang, t in paired_test(acc_a, acc_b, n_boot, seed).items()}}
        for metric, test in tests.items():
            if test is None:
                continue
            out.append({"a": na, "b": nb, "metric": metric, "estimate_a": test["a"],
                        "estimate_b": test["b"], **(versus(test) or {})})
        pairs = list(zip(ea, eb, strict=True))
        ilo = [ilo_difference(b["_states"], a["_states"], k=k, n_boot=n_boot, seed=seed)
               for a, b in pairs]
        cos = [cosine_difference(b["_states"], a["_states"], source, n_boot=n_boot,
                                    seed=seed) for a, b in pairs]
        for metric, per_seed in (("ilo_by_layer", ilo), ("cos_parallel_by_layer", cos)):
            out.append({"a": na, "b": nb, "metric": metric, "by_layer": [
                {"estimate": float(np.mean([_estimate(s[i]) for s in per_seed])),
                 "seed_spread": spread([_estimate(s[i]) for s in per_seed]),
                 "per_seed": [{key: s[i].get(key) for key in ("ci", "p", "p_floor")}
                              for s in per_seed]}
                for i in range(len(per_seed[0]))]})
    return out


def headline(settings: Sequence[Mapping[str, Any]], metric: str = FIXED) -> dict[str, Any] | None:
    """The setting whose seed-mean ``metric`` moved most against the base model, its p
    Holm-adjusted over every setting (the family it was picked from), and overall success
    beside it (a metric without a moving denominator)."""
    rows = [(s, (s.get("pairs_after") or {}).get(metric)) for s in settings]
    rows = [(s, m) for s, m in rows
            if m and _estimate(m.get(VS_BASE)) is not None]
    if not rows:
        return None
    adjusted = adjust_holm([m[VS_BASE].get("p") for _, m in rows])
    best = max(range(len(rows)), key=lambda i: rows[i][1][VS_BASE]["estimate"])
    s, m = rows[best]
    test = m[VS_BASE]
    success = (s.get("pairs_after") or {}).get("overall_success") or {}
    return {"freeze_first": s["freeze_first"], "metric": metric,
            "label": FIXED_LABEL if metric == FIXED else metric,
            # n: the setting's items, as before the one shape (the same items as the test's)
            "estimate": test["estimate"], "ci": test.get("ci"), "n": m.get("n"),
            "p": test.get("p"), "p_floor": test.get("p_floor"), "p_holm": adjusted[best],
            "p_holm_label": HOLM_LABEL.format(k=len(rows)), "family": len(rows),
            "after": m.get("estimate"), "seed_spread": m.get("seed_spread"),
            "overall_success": {**(success.get(VS_BASE) or {}), "n": success.get("n")}}

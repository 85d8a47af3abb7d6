"""Shared plumbing of the white-box interventions (steering, fine-tuning, any new one): the
languages and items they can score, per-item metric parts from candidate log-probabilities,
pooled estimates with item-bootstrap CIs, paired tests of one arm against a reference arm
on the same items, and arms averaged over draws or seeds."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xlgap.errors import ConfigError
from xlgap.prompting.scoring import distributions
from xlgap.stats.bootstrap import pooled_ratio
from xlgap.stats.consistency import rankc_per_item
from xlgap.stats.metrics import accuracy_per_item
from xlgap.stats.pairs import Part, pair_parts, paired_test, stack_parts, summarise


def usable_items(dataset: Any, languages: Sequence[str], who: str) -> Any:
    """The items with every language and candidates (at least 10 of them)."""
    if not dataset.has_candidates:
        raise ConfigError(f"{who} scores answer candidates; data set {dataset.name} has none "
                          "(use BMLAMA-style data or the built-in set)")
    missing = [x for x in languages if x not in dataset.languages]
    if missing:
        raise ConfigError(f"data set {dataset.name} has no {', '.join(missing)}")
    items = [it for it in dataset.items
             if all(it.has(lang) and it[lang].candidates for lang in languages)]
    if len(items) < 10:
        raise ConfigError(f"only {len(items)} items have every language ({', '.join(languages)})"
                          f" with candidates; {who} needs at least 10")
    # the loader's record (dropped, problems, original codes) stays with the items
    return dataclasses.replace(dataset.only(it.id for it in items), languages=list(languages))


def resolve_languages(dataset: Any, source: str | None, targets: Sequence[str] | None
                      ) -> tuple[str, list[str]]:
    """The source (default: the data set's first language) and the targets (default: every
    other language), the source left out of the targets."""
    src = source or dataset.languages[0]
    tgts = [t for t in (targets if targets is not None else dataset.languages) if t != src]
    if not tgts:
        raise ConfigError("an intervention needs at least one target language")
    return src, tgts



def target_parts(source: np.ndarray, target: np.ndarray, gold: np.ndarray
                 ) -> dict[str, Part]:
    """Per-item parts of every reported metric for one target, from candidate
    log-probabilities: the target's accuracy, RankC with the source, and every registered
    pair metric (:data:`xlgap.stats.pairs.PAIR_METRICS`; those that need answer
    embeddings are left out)."""
    p, q = distributions(source), distributions(target)
    out = {"accuracy": Part.mean(accuracy_per_item(q, gold)),
           "rankc": Part.mean(rankc_per_item(source, target))}
    out.update({k: v for k, v in pair_parts(p, q, gold).items() if v is not None})
    return out


def parts_for(source_scores: np.ndarray, target_scores: Mapping[str, np.ndarray],
              gold: np.ndarray) -> dict[str, dict[str, Part]]:
    """Per target, the per-item parts of every metric."""
    return {t: target_parts(source_scores, s, gold) for t, s in target_scores.items()}


def stacked(parts: Mapping[str, Mapping[str, Part]]) -> dict[str, Part]:
    """Per-target parts -> ``(Q, targets)`` parts (items stay the resampling unit)."""
    return {k: v for k, v in stack_parts([parts[t] for t in parts]).items() if v is not None}


def point_estimates(parts: Mapping[str, Part]) -> dict[str, float]:
    """The pooled metrics without intervals (the sweep needs only these)."""
    return {k: pooled_ratio(v.num, v.den) for k, v in parts.items()}


#: the key under which an arm's entry holds its paired test against the base arm
VS_BASE = "vs_base"


def versus(test: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A paired test (:func:`xlgap.stats.pairs.paired_test`) in the one estimate shape: a
    paired test is an estimate of the difference, ``{estimate, ci, n, p, p_floor}`` (a p at
    the floor reads "p < p_floor")."""
    if not test:
        return None
    return {"estimate": test.get("estimate"), "ci": test.get("ci"), "n": test.get("n"),
            "p": test.get("p"), "p_floor": test.get("p_floor")}


def with_intervals(parts: Mapping[str, Part], reference: Mapping[str, Part] | None, *,
                   n_boot: int, seed: int, key: str = VS_BASE) -> dict[str, Any]:
    """Each metric: pooled estimate, 95% item-bootstrap CI and ``n``; given a reference
    arm on the same items, also the paired test of the pooled difference under ``key``
    (:func:`versus`)."""
    out: dict[str, Any] = {k: dict(v) for k, v in summarise(parts, n_boot, seed).items()
                           if v is not None}
    if reference is not None:
        for name, test in paired_test(parts, reference, n_boot, seed).items():
            if test is None or name not in out:
                continue
            out[name][key] = versus(test)
    return out


def report_block(parts: Mapping[str, Mapping[str, Part]],
                 reference: Mapping[str, Mapping[str, Part]] | None, *, n_boot: int,
                 seed: int, key: str = VS_BASE) -> dict[str, Any]:
    """Pooled over targets and per target, each metric with CI (and, under ``key``, the
    paired test against reference)."""
    pooled = with_intervals(stacked(parts), stacked(reference) if reference else None,
                            n_boot=n_boot, seed=seed, key=key)
    per_target = {t: with_intervals(p, reference[t] if reference else None, n_boot=n_boot,
                                    seed=seed, key=key) for t, p in parts.items()}
    return {"all": pooled, "per_target": per_target}


def mean_parts(arms: Sequence[Mapping[str, Mapping[str, Part]]]
               ) -> dict[str, dict[str, Part]]:
    """Per target and metric, the item parts averaged over the draws: the pooled ratio of
    the average is the ratio pooled over every draw's pairs (the expected random arm)."""
    first = arms[0]
    out: dict[str, dict[str, Part]] = {}
    for t, metrics in first.items():
        out[t] = {}
        for name in metrics:
            num = np.stack([np.asarray(a[t][name].num, dtype=np.float64) for a in arms])
            den = np.stack([np.asarray(a[t][name].den, dtype=np.float64) for a in arms])
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(num) & np.isfinite(den)
                count = ok.sum(0)
                n_mean = np.where(count > 0, np.where(ok, num, 0).sum(0) / np.maximum(count, 1),
                                  np.nan)
                d_mean = np.where(count > 0, np.where(ok, den, 0).sum(0) / np.maximum(count, 1),
                                  np.nan)
            out[t][name] = Part(n_mean, d_mean)
    return out

"""The one comparison pipeline: per-item pair metrics -> pooled estimates -> item-bootstrap
CIs -> paired tests against a reference arm.

A *pair metric* compares a source and a target answer distribution item by item
(:class:`PairMetric`); the registry (:data:`PAIR_METRICS`, :func:`register_pair_metric`)
lists every metric that ``diagnose``, ``intervene``, ``steer`` and ``finetune`` report,
so a new metric is one per-item function and one registry entry::

    parts = pair_parts(p, q, gold)            # {name: Part} per item, (Q,) each
    parts = stack_parts([parts_fr, parts_de])  # several targets: (Q, T), items stay the unit
    summarise(parts)                          # {name: {"estimate", "ci", "n"}}
    paired_test(parts_arm, parts_reference)   # {name: {"estimate" (a - b), "ci", "p",
                                              #         "p_floor", "n", "a", "b"}}

Every metric is carried as a :class:`Part`, a numerator and a denominator per item (and
per target): a *mean* metric has the value as numerator and 1 as denominator wherever it
is defined, a *ratio* metric (transfer) its own two parts; the estimate is always the
pooled ``sum(num) / sum(den)`` over entries where both are finite, and the CI and the
paired test recompute exactly that on item resamples (:mod:`xlgap.stats.bootstrap`, whose
rules on seeds, missing pairs and p-value floors apply).

The registry leads with the *per-response* metrics (``response_transfer``,
``response_agreement``, ``response_success``: one source answer against one target
answer, :mod:`xlgap.stats.metrics`), then the *ensembled* ones of the modes
(``transfer``, ``agreement``, ``overall_success``), whose excess over the per-response
ones is what ensembling can recover.

A strategy or a fine-tune that changes the source arm itself also moves transfer's
denominator. :func:`reference_transfer_parts` is the one definition that holds it fixed:
the arm's target accuracy on the *reference* arm's source-correct items
(:data:`REFERENCE_TRANSFER`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from xlgap.errors import ConfigError, DataError
from xlgap.registry import Registry
from xlgap.stats.bootstrap import (
    ALPHA,
    DEFAULT_N_BOOT,
    paired_ratio_test,
    ratio_with_ci,
)
from xlgap.stats.metrics import (
    accuracy_per_item,
    agreement_per_item,
    chi2_per_item,
    js_per_item,
    l2_per_item,
    mode_correct_per_item,
    overall_success_per_item,
    response_agreement_per_item,
    response_success_per_item,
    response_transfer_parts,
    transfer_parts,
)

__all__ = [
    "PAIR_METRICS",
    "REFERENCE_TRANSFER",
    "PairMetric",
    "Part",
    "describe_metrics",
    "ensembling_recovers",
    "pair_metric",
    "pair_parts",
    "paired_test",
    "reference_transfer_parts",
    "register_pair_metric",
    "select_target",
    "source_differs",
    "stack_parts",
    "summarise",
]

Aggregation = Literal["mean", "ratio"]
Direction = Literal["higher", "lower"]
#: per-item function: ``(p, q, gold, emb) -> values (Q,)``, ``(num, den)`` for a ratio, or
#: None when an input it needs is absent (e.g. embeddings)
PerItem = Callable[[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"], Any]


@dataclass(frozen=True)
class Part:
    """Per-item parts of one metric: the estimate is ``sum(num) / sum(den)`` over the
    entries where both are finite. Items on the first axis; ``(Q,)`` or ``(Q, T)``."""

    num: np.ndarray
    den: np.ndarray

    @classmethod
    def mean(cls, values: np.ndarray) -> Part:
        """A mean over the finite entries of ``values`` (NaN = missing pair)."""
        v = np.asarray(values, dtype=np.float64)
        return cls(v, np.where(np.isfinite(v), 1.0, np.nan))

    @classmethod
    def ratio(cls, num: np.ndarray, den: np.ndarray) -> Part:
        return cls(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))

    @property
    def values(self) -> np.ndarray:
        """Per-entry values ``num / den`` (the per-item metric of a mean metric)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.den > 0, self.num / np.where(self.den > 0, self.den, 1.0),
                            np.nan)


Parts = Mapping[str, "Part | None"]


@dataclass(frozen=True)
class PairMetric:
    """One source-target comparison: ``name`` (its key in every result file),
    ``per_item`` (see :data:`PerItem`), ``aggregation`` ("mean" over finite (item, target)
    entries, or a pooled "ratio" ``sum(num) / sum(den)``), ``label`` (for tables) and
    ``direction`` ("higher" or "lower" is better; which way a gap closes)."""

    name: str
    per_item: PerItem
    aggregation: Aggregation
    label: str
    direction: Direction

    def parts(self, p: np.ndarray, q: np.ndarray, gold: np.ndarray,
              emb: np.ndarray | None = None) -> Part | None:
        out = self.per_item(p, q, gold, emb)
        if out is None:
            return None
        if self.aggregation == "ratio":
            num, den = out
            return Part.ratio(num, den)
        return Part.mean(out)


def _checked(metric: Any) -> PairMetric:
    if not isinstance(metric, PairMetric):
        raise ConfigError(f"a pair metric must be a xlgap.stats.pairs.PairMetric, got "
                          f"{metric!r}")
    if metric.aggregation not in ("mean", "ratio"):
        raise ConfigError(f"pair metric {metric.name!r}: aggregation must be 'mean' or "
                          f"'ratio', got {metric.aggregation!r}")
    if metric.direction not in ("higher", "lower"):
        raise ConfigError(f"pair metric {metric.name!r}: direction must be 'higher' or "
                          f"'lower', got {metric.direction!r}")
    return metric


#: every registered pair metric, by name, in table order (xlgap's own, then those another
#: package adds through the entry-point group ``xlgap.pair_metrics``:
#: ``mine = "package.module:METRIC"``, a PairMetric)
PAIR_METRICS: Registry[PairMetric] = Registry("pair metric", "xlgap.pair_metrics",
                                              convert=_checked)


def register_pair_metric(metric: PairMetric) -> PairMetric:
    """Add ``metric`` to :data:`PAIR_METRICS` under its name (a new name only); returns
    it."""
    _checked(metric)
    if metric.name in PAIR_METRICS:
        raise ConfigError(f"pair metric {metric.name!r} is registered already")
    PAIR_METRICS.register(metric.name, metric)
    return metric


def pair_metric(name: str) -> PairMetric:
    return PAIR_METRICS.get(name)


for _metric in (
    PairMetric("response_transfer", lambda p, q, g, e: response_transfer_parts(p, q, g),
               "ratio", "per-response transfer", "higher"),
    PairMetric("response_agreement", lambda p, q, g, e: response_agreement_per_item(p, q),
               "mean", "per-response agreement", "higher"),
    PairMetric("response_success", lambda p, q, g, e: response_success_per_item(p, q, g),
               "mean", "per-response overall success", "higher"),
    PairMetric("transfer", lambda p, q, g, e: transfer_parts(p, q, g), "ratio",
               "ensembled transfer (modes)", "higher"),
    PairMetric("agreement", lambda p, q, g, e: agreement_per_item(p, q), "mean",
               "ensembled agreement (modes)", "higher"),
    PairMetric("overall_success", lambda p, q, g, e: overall_success_per_item(p, q, g),
               "mean", "ensembled overall success (modes)", "higher"),
    PairMetric("chi2", lambda p, q, g, e: chi2_per_item(p, q), "mean", "chi-square",
               "lower"),
    PairMetric("l2", lambda p, q, g, e: None if e is None else l2_per_item(p, q, e), "mean",
               "L2 distance", "lower"),
    PairMetric("js", lambda p, q, g, e: js_per_item(p, q), "mean", "Jensen-Shannon",
               "lower"),
):
    register_pair_metric(_metric)


def describe_metrics() -> dict[str, dict[str, str]]:
    """Name -> label, direction and aggregation of every registered metric: written into
    each result file so that readers (the report) list the metrics without importing
    the registry."""
    return {m.name: {"label": m.label, "direction": m.direction, "aggregation": m.aggregation}
            for m in PAIR_METRICS.values()}


def _names(metrics: Iterable[str] | None) -> list[str]:
    return list(PAIR_METRICS) if metrics is None else [pair_metric(m).name for m in metrics]


def pair_parts(p: np.ndarray, q: np.ndarray, gold: np.ndarray,
               emb: np.ndarray | None = None, *, metrics: Iterable[str] | None = None
               ) -> dict[str, Part | None]:
    """Per-item parts of every registered metric (or of ``metrics``) for one (source,
    target) pair: ``p``, ``q`` ``(Q, O)`` distributions (NaN rows = missing), ``gold``
    ``(Q,)`` (-1 unknown), ``emb`` ``(Q, M_max, d)`` answer embeddings or None (a metric
    that needs them is then None)."""
    return {name: PAIR_METRICS[name].parts(p, q, gold, emb) for name in _names(metrics)}


def stack_parts(per_target: Sequence[Parts]) -> dict[str, Part | None]:
    """Several targets' parts, ``(Q,)`` each -> ``(Q, T)`` (items stay the resampling
    unit); a metric None for any target is None."""
    if not per_target:
        raise DataError("stack_parts: no targets")
    out: dict[str, Part | None] = {}
    for name in per_target[0]:
        parts = [pt.get(name) for pt in per_target]
        if any(part is None for part in parts):
            out[name] = None
            continue
        out[name] = Part(np.stack([pt.num for pt in parts if pt is not None], axis=1),
                         np.stack([pt.den for pt in parts if pt is not None], axis=1))
    return out


def select_target(parts: Parts, index: int) -> dict[str, Part | None]:
    """One target's ``(Q,)`` parts out of stacked ``(Q, T)`` ones."""
    return {name: None if pt is None else Part(pt.num[:, index], pt.den[:, index])
            for name, pt in parts.items()}


def summarise(parts: Parts, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
              alpha: float = ALPHA) -> dict[str, dict[str, Any] | None]:
    """``{name: {"estimate", "ci", "n"}}`` per metric: the pooled estimate, its percentile
    item-bootstrap CI and the number of (item, target) entries with data (None for a
    metric whose parts are None)."""
    return {name: None if pt is None else
            ratio_with_ci(pt.num, pt.den, n_boot=n_boot, seed=seed, alpha=alpha)
            for name, pt in parts.items()}


def paired_test(parts_a: Parts, parts_b: Parts, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                alpha: float = ALPHA) -> dict[str, dict[str, Any] | None]:
    """Arm A against reference B on the same items, per metric both have: ``{"estimate"
    (the difference a - b), "ci" (of the difference), "p" (two-sided), "p_floor" (the
    smallest p this bootstrap can give: p at the floor reads "p < p_floor"), "n" (items
    used), "a", "b" (each arm's pooled estimate)}``, both arms on the entries finite in
    both. Items are resampled jointly for both arms and each replicate recomputes the
    pooled statistics (see :func:`xlgap.stats.bootstrap.paired_ratio_test`).
    """
    out: dict[str, dict[str, Any] | None] = {}
    for name, a in parts_a.items():
        b = parts_b.get(name)
        if a is None or b is None:
            out[name] = None
            continue
        if a.num.shape != b.num.shape:
            raise DataError(f"paired test of {name!r}: the arms have other shapes "
                            f"({a.num.shape} vs {b.num.shape}); they must share items and "
                            "targets")
        out[name] = paired_ratio_test(a.num, a.den, b.num, b.den, n_boot=n_boot, seed=seed,
                                      alpha=alpha)
    return out


def ensembling_recovers(parts: Parts, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                        alpha: float = ALPHA) -> dict[str, Any] | None:
    """What ensembling can recover: ensembled (modes') minus per-response transfer on the
    same items, as a paired test (``{"estimate", "ci", "p", "p_floor", "n", "a", "b"}``,
    ``a`` the ensembled, ``b`` the per-response transfer). Under a variance-type gap the
    modes transfer and single answers do not, so the estimate is positive; under a
    bias-type gap it is about 0. None without both metrics."""
    ens, one = parts.get("transfer"), parts.get("response_transfer")
    if ens is None or one is None:
        return None
    return paired_ratio_test(ens.num, ens.den, one.num, one.den, n_boot=n_boot, seed=seed,
                             alpha=alpha)


# -- a fixed denominator --------------------------------------------------------------------

#: what :func:`reference_transfer_parts` measures, for result files and tables
REFERENCE_TRANSFER = (
    "transfer on the reference's source-correct items: the arm's target accuracy on the "
    "(item, target) pairs the reference arm answers right in the source, each weighted by "
    "the reference's source accuracy there (per response: P(gold) in the source; "
    "ensembled: the mode is gold). The denominator is the reference's, so an arm that "
    "changes its own source answers cannot raise it by losing source-correct items.")


def reference_transfer_parts(p_reference: np.ndarray, q_arm: np.ndarray, gold: np.ndarray,
                             *, ensembled: bool = False) -> Part:
    """Transfer with the reference arm's denominator (:data:`REFERENCE_TRANSFER`).

    ``p_reference`` is the reference arm's source distribution, ``q_arm`` the compared
    arm's target distribution, both ``(Q, O)``. Per response, the parts are
    ``p_ref(g) * q_arm(g)`` over ``p_ref(g)``; for the reference arm itself this is its
    ``response_transfer``. Ensembled, ``[ref mode gold] * [arm mode gold]`` over
    ``[ref mode gold]`` (fractional under ties, each language's tie broken on its own).
    """
    p_reference, q_arm = (np.asarray(x, dtype=np.float64) for x in (p_reference, q_arm))
    if p_reference.shape[0] != q_arm.shape[0] or p_reference.ndim != 2 or q_arm.ndim != 2:
        raise DataError(f"reference transfer: distributions must be (Q, O) arrays over the "
                        f"same items, got {p_reference.shape} and {q_arm.shape}")
    right = mode_correct_per_item if ensembled else _share_gold
    w, t = right(p_reference, gold), right(q_arm, gold)
    both = np.isfinite(w) & np.isfinite(t)
    return Part.ratio(np.where(both, w * t, np.nan), np.where(both, w, np.nan))


def _share_gold(p: np.ndarray, gold: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.nansum(p, axis=-1, keepdims=True)
        return accuracy_per_item(np.where(total > 0, p / np.where(total > 0, total, 1.0), p),
                                 gold)


def source_differs(p_reference: np.ndarray, p_arm: np.ndarray, atol: float = 1e-9) -> bool:
    """Whether an arm's source-language answers differ from the reference's on any item
    both have (the distributions, to ``atol``; a different set of missing items counts)."""
    a, b = np.asarray(p_reference, dtype=np.float64), np.asarray(p_arm, dtype=np.float64)
    if a.shape != b.shape:
        return True
    ok_a, ok_b = np.isfinite(a).all(axis=-1), np.isfinite(b).all(axis=-1)
    if not np.array_equal(ok_a, ok_b):
        return True
    return not np.allclose(a[ok_a], b[ok_b], atol=atol, rtol=0.0)

"""What one steering setting does on a set of items: candidate scores under steering,
per-item metric parts, pooled estimates with item-bootstrap CIs and paired tests against
a reference arm, and ILO / similarity by layer with CIs and chance levels."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from xlgap.interventions.steering.hooks import steering
from xlgap.progress import progress_bar
from xlgap.prompting.scoring import candidate_scores
from xlgap.representations.extract import CenteredStates
from xlgap.representations.ilo import default_t, ilo_by_layer
from xlgap.representations.similarity import layerwise_similarity
from xlgap.stats.bootstrap import pooled_ratio
from xlgap.stats.consistency import rankc_per_item
from xlgap.stats.metrics import accuracy_per_item
from xlgap.stats.pairs import Part, pair_parts, paired_test, stack_parts, summarise


def distributions(logps: np.ndarray) -> np.ndarray:
    """Candidate log-probabilities ``(Q, M)`` (NaN padding) -> ``(Q, M + 1)`` exact
    distributions with an empty "other" column, as :mod:`xlgap.stats.metrics` wants."""
    x = np.asarray(logps, dtype=np.float64)
    ok = np.isfinite(x)
    top = np.where(ok, x, -np.inf).max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(ok, np.exp(x - top), 0.0)
    total = e.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(total > 0, e / total, np.nan)
    return np.concatenate([p, np.zeros((len(p), 1))], axis=1)


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


def with_intervals(parts: Mapping[str, Part], reference: Mapping[str, Part] | None, *,
                   n_boot: int, seed: int) -> dict[str, Any]:
    """Each metric: pooled estimate, 95% item-bootstrap CI and ``n``; given a reference
    arm on the same items, also the paired test of the pooled difference (``p_value``,
    ``difference``, ``difference_ci``, ``p_floor``: a p at the floor reads "p < floor")."""
    out: dict[str, Any] = {k: dict(v) for k, v in summarise(parts, n_boot, seed).items()
                           if v is not None}
    if reference is not None:
        for name, test in paired_test(parts, reference, n_boot, seed).items():
            if test is None or name not in out:
                continue
            # the paired test's difference: ``estimate`` (newer stats), ``difference`` before
            diff = test.get("estimate", test.get("difference"))
            out[name].update(p_value=test["p"], difference=diff, difference_ci=test["ci"],
                             p_floor=test["p_floor"])
    return out


def report_block(parts: Mapping[str, Mapping[str, Part]],
                 reference: Mapping[str, Mapping[str, Part]] | None, *, n_boot: int,
                 seed: int) -> dict[str, Any]:
    """Pooled over targets and per target, each metric with CI (and p against reference)."""
    pooled = with_intervals(stacked(parts), stacked(reference) if reference else None,
                            n_boot=n_boot, seed=seed)
    per_target = {t: with_intervals(p, reference[t] if reference else None, n_boot=n_boot,
                                    seed=seed) for t, p in parts.items()}
    return {"all": pooled, "per_target": per_target}


# -- scoring under steering ---------------------------------------------------------------------


def setting_scores(backend: Any, dataset: Any, targets: Sequence[str], shots: int,
                   vectors: Mapping[str, Any] | None, layers: Sequence[int] = (),
                   alpha: float = 0.0) -> dict[str, np.ndarray]:
    """Candidate log-probabilities ``(Q, M)`` of each target, each steered with its own
    vector ``vectors[target]`` at ``layers`` with ``alpha`` (no steering when None)."""
    out: dict[str, np.ndarray] = {}
    for t in targets:
        ctx: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if vectors is None
            else steering(backend, vectors[t], layers, alpha))
        with ctx:
            scores, _ = candidate_scores(backend, dataset, [t], shots)
        out[t] = scores[t]
    return out


@contextlib.contextmanager
def scoring_progress(backend: Any, total: int, desc: str, enabled: bool) -> Iterator[None]:
    """A progress bar fed by the result store's per-chunk callback while the block runs
    (nothing when disabled or when the backend is not behind the store)."""
    if not enabled or "on_chunk" not in vars(backend):
        yield
        return
    bar = progress_bar(total=total, desc=desc, unit="q", enabled=enabled)
    previous = backend.on_chunk

    def update(n: int) -> None:
        bar.update(n)
        if previous is not None:
            previous(n)

    backend.on_chunk = update
    try:
        yield
    finally:
        backend.on_chunk = previous
        bar.close()


# -- inside the model ---------------------------------------------------------------------------


def inside_summary(states: Mapping[str, np.ndarray], source: str, *, k: int = 5,
                   n_boot: int = 0, n_shuffles: int = 0, seed: int = 0) -> dict[str, Any]:
    """ILO (mean over languages) and similarity to the source (means over targets) by
    layer, of ``{lang: (n, layers, d)}`` states, centred per layer as the representation
    commands do. With ``n_boot`` / ``n_shuffles``, ``summary`` gives each layer's figure
    with its item-bootstrap CI and chance level; the item draws depend only on ``seed`` and
    the number of items, so two calls on the same items (before and after) are paired."""
    t = default_t(len(states))
    n = min(len(v) for v in states.values())
    k_used = max(1, min(k, n * len(states) - 1))
    ilo = ilo_by_layer(CenteredStates(dict(states)), k=k_used, t=min(t, k_used),
                       n_boot=n_boot, n_shuffles=n_shuffles, seed=seed)
    sim = layerwise_similarity(CenteredStates(dict(states)), pivot=source, n_boot=n_boot,
                               n_shuffles=n_shuffles, seed=seed)
    out: dict[str, Any] = {
        "k": k_used, "t": min(t, k_used),
        "ilo": [float(e["mean"]) for e in ilo],
        "ilo_by_language": [e["ilo"] for e in ilo],
        "cos_parallel": [e["mean"].get("cos_parallel") for e in sim["layers"]],
        "retrieval": [e["mean"].get("retrieval") for e in sim["layers"]]}
    if n_boot or n_shuffles:
        out["summary"] = {
            "ilo": [e["summary"]["mean"] for e in ilo],
            "cos_parallel": [e["summary"]["cos_parallel"] for e in sim["layers"]],
            "retrieval": [e["summary"]["retrieval"] for e in sim["layers"]]}
    return out


def parallel_cosines(states: Mapping[str, np.ndarray], source: str) -> np.ndarray:
    """``(n, layers)``: per item and layer, the mean over targets of the cosine between the
    item's source and target states, after the per-layer centring of :func:`inside_summary`."""
    centred = CenteredStates(dict(states))
    rows = []
    for i in centred.layer_ids:
        layer = centred.layer(i)
        src = layer[source] / np.linalg.norm(layer[source], axis=1, keepdims=True).clip(1e-12)
        cos = [np.einsum("ij,ij->i", src, v / np.linalg.norm(v, axis=1, keepdims=True
                                                              ).clip(1e-12))
               for lang, v in layer.items() if lang != source]
        rows.append(np.mean(cos, axis=0))
    return np.stack(rows, axis=1)


def cosine_difference(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray],
                      source: str, *, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Per layer, the change of the parallel cosine with the source (after - before, on
    the same items): ``{"a", "b", "difference", "ci", "p", "p_floor", "n"}`` from a paired
    item bootstrap."""
    a, b = parallel_cosines(after, source), parallel_cosines(before, source)
    return [paired_test({"cos": Part.mean(a[:, i])}, {"cos": Part.mean(b[:, i])}, n_boot,
                        seed)["cos"] for i in range(a.shape[1])]

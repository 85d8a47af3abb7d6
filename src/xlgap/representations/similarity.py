"""Cross-lingual similarity of parallel representations, layer by layer.

Three views of how close two languages' representations of the same sentences are:

* cosine of parallel pairs (row i of A with row i of B) against non-parallel pairs
  (i != j); their difference isolates the translation-specific alignment from the
  anisotropy every layer has (all vectors pointing roughly the same way);
* linear CKA (Kornblith et al., 2019), which compares the geometry of the two point clouds
  and is invariant to orthogonal transforms and isotropic scaling;
* top-1 parallel-sentence retrieval by cosine, the most practical reading of alignment.

Cosine with a zero vector is 0 (see :func:`xlgap.representations.ilo.normalise_rows`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from xlgap.errors import ConfigError, DataError
from xlgap.io import finite
from xlgap.representations.ilo import LayerSource, normalise_rows

__all__ = [
    "layerwise_similarity",
    "linear_cka",
    "pair_metrics",
    "parallel_cosine",
    "retrieval_accuracy",
    "retrieval_accuracy_directed",
]

METRICS = ("cos_parallel", "cos_non_parallel", "cos_difference", "cka", "retrieval",
           "retrieval_ab", "retrieval_ba")


def _check_pair(a: np.ndarray, b: np.ndarray, where: str, same_dim: bool = True,
                min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise DataError(f"{where}: expected two 2-D arrays (n, d), got shapes {a.shape} and "
                        f"{b.shape}")
    if a.shape[0] != b.shape[0]:
        raise DataError(f"{where}: parallel arrays need the same number of rows, got "
                        f"{a.shape[0]} and {b.shape[0]}")
    if same_dim and a.shape[1] != b.shape[1]:
        raise DataError(f"{where}: arrays have different dimensions {a.shape[1]} and {b.shape[1]}")
    if a.shape[0] < min_rows:
        raise DataError(f"{where}: need at least {min_rows} rows, got {a.shape[0]}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise DataError(f"{where}: arrays contain NaN or infinite values")
    return a, b


def parallel_cosine(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean cosine of parallel pairs, of non-parallel pairs (i != j), and their difference.

    The non-parallel mean is exact without an n x n matrix: the sum over all (i, j) of
    a_i . b_j equals (sum_i a_i) . (sum_j b_j), and the parallel terms are subtracted.
    """
    a, b = _check_pair(a, b, "parallel_cosine", min_rows=2)
    an = normalise_rows(a).astype(np.float64)
    bn = normalise_rows(b).astype(np.float64)
    n = an.shape[0]
    diag = np.einsum("ij,ij->i", an, bn)
    par_sum = float(diag.sum())
    all_sum = float(an.sum(axis=0) @ bn.sum(axis=0))
    parallel = par_sum / n
    non_parallel = (all_sum - par_sum) / (n * (n - 1))
    return {"parallel": parallel, "non_parallel": non_parallel,
            "difference": parallel - non_parallel}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same n items (columns centred).

    ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, computed in float64 with the
    feature-space (d x d) products, or the n x n Gram form when n is smaller than the
    dimensions (both are equal). NaN when either side is constant (CKA is undefined).
    """
    x, y = _check_pair(x, y, "linear_cka", same_dim=False, min_rows=2)
    xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    yc = y.astype(np.float64) - y.mean(axis=0, dtype=np.float64)
    n = xc.shape[0]
    if n < max(xc.shape[1], yc.shape[1]):
        kx = xc @ xc.T
        ky = yc @ yc.T
        num = float(np.sum(kx * ky))
        den = float(np.linalg.norm(kx) * np.linalg.norm(ky))
    else:
        num = float(np.linalg.norm(xc.T @ yc) ** 2)
        den = float(np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    if den <= 0:
        return math.nan
    return num / den


def retrieval_accuracy_directed(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> float:
    """Share of rows i of ``a`` whose most cosine-similar row of ``b`` is row i.

    Ties go to the lower index (so a tie with an earlier row counts as a miss unless
    that row is the parallel one). Chunked: memory O(n * chunk).
    """
    a, b = _check_pair(a, b, "retrieval_accuracy")
    if chunk < 1:
        raise ConfigError(f"retrieval_accuracy: chunk must be >= 1, got {chunk}")
    an = normalise_rows(a)
    bn = normalise_rows(b)
    n = an.shape[0]
    hits = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        best = np.argmax(an[start:stop] @ bn.T, axis=1)
        hits += int(np.count_nonzero(best == np.arange(start, stop)))
    return hits / n


def retrieval_accuracy(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> float:
    """Top-1 parallel retrieval accuracy, averaged over both directions (a->b and b->a)."""
    return 0.5 * (retrieval_accuracy_directed(a, b, chunk)
                  + retrieval_accuracy_directed(b, a, chunk))


def pair_metrics(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> dict[str, float]:
    """All similarity metrics for one language pair at one layer."""
    cos = parallel_cosine(a, b)
    ab = retrieval_accuracy_directed(a, b, chunk)
    ba = retrieval_accuracy_directed(b, a, chunk)
    return {"cos_parallel": cos["parallel"], "cos_non_parallel": cos["non_parallel"],
            "cos_difference": cos["difference"], "cka": linear_cka(a, b),
            "retrieval": 0.5 * (ab + ba), "retrieval_ab": ab, "retrieval_ba": ba}




States = Mapping[str, np.ndarray] | Callable[[int], Mapping[str, np.ndarray]] | LayerSource


def _plan(states: States, layers: Sequence[int] | None, n_layers: int | None
          ) -> tuple[list[int], Callable[[int], Mapping[str, np.ndarray]]]:
    if isinstance(states, LayerSource):
        return (list(layers) if layers is not None else list(states.layer_ids)), states.layer
    if isinstance(states, Mapping):
        arrays = {lang: np.asarray(v) for lang, v in states.items()}
        shapes = {lang: a.shape for lang, a in arrays.items()}
        if any(a.ndim != 3 for a in arrays.values()):
            raise DataError(f"layerwise_similarity: states must be (n, layers, d) per language, "
                            f"got shapes {shapes}")
        n_l = {a.shape[1] for a in arrays.values()}
        if len(n_l) != 1:
            raise DataError(f"layerwise_similarity: languages have different layer counts {shapes}")
        total = n_l.pop()
        ids = list(layers) if layers is not None else list(range(total))
        for i in ids:
            if not 0 <= i < total:
                raise ConfigError(f"layerwise_similarity: layer {i} out of range 0..{total - 1}")
        return ids, lambda i: {lang: a[:, i, :] for lang, a in arrays.items()}
    if callable(states):
        if layers is not None:
            return list(layers), states
        if n_layers is None:
            raise ConfigError("layerwise_similarity: with a loader function, pass n_layers or "
                              "layers")
        return list(range(n_layers)), states
    raise DataError("layerwise_similarity: expected a mapping lang -> (n, layers, d), a loader "
                    f"function or a HiddenStateSet, got {type(states).__name__}")


def _pairs(langs: list[str], pivot: str | None) -> list[tuple[str, str]]:
    if pivot is None:
        return list(itertools.combinations(langs, 2))
    if pivot not in langs:
        raise ConfigError(f"layerwise_similarity: pivot {pivot!r} is not among the languages "
                          f"{langs}")
    return [(pivot, lang) for lang in langs if lang != pivot]


def layerwise_similarity(states: States, pivot: str | None = None, *,
                         layers: Sequence[int] | None = None, n_layers: int | None = None,
                         chunk: int = 2048) -> dict[str, Any]:
    """Similarity metrics per layer for all language pairs (or pairs with ``pivot``).

    ``states`` is ``{lang: (n, n_layers, d)}``, a loader ``i -> {lang: (n, d)}`` (give
    ``n_layers`` or ``layers``) or a ``HiddenStateSet``; one layer is processed at a time.
    Returns ``{"languages", "pivot", "pairs", "metrics", "layers": [{"layer": i, "pairs":
    [{"a", "b", <metrics>}], "mean": {<metric>: mean over pairs}}]}``; NaN becomes None.
    """
    ids, load = _plan(states, layers, n_layers)
    out_layers: list[dict[str, Any]] = []
    langs: list[str] | None = None
    pairs: list[tuple[str, str]] = []
    for i in ids:
        vecs = load(i)
        if langs is None:
            langs = list(vecs)
            if len(langs) < 2:
                raise DataError(f"layerwise_similarity: need at least 2 languages, got {langs}")
            pairs = _pairs(langs, pivot)
        elif list(vecs) != langs:
            raise DataError(f"layerwise_similarity: layer {i} has languages {list(vecs)}, "
                            f"expected {langs}")
        rows: list[dict[str, Any]] = []
        for la, lb in pairs:
            try:
                m = pair_metrics(vecs[la], vecs[lb], chunk)
            except DataError as exc:
                raise DataError(f"layer {i}, pair {la}-{lb}: {exc}") from exc
            rows.append({"a": la, "b": lb, **{key: finite(v) for key, v in m.items()}})
        mean: dict[str, float | None] = {}
        for key in METRICS:
            vals = [r[key] for r in rows if r[key] is not None]
            mean[key] = float(np.mean(vals)) if vals else None
        out_layers.append({"layer": int(i), "pairs": rows, "mean": mean})
    return {"languages": langs or [], "pivot": pivot, "pairs": [list(p) for p in pairs],
            "metrics": list(METRICS), "layers": out_layers}

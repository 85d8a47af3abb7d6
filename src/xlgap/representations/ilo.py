"""Inter-Language Overlap (ILO): how much a language's representations mix with others'.

Definition used throughout xlgap (one layer at a time):

* Pool the vectors of all languages into one set of N points.
* For every point take its ``k`` nearest neighbours by cosine distance among *all* pooled
  points, itself excluded. Ties in similarity go to the lower global index (languages are
  laid out in the order of the input mapping, rows in their given order), so the result is
  deterministic. Ties are judged on the computed similarities: two mathematically equal
  cosines can differ in the last bit when the matrix product sums in a different order
  (e.g. another ``chunk``), which only matters for exactly tied inputs.
* ``bridge(L)``: share of L's points whose ``k`` neighbours include at least ``t``
  *distinct* languages other than L. A point that bridges sits where several languages meet.
* ``reach(L)``: share of the other ``n_languages - 1`` languages that occur anywhere in the
  union of L's points' neighbourhoods. A language with high reach touches all the others.
* ``ILO(L)``: harmonic mean of bridge and reach (0 when either is 0), so a language scores
  high only when many of its points are mixed *and* the mixing covers many languages.

Cosine similarity with a zero vector is defined as 0 (a zero row is left at zero when rows
are normalised), so zero vectors never produce NaN; they are equidistant from everything and
their neighbours are decided by the index tie-break.

The k-NN search is chunked: rows are normalised once, and blocks of ``chunk`` queries are
multiplied against all points, so memory is O(N * chunk) and an N x N matrix is never built
(about 9 bytes per query-point pair in float32: with N = 17,000 and chunk = 2048 that is
some 300 MiB; a smaller chunk uses proportionally less, at a similar speed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from xlgap.errors import ConfigError, DataError

__all__ = [
    "IloResult",
    "ilo",
    "ilo_by_layer",
    "ilo_from_npz",
    "knn_cosine",
    "normalise_rows",
]


#: rows with more than k + this many candidates tied at the k-th similarity are sorted
#: one at a time instead of in the vectorised batch (bounds the candidate arrays' size)
_TIE_SLACK = 64


@runtime_checkable
class LayerSource(Protocol):
    """Anything that loads one layer at a time (e.g. ``HiddenStateSet``)."""

    @property
    def layer_ids(self) -> list[int]: ...

    def layer(self, i: int) -> dict[str, np.ndarray]: ...


def _work_dtype(x: np.ndarray) -> type[np.floating[Any]]:
    """float64 stays float64 (exact references in tests); anything else is computed in float32."""
    return np.float64 if x.dtype == np.float64 else np.float32


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero (cosine with them is then 0)."""
    x = np.asarray(x)
    out = x.astype(_work_dtype(x), copy=True)
    norms = np.linalg.norm(out, axis=1)
    nonzero = norms > 0
    out[nonzero] /= norms[nonzero, None]
    return out


def _topk_rows(sim: np.ndarray, k: int, first_global: int) -> np.ndarray:
    """Exact top-``k`` column indices of each row of ``sim`` (descending, ties to lower index).

    ``sim`` is modified: each query's own column is set to -inf to exclude it.
    A linear-time partition finds each row's k-th largest similarity; every column reaching
    it is a candidate (exactly k unless values tie at the boundary), and the candidates are
    sorted by (similarity descending, index ascending). Partitioning the float32 values
    (rather than ``argpartition``'s int64 index array) keeps the temporary at 4 bytes per
    entry and is faster. Rows with many tied candidates are done one by one, so even
    fully degenerate input (all points equal) stays within O(N * chunk) memory.
    """
    c, n = sim.shape
    rows = np.arange(c)
    sim[rows, first_global + rows] = -np.inf
    kth = np.partition(sim, n - k, axis=1)[:, n - k]
    mask = sim >= kth[:, None]
    heavy = np.flatnonzero(np.count_nonzero(mask, axis=1) > k + _TIE_SLACK)
    mask[heavy] = False
    r, col = np.nonzero(mask)
    del mask
    order = np.lexsort((col, -sim[r, col], r))
    r, col = r[order], col[order]
    starts = np.searchsorted(r, rows)
    out = col[starts[:, None] + np.arange(k)] if len(heavy) == 0 else np.empty((c, k), np.int64)
    if len(heavy):
        light = np.setdiff1d(rows, heavy)
        out[light] = col[starts[light, None] + np.arange(k)]
    for i in heavy:
        cand = np.flatnonzero(sim[i] >= kth[i])
        out[i] = cand[np.lexsort((cand, -sim[i, cand]))[:k]]
    return out


def knn_cosine(x: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Indices ``(N, k)`` of each row's ``k`` nearest rows by cosine, self excluded.

    Neighbours are ordered by decreasing similarity; equal similarities go to the lower
    index. Memory is O(N * chunk): ``chunk`` query rows are scored against all N rows at once.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"knn_cosine: expected a 2-D array (points, dims), got shape {x.shape}")
    n = x.shape[0]
    if k < 1:
        raise ConfigError(f"knn_cosine: k must be >= 1, got {k}")
    if n < k + 1:
        raise ConfigError(f"knn_cosine: need at least k+1 = {k + 1} points, got {n}")
    if chunk < 1:
        raise ConfigError(f"knn_cosine: chunk must be >= 1, got {chunk}")
    if not np.all(np.isfinite(x)):
        raise DataError("knn_cosine: vectors contain NaN or infinite values")
    xn = normalise_rows(x)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sim = xn[start:stop] @ xn.T
        out[start:stop] = _topk_rows(sim, k, start)
    return out


@dataclass
class IloResult:
    """ILO of one layer: per-language ``ilo``, ``bridge``, ``reach`` and the mean ILO."""

    ilo: dict[str, float]
    bridge: dict[str, float]
    reach: dict[str, float]
    mean: float
    k: int
    t: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def _harmonic(a: float, b: float) -> float:
    return 0.0 if a <= 0 or b <= 0 else 2 * a * b / (a + b)


def _validate_vectors(vectors: Mapping[str, np.ndarray], k: int, t: int,
                      where: str) -> tuple[list[str], list[np.ndarray]]:
    if not isinstance(vectors, Mapping) or len(vectors) == 0:
        raise DataError(f"{where}: expected a non-empty mapping language -> (n, d) array")
    langs: list[str] = []
    arrays: list[np.ndarray] = []
    dim: int | None = None
    for lang, arr in vectors.items():
        if not isinstance(lang, str) or not lang.strip():
            raise DataError(f"{where}: language keys must be non-empty strings, got {lang!r}")
        a = np.asarray(arr)
        if a.ndim != 2:
            raise DataError(f"{where}: vectors of {lang!r} must be 2-D (n, d), got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{where}: vectors of {lang!r} are not numeric (dtype {a.dtype})")
        if dim is None:
            dim = a.shape[1]
        elif a.shape[1] != dim:
            raise DataError(f"{where}: vectors of {lang!r} have dimension {a.shape[1]}, "
                            f"expected {dim} like {langs[0]!r}")
        langs.append(lang)
        arrays.append(a)
    if k < 1:
        raise ConfigError(f"{where}: k must be >= 1, got {k}")
    if t < 1:
        raise ConfigError(f"{where}: t must be >= 1, got {t}")
    if t > len(langs) - 1:
        raise ConfigError(f"{where}: t = {t} distinct other languages cannot occur with only "
                          f"{len(langs)} language(s); t must be <= n_languages - 1 = "
                          f"{len(langs) - 1}")
    if t > k:
        raise ConfigError(f"{where}: t = {t} distinct languages cannot occur among only k = {k} "
                          "neighbours; choose t <= k")
    total = sum(a.shape[0] for a in arrays)
    if total < k + 1:
        raise ConfigError(f"{where}: need at least k+1 = {k + 1} points over all languages, "
                          f"got {total}")
    return langs, arrays


def ilo(vectors: Mapping[str, np.ndarray], k: int = 5, t: int = 3,
        chunk: int = 2048) -> IloResult:
    """ILO of each language for one layer (see the module docstring for the definition)."""
    langs, arrays = _validate_vectors(vectors, k, t, "ilo")
    n_lang = len(langs)
    pooled = np.concatenate([a.astype(_work_dtype(a), copy=False) for a in arrays], axis=0)
    labels = np.repeat(np.arange(n_lang), [a.shape[0] for a in arrays])
    nn = knn_cosine(pooled, k, chunk)
    n = pooled.shape[0]
    # presence[p, l]: language l occurs among p's neighbours (own language removed).
    presence = np.zeros((n, n_lang), dtype=bool)
    presence[np.arange(n)[:, None], labels[nn]] = True
    presence[np.arange(n), labels] = False
    n_other = presence.sum(axis=1)
    bridge: dict[str, float] = {}
    reach: dict[str, float] = {}
    scores: dict[str, float] = {}
    for li, lang in enumerate(langs):
        mine = labels == li
        if not mine.any():
            # A language without points neither bridges nor reaches anything.
            bridge[lang] = reach[lang] = scores[lang] = 0.0
            continue
        bridge[lang] = float(np.mean(n_other[mine] >= t))
        reach[lang] = float(presence[mine].any(axis=0).sum() / (n_lang - 1))
        scores[lang] = _harmonic(bridge[lang], reach[lang])
    return IloResult(ilo=scores, bridge=bridge, reach=reach,
                     mean=float(np.mean(list(scores.values()))), k=k, t=t)


LayerVectors = (Sequence[Mapping[str, np.ndarray]]
                | Callable[[int], Mapping[str, np.ndarray]]
                | LayerSource)


Loader = Callable[[int], Mapping[str, np.ndarray]]


def _layer_plan(layer_vectors: LayerVectors, layers: Sequence[int] | None,
                n_layers: int | None) -> tuple[list[int], Loader]:
    """Which layer ids to visit and how to load each one (lazily, one at a time)."""
    if isinstance(layer_vectors, LayerSource):
        ids = list(layers) if layers is not None else list(layer_vectors.layer_ids)
        return ids, layer_vectors.layer
    if callable(layer_vectors):
        if layers is not None:
            return list(layers), layer_vectors
        if n_layers is None:
            raise ConfigError("ilo_by_layer: with a loader function, pass n_layers or layers")
        return list(range(n_layers)), layer_vectors
    if isinstance(layer_vectors, Sequence):
        seq = layer_vectors
        ids = list(layers) if layers is not None else list(range(len(seq)))
        for i in ids:
            if not 0 <= i < len(seq):
                raise ConfigError(f"ilo_by_layer: layer {i} out of range 0..{len(seq) - 1}")
        return ids, lambda i: seq[i]
    raise DataError("ilo_by_layer: expected a sequence of per-layer mappings, a loader "
                    f"function or a HiddenStateSet, got {type(layer_vectors).__name__}")


def ilo_by_layer(layer_vectors: LayerVectors, n_layers: int | None = None, *,
                 layers: Sequence[int] | None = None, k: int = 5, t: int = 3,
                 chunk: int = 2048) -> list[dict[str, Any]]:
    """ILO for each layer; one layer is loaded at a time.

    ``layer_vectors`` is a sequence of per-layer mappings ``{lang: (n, d)}``, a function
    ``i -> mapping`` (then give ``n_layers`` or ``layers``) or a ``HiddenStateSet``.
    Returns ``[{"layer": i, "ilo": {...}, "bridge": {...}, "reach": {...}, "mean": x}, ...]``.
    """
    ids, load = _layer_plan(layer_vectors, layers, n_layers)
    out: list[dict[str, Any]] = []
    for i in ids:
        res = ilo(load(i), k=k, t=t, chunk=chunk)
        out.append({"layer": int(i), "ilo": res.ilo, "bridge": res.bridge, "reach": res.reach,
                    "mean": res.mean})
    return out


def ilo_from_npz(path: str | Path, k: int = 5, t: int = 3, chunk: int = 2048) -> dict[str, Any]:
    """ILO of user-supplied vectors stored as ``.npz``: one array per language.

    Each array is ``(n, d)`` (one layer) or ``(n, n_layers, d)`` (all layers, like the
    backend's ``hidden_states`` output); all arrays must have the same number of dimensions.
    Returns ``{"source": path, "k": k, "t": t, "languages": [...], "layers": [...]}`` with
    the per-layer entries of :func:`ilo_by_layer`.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"ilo_from_npz: no such file: {p}")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"ilo_from_npz: cannot read {p} as .npz: {exc}") from exc
    if not arrays:
        raise DataError(f"ilo_from_npz: {p} holds no arrays (expected one per language)")
    ndims = {name: a.ndim for name, a in arrays.items()}
    if set(ndims.values()) == {2}:
        layer_list: list[Mapping[str, np.ndarray]] = [arrays]
    elif set(ndims.values()) == {3}:
        n_layer_set = {a.shape[1] for a in arrays.values()}
        if len(n_layer_set) != 1:
            raise DataError(f"ilo_from_npz: {p}: arrays have different numbers of layers "
                            f"{ {n: a.shape[1] for n, a in arrays.items()} }")
        n_l = n_layer_set.pop()
        layer_list = [{name: a[:, i, :] for name, a in arrays.items()} for i in range(n_l)]
    else:
        raise DataError(f"ilo_from_npz: {p}: each array must be 2-D (n, d) or 3-D "
                        f"(n, layers, d), all alike; got dimensions {ndims}")
    try:
        layers_out = ilo_by_layer(layer_list, k=k, t=t, chunk=chunk)
    except (ConfigError, DataError) as exc:
        raise type(exc)(f"{p}: {exc}") from exc
    return {"source": str(p), "k": k, "t": t, "languages": list(arrays),
            "n_per_language": {name: int(a.shape[0]) for name, a in arrays.items()},
            "layers": layers_out}

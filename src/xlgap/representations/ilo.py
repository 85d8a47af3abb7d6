"""Interlingual Local Overlap (ILO): how much each language's representations share
neighbourhoods with the other languages'.

ILO is the score introduced by Wilie, Cahyawijaya, He and Fung, "High-Dimensional
Interlingual Representations of Large Language Models" (arXiv:2503.11280, 2025; SIGTYP
2025). Definition used throughout xlgap (one layer at a time), which follows the authors'
reference code:

* Pool the vectors of all languages into one set of N points.
* For every point take its ``k`` nearest neighbours among *all* pooled points, itself
  excluded, by cosine similarity (xlgap's default) or Euclidean distance (the reference
  code's default; ``--preset paper``). Ties go to the lower global index (languages are
  laid out in the order of the input mapping, rows in their given order), so the result
  is deterministic. Ties are judged on the computed scores: two mathematically equal
  scores can differ in the last bit when the matrix product sums in a different order
  (e.g. another ``chunk``), which only matters for exactly tied inputs.
* ``bridge(L)``: share of L's points whose ``k`` neighbours include at least ``t``
  *distinct* languages other than L. A point that bridges sits where several languages meet.
* ``reach(L)``: share of the other ``n_languages - 1`` languages that occur anywhere in the
  union of L's points' neighbourhoods. A language with high reach touches all the others.
* ``ILO(L)``: harmonic mean of bridge and reach (0 when either is 0), so a language scores
  high only when many of its points are mixed *and* the mixing covers many languages.

ILO looks at which *languages* surround a point, never at which sentence: it does not
use the pairing of rows across languages, and shuffling one language's rows leaves it
unchanged. Its reference is therefore the *fully language-mixed reference*: the ILO of
the same neighbour lists with the language labels of the pooled points permuted, i.e. the
value ILO would have if language left no trace in the geometry. It is not a floor: ILO
runs from 0 (no point's neighbours include other languages: each language keeps to
itself) up to about this reference (languages mix as if unlabelled), and can exceed it
when neighbourhoods are more evenly multilingual than random labels make them (each
point's nearest neighbours its own translations). A measured 0.00-0.02 against a
reference of 0.85 says the languages sit apart, not that the data fell below a chance
floor. See :func:`ilo_uncertainty`, which also gives bootstrap intervals over items; its
figures carry the reference as ``mixed_reference`` and, for older readers, ``chance``.

Cosine similarity with a zero vector is defined as 0 (a zero row is left at zero when rows
are normalised), so zero vectors never produce NaN; they are equidistant from everything and
their neighbours are decided by the index tie-break. Euclidean scores are computed on
mean-centred rows: distances do not change under a shift, and smaller norms lose less
to rounding (hidden states share a huge common component).

The k-NN search is chunked: rows are prepared once, and blocks of ``chunk`` queries are
multiplied against all points, so memory is O(N * chunk) and an N x N matrix is never built
(about 9 bytes per query-point pair in float32: with N = 17,000 and chunk = 2048 that is
some 300 MiB; a smaller chunk uses proportionally less, at a similar speed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.errors import ConfigError, DataError
from xlgap.representations.extract import CenteredStates, States, layer_plan
from xlgap.stats.bootstrap import (
    DEFAULT_N_BOOT,
    DEFAULT_N_SHUFFLES,
    figure,
    item_counts,
    percentile_ci,
    two_sided_p,
)

__all__ = [
    "DISTANCES",
    "PRESETS",
    "IloResult",
    "default_t",
    "ilo",
    "ilo_by_layer",
    "ilo_from_npz",
    "ilo_uncertainty",
    "knn",
    "knn_cosine",
    "knn_euclidean",
    "normalise_rows",
]

DISTANCES = ("cosine", "euclidean")

#: ILO settings by name. ``xlgap``: cosine on centred states (a few outlier dimensions of
#: Gemma-like models put every raw cosine near 0.99, see
#: :class:`~xlgap.representations.extract.CenteredStates`), k = 5. ``paper``: the defaults
#: of the ILO paper's reference code (Wilie et al., 2025): Euclidean distance, k = 10,
#: states as the model gives them.
PRESETS: dict[str, dict[str, Any]] = {
    "xlgap": {"metric": "cosine", "k": 5, "t": 3, "center": True},
    "paper": {"metric": "euclidean", "k": 10, "t": 3, "center": False},
}

#: rows with more than k + this many candidates tied at the k-th similarity are sorted
#: one at a time instead of in the vectorised batch (bounds the candidate arrays' size)
_TIE_SLACK = 64


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


def _check_metric(metric: str, where: str) -> None:
    if metric not in DISTANCES:
        raise ConfigError(f"{where}: unknown distance {metric!r}; choose one of "
                          f"{', '.join(DISTANCES)}")


Prepared = tuple[np.ndarray, np.ndarray | None]


def _prepare(x: np.ndarray, metric: str) -> Prepared:
    """Rows ``m`` and per-point offsets ``b`` with score(q, j) = m[q] . m[j] - b[j].

    A larger score is a nearer point. Cosine: unit rows, no offset. Euclidean:
    -|q - x_j|^2 / 2 = q . x_j - |x_j|^2 / 2 - |q|^2 / 2, and the last term is the same
    for every candidate of a query, so it cannot change the query's ranking and is left out.
    """
    if metric == "cosine":
        return normalise_rows(x), None
    xc = (np.asarray(x, dtype=np.float64) - np.mean(x, axis=0, dtype=np.float64)
          ).astype(_work_dtype(np.asarray(x)))
    return xc, 0.5 * np.einsum("ij,ij->i", xc, xc)


def _scores(prep: Prepared, rows: slice) -> np.ndarray:
    """Scores of the query rows ``rows`` against every point."""
    m, offset = prep
    sim = m[rows] @ m.T
    if offset is not None:
        sim -= offset
    return sim


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


def knn(x: np.ndarray, k: int, metric: str = "cosine", chunk: int = 2048) -> np.ndarray:
    """Indices ``(N, k)`` of each row's ``k`` nearest rows, self excluded.

    ``metric`` is ``"cosine"`` (largest cosine similarity) or ``"euclidean"`` (smallest
    distance). Neighbours are ordered nearest first; equal scores go to the lower index.
    Memory is O(N * chunk): ``chunk`` query rows are scored against all N rows at once.
    """
    x = np.asarray(x)
    _check_metric(metric, "knn")
    if x.ndim != 2:
        raise DataError(f"knn: expected a 2-D array (points, dims), got shape {x.shape}")
    n = x.shape[0]
    if k < 1:
        raise ConfigError(f"knn: k must be >= 1, got {k}")
    if n < k + 1:
        raise ConfigError(f"knn: need at least k+1 = {k + 1} points, got {n}")
    if chunk < 1:
        raise ConfigError(f"knn: chunk must be >= 1, got {chunk}")
    if not np.all(np.isfinite(x)):
        raise DataError("knn: vectors contain NaN or infinite values")
    return _knn_prepared(_prepare(x, metric), n, k, chunk)


def _knn_prepared(prep: Prepared, n: int, k: int, chunk: int) -> np.ndarray:
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        out[start:stop] = _topk_rows(_scores(prep, slice(start, stop)), k, start)
    return out


def knn_cosine(x: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """:func:`knn` by cosine similarity."""
    return knn(x, k, "cosine", chunk)


def knn_euclidean(x: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """:func:`knn` by Euclidean distance."""
    return knn(x, k, "euclidean", chunk)


@dataclass
class IloResult:
    """ILO of one layer: per-language ``ilo``, ``bridge``, ``reach`` and the mean ILO."""

    ilo: dict[str, float]
    bridge: dict[str, float]
    reach: dict[str, float]
    mean: float
    k: int
    t: int
    metric: str = "cosine"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def default_t(n_languages: int) -> int:
    """The bridging threshold used when none is given: 3 distinct other languages (the
    paper's), or all the others when there are fewer than 4 languages."""
    return max(1, min(3, n_languages - 1))


def _validate_vectors(vectors: Mapping[str, np.ndarray], k: int, t: int | None,
                      where: str) -> tuple[list[str], list[np.ndarray], int]:
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
    if t is None:
        t = default_t(len(langs))
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
    return langs, arrays, t


def _pool(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All languages' points in one array, and each point's language number."""
    pooled = np.concatenate([a.astype(_work_dtype(a), copy=False) for a in arrays], axis=0)
    labels = np.repeat(np.arange(len(arrays)), [a.shape[0] for a in arrays])
    return pooled, labels


def _presence(neighbour_labels: np.ndarray, own: np.ndarray, n_lang: int,
              keep: np.ndarray | None = None) -> np.ndarray:
    """``(P, n_lang)``: language l occurs among point p's (kept) neighbours, own removed."""
    presence = np.zeros((len(own), n_lang), dtype=bool)
    if keep is None:
        presence[np.arange(len(own))[:, None], neighbour_labels] = True
    else:
        r, c = np.nonzero(keep)
        presence[r, neighbour_labels[r, c]] = True
    presence[np.arange(len(own)), own] = False
    return presence


def _overlap(presence: np.ndarray, own: np.ndarray, n_lang: int, t: int,
             weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bridge, reach and ILO per language from each point's neighbour languages.

    ``weight`` is each point's multiplicity (1, or its bootstrap count; 0 = absent). A
    language without points neither bridges nor reaches anything (all three are 0).
    """
    mass = np.bincount(own, weights=weight, minlength=n_lang)
    bridged = np.bincount(own, weights=weight * (presence.sum(axis=1) >= t), minlength=n_lang)
    bridge = np.divide(bridged, mass, out=np.zeros(n_lang), where=mass > 0)
    active = weight > 0
    seen = np.zeros((n_lang, n_lang), dtype=bool)
    r, c = np.nonzero(presence[active])
    seen[own[active][r], c] = True
    reach = seen.sum(axis=1) / (n_lang - 1)
    total = bridge + reach
    score = np.divide(2 * bridge * reach, total, out=np.zeros(n_lang),
                      where=(bridge > 0) & (reach > 0))
    return bridge, reach, score


def ilo(vectors: Mapping[str, np.ndarray], k: int = 5, t: int | None = 3,
        chunk: int = 2048, metric: str = "cosine") -> IloResult:
    """ILO of each language for one layer (see the module docstring for the definition).

    ``t=None`` uses :func:`default_t` of the number of languages."""
    langs, arrays, t = _validate_vectors(vectors, k, t, "ilo")
    _check_metric(metric, "ilo")
    pooled, labels = _pool(arrays)
    nn = knn(pooled, k, metric, chunk)
    bridge, reach, score = _overlap(_presence(labels[nn], labels, len(langs)), labels,
                                    len(langs), t, np.ones(len(labels)))
    return IloResult(ilo=dict(zip(langs, score.tolist(), strict=True)),
                     bridge=dict(zip(langs, bridge.tolist(), strict=True)),
                     reach=dict(zip(langs, reach.tolist(), strict=True)),
                     mean=float(score.mean()), k=k, t=t, metric=metric)


def _point_counts(sizes: Sequence[int], n_boot: int, seed: int) -> tuple[str, Any]:
    """How replicates draw points: ``("items", (n_boot, n))`` when every language has the
    same n rows (taken as parallel: item i is drawn in every language at once), else
    ``("per language", [(n_boot, n_L), ...])``, each language's rows drawn on their own."""
    if len(set(sizes)) == 1:
        return "items", item_counts(sizes[0], n_boot, seed)
    return "per language", [item_counts(n, n_boot, seed + 7919 * j)
                            for j, n in enumerate(sizes)]


MIXED_REFERENCE = (
    "fully language-mixed reference: ILO with the language labels of the pooled points "
    "permuted at random (mean over the shuffles), the value if language left no trace in "
    "the geometry; 0 means no language mixes with any other, so ILO between 0 and the "
    "reference says how far languages mix, and it is not a floor")


def ilo_uncertainty(vectors: Mapping[str, np.ndarray], k: int = 5, t: int | None = 3, *,
                    metric: str = "cosine", chunk: int = 2048,
                    n_boot: int = DEFAULT_N_BOOT, n_shuffles: int = DEFAULT_N_SHUFFLES,
                    seed: int = 0) -> dict[str, Any]:
    """ILO of one layer with 95% bootstrap intervals over items and a chance level.

    Returns ``{"ilo", "bridge", "reach", "mean", "t", "resampling", "summary": {"mean": F,
    "ilo": {lang: F}}}`` where each F is ``{"estimate", "ci", "chance"}``.

    * Bootstrap: ``n_boot`` replicates draw the items with replacement, the same items in
      every language (languages of different sizes are drawn separately). The neighbour
      lists of the full sample are kept, and each replicate re-weights the points by
      their draws: bridge(L) is the draw-weighted share of L's points that bridge, reach(L)
      counts the languages met by the drawn points' neighbourhoods. Searching neighbours
      anew among the drawn items instead would put ILO on a pool of only ~63% distinct
      items, whose sparser neighbourhoods mix more: in a simulation (5 languages x 100
      items) such intervals sat above the estimate, while these were centred on it with a
      spread close to that of ILO over fresh samples (slightly narrower, since the
      neighbour lists themselves are held fixed). 0 skips the intervals (``ci`` null).
    * Fully language-mixed reference (``mixed_reference``; also under the older name
      ``chance``): the language labels of the pooled points are permuted at random
      (``n_shuffles`` times, mean taken) on the same neighbour lists: the overlap a layer
      would show if points were not grouped by language at all. (A shuffle of rows
      across languages, the chance level of the paired metrics, would leave ILO
      unchanged.) 0 is the other end: no language mixes with any other. ``n_shuffles`` 0
      skips it (null).
    """
    langs, arrays, t = _validate_vectors(vectors, k, t, "ilo_uncertainty")
    _check_metric(metric, "ilo_uncertainty")
    if n_boot < 0 or n_shuffles < 0:
        raise ConfigError(f"ilo_uncertainty: n_boot and n_shuffles must be >= 0, got "
                          f"{n_boot} and {n_shuffles}")
    n_lang = len(langs)
    pooled, labels = _pool(arrays)
    nn = knn(pooled, k, metric, chunk)
    presence = _presence(labels[nn], labels, n_lang)
    ones = np.ones(len(labels))
    bridge, reach, score = _overlap(presence, labels, n_lang, t, ones)
    resampling = None
    reps = None
    if n_boot:
        resampling, counts = _point_counts([a.shape[0] for a in arrays], n_boot, seed)
        reps = np.empty((n_boot, n_lang))
        for r in range(n_boot):
            mult = (np.tile(counts[r], n_lang) if resampling == "items"
                    else np.concatenate([c[r] for c in counts]))
            reps[r] = _overlap(presence, labels, n_lang, t, mult)[2]
    chance = None
    if n_shuffles:
        rng = np.random.default_rng((seed, 3))
        draws = []
        for _ in range(n_shuffles):
            perm = rng.permutation(labels)
            draws.append(_overlap(_presence(perm[nn], perm, n_lang), perm, n_lang, t,
                                  ones)[2])
        chance = np.mean(draws, axis=0)
    summary = {
        "mean": figure(float(score.mean()), None if reps is None else reps.mean(axis=1),
                       None if chance is None else float(chance.mean())),
        "ilo": {lang: figure(float(score[j]), None if reps is None else reps[:, j],
                             None if chance is None else float(chance[j]))
                for j, lang in enumerate(langs)},
    }
    for fig in [summary["mean"], *summary["ilo"].values()]:
        fig["mixed_reference"] = fig.get("chance")  # the name for what it is
    return {"ilo": dict(zip(langs, score.tolist(), strict=True)),
            "mixed_reference_method": MIXED_REFERENCE,
            "bridge": dict(zip(langs, bridge.tolist(), strict=True)),
            "reach": dict(zip(langs, reach.tolist(), strict=True)),
            "mean": float(score.mean()), "t": t, "resampling": resampling, "summary": summary}


#: kept for callers of the old name
LayerVectors = States


def ilo_by_layer(layer_vectors: States, n_layers: int | None = None, *,
                 layers: Sequence[int] | None = None, k: int = 5, t: int | None = 3,
                 chunk: int = 2048, metric: str = "cosine", n_boot: int = 0,
                 n_shuffles: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """ILO for each layer; one layer is loaded at a time.

    ``layer_vectors`` is a sequence of per-layer mappings ``{lang: (n, d)}``, a mapping
    ``{lang: (n, layers, d)}``, a function ``i -> mapping`` (then give ``n_layers`` or
    ``layers``) or a ``HiddenStateSet``.
    Returns ``[{"layer": i, "ilo": {...}, "bridge": {...}, "reach": {...}, "mean": x}, ...]``;
    with ``n_boot`` or ``n_shuffles`` each entry also has the ``summary`` of
    :func:`ilo_uncertainty` (the same item draws at every layer, so layers compare on
    equal terms).
    """
    ids, load = layer_plan(layer_vectors, layers, n_layers, "ilo_by_layer")
    out: list[dict[str, Any]] = []
    for i in ids:
        if n_boot or n_shuffles:
            res = ilo_uncertainty(load(i), k, t, metric=metric, chunk=chunk, n_boot=n_boot,
                                  n_shuffles=n_shuffles, seed=seed)
            out.append({"layer": int(i), "ilo": res["ilo"], "bridge": res["bridge"],
                        "reach": res["reach"], "mean": res["mean"],
                        "summary": res["summary"]})
        else:
            one = ilo(load(i), k=k, t=t, chunk=chunk, metric=metric)
            out.append({"layer": int(i), "ilo": one.ilo, "bridge": one.bridge,
                        "reach": one.reach, "mean": one.mean})
    return out


def ilo_from_npz(path: str | Path, k: int = 5, t: int | None = 3, chunk: int = 2048, *,
                 metric: str = "cosine", n_boot: int = 0, n_shuffles: int = 0,
                 seed: int = 0) -> dict[str, Any]:
    """ILO of user-supplied vectors stored as ``.npz``: one array per language.

    Each array is ``(n, d)`` (one layer) or ``(n, n_layers, d)`` (all layers, like the
    backend's ``hidden_states`` output); all arrays must have the same number of dimensions.
    Returns ``{"source": path, "k", "t", "metric", "languages", "n_per_language",
    "layers": [...]}`` with the per-layer entries of :func:`ilo_by_layer`.
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
    if t is None:
        t = default_t(len(arrays))
    try:
        layers_out = ilo_by_layer(layer_list, k=k, t=t, chunk=chunk, metric=metric,
                                  n_boot=n_boot, n_shuffles=n_shuffles, seed=seed)
    except (ConfigError, DataError) as exc:
        raise type(exc)(f"{p}: {exc}") from exc
    return {"source": str(p), "k": k, "t": t, "metric": metric, "languages": list(arrays),
            "n_per_language": {name: int(a.shape[0]) for name, a in arrays.items()},
            "layers": layers_out}


def ilo_difference(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], *,
                   k: int, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Per layer, the paired change of mean ILO (after - before) on the same items:
    ``{"estimate", "ci", "p", "p_floor", "n"}``. Each replicate draws the items once and
    re-weights both arms' points by the same draws (the neighbour lists of each arm held
    fixed, as :func:`ilo_uncertainty` does for one arm)."""
    langs = list(before)
    if list(after) != langs:
        raise ConfigError("ilo_difference: both arms need the same languages")
    n = min(len(v) for v in before.values())
    if any(len(v) != n for v in [*before.values(), *after.values()]):
        raise ConfigError("ilo_difference: every language of both arms needs the same items")
    t = default_t(len(langs))
    k_used = max(1, min(k, n * len(langs) - 1))
    t = min(t, k_used)
    cb, ca = CenteredStates(dict(before)), CenteredStates(dict(after))
    counts = item_counts(n, n_boot, seed) if n_boot else None
    out = []
    for i in cb.layer_ids:
        scores = []
        reps = []
        for arm in (ca, cb):
            layer = arm.layer(i)
            pooled, labels = _pool([np.asarray(layer[x]) for x in langs])
            presence = _presence(labels[knn(pooled, k_used)], labels, len(langs))
            scores.append(_overlap(presence, labels, len(langs), t,
                                   np.ones(len(labels)))[2].mean())
            if counts is not None:
                reps.append(np.array([
                    _overlap(presence, labels, len(langs), t,
                             np.tile(counts[r], len(langs)))[2].mean()
                    for r in range(n_boot)]))
        entry: dict[str, Any] = {"estimate": float(scores[0] - scores[1]), "ci": [None, None],
                                 "p": None, "p_floor": None, "n": n}
        if reps:
            diff = reps[0] - reps[1]
            p, floor = two_sided_p(diff)
            entry.update(ci=[float(x) for x in percentile_ci(diff)], p=p, p_floor=floor)
        out.append(entry)
    return out

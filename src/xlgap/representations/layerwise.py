"""The white-box analyses by layer as functions: ILO (with its presets), similarity, the
logit lens and cross-lingual consistency, each returning a :class:`~xlgap.results.Result`,
and :func:`look_inside`, all four in one call. ``xlgap ilo``, ``similarity``,
``logit-lens``, ``consistency`` and ``inside`` are thin wrappers over these (they add the
files and plots).

Hidden states come through one function, :func:`hidden_states` (extracted, or resumed
from ``OUT/hidden/``)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.data.items import ParallelDataset
from xlgap.errors import ConfigError
from xlgap.prompting.scoring import candidate_scores, parallel_texts
from xlgap.representations.extract import CenteredStates, HiddenStateSet, load_or_extract
from xlgap.representations.ilo import (
    MIXED_REFERENCE,
    PRESETS,
    default_t,
    ilo_by_layer,
    ilo_from_npz,
)
from xlgap.representations.logit_lens import logit_lens
from xlgap.representations.similarity import layerwise_similarity
from xlgap.results import Result, load_result, result_class
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, DEFAULT_N_SHUFFLES
from xlgap.stats.consistency import consistency_matrix
from xlgap.stats.pairs import Part, paired_test

ILO_NAME = ("Interlingual Local Overlap (ILO) of Wilie et al., 2025, 'High-Dimensional "
            "Interlingual Representations of Large Language Models', arXiv:2503.11280")

#: the analyses of :func:`look_inside`, in order
ANALYSES = ("ilo", "similarity", "logit_lens", "consistency")
POOLINGS = ("mean", "mean_no_bos", "last")


def languages_of(source: str, targets: Sequence[str]) -> list[str]:
    """The source, then every target that is not the source."""
    return [source, *[t for t in targets if t != source]]


def hidden_states(backend: Any, dataset: ParallelDataset, languages: Sequence[str],
                  out: str | Path | None = None, *, pooling: str = "mean_no_bos",
                  batch_size: int = 16, progress: bool = False) -> HiddenStateSet:
    """Pooled hidden states of the parallel texts of ``languages``, every layer, extracted
    into ``out/hidden/`` or resumed from there; without ``out``, into a new temporary
    directory (kept: the set reads its layers from it)."""
    if not getattr(backend, "supports_white_box", False):
        raise ConfigError(f"hidden states need a white-box model; "
                          f"{getattr(backend, 'name', backend)!r} has none")
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    where = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="xlgap-hidden-"))
    return load_or_extract(backend, parallel_texts(dataset, list(languages)), where,
                           pooling=pooling, batch_size=batch_size, progress=progress)


def ilo_settings(preset: str = "xlgap", *, k: int | None = None, t: int | None = None,
                 distance: str | None = None, center: bool | None = None,
                 n_languages: int | None = None) -> dict[str, Any]:
    """The preset's ILO settings with the options given explicitly laid over them
    (``t`` stays None, to be resolved later, when the number of languages is unknown)."""
    if preset not in PRESETS:
        raise ConfigError(f"ILO preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    base = PRESETS[preset]
    if t is None and n_languages is not None:
        t = default_t(n_languages)
    return {"preset": preset, "metric": distance or base["metric"],
            "k": base["k"] if k is None else k, "t": t,
            "centered": base["center"] if center is None else center}


def _uncertainty(n_boot: int, n_shuffles: int, seed: int) -> dict[str, int]:
    return {"n_boot": n_boot, "n_shuffles": n_shuffles, "seed": seed}


def ilo(states: Any, *, preset: str = "xlgap", k: int | None = None, t: int | None = None,
        distance: str | None = None, center: bool | None = None, pooling: str = "mean_no_bos",
        n_boot: int = DEFAULT_N_BOOT, n_shuffles: int = DEFAULT_N_SHUFFLES, seed: int = 0
        ) -> Result:
    """ILO by layer of hidden ``states`` (``xlgap ilo``), under the ``preset``'s settings
    ('xlgap': cosine on centred states, k = 5; 'paper': as Wilie et al., 2025)."""
    settings = ilo_settings(preset, k=k, t=t, distance=distance, center=center,
                            n_languages=len(states.languages))
    unc = _uncertainty(n_boot, n_shuffles, seed)
    source = CenteredStates(states) if settings["centered"] else states
    layers = ilo_by_layer(source, k=settings["k"], t=settings["t"], metric=settings["metric"],
                          **unc)
    return load_result_kind("ilo", {"score": ILO_NAME, **settings, "pooling": pooling, **unc,
                                    "ci_level": 0.95, "chance_method": MIXED_REFERENCE,
                                    "layers": layers})


def ilo_of_vectors(path: str | Path, *, preset: str = "xlgap", k: int | None = None,
                   t: int | None = None, distance: str | None = None,
                   n_boot: int = DEFAULT_N_BOOT, n_shuffles: int = DEFAULT_N_SHUFFLES,
                   seed: int = 0) -> Result:
    """ILO of your own vectors: an .npz with one (n, d) array per language (rows parallel),
    used as given (no centring, whatever the preset says); no model is run."""
    settings = ilo_settings(preset, k=k, t=t, distance=distance)
    unc = _uncertainty(n_boot, n_shuffles, seed)
    found = ilo_from_npz(path, k=settings["k"], t=settings["t"], metric=settings["metric"],
                         **unc)
    return load_result_kind("ilo", {"score": ILO_NAME, **settings, "centered": False, **found,
                                    **unc, "ci_level": 0.95, "chance_method": MIXED_REFERENCE})


def similarity(states: Any, *, pivot: str | None = None, center: bool | None = None,
               n_boot: int = DEFAULT_N_BOOT, n_shuffles: int = DEFAULT_N_SHUFFLES,
               seed: int = 0) -> Result:
    """Similarity of the languages' states by layer (``xlgap similarity``); centred unless
    ``center`` is False (a few huge outlier dimensions make every pair look alike)."""
    centered = True if center is None else center
    found = layerwise_similarity(CenteredStates(states) if centered else states, pivot=pivot,
                                 **_uncertainty(n_boot, n_shuffles, seed))
    found["centered"] = centered
    return load_result_kind("similarity", found)


def lens(backend: Any, dataset: ParallelDataset, languages: Sequence[str], *,
         pivot: str | None = None, shots: int = 3, progress: bool = False) -> Result:
    """The logit lens by layer (``xlgap logit-lens``): at which layer the answer shows, and
    in which language (``pivot``: the language read off; default the first)."""
    return load_result_kind("logit_lens", logit_lens(
        backend, dataset.items, list(languages), pivot=pivot or languages[0], shots=shots,
        progress=progress))


def consistency(backend: Any, dataset: ParallelDataset, languages: Sequence[str], *,
                shots: int = 3, n_boot: int = DEFAULT_N_BOOT,
                n_shuffles: int = DEFAULT_N_SHUFFLES, seed: int = 0) -> Result:
    """Cross-lingual consistency of the candidate rankings (``xlgap consistency``)."""
    scores, gold = candidate_scores(backend, dataset, list(languages), shots)
    return load_result_kind("consistency", consistency_matrix(
        scores, gold, **_uncertainty(n_boot, n_shuffles, seed)))


class InsideResult(Result):
    """What :func:`look_inside` found: one result per analysis (``result["ilo"]``, ...).
    ``save(dir)`` writes each one's file (``ilo.json``, ...), as ``xlgap inside`` does; its
    frame stacks theirs."""

    default_kind = "inside"

    def estimates(self) -> Any:
        for part in self.values():
            if isinstance(part, Result):
                yield from part.estimates()

    def save(self, path: str | Path) -> Path:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        for part in self.values():
            part.save(directory / f"{part.kind}.json")
        return directory

    @classmethod
    def from_payload(cls, payload: Any, path: Path) -> InsideResult:
        """The analyses' files in the directory ``path``, as one result."""
        directory = Path(path)
        parts = {name: load_result(directory / f"{name}.json") for name in ANALYSES
                 if (directory / f"{name}.json").exists()}
        if not parts:
            raise ConfigError(f"{directory}: no {', '.join(ANALYSES)} result file")
        return cls("inside", parts)


def look_inside(backend: Any, dataset: ParallelDataset, *, source: str,
                targets: Sequence[str], out: str | Path | None = None,
                analyses: Sequence[str] = ANALYSES, preset: str = "xlgap",
                pooling: str = "mean_no_bos", k: int | None = None, t: int | None = None,
                distance: str | None = None, center: bool | None = None,
                pivot: str | None = None, shots: int = 3, batch_size: int = 16,
                n_boot: int = DEFAULT_N_BOOT, n_shuffles: int = DEFAULT_N_SHUFFLES,
                seed: int = 0, progress: bool = False) -> InsideResult:
    """ILO, similarity, the logit lens and consistency (``analyses``) on one set of hidden
    states, as ``xlgap inside`` computes them. The logit lens and consistency need
    candidates; on a data set without any they are left out. ``out`` keeps the hidden
    states (``out/hidden/``) and gets each analysis' file."""
    unknown = [a for a in analyses if a not in ANALYSES]
    if unknown:
        raise ConfigError(f"look_inside: unknown analyses {unknown}; known: "
                          f"{', '.join(ANALYSES)}")
    languages = languages_of(source, targets)
    pivot = pivot or source
    unc = _uncertainty(n_boot, n_shuffles, seed)
    parts: dict[str, Result] = {}
    if "ilo" in analyses or "similarity" in analyses:
        states = hidden_states(backend, dataset, languages, out, pooling=pooling,
                               batch_size=batch_size, progress=progress)
        if "ilo" in analyses:
            parts["ilo"] = ilo(states, preset=preset, k=k, t=t, distance=distance,
                               center=center, pooling=pooling, **unc)
        if "similarity" in analyses:
            parts["similarity"] = similarity(states, pivot=pivot, center=center, **unc)
    if dataset.has_candidates:
        if "logit_lens" in analyses:
            parts["logit_lens"] = lens(backend, dataset, languages, pivot=pivot, shots=shots,
                                       progress=progress)
        if "consistency" in analyses:
            parts["consistency"] = consistency(backend, dataset, languages, shots=shots, **unc)
    found = InsideResult("inside", parts)
    if out is not None:
        found.save(out)
    return found


# -- in-memory states, before and after an intervention -------------------------------------------


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
    the same items): ``{"estimate" (the difference), "ci", "p", "p_floor", "n", "a", "b"}``
    from a paired item bootstrap."""
    a, b = parallel_cosines(after, source), parallel_cosines(before, source)
    return [paired_test({"cos": Part.mean(a[:, i])}, {"cos": Part.mean(b[:, i])}, n_boot,
                        seed)["cos"] for i in range(a.shape[1])]


def load_result_kind(kind: str, data: dict[str, Any]) -> Result:
    """``data`` as the result class registered for ``kind``."""
    return result_class(kind)(kind, data)

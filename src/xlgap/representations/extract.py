"""Hidden states: resumable extraction to disk, and per-layer access for the analyses.

``extract_hidden_states`` asks a backend for pooled hidden states batch by batch and writes
them straight into one memory-mapped ``.npy`` per layer, ``layer_{i:03d}.npy`` of shape
``(total_texts, d)``: the languages' texts are concatenated in the order given. Beside them
``index.json`` records what was extracted (languages, counts, layers, pooling, backend
fingerprint, dtype, batch size, a hash of the texts) and which batches are finished; it is
rewritten (atomically) after every batch, once the batch's rows are flushed to disk.

So an interrupted run resumes at the first unfinished batch, and nothing finished is
recomputed; an index that does not match the request (other model, pooling, texts, layers,
dtype or batch size) is discarded and extraction starts fresh.

Memory: one batch of pooled states ``(batch, layers, d)`` at a time; token-level states are
never seen (the backend pools) and finished rows live only on disk.

:func:`load_or_extract` is the one way the commands get hidden states (extract or resume
into ``OUT/hidden/``); :func:`layer_plan` is the one way the analyses walk layers, whatever
form the states come in; :class:`CenteredStates` removes each layer's mean.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from xlgap.errors import BackendError, ConfigError, DataError
from xlgap.io import dump_json
from xlgap.models.base import POOLINGS, Backend
from xlgap.models.layers import white_box
from xlgap.progress import progress_bar

__all__ = [
    "HIDDEN_DIR",
    "INDEX_NAME",
    "CenteredStates",
    "HiddenStateSet",
    "LayerSource",
    "States",
    "extract_hidden_states",
    "layer_path",
    "layer_plan",
    "load_or_extract",
]

INDEX_NAME = "index.json"
FORMAT_VERSION = 1
#: sub-directory of a command's output directory that holds its hidden states
HIDDEN_DIR = "hidden"


def layer_path(out_dir: str | Path, layer: int) -> Path:
    """Where the states of model layer ``layer`` are stored."""
    return Path(out_dir) / f"layer_{layer:03d}.npy"


def _texts_hash(langs: Sequence[str], texts: Mapping[str, Sequence[str]]) -> str:
    h = hashlib.sha256()
    for lang in langs:
        h.update(b"\x00L" + lang.encode())
        for text in texts[lang]:
            h.update(b"\x00T" + text.encode())
    return h.hexdigest()


class HiddenStateSet:
    """Hidden states stored by :func:`extract_hidden_states`, read one layer at a time."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        index_file = self.out_dir / INDEX_NAME
        if not index_file.is_file():
            raise DataError(f"no hidden-state index at {index_file}")
        try:
            self.index: dict[str, Any] = json.loads(index_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read hidden-state index {index_file}: {exc}") from exc

    @property
    def languages(self) -> list[str]:
        return list(self.index["languages"])

    @property
    def n_per_language(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.index["n_per_language"].items()}

    @property
    def layer_ids(self) -> list[int]:
        """Model layer indices stored (0 = embeddings)."""
        return [int(i) for i in self.index["layers"]]

    @property
    def n_layers(self) -> int:
        """Number of stored layers."""
        return len(self.index["layers"])

    @property
    def complete(self) -> bool:
        return all(self.index["done"])

    @property
    def fingerprint(self) -> str:
        return str(self.index["fingerprint"])

    @property
    def pooling(self) -> str:
        return str(self.index["pooling"])

    def layer(self, i: int) -> dict[str, np.ndarray]:
        """States of model layer ``i`` as ``{lang: (n, d) float32}``."""
        if i not in self.layer_ids:
            raise ConfigError(f"layer {i} was not extracted to {self.out_dir}; stored layers: "
                              f"{self.layer_ids}")
        if not self.complete:
            raise DataError(f"hidden-state extraction in {self.out_dir} is unfinished "
                            f"({sum(self.index['done'])}/{len(self.index['done'])} batches); "
                            "rerun it to resume")
        arr = np.load(layer_path(self.out_dir, i), mmap_mode="r")
        out: dict[str, np.ndarray] = {}
        offset = 0
        for lang in self.languages:
            n = self.n_per_language[lang]
            out[lang] = np.asarray(arr[offset:offset + n], dtype=np.float32)
            offset += n
        return out

    def __repr__(self) -> str:
        return (f"HiddenStateSet({str(self.out_dir)!r}, languages={self.languages}, "
                f"layers={self.n_layers}, complete={self.complete})")


def _batches(total: int, batch_size: int) -> Iterator[tuple[int, int, int]]:
    for b, start in enumerate(range(0, total, batch_size)):
        yield b, start, min(start + batch_size, total)


def _rows_named(rows: np.ndarray) -> str:
    """The texts of a batch, by their rows in the flat language-by-language order."""
    shown = ", ".join(str(int(r)) for r in sorted(rows)[:5])
    return f"texts {shown}{', ...' if len(rows) > 5 else ''}"


def _validate(backend: Backend, texts_by_lang: Mapping[str, Sequence[str]], pooling: str,
              layers: Sequence[int] | None, batch_size: int,
              dtype: Any) -> tuple[list[str], list[int], np.dtype[Any]]:
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ConfigError(f"dtype must be a float type, got {dt}")
    if not texts_by_lang:
        raise DataError("extract_hidden_states: no languages given")
    langs = list(texts_by_lang)
    for lang in langs:
        texts = texts_by_lang[lang]
        if isinstance(texts, str) or len(texts) == 0:
            raise DataError(f"extract_hidden_states: language {lang!r} needs a non-empty list "
                            "of texts")
        bad = [j for j, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise DataError(f"extract_hidden_states: {lang!r} text {bad[0]} is not a string")
    n_total = backend.n_layers
    layer_ids = list(range(n_total)) if layers is None else [int(i) for i in layers]
    if not layer_ids:
        raise ConfigError("extract_hidden_states: no layers requested")
    bad_layers = [i for i in layer_ids if not 0 <= i < n_total]
    if bad_layers:
        raise ConfigError(f"extract_hidden_states: layers {bad_layers} out of range "
                          f"0..{n_total - 1} for this model")
    if len(set(layer_ids)) != len(layer_ids):
        raise ConfigError(f"extract_hidden_states: duplicate layers in {layer_ids}")
    return langs, layer_ids, dt


def _matches(index: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(index.get(key) == value for key, value in wanted.items())


def _open_existing(out: Path, wanted: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored index if it matches the request and its layer files are intact."""
    index_file = out / INDEX_NAME
    if not index_file.is_file():
        return None
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or not _matches(index, wanted):
        return None
    done = index.get("done")
    if not isinstance(done, list) or len(done) != index.get("n_batches"):
        return None
    if any(done):
        dim = index.get("dim")
        for i in wanted["layers"]:
            p = layer_path(out, i)
            try:
                arr = np.load(p, mmap_mode="r")
            except (OSError, ValueError):
                return None
            if arr.shape != (wanted["n_total"], dim) or arr.dtype != np.dtype(wanted["dtype"]):
                return None
    return index


def _reset(out: Path) -> None:
    """Remove a stale extraction (index first, so a crash here cannot look resumable)."""
    with contextlib.suppress(FileNotFoundError):
        (out / INDEX_NAME).unlink()
    for p in out.glob("layer_[0-9][0-9][0-9].npy"):
        p.unlink()


def extract_hidden_states(backend: Backend, texts_by_lang: Mapping[str, Sequence[str]],
                          out_dir: str | Path, *, pooling: str = "mean",
                          layers: Sequence[int] | None = None, batch_size: int = 16,
                          dtype: Any = np.float16, progress: bool = True) -> HiddenStateSet:
    """Extract pooled hidden states of every text to ``out_dir``, resuming if possible.

    ``layers`` are model layer indices (default: all ``backend.n_layers``; 0 = embeddings).
    Values are stored as ``dtype`` (float16 halves the disk size; a value that would
    overflow it raises a DataError asking for float32). Returns a :class:`HiddenStateSet`.
    """
    langs, layer_ids, dt = _validate(backend, texts_by_lang, pooling, layers, batch_size, dtype)
    n_per = {lang: len(texts_by_lang[lang]) for lang in langs}
    n_total = sum(n_per.values())
    n_batches = (n_total + batch_size - 1) // batch_size
    wanted: dict[str, Any] = {
        "format": FORMAT_VERSION, "languages": langs, "n_per_language": n_per,
        "n_total": n_total, "layers": layer_ids, "pooling": pooling,
        "fingerprint": backend.fingerprint, "dtype": dt.name, "batch_size": batch_size,
        "n_batches": n_batches, "texts_sha256": _texts_hash(langs, texts_by_lang)}
    flat: list[str] = [text for lang in langs for text in texts_by_lang[lang]]
    # Batches take the texts in order of length (in tokens where the backend tokenizes,
    # else characters; ties by position), so that a batch pads little; each text's states
    # go back to its own row. The order is part of the index: a resume that would order
    # the texts otherwise (another backend wrapper) starts afresh instead of filling the
    # wrong rows.
    encode = getattr(backend, "encode", None)
    sizes = [len(encode(t)) if callable(encode) else len(t) for t in flat]
    order = sorted(range(n_total), key=lambda i: (sizes[i], i))
    wanted["batch_order_sha256"] = hashlib.sha256(
        json.dumps(order).encode()).hexdigest()[:16]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = _open_existing(out, wanted)
    if index is None:
        _reset(out)
        index = {**wanted, "dim": None, "done": [False] * n_batches, "n_done": 0}
        dump_json(index, out / INDEX_NAME, indent=None)

    maps: dict[int, np.memmap] = {}
    if index["dim"] is not None:
        maps = {i: np.load(layer_path(out, i), mmap_mode="r+") for i in layer_ids}

    bar = progress_bar(total=n_batches, initial=int(index["n_done"]), enabled=progress,
                       desc="hidden states", unit="batch")
    try:
        for b, start, stop in _batches(n_total, batch_size):
            if index["done"][b]:
                continue
            rows = np.array(order[start:stop])
            where = _rows_named(rows)
            states = np.asarray(backend.hidden_states([flat[i] for i in rows], layer_ids,
                                                      pooling))
            if states.ndim != 3 or states.shape[:2] != (stop - start, len(layer_ids)):
                raise BackendError(f"backend {backend.kind!r} returned hidden states of shape "
                                   f"{states.shape} for {stop - start} texts and "
                                   f"{len(layer_ids)} layers")
            if not np.all(np.isfinite(states)):
                raise BackendError(f"backend {backend.kind!r} returned NaN/inf hidden states "
                                   f"for {where}")
            if index["dim"] is None:
                index["dim"] = int(states.shape[2])
                maps = {i: np.lib.format.open_memmap(layer_path(out, i), mode="w+", dtype=dt,
                                                     shape=(n_total, index["dim"]))
                        for i in layer_ids}
            elif states.shape[2] != index["dim"]:
                raise BackendError(f"backend {backend.kind!r} returned width {states.shape[2]}, "
                                   f"earlier batches had {index['dim']}")
            peak = float(np.abs(states).max())
            if peak > float(np.finfo(dt).max):
                raise DataError(f"hidden states up to {peak:.4g} overflow {dt.name} ({where}); "
                                "extract with dtype=np.float32")
            stored = states.astype(dt)
            for j, i in enumerate(layer_ids):
                maps[i][rows] = stored[:, j, :]
            for m in maps.values():
                m.flush()
            index["done"][b] = True
            index["n_done"] = int(sum(index["done"]))
            dump_json(index, out / INDEX_NAME, indent=None)
            bar.update(1)
    finally:
        bar.close()
        for m in maps.values():
            m.flush()
        maps.clear()
    return HiddenStateSet(out)


def hidden_by_language(backend: Any, texts: Mapping[str, Sequence[str]], pooling: str,
                       steer_for: Callable[[str], contextlib.AbstractContextManager[Any]]
                       | None = None) -> dict[str, np.ndarray]:
    """``{lang: (n, layers, d)}`` pooled states of every layer, each language under the
    steering ``steer_for(lang)`` gives (none when it is None). The result store is
    skipped: these are a few hundred texts, recomputed in seconds, and would bloat it."""
    inner = white_box(backend)
    out: dict[str, np.ndarray] = {}
    for lang, lang_texts in texts.items():
        ctx = steer_for(lang) if steer_for is not None else contextlib.nullcontext()
        with ctx:
            out[lang] = np.asarray(inner.hidden_states(list(lang_texts), None, pooling),
                                   dtype=np.float32)
    return out


def load_or_extract(backend: Backend, texts_by_lang: Mapping[str, Sequence[str]],
                    out: str | Path, *, pooling: str, batch_size: int = 16,
                    progress: bool = True, layers: Sequence[int] | None = None,
                    dtype: Any = np.float16) -> HiddenStateSet:
    """Hidden states of ``texts_by_lang`` under ``out/hidden/``: extracted, or resumed, or
    reused when a finished extraction matches (see :func:`extract_hidden_states`).

    The per-layer files are the cache, so a caching wrapper around the backend (one with
    an ``inner`` backend) is bypassed: the store would hold every vector a second time.
    """
    inner = getattr(backend, "inner", backend)
    return extract_hidden_states(inner, texts_by_lang, Path(out) / HIDDEN_DIR, pooling=pooling,
                                 layers=layers, batch_size=batch_size, dtype=dtype,
                                 progress=progress)


# -- per-layer access ------------------------------------------------------------------------


@runtime_checkable
class LayerSource(Protocol):
    """Anything that loads one layer at a time (e.g. ``HiddenStateSet``)."""

    @property
    def layer_ids(self) -> list[int]: ...

    def layer(self, i: int) -> dict[str, np.ndarray]: ...


Loader = Callable[[int], Mapping[str, np.ndarray]]

#: the forms the analyses accept: a HiddenStateSet (or any LayerSource), a mapping
#: ``{lang: (n, layers, d)}``, a list of per-layer mappings ``{lang: (n, d)}``, or a
#: function ``i -> {lang: (n, d)}``
States = LayerSource | Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | Loader


def _check_ids(ids: list[int], total: int, where: str) -> list[int]:
    for i in ids:
        if not 0 <= i < total:
            raise ConfigError(f"{where}: layer {i} out of range 0..{total - 1}")
    return ids


def layer_plan(states: States, layers: Sequence[int] | None = None,
               n_layers: int | None = None, where: str = "layer_plan"
               ) -> tuple[list[int], Loader]:
    """Which layer ids to visit and how to load each one (lazily, one at a time).

    ``layers`` picks layer ids (default: all); a loader function needs ``layers`` or
    ``n_layers`` since it cannot say how many layers there are.
    """
    if isinstance(states, LayerSource):
        ids = list(layers) if layers is not None else list(states.layer_ids)
        return ids, states.layer
    if isinstance(states, Mapping):
        arrays = {lang: np.asarray(v) for lang, v in states.items()}
        shapes = {lang: a.shape for lang, a in arrays.items()}
        if not arrays or any(a.ndim != 3 for a in arrays.values()):
            raise DataError(f"{where}: states must be (n, layers, d) per language, got shapes "
                            f"{shapes}")
        counts = {a.shape[1] for a in arrays.values()}
        if len(counts) != 1:
            raise DataError(f"{where}: languages have different layer counts {shapes}")
        total = counts.pop()
        ids = _check_ids(list(layers) if layers is not None else list(range(total)), total,
                         where)
        return ids, lambda i: {lang: a[:, i, :] for lang, a in arrays.items()}
    if callable(states):
        if layers is not None:
            return list(layers), states
        if n_layers is None:
            raise ConfigError(f"{where}: with a loader function, pass n_layers or layers")
        return list(range(n_layers)), states
    if isinstance(states, Sequence) and not isinstance(states, str | bytes):
        seq = states
        ids = _check_ids(list(layers) if layers is not None else list(range(len(seq))),
                         len(seq), where)
        return ids, lambda i: seq[i]
    raise DataError(f"{where}: expected a HiddenStateSet, a mapping lang -> (n, layers, d), a "
                    "list of per-layer mappings or a loader function, got "
                    f"{type(states).__name__}")


class CenteredStates:
    """A layer source whose vectors have the layer's mean removed.

    The mean is taken over every language's points together, so only the direction that
    all texts share is removed and language identity is kept. Why: a few outlier
    dimensions of models like Gemma give every hidden state a huge common component, so
    raw cosines are near 0.99 for any two sentences and cosine-based measures say nothing.
    """

    def __init__(self, states: States, layers: Sequence[int] | None = None,
                 n_layers: int | None = None) -> None:
        self.layer_ids, self._load = layer_plan(states, layers, n_layers, "CenteredStates")

    def layer(self, i: int) -> dict[str, np.ndarray]:
        vectors = self._load(i)
        pooled = np.concatenate([np.asarray(v, dtype=np.float64) for v in vectors.values()])
        mean = pooled.mean(axis=0, keepdims=True)
        # float64 stays float64 (exact references in tests); anything else becomes float32
        return {lang: (np.asarray(v, dtype=np.float64) - mean).astype(
                    np.float64 if np.asarray(v).dtype == np.float64 else np.float32)
                for lang, v in vectors.items()}

"""Steering vectors: pure aggregators over pooled hidden states, and their file format.

From the pooled hidden states of the same items in several languages, per layer:
``source.T = mean(h_source) - mean(h_T)`` (from target T toward the source) and
``shared.T = mean over languages - mean(h_T)`` (toward the centre of all languages, every
language weighted alike). A :class:`SteeringVectors` holds them with their metadata, is
saved as safetensors, and applies one of them to a model as a context manager::

    vectors = train_steering_vectors(backend, train_items, source="en", targets=["fr"])
    with vectors.apply(backend, layers=[6], alpha=1.0, target="fr"):
        backend.score_batch(...)

Layer numbers are those of ``hidden_states``: 0 is the input of the first block and ``i``
the output of block ``i - 1``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xlgap.errors import ConfigError, DataError
from xlgap.interventions.steering.hooks import Steering, parse_layers, steering
from xlgap.models.layers import white_box
from xlgap.prompting.scoring import parallel_texts
from xlgap.representations.extract import hidden_by_language

log = logging.getLogger(__name__)

FORMAT = "xlgap-steering-1"
DIRECTIONS = ("shared", "source")


def language_means(states: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, torch.Tensor]:
    """Mean pooled state of each language: ``{lang: (n, layers, d)}`` -> ``{lang: (layers, d)}``.

    Means are taken in float64 so the small difference of two large means keeps its digits.
    """
    out: dict[str, torch.Tensor] = {}
    for lang, value in states.items():
        x = torch.as_tensor(np.asarray(value) if isinstance(value, np.ndarray) else value)
        if x.ndim != 3 or x.shape[0] == 0:
            raise DataError(f"steering: states of {lang!r} must be (n > 0, layers, d), got "
                            f"{tuple(x.shape)}")
        out[lang] = x.double().mean(0)
    shapes = {tuple(m.shape) for m in out.values()}
    if len(shapes) != 1:
        raise DataError(f"steering: languages have different state shapes {shapes}")
    return out


def direction_vectors(means: Mapping[str, torch.Tensor], source: str,
                      targets: Sequence[str]) -> dict[str, torch.Tensor]:
    """``source.T`` and ``shared.T`` for every target T (float32, ``(layers, d)``).

    The shared centre is the mean of the language means of every language in ``means``,
    so a language with more items does not pull it toward itself.
    """
    if source not in means:
        raise DataError(f"steering: no states for the source {source!r}")
    missing = [t for t in targets if t not in means]
    if missing:
        raise DataError(f"steering: no states for targets {missing}")
    centre = torch.stack(list(means.values())).mean(0)
    out: dict[str, torch.Tensor] = {}
    for t in targets:
        out[f"source.{t}"] = (means[source] - means[t]).float()
        out[f"shared.{t}"] = (centre - means[t]).float()
    return out


def compute_vectors(states: Mapping[str, np.ndarray], source: str, targets: Sequence[str]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every direction vector, each language's mean (``mean.L``) and, to read alpha
    against, the norms by layer of the vectors and of the typical state."""
    means = language_means(states)
    vectors = direction_vectors(means, source, targets)
    vectors.update({f"mean.{lang}": m.float() for lang, m in means.items()})
    norms = {
        "vectors": {k: v.norm(dim=-1).tolist() for k, v in vectors.items()
                    if not k.startswith("mean.")},
        "states": {lang: np.linalg.norm(np.asarray(s, dtype=np.float64), axis=-1).mean(0).tolist()
                   for lang, s in states.items()}}
    return vectors, norms


def random_like(vector: torch.Tensor, seed: int) -> torch.Tensor:
    """A random direction per layer with the same per-layer norm as ``vector``: the
    control that tells "toward the shared space" from any push of that size. Seeded, so
    a rerun steers (and caches) the same control."""
    v = torch.as_tensor(vector).detach().float()
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(v.shape, generator=g, dtype=torch.float32)
    scale = v.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return noise * scale


@dataclass
class SteeringVectors:
    """Named ``(layers, d)`` vectors (``shared.fr``, ``source.fr``, ``mean.fr``...) and the
    metadata that says where they come from."""

    vectors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        return sorted({name.split(".", 1)[1] for name in self.vectors
                       if name.split(".", 1)[0] in DIRECTIONS})

    def save(self, path: str | Path) -> Path:
        """Write safetensors (metadata values JSON-encoded), atomically."""
        from safetensors.torch import save_file

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in self.meta.items()}}
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            save_file({k: v.detach().float().cpu().contiguous() for k, v in self.vectors.items()},
                      tmp, metadata=meta)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(cls, path: str | Path) -> SteeringVectors:
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"steering vectors file {p} does not exist")
        try:
            with safe_open(str(p), framework="pt") as fh:
                raw = fh.metadata() or {}
                vectors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own error types
            raise DataError(f"cannot read steering vectors {p}: {exc}") from exc
        if raw.get("format") != FORMAT:
            raise DataError(f"{p} is not an xlgap steering file (format "
                            f"{raw.get('format')!r}, expected {FORMAT!r})")
        meta = {k: json.loads(v) for k, v in raw.items() if k != "format"}
        return cls(vectors, meta)

    def resolve(self, key: str = "") -> str:
        """The vector a user means: a full name (``shared.fr``), a language (its best or
        ``shared`` direction) or nothing (allowed when the file has a single target)."""
        if key in self.vectors:
            return key
        direction = (self.meta.get("best") or {}).get("direction", "shared")
        if not key:
            if len(self.targets) != 1:
                raise ConfigError(f"the steering file holds vectors for {self.targets}; name "
                                  f"one: FILE:LANG or FILE:DIRECTION.LANG (e.g. "
                                  f"{direction}.{self.targets[0] if self.targets else 'fr'})")
            key = self.targets[0]
        name = f"{direction}.{key}"
        if name not in self.vectors:
            raise ConfigError(f"no steering vector {key!r}; the file has "
                              f"{', '.join(sorted(self.vectors))}")
        return name

    def vector(self, target: str = "") -> torch.Tensor:
        """The ``(layers, d)`` vector :meth:`resolve` names."""
        return self.vectors[self.resolve(target)]

    def apply(self, model: Any, layers: Sequence[int] | int | str | None = None,
              alpha: float | None = None, *, target: str = ""
              ) -> contextlib.AbstractContextManager[Any]:
        """A context manager that steers ``model`` (a backend, or the store in front of
        one) with the vector ``target`` names (see :meth:`resolve`) at ``layers`` with
        strength ``alpha``, and always removes its hooks on leaving, also on an exception.
        ``layers`` and ``alpha`` default to the best setting ``xlgap steer`` recorded."""
        best = self.meta.get("best") or {}
        chosen = (best.get("layers") if layers is None else
                  [layers] if isinstance(layers, int) else parse_layers(layers))
        strength = best.get("alpha") if alpha is None else alpha
        if not chosen or strength is None:
            raise ConfigError("these vectors record no best setting: give layers and alpha")
        return steering(model, self.vector(target), chosen, float(strength))


def train_steering_vectors(backend: Any, dataset: Any, source: str | None = None,
                           targets: Sequence[str] | None = None, *,
                           pooling: str = "mean_no_bos") -> SteeringVectors:
    """Steering vectors from the items of ``dataset`` (each cloze sentence filled with its
    gold answer) in ``source`` (default: the data set's first language) and every target
    (default: the others). The metadata records the model, pooling, languages, items and
    the norms by layer of every vector and of the typical state."""
    source = source or dataset.languages[0]
    targets = [t for t in (targets or dataset.languages) if t != source]
    if not targets:
        raise ConfigError("steering vectors need at least one target language")
    languages = [source, *targets]
    states = hidden_by_language(backend, parallel_texts(dataset, languages), pooling)
    vectors, norms = compute_vectors(states, source, targets)
    meta = {"model": getattr(backend, "name", None),
            "fingerprint": white_box(backend).fingerprint, "pooling": pooling,
            "source": source, "targets": targets, "languages": languages,
            "data": dataset.source_path or dataset.name,
            "item_ids": [it.id for it in dataset.items],
            "layers": list(range(next(iter(vectors.values())).shape[0])), "norms": norms}
    return SteeringVectors(vectors, meta)


def apply_steering_options(backend: Any, steer: str, layers: str = "",
                           alpha: float | None = None) -> Any:
    """``--steer FILE[:NAME] --steer-layers L --steer-alpha A`` for any command.

    Installs the steering for the rest of the process (the backend's fingerprint carries
    it, so cached results stay apart). NAME picks a vector (``shared.fr``, ``source.fr``,
    or a language); layers and alpha default to the best setting ``xlgap steer`` found
    when the file records one. Returns ``backend``; no ``steer`` leaves it untouched.
    """
    if not steer:
        return backend
    path, name = steer, ""
    if not Path(path).exists() and ":" in steer:
        path, name = steer.rsplit(":", 1)
    vectors = SteeringVectors.load(path)
    key = vectors.resolve(name)
    best = vectors.meta.get("best") or {}
    chosen = parse_layers(layers) if layers else best.get("layers")
    strength = alpha if alpha is not None else best.get("alpha")
    if not chosen or strength is None:
        raise ConfigError(f"{path} records no best setting; give --steer-layers and "
                          "--steer-alpha")
    inner = white_box(backend)
    made_for = vectors.meta.get("fingerprint")
    if made_for and made_for != inner.fingerprint:
        log.warning("steering vectors in %s were made with model %r (fingerprint %s), not "
                    "this one", path, vectors.meta.get("model"), made_for)
    handle = Steering(inner, vectors.vectors[key], chosen, float(strength)).install()
    # Kept on the backend so the hooks live as long as it does (and can be removed).
    inner.steering_handles = [*getattr(inner, "steering_handles", []), handle]
    log.info("steering with %s from %s at layers %s, alpha %s", key, path, chosen, strength)
    return backend

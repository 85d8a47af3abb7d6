"""Steering a white-box model toward the source language or the shared space.

Two pieces, kept apart so each is easy to check:

* **Vectors** (pure functions over tensors). From the pooled hidden states of the same
  items in several languages, per layer: ``source.T = mean(h_source) - mean(h_T)`` (from
  target T toward the source) and ``shared.T = mean over languages - mean(h_T)`` (toward
  the centre of all languages, every language weighted alike). A
  :class:`SteeringVectors` holds them with their metadata and is saved as safetensors.
* **Hooks**. :func:`steering` adds ``alpha * vector[layer]`` to the residual stream at
  every position after each chosen layer, inside a context manager that always removes
  the hooks (also when the wrapped call raises). While active, a tag naming the vector
  hash, the layers and alpha is one of the backend's ``modifiers``, which are part of its
  fingerprint, so a steered result is never read from nor written to the unsteered cache.

Layer numbers are those of ``hidden_states``: 0 is the embedding output and ``i`` the
output of block ``i - 1``. The last one is excluded: Hugging Face reports it after the
final norm, so a vector taken there does not live in the residual stream a hook sees.

The rest of the module is the experiment of ``xlgap steer``: seeded disjoint splits, the
metrics of one steering setting on a set of items, and the comparison with no steering.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xlgap.errors import ConfigError, DataError, ModelError
from xlgap.report.figures import new_figure, save_figure

FORMAT = "xlgap-steering-1"
DIRECTIONS = ("shared", "source")
SPLITS = ("train", "dev", "test")

# -- vectors (pure) ---------------------------------------------------------------------------


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


def vector_digest(vector: torch.Tensor) -> str:
    """Hash of a vector's values (float32 bytes): names the steering in cache keys."""
    data = vector.detach().to(torch.float32).cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def steering_tag(vector: torch.Tensor, layers: Sequence[int], alpha: float) -> str:
    """The modifier tag of one steering: vector hash, layers and alpha."""
    return (f"steer:{vector_digest(vector)}:layers={','.join(str(x) for x in layers)}"
            f":alpha={float(alpha)!r}")


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
        import os
        import tempfile

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


# -- hooks ---------------------------------------------------------------------------------


def white_box(backend: Any) -> Any:
    """The Hugging Face backend under any wrappers (the result store's ``inner``)."""
    inner = backend
    while "inner" in vars(inner):
        inner = inner.inner
    if not (hasattr(inner, "model") and hasattr(inner, "modifiers")):
        raise ModelError(f"steering needs a white-box Hugging Face model; backend "
                         f"{getattr(inner, 'kind', type(inner).__name__)!r} has no hooks")
    return inner


def steerable_layers(model: nn.Module) -> range:
    """Layers a vector can be added at: the embeddings and every block but the last."""
    from xlgap.models.layers import blocks

    return range(0, len(blocks(model)))


def layer_module(model: nn.Module, layer: int) -> nn.Module:
    """The module whose output is hidden-state layer ``layer`` (0: the embeddings)."""
    from xlgap.models.layers import blocks, get_module, layout_for

    allowed = steerable_layers(model)
    if layer not in allowed:
        raise ConfigError(f"cannot steer at layer {layer}: this model takes layers "
                          f"{allowed.start}..{allowed.stop - 1} (0 = embeddings; the last "
                          "layer is reported after the final norm)")
    if layer == 0:
        return get_module(model, layout_for(model).embed)
    return blocks(model)[layer - 1]


def _adder(delta: torch.Tensor) -> Callable[..., Any]:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        # Blocks return a tensor (transformers 5) or a tuple whose first item is the state.
        if isinstance(output, tuple):
            return (output[0] + delta.to(output[0].dtype), *output[1:])
        return output + delta.to(output.dtype)
    return hook


class Steering:
    """Hooks that add ``alpha * vector[layer]`` after each layer in ``layers``.

    ``install`` and ``remove`` are idempotent; use :func:`steering` to be sure the hooks
    go away, or :func:`apply_steering_options` to keep them for a whole command.
    """

    def __init__(self, backend: Any, vector: torch.Tensor, layers: Sequence[int],
                 alpha: float) -> None:
        self.backend = white_box(backend)
        model = self.backend.model
        self.layers = sorted({int(x) for x in layers})
        if not self.layers:
            raise ConfigError("steering needs at least one layer")
        self.alpha = float(alpha)
        self.vector = torch.as_tensor(vector).detach().float()
        hidden = int(model.config.get_text_config().hidden_size)
        if self.vector.ndim != 2 or self.vector.shape[1] != hidden:
            raise ConfigError(f"steering vector has shape {tuple(self.vector.shape)}; this "
                              f"model needs (layers, {hidden})")
        self.modules = [layer_module(model, i) for i in self.layers]
        if max(self.layers) >= self.vector.shape[0]:
            raise ConfigError(f"steering vector has {self.vector.shape[0]} layers; asked for "
                              f"layer {max(self.layers)}")
        self.tag = steering_tag(self.vector[self.layers], self.layers, self.alpha)
        param = next(model.parameters())
        # The delta is made once, on the model's device: hooks run at every forward.
        self.deltas = [(self.alpha * self.vector[i]).to(device=param.device)
                       for i in self.layers]
        self._handles: list[Any] = []

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def install(self) -> Steering:
        if self._handles:
            return self
        try:
            for module, delta in zip(self.modules, self.deltas, strict=True):
                # prepend: transformers records hidden states with its own forward hooks;
                # ours must run first so the recorded state is the steered one.
                self._handles.append(module.register_forward_hook(_adder(delta), prepend=True))
            self.backend.modifiers.append(self.tag)
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        mods = self.backend.modifiers
        # remove our own (last) tag only: another steering may be active with the same tag
        for i in range(len(mods) - 1, -1, -1):
            if mods[i] == self.tag:
                del mods[i]
                break


@contextlib.contextmanager
def steering(backend: Any, vector: torch.Tensor, layers: Sequence[int],
             alpha: float) -> Iterator[Steering]:
    """Steer ``backend`` inside the block: score, generate and hidden_states alike."""
    handle = Steering(backend, vector, layers, alpha)
    try:
        handle.install()
        yield handle
    finally:
        handle.remove()


def parse_layers(text: str | Sequence[int]) -> list[int]:
    """``"6"``, ``"4,8"``, ``"4+8"`` or ``"4-8"`` (a range) -> sorted layer numbers."""
    if not isinstance(text, str):
        return sorted({int(x) for x in text})
    out: set[int] = set()
    for part in text.replace("+", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.update(range(int(lo), int(hi) + 1))
            else:
                out.add(int(part))
        except ValueError as exc:
            raise ConfigError(f"bad layer list {text!r}: use numbers like 6, 4+8 or 4-8") from exc
    if not out:
        raise ConfigError(f"no layers in {text!r}")
    return sorted(out)


def apply_steering_options(backend: Any, steer: str, layers: str = "",
                           alpha: float | None = None) -> Any:
    """``--steer FILE[:NAME] --steer-layers L --steer-alpha A`` for any command.

    Installs the steering for the rest of the process (the backend's fingerprint carries
    it, so cached results stay apart). NAME picks a vector (``shared.fr``, ``source.fr``,
    or a language); layers and alpha default to the best setting ``xlgap steer`` found
    when the file records one. Returns ``backend``; no ``steer`` leaves it untouched.
    """
    import sys

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
        print(f"[xlgap] warning: steering vectors in {path} were made with model "
              f"{vectors.meta.get('model')!r} (fingerprint {made_for}), not this one",
              file=sys.stderr)
    handle = Steering(inner, vectors.vectors[key], chosen, float(strength)).install()
    # Kept on the backend so the hooks live as long as it does (and can be removed).
    inner.steering_handles = [*getattr(inner, "steering_handles", []), handle]
    print(f"[xlgap] steering with {key} from {path} at layers {chosen}, alpha {strength}",
          file=sys.stderr)
    return backend


# -- splits --------------------------------------------------------------------------------


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.4,0.2,0.4"`` -> train, dev and test fractions (normalised to sum 1)."""
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError as exc:
        raise ConfigError(f"--split {text!r}: give three fractions, e.g. 0.4,0.2,0.4") from exc
    if len(parts) != 3 or any(x < 0 for x in parts) or sum(parts) <= 0:
        raise ConfigError(f"--split {text!r}: give three non-negative fractions "
                          "(train,dev,test), e.g. 0.4,0.2,0.4")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


def split_items(ids: Sequence[str], fractions: tuple[float, float, float],
                seed: int) -> dict[str, list[str]]:
    """Disjoint train / dev / test lists of ``ids`` from one seeded shuffle (each list
    keeps the data's order, so it reads and diffs well)."""
    n = len(ids)
    if len(set(ids)) != n:
        raise DataError("split_items: item ids must be unique")
    order = np.random.default_rng(seed).permutation(n)
    n_train = round(fractions[0] * n)
    n_dev = min(n - n_train, round(fractions[1] * n))
    cut = {"train": order[:n_train], "dev": order[n_train:n_train + n_dev],
           "test": order[n_train + n_dev:]}
    return {name: [ids[i] for i in sorted(idx.tolist())] for name, idx in cut.items()}


# -- metrics of one setting ---------------------------------------------------------------


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


def pair_parts(source: np.ndarray, target: np.ndarray, gold: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Per-item parts of every reported metric for one target, from log-probabilities."""
    from xlgap.stats.consistency import rankc_per_item
    from xlgap.stats.metrics import accuracy_per_item, agreement_per_item, transfer_parts

    p, q = distributions(source), distributions(target)
    num, den = transfer_parts(p, q, gold)
    return {"accuracy": accuracy_per_item(q, gold), "agreement": agreement_per_item(p, q),
            "transfer_num": num, "transfer_den": den, "rankc": rankc_per_item(source, target)}


def stack_parts(parts: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-target parts -> ``(Q, targets)`` arrays (items stay the resampling unit)."""
    keys = next(iter(parts.values())).keys()
    return {k: np.stack([parts[t][k] for t in parts], axis=1) for k in keys}


def point_estimates(parts: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The four metrics without intervals (the sweep needs only these)."""
    from xlgap.stats.bootstrap import nan_mean, pooled_ratio

    return {"accuracy": nan_mean(parts["accuracy"]), "agreement": nan_mean(parts["agreement"]),
            "transfer": pooled_ratio(parts["transfer_num"], parts["transfer_den"]),
            "rankc": nan_mean(parts["rankc"])}


def with_intervals(parts: Mapping[str, np.ndarray], baseline: Mapping[str, np.ndarray] | None,
                   *, n_boot: int, seed: int) -> dict[str, Any]:
    """Each metric with its 95% bootstrap CI over items and, given the unsteered parts of
    the same items, the paired p-value against them."""
    from xlgap.stats.bootstrap import (
        mean_with_ci,
        paired_bootstrap_pvalue,
        paired_ratio_pvalue,
        ratio_with_ci,
    )

    def per_item(x: np.ndarray) -> np.ndarray:
        # several targets per item: the item's mean is the paired unit
        x = x.reshape(len(x), -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
            return np.nanmean(x, axis=1)

    out: dict[str, Any] = {}
    for key in ("accuracy", "agreement", "rankc"):
        out[key] = mean_with_ci(parts[key], n_boot=n_boot, seed=seed)
        if baseline is not None:
            out[key]["p_value"] = paired_bootstrap_pvalue(per_item(parts[key]),
                                                          per_item(baseline[key]),
                                                          n_boot=n_boot, seed=seed)
    num, den = parts["transfer_num"], parts["transfer_den"]
    out["transfer"] = ratio_with_ci(num, den, n_boot=n_boot, seed=seed)
    if baseline is not None:
        out["transfer"]["p_value"] = paired_ratio_pvalue(
            num, den, baseline["transfer_num"], baseline["transfer_den"], n_boot=n_boot,
            seed=seed)
    return out


def centred_layers(states: Mapping[str, np.ndarray]) -> Any:
    """Per-layer centring as the representation commands do (see CenteredStates)."""
    from xlgap.representations.extract import CenteredStates

    return CenteredStates(dict(states))


def inside_summary(states: Mapping[str, np.ndarray], source: str, *, k: int = 5
                   ) -> dict[str, Any]:
    """ILO (mean over languages) and similarity to the source (means over targets) by
    layer, of ``{lang: (n, layers, d)}`` states, centred per layer."""
    from xlgap.representations.ilo import default_t, ilo_by_layer
    from xlgap.representations.similarity import layerwise_similarity

    t = default_t(len(states))
    n = min(len(v) for v in states.values())
    k_used = max(1, min(k, n * len(states) - 1))
    ilo = ilo_by_layer(centred_layers(states), k=k_used, t=min(t, k_used))
    sim = layerwise_similarity(centred_layers(states), pivot=source)
    return {"k": k_used, "t": min(t, k_used),
            "ilo": [float(e["mean"]) for e in ilo],
            "ilo_by_language": [e["ilo"] for e in ilo],
            "cos_parallel": [e["mean"].get("cos_parallel") for e in sim["layers"]],
            "retrieval": [e["mean"].get("retrieval") for e in sim["layers"]]}


# -- the experiment of ``xlgap steer`` ------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: which vectors, at which layers, how strong."""

    direction: str
    layers: tuple[int, ...]
    alpha: float

    @property
    def layer_label(self) -> str:
        return "+".join(str(x) for x in self.layers)

    def as_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "layers": list(self.layers), "alpha": self.alpha}


def parse_sweep(directions: str, layers: str, alphas: str) -> list[Setting]:
    """The grid directions x layer entries x alphas. A layer entry is one layer (``6``),
    layers steered together (``4+8``) or a range (``4-8``); entries are comma-separated."""
    dirs = [d.strip() for d in directions.split(",") if d.strip()]
    bad = [d for d in dirs if d not in DIRECTIONS]
    if not dirs or bad:
        raise ConfigError(f"--directions: choose from {', '.join(DIRECTIONS)}; got {directions!r}")
    entries = [tuple(parse_layers(e)) for e in layers.split(",") if e.strip()]
    try:
        strengths = [float(a) for a in alphas.split(",") if a.strip()]
    except ValueError as exc:
        raise ConfigError(f"--alphas {alphas!r}: give numbers, e.g. 1,2,4") from exc
    if not entries or not strengths:
        raise ConfigError("the sweep needs at least one layer entry and one alpha")
    return [Setting(d, e, a) for d in dirs for e in entries for a in strengths]


def hidden_by_language(backend: Any, texts: Mapping[str, Sequence[str]], pooling: str,
                       steer_for: Callable[[str], contextlib.AbstractContextManager[Any]]
                       | None = None) -> dict[str, np.ndarray]:
    """``{lang: (n, layers, d)}`` pooled states of every layer, each language under the
    steering ``steer_for(lang)`` gives (none for the source). The result store is skipped:
    these are a few hundred texts, recomputed in seconds, and would bloat it."""
    inner = white_box(backend)
    out: dict[str, np.ndarray] = {}
    for lang, lang_texts in texts.items():
        ctx = steer_for(lang) if steer_for is not None else contextlib.nullcontext()
        with ctx:
            out[lang] = np.asarray(inner.hidden_states(list(lang_texts), None, pooling),
                                   dtype=np.float32)
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


def setting_scores(backend: Any, dataset: Any, targets: Sequence[str], shots: int,
                   vectors: SteeringVectors | None, setting: Setting | None
                   ) -> dict[str, np.ndarray]:
    """Candidate log-probabilities ``(Q, M)`` of each target, each under its own vector
    (no steering when ``setting`` is None)."""
    from xlgap.prompting.scoring import candidate_scores

    out: dict[str, np.ndarray] = {}
    for t in targets:
        if setting is None or vectors is None:
            ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        else:
            vec = vectors.vectors[f"{setting.direction}.{t}"]
            ctx = steering(backend, vec, setting.layers, setting.alpha)
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
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="q")
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


def parts_for(source_scores: np.ndarray, target_scores: Mapping[str, np.ndarray],
              gold: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    return {t: pair_parts(source_scores, s, gold) for t, s in target_scores.items()}


def report_block(parts: Mapping[str, Mapping[str, np.ndarray]],
                 baseline: Mapping[str, Mapping[str, np.ndarray]] | None, *, n_boot: int,
                 seed: int) -> dict[str, Any]:
    """Pooled over targets and per target, each metric with CI (and p against baseline)."""
    pooled = with_intervals(stack_parts(parts), stack_parts(baseline) if baseline else None,
                            n_boot=n_boot, seed=seed)
    per_target = {t: with_intervals(p, baseline[t] if baseline else None, n_boot=n_boot,
                                    seed=seed) for t, p in parts.items()}
    return {"all": pooled, "per_target": per_target}


# -- figures ---------------------------------------------------------------------------------


METRIC_LABELS = {"accuracy": "target accuracy P(gold)", "agreement": "agreement with source",
                 "transfer": "transfer", "rankc": "RankC with source"}


def plot_sweep(result: Mapping[str, Any], path: str | Path) -> Path:
    """Heatmap per direction: layer settings x alpha, the dev selection metric minus no
    steering (blue better, red worse), values written in the cells."""
    metric = result["select"]
    base = result["baseline"]["dev"][metric]
    rows = result["sweep"]
    directions = list(dict.fromkeys(r["direction"] for r in rows))
    layer_labels = list(dict.fromkeys("+".join(map(str, r["layers"])) for r in rows))
    alphas = sorted({float(r["alpha"]) for r in rows})
    grids = []
    for d in directions:
        grid = np.full((len(layer_labels), len(alphas)), np.nan)
        for r in rows:
            if r["direction"] == d and r["dev"][metric] is not None:
                grid[layer_labels.index("+".join(map(str, r["layers"]))),
                     alphas.index(float(r["alpha"]))] = r["dev"][metric] - base
        grids.append(grid)
    span = max([float(np.nanmax(np.abs(g))) for g in grids if np.isfinite(g).any()] + [1e-6])
    fig = new_figure(1.5 + 1.2 * len(alphas) * len(directions), 1.2 + 0.45 * len(layer_labels))
    axes = np.atleast_1d(fig.subplots(1, len(directions), squeeze=False)[0])
    image = None
    for ax, d, grid in zip(axes, directions, grids, strict=True):
        image = ax.imshow(grid, cmap="RdBu", vmin=-span, vmax=span, aspect="auto")
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_yticks(range(len(layer_labels)), layer_labels)
        ax.set_xlabel("alpha")
        ax.set_ylabel("layers")
        ax.set_title(f"toward {d}")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8,
                     label=f"dev {METRIC_LABELS.get(metric, metric)} - no steering "
                           f"({base:.3f})")
    fig.suptitle("Steering sweep on the dev split", y=1.04)
    return save_figure(fig, path)


def plot_before_after(result: Mapping[str, Any], path: str | Path) -> Path:
    """Test split: no steering vs the best setting, per metric, pooled and per target,
    with 95% CIs."""
    base, best = result["baseline"]["test"], result["best"]["test"]
    groups = ["all", *base["per_target"]]
    metrics = list(METRIC_LABELS)
    fig = new_figure(3.2 * len(metrics), 3.4)
    axes = fig.subplots(1, len(metrics))
    x = np.arange(len(groups))
    for ax, metric in zip(axes, metrics, strict=True):
        for shift, block, label, color in ((-0.2, base, "no steering", "tab:gray"),
                                           (0.2, best, "best steering", "tab:blue")):
            stats = [block["all"][metric] if g == "all" else block["per_target"][g][metric]
                     for g in groups]
            est = np.array([np.nan if s["estimate"] is None else s["estimate"] for s in stats])
            lo = np.array([np.nan if s["ci"][0] is None else s["ci"][0] for s in stats])
            hi = np.array([np.nan if s["ci"][1] is None else s["ci"][1] for s in stats])
            err = np.vstack([np.clip(est - lo, 0, None), np.clip(hi - est, 0, None)])
            ax.bar(x + shift, est, 0.4, yerr=np.nan_to_num(err), capsize=2, color=color,
                   label=label)
        ax.set_xticks(x, groups)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    setting = result["best"]
    fig.suptitle(f"Test split: toward {setting['direction']}, layers "
                 f"{'+'.join(map(str, setting['layers']))}, alpha {setting['alpha']:g} "
                 "(95% CIs)")
    return save_figure(fig, path)


def plot_inside(result: Mapping[str, Any], path: str | Path) -> Path:
    """ILO and parallel cosine by layer, without and with the best steering (test items)."""
    inside = result["inside"]
    fig = new_figure(10, 3.4)
    axes = fig.subplots(1, 2)
    for key, ax, title in (("ilo", axes[0], "ILO (mean over languages)"),
                           ("cos_parallel", axes[1], "cosine of parallel pairs with source")):
        for name, color in (("baseline", "tab:gray"), ("steered", "tab:blue")):
            values = [np.nan if v is None else v for v in inside[name][key]]
            ax.plot(range(len(values)), values, marker="o", ms=3, color=color,
                    label="no steering" if name == "baseline" else "best steering")
        for layer in result["best"]["layers"]:
            ax.axvline(layer, color="tab:blue", ls=":", lw=1)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)

"""Steering hooks: add ``alpha * vector[layer]`` to the residual stream, always removed.

:func:`steering` (and :meth:`SteeringVectors.apply`) install the hooks inside a context
manager that removes them when the block ends, also when it raises. While they are active,
a tag naming the vector hash, the layers and alpha is one of the backend's ``modifiers``,
which are part of its fingerprint, so a steered result is never read from nor written to
the unsteered cache.

Where: layer 0 is a forward-pre-hook on the first block, changing its input, which is
exactly ``hidden_states[0]`` (a hook on the embedding module would land before the scaling
of Gemma 1/2 or the LayerNorm of Bloom); layer ``i`` is a forward hook on block ``i - 1``.

Strength: ``alpha`` is the total. With several layers, each gets ``alpha / len(layers)``
times its own vector, because the residual stream carries every earlier shift forward:
adding the full vector at each of n layers would push about n times as far as one
layer does. So alpha 1 moves a target's mean state onto the mean it is steered toward
with one layer, and by about that much in total with several.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from xlgap.errors import ConfigError
from xlgap.models.layers import hook_point, white_box
from xlgap.prompting.scoring import candidate_scores


def vector_digest(vector: torch.Tensor) -> str:
    """Hash of a vector's values (float32 bytes): names the steering in cache keys."""
    data = vector.detach().to(torch.float32).cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def steering_tag(vector: torch.Tensor, layers: Sequence[int], alpha: float) -> str:
    """The modifier tag of one steering: vector hash, layers and alpha. Settings whose
    meaning changed (alpha split over several layers; layer 0 at the first block's input)
    carry a marker, so results cached under the old meaning are never reused."""
    layers = list(layers)
    tag = (f"steer:{vector_digest(vector)}:layers={','.join(str(x) for x in layers)}"
           f":alpha={float(alpha)!r}")
    if len(layers) > 1:
        tag += ":split"
    if 0 in layers:
        tag += ":pre0"
    return tag


def _add_to_output(delta: torch.Tensor) -> Callable[..., Any]:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        # Blocks return a tensor (transformers 5) or a tuple whose first item is the state.
        if isinstance(output, tuple):
            return (output[0] + delta.to(output[0].dtype), *output[1:])
        return output + delta.to(output.dtype)
    return hook


def _add_to_input(delta: torch.Tensor) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The residual state is the block's first argument (transformers' own recorder of
        # hidden_states[0] reads args[0] too), or its ``hidden_states`` keyword.
        if args:
            return (args[0] + delta.to(args[0].dtype), *args[1:]), kwargs
        state = kwargs["hidden_states"]
        return args, {**kwargs, "hidden_states": state + delta.to(state.dtype)}
    return hook


class Steering:
    """Hooks that add ``alpha / len(layers) * vector[layer]`` at each layer in ``layers``.

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
        self.points = [hook_point(model, i) for i in self.layers]
        if max(self.layers) >= self.vector.shape[0]:
            raise ConfigError(f"steering vector has {self.vector.shape[0]} layers; asked for "
                              f"layer {max(self.layers)}")
        self.tag = steering_tag(self.vector[self.layers], self.layers, self.alpha)
        param = next(model.parameters())
        # The delta is made once, on the model's device: hooks run at every forward.
        each = self.alpha / len(self.layers)
        self.deltas = [(each * self.vector[i]).to(device=param.device) for i in self.layers]
        self._handles: list[Any] = []

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def install(self) -> Steering:
        if self._handles:
            return self
        try:
            for (module, where), delta in zip(self.points, self.deltas, strict=True):
                # prepend: transformers records hidden states with its own forward hooks;
                # ours must run first so the recorded state is the steered one.
                if where == "input":
                    handle = module.register_forward_pre_hook(_add_to_input(delta),
                                                              prepend=True, with_kwargs=True)
                else:
                    handle = module.register_forward_hook(_add_to_output(delta), prepend=True)
                self._handles.append(handle)
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

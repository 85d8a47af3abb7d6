"""Float32 linear layers through oneDNN's packed-weight kernels on CPU.

PyTorch's CPU ``F.linear`` in float32 calls MKL's sgemm. On AMD processors MKL takes its
AVX2 code path: 180-195 GFLOP/s on the 2-core test machine (AVX-512, Zen 5) for every
shape of Gemma 3 270M, against 380-450 GFLOP/s for oneDNN with the weight reordered once
into its blocked layout (``torch.ops.mkldnn._reorder_linear_weight`` and
``_linear_pointwise``, the kernels torch.compile's CPU backend uses). The arithmetic is
float32 in both (errors against float64 of the same order, about 1e-6); only the order
of the additions differs, as it does between two BLAS libraries.

:func:`packed_linears` runs every plain float32 ``nn.Linear`` of a model that way while
the context is open, and puts the modules back on exit, also on an error. Packed copies
are kept in a :class:`PackedWeights` (one per backend), made on first use and made again
only when a weight changes (its storage or version), so they cost one copy of the
weights in memory. They are used only without autograd (the packed kernel has no
backward) and only when the copies fit in half of the available memory.

``XLGAP_ONEDNN=0`` turns this off (MKL everywhere, as before). The switch is made on the
model's modules, so two threads using one model at once may see the first one to leave
put MKL back under the other: slower, never wrong (both compute the same products).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from typing import Any

import torch

#: output rows per packed piece of a wide weight (the output head): the sampler reads the
#: head's logits one piece at a time, and small pieces keep them in cache
PIECE = 2048
#: weights wider than this are packed in pieces of ``PIECE`` rows
WIDE = 8 * PIECE
_ROWS_HINT = 256  # batch size oneDNN's layout is chosen for (rates vary little with it)


def available() -> bool:
    """Whether oneDNN's packed float32 linear can be used here."""
    if os.environ.get("XLGAP_ONEDNN", "1") == "0":
        return False
    ops = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and ops is not None
                and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def _available_bytes() -> int | None:
    """Memory this process may still use: the system's available memory, or less under a
    cgroup (container, batch job) limit."""
    found = []
    meminfo = _read("/proc/meminfo") or ""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            found.append(int(line.split()[1]) * 1024)
    limit, used = _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    if limit and used and limit.strip().isdigit() and used.strip().isdigit():
        found.append(max(0, int(limit) - int(used)))
    return min(found) if found else None


def eligible(weight: torch.Tensor) -> bool:
    """Whether ``weight`` can be packed: a float32 matrix on the CPU whose changes can be
    seen (an inference-mode tensor has no version counter)."""
    return (weight.dtype == torch.float32 and weight.device.type == "cpu"
            and weight.dim() == 2 and not weight.is_inference())


def _pack(weight: torch.Tensor) -> Any:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), _ROWS_HINT)


def run_piece(x: torch.Tensor, packed: Any, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, w, bias)`` for a packed ``w``."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _current(entry: tuple[weakref.ref, int, int, list[Any]], weight: torch.Tensor) -> bool:
    """Whether a packed entry was made from ``weight`` as it is now (same tensor, same
    storage, no in-place change since: PyTorch bumps ``_version`` on each)."""
    ref, ptr, version, _ = entry
    return ref() is weight and ptr == weight.data_ptr() and version == weight._version


class PackedWeights:
    """oneDNN-packed copies of float32 weights, reused while a weight is unchanged."""

    def __init__(self) -> None:
        # (id(weight), piece size) -> (weak reference, data pointer, version, pieces)
        self._packs: dict[tuple[int, int], tuple[weakref.ref, int, int, list[Any]]] = {}

    def pieces(self, weight: torch.Tensor, size: int | None = None) -> list[Any]:
        """The packed weight in pieces of ``size`` output rows (the last one may be
        shorter); by default one piece, or pieces of ``PIECE`` if wider than ``WIDE``."""
        if size is None:
            size = PIECE if weight.shape[0] > WIDE else weight.shape[0]
        key = (id(weight), size)
        entry = self._packs.get(key)
        if entry is not None and _current(entry, weight):
            return entry[3]
        pieces = [_pack(weight[start:start + size])
                  for start in range(0, weight.shape[0], size)]
        for stale in [k for k, v in self._packs.items() if v[0]() is None]:
            del self._packs[stale]  # its weight is gone
        self._packs[key] = (weakref.ref(weight), weight.data_ptr(), weight._version, pieces)
        return pieces

    def has(self, weight: torch.Tensor) -> bool:
        """Whether ``weight`` has a current packed copy (of any piece size)."""
        return any(_current(entry, weight) for (key, _), entry in self._packs.items()
                   if key == id(weight))

    def linear(self, x: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        """``F.linear(x, weight, bias)`` through the packed weight."""
        pieces = self.pieces(weight)
        if len(pieces) == 1:
            return run_piece(x, pieces[0], bias)
        out = torch.cat([run_piece(x, piece, None) for piece in pieces], dim=-1)
        return out if bias is None else out + bias

    def clear(self) -> None:
        self._packs.clear()


def _plain_linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in model.modules() if type(m) is torch.nn.Linear and eligible(m.weight)
            and (m.bias is None or m.bias.dtype == torch.float32)]


def fits(model: torch.nn.Module, packs: PackedWeights) -> bool:
    """Whether packed copies of the model's plain linear weights not packed yet fit in half
    of the memory now available (unknown: assumed to fit)."""
    free = _available_bytes()
    if free is None:
        return True
    seen: set[int] = set()
    total = 0
    for m in _plain_linears(model):
        if id(m.weight) not in seen and not packs.has(m.weight):
            seen.add(id(m.weight))
            total += m.weight.numel() * m.weight.element_size()
    return total <= free // 2


@contextlib.contextmanager
def packed_linears(model: torch.nn.Module, packs: PackedWeights | None) -> Iterator[bool]:
    """Inside the context, the model's plain float32 CPU ``nn.Linear`` layers run through
    ``packs`` (without autograd; with it, or when ``packs`` is None or oneDNN is missing,
    nothing changes). Yields whether the layers were switched."""
    linears = _plain_linears(model) if packs is not None and available() else []
    if not linears or not fits(model, packs):
        yield False
        return
    patched = []
    try:
        for module in linears:
            if "forward" in module.__dict__:
                continue  # already switched (a nested context) or patched by someone else
            module.forward = _packed_forward(module, packs)
            patched.append(module)
        yield True
    finally:
        for module in patched:
            module.__dict__.pop("forward", None)


def _packed_forward(module: torch.nn.Linear, packs: PackedWeights) -> Any:
    linear = torch.nn.functional.linear

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.dtype != torch.float32 or x.device.type != "cpu":
            return linear(x, module.weight, module.bias)
        return packs.linear(x, module.weight, module.bias)

    return forward

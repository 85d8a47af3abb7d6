"""What the HF backend's methods run inside: device and dtype from their option names, a
cheap fingerprint of the weights, advice on running out of memory, and the inference
context of every public method (:func:`fast_inference`)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import torch

from xlgap.errors import ModelError
from xlgap.models.onednn import packed_linears

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float64": torch.float64}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown --device {device!r}; use cpu, cuda, cuda:N or auto") from exc


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # float32 on CPU: half precision is slow there and breaks the 1e-4 batching checks.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ModelError(f"unknown --dtype {dtype!r}; choose one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def weights_fingerprint(model: torch.nn.Module, name: str) -> str:
    """Hash of the config and a sample of every parameter: cheap, and changes when weights do."""
    digest = hashlib.sha256(name.encode())
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for pname, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        digest.update(pname.encode())
        digest.update(flat[:256].float().cpu().numpy().tobytes())
        digest.update(flat[-256:].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:24]


@contextlib.contextmanager
def out_of_memory_hint(batch_size: int) -> Iterator[None]:
    """Turn an out-of-memory crash into advice to shrink the batch."""
    try:
        yield
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        raise ModelError(f"out of memory with --batch-size {batch_size}; try "
                         f"--batch-size {max(1, batch_size // 2)}") from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
            raise ModelError(f"out of memory with --batch-size {batch_size}; try "
                             f"--batch-size {max(1, batch_size // 2)}") from exc
        raise


def fast_inference(method: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.inference_mode``, with the model's float32 linear layers run by oneDNN's
    packed kernels while the method runs (:mod:`xlgap.models.onednn`)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        outer = self._packed_head
        with torch.inference_mode(), packed_linears(self.model, self._packs) as switched:
            self._packed_head = switched or outer
            try:
                return method(self, *args, **kwargs)
            finally:
                self._packed_head = outer

    return wrapper

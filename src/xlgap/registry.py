"""One registry idiom: a name -> object table with a decorator, lazy targets and an
entry-point group, so another installed package can add an entry that xlgap (and its
CLI) sees without xlgap importing it.

Every extensible kind of xlgap is one :class:`Registry`, each with its entry-point group:

==========================  =====================================  =========================
kind                        registry                               entry-point group
==========================  =====================================  =========================
model backends              ``xlgap.models.BACKENDS``              ``xlgap.backends``
data formats                ``xlgap.data.formats.FORMATS``         ``xlgap.formats``
named data sets             ``xlgap.data.catalog.CATALOG``         ``xlgap.datasets``
prompt strategies           ``xlgap.interventions.strategies``     ``xlgap.strategies``
                            ``.base.STRATEGIES``
pair metrics                ``xlgap.stats.pairs.PAIR_METRICS``     ``xlgap.pair_metrics``
report sections             ``xlgap.report.sections.SECTIONS``     ``xlgap.report_sections``
commands                    ``xlgap.cli.registry.COMMANDS``        ``xlgap.commands``
result kinds                ``xlgap.results.KINDS``                ``xlgap.results``
==========================  =====================================  =========================

An entry is added three ways:

* ``@registry.register("name")`` on a class or function (the registry's ``convert`` may
  turn it into what the registry holds, e.g. a section class into its instance);
* ``registry.register("name", "package.module:attr")``: imported on first use, so a heavy
  entry costs nothing until it is asked for. A target without ``:attr`` names a module
  whose import registers the entry (its decorator); so does a ``module:attr`` whose module
  registers ``name`` while it is imported;
* another package lists it in its ``pyproject.toml``::

      [project.entry-points."xlgap.backends"]
      mybackend = "mypackage.backend:MyBackend"

``name in registry`` and ``registry.get(name)`` resolve (an unknown name is an error that
lists the known ones); a registry is a mapping whose iteration gives the names in
registration order (xlgap's own first, then the plugins'), and ``values()`` the entries,
imported; :meth:`Registry.names` sorts the names. Entry points are read once, on
the first question the registry's own entries cannot answer, so a lookup of a built-in
name never scans the installed packages. xlgap's own entries win over a plugin's of the
same name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, ClassVar, Generic, TypeVar

from xlgap.errors import ConfigError

T = TypeVar("T")
_UNSET: Any = object()


def entry_points(group: str) -> Any:
    """The installed entry points of ``group`` (importlib.metadata imported only now)."""
    from importlib.metadata import entry_points as installed
    return installed(group=group)


def resolve(target: str) -> Any:
    """``"package.module:attr"`` -> the attribute (the module imported); ``"package.module"``
    -> the module."""
    module, _, attr = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        value = getattr(value, part)
    return value


def import_path(obj: Any) -> str:
    """``"module:qualname"`` of a class or function (how a fresh process finds it)."""
    owner = getattr(obj, "__self__", None)  # a bound classmethod: its class's path
    if isinstance(owner, type):
        return f"{owner.__module__}:{owner.__qualname__}.{obj.__name__}"
    return f"{obj.__module__}:{obj.__qualname__}"


class Registry(MutableMapping[str, T], Generic[T]):
    """Entries of one kind (``kind`` names them in errors); ``group`` is the entry-point
    group other packages add entries to (default ``xlgap.<kind>``). ``convert`` turns
    what is registered (or a lazy target, once imported) into the entry, and may check it
    (a :class:`ConfigError` naming what is wrong)."""

    #: every registry made, so tests can re-read the plugins of all of them
    instances: ClassVar[list[Registry[Any]]] = []

    def __init__(self, kind: str, group: str | None = None, *,
                 convert: Callable[[Any], T] | None = None) -> None:
        self.kind = kind
        self.group = group or f"xlgap.{kind}"
        self.convert = convert
        self._entries: dict[str, T | str] = {}
        self._targets: dict[str, str] = {}  # name -> the lazy target it was registered as
        self._info: dict[str, dict[str, Any]] = {}
        self._plugins_loaded = False
        self._importing: str | None = None  # the lazy entry being imported now
        Registry.instances.append(self)

    # -- adding ----------------------------------------------------------------------------

    def register(self, name: str, target: T | str | None = None, **info: Any) -> Any:
        """Add ``target`` under ``name``; without ``target``, a decorator (returning what
        it decorates). ``info``: what can be known of the entry without importing it
        (a command's help), read back with :meth:`info`."""
        if info:
            self._info[name] = info
        if target is not None:
            self._store(name, target)
            return target

        def deco(obj: Any) -> Any:
            self._store(name, obj)
            return obj
        return deco

    def _store(self, name: str, target: Any) -> None:
        if isinstance(target, str):
            self._entries[name] = target
            self._targets[name] = target
            return
        if name != self._importing:  # an object now, not the path it was registered as
            self._targets.pop(name, None)
        self._entries[name] = self.convert(target) if self.convert else target

    def __setitem__(self, name: str, value: T) -> None:
        self._store(name, value)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self._targets.pop(name, None)
        self._info.pop(name, None)

    # -- plugins -----------------------------------------------------------------------------

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._entries:  # xlgap's own entries win
                self._entries[ep.name] = ep.value
                self._targets[ep.name] = ep.value

    def reload_plugins(self) -> None:
        """Read the entry points again (after installing a package in a running session)."""
        self._plugins_loaded = False
        self._load_plugins()

    # -- asking -----------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        """Names in registration order, xlgap's own first."""
        self._load_plugins()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._entries)

    def names(self) -> list[str]:
        """Every registered name, plugins' included, sorted."""
        return sorted(self)

    def info(self, name: str) -> dict[str, Any]:
        """What ``name`` was registered with besides its target (empty when nothing)."""
        return dict(self._info.get(name, {}))

    def target(self, name: str) -> str:
        """The import path of entry ``name`` (``"module:attr"``): what it was registered
        as, or where the registered object is defined; a fresh process (a Ray worker)
        registers the same from it."""
        if name not in self:
            raise self._unknown(name)
        return self._targets.get(name) or import_path(self._entries[name])

    def _unknown(self, name: str) -> ConfigError:
        return ConfigError(f"unknown {self.kind} {name!r}; known: "
                           f"{', '.join(self.names()) or '(none)'}")

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def get(self, name: str, default: Any = _UNSET) -> T:  # type: ignore[override]
        """The entry ``name`` (a lazy target imported now); an unknown name raises a
        ConfigError listing the known ones, unless a ``default`` is given."""
        if name not in self:
            if default is not _UNSET:
                return default  # type: ignore[no-any-return]
            raise self._unknown(name)
        entry = self._entries[name]
        if not isinstance(entry, str):
            return entry
        self._importing = name
        try:
            value = resolve(entry)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{self.kind} {name!r}: cannot load {entry!r} ({exc})") from exc
        finally:
            self._importing = None
        registered = self._entries.get(name)
        if registered is not entry and not isinstance(registered, str):
            return registered  # the import registered it (its decorator)
        if ":" not in entry:
            raise ConfigError(f"{self.kind} {name!r}: importing {entry!r} did not register it")
        self._entries[name] = converted = self.convert(value) if self.convert else value
        return converted

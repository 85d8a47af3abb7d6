"""The one list of commands. Each command module registers its functions with
:func:`command`; the parser, the study runner and ``command_line`` learn from here what
exists, what a command's config is and whether it needs a white-box model.

Command modules are imported lazily (on the first :func:`commands` call), so ``xlgap
--help`` stays fast and a broken optional module cannot stop the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Every module that registers commands, in the order ``xlgap --help`` lists them.
COMMAND_MODULES = (
    "xlgap.cli.commands.sample",
    "xlgap.cli.commands.data",
    "xlgap.cli.commands.intervene",
    "xlgap.cli.commands.inside",
    "xlgap.cli.commands.steer",
    "xlgap.cli.commands.report",
    "xlgap.cli.study",
)


@dataclass(frozen=True)
class Command:
    """A registered command. ``analysis``: a study may list it under ``analyses`` (it
    writes into the directory its ``out`` option names); ``white_box``: it needs hidden
    states or hooks, so a study skips it for models without them."""

    name: str
    config: type | None
    func: Callable[..., int]
    help: str
    analysis: bool = False
    white_box: bool = False
    # Commands with sub-actions build their own arguments and get the parsed namespace.
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


_REGISTRY: dict[str, Command] = {}
_loaded = False


def command(name: str, config: type | None, help: str, *, analysis: bool = False,
            white_box: bool = False,
            arguments: Callable[[argparse.ArgumentParser], None] | None = None
            ) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Register the decorated function as ``xlgap NAME`` taking a ``config`` instance."""

    def register(func: Callable[..., int]) -> Callable[..., int]:
        _REGISTRY[name] = Command(name, config, func, help, analysis, white_box, arguments)
        return func

    return register


def commands() -> dict[str, Command]:
    """Every registered command, by name (importing the command modules once)."""
    global _loaded
    if not _loaded:
        for module in COMMAND_MODULES:
            importlib.import_module(module)
        # List in COMMAND_MODULES order whatever order the modules imported each other in
        # (a study runs its analyses in this order: cheap sampling first).
        rank = {m: i for i, m in enumerate(COMMAND_MODULES)}
        ordered = sorted(_REGISTRY.values(), key=lambda c: rank.get(c.func.__module__, 99))
        _REGISTRY.clear()
        _REGISTRY.update((c.name, c) for c in ordered)
        _loaded = True
    return _REGISTRY


def find_command(name: str) -> Command | None:
    return commands().get(name)


def analyses() -> list[str]:
    """Names a study may list under ``analyses``."""
    return [c.name for c in commands().values() if c.analysis]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def command_line(name: str, config: Mapping[str, Any], cls: type | None = None) -> str:
    """``xlgap NAME --opt value ...``: the command that makes the same result, with only
    the options that differ from their defaults (all of them if the class is unknown)."""
    if cls is None:
        found = find_command(name)
        cls = found.config if found else None
    defaults: dict[str, Any] = {}
    flags: dict[str, str] = {}
    known: set[str] | None = None
    if cls is not None and dataclasses.is_dataclass(cls):
        known = set()
        for f in dataclasses.fields(cls):
            known.add(f.name)
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            if "flag" in f.metadata:
                flags[f.name] = "--" + str(f.metadata["flag"])
    words = ["xlgap", name]
    for key, value in config.items():
        if key in ("progress",) or (known is not None and key not in known):
            continue
        if key in defaults and defaults[key] == value:
            continue
        if value is None:
            continue
        if isinstance(value, Mapping):  # a KEY=VALUE table: one flag per pair
            for k, v in value.items():
                text = str(v).lower() if isinstance(v, bool) else str(v)
                words += [flags.get(key, _flag(key)), shlex.quote(f"{k}={text}")]
            continue
        if isinstance(value, bool):
            words.append(_flag(key) if value else "--no-" + key.replace("_", "-"))
        else:
            words += [_flag(key), shlex.quote(str(value))]
    return " ".join(words)

"""The file formats xlgap reads, one module each.

A format is a :class:`Format`: a name, a ``detect(path)`` test and a ``load(path, ...)``
that returns a :class:`~xlgap.data.items.ParallelDataset`. The formats are the registry
:data:`FORMATS` (:mod:`xlgap.registry`): xlgap's own are lazy targets listed below (one
module here each, imported on first use); another package adds one through the
entry-point group ``xlgap.formats`` (``myformat = "package.module:FORMAT"``).
``load_dataset`` (in :mod:`xlgap.data.loaders`) asks the formats in ``priority`` order and
uses the first whose ``detect`` says yes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlgap.data.items import ParallelDataset
from xlgap.errors import ConfigError
from xlgap.registry import Registry

# load(path, on_missing=..., on_error=..., data_map=...) -> ParallelDataset
Loader = Callable[..., ParallelDataset]


@dataclass(frozen=True)
class Format:
    name: str
    description: str  # one line for error messages and docs ("a .jsonl file (...)")
    detect: Callable[[Path], bool]
    load: Loader
    # Lower runs first: a directory holding {lang}.tsv files is BMLAMA before it is anything
    # else. Formats with equal priority are asked in name order.
    priority: int = 50
    # Whether the loader reads a column mapping (--data-map); others refuse one, so a map
    # given for a BMLAMA directory is an error instead of being ignored.
    takes_map: bool = False


def _checked(obj: Any) -> Format:
    if not isinstance(obj, Format):
        raise ConfigError(f"a data format must be a xlgap.data.formats.Format, got {obj!r}")
    return obj


#: format name -> :class:`Format`
FORMATS: Registry[Format] = Registry("data format", "xlgap.formats", convert=_checked)
for _name in ("bmlama", "jsonl", "sentences", "table"):
    FORMATS.register(_name, f"{__name__}.{_name}:FORMAT")


def formats() -> tuple[Format, ...]:
    """Every registered format, in the order ``load_dataset`` asks them."""
    return tuple(sorted(FORMATS.values(), key=lambda f: (f.priority, f.name)))


def find_format(path: Path) -> Format | None:
    """The first format that recognises ``path``, or None."""
    return next((f for f in formats() if f.detect(path)), None)


def accepted() -> str:
    """What ``--data`` accepts, for error messages."""
    return "; ".join(f.description for f in formats())

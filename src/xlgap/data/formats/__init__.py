"""The file formats xlgap reads, one module each.

A format is a :class:`Format`: a name, a ``detect(path)`` test and a ``load(path, ...)``
that returns a :class:`~xlgap.data.items.ParallelDataset`. Every module in this package
that defines ``FORMAT`` is registered, so adding a format is adding one file here.
``load_dataset`` (in :mod:`xlgap.data.loaders`) asks the formats in ``priority`` order and
uses the first whose ``detect`` says yes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from xlgap.data.items import ParallelDataset

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


@lru_cache(maxsize=1)
def formats() -> tuple[Format, ...]:
    """Every registered format, in the order ``load_dataset`` asks them."""
    found: list[Format] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        fmt = getattr(module, "FORMAT", None)
        if isinstance(fmt, Format):
            found.append(fmt)
    return tuple(sorted(found, key=lambda f: (f.priority, f.name)))


def find_format(path: Path) -> Format | None:
    """The first format that recognises ``path``, or None."""
    return next((f for f in formats() if f.detect(path)), None)




def accepted() -> str:
    """What ``--data`` accepts, for error messages."""
    return "; ".join(f.description for f in formats())

"""Shared helpers of the Python API: options checked by name, lists not comma strings."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xlgap.errors import ConfigError

PathLike = str | os.PathLike[str]


def check_options(cls: type, options: Mapping[str, Any], where: str, **fixed: Any) -> Any:
    """``cls(**options, **fixed)``, naming the keywords ``where`` does not take."""
    names = cls.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; it takes "
                          f"{', '.join(sorted(set(names) - set(fixed)))}")
    return cls(**{**options, **fixed})


def out_dir(out: PathLike | None, prefix: str) -> Path:
    """``out``, or a new temporary directory where the step must write somewhere."""
    return Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"xlgap-{prefix}-"))


def as_list(targets: Sequence[str] | str) -> list[str]:
    if isinstance(targets, str):
        raise ConfigError(f"targets must be a list of language codes, not the string "
                          f"{targets!r} (write [{', '.join(repr(t) for t in targets.split(','))}])")
    return list(targets)

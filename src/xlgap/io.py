"""Small file helpers shared by every writer of results."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write a file through a temporary name in the same directory, fsync it, then rename
    it over the target: a crash leaves the old file or the new one, never half of one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600; results are shared data
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def dump_json(obj: Any, path: str | os.PathLike[str], indent: int | None = 2) -> Path:
    """Write JSON atomically; NaN and infinities become null (strict readers reject them)."""
    return write_text_atomic(path, json.dumps(finite(obj), indent=indent, ensure_ascii=False,
                                              allow_nan=False) + "\n")


def finite(obj: Any) -> Any:
    """``obj`` with numpy values made plain and non-finite floats made None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return finite(obj.tolist())
    return obj

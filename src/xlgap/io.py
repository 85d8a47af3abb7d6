"""Small file helpers shared by every writer of results."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def dump_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write JSON atomically: a temporary file renamed into place, so a crash never
    leaves half a file where a reader expects a whole one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_finite(obj), indent=2, ensure_ascii=False, allow_nan=False,
                              default=_default), encoding="utf-8")
    os.replace(tmp, target)
    return target


def _finite(obj: Any) -> Any:
    """NaN and infinities become null: strict JSON readers reject them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    return obj


def _default(obj: Any) -> Any:
    # numpy scalars and arrays appear in results; JSON has no type for them
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")

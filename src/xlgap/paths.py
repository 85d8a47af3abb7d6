"""Where xlgap keeps what it computes once: ``$XLGAP_CACHE``, else the user cache directory.

A foundation module (imported by every layer): the embedded model's conversion, the result
store and the data set catalogue all live under :func:`cache_root`.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$XLGAP_CACHE`` if set, else the user cache directory (``~/.cache/xlgap`` on Linux)."""
    env = os.environ.get("XLGAP_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("xlgap"))


def datasets_root() -> Path:
    """The catalogue's converted data sets: ``<cache>/datasets/<name>/``."""
    return cache_root() / "datasets"

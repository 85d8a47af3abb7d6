"""``write_report``: one HTML page over a study's result files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from xlgap.api.common import PathLike
from xlgap.report.html import write_report as write


def write_report(paths: PathLike | Sequence[PathLike], out: PathLike = "report.html",
                 title: str | None = None) -> Path:
    """One self-contained HTML page over every result under ``paths`` (a path or a list
    of them); returns its path."""
    return write(paths, Path(out), title)

"""``xlgap report DIR...``: one self-contained HTML page of the results under DIRs.

Registered with the main CLI through :data:`COMMANDS`. The page itself is built by
:func:`xlgap.report.html.write_report` (see ``docs/report.md``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from xlgap.cli.config import opt
from xlgap.cli.registry import command
from xlgap.errors import ConfigError
from xlgap.report.html import write_report


@dataclass
class ReportConfig:
    # ``xlgap.cli`` may add this field as a positional argument (``xlgap report A B``);
    # ``--dirs A,B`` works either way.
    positional: ClassVar[tuple[str, str]] = ("dirs", "*")

    dirs: str = opt("", "result directories (run directories, --out directories of "
                    "demo, intervene, inside or run), comma-separated, or given as arguments")
    out: str = opt("", "the HTML file to write (default: report.html in the directory, or "
                   "in the current directory when several are given)")
    title: str = opt("", "title of the page (default: from the directory names)")


def report_dirs(value: str | Sequence[str]) -> list[Path]:
    """Directories from ``--dirs a,b`` or from positional arguments (a list)."""
    items = [value] if isinstance(value, str) else list(value)
    return [Path(part.strip()) for item in items for part in str(item).split(",")
            if part.strip()]


def default_report_path(dirs: Sequence[Path]) -> Path:
    if len(dirs) == 1 and dirs[0].is_dir():
        return dirs[0] / "report.html"
    return Path("report.html")


@command("report", ReportConfig)
def cmd_report(cfg: ReportConfig) -> int:
    dirs = report_dirs(cfg.dirs)
    if not dirs:
        raise ConfigError("xlgap report DIR...: give one or more result directories")
    missing = [str(d) for d in dirs if not d.exists()]
    if len(missing) == len(dirs):
        raise ConfigError(f"xlgap report: not found: {', '.join(missing)}")
    out = Path(cfg.out) if cfg.out else default_report_path(dirs)
    path = write_report(dirs, out, cfg.title or None)
    print(f"[xlgap] wrote {path} (open it in a browser; it needs no network)",
          file=sys.stderr)
    return 0

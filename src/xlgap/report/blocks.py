"""What a section of the report is made of: paragraphs, tables, figures, notes, folded
details, provenance. Sections build these from the result files; the page template
(``templates/page.html.j2``) turns them into HTML, escaping every string, so no section
writes markup.

Figures are drawn by matplotlib only (:mod:`xlgap.report.plots`): a :class:`Figure` holds
the PNG a command wrote (base64) or the SVG of the same figure drawn here from the JSON,
never both.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from xlgap.report.format import finite, fmt_estimate, fmt_number, fmt_p, pct, value
from xlgap.report.plots.figures import figure_svg

__all__ = ["Block", "Cell", "Details", "Figure", "Note", "Para", "Pre", "Provenance", "Row",
           "Table", "cell", "count_cell", "draw_figure", "p_cell", "pct_cell", "png_figure"]

MAX_PNG_BYTES = 10_000_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Block:
    """Base of everything a section shows; ``tag`` picks the template macro."""

    tag = ""


@dataclass
class Para(Block):
    """A line of text; ``cls`` is ``"verdict"`` (a headline) or ``"muted"``."""

    text: str
    cls: str = "muted"
    tag = "para"


@dataclass
class Note(Block):
    """A remark about the data (``note``) or a problem with it (``warn``)."""

    text: str
    kind: str = "note"
    tag = "note"


@dataclass
class Pre(Block):
    text: str
    tag = "pre"


@dataclass
class Cell:
    """A table cell: its text, the key it sorts by, and how it looks."""

    text: str
    sort: float | str | None = None
    num: bool = False
    code: bool = False  # a command: monospace, wraps
    href: str | None = None  # a link inside the page


@dataclass
class Table(Block):
    header: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    caption: str = ""
    sortable: bool = True
    tag = "table"


@dataclass
class Figure(Block):
    """One figure, shown once: the PNG a command wrote (``png``, base64) or the same figure
    drawn here (``svg``)."""

    name: str  # what it shows, unique within the page with the section's anchor
    caption: str = ""
    png: str | None = None
    svg: Markup | None = None
    wide: bool = False  # several panels side by side: given the full width of the page
    tag = "figure"


@dataclass
class Row(Block):
    """Blocks side by side (wrapping on narrow screens)."""

    blocks: list[Block] = field(default_factory=list)
    tag = "row"


@dataclass
class Details(Block):
    """Folded content with a one-line summary."""

    summary: str
    blocks: list[Block] = field(default_factory=list)
    open: bool = False
    tag = "details"


@dataclass
class Provenance(Block):
    """What made a result: facts (``rows``), the command, options, and the raw files."""

    rows: list[tuple[str, str]]
    command: str | None = None
    command_note: str = ""
    configs: list[tuple[str, str]] = field(default_factory=list)  # (title, JSON text)
    downloads: list[tuple[str, Markup | None, str]] = field(default_factory=list)
    tag = "provenance"


def cell(x: Any, digits: int = 3) -> Cell:
    """A table cell showing ``x`` with its CI, sorted by its estimate."""
    return Cell(fmt_estimate(x, digits), value(x), num=True)


# The pair metrics of files written before they listed theirs under "metrics".
_OLDER_METRICS = {"agreement": "agreement", "transfer": "transfer",
                  "overall_success": "overall success", "chi2": "chi-square", "l2": "L2"}


def metric_columns(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, label) of every pair metric a result file lists, in registry order; the
    report shows whatever metrics the analysis registered, without importing them."""
    described = result.get("metrics")
    if isinstance(described, Mapping) and described:
        return [(str(k), str(v.get("label") or k) if isinstance(v, Mapping) else str(k))
                for k, v in described.items()]
    return list(_OLDER_METRICS.items())


def count_cell(x: Any) -> Cell:
    v = finite(x)
    return Cell("-" if v is None else str(int(v)), v, num=True)


def pct_cell(x: Any, digits: int = 1) -> Cell:
    return Cell(pct(x, digits), value(x), num=True)


def number_cell(x: Any, digits: int = 3) -> Cell:
    return Cell(fmt_number(x, digits), value(x), num=True)


def p_cell(p: Any, n_boot: Any = None) -> Cell:
    return Cell(fmt_p(p, n_boot), finite(p), num=True)


def png_figure(path: Path, caption: str) -> Block:
    """A PNG a command wrote, embedded as base64, or a note when it cannot be read."""
    try:
        size = path.stat().st_size
        if size > MAX_PNG_BYTES:
            return Note(f"figure {path.name} not embedded: {size / 1e6:.0f} MB")
        data = path.read_bytes()
    except OSError as exc:
        return Note(f"figure {path.name} could not be read: {exc.strerror or exc}")
    if not data.startswith(PNG_MAGIC):
        return Note(f"figure {path.name} is not a PNG (or is still being written)")
    return Figure(path.name, caption, png=base64.b64encode(data).decode("ascii"),
                  wide=_wide(*_png_size(data)))


WIDE = 2.0  # width / height above which a figure is shown at the page's full width


def _wide(width: float, height: float) -> bool:
    return height > 0 and width / height > WIDE


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG header (the IHDR chunk comes first)."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


_SVG_START = re.compile(r"<svg\b")
_SVG_SIZE = re.compile(r'width="([0-9.]+)pt" height="([0-9.]+)pt"')


def draw_figure(name: str, caption: str, draw: Callable[[], Any]) -> Block:
    """The figure ``draw()`` makes (a matplotlib ``Figure``, or None when the data have
    nothing to draw) as inline SVG, or a note saying why it could not be drawn."""
    try:
        fig = draw()
        if fig is None:
            return Note(f"{caption or name}: nothing to draw")
        text = figure_svg(fig)
    except Exception as exc:  # a partial or newer result: say so, show the rest
        return Note(f"figure {name} could not be drawn from the data "
                    f"({exc.__class__.__name__}: {exc})", "warn")
    start = _SVG_START.search(text)
    if start is None:
        return Note(f"figure {name}: matplotlib wrote no SVG", "warn")
    # Drop the XML prolog and doctype (not allowed inside HTML); the class marks it for
    # the page's style and self-check. matplotlib escapes the text it writes.
    svg = '<svg class="chart" role="img"' + text[start.end():]
    size = _SVG_SIZE.search(svg)
    wide = bool(size) and _wide(float(size.group(1)), float(size.group(2)))
    return Figure(name, caption, svg=Markup(svg), wide=wide)

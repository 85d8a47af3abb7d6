"""One self-contained HTML page of everything xlgap wrote under some directories.

:func:`write_report` walks the given directories, recognises the result files of every
command (run directories with ``run.json`` and ``diagnosis.json``, ``interventions.json``,
the representation JSONs, ``study.json`` of ``xlgap run``, and any other ``xlgap-*``
JSON such as ``steering.json`` or ``finetune.json``), and renders them into one HTML file:

* a verdict per model (the size of the gap, bias or variance with pi and its CI, where
  the languages share representations, what helped and by how much);
* runs side by side, every table with its CIs (sortable by a click on a column header);
* every figure: the PNGs the commands wrote, embedded as base64, and SVG charts drawn
  here from the JSON (hover a point for its value, click a legend entry to hide a line);
* the raw JSON of each result (downloadable from the page) and its provenance: model,
  fingerprint, data, versions, options and the command that made it.

Nothing is fetched: styles, script and images are inline, so the file opens from disk on
a machine without network. Reading is tolerant: a file that is missing, unreadable or of
an unknown shape becomes a note on the page, never an exception.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import os
import platform
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlgap.io import write_text_atomic

__all__ = ["Artifact", "discover", "render_report", "write_report"]

REPRESENTATION_FILES = ("ilo.json", "similarity.json", "logit_lens.json", "consistency.json")
STUDY_FILE = "study.json"
STEP_MARKER = ".xlgap-step.json"  # written by ``xlgap run`` into each step's directory
SKIP_DIRS = {"hidden", "__pycache__", ".git", "node_modules", ".venv"}
MAX_DIRS = 5000  # a walk that meets more directories than this is cut short (with a note)
MAX_DEPTH = 8
MAX_JSON_BYTES = 20_000_000  # larger result files are not parsed
MAX_EMBED_JSON = 2_000_000  # raw JSON embedded for download up to this size
MAX_PNG_BYTES = 10_000_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39",
           "#7b4173", "#3182bd", "#e6550d")


# ------------------------------------------------------------------------------------------
# discovery


@dataclass
class Loaded:
    """A JSON file as read: ``data`` or the ``error`` that kept it from being read."""

    path: Path
    data: Any = None
    error: str | None = None


def load_json(path: Path) -> Loaded:
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            return Loaded(path, error=f"{size / 1e6:.0f} MB, too large to read here")
        return Loaded(path, json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError) as exc:
        return Loaded(path, error=f"cannot read it ({exc.__class__.__name__}: {exc})")
    except json.JSONDecodeError as exc:
        return Loaded(path, error=f"not valid JSON ({exc}); perhaps still being written")


@dataclass
class Artifact:
    """One result found on disk: a run, an intervention comparison, a representation
    analysis, a study, any other result file (``extra``) or loose figures."""

    kind: str
    dir: Path
    files: dict[str, Loaded] = field(default_factory=dict)
    pngs: list[Path] = field(default_factory=list)
    model: str = ""
    data: str = ""
    anchor: str = ""
    owner: Artifact | None = None  # the run a result belongs to (the demo's inside/)
    model_name: str = ""  # the study's name for the model (``[[models]] name``), if any

    def json(self, name: str) -> Any:
        """The parsed content of file ``name`` if it was read, else None."""
        got = self.files.get(name)
        return got.data if got is not None and got.error is None else None


def _walk(root: Path, notes: list[str]) -> list[Path]:
    """Directories under ``root`` (itself included), skipping caches and hidden-state
    arrays; cut short with a note if the tree is unexpectedly large."""
    out: list[Path] = []
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        d, depth = stack.pop()
        out.append(d)
        if len(out) >= MAX_DIRS:
            notes.append(f"{root}: more than {MAX_DIRS} directories; the rest were not read")
            break
        if depth >= MAX_DEPTH:
            continue
        try:
            children = sorted((p for p in d.iterdir() if p.is_dir()), reverse=True)
        except OSError as exc:
            notes.append(f"{d}: cannot list it ({exc.strerror or exc})")
            continue
        stack.extend((c, depth + 1) for c in children
                     if c.name not in SKIP_DIRS and not c.name.startswith("."))
    return out


def _pngs(d: Path, prefix: str = "") -> list[Path]:
    try:
        return sorted(p for p in d.glob(f"{prefix}*.png") if p.is_file())
    except OSError:
        return []


def _xlgap_format(loaded: Loaded) -> str | None:
    data = loaded.data
    if isinstance(data, Mapping) and isinstance(data.get("format"), str) and \
            data["format"].startswith("xlgap-"):
        return data["format"]
    return None


KNOWN_FILES = {"run.json", "diagnosis.json", "truth.json", "interventions.json", STUDY_FILE,
               *REPRESENTATION_FILES}


def _artifacts_in(d: Path, names: set[str], strategy_dirs: set[Path]) -> list[Artifact]:
    """The results one directory holds (a directory may hold several)."""
    here: list[Artifact] = []
    if "run.json" in names:
        art = Artifact("run", d)
        for name in ("run.json", "diagnosis.json", "truth.json"):
            if name in names:
                art.files[name] = load_json(d / name)
        art.pngs = _pngs(d / "plots") + _pngs(d)
        here.append(art)
    if "interventions.json" in names:
        art = Artifact("interventions", d, {"interventions.json":
                                            load_json(d / "interventions.json")})
        art.pngs = _pngs(d, "interventions")
        result = art.json("interventions.json")
        if isinstance(result, Mapping) and isinstance(result.get("strategies"), Mapping):
            strategy_dirs.update((d / str(s)).resolve() for s in result["strategies"])
        here.append(art)
    rep = [n for n in REPRESENTATION_FILES if n in names]
    if rep:
        art = Artifact("inside", d, {n: load_json(d / n) for n in rep})
        art.pngs = [p for n in rep for p in _pngs(d, n[:-5])]
        here.append(art)
    if STUDY_FILE in names:
        here.append(Artifact("study", d, {STUDY_FILE: load_json(d / STUDY_FILE)}))
    for name in sorted(names - KNOWN_FILES):
        if not name.endswith(".json") or name.startswith("."):
            continue
        loaded = load_json(d / name)
        if name in ("steering.json", "finetune.json") or _xlgap_format(loaded):
            art = Artifact("extra", d, {name: loaded})
            art.pngs = _pngs(d, name[:-5])
            here.append(art)
    if STEP_MARKER in names:
        marker = load_json(d / STEP_MARKER)
        for art in here:
            art.files[STEP_MARKER] = marker
    return here


def discover(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[Artifact], list[str]]:
    """Every result under ``paths``, in walk order, and notes on what could not be read."""
    notes: list[str] = []
    dirs: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            notes.append(f"{p}: not found")
            continue
        for d in ([p.parent] if p.is_file() else _walk(p, notes)):
            key = d.resolve()
            if key not in seen:
                seen.add(key)
                dirs.append(d)
    artifacts: list[Artifact] = []
    strategy_dirs: set[Path] = set()
    for d in dirs:
        try:
            names = {c.name for c in d.iterdir() if c.is_file()}
        except OSError as exc:
            notes.append(f"{d}: cannot list it ({exc.strerror or exc})")
            continue
        artifacts.extend(_artifacts_in(d, names, strategy_dirs))
    # A strategy's run directory is shown within its comparison, unless it was diagnosed.
    artifacts = [a for a in artifacts if not (a.kind == "run" and a.dir.resolve() in
                                              strategy_dirs and "diagnosis.json" not in a.files)]
    claimed = {p.resolve() for a in artifacts for p in a.pngs}
    for d in dirs:
        left = [p for p in _pngs(d) if p.resolve() not in claimed]
        if left:
            artifacts.append(Artifact("figures", d, pngs=left))
            claimed.update(p.resolve() for p in left)
    _attribute(artifacts)
    for i, art in enumerate(artifacts):
        art.anchor = f"a{i}-{art.kind}"
    return artifacts, notes


def _attribute(artifacts: list[Artifact]) -> None:
    """Give every result the model and data set that made it.

    Runs and comparisons record them; a representation directory may not, so it takes
    them from the step marker of ``xlgap run``, then from the run directory it lies in
    (the demo writes ``DEMO/inside``), then from the model fingerprint of its hidden
    states, matched against the runs found."""
    by_dir: dict[Path, Artifact] = {}
    by_fingerprint: dict[str, Artifact] = {}
    for art in artifacts:
        meta = art.json("run.json") or art.json("interventions.json") or {}
        if isinstance(meta, Mapping):
            art.model = str(meta.get("model") or "")
            art.data = str(meta.get("data") or "")
            if art.kind == "run" and meta.get("fingerprint"):
                by_fingerprint.setdefault(str(meta["fingerprint"]), art)
        if art.kind == "run":
            by_dir[art.dir.resolve()] = art
    for art in artifacts:
        marker = art.json(STEP_MARKER)
        if isinstance(marker, Mapping):
            art.model = art.model or str(marker.get("model") or "")
            art.data = art.data or str(marker.get("data") or "")
            art.model_name = str(marker.get("model_name") or "")
        if art.model or art.kind == "study":
            continue
        for parent in list(art.dir.resolve().parents)[:3]:
            owner = by_dir.get(parent)
            if owner is not None:
                art.model, art.data = owner.model, art.data or owner.data
                art.owner = owner
                break
        if art.model:
            continue
        index = load_json(art.dir / "hidden" / "index.json")
        fp = index.data.get("fingerprint") if isinstance(index.data, Mapping) else None
        if fp and str(fp) in by_fingerprint:
            owner = by_fingerprint[str(fp)]
            art.model, art.data = owner.model, art.data or owner.data
        for loaded in art.files.values():  # results that record them (steering.json)
            data = loaded.data
            if not art.model and isinstance(data, Mapping) and data.get("model"):
                art.model = str(data["model"])
                art.data = art.data or str(data.get("data") or "")
    for art in artifacts:
        art.model = art.model or "unknown model"
        art.data = data_label(art.data)


def data_label(spec: str) -> str:
    """A short name for a data set: ``builtin``, or the file or directory name."""
    spec = spec.strip()
    if not spec or ("/" not in spec and os.sep not in spec):
        return spec
    p = Path(spec)
    if p.parent.name == "builtin" and p.parent.parent.name == "data":
        return "builtin"  # the shipped demo set, recorded by its installed path
    return p.name or spec


# ------------------------------------------------------------------------------------------
# small formatting helpers


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


class Raw(str):
    """Text that is already HTML (table cells are escaped unless wrapped in this)."""


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _value(x: Any) -> float | None:
    """A number, or the estimate of a ``{"estimate": x, "ci": [lo, hi]}`` entry."""
    if isinstance(x, Mapping):
        return _finite(x.get("estimate"))
    return _finite(x)


def _ci(x: Any) -> tuple[float | None, float | None]:
    if isinstance(x, Mapping):
        ci = x.get("ci")
        if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) >= 2:
            return _finite(ci[0]), _finite(ci[1])
    return None, None


def _chance(x: Any) -> float | None:
    return _finite(x.get("chance")) if isinstance(x, Mapping) else None


def fmt(x: Any, digits: int = 3) -> str:
    v = _value(x)
    if v is None:
        return "-"
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)  # a count
    if abs(v) >= 1000 and float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.{digits}f}"


def fmt_ci(x: Any, digits: int = 3) -> str:
    """``0.812 [0.746, 0.870]``, with ``chance 0.250`` when the figure has a chance level;
    just the estimate when there is no interval."""
    est = fmt(x, digits)
    lo, hi = _ci(x)
    text = est if est == "-" or lo is None or hi is None else \
        f"{est} [{lo:.{digits}f}, {hi:.{digits}f}]"
    chance = _chance(x)
    return text if chance is None or est == "-" else f"{text}, chance {chance:.{digits}f}"


def pct(x: Any, digits: int = 1) -> str:
    v = _value(x)
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def cell(x: Any, digits: int = 3) -> tuple[str, float | None]:
    """A table cell showing ``x`` with its CI, sorted by its estimate."""
    return fmt_ci(x, digits), _value(x)


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-").lower() or "x"


def _lang_label(code: str) -> str:
    try:
        from xlgap.data.languages import language_name

        name = language_name(code)
    except Exception:  # unknown codes (simulated "t1") have no name, which is fine
        return code
    return f"{code} ({name})" if name and name != code else code


def _m(x: Any) -> Mapping[str, Any]:
    """``x`` if it is a mapping, else an empty one (partial files lack whole blocks)."""
    return x if isinstance(x, Mapping) else {}


# ------------------------------------------------------------------------------------------
# tables


Cell = str | tuple[str, float | str | None] | Raw


def table(header: Sequence[str], rows: Iterable[Sequence[Cell]], *, caption: str = "",
          sortable: bool = True) -> str:
    """An HTML table; a cell is text, ``(text, sort key)`` or :class:`Raw` HTML."""
    body = []
    for row in rows:
        tds = []
        for c in row:
            if isinstance(c, Raw):  # long commands wrap; links and the like stay whole
                tds.append(f'<td class="wrap">{c}</td>' if "<code" in c else f"<td>{c}</td>")
            elif isinstance(c, tuple):
                text, key = c
                attr = "" if key is None else f' data-sort="{esc(key)}"'
                num = ' class="num"' if isinstance(key, int | float) or text == "-" else ""
                tds.append(f"<td{attr}{num}>{esc(text)}</td>")
            else:
                tds.append(f"<td>{esc(c)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    if not body:
        return '<p class="muted">(no rows)</p>'
    classes = "data sortable" if sortable else "data"
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="tablewrap"><table class="{classes}">{cap}<thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table></div>")


def note(text: str, kind: str = "note") -> str:
    return f'<div class="{kind}">{esc(text)}</div>'


def details(summary: str, inner: str, open_: bool = False) -> str:
    return (f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{inner}"
            "</details>")


def heat_table(languages: Sequence[str], matrix: Any, caption: str) -> str:
    """A language x language matrix as a table shaded by value (0 white, 1 dark)."""
    if not isinstance(matrix, list):
        return ""
    head = "".join(f"<th>{esc(lang)}</th>" for lang in languages)
    rows = []
    for lang, row in zip(languages, matrix, strict=False):
        tds = []
        for v in row if isinstance(row, list) else []:
            f = _finite(_value(v))
            if f is None:
                tds.append('<td class="num">-</td>')
                continue
            shade = max(0.0, min(1.0, f))
            text = "#fff" if shade > 0.6 else "#000"
            tds.append(f'<td class="num" style="background:rgba(31,119,180,{shade:.2f});'
                       f'color:{text}">{f:.2f}</td>')
        rows.append(f"<tr><th>{esc(lang)}</th>{''.join(tds)}</tr>")
    return (f'<div class="tablewrap"><table class="heat"><caption>{esc(caption)}</caption>'
            f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            "</div>")


# ------------------------------------------------------------------------------------------
# SVG charts, drawn here from the JSON: crisp at any size, hoverable, no library


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = []
    t = math.ceil(lo / step - 1e-9) * step
    while t <= hi + step * 1e-6:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _tick_label(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}"


@dataclass
class Series:
    label: str
    xs: Sequence[Any]
    ys: Sequence[float | None]
    lo: Sequence[float | None] | None = None  # CI band
    hi: Sequence[float | None] | None = None
    bold: bool = False
    dashed: bool = False
    color: str | None = None


class _Frame:
    """Plot area and the data-to-pixel mapping of one chart."""

    def __init__(self, width: int, height: int, xr: tuple[float, float],
                 yr: tuple[float, float], left: int = 56, right: int = 16, top: int = 30,
                 bottom: int = 48) -> None:
        self.w, self.h = width, height
        self.l, self.r, self.t, self.b = left, width - right, top, height - bottom
        self.xr, self.yr = xr, yr

    def x(self, v: float) -> float:
        lo, hi = self.xr
        return self.l + (v - lo) / ((hi - lo) or 1) * (self.r - self.l)

    def y(self, v: float) -> float:
        lo, hi = self.yr
        return self.b - (v - lo) / ((hi - lo) or 1) * (self.b - self.t)

    def axes(self, title: str, xlabel: str, ylabel: str, xticks: Sequence[float] | None = None,
             xtick_labels: Sequence[str] | None = None) -> list[str]:
        out = [f'<text class="ctitle" x="{self.w / 2:.0f}" y="18">{esc(title)}</text>']
        for t in _nice_ticks(*self.yr):
            y = self.y(t)
            out.append(f'<line class="grid" x1="{self.l}" x2="{self.r}" y1="{y:.1f}" '
                       f'y2="{y:.1f}"/><text class="tick" x="{self.l - 6}" y="{y + 4:.1f}" '
                       f'text-anchor="end">{_tick_label(t)}</text>')
        ticks = list(xticks) if xticks is not None else _nice_ticks(*self.xr, n=8)
        labels = list(xtick_labels) if xtick_labels is not None else \
            [_tick_label(t) for t in ticks]
        for t, lab in zip(ticks, labels, strict=False):
            x = self.x(t)
            first, _, second = str(lab).partition("\n")
            extra = f'<tspan x="{x:.1f}" dy="13">{esc(second)}</tspan>' if second else ""
            out.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{self.b}" '
                       f'y2="{self.b + 4}"/><text class="tick" x="{x:.1f}" y="{self.b + 16}" '
                       f'text-anchor="middle">{esc(first)}{extra}</text>')
        out.append(f'<line class="axis" x1="{self.l}" x2="{self.r}" y1="{self.b}" '
                   f'y2="{self.b}"/><line class="axis" x1="{self.l}" x2="{self.l}" '
                   f'y1="{self.t}" y2="{self.b}"/>')
        if xlabel:
            out.append(f'<text class="alabel" x="{(self.l + self.r) / 2:.0f}" '
                       f'y="{self.h - 10}" text-anchor="middle">{esc(xlabel)}</text>')
        out.append(f'<text class="alabel" transform="translate(14,{(self.t + self.b) / 2:.0f})'
                   f' rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
        return out


def _legend(labels: Sequence[tuple[str, str, bool]], x0: int, y0: int,
            width: int) -> tuple[list[str], int]:
    """Legend entries laid out in rows; returns the SVG parts and the height used."""
    out, x, y = [], x0, y0
    for i, (label, color, dashed) in enumerate(labels):
        w = 30 + 6.5 * len(label)
        if x + w > width and x > x0:
            x, y = x0, y + 18
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        out.append(f'<g class="legend-item" data-series="{i}" tabindex="0"><title>click to '
                   f'show or hide {esc(label)}</title><line x1="{x}" x2="{x + 18}" '
                   f'y1="{y - 4}" y2="{y - 4}" stroke="{color}" stroke-width="3"{dash}/>'
                   f'<text x="{x + 22}" y="{y}">{esc(label)}</text></g>')
        x += int(w)
    return out, (y - y0) + 22


def _svg(title: str, width: int, height: int, parts: Sequence[str]) -> str:
    return (f'<svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} '
            f'{height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            + "".join(parts) + "</svg>")


def line_chart(series: Sequence[Series], *, title: str, xlabel: str, ylabel: str,
               y_range: tuple[float | None, float | None] = (None, None),
               width: int = 560, height: int = 300, digits: int = 3,
               integer_x: bool = False) -> str:
    """Lines with optional CI bands; every point has a tooltip (hover) and every line a
    legend entry (click to hide it)."""
    pts = [(float(x), float(y)) for s in series for x, y in zip(s.xs, s.ys, strict=False)
           if _finite(x) is not None and _finite(y) is not None]
    band = [float(v) for s in series for seq in (s.lo, s.hi) if seq for v in seq
            if _finite(v) is not None]
    if not pts:
        return note(f"{title}: no values to draw")
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts] + band
    ylo = y_range[0] if y_range[0] is not None else min(ys)
    yhi = y_range[1] if y_range[1] is not None else max(ys)
    ylo, yhi = min(ylo, min(ys)), max(yhi, max(ys))
    if yhi <= ylo:
        yhi = ylo + 1.0
    pad = 0.04 * (yhi - ylo)
    yr = (ylo - (pad if y_range[0] is None else 0), yhi + (pad if y_range[1] is None else 0))
    xr = (min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1)
    frame = _Frame(width, height, xr, yr)
    xticks = None
    if integer_x and xr[1] - xr[0] <= 24:
        step = 1 if xr[1] - xr[0] <= 12 else 2
        xticks = [float(v) for v in range(math.ceil(xr[0]), math.floor(xr[1]) + 1, step)]
    out = frame.axes(title, xlabel, ylabel, xticks)
    colors = [s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(series)]
    for i, (s, color) in enumerate(zip(series, colors, strict=True)):
        out.append(f'<g class="series" data-series="{i}">')
        if s.lo is not None and s.hi is not None:
            upper = [(float(x), float(h)) for x, h in zip(s.xs, s.hi, strict=False)
                     if _finite(h) is not None and _finite(x) is not None]
            lower = [(float(x), float(v)) for x, v in zip(s.xs, s.lo, strict=False)
                     if _finite(v) is not None and _finite(x) is not None]
            if upper and lower:
                poly = " ".join(f"{frame.x(x):.1f},{frame.y(v):.1f}"
                                for x, v in [*upper, *reversed(lower)])
                out.append(f'<polygon class="band" points="{poly}" fill="{color}"/>')
        segments: list[list[str]] = [[]]
        for x, y in zip(s.xs, s.ys, strict=False):
            if _finite(y) is None or _finite(x) is None:
                segments.append([])
                continue
            segments[-1].append(f"{frame.x(float(x)):.1f},{frame.y(float(y)):.1f}")
        dash = ' stroke-dasharray="6,4"' if s.dashed else ""
        for seg in segments:
            if seg:
                out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{color}" '
                           f'stroke-width="{3 if s.bold else 1.7}"{dash}/>')
        for j, (x, y) in enumerate(zip(s.xs, s.ys, strict=False)):
            if _finite(y) is None or _finite(x) is None:
                continue
            ci = ""
            if s.lo is not None and s.hi is not None and j < min(len(s.lo), len(s.hi)):
                lo, hi = _finite(s.lo[j]), _finite(s.hi[j])
                if lo is not None and hi is not None:
                    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]"
            tip = f"{s.label}: {xlabel} {_tick_label(float(x))}: {float(y):.{digits}f}{ci}"
            out.append(f'<circle class="pt" cx="{frame.x(float(x)):.1f}" '
                       f'cy="{frame.y(float(y)):.1f}" r="{3.2 if s.bold else 2.6}" '
                       f'fill="{color}" data-tip="{esc(tip)}"><title>{esc(tip)}</title>'
                       "</circle>")
        out.append("</g>")
    legend, legend_h = _legend([(s.label, c, s.dashed) for s, c in zip(series, colors,
                                                                       strict=True)],
                               56, height + 4, width - 10)
    return _svg(title, width, height + legend_h, out + legend)


def bar_chart(categories: Sequence[str], groups: Sequence[tuple[str, Sequence[Any]]], *,
              title: str, ylabel: str, y_range: tuple[float, float] | None = (0.0, 1.0),
              width: int = 560, height: int = 280, digits: int = 3) -> str:
    """Grouped bars with CI whiskers; each value is a number or an estimate-with-CI dict.
    A category label may hold a second line after a newline."""
    vals = [v for _, seq in groups for x in seq for v in (_value(x), *_ci(x))
            if v is not None]
    if not categories or not vals:
        return note(f"{title}: no values to draw")
    lo, hi = y_range or (min(0.0, min(vals)), max(vals) * 1.08 or 1.0)
    yr = (min(lo, min(vals)), max(hi, max(vals)))
    frame = _Frame(width, height, (0, len(categories)), yr)
    centres = [i + 0.5 for i in range(len(categories))]
    out = frame.axes(title, "", ylabel, centres, [str(c) for c in categories])
    n = len(groups)
    slot = (frame.r - frame.l) / len(categories)
    bw = min(34.0, slot * 0.8 / n)
    colors = [PALETTE[i % len(PALETTE)] for i in range(n)]
    for gi, ((label, seq), color) in enumerate(zip(groups, colors, strict=True)):
        out.append(f'<g class="series" data-series="{gi}">')
        for ci_, x in enumerate(seq[:len(categories)]):
            v = _value(x)
            if v is None:
                continue
            cx = frame.x(centres[ci_]) + (gi - (n - 1) / 2) * bw
            y0, y1 = frame.y(max(yr[0], 0.0)), frame.y(v)
            clo, chi = _ci(x)
            ci_txt = "" if clo is None or chi is None else f" [{clo:.{digits}f}, {chi:.{digits}f}]"
            name = str(categories[ci_]).replace("\n", ", ")
            tip = f"{label} - {name}: {v:.{digits}f}{ci_txt}"
            out.append(f'<rect class="bar" x="{cx - bw / 2:.1f}" y="{min(y0, y1):.1f}" '
                       f'width="{bw * 0.92:.1f}" height="{abs(y1 - y0):.1f}" fill="{color}" '
                       f'data-tip="{esc(tip)}"><title>{esc(tip)}</title></rect>')
            if clo is not None and chi is not None:
                ylo, yhi = frame.y(clo), frame.y(chi)
                out.append(f'<path class="whisker" d="M{cx:.1f},{ylo:.1f}V{yhi:.1f}'
                           f'M{cx - 4:.1f},{ylo:.1f}h8M{cx - 4:.1f},{yhi:.1f}h8"/>')
        out.append("</g>")
    legend, legend_h = _legend([(label, c, False) for (label, _), c in zip(groups, colors,
                                                                            strict=True)],
                               56, height + 4, width - 10)
    return _svg(title, width, height + legend_h, out + legend)


def figure(inner: str, caption: str = "", kind: str = "svg") -> str:
    if inner.startswith('<div class="note">'):
        return inner  # nothing was drawn: the note says so, a caption would mislead
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="fig" data-kind="{kind}">{inner}{cap}</figure>'


def png_figure(path: Path, caption: str | None = None) -> str:
    """A PNG embedded as base64, or a note when it cannot be read."""
    try:
        size = path.stat().st_size
        if size > MAX_PNG_BYTES:
            return note(f"figure {path.name} not embedded: {size / 1e6:.0f} MB")
        data = path.read_bytes()
    except OSError as exc:
        return note(f"figure {path.name} could not be read: {exc.strerror or exc}")
    if not data.startswith(PNG_MAGIC):
        return note(f"figure {path.name} is not a PNG (or is still being written)")
    b64 = base64.b64encode(data).decode("ascii")
    label = caption or path.name
    return figure(f'<img class="png" alt="{esc(label)}" src="data:image/png;base64,{b64}">',
                  label, "png")


def pngs_block(paths: Sequence[Path], base: Path) -> str:
    if not paths:
        return ""
    items = []
    for p in paths:
        try:
            rel = p.relative_to(base)
        except ValueError:
            rel = Path(p.name)
        items.append(png_figure(p, str(rel)))
    return f'<div class="gallery">{"".join(items)}</div>'


def _command_figures(art: Artifact) -> str:
    if not art.pngs:
        return ""
    return details(f"figures written by the command ({len(art.pngs)})",
                   pngs_block(art.pngs, art.dir), open_=True)


# ------------------------------------------------------------------------------------------
# provenance


def _provenance_blocks(art: Artifact) -> list[Mapping[str, Any]]:
    """Where a result records what made it, most specific first: the step marker of
    ``xlgap run``, the run or comparison itself, the ``provenance`` block of each file."""
    blocks: list[Mapping[str, Any]] = []
    marker = art.json(STEP_MARKER)
    meta = art.json("run.json") or art.json("interventions.json")
    for block in (marker, meta):
        if isinstance(block, Mapping):
            blocks.append(block)
    for name, loaded in art.files.items():
        data = loaded.data if loaded.error is None else None
        if name == STEP_MARKER or not isinstance(data, Mapping):
            continue
        if isinstance(data.get("provenance"), Mapping):
            blocks.append(data["provenance"])
        if art.kind == "extra":  # steering.json and the like record these at the top
            blocks.append(data)
    return blocks


def _first(blocks: Sequence[Mapping[str, Any]], key: str) -> Any:
    for block in blocks:
        value = block.get(key)
        if value not in (None, "", [], {}):
            return value
    return None


EXTRA_COMMANDS = {"steering.json": "steer", "finetune.json": "finetune"}


def _command_name(art: Artifact, config: Mapping[str, Any]) -> str:
    if art.kind == "extra":
        name = next((n for n in art.files if n in EXTRA_COMMANDS), "")
        if name:
            return EXTRA_COMMANDS[name]
    if art.kind == "interventions" or "strategies" in config:
        return "intervene"
    if "represent" in config:
        return "demo"
    if art.kind == "inside":
        present = [n for n in REPRESENTATION_FILES if n in art.files]
        single = {"ilo.json": "ilo", "similarity.json": "similarity",
                  "logit_lens.json": "logit-lens", "consistency.json": "consistency"}
        return single[present[0]] if len(present) == 1 else "inside"
    return "sample"


def command_for(art: Artifact) -> str | None:
    """The command line that made a result: from ``xlgap run``'s step marker, else rebuilt
    from the config the command recorded, else the command of the run it belongs to."""
    marker = art.json(STEP_MARKER)
    if isinstance(marker, Mapping) and marker.get("command"):
        return str(marker["command"])
    sim = _m(_m(art.json("run.json")).get("options")).get("simulator")
    if isinstance(sim, Mapping):
        keys = ("pi", "tau", "eta", "questions", "samples", "seed")
        args = " ".join(f"--{k} {sim[k]}" for k in keys if k in sim)
        return f"xlgap simulate {args} --out {art.dir}"
    config = _first(_provenance_blocks(art), "config")
    if isinstance(config, Mapping):
        try:
            from xlgap.cli.study import command_line

            return command_line(_command_name(art, config), config)
        except Exception:  # a config of another version must not stop the page
            pass
    if art.owner is not None and art.owner is not art:
        command = command_for(art.owner)
        return f"{command}   (this result is part of that run)" if command else None
    return None


def provenance(art: Artifact) -> str:
    """Model, fingerprint, data, versions, options and the command, where recorded."""
    blocks = _provenance_blocks(art)
    meta = _m(art.json("run.json") or art.json("interventions.json"))
    rows: list[tuple[str, str]] = []
    for key in ("model", "fingerprint", "data", "data_hash", "source", "mode", "samples",
                "strategy", "analysis", "created", "finished"):
        value = _first(blocks, key)
        if value is not None and not isinstance(value, Mapping | list):
            rows.append((key, str(value)))
    versions = _first(blocks, "versions")
    if isinstance(versions, Mapping):
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items()
                                           if v is not None)))
    if art.kind == "inside":
        index = load_json(art.dir / "hidden" / "index.json")
        for key in ("fingerprint", "pooling", "dtype"):
            value = _m(index.data).get(key)
            if value and key not in dict(rows):
                rows.append((key, str(value)))
    rows.append(("directory", str(art.dir)))
    parts = ['<dl class="prov">' + "".join(f"<dt>{esc(k)}</dt><dd><code>{esc(v)}</code></dd>"
                                           for k, v in rows) + "</dl>"]
    command = command_for(art)
    if command:
        parts.append(f'<div class="cmd"><span class="muted">command</span> '
                     f"<code>{esc(command)}</code></div>")
    for key in ("options", "config"):
        value = meta.get(key) or (_first(blocks, key) if key == "config" else None)
        if isinstance(value, Mapping) and value:
            parts.append(details(key, "<pre>" + esc(json.dumps(value, indent=1,
                                                               ensure_ascii=False)) + "</pre>"))
    parts.append(_raw_downloads(art))
    return details("provenance and data", "".join(parts))


def _raw_downloads(art: Artifact) -> str:
    """Each result file embedded as JSON, downloadable from the page (no server)."""
    links = []
    for name, loaded in art.files.items():
        if loaded.error is not None or name == STEP_MARKER:
            continue
        text = json.dumps(loaded.data, ensure_ascii=False)
        if len(text) > MAX_EMBED_JSON:
            links.append(f'<span class="muted">{esc(name)} ({len(text) / 1e6:.1f} MB, not '
                         "embedded)</span>")
            continue
        safe = text.replace("</", "<\\/")  # a "</script>" inside a string must not end it
        links.append(f'<button type="button" class="dl" data-name="{esc(name)}">download '
                     f'{esc(name)}</button><script type="application/json" class="rawjson">'
                     f"{safe}</script>")
    return f'<div class="downloads">{"".join(links)}</div>' if links else ""


# ------------------------------------------------------------------------------------------
# headline numbers


def run_summary(art: Artifact) -> dict[str, Any] | None:
    """The headline numbers of a diagnosed run, or None when it has no diagnosis."""
    diag = art.json("diagnosis.json")
    if not isinstance(diag, Mapping):
        return None
    source = str(diag.get("source") or "")
    acc = _m(diag.get("accuracy"))
    targets = [t for t in (diag.get("targets") or []) if isinstance(t, str)]
    tgt_acc = [v for t in targets if (v := _value(acc.get(t))) is not None]
    overall = _m(diag.get("overall"))
    pi = _m(diag.get("pi"))
    try:
        from xlgap.stats.diagnose import verdict

        text = verdict(dict(diag))
    except Exception:  # a partial diagnosis: show its numbers without the sentence
        text = "no verdict: the diagnosis file lacks fields the verdict needs"
    src_acc = _value(acc.get(source))
    mean_tgt = sum(tgt_acc) / len(tgt_acc) if tgt_acc else None
    return {"source": source, "targets": targets, "source_accuracy": acc.get(source),
            "target_accuracy": mean_tgt,
            "gap": src_acc - mean_tgt if mean_tgt is not None and src_acc is not None
            else None,
            "transfer": overall.get("transfer"), "agreement": overall.get("agreement"),
            "overall_success": overall.get("overall_success"), "chi2": overall.get("chi2"),
            "drop": _finite(_m(overall.get("ensembling")).get("drop")),
            "pi": pi.get("model") if isinstance(pi.get("model"), Mapping) else None,
            "pi_mismatch": _finite(pi.get("mismatch")), "verdict": text,
            "n_items": diag.get("n_items"),
            "truth": _truth(art.json("truth.json"))}


def _truth(truth: Any) -> str:
    """What a simulated run was made with (``truth.json``), for comparison with the fit."""
    truth = _m(truth)
    nominal = _finite(_m(truth.get("params")).get("pi"))
    if nominal is None:
        nominal = _finite(truth.get("pi"))
    if nominal is None:
        return ""
    real = [v for v in _m(truth.get("pi_empirical")).values() if _finite(v) is not None]
    tail = f", realised {', '.join(f'{v:.2f}' for v in real)}" if real else ""
    return f"simulated with true pi {nominal:.2f}{tail}"


def layer_stat(entry: Any, key: str = "mean", group: str | None = None) -> Any:
    """A per-layer (or per-pair) figure: from the entry's ``summary`` (estimate, CI and
    chance level) when the analysis computed one, else the plain value (older files, or
    no resampling). ``group`` is where the plain value sits (``entry[group][key]``); a
    summary may nest the same way or hold ``key`` directly."""
    if not isinstance(entry, Mapping):
        return None
    summary = entry.get("summary")
    if isinstance(summary, Mapping):
        nested = summary.get(group) if group else None
        for got in ((nested.get(key) if isinstance(nested, Mapping) else None),
                    summary.get(key)):
            if isinstance(got, Mapping) and "estimate" in got:
                return got
    holder = entry.get(group) if group else entry
    return holder.get(key) if isinstance(holder, Mapping) else None


def _ilo_layers(ilo: Any) -> list[Mapping[str, Any]]:
    layers = _m(ilo).get("layers")
    return [e for e in layers if isinstance(e, Mapping)] if isinstance(layers, list) else []


def inside_summary(art: Artifact) -> str | None:
    """One sentence: the layer where the languages share representations most."""
    layers = [e for e in _ilo_layers(art.json("ilo.json")) if _value(layer_stat(e)) is not None]
    sim_layers = {e.get("layer"): e for e in (_m(art.json("similarity.json")).get("layers")
                                               or []) if isinstance(e, Mapping)}
    if layers:
        best = max(layers, key=lambda e: _value(layer_stat(e)) or 0.0)
        if (_value(layer_stat(best)) or 0.0) <= 0.0:
            return (f"no layer of {len(layers)} shows shared representations (ILO 0 "
                    "everywhere: each language keeps to its own neighbourhood)")
        text = (f"languages share representations most at layer {best.get('layer')} of "
                f"{len(layers)} (ILO {fmt_ci(layer_stat(best), 2)})")
        retrieval = layer_stat(sim_layers.get(best.get("layer")), "retrieval", "mean")
        if _value(retrieval) is not None:
            text += f"; parallel-sentence retrieval there {fmt_ci(retrieval, 2)}"
        return text
    scored = [(layer, v) for layer, e in sim_layers.items()
              if (v := _value(layer_stat(e, "retrieval", "mean"))) is not None]
    if scored:
        layer, v = max(scored, key=lambda lv: lv[1])
        return f"parallel-sentence retrieval peaks at layer {layer} ({v:.2f})"
    return None


def intervention_summary(art: Artifact) -> str | None:
    """One sentence: the best strategy against baseline on transfer, with its p-value."""
    result = _m(art.json("interventions.json"))
    strategies = _m(result.get("strategies"))
    base_name = str(result.get("baseline") or "baseline")
    base_t = _value(_m(strategies.get(base_name)).get("transfer"))
    best = None
    for name, m in strategies.items():
        v = _value(_m(m).get("transfer"))
        if name != base_name and v is not None and (best is None or v > best[1]):
            best = (name, v, _m(m))
    if best is None:
        return None
    name, v, m = best
    if base_t is None:
        return f"best strategy {name}: transfer {fmt_ci(m.get('transfer'))}"
    p = _finite(m.get("p_vs_baseline"))
    p_txt = "" if p is None else (", p < 0.001" if p < 0.001 else f", p = {p:.3f}")
    sig = "" if p is None else (", significant" if p < 0.05 else ", not significant")
    diff = 100 * (v - base_t)
    lead = f"{name} helped most" if diff > 0 else f"no strategy beat baseline; best was {name}"
    return (f"{lead}: transfer {100 * v:.1f}% against {100 * base_t:.1f}% for baseline "
            f"({diff:+.1f} points{p_txt}{sig})")


def _find_comparison(data: Any, depth: int = 0, title: str = ""
                     ) -> tuple[str, list[str], list[str], list[Mapping[str, Any]]] | None:
    """A dict of named entries sharing numeric or estimate-with-CI fields (a comparison
    of methods, strategies, conditions...), searched a few levels deep."""
    if not isinstance(data, Mapping) or depth > 3:
        return None
    entries = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if len(entries) >= 2:
        metrics: list[str] = []
        for v in entries.values():
            for key, x in v.items():
                if _value(x) is not None and key not in metrics:
                    metrics.append(key)
        shared = [m for m in metrics
                  if sum(_value(v.get(m)) is not None for v in entries.values()) >= 2]
        if shared:
            return title, [str(k) for k in entries], shared[:12], list(entries.values())
    for key, v in data.items():
        found = _find_comparison(v, depth + 1, str(key)) if isinstance(v, Mapping) else None
        if found is not None:
            return found
    return None


def _change(before: Any, after: Any) -> str:
    """``0.41 [0.35, 0.47] -> 0.52 [0.46, 0.58] (+11.0 points, p = 0.004)``."""
    b, a = _value(before), _value(after)
    if a is None:
        return "-"
    text = f"{fmt_ci(before, 2)} -> {fmt_ci(after, 2)}" if b is not None else fmt_ci(after, 2)
    bits = [f"{100 * (a - b):+.1f} points"] if b is not None else []
    p = _finite(_m(after).get("p_value"))
    if p is not None:
        bits.append("p < 0.001" if p < 0.001 else f"p = {p:.3f}")
    return f"{text} ({', '.join(bits)})" if bits else text


def steering_summary(data: Any) -> str | None:
    """The best steering setting (chosen on dev) against no steering, on test."""
    best = _m(_m(data).get("best"))
    after = _m(_m(best.get("test")).get("all"))
    before = _m(_m(_m(_m(data).get("baseline")).get("test")).get("all"))
    if _value(after.get("transfer")) is None:
        return None
    layers = best.get("layers")
    where = f"layers {'+'.join(map(str, layers))}" if isinstance(layers, list) else "layers ?"
    change = _change(before.get("transfer"), after.get("transfer"))
    return (f"steering toward {best.get('direction', '?')} at {where}, alpha "
            f"{best.get('alpha', '?')}: transfer {change} on held-out items")


def finetune_summary(data: Any) -> str | None:
    """The fine-tuning run that moved transfer most, before -> after."""
    best = None
    for run in _m(data).get("runs") or []:
        before = _m(_m(run).get("transfer_before")).get("all")
        after = dict(_m(_m(run).get("transfer_after")).get("all") or {})
        p = _m(_m(run).get("transfer_after")).get("p_value")
        if isinstance(p, Mapping):
            after.setdefault("p_value", p.get("all"))
        b, a = _value(before), _value(after)
        if a is not None and (best is None or (a - (b or 0)) > best[0]):
            best = (a - (b or 0), run, before, after)
    if best is None:
        return None
    _, run, before, after = best
    return (f"{_m(data).get('method', 'fine-tuning')} on {_m(data).get('lang', '?')}, first "
            f"{_m(run).get('freeze_first', '?')} blocks frozen: transfer "
            f"{_change(before, after)}")


def extra_summary(art: Artifact) -> str | None:
    """A short line from a result file: steering and fine-tuning by their known fields,
    anything else by its own summary text or the best entry of a comparison it holds."""
    for loaded in art.files.values():
        data = loaded.data
        if not isinstance(data, Mapping) or loaded.path.name == STEP_MARKER:
            continue
        known = {"steering.json": steering_summary, "finetune.json": finetune_summary}
        if loaded.path.name in known:
            try:
                text = known[loaded.path.name](data)
            except Exception:  # another version's shape: fall through to the generic line
                text = None
            if text:
                return text
        for key in ("verdict", "summary", "headline"):
            if isinstance(data.get(key), str) and data[key].strip():
                return data[key].strip()
        found = _find_comparison(data)
        if found is not None:
            title, names, metrics, rows = found
            key = next((k for k in ("transfer", "overall_success", "accuracy") if k in metrics),
                       metrics[0])
            scored = [(n, v) for n, r in zip(names, rows, strict=True)
                      if (v := _value(r.get(key))) is not None]
            if scored:
                n, v = max(scored, key=lambda nv: nv[1])
                return f"highest {key}: {n} ({v:.3f}) among {len(scored)} {title or 'entries'}"
    return None


# ------------------------------------------------------------------------------------------
# a diagnosed run


def _lang_rows(diag: Mapping[str, Any]) -> list[list[Cell]]:
    acc, mode = _m(diag.get("accuracy")), _m(diag.get("mode_accuracy"))
    source = diag.get("source")
    rows: list[list[Cell]] = []
    for lang in acc:
        n = _finite(_m(acc.get(lang)).get("n"))
        rows.append([_lang_label(lang) + (" - source" if lang == source else ""),
                     cell(acc.get(lang)), cell(mode.get(lang)),
                     ("-" if n is None else str(int(n)), n)])
    return rows


def _pair_rows(diag: Mapping[str, Any]) -> list[list[Cell]]:
    pairs = _m(diag.get("pairs"))
    overall = {**_m(diag.get("overall")), "pi_model": _m(diag.get("pi")).get("model")}
    rows: list[list[Cell]] = []
    source = diag.get("source", "?")
    for name, pair in [*((f"{source}-{t}", pairs[t]) for t in pairs), ("overall", overall)]:
        if not isinstance(pair, Mapping):
            continue
        ens = _m(pair.get("ensembling"))
        pim = _m(pair.get("pi_model"))
        mism = {"estimate": pair.get("pi_mismatch"), "ci": pair.get("pi_mismatch_ci")}
        bias = _finite(pim.get("n_likely_bias"))
        rows.append([name, cell(pair.get("agreement")), cell(pair.get("transfer")),
                     cell(pair.get("overall_success")), cell(pair.get("chi2")),
                     cell(pair.get("l2")), (pct(ens.get("drop"), 0), _finite(ens.get("drop"))),
                     cell(mism), cell(pim or None, 2),
                     ("-" if bias is None else str(int(bias)), bias)])
    return rows


def _ensembling_chart(diag: Mapping[str, Any]) -> str:
    series = []
    for t, pair in _m(diag.get("pairs")).items():
        ens = _m(_m(pair).get("ensembling"))
        if isinstance(ens.get("chi2"), list):
            series.append(Series(f"{diag.get('source')}-{t}", ens.get("k") or
                                 list(range(1, len(ens["chi2"]) + 1)), ens["chi2"], dashed=True))
    ens = _m(_m(diag.get("overall")).get("ensembling"))
    # With one target the pooled curve is that target's curve: drawing both hides one.
    if isinstance(ens.get("chi2"), list) and len(series) != 1:
        series.append(Series("overall", ens.get("k") or list(range(1, len(ens["chi2"]) + 1)),
                             ens["chi2"], bold=True, color="#000"))
    if not series:
        return ""
    return figure(line_chart(series, title="Source-target distance as answers are pooled",
                             xlabel="ensemble size k", ylabel="chi-square distance",
                             y_range=(0.0, None), integer_x=True),
                  "A variance gap shrinks towards 0 as answers are pooled; a bias gap "
                  "levels off.")


def _confidence_chart(diag: Mapping[str, Any]) -> str:
    conf = _m(diag.get("confidence_vs_agreement"))
    if not isinstance(conf.get("bins"), list):
        return ""
    counts = conf.get("count") if isinstance(conf.get("count"), list) else []
    labels = []
    for i, b in enumerate(conf["bins"]):
        try:
            lab = f"{float(b[0]):.2f}-{float(b[1]):.2f}"
        except (TypeError, ValueError, IndexError):
            lab = str(b)
        labels.append(f"{lab}\nn={counts[i]}" if i < len(counts) else lab)
    values = [{"estimate": a} for a in (conf.get("agreement") or [])]
    return figure(bar_chart(labels, [("agreement", values)], title="Agreement by source "
                            "confidence", ylabel="source-target agreement"),
                  "Items the source is sure about should agree across languages more often.")


def _accuracy_chart(diag: Mapping[str, Any]) -> str:
    acc, mode = _m(diag.get("accuracy")), _m(diag.get("mode_accuracy"))
    langs = list(acc)
    if not langs:
        return ""
    return figure(bar_chart(langs, [("accuracy (P(gold))", [acc.get(x) for x in langs]),
                                    ("mode accuracy", [mode.get(x) for x in langs])],
                            title="Accuracy per language (95% CI)", ylabel="accuracy"),
                  "Bars: estimates; whiskers: 95% bootstrap CIs over items.")


def _pi_chart(diag: Mapping[str, Any]) -> str:
    names, model, mism = [], [], []
    for t, pair in _m(diag.get("pairs")).items():
        if isinstance(pair, Mapping):
            names.append(str(t))
            model.append(pair.get("pi_model"))
            mism.append({"estimate": pair.get("pi_mismatch"), "ci": pair.get("pi_mismatch_ci")})
    overall = _m(diag.get("overall"))
    if len(names) > 1:
        names.append("overall")
        model.append(_m(diag.get("pi")).get("model"))
        mism.append({"estimate": overall.get("pi_mismatch"), "ci": overall.get("pi_mismatch_ci")})
    if not any(_value(x) is not None for x in model + mism):
        return ""
    return figure(bar_chart(names, [("pi, model fit", model), ("pi, mismatch heuristic", mism)],
                            title="pi: share of variance-type gaps (95% CI)", ylabel="pi"),
                  "pi near 1: the target is a less sure copy of the source (ensembling "
                  "helps); near 0: it believes other answers.")


def _bias_items(diag: Mapping[str, Any]) -> str:
    rows: list[list[Cell]] = []
    for t, pair in _m(diag.get("pairs")).items():
        for entry in _m(_m(pair).get("pi_model")).get("likeliest_bias_items") or []:
            if isinstance(entry, Mapping):
                p = _finite(entry.get("p_variance"))
                rows.append([str(t), str(entry.get("id")), (fmt(p), p)])
    if not rows:
        return ""
    return details("items most likely to be bias (the target believes something else)",
                   table(["target", "item", "P(variance)"], rows))


def _heading(art: Artifact, what: str) -> str:
    on = f" on {esc(art.data)}" if art.data else ""
    return f'<section class="artifact" id="{art.anchor}"><h3>{esc(what)}: {esc(art.model)}{on}</h3>'


def render_run(art: Artifact) -> str:
    meta = _m(art.json("run.json"))
    diag = art.json("diagnosis.json")
    parts = [_heading(art, "Run")]
    bits = [f"{k} {meta[k]}" for k in ("mode", "samples", "strategy") if meta.get(k)]
    if isinstance(meta.get("languages"), list):
        bits.append(f"languages {', '.join(map(str, meta['languages']))}")
    if bits:
        parts.append(f'<p class="muted">{esc("; ".join(bits))}</p>')
    for name in ("run.json", "diagnosis.json"):
        loaded = art.files.get(name)
        if loaded is not None and loaded.error:
            parts.append(note(f"{name}: {loaded.error}", "warn"))
    if not isinstance(diag, Mapping):
        parts.append(note(f"not diagnosed yet: run `xlgap diagnose {art.dir}` for metrics, "
                          "pi and figures"))
    else:
        s = run_summary(art) or {}
        truth = f" ({s['truth']})" if s.get("truth") else ""
        parts.append(f'<p class="verdict">{esc(s.get("verdict", ""))}{esc(truth)}</p>')
        parts.append(table(["language", "accuracy [95% CI]", "mode accuracy [95% CI]",
                            "items"], _lang_rows(diag), caption="Accuracy per language"))
        parts.append(table(["pair", "agreement", "transfer", "overall success",
                            "chi-square", "L2", "ensembling drop", "pi (mismatch)",
                            "pi (model) [95% CI]", "likely bias items"], _pair_rows(diag),
                           caption="Source-target pairs (95% bootstrap CIs over items)"))
        model = _m(_m(diag.get("pi")).get("model"))
        if model.get("tau"):
            edge = model.get("at_grid_edge") or []
            edge_txt = f" (at grid edge: {', '.join(map(str, edge))})" if edge else ""
            parts.append(f'<p class="muted">model fit: tau {esc(fmt_ci(model.get("tau"), 2))},'
                         f' eta {esc(fmt_ci(model.get("eta"), 2))}{esc(edge_txt)}; tau and '
                         "eta trade off, pi is the well-determined quantity.</p>")
        charts = [_accuracy_chart(diag), _ensembling_chart(diag), _pi_chart(diag),
                  _confidence_chart(diag)]
        parts.append('<div class="charts">' + "".join(c for c in charts if c) + "</div>")
        parts.append(_bias_items(diag))
        warnings = diag.get("warnings")
        if isinstance(warnings, list) and warnings:
            parts.append(details(f"{len(warnings)} warning(s)", "<ul>" + "".join(
                f"<li>{esc(w)}</li>" for w in warnings) + "</ul>"))
    parts += [_command_figures(art), provenance(art), "</section>"]
    return "".join(parts)


# ------------------------------------------------------------------------------------------
# interventions


def render_interventions(art: Artifact) -> str:
    parts = [_heading(art, "Interventions")]
    loaded = art.files["interventions.json"]
    result = art.json("interventions.json")
    if loaded.error or not isinstance(result, Mapping):
        parts.append(note(f"interventions.json: {loaded.error or 'not a JSON object'}", "warn"))
    else:
        summary = intervention_summary(art)
        if summary:
            parts.append(f'<p class="verdict">{esc(summary)}</p>')
        strategies = {str(k): m for k, m in _m(result.get("strategies")).items()
                      if isinstance(m, Mapping)}
        langs = [str(x) for x in (result.get("languages") or
                                  [result.get("source"), *(result.get("targets") or [])]) if x]
        rows: list[list[Cell]] = []
        for name, m in strategies.items():
            acc = _m(m.get("accuracy"))
            fails = _finite(_m(m.get("parse_failures")).get("total"))
            p = _finite(m.get("p_vs_baseline"))
            rows.append([name, cell(m.get("transfer")), cell(m.get("overall_success")),
                         ("-" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}"), p),
                         cell(m.get("chi2")), ("-" if fails is None else str(int(fails)), fails),
                         *(cell(acc.get(lang)) for lang in langs)])
        parts.append(table(["strategy", "transfer [95% CI]", "overall success [95% CI]",
                            "p vs baseline", "chi-square s-t", "parse failures",
                            *(f"accuracy {lang}" for lang in langs)], rows,
                           caption=f"Strategies compared on {result.get('n_items')} items, "
                           f"R = {result.get('samples')} final answers per item and language"))
        names = list(strategies)
        parts.append('<div class="charts">' + figure(bar_chart(
            names, [("transfer", [strategies[k].get("transfer") for k in names]),
                    ("overall success", [strategies[k].get("overall_success") for k in names])],
            title="Transfer and overall success per strategy (95% CI)", ylabel="share"),
            "Transfer: correct in the target among items correct in the source; overall "
            "success: correct in both.") + "</div>")
        per_rows: list[list[Cell]] = []
        for name, m in strategies.items():
            for tgt, v in _m(m.get("per_target")).items():
                if isinstance(v, Mapping):
                    per_rows.append([name, str(tgt), cell(v.get("transfer")),
                                     cell(v.get("overall_success")), cell(v.get("chi2"))])
        if per_rows:
            parts.append(details("per target", table(["strategy", "target", "transfer",
                                                      "overall success", "chi-square"],
                                                     per_rows)))
    parts += [_command_figures(art), provenance(art), "</section>"]
    return "".join(parts)


# ------------------------------------------------------------------------------------------
# inside the model


def _ilo_block(ilo: Any) -> str:
    layers = _ilo_layers(ilo)
    if not layers:
        return ""
    xs = [e.get("layer") for e in layers]
    langs: list[str] = []
    for e in layers:
        langs += [lang for lang in _m(e.get("ilo")) if lang not in langs]
    series = [Series(lang, xs, [_value(layer_stat(e, lang, "ilo")) for e in layers])
              for lang in langs]
    means = [layer_stat(e) for e in layers]
    lo, hi = [_ci(m)[0] for m in means], [_ci(m)[1] for m in means]
    band = any(v is not None for v in lo)
    series.append(Series("mean", xs, [_value(m) for m in means], lo=lo if band else None,
                         hi=hi if band else None, bold=True, color="#000"))
    chance = [_chance(m) for m in means]
    if any(v is not None for v in chance):
        series.append(Series("chance (mean)", xs, chance, dashed=True, color="#888"))
    settings = ", ".join(f"{key}={ilo[key]}" for key in ("k", "t", "metric")
                         if _m(ilo).get(key) is not None)
    caption = ("High ILO: a language's sentences have neighbours in other languages (a "
               "shared space).")
    if band:
        caption += " Band: 95% bootstrap interval over items."
    title = f"Interlingual Local Overlap (ILO) by layer ({settings})"
    chart = figure(line_chart(series, title=title,
                              xlabel="layer", ylabel="ILO", y_range=(0.0, None),
                              integer_x=True), caption)
    rows = [[(str(e.get("layer")), _finite(e.get("layer"))), cell(layer_stat(e)),
             *(cell(layer_stat(e, lang, "ilo")) for lang in langs)] for e in layers]
    return chart + details("ILO by layer (table)", table(["layer", "mean", *langs], rows))


SIMILARITY_LABELS = {"cos_parallel": "cosine, parallel",
                     "cos_non_parallel": "cosine, non-parallel",
                     "cka": "linear CKA", "retrieval": "retrieval@1"}


def _similarity_block(sim: Any) -> str:
    layers = [e for e in (_m(sim).get("layers") or []) if isinstance(e, Mapping)]
    if not layers:
        return ""
    xs = [e.get("layer") for e in layers]
    stats = [{key: layer_stat(e, key, "mean") for key in SIMILARITY_LABELS} for e in layers]
    series, chances = [], []
    for i, (key, label) in enumerate(SIMILARITY_LABELS.items()):
        figs = [st[key] for st in stats]
        ys = [_value(f) for f in figs]
        if not any(v is not None for v in ys):
            continue
        los, his = [_ci(f)[0] for f in figs], [_ci(f)[1] for f in figs]
        band = any(v is not None for v in los)
        series.append(Series(label, xs, ys, lo=los if band else None, hi=his if band else None,
                             color=PALETTE[i]))
        chance = [_chance(f) for f in figs]
        if any(v is not None for v in chance):
            chances.append(Series(f"chance: {label}", xs, chance, dashed=True,
                                  color=PALETTE[i]))
    chart = figure(line_chart(series + chances, title="Cross-lingual similarity by layer "
                              "(mean over pairs)", xlabel="layer", ylabel="value",
                              integer_x=True),
                   "Parallel above non-parallel cosine, and retrieval above chance: "
                   "translations are closer than unrelated sentences.") if series else ""
    rows = [[(str(e.get("layer")), _finite(e.get("layer"))),
             *(cell(st[key]) for key in SIMILARITY_LABELS)]
            for e, st in zip(layers, stats, strict=True)]
    return chart + details("similarity by layer (table)",
                           table(["layer", *SIMILARITY_LABELS.values()], rows))


def _logit_lens_block(lens: Any) -> str:
    languages = _m(_m(lens).get("languages"))
    if not languages:
        return ""
    out = []
    pivot = _m(lens).get("pivot") or "en"
    for key, title, ylabel in (("p_gold", "Logit lens: P(gold first token) by layer",
                                "probability"),
                               ("pivot_share", f"Latent language: {pivot} share of the answer "
                                               "mass by layer", f"{pivot} share")):
        series = []
        for lang, curves in languages.items():
            ys = _m(curves).get(key)
            if isinstance(ys, list) and ys:
                layers = _m(lens).get("layers")
                xs = layers if isinstance(layers, list) and len(layers) == len(ys) else \
                    list(range(len(ys)))
                series.append(Series(str(lang), xs, [_value(v) for v in ys]))
        if series:
            out.append(figure(line_chart(series, title=title, xlabel="layer", ylabel=ylabel,
                                         y_range=(0.0, 1.0 if key == "pivot_share" else None),
                                         integer_x=True)))
    return "".join(out)


def _consistency_block(cons: Any) -> str:
    rows: list[list[Cell]] = []
    for r in _m(cons).get("pairs") or []:
        if isinstance(r, Mapping):
            n = _finite(r.get("n"))
            rows.append([f"{r.get('a')}-{r.get('b')}",
                         *(cell(layer_stat(r, key)) for key in ("rank_consistency", "rankc",
                                                                 "tr_plus", "tr_minus")),
                         ("-" if n is None else str(int(n)), n)])
    out = []
    if rows:
        out.append(table(["pair", "Spearman", "RankC", "tr+ (both right)",
                          "tr- (same wrong answer)", "items"], rows,
                         caption="Consistency of candidate rankings across languages"))
    mats, langs = _m(_m(cons).get("matrices")), _m(cons).get("languages")
    if isinstance(langs, list) and "rankc" in mats:
        out.append(heat_table([str(x) for x in langs], mats["rankc"],
                              "RankC, language x language"))
    return "".join(out)


def render_inside(art: Artifact) -> str:
    parts = [_heading(art, "Inside the model")]
    for name, loaded in art.files.items():
        if loaded.error:
            parts.append(note(f"{name}: {loaded.error}", "warn"))
    summary = inside_summary(art)
    if summary:
        parts.append(f'<p class="verdict">{esc(summary)}</p>')
    blocks = []
    for name, fn in (("ilo.json", _ilo_block), ("similarity.json", _similarity_block),
                     ("logit_lens.json", _logit_lens_block),
                     ("consistency.json", _consistency_block)):
        data = art.json(name)
        if data is None:
            continue
        try:
            block = fn(data)
        except Exception as exc:  # a newer or partial file: say so, show the rest
            block = note(f"{name} could not be drawn ({exc.__class__.__name__}: {exc})", "warn")
        blocks.append(f'<div class="block">{block or note(f"{name}: nothing to draw")}</div>')
    parts.append('<div class="charts">' + "".join(blocks) + "</div>")
    parts += [_command_figures(art), provenance(art), "</section>"]
    return "".join(parts)


# ------------------------------------------------------------------------------------------
# results of an unknown shape, loose figures, studies


def _flatten(data: Any, prefix: str = "", out: list[tuple[str, Any]] | None = None,
             limit: int = 300) -> list[tuple[str, Any]]:
    """``path -> value`` for scalar leaves and estimate-with-CI entries."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(data, Mapping):
        if "estimate" in data:
            out.append((prefix or "value", data))
            return out
        for k, v in data.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, limit)
    elif isinstance(data, list):
        numbers = [x for x in data if _finite(x) is not None]
        if data and len(numbers) == len(data):
            text = ", ".join(fmt(x) for x in data) if len(data) <= 12 else \
                f"{len(data)} numbers, {fmt(min(numbers))} to {fmt(max(numbers))}"
            out.append((prefix, text))
        else:
            for i, v in enumerate(data[:50]):
                _flatten(v, f"{prefix}[{i}]", out, limit)
    else:
        out.append((prefix or "value", data))
    return out


def _steering_tables(data: Any) -> str:
    """No steering against the best setting on test: each metric with its CI and p."""
    before = _m(_m(_m(data).get("baseline")).get("test"))
    after = _m(_m(_m(data).get("best")).get("test"))
    rows: list[list[Cell]] = []
    for target in ["all", *_m(after.get("per_target"))]:
        b = _m(before.get("all")) if target == "all" else \
            _m(_m(before.get("per_target")).get(target))
        a = _m(after.get("all")) if target == "all" else \
            _m(_m(after.get("per_target")).get(target))
        for metric in ("transfer", "accuracy", "agreement", "rankc"):
            if metric in a:
                p = _finite(_m(a[metric]).get("p_value"))
                rows.append([target, metric, cell(b.get(metric)), cell(a.get(metric)),
                             ("-" if p is None else f"{p:.3f}", p)])
    if not rows:
        return ""
    return table(["targets", "metric", "no steering [95% CI]", "steered [95% CI]",
                  "p (paired)"], rows, caption="Held-out test items: the best setting "
                 "chosen on dev against no steering")


def _finetune_tables(data: Any) -> str:
    """One row per fine-tuning run: loss, transfer and ILO before and after."""
    rows: list[list[Cell]] = []
    for run in _m(data).get("runs") or []:
        run = _m(run)
        tb = _m(run.get("transfer_before")).get("all")
        ta = dict(_m(run.get("transfer_after")).get("all") or {})
        p = _m(run.get("transfer_after")).get("p_value")
        p_all = _finite(p.get("all")) if isinstance(p, Mapping) else None
        ilo = [_value(x) if not isinstance(x, list) else None
               for x in (run.get("ilo_before"), run.get("ilo_after"))]
        rows.append([(str(run.get("freeze_first")), _finite(run.get("freeze_first"))),
                     f"{fmt(run.get('loss_first'))} -> {fmt(run.get('loss_last'))}",
                     cell(tb), cell(ta), ("-" if p_all is None else f"{p_all:.3f}", p_all),
                     " -> ".join(fmt(x) for x in ilo)])
    if not rows:
        return ""
    return table(["frozen first blocks", "loss", "transfer before", "transfer after",
                  "p (paired)", "ILO before -> after"], rows,
                 caption="Fine-tuning runs (transfer pooled over targets, 95% CIs)")


def render_extra(art: Artifact) -> str:
    """A result of a shape this page does not know (steering, fine-tuning, commands
    added later): its comparison table if one is found, all its values, its figures."""
    name = next(n for n in art.files if n != STEP_MARKER)
    loaded = art.files[name]
    data = loaded.data
    parts = [_heading(art, name[:-5] if name.endswith(".json") else name)]
    if isinstance(data, Mapping) and data.get("format"):
        parts.append(f'<p class="muted">{esc(data["format"])}</p>')
    if loaded.error:
        parts.append(note(f"{name}: {loaded.error}", "warn"))
    else:
        summary = extra_summary(art)
        if summary:
            parts.append(f'<p class="verdict">{esc(summary)}</p>')
        specific = {"steering.json": _steering_tables,
                    "finetune.json": _finetune_tables}.get(name)
        block = ""
        if specific is not None:
            try:
                block = specific(data)
            except Exception as exc:  # another version's shape: the generic view follows
                block = note(f"{name}: not the shape this page knows ({exc})")
            parts.append(block)
        found = None if block else _find_comparison(data)
        if found is not None:
            title, names, metrics, rows = found
            parts.append(table([title or "entry", *metrics],
                               [[n, *(cell(r.get(m)) for m in metrics)]
                                for n, r in zip(names, rows, strict=True)],
                               caption=f"{title or name}: entries compared"))
        flat = [(k, fmt_ci(v) if isinstance(v, Mapping) else
                 (fmt(v) if isinstance(v, float) else str(v))) for k, v in _flatten(data)]
        if flat:
            parts.append(details(f"all values in {name} ({len(flat)})",
                                 table(["key", "value"], [list(kv) for kv in flat])))
    if art.pngs:
        parts.append(pngs_block(art.pngs, art.dir))
    parts += [provenance(art), "</section>"]
    return "".join(parts)


def render_figures(art: Artifact) -> str:
    return (f'<section class="artifact" id="{art.anchor}"><h3>Other figures in '
            f"{esc(art.dir)}</h3>{pngs_block(art.pngs, art.dir)}</section>")


def render_study(art: Artifact) -> str:
    study = art.json(STUDY_FILE)
    loaded = art.files[STUDY_FILE]
    if loaded.error or not isinstance(study, Mapping):
        problem = note(f"{STUDY_FILE}: {loaded.error or 'not a JSON object'}", "warn")
        return (f'<section class="artifact" id="{art.anchor}"><h3>Study in {esc(art.dir)}'
                f"</h3>{problem}</section>")
    parts = [f'<section class="artifact" id="{art.anchor}"><h3>Study: '
             f'{esc(study.get("title") or art.dir.name)}</h3>']
    bits = [f"from {study['config_file']}" if study.get("config_file") else "",
            f"started {study['started']}" if study.get("started") else "",
            f"finished {study['finished']}" if study.get("finished") else "",
            f"status {study['status']}" if study.get("status") else ""]
    parts.append(f'<p class="muted">{esc("; ".join(b for b in bits if b))}</p>')
    rows: list[list[Cell]] = []
    for s in study.get("steps") or []:
        if isinstance(s, Mapping):
            secs = _finite(s.get("seconds"))
            rows.append([str(s.get("model", "")), str(s.get("data", "")),
                         str(s.get("analysis", "")), str(s.get("status", "")),
                         (_duration(secs), secs), Raw(f"<code>{esc(s.get('command', ''))}</code>"),
                         str(s.get("error") or s.get("note") or "")])
    parts.append(table(["model", "data", "analysis", "status", "time", "command", "note"],
                       rows, caption="Steps of the study"))
    versions = _m(study.get("versions"))
    if versions:
        text = ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
        parts.append(f'<p class="muted">versions: {esc(text)}</p>')
    parts += [_raw_downloads(art), "</section>"]
    return "".join(parts)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    from xlgap.progress import format_duration

    return format_duration(seconds)


RENDERERS: dict[str, Callable[[Artifact], str]] = {
    "run": render_run, "interventions": render_interventions, "inside": render_inside,
    "extra": render_extra, "figures": render_figures, "study": render_study}


def _safe_render(art: Artifact) -> str:
    """Render one result; a failure becomes a note so the rest of the page still shows."""
    try:
        return RENDERERS[art.kind](art)
    except Exception as exc:
        return (f'<section class="artifact" id="{art.anchor}"><h3>{esc(art.dir)}</h3>' +
                note(f"this result could not be shown ({exc.__class__.__name__}: {exc}); "
                     "its files may be from another xlgap version or incomplete", "warn") +
                "</section>")


# ------------------------------------------------------------------------------------------
# the page


def _card_line(art: Artifact) -> str | None:
    link = f'<a href="#{art.anchor}">{esc(art.data or art.dir.name)}</a>'
    if art.kind == "run":
        s = run_summary(art)
        if s is None:
            return None
        strategy = _m(art.json("run.json")).get("strategy")
        tag = f" ({esc(strategy)})" if strategy and strategy != "baseline" else ""
        gap = ""
        if s["gap"] is not None:
            gap = (f"accuracy {pct(s['source_accuracy'])} in {esc(s['source'])} against "
                   f"{pct(s['target_accuracy'])} on average in {len(s['targets'])} target "
                   f"language(s), {100 * s['gap']:+.1f} points; ")
        return (f"<li><b>gap</b> on {link}{tag}: {gap}transfer {esc(fmt_ci(s['transfer']))}. "
                f"<b>{esc(s['verdict'])}</b></li>")
    text = {"inside": inside_summary, "interventions": intervention_summary,
            "extra": extra_summary}.get(art.kind, lambda a: None)(art)
    if not text:
        return None
    label = {"inside": "inside", "interventions": "what helped"}.get(art.kind)
    if label is None:
        label = next((n[:-5] for n in art.files if n != STEP_MARKER), "result")
    return f"<li><b>{esc(label)}</b> on {link}: {esc(text)}</li>"


def model_titles(artifacts: Sequence[Artifact]) -> dict[str, str]:
    """``name (model)`` where a study named a model, else the model as given."""
    titles = {a.model: a.model for a in artifacts}
    for a in artifacts:
        if a.model_name and a.model_name not in (a.model, _slug(a.model)):
            titles[a.model] = f"{a.model_name} ({a.model})"
    return titles


def _model_cards(artifacts: Sequence[Artifact]) -> str:
    models: dict[str, list[Artifact]] = {}
    for art in artifacts:
        if art.kind not in ("study", "figures"):
            models.setdefault(art.model, []).append(art)
    if not models:
        return note("No xlgap results were found under the given directories.", "warn")
    order = {"run": 0, "inside": 1, "interventions": 2, "extra": 3}
    titles = model_titles(artifacts)
    cards = []
    for model, arts in models.items():
        lines = []
        for art in sorted(arts, key=lambda a: order.get(a.kind, 9)):
            try:
                line = _card_line(art)
            except Exception as exc:  # never lose the page over one headline
                line = f"<li>{esc(art.dir)}: summary unavailable ({esc(exc)})</li>"
            if line:
                lines.append(line)
        body = "<ul>" + "".join(lines) + "</ul>" if lines else \
            '<p class="muted">no diagnosed results yet</p>'
        cards.append(f'<div class="card"><h3>{esc(titles[model])}</h3>{body}</div>')
    return '<div class="cards">' + "".join(cards) + "</div>"


def _side_by_side(artifacts: Sequence[Artifact]) -> str:
    runs = [(a, s) for a in artifacts if a.kind == "run" and (s := run_summary(a))]
    if len(runs) < 2:
        return ""
    rows: list[list[Cell]] = []
    for art, s in runs:
        n = _finite(s.get("n_items"))
        rows.append([Raw(f'<a href="#{art.anchor}">{esc(art.model)}</a>'), art.data,
                     str(_m(art.json("run.json")).get("strategy") or ""),
                     ("-" if n is None else str(int(n)), n), cell(s["source_accuracy"]),
                     (fmt(s["target_accuracy"]), s["target_accuracy"]),
                     cell(s["transfer"]), cell(s["agreement"]), cell(s["chi2"]),
                     (pct(s["drop"], 0), s["drop"]), cell(s["pi"], 2),
                     (fmt(s["pi_mismatch"], 2), s["pi_mismatch"])])
    parts = [table(["model", "data", "strategy", "items", "source accuracy",
                    "mean target accuracy", "transfer", "agreement", "chi-square",
                    "ensembling drop", "pi (model)", "pi (mismatch)"], rows,
                   caption="Every diagnosed run (click a column to sort)")]
    series = []
    for art, _ in runs:
        ens = _m(_m(_m(art.json("diagnosis.json")).get("overall")).get("ensembling"))
        if isinstance(ens.get("chi2"), list):
            series.append(Series(f"{art.model} / {art.data}"[:60], ens.get("k") or
                                 list(range(1, len(ens["chi2"]) + 1)), ens["chi2"]))
    langs: list[str] = []
    for art, _ in runs:
        langs += [x for x in _m(_m(art.json("diagnosis.json")).get("accuracy")) if x not in langs]
    acc_rows: list[list[Cell]] = [[_lang_label(lang), *[
        cell(_m(_m(a.json("diagnosis.json")).get("accuracy")).get(lang)) for a, _ in runs]]
        for lang in langs]
    acc_table = table(["language", *[f"{a.model} / {a.data}"[:40] for a, _ in runs]],
                      acc_rows, caption="Accuracy per language, runs side by side")
    chart = figure(line_chart(series, title="Ensembling curves side by side (overall "
                              "chi-square)", xlabel="ensemble size k",
                              ylabel="chi-square distance", y_range=(0.0, None),
                              integer_x=True)) if series else ""
    parts.append(f'<div class="charts"><div class="block">{chart}</div>'
                 f'<div class="block">{acc_table}</div></div>')
    return "".join(parts)


def _versions() -> dict[str, str]:
    try:
        from xlgap.provenance import versions

        return {k: str(v) for k, v in versions().items() if v is not None}
    except Exception:  # the page must not depend on package metadata being readable
        from xlgap import __version__

        return {"xlgap": __version__, "python": platform.python_version()}


def render_report(artifacts: Sequence[Artifact], notes: Sequence[str], *, title: str,
                  inputs: Sequence[str]) -> str:
    """The whole page as a string."""
    created = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    order = {"run": 1, "interventions": 2, "inside": 3, "extra": 4, "figures": 5}
    groups: dict[str, list[Artifact]] = {}
    for art in artifacts:
        if art.kind != "study":
            groups.setdefault(art.model, []).append(art)
    titles = model_titles(artifacts)
    toc = ['<li><a href="#verdicts">Verdict per model</a></li>']
    body = [f'<section id="verdicts"><h2>Verdict per model</h2>{_model_cards(artifacts)}'
            "</section>"]
    try:
        side = _side_by_side(artifacts)
    except Exception as exc:
        side = note(f"runs side by side could not be shown ({exc})", "warn")
    if side:
        toc.append('<li><a href="#side">Side by side</a></li>')
        body.append(f'<section id="side"><h2>Side by side</h2>{side}</section>')
    studies = [a for a in artifacts if a.kind == "study"]
    if studies:
        toc.append('<li><a href="#study">Study: steps, times, commands</a></li>')
        body.append('<section id="study"><h2>Study</h2>' +
                    "".join(_safe_render(a) for a in studies) + "</section>")
    for i, (model, arts) in enumerate(groups.items()):
        gid = f"m{i}-{_slug(model)}"
        arts = sorted(arts, key=lambda a: (a.data, order.get(a.kind, 9)))
        sub = "".join(f'<li><a href="#{a.anchor}">{esc(a.kind)}'
                      f'{": " + esc(a.data) if a.data else ""}</a></li>' for a in arts)
        toc.append(f'<li><a href="#{gid}">{esc(titles[model])}</a><ul>{sub}</ul></li>')
        body.append(f'<section id="{gid}" class="model"><h2>{esc(titles[model])}</h2>' +
                    "".join(_safe_render(a) for a in arts) + "</section>")
    if notes:
        toc.append('<li><a href="#notes">Notes</a></li>')
        body.append('<section id="notes"><h2>Notes</h2><ul>' +
                    "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul></section>")
    versions = ", ".join(f"{k} {v}" for k, v in _versions().items())
    n_figs = sum(len(a.pngs) for a in artifacts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="xlgap report">
<title>{esc(title)}</title>
<script>{_GUARD_JS}</script>
<style>{_CSS}</style></head>
<body>
<header><h1>{esc(title)}</h1>
<p class="muted">made {esc(created)} by <code>xlgap report {esc(" ".join(inputs))}</code>;
{esc(versions)}; {len(artifacts)} result(s), {n_figs} figure file(s).
Everything is inside this file: it opens from disk, without network.</p></header>
<nav><ul>{"".join(toc)}</ul></nav>
<main>{"".join(body)}</main>
<div id="tip" role="tooltip"></div>
<script>{_JS}</script>
</body></html>
"""


def write_report(paths: Sequence[Path], out: Path, title: str | None = None) -> Path:
    """Find every xlgap result under ``paths`` and write one self-contained HTML page to
    ``out``; returns ``out``. Unreadable or unknown files become notes on the page."""
    artifacts, notes = discover(paths)
    page = render_report(artifacts, notes, title=title or _default_title(paths),
                         inputs=[str(p) for p in paths])
    return write_text_atomic(Path(out), page)


def _default_title(paths: Sequence[Path]) -> str:
    names = [Path(p).resolve().name or str(p) for p in paths]
    return "xlgap report: " + ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")


# ------------------------------------------------------------------------------------------
# inline style and script (written for this page; no library, no network)

_CSS = """
:root{--fg:#1b1f24;--muted:#5b6470;--line:#d8dde3;--bg:#fff;--soft:#f5f7f9;--acc:#1f77b4}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{padding:18px 28px 8px;border-bottom:1px solid var(--line)}
h1{margin:0 0 4px;font-size:22px}h2{font-size:19px;margin:28px 0 10px;
border-bottom:2px solid var(--line);padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
nav{padding:6px 28px;background:var(--soft);border-bottom:1px solid var(--line);font-size:13px}
nav ul{margin:0;padding-left:18px}nav>ul{columns:2;column-gap:40px}
main{padding:0 28px 40px;max-width:1500px}
.muted{color:var(--muted)}code{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;
background:var(--soft);padding:1px 4px;border-radius:3px;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:14px}
.card{border:1px solid var(--line);border-left:4px solid var(--acc);border-radius:6px;
padding:4px 14px 8px;background:#fff}.card ul{padding-left:18px;margin:6px 0}
.card li{margin:4px 0}
.verdict{font-weight:600;background:#eef5fb;border-left:4px solid var(--acc);padding:6px 10px;
margin:8px 0}
.note{background:var(--soft);border-left:4px solid #999;padding:6px 10px;margin:8px 0}
.warn{background:#fff6e5;border-left:4px solid #e69500;padding:6px 10px;margin:8px 0}
.artifact{border-top:1px dashed var(--line);padding-top:4px}
.tablewrap{overflow-x:auto;margin:8px 0}
table.data,table.heat{border-collapse:collapse;font-size:13px}
table.data caption,table.heat caption{text-align:left;color:var(--muted);padding:2px 0 4px}
table.data th,table.data td,table.heat th,table.heat td{border:1px solid var(--line);
padding:3px 8px;white-space:nowrap}
table.data th{background:var(--soft);position:sticky;top:0;white-space:normal;min-width:60px}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{background:#e8edf2}
th.asc::after{content:" \\25B2";font-size:10px}th.desc::after{content:" \\25BC";font-size:10px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.data td.wrap{white-space:normal;min-width:280px;max-width:640px}
table.data tbody tr:nth-child(even){background:#fafbfc}
.charts{display:flex;flex-wrap:wrap;gap:10px 28px;align-items:flex-start}
.block{max-width:100%}
figure.fig{margin:8px 0;max-width:100%}figure.fig figcaption{color:var(--muted);font-size:12px;
max-width:560px}
svg.chart{max-width:100%;height:auto;background:#fff;font-size:11px}
svg .grid{stroke:#e6e9ed}svg .axis{stroke:#6b7280}svg .tick{fill:#4b5563}
svg .alabel{fill:#374151;font-size:12px}svg .ctitle{font-size:13px;font-weight:600;
text-anchor:middle;fill:#111}
svg .band{opacity:.15}svg .pt{cursor:crosshair}svg .pt:hover{r:6}
svg .bar:hover{opacity:.75}svg .whisker{stroke:#111;stroke-width:1.2;fill:none}
svg .legend-item{cursor:pointer}svg .legend-item text{fill:#333}
svg .legend-item.off{opacity:.3}svg .series.off{display:none}
.gallery{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.gallery img{max-width:440px;max-height:400px;width:auto;height:auto;
border:1px solid var(--line)}
img.broken{outline:3px solid #d62728}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:6px 0}
dl.prov dt{color:var(--muted)}dl.prov dd{margin:0}
.cmd{margin:6px 0}pre{background:var(--soft);padding:8px;overflow-x:auto;font-size:12px;
max-height:320px}
details{margin:6px 0}summary{cursor:pointer;color:#234}
button.dl{margin:2px 6px 2px 0;font-size:12px;cursor:pointer}
#tip{position:fixed;pointer-events:none;background:#111;color:#fff;font-size:12px;
padding:4px 7px;border-radius:4px;display:none;z-index:10;max-width:420px}
@media print{nav,#tip,button.dl{display:none}}
"""

# Runs first, in <head>: records script errors so a test (or a reader) can see them.
_GUARD_JS = """window.xlgapErrors=[];window.addEventListener('error',function(e){
window.xlgapErrors.push(String(e.message||e));});
(function(){var c=console.error;console.error=function(){window.xlgapErrors.push(
Array.prototype.join.call(arguments,' '));return c.apply(console,arguments);};})();"""

# Sorting, tooltips, legend toggles, JSON downloads, and a self-check of the figures
# (its result lands on <html data-...> where a headless browser's DOM dump shows it).
_JS = """(function(){
function key(td){var s=td.getAttribute('data-sort');var t=s!==null?s:td.textContent.trim();
var n=parseFloat(t);return isNaN(n)||!/^[-+]?[0-9.]/.test(t)?{s:t.toLowerCase()}:{n:n};}
document.querySelectorAll('table.sortable').forEach(function(tb){
 tb.querySelectorAll('thead th').forEach(function(th,i){th.addEventListener('click',function(){
  var body=tb.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  var asc=!th.classList.contains('asc');
  tb.querySelectorAll('thead th').forEach(function(h){h.classList.remove('asc','desc');});
  th.classList.add(asc?'asc':'desc');
  rows.sort(function(a,b){var x=key(a.cells[i]||a),y=key(b.cells[i]||b),r;
   if(x.n!==undefined&&y.n!==undefined)r=x.n-y.n;else if(x.n!==undefined)r=-1;
   else if(y.n!==undefined)r=1;else r=x.s<y.s?-1:x.s>y.s?1:0;return asc?r:-r;});
  rows.forEach(function(r){body.appendChild(r);});});});});
var tip=document.getElementById('tip');
document.addEventListener('mouseover',function(e){var t=e.target.closest&&e.target.closest(
 '[data-tip]');if(!t){tip.style.display='none';return;}tip.textContent=t.getAttribute(
 'data-tip');tip.style.display='block';});
document.addEventListener('mousemove',function(e){if(tip.style.display==='block'){
 tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+12)+'px';}});
document.querySelectorAll('svg.chart .legend-item').forEach(function(li){
 li.addEventListener('click',function(){var svg=li.closest('svg'),i=li.getAttribute(
 'data-series');li.classList.toggle('off');svg.querySelectorAll('.series[data-series="'+i+
 '"]').forEach(function(g){g.classList.toggle('off');});});});
document.querySelectorAll('button.dl').forEach(function(b){b.addEventListener('click',
 function(){var s=b.nextElementSibling;var blob=new Blob([s.textContent],{type:
 'application/json'});var a=document.createElement('a');a.href=URL.createObjectURL(blob);
 a.download=b.getAttribute('data-name');document.body.appendChild(a);a.click();a.remove();});});
function check(){var imgs=document.querySelectorAll('img.png'),bad=[];
 imgs.forEach(function(im){if(!im.complete||!im.naturalWidth){im.classList.add('broken');
 bad.push(im.alt);}});
 var svgs=document.querySelectorAll('svg.chart');
 svgs.forEach(function(s){if(!s.querySelector('polyline,rect.bar,circle'))bad.push(
 s.getAttribute('aria-label'));});
 var d=document.documentElement.dataset;d.figures=imgs.length+svgs.length;
 d.brokenFigures=bad.join(' | ');d.errors=window.xlgapErrors.join(' | ');d.reportReady='1';}
if(document.readyState==='complete')check();else window.addEventListener('load',check);
})();"""

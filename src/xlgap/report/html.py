"""One self-contained HTML page of everything xlgap wrote under some directories.

:func:`write_report` finds the result files (:mod:`xlgap.report.discover`), hands each to
the section of its kind (:mod:`xlgap.report.sections`, chosen by the file's ``"format"``
tag) and assembles the page from ``templates/page.html.j2``:

* a verdict card per model (the gap, the diagnosis' own verdict, where the languages
  share representations, what helped, what steering and fine-tuning did);
* runs side by side, when there are two or more diagnosed runs;
* the steps of a study;
* per model, each result under one heading: its tables with CIs (sortable by a click on a
  column header; wide ones scroll in their box), its figures, each once (the PNG the
  command wrote, or the same matplotlib figure drawn from the JSON as SVG), and its
  provenance with the raw JSON to download.

Nothing is fetched: style, script and images are inline, so the file opens from disk on a
machine without network. Reading is tolerant: a file that is missing, unreadable or of an
unknown shape becomes a note on the page, never an exception. The report reads files
only; it imports no command, statistic or model code.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from xlgap import __version__
from xlgap.io import write_text_atomic
from xlgap.provenance import versions
from xlgap.report import discover as _discover
from xlgap.report.blocks import (
    Block,
    Cell,
    Note,
    Row,
    Table,
    cell,
    draw_figure,
    number_cell,
    pct_cell,
)
from xlgap.report.discover import FIGURES, Artifact, slug
from xlgap.report.format import mapping
from xlgap.report.plots.compare import draw_ensembling_curves
from xlgap.report.sections import (
    CardLine,
    SectionView,
    kinds,
    ordered,
    render,
    section_for,
)
from xlgap.report.sections.run import lang_label, run_summary

__all__ = ["Artifact", "discover", "render_report", "write_report"]


PathArg = str | os.PathLike[str]


def as_paths(paths: PathArg | Sequence[PathArg]) -> list[Path]:
    """One path or a list of them, as a list (a string is one path, never its characters)."""
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    return [Path(p) for p in paths]


def discover(paths: PathArg | Sequence[PathArg]) -> tuple[list[Artifact], list[str]]:
    """Every result under ``paths`` (one path or a list) with the kinds the registered
    sections read, and notes on what could not be read."""
    table, companions = kinds()
    return _discover.discover(as_paths(paths), table, companions)


@dataclass
class Card:
    title: str
    lines: list[CardLine] = field(default_factory=list)


@dataclass
class Group:
    """The results of one model, under one heading."""

    anchor: str
    title: str
    sections: list[SectionView] = field(default_factory=list)


@dataclass
class TocItem:
    anchor: str
    label: str
    children: list[TocItem] = field(default_factory=list)


def model_titles(artifacts: Sequence[Artifact]) -> dict[str, str]:
    """``name (model)`` where a study named a model, else the model as given."""
    titles = {a.model: a.model for a in artifacts}
    for a in artifacts:
        if a.model_name and a.model_name not in (a.model, slug(a.model)):
            titles[a.model] = f"{a.model_name} ({a.model})"
    return titles


def _by_model(artifacts: Sequence[Artifact]) -> dict[str, list[Artifact]]:
    models: dict[str, list[Artifact]] = {}
    for art in artifacts:
        if art.kind not in ("study", FIGURES):
            models.setdefault(art.model, []).append(art)
    return models


def _cards(artifacts: Sequence[Artifact]) -> list[Card]:
    titles = model_titles(artifacts)
    cards = []
    for model, arts in _by_model(artifacts).items():
        card = Card(titles[model])
        for art in sorted(arts, key=lambda a: section_for(a).order):
            try:
                line = section_for(art).card(art)
            except Exception as exc:  # never lose the page over one headline
                line = CardLine(art.kind, art.anchor, str(art.dir),
                                f"summary unavailable ({exc})")
            if line is not None:
                card.lines.append(line)
        cards.append(card)
    return cards


def _side_by_side(artifacts: Sequence[Artifact]) -> list[Block]:
    """Every diagnosed run in one table, their ensembling curves in one figure, and
    accuracy per language with a column per run."""
    runs = [(a, s) for a in artifacts if a.kind == "run" and (s := run_summary(a))]
    if len(runs) < 2:
        return []
    rows = [[Cell(art.model, href=art.anchor), Cell(art.label),
             Cell(str(mapping(art.get("run")).get("strategy") or "")),
             number_cell(s.get("n_items")), cell(s["source_accuracy"]),
             number_cell(s["target_accuracy"]), cell(s["transfer"]), cell(s["agreement"]),
             cell(s["chi2"]), pct_cell(s["drop"], 0), cell(s["pi"], 2),
             number_cell(s["pi_mismatch"], 2)] for art, s in runs]
    out: list[Block] = [Table(
        ["model", "data", "strategy", "items", "source accuracy", "mean target accuracy",
         "transfer", "agreement", "chi-square", "ensembling drop", "pi (model)",
         "pi (mismatch)"], rows, caption="Every diagnosed run (click a column to sort)")]
    curves = []
    for art, _ in runs:
        ens = mapping(mapping(mapping(art.get("diagnosis")).get("overall")).get("ensembling"))
        if isinstance(ens.get("chi2"), list):
            curves.append((f"{art.model} / {art.label}"[:60],
                           ens.get("k") or list(range(1, len(ens["chi2"]) + 1)), ens["chi2"]))
    langs: list[str] = []
    for art, _ in runs:
        langs += [x for x in mapping(mapping(art.get("diagnosis")).get("accuracy"))
                  if x not in langs]
    acc = Table(["language", *[f"{a.model} / {a.label}"[:50] for a, _ in runs]],
                [[Cell(lang_label(lang)),
                  *[cell(mapping(mapping(a.get("diagnosis")).get("accuracy")).get(lang))
                    for a, _ in runs]] for lang in langs],
                caption="Accuracy per language, runs side by side")
    row: list[Block] = []
    if curves:
        row.append(draw_figure("side-by-side ensembling", "Overall chi-square as answers are "
                               "pooled, one line per run",
                               lambda: draw_ensembling_curves(curves)))
    out.append(Row([*row, acc]))
    return out


def _versions() -> dict[str, str]:
    try:
        return {k: str(v) for k, v in versions().items() if v is not None}
    except Exception:  # the page must not depend on package metadata being readable
        return {"xlgap": __version__, "python": platform.python_version()}


def _asset(name: str) -> str:
    return (resources.files("xlgap.report") / "templates" / name).read_text(encoding="utf-8")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("xlgap.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _count_figures(views: Sequence[SectionView], side: Sequence[Block]) -> int:
    def count(blocks: Sequence[Any]) -> int:
        return sum(1 if b.tag == "figure" else count(getattr(b, "blocks", []))
                   for b in blocks)

    return sum(count(v.blocks) for v in views) + count(side)


def render_report(artifacts: Sequence[Artifact], notes: Sequence[str], *, title: str,
                  inputs: Sequence[str]) -> str:
    """The whole page as a string."""
    created = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    toc = [TocItem("verdicts", "Verdict per model")]
    try:
        side = _side_by_side(artifacts)
    except Exception as exc:
        side = [Note(f"runs side by side could not be shown ({exc})", "warn")]
    if side:
        toc.append(TocItem("side", "Side by side"))
    studies = [render(a) for a in artifacts if a.kind == "study"]
    if studies:
        toc.append(TocItem("study", "Study: steps, times, commands"))
    titles = model_titles(artifacts)
    groups = []
    for i, (model, arts) in enumerate(_by_model(artifacts).items()):
        group = Group(f"m{i}-{slug(model)}", titles[model],
                      [render(a) for a in ordered(arts)])
        groups.append(group)
        toc.append(TocItem(group.anchor, group.title, [
            TocItem(a.anchor, section_for(a).toc_label(a)) for a in ordered(arts)]))
    loose = [a for a in artifacts if a.kind == FIGURES]
    if loose:
        group = Group("figures", "Other figures", [render(a) for a in loose])
        groups.append(group)
        toc.append(TocItem(group.anchor, group.title))
    if notes:
        toc.append(TocItem("notes", "Notes"))
    views = [*studies, *(s for g in groups for s in g.sections)]
    page = _environment().get_template("page.html.j2").render(
        title=title, created=created, inputs=" ".join(inputs),
        versions=", ".join(f"{k} {v}" for k, v in _versions().items()),
        n_results=len(artifacts), n_figures=_count_figures(views, side), toc=toc,
        cards=_cards(artifacts), side=side, studies=studies, groups=groups, notes=list(notes),
        css=Markup(_asset("page.css")), js=Markup(_asset("page.js")),
        guard_js=Markup(_asset("guard.js")))
    return page


def write_report(paths: PathArg | Sequence[PathArg], out: PathArg,
                 title: str | None = None) -> Path:
    """Find every xlgap result under ``paths`` (one path or a list) and write one
    self-contained HTML page to ``out``; returns ``out``. Unreadable or unknown files become
    notes on the page."""
    paths = as_paths(paths)
    artifacts, notes = discover(paths)
    page = render_report(artifacts, notes, title=title or _default_title(paths),
                         inputs=[str(p) for p in paths])
    return write_text_atomic(Path(out), page)


def _default_title(paths: Sequence[Path]) -> str:
    names = [Path(p).resolve().name or str(p) for p in paths]
    return "xlgap report: " + ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")

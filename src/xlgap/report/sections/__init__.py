"""The report's sections: one :class:`Section` per kind of result, found by the file's
``"format"`` tag.

A section says which format tags it reads (``formats``; files of those tags in one
directory make one result), where it goes on the page (``order``), its one-line headline
for the verdict cards (``summary``), and what it shows (``body`` and ``figures``).

The sections are the registry :data:`SECTIONS` (:mod:`xlgap.registry`): a kind -> its
Section. Adding a kind of result to xlgap is one module here with a ``@register``-ed
class, listed in :data:`SECTIONS` below (imported when the report first asks); another
package adds one through the entry-point group ``xlgap.report_sections``
(``mykind = "package.module:MySection"``, a Section subclass). Discovery, the page and the
cards learn of it from :data:`SECTIONS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from xlgap.errors import ConfigError
from xlgap.registry import Registry
from xlgap.report.blocks import Block, Note, Provenance, Row, draw_figure, png_figure
from xlgap.report.discover import EXTRA, FIGURES, STEP_MARKER, Artifact, load_json
from xlgap.report.format import mapping

__all__ = [
    "SECTIONS",
    "CardLine",
    "FigureSpec",
    "Section",
    "SectionView",
    "downloads",
    "kinds",
    "n_boot_of",
    "register",
    "render",
    "section_for",
]

MAX_EMBED_JSON = 2_000_000  # raw JSON embedded for download up to this size


@dataclass
class FigureSpec:
    """A figure a section shows: the PNG a command writes for it (``png``, a file name),
    and how to draw it from the JSON when that PNG is not there."""

    png: str
    caption: str
    draw: Callable[[], Any] | None = None


@dataclass
class CardLine:
    """One line of a model's verdict card: ``label on <a>target</a>: text strong``."""

    label: str
    anchor: str
    target: str
    text: str
    strong: str = ""


@dataclass
class SectionView:
    """A rendered result: what the template shows under one heading."""

    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    kind: str = ""


class Section:
    """Base of every section. Subclasses set the class attributes and override
    :meth:`body`, :meth:`figures` and :meth:`summary` as they need."""

    kind: str = ""
    formats: tuple[str, ...] = ()
    companions: tuple[str, ...] = ()  # tags that do not make a result on their own
    order: int = 50
    title: str = ""
    card_label: str = ""
    command: str = ""  # the xlgap command that writes this kind of result
    config_at_top: bool = False  # the file records model, data and config at its top

    def heading(self, art: Artifact) -> str:
        on = f" on {art.label}" if art.data else ""
        return f"{self.title}: {art.model}{on}"

    def toc_label(self, art: Artifact) -> str:
        """The entry in the table of contents."""
        return f"{(self.title or self.kind).lower()}: {art.label}"

    def summary(self, art: Artifact) -> str | None:
        """The headline: one sentence, or None when there is nothing to say."""
        return None

    def card(self, art: Artifact) -> CardLine | None:
        text = self.summary(art)
        if not text:
            return None
        return CardLine(self.card_label or self.kind, art.anchor, art.label, text)

    def body(self, art: Artifact) -> list[Block]:
        return []

    def figures(self, art: Artifact) -> list[FigureSpec]:
        return []

    def command_name(self, art: Artifact, config: Mapping[str, Any]) -> str:
        return self.command or self.kind

    def view(self, art: Artifact) -> SectionView:
        blocks = [Note(f"{name}: {loaded.error}", "warn") for name, loaded in art.results()
                  if loaded.error]
        blocks += self.body(art)
        figures = figure_blocks(art, self.figures(art))
        if figures:
            blocks.append(Row(figures))
        blocks.append(provenance(art, self))
        return SectionView(art.anchor, self.heading(art), blocks, self.kind)


def _instance(obj: Any) -> Section:
    """A registered Section subclass -> its instance (the registry holds instances)."""
    section = obj() if isinstance(obj, type) and issubclass(obj, Section) else obj
    if not isinstance(section, Section):
        raise ConfigError(f"a report section must be a Section subclass, got {obj!r}")
    return section


#: kind of result -> its Section. xlgap's own are registered by the modules named here
#: (imported when the report first asks for the sections).
SECTIONS: Registry[Section] = Registry("report section", "xlgap.report_sections",
                                       convert=_instance)
for _kind, _module in (("run", "run"), ("interventions", "interventions"),
                       ("steering", "steering"), ("finetune", "finetune"),
                       ("inside", "inside"), ("by_source", "by_source"), ("study", "study"),
                       (EXTRA, "extra"), (FIGURES, "extra")):
    SECTIONS.register(_kind, f"xlgap.report.sections.{_module}")


def register(cls: type[Section]) -> type[Section]:
    """Class decorator: add a section to :data:`SECTIONS` under its ``kind``."""
    SECTIONS.register(cls.kind, cls)
    return cls


def kinds() -> tuple[dict[str, str], set[str]]:
    """Format tag -> kind of result, and the companion tags, for discovery."""
    sections = list(SECTIONS.values())
    table = {tag: s.kind for s in sections for tag in s.formats}
    return table, {tag for s in sections for tag in s.companions}


def section_for(art: Artifact) -> Section:
    return SECTIONS.get(art.kind, None) or SECTIONS[EXTRA]


def ordered(artifacts: Sequence[Artifact]) -> list[Artifact]:
    """Results in page order: by data set (results that name none last), then by
    section order."""
    return sorted(artifacts, key=lambda a: (not a.data, a.data, section_for(a).order,
                                            a.label))


def render(art: Artifact) -> SectionView:
    """One result as a section; a failure becomes a note so the rest of the page shows."""
    try:
        return section_for(art).view(art)
    except Exception as exc:
        return SectionView(art.anchor, str(art.dir), [Note(
            f"this result could not be shown ({exc.__class__.__name__}: {exc}); its files "
            "may be from another xlgap version or incomplete", "warn")], art.kind)


def n_boot_of(data: Any) -> Any:
    """The number of bootstrap resamples a result used (at its top, or in its config), so
    a p-value at the resolution floor prints as ``< floor``."""
    data = mapping(data)
    for holder in (data, mapping(data.get("config")),
                   mapping(mapping(data.get("provenance")).get("config"))):
        if holder.get("n_boot") is not None:
            return holder["n_boot"]
    return None


# ------------------------------------------------------------------------------------------
# figures: each once, the command's PNG where it wrote one, else drawn from the JSON


def figure_blocks(art: Artifact, specs: Sequence[FigureSpec]) -> list[Block]:
    by_name: dict[str, Path] = {}
    for p in art.pngs:
        by_name.setdefault(p.name, p)
    used: set[Path] = set()
    out: list[Block] = []
    for spec in specs:
        path = by_name.get(spec.png)
        if path is not None and path not in used:
            used.add(path)
            out.append(png_figure(path, f"{spec.caption} ({_relative(path, art.dir)})"))
        elif spec.draw is not None:
            out.append(draw_figure(spec.png, spec.caption, spec.draw))
    out += [png_figure(p, _relative(p, art.dir)) for p in art.pngs if p not in used]
    return out


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return path.name


# ------------------------------------------------------------------------------------------
# provenance: what made a result, read from its files


def _blocks(art: Artifact, section: Section) -> list[Mapping[str, Any]]:
    """Where a result records what made it, most specific first: the step marker of
    ``xlgap run``, the run or comparison itself, the ``provenance`` block of each file."""
    blocks: list[Mapping[str, Any]] = []
    for block in (art.json(STEP_MARKER), art.get("run") or art.get("interventions")):
        if isinstance(block, Mapping):
            blocks.append(block)
    for _, loaded in art.results():
        data = loaded.data if loaded.error is None else None
        if not isinstance(data, Mapping):
            continue
        if isinstance(data.get("provenance"), Mapping):
            blocks.append(data["provenance"])
        if section.config_at_top:
            blocks.append(data)
    return blocks


def _first(blocks: Sequence[Mapping[str, Any]], key: str) -> Any:
    for block in blocks:
        value = block.get(key)
        if value not in (None, "", [], {}):
            return value
    return None


def describe_config(name: str, config: Mapping[str, Any]) -> str:
    """``xlgap NAME --opt value ...`` from a recorded config, every option as recorded
    (this module cannot know which were defaults: it reads files only)."""
    words = ["xlgap", name]
    for key, value in config.items():
        if key == "progress" or value is None or value == "" or isinstance(value, Mapping):
            continue
        flag = "--" + str(key).replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + str(key).replace("_", "-"))
        elif isinstance(value, list):
            words += [flag, ",".join(map(str, value))]
        else:
            text = str(value)
            words += [flag, text if text and all(c.isalnum() or c in "-_.,:/=+@" for c in text)
                      else "'" + text.replace("'", "'\\''") + "'"]
    return " ".join(words)


def command_for(art: Artifact, section: Section | None = None) -> tuple[str | None, str]:
    """The command line that made a result and a note on where it comes from: as recorded
    (the step marker of ``xlgap run``, or ``provenance.command``), else described from
    the recorded config, else the command of the run it belongs to."""
    section = section or section_for(art)
    blocks = _blocks(art, section)
    recorded = _first(blocks, "command")
    if isinstance(recorded, str):
        return recorded, ""
    sim = mapping(mapping(art.get("run")).get("options")).get("simulator")
    if isinstance(sim, Mapping):
        keys = ("pi", "tau", "eta", "questions", "samples", "seed")
        args = " ".join(f"--{k} {sim[k]}" for k in keys if k in sim)
        return f"xlgap simulate {args} --out {art.dir}", ""
    config = _first(blocks, "config")
    if isinstance(config, Mapping):
        return (describe_config(section.command_name(art, config), config),
                "described from the options the result recorded, defaults included")
    if art.owner is not None and art.owner is not art:
        command, _ = command_for(art.owner)
        if command:
            return f"{command}   (this result is part of that run)", ""
    return None, ""


def downloads(art: Artifact) -> Iterator[tuple[str, Markup | None, str]]:
    """Each result file as JSON to embed (``None`` when too large), with its size."""
    for name, loaded in art.results():
        if loaded.error is not None:
            continue
        text = json.dumps(loaded.data, ensure_ascii=False)
        if len(text) > MAX_EMBED_JSON:
            yield name, None, f"{len(text) / 1e6:.1f} MB"
            continue
        # Inside <script> nothing is unescaped, so the JSON goes in as it is; "<" written
        # as \u003c keeps a "</script>" in a string from ending the element.
        yield name, Markup(text.replace("<", "\\u003c")), ""


def provenance(art: Artifact, section: Section) -> Provenance:
    """Model, fingerprint, data, versions, options and the command, where recorded."""
    blocks = _blocks(art, section)
    meta = mapping(art.get("run") or art.get("interventions"))
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
        index = mapping(load_json(art.dir / "hidden" / "index.json").data)
        for key in ("fingerprint", "pooling", "dtype"):
            if index.get(key) and key not in dict(rows):
                rows.append((key, str(index[key])))
    rows.append(("directory", str(art.dir)))
    command, how = command_for(art, section)
    configs = []
    for key in ("options", "config"):
        value = meta.get(key) or (_first(blocks, key) if key == "config" else None)
        if isinstance(value, Mapping) and value:
            configs.append((key, json.dumps(value, indent=1, ensure_ascii=False)))
    return Provenance(rows, command, how, configs, list(downloads(art)))


__all__ += ["FIGURES"]

"""Results of a kind no section knows (a ``"format"`` tag from a newer xlgap, or another
tool), and figures no result claims. An unknown result shows its own summary line if it
has one, the first comparison found in it (named entries sharing numeric fields), all its
values, and its PNGs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.report.blocks import Block, Cell, Details, Para, Row, Table, cell, png_figure
from xlgap.report.discover import EXTRA, FIGURES, Artifact
from xlgap.report.format import fmt_estimate, fmt_number, fmt_p, mapping, points, value
from xlgap.report.sections import FigureSpec, Section, SectionView, register

__all__ = ["ExtraSection", "FiguresSection", "ShapedSection", "change", "find_comparison",
           "flatten", "generic_summary"]


def find_comparison(data: Any, depth: int = 0, title: str = ""
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
                if value(x) is not None and key not in metrics:
                    metrics.append(key)
        shared = [m for m in metrics
                  if sum(value(v.get(m)) is not None for v in entries.values()) >= 2]
        if shared:
            return title, [str(k) for k in entries], shared[:12], list(entries.values())
    for key, v in data.items():
        found = find_comparison(v, depth + 1, str(key)) if isinstance(v, Mapping) else None
        if found is not None:
            return found
    return None


def flatten(data: Any, prefix: str = "", out: list[tuple[str, Any]] | None = None,
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
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out, limit)
    elif isinstance(data, list):
        numbers = [x for x in data if value(x) is not None and not isinstance(x, Mapping)]
        if data and len(numbers) == len(data):
            text = ", ".join(fmt_number(x) for x in data) if len(data) <= 12 else \
                f"{len(data)} numbers, {fmt_number(min(numbers))} to {fmt_number(max(numbers))}"
            out.append((prefix, text))
        else:
            for i, v in enumerate(data[:50]):
                flatten(v, f"{prefix}[{i}]", out, limit)
    else:
        out.append((prefix or "value", data))
    return out


def change(before: Any, after: Any, n_boot: Any = None) -> str:
    """``0.41 [0.35, 0.47] -> 0.52 [0.46, 0.58] (+11.0 points, p = 0.004)``."""
    b, a = value(before), value(after)
    if a is None:
        return "-"
    text = f"{fmt_estimate(before, 2)} -> {fmt_estimate(after, 2)}" if b is not None else \
        fmt_estimate(after, 2)
    bits = [points(a - b)] if b is not None else []
    p = mapping(mapping(after).get("vs_base")).get("p")
    if value(p) is not None:
        shown = fmt_p(p, n_boot)
        bits.append(f"p {shown}" if shown.startswith("<") else f"p = {shown}")
    return f"{text} ({', '.join(bits)})" if bits else text


def generic_summary(art: Artifact) -> str | None:
    """A result's own summary text, else the best entry of a comparison it holds."""
    for _, loaded in art.results():
        data = loaded.data
        if not isinstance(data, Mapping):
            continue
        for key in ("verdict", "summary", "headline"):
            if isinstance(data.get(key), str) and data[key].strip():
                return data[key].strip()
        found = find_comparison(data)
        if found is not None:
            title, names, metrics, rows = found
            key = next((k for k in ("transfer", "overall_success", "accuracy") if k in metrics),
                       metrics[0])
            scored = [(n, v) for n, r in zip(names, rows, strict=True)
                      if (v := value(r.get(key))) is not None]
            if scored:
                n, v = max(scored, key=lambda nv: nv[1])
                return f"highest {key}: {n} ({v:.3f}) among {len(scored)} {title or 'entries'}"
    return None


def generic_body(art: Artifact) -> list[Block]:
    """The comparison table found in a result, and all its values (folded)."""
    out: list[Block] = []
    for name, loaded in art.results():
        data = loaded.data
        if loaded.error:
            continue
        found = find_comparison(data)
        if found is not None:
            title, names, metrics, rows = found
            out.append(Table([title or "entry", *metrics],
                             [[Cell(n), *(cell(r.get(m)) for m in metrics)]
                              for n, r in zip(names, rows, strict=True)],
                             caption=f"{title or name}: entries compared"))
        out += all_values(name, data)
    return out


def all_values(name: str, data: Any) -> list[Block]:
    flat = [(k, fmt_estimate(v) if isinstance(v, Mapping) else
             (fmt_number(v) if isinstance(v, float) else str(v))) for k, v in flatten(data)]
    if not flat:
        return []
    return [Details(f"all values in {name} ({len(flat)})",
                    [Table(["key", "value"], [[Cell(k), Cell(v)] for k, v in flat])])]


@register
class ExtraSection(Section):
    kind = EXTRA
    order = 6
    config_at_top = True

    def _name(self, art: Artifact) -> str:
        return next((n for n, _ in art.results()), "result")

    def heading(self, art: Artifact) -> str:
        name = self._name(art)
        title = name[:-5] if name.endswith(".json") else name
        on = f" on {art.label}" if art.data else ""
        return f"{title}: {art.model}{on}"

    def toc_label(self, art: Artifact) -> str:
        name = self._name(art)
        return f"{name[:-5] if name.endswith('.json') else name}: {art.label}"

    def card(self, art: Artifact) -> Any:
        line = super().card(art)
        if line is not None:
            name = self._name(art)
            line.label = name[:-5] if name.endswith(".json") else name
        return line

    def command_name(self, art: Artifact, config: Mapping[str, Any]) -> str:
        return next(iter(art.formats), "result").replace("_", "-")

    def summary(self, art: Artifact) -> str | None:
        return generic_summary(art)

    def body(self, art: Artifact) -> list[Block]:
        out: list[Block] = []
        for _, loaded in art.results():
            fmt = mapping(loaded.data).get("format")
            if fmt:
                out.append(Para(str(fmt)))
        summary = self.summary(art)
        if summary:
            out.append(Para(summary, "verdict"))
        return out + generic_body(art)


@register
class FiguresSection(Section):
    """PNGs that no result claims, shown as they are."""

    kind = FIGURES
    order = 7

    def heading(self, art: Artifact) -> str:
        return f"Other figures in {art.dir}"

    def view(self, art: Artifact) -> SectionView:
        figures = [png_figure(p, p.name) for p in art.pngs]
        return SectionView(art.anchor, self.heading(art), [Row(figures)], self.kind)


class ShapedSection(ExtraSection):
    """A result kind with a page of its own (steering, fine-tuning): its tables when the
    file has the shape the kind defines, else the generic view of :class:`ExtraSection`."""

    def heading(self, art: Artifact) -> str:
        return Section.heading(self, art)

    def card(self, art: Artifact) -> Any:
        return Section.card(self, art)

    def toc_label(self, art: Artifact) -> str:
        return Section.toc_label(self, art)

    def command_name(self, art: Artifact, config: Mapping[str, Any]) -> str:
        return self.command

    def describe(self, data: Any) -> str | None:
        """The one-sentence summary of ``data`` (None: the generic one)."""
        raise NotImplementedError

    def tables(self, data: Any) -> list[Block]:
        """The kind's tables ([]: not the shape this page knows)."""
        raise NotImplementedError

    def specs(self, data: Mapping[str, Any]) -> list[FigureSpec]:
        """The kind's figures, drawn from ``data`` when the command wrote no PNG."""
        raise NotImplementedError

    def summary(self, art: Artifact) -> str | None:
        return self.describe(art.get(self.kind)) or super().summary(art)

    def body(self, art: Artifact) -> list[Block]:
        data = art.get(self.kind)
        if data is None:
            return []
        tables = self.tables(data)
        if not tables:  # not the shape this page knows: the generic view
            return super().body(art)
        summary = self.summary(art)
        return [*([Para(summary, "verdict")] if summary else []), *tables,
                *all_values(art.formats[self.kind], data)]

    def figures(self, art: Artifact) -> list[FigureSpec]:
        data = art.get(self.kind)
        if not isinstance(data, Mapping) or not self.tables(data):
            return []
        return self.specs(data)

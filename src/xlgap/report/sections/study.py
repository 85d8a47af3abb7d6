"""A study (``study.json`` of ``xlgap run``): every step with its status, time, command
and error. It is shown once, above the results, not under a model."""

from __future__ import annotations

from collections.abc import Mapping

from xlgap.progress import format_duration
from xlgap.report.blocks import Block, Cell, Note, Para, Provenance, Table
from xlgap.report.discover import Artifact
from xlgap.report.format import finite, mapping
from xlgap.report.sections import Section, SectionView, downloads, register

__all__ = ["StudySection"]


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


@register
class StudySection(Section):
    kind = "study"
    formats = ("study",)
    order = 0
    title = "Study"

    def heading(self, art: Artifact) -> str:
        study = mapping(art.get("study"))
        if not study:
            return f"Study in {art.dir}"
        return f"Study: {study.get('title') or art.dir.name}"

    def body(self, art: Artifact) -> list[Block]:
        study = art.get("study")
        if not isinstance(study, Mapping):
            loaded = art.loaded("study")
            return [] if loaded is not None and loaded.error else \
                [Note("study.json: not a JSON object", "warn")]
        bits = [f"from {study['config_file']}" if study.get("config_file") else "",
                f"started {study['started']}" if study.get("started") else "",
                f"finished {study['finished']}" if study.get("finished") else "",
                f"status {study['status']}" if study.get("status") else ""]
        out: list[Block] = [Para("; ".join(b for b in bits if b))]
        rows = []
        for s in study.get("steps") or []:
            if isinstance(s, Mapping):
                secs = finite(s.get("seconds"))
                rows.append([Cell(str(s.get("model", ""))), Cell(str(s.get("data", ""))),
                             Cell(str(s.get("analysis", ""))), Cell(str(s.get("status", ""))),
                             Cell(_duration(secs), secs, num=True),
                             Cell(str(s.get("command", "")), code=True),
                             Cell(str(s.get("error") or s.get("note") or ""))])
        out.append(Table(["model", "data", "analysis", "status", "time", "command", "note"],
                         rows, caption="Steps of the study"))
        versions = mapping(study.get("versions"))
        if versions:
            text = ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
            out.append(Para(f"versions: {text}"))
        return out

    def view(self, art: Artifact) -> SectionView:
        blocks = [Note(f"{name}: {loaded.error}", "warn") for name, loaded in art.results()
                  if loaded.error]
        blocks += self.body(art)
        files = list(downloads(art))
        if files:
            blocks.append(Provenance([], downloads=files))
        return SectionView(art.anchor, self.heading(art), blocks, self.kind)

"""Finding xlgap results on disk: which files a directory holds, what kind each is, and
which model and data set made it.

A result file says what it is with a top-level ``"format"`` tag (``"run"``,
``"diagnosis"``, ``"interventions"``, ``"ilo"``... ; older files wrote
``"xlgap-run/1"``, read as ``"run"``). Files written before the tag existed are known by
their name (:data:`FILE_FORMATS`). The files of one kind in one directory make one
:class:`Artifact` (a run is ``run.json`` with its ``diagnosis.json`` and ``truth.json``;
the four representation analyses of one directory show together). Which kind a tag
belongs to is the caller's table (the report's section registry), so adding a kind of
result needs no edit here.

Reading is tolerant: a file that is missing, unreadable or not JSON is kept with its
error, for the page to show as a note.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FILE_FORMATS",
    "STEP_MARKER",
    "Artifact",
    "Loaded",
    "data_label",
    "discover",
    "format_tag",
    "load_json",
    "slug",
]

STEP_MARKER = ".xlgap-step.json"  # written by ``xlgap run`` into each step's directory
# Result files written before every file carried its "format" tag, by name.
FILE_FORMATS = {"run.json": "run", "diagnosis.json": "diagnosis", "truth.json": "truth",
                "interventions.json": "interventions", "ilo.json": "ilo",
                "similarity.json": "similarity", "logit_lens.json": "logit_lens",
                "consistency.json": "consistency", "steering.json": "steering",
                "finetune.json": "finetune", "study.json": "study"}
EXTRA = "extra"  # the kind of a tagged result no section knows
FIGURES = "figures"  # the kind of PNGs no result claims
SKIP_DIRS = {"hidden", "__pycache__", ".git", "node_modules", ".venv"}
MAX_DIRS = 5000  # a walk that meets more directories than this is cut short (with a note)
MAX_DEPTH = 8
MAX_JSON_BYTES = 20_000_000  # larger result files are not parsed


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


def format_tag(loaded: Loaded) -> str | None:
    """The kind a file declares: ``"run"`` from ``"format": "run"`` or from the older
    ``"xlgap-run/1"``; None when the file declares none."""
    data = loaded.data
    tag = data.get("format") if isinstance(data, Mapping) else None
    if not isinstance(tag, str) or not tag.strip():
        return None
    tag = tag.strip()
    if tag.startswith("xlgap-"):
        tag = tag[len("xlgap-"):]
    return tag.split("/", 1)[0].replace("-", "_") or None


@dataclass
class Artifact:
    """One result found on disk: its kind (a section of the report), its directory, its
    files (by name) and their format tags, the PNGs that belong to it, and who made it."""

    kind: str
    dir: Path
    files: dict[str, Loaded] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)  # format tag -> file name
    pngs: list[Path] = field(default_factory=list)
    model: str = ""
    data: str = ""
    anchor: str = ""
    owner: Artifact | None = None  # the run a result belongs to (the demo's inside/)
    model_name: str = ""  # the study's name for the model (``[[models]] name``), if any
    label: str = ""  # what the page calls it: the data set, and the directory if needed

    def json(self, name: str) -> Any:
        """The parsed content of file ``name`` if it was read, else None."""
        got = self.files.get(name)
        return got.data if got is not None and got.error is None else None

    def get(self, tag: str) -> Any:
        """The parsed content of the file of format ``tag``, else None."""
        name = self.formats.get(tag)
        return self.json(name) if name else None

    def loaded(self, tag: str) -> Loaded | None:
        name = self.formats.get(tag)
        return self.files.get(name) if name else None

    def results(self) -> list[tuple[str, Loaded]]:
        """``(name, loaded)`` of its result files (the step marker left out)."""
        return [(n, f) for n, f in self.files.items() if n != STEP_MARKER]


def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-").lower() or "x"


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


def _artifacts_in(d: Path, names: set[str], kinds: Mapping[str, str],
                  companions: Collection[str]) -> list[Artifact]:
    """The results one directory holds (a directory may hold several)."""
    groups: dict[str, Artifact] = {}
    extras: list[Artifact] = []
    # Files of the names a command writes first, so that they hold their kind in the
    # directory and a second file of a kind (``diagnosis-layer9.json``) is the one shown
    # on its own.
    for name in sorted(names, key=lambda n: (n not in FILE_FORMATS, n)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        loaded = load_json(d / name)
        declared = format_tag(loaded)
        tag = declared or FILE_FORMATS.get(name)
        if tag is None:
            continue  # a JSON file that is not an xlgap result
        kind = kinds.get(tag, EXTRA)
        if kind == EXTRA and declared is None:
            continue
        art = groups.get(kind) if kind != EXTRA else None
        if art is not None and tag in art.formats:
            # a second file of one kind in one directory: shown on its own, as it is
            art, kind = None, EXTRA
        if art is None:
            art = Artifact(kind, d)
            if kind == EXTRA:
                extras.append(art)
            else:
                groups[kind] = art
        art.files[name] = loaded
        art.formats[tag] = name
    # A companion file (truth.json) does not make a result on its own.
    here = [a for a in groups.values() if set(a.formats) - set(companions)] + extras
    if STEP_MARKER in names:
        marker = load_json(d / STEP_MARKER)
        for art in here:
            art.files[STEP_MARKER] = marker
    return here


def _claim_pngs(artifacts: list[Artifact], d: Path, claimed: set[Path]) -> None:
    """Give each result of directory ``d`` the PNGs named after its files
    (``ilo.json`` -> ``ilo*.png``); a run takes ``plots/`` and what is left in ``d``."""
    def take(art: Artifact, paths: list[Path]) -> None:
        for p in paths:
            key = p.resolve()
            if key not in claimed:
                claimed.add(key)
                art.pngs.append(p)

    for art in artifacts:
        if art.kind != "run":
            for name in art.files:
                if name != STEP_MARKER:
                    take(art, _pngs(d, name[:-5]))
    for art in artifacts:
        if art.kind == "run":
            take(art, _pngs(d / "plots") + _pngs(d))


def discover(paths: Sequence[str | os.PathLike[str]], kinds: Mapping[str, str],
             companions: Collection[str] = ()) -> tuple[list[Artifact], list[str]]:
    """Every result under ``paths``, in walk order, and notes on what could not be read.

    ``kinds`` maps a format tag to the kind of result it belongs to (files whose tags map
    to one kind, in one directory, make one result); a tagged file of a tag not in it is
    kind ``"extra"``. ``companions`` are tags that do not make a result on their own."""
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
    claimed: set[Path] = set()
    for d in dirs:
        try:
            names = {c.name for c in d.iterdir() if c.is_file()}
        except OSError as exc:
            notes.append(f"{d}: cannot list it ({exc.strerror or exc})")
            continue
        here = _artifacts_in(d, names, kinds, companions)
        _claim_pngs(here, d, claimed)
        artifacts.extend(here)
    # A strategy's run directory is shown within its comparison, unless it was diagnosed.
    strategy_dirs: set[Path] = set()
    for art in artifacts:
        strategies = _m(art.get("interventions")).get("strategies")
        if isinstance(strategies, Mapping):
            strategy_dirs.update((art.dir / str(s)).resolve() for s in strategies)
    artifacts = [a for a in artifacts if not (a.kind == "run" and a.dir.resolve() in
                                              strategy_dirs and "diagnosis" not in a.formats)]
    for d in dirs:
        left = [p for p in _pngs(d) if p.resolve() not in claimed]
        if left:
            artifacts.append(Artifact(FIGURES, d, pngs=left))
            claimed.update(p.resolve() for p in left)
    _attribute(artifacts)
    _label(artifacts)
    for i, art in enumerate(artifacts):
        art.anchor = f"a{i}-{slug(art.kind)}"
    return artifacts, notes


def _m(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _attribute(artifacts: list[Artifact]) -> None:
    """Give every result the model and data set that made it.

    Runs and comparisons record them; a representation directory may not, so it takes
    them from the step marker of ``xlgap run``, then from the run directory it lies in
    (the demo writes ``DEMO/inside``), then from the model fingerprint of its hidden
    states, matched against the runs found, then from any of its files that records
    them (``steering.json``)."""
    by_dir: dict[Path, Artifact] = {}
    by_fingerprint: dict[str, Artifact] = {}
    for art in artifacts:
        meta = _m(art.get("run") or art.get("interventions"))
        art.model = str(meta.get("model") or "")
        art.data = str(meta.get("data") or "")
        if art.kind == "run" and meta.get("fingerprint"):
            by_fingerprint.setdefault(str(meta["fingerprint"]), art)
        if art.kind == "run":
            by_dir[art.dir.resolve()] = art
    for art in artifacts:
        marker = _m(art.json(STEP_MARKER))
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
        fp = _m(index.data).get("fingerprint")
        if fp and str(fp) in by_fingerprint:
            owner = by_fingerprint[str(fp)]
            art.model, art.data = owner.model, art.data or owner.data
        for _, loaded in art.results():
            data = _m(loaded.data)
            if not art.model and data.get("model"):
                art.model = str(data["model"])
                art.data = art.data or str(data.get("data") or "")
    for art in artifacts:
        art.model = art.model or "unknown model"
        art.data = data_label(art.data)


def _label(artifacts: list[Artifact]) -> None:
    """Name each result by its data set, adding its directory where one model has
    several results of one kind on one data set (runs with different options)."""
    seen: dict[tuple[str, str, str], int] = {}
    for art in artifacts:
        key = (art.model, art.kind, art.data)
        seen[key] = seen.get(key, 0) + 1
    for art in artifacts:
        base = art.data or art.dir.name
        several = seen[(art.model, art.kind, art.data)] > 1
        art.label = f"{base} ({art.dir.name})" if several and art.data else base


def data_label(spec: str) -> str:
    """A short name for a data set: ``builtin``, or the file or directory name."""
    spec = spec.strip()
    if not spec or ("/" not in spec and os.sep not in spec):
        return spec
    p = Path(spec)
    if p.parent.name == "builtin" and p.parent.parent.name == "data":
        return "builtin"  # the shipped demo set, recorded by its installed path
    return p.name or spec

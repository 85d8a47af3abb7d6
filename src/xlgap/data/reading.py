"""What every format loader shares: drafts of items, the two error policies, and reading
language-named files.

Every loader returns a :class:`ParallelDataset`. Two kinds of problems are told apart:

* **Structural** problems make the whole source unusable and always raise
  :class:`DataError` (or :class:`LanguageError` for a bad language code): an unreadable or
  non-UTF-8 file, invalid JSON, a JSON item that does not follow the schema, files of
  different lengths, duplicate ids or languages.
* **Line** and **item** problems concern one line or one item in otherwise good data: a
  JSONL line that is not valid JSON or breaks the schema, a duplicate id, a TSV row with the
  wrong number of fields, a gold answer that is not among the candidates, candidate counts
  or gold positions that differ between languages, repeated candidates.
  ``on_error="fail"`` (the default) raises a DataError (or LanguageError) naming file and
  line; ``on_error="skip"`` leaves the line or item out, in every language.

A **missing translation** (an empty line in a TSV or TXT file, a JSONL item without one of
the set's languages) follows ``on_missing``: ``"fail"`` raises, ``"skip"`` drops the item
(recorded in ``dataset.dropped``), ``"keep"`` keeps it without that language
(``item.has(lang)`` is False).

Whatever is left out is listed in ``dataset.problems`` (located messages, in file order) and,
for items with an id, in ``dataset.dropped`` (id -> reason). Files in a directory whose names
are not shaped like language codes (README.md, LICENSE, notes.txt) are not data; those with
the data suffix are mentioned in ``dataset.problems``. File names and JSONL keys may be
FLORES-200 codes (``eng_Latn``); they are read as BCP 47 tags (``en``), and
``dataset.original_codes`` keeps the names as written.
"""


from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xlgap.data.items import Item, LangEntry, ParallelDataset
from xlgap.data.languages import language_name, looks_like_code, validate_language
from xlgap.errors import ConfigError, DataError, XlgapError

ON_MISSING = ("fail", "skip", "keep")
ON_ERROR = ("fail", "skip")
_SKIP_LINE_HINT = "(on_error='skip' skips such lines)"

@dataclass
class Draft:
    """One item while it is being read: what was found, what is missing, what is wrong."""

    id: str
    entries: dict[str, LangEntry] = field(default_factory=dict)
    locs: dict[str, str] = field(default_factory=dict)  # language -> "file line N" for messages
    missing: list[tuple[str, str]] = field(default_factory=list)  # (language, location)
    error: str | None = None  # the first item problem found, already located
    meta: dict[str, str] = field(default_factory=dict)
    source: str = ""  # the item's own source language (Item.source), "" when not given
    # A line that could not be read as an item at all (bad JSON, schema, duplicate id). It
    # is kept in order with the others so that "fail" reports the first problem in the file.
    broken: XlgapError | None = None

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message


def check_policy(value: str, allowed: Sequence[str], option: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{option} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _consistency_problem(draft: Draft) -> str | None:
    """Candidate j must be the same entity in every language, so the languages of one item
    must agree on the number of candidates and on which one is gold, and on whether the
    options are lettered (a letter must name the same option everywhere)."""
    have = {lang: e for lang, e in draft.entries.items() if e.candidates}
    if not have or len(draft.entries) < 2:
        return None
    if len(have) != len(draft.entries):
        without = [draft.locs[lang] for lang in draft.entries if lang not in have]
        return (f"item {draft.id}: some languages have candidates and some do not "
                f"(none in {', '.join(without)})")
    sizes = {lang: len(e.candidates) for lang, e in have.items()}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{draft.locs[lang]}: {n}" for lang, n in sizes.items())
        return f"item {draft.id}: candidate counts differ between languages ({detail})"
    golds = {lang: e.gold for lang, e in have.items()}
    if len(set(golds.values())) > 1:
        detail = ", ".join(f"{draft.locs[lang]}: candidate {g}" for lang, g in golds.items())
        return (f"item {draft.id}: the gold answer is a different candidate in different "
                f"languages ({detail}; counting from 0)")
    formats = {lang: e.format for lang, e in have.items()}
    if len(set(formats.values())) > 1:
        detail = ", ".join(f"{draft.locs[lang]}: {f}" for lang, f in formats.items())
        return (f"item {draft.id}: 'format' differs between languages ({detail}); lettered "
                "options must be lettered in every language")
    return None


def assemble(name: str, languages: list[str], drafts: list[Draft], source: str,
              on_missing: str, on_error: str, *, original_codes: dict[str, str],
              problems: list[str] | None = None) -> ParallelDataset:
    """Apply the on_error / on_missing policies and build the data set. ``problems`` holds
    what was already set aside before the items (ignored files)."""
    items: list[Item] = []
    dropped: dict[str, str] = {}
    problems = list(problems or [])
    for draft in drafts:
        if draft.broken is not None:
            if on_error == "fail":
                # Same class (DataError or LanguageError), with the way out added.
                raise type(draft.broken)(f"{draft.broken} {_SKIP_LINE_HINT}") from None
            problems.append(str(draft.broken))
            continue
        problem = draft.error or _consistency_problem(draft)
        if problem is not None:
            if on_error == "fail":
                raise DataError(f"{problem} (on_error='skip' drops such items)")
            dropped[draft.id] = problem
            problems.append(problem)
            continue
        if draft.missing:
            lang, loc = draft.missing[0]
            message = (f"{loc}: item {draft.id} has no {lang} ({language_name(lang)}) "
                       "translation")
            if on_missing == "fail":
                raise DataError(f"{message} (on_missing='skip' drops such items, "
                                "'keep' keeps them without that language)")
            if on_missing == "skip" or not draft.entries:
                dropped[draft.id] = message
                problems.append(message)
                continue
        items.append(Item(draft.id, draft.entries, draft.meta, draft.source))
    if not items:
        why = f"; all {len(drafts)} were left out, e.g. {problems[-1]}" if drafts else ""
        raise DataError(f"{source}: no usable items{why}")
    codes = {lang: original_codes.get(lang, lang) for lang in languages}
    return ParallelDataset(name, languages, items, source, dropped, problems, codes)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_lines(path: Path) -> list[str]:
    """Lines without their ending (\\n or \\r\\n). Only \\n splits: str.splitlines would
    also split on Unicode separators inside sentences and break the line parallelism."""
    lines = read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start a new one
    return [line.removesuffix("\r") for line in lines]


def as_dir(path: str | Path) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    return root.resolve()


def is_data_name(p: Path, suffix: str) -> bool:
    """A ``{lang}{suffix}`` file: right suffix and a stem shaped like a language code."""
    return p.suffix == suffix and looks_like_code(p.stem) and p.is_file()


@dataclass
class LanguageFiles:
    files: dict[str, Path]  # language code -> file, in code order
    names: dict[str, str]  # language code -> the file's stem as written ('eng_Latn')
    ignored: list[str]  # located notes on files with the suffix that are not data


def language_files(root: Path, suffix: str) -> LanguageFiles:
    """Find the ``{lang}{suffix}`` files of a directory and read their languages.

    Only stems shaped like a language code are data, so README.md, LICENSE or notes.txt
    sit beside the data unharmed; a code-shaped stem that is no language (``jp.tsv``)
    raises, since that is most likely a typo that would otherwise drop a language.
    """
    candidates = sorted(p for p in root.iterdir() if p.suffix == suffix and p.is_file())
    ignored = [f"{root.name}/{p.name}: ignored, {p.stem!r} is not a language code"
               for p in candidates
               if not looks_like_code(p.stem) and not p.name.startswith(".")]
    files = [p for p in candidates if looks_like_code(p.stem)]
    if not files:
        seen = f" (found only {', '.join(p.name for p in candidates)})" if candidates else ""
        raise DataError(f"{root}: no {{lang}}{suffix} files{seen}")
    by_lang: dict[str, Path] = {}
    for p in files:
        lang = validate_language(p.stem, f"file name {p.name} (in {root})")
        if lang in by_lang:
            other = by_lang[lang]
            raise DataError(
                f"{root}: {other.name} and {p.name} are both language {lang} "
                f"({other.stem!r} and {p.stem!r} are read as {lang!r}); keep one of them")
        by_lang[lang] = p
    ordered = dict(sorted(by_lang.items()))
    return LanguageFiles(ordered, {lang: p.stem for lang, p in ordered.items()}, ignored)


def check_same_length(root: Path, rows: dict[str, list[str]], files: dict[str, Path],
                       what: str) -> int:
    counts = {lang: len(r) for lang, r in rows.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{files[lang].name}: {n}" for lang, n in counts.items())
        raise DataError(f"{root}: the files are parallel by line but hold different "
                        f"numbers of {what} ({detail})")
    return next(iter(counts.values()))


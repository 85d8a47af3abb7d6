"""Load parallel data sets: BMLAMA-style TSV directories, parallel sentence files, JSONL.

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

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlgap.data.items import (
    ANSWER_FORMATS,
    ENTRY_FORMATS,
    LETTERS,
    MASK,
    MC,
    TEXT_FORMAT,
    Item,
    LangEntry,
    ParallelDataset,
)
from xlgap.data.languages import (
    language_name,
    language_script,
    looks_like_code,
    validate_language,
)
from xlgap.errors import ConfigError, DataError, LanguageError, XlgapError

ON_MISSING = ("fail", "skip", "keep")
ON_ERROR = ("fail", "skip")
BUILTIN_NAMES = ("builtin", "demo")
ACCEPTED_FORMATS = (
    "a directory of {lang}.tsv files (BMLAMA columns: Prompt, Ans, Candidate Ans, Subject)",
    "a directory of {lang}.txt files (parallel sentences, one per line)",
    "a .jsonl file (one item per line)",
    "'builtin' or 'demo' (the packaged demo set)",
)
BMLAMA_COLUMNS = ("Prompt", "Ans", "Candidate Ans", "Subject")
_ENTRY_KEYS = frozenset({"prompt", "answers", "candidates", "gold", "format"})
_ITEM_KEYS = frozenset({"id", "langs", "meta", "format"})
_SKIP_LINE_HINT = "(on_error='skip' skips such lines)"


# -- shared machinery -----------------------------------------------------------------------


@dataclass
class _Draft:
    """One item while it is being read: what was found, what is missing, what is wrong."""

    id: str
    entries: dict[str, LangEntry] = field(default_factory=dict)
    locs: dict[str, str] = field(default_factory=dict)  # language -> "file line N" for messages
    missing: list[tuple[str, str]] = field(default_factory=list)  # (language, location)
    error: str | None = None  # the first item problem found, already located
    meta: dict[str, str] = field(default_factory=dict)
    # A line that could not be read as an item at all (bad JSON, schema, duplicate id). It
    # is kept in order with the others so that "fail" reports the first problem in the file.
    broken: XlgapError | None = None

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message


def _check_policy(value: str, allowed: Sequence[str], option: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{option} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _consistency_problem(draft: _Draft) -> str | None:
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


def _assemble(name: str, languages: list[str], drafts: list[_Draft], source: str,
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
        items.append(Item(draft.id, draft.entries, draft.meta))
    if not items:
        why = f"; all {len(drafts)} were left out, e.g. {problems[-1]}" if drafts else ""
        raise DataError(f"{source}: no usable items{why}")
    codes = {lang: original_codes.get(lang, lang) for lang in languages}
    return ParallelDataset(name, languages, items, source, dropped, problems, codes)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_lines(path: Path) -> list[str]:
    """Lines without their ending (\\n or \\r\\n). Only \\n splits: str.splitlines would
    also split on Unicode separators inside sentences and break the line parallelism."""
    lines = _read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start a new one
    return [line.removesuffix("\r") for line in lines]


def _as_dir(path: str | Path) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    return root.resolve()


def _is_data_name(p: Path, suffix: str) -> bool:
    """A ``{lang}{suffix}`` file: right suffix and a stem shaped like a language code."""
    return p.suffix == suffix and looks_like_code(p.stem) and p.is_file()


@dataclass
class _LanguageFiles:
    files: dict[str, Path]  # language code -> file, in code order
    names: dict[str, str]  # language code -> the file's stem as written ('eng_Latn')
    ignored: list[str]  # located notes on files with the suffix that are not data


def _language_files(root: Path, suffix: str) -> _LanguageFiles:
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
    return _LanguageFiles(ordered, {lang: p.stem for lang, p in ordered.items()}, ignored)


def _check_same_length(root: Path, rows: dict[str, list[str]], files: dict[str, Path],
                       what: str) -> int:
    counts = {lang: len(r) for lang, r in rows.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{files[lang].name}: {n}" for lang, n in counts.items())
        raise DataError(f"{root}: the files are parallel by line but hold different "
                        f"numbers of {what} ({detail})")
    return next(iter(counts.values()))


# -- BMLAMA-style TSV directories -----------------------------------------------------------


def _unquote(value: str) -> str:
    """Undo CSV-style quoting: some files wrap a field in double quotes and double the
    quotes inside it (Hebrew 'להט"ב' is written '"...להט""ב..."')."""
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('""', '"').strip()
    return value


def _parse_bmlama_row(line: str, loc: str) -> tuple[LangEntry, str] | str:
    """A data row -> (entry, subject), or a located message saying what is wrong."""
    fields = line.split("\t")
    while len(fields) > len(BMLAMA_COLUMNS) and not fields[-1].strip():
        fields.pop()  # trailing tabs add empty fields that carry nothing
    if len(fields) != len(BMLAMA_COLUMNS):
        return (f"{loc}: expected {len(BMLAMA_COLUMNS)} tab-separated fields "
                f"({', '.join(BMLAMA_COLUMNS)}), found {len(fields)}")
    prompt, answer, cand_field, subject = (_unquote(f) for f in fields)
    if prompt.count(MASK) != 1:
        return f"{loc}: the prompt must hold exactly one {MASK}, it has {prompt.count(MASK)}"
    if not answer:
        return f"{loc}: the answer (Ans) is empty"
    # Candidates are separated by commas; no candidate in BMLAMA-17 contains one, and a
    # candidate split by mistake would change the count in that language only, which the
    # cross-language count check then reports.
    candidates = tuple(c.strip() for c in cand_field.split(","))
    if any(not c for c in candidates):
        return f"{loc}: an empty candidate in 'Candidate Ans' ({cand_field!r})"
    if len(set(candidates)) != len(candidates):
        repeated = sorted({c for c in candidates if candidates.count(c) > 1})
        return f"{loc}: repeated candidates {repeated}"
    if answer not in candidates:
        return f"{loc}: the answer {answer!r} is not among the candidates {list(candidates)}"
    return LangEntry(prompt, (answer,), candidates, candidates.index(answer)), subject


def load_bmlama_dir(path: str | Path, *, on_missing: str = "fail",
                    on_error: str = "fail") -> ParallelDataset:
    """Load a BMLAMA-style directory of ``{lang}.tsv`` files, parallel by line.

    Columns are read by position (Prompt with one ``<mask>``, Ans, Candidate Ans, Subject);
    the first line is a header unless it holds a ``<mask>``, and its field count is not
    checked (BMLAMA-17's ``zh.tsv`` header has five). Item ids are ``{dirname}-{row}``, row
    counting data rows from 0; ``gold`` is the position of Ans among the candidates.
    """
    _check_policy(on_missing, ON_MISSING, "on_missing")
    _check_policy(on_error, ON_ERROR, "on_error")
    root = _as_dir(path)
    found = _language_files(root, ".tsv")
    files = found.files
    rows: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}  # file line number of data row 0
    for lang, p in files.items():
        lines = _read_lines(p)
        if not lines:
            raise DataError(f"{p}: empty file")
        has_header = MASK not in lines[0]
        rows[lang] = lines[1:] if has_header else lines
        first_line[lang] = 2 if has_header else 1
    n = _check_same_length(root, rows, files, "rows")
    drafts = []
    for i in range(n):
        draft = _Draft(f"{root.name}-{i}")
        subjects: dict[str, str] = {}
        for lang, p in files.items():
            loc = f"{root.name}/{p.name} line {i + first_line[lang]}"
            draft.locs[lang] = loc
            line = rows[lang][i]
            if not line.strip():
                draft.missing.append((lang, loc))
                continue
            parsed = _parse_bmlama_row(line, loc)
            if isinstance(parsed, str):
                draft.fail(parsed)
                continue
            draft.entries[lang], subjects[lang] = parsed
        if subjects:
            draft.meta = {"subject": subjects.get("en", next(iter(subjects.values())))}
        drafts.append(draft)
    return _assemble(root.name, list(files), drafts, str(root), on_missing, on_error,
                     original_codes=found.names, problems=found.ignored)


# -- parallel sentence files ----------------------------------------------------------------


def load_sentence_dir(path: str | Path, *, on_missing: str = "fail",
                      on_error: str = "fail") -> ParallelDataset:
    """Load a directory of ``{lang}.txt`` files holding one sentence per line, parallel by
    line (e.g. a FLORES subset). Items have only a ``prompt``: the sentence.

    Any non-empty line is a valid sentence, so only ``on_missing`` changes the result;
    ``on_error`` is checked and accepted so that every loader takes the same options."""
    _check_policy(on_missing, ON_MISSING, "on_missing")
    _check_policy(on_error, ON_ERROR, "on_error")
    root = _as_dir(path)
    found = _language_files(root, ".txt")
    files = found.files
    rows = {lang: _read_lines(p) for lang, p in files.items()}
    n = _check_same_length(root, rows, files, "lines")
    drafts = []
    for i in range(n):
        draft = _Draft(f"{root.name}-{i}")
        for lang, p in files.items():
            loc = f"{root.name}/{p.name} line {i + 1}"
            draft.locs[lang] = loc
            sentence = rows[lang][i].strip()
            if sentence:
                draft.entries[lang] = LangEntry(sentence)
            else:
                draft.missing.append((lang, loc))
        drafts.append(draft)
    return _assemble(root.name, list(files), drafts, str(root), on_missing, on_error,
                     original_codes=found.names, problems=found.ignored)


# -- JSONL ----------------------------------------------------------------------------------


def _str_list(value: Any, what: str, loc: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{loc}: '{what}' must be a list of strings")
    out = tuple(v.strip() for v in value)
    if any(not v for v in out):
        raise DataError(f"{loc}: '{what}' holds an empty string")
    return out


def _jsonl_format(raw: Any, loc: str) -> str:
    if raw not in ENTRY_FORMATS:
        raise DataError(f"{loc}: 'format' must be one of {list(ENTRY_FORMATS)}, got {raw!r}")
    return str(raw)


def _jsonl_entry(raw: Any, loc: str, draft: _Draft, item_format: str) -> LangEntry:
    """One language of a JSONL item. Schema errors raise; item problems go to the draft."""
    if not isinstance(raw, dict):
        raise DataError(f"{loc}: expected an object with 'prompt', got {type(raw).__name__}")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise DataError(f"{loc}: unknown keys {unknown} (allowed: {sorted(_ENTRY_KEYS)})")
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{loc}: missing 'prompt' (a non-empty string)")
    answers = _str_list(raw["answers"], "answers", loc) if "answers" in raw else ()
    candidates = _str_list(raw["candidates"], "candidates", loc) if "candidates" in raw else ()
    fmt = _jsonl_format(raw["format"], loc) if "format" in raw else item_format
    gold = raw.get("gold")
    if gold is not None and (isinstance(gold, bool) or not isinstance(gold, int)):
        raise DataError(f"{loc}: 'gold' must be an integer index into 'candidates'")
    if "candidates" in raw and len(candidates) < 2:
        raise DataError(f"{loc}: 'candidates' needs at least two entries")
    if fmt == MC and not candidates:
        raise DataError(f"{loc}: 'format': 'mc' needs 'candidates' (the lettered options)")
    if fmt == MC and len(candidates) > len(LETTERS):
        raise DataError(f"{loc}: 'format': 'mc' allows at most {len(LETTERS)} candidates "
                        f"(one per letter A-Z), got {len(candidates)}")
    if not candidates:
        if gold is not None:
            raise DataError(f"{loc}: 'gold' is given but there are no 'candidates'")
        # An open item when it has answers (scored by alias matching), else a sentence.
        return LangEntry(prompt.strip(), answers)
    if gold is None and not answers:
        raise DataError(f"{loc}: with 'candidates', give 'gold' or 'answers' "
                        "(to know which candidate is right)")
    if gold is not None and not 0 <= gold < len(candidates):
        raise DataError(f"{loc}: 'gold' {gold} is out of range for {len(candidates)} "
                        "candidates (counting from 0)")
    if len(set(candidates)) != len(candidates):
        draft.fail(f"{loc}: repeated candidates "
                   f"{sorted({c for c in candidates if candidates.count(c) > 1})}")
    if gold is None:
        gold = next((candidates.index(a) for a in answers if a in candidates), None)
        if gold is None:
            draft.fail(f"{loc}: none of the answers {list(answers)} is among the candidates "
                       f"{list(candidates)}")
    elif not answers:
        answers = (candidates[gold],)
    elif candidates[gold] not in answers:
        draft.fail(f"{loc}: the gold candidate {candidates[gold]!r} is not one of the "
                   f"answers {list(answers)}")
    return LangEntry(prompt.strip(), answers, candidates, gold, fmt)


def _jsonl_meta(raw: Any, loc: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DataError(f"{loc}: 'meta' must be an object")
    return {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in raw.items()}


def _jsonl_item(line: str, loc: str, seen: dict[str, int],
                codes: dict[str, str]) -> _Draft:
    """One JSONL line as a draft item. A line that cannot be an item raises DataError or
    LanguageError; ``codes`` collects language -> key as written (first spelling wins)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{loc}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{loc}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _ITEM_KEYS)
    if unknown:
        raise DataError(f"{loc}: unknown keys {unknown} (allowed: {sorted(_ITEM_KEYS)})")
    item_id = obj.get("id")
    if isinstance(item_id, bool) or not isinstance(item_id, str | int) \
            or not str(item_id).strip():
        raise DataError(f"{loc}: missing 'id' (a non-empty string)")
    item_id = str(item_id).strip()
    if item_id in seen:
        raise DataError(f"{loc}: duplicate id {item_id!r} (first on line {seen[item_id]})")
    langs = obj.get("langs")
    if not isinstance(langs, dict) or not langs:
        raise DataError(f"{loc}: missing 'langs' (an object: language code -> entry)")
    item_format = _jsonl_format(obj["format"], loc) if "format" in obj else TEXT_FORMAT
    draft = _Draft(item_id, meta=_jsonl_meta(obj.get("meta"), loc))
    keys: dict[str, str] = {}
    for code, raw in langs.items():
        lang = validate_language(code, f"{loc} (item {item_id})")
        if lang in draft.entries:
            raise DataError(f"{loc}: language {lang} appears twice in item {item_id} "
                            f"(keys {keys[lang]!r} and {code!r})")
        keys[lang] = code
        entry_loc = f"{loc} ({lang})"
        draft.locs[lang] = entry_loc
        draft.entries[lang] = _jsonl_entry(raw, entry_loc, draft, item_format)
    for lang, code in keys.items():  # only once the whole line is good
        codes.setdefault(lang, code)
    return draft


def parse_jsonl_text(text: str, *, source: str, name: str, on_missing: str = "fail",
                     on_error: str = "fail") -> ParallelDataset:
    """Parse JSONL text (see :func:`load_jsonl`); ``source`` names it in messages."""
    _check_policy(on_missing, ON_MISSING, "on_missing")
    _check_policy(on_error, ON_ERROR, "on_error")
    drafts: list[_Draft] = []
    seen: dict[str, int] = {}  # id -> line number
    codes: dict[str, str] = {}  # language -> key as written; insertion order = first seen
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        loc = f"{source} line {number}"
        try:
            draft = _jsonl_item(line, loc, seen, codes)
        except (DataError, LanguageError) as exc:
            drafts.append(_Draft("", broken=exc))
            if on_error == "fail":
                break  # the first problem decides; the rest of the file need not be read
            continue
        seen[draft.id] = number
        drafts.append(draft)
    if not drafts:
        raise DataError(f"{source}: no items")
    for draft in drafts:  # missing languages are known only once every line was read
        if draft.broken is None:
            line = seen[draft.id]
            draft.missing = [(lang, f"{source} line {line}") for lang in codes
                             if lang not in draft.entries]
    return _assemble(name, list(codes), drafts, source, on_missing, on_error,
                     original_codes=codes)


def load_jsonl(path: str | Path, *, on_missing: str = "fail",
               on_error: str = "fail") -> ParallelDataset:
    """Load the generic JSONL format, one item per line::

        {"id": "capital-fr", "meta": {"category": "capital"},
         "langs": {"en": {"prompt": "What is the capital of France?", "answers": ["Paris"],
                          "candidates": ["Paris", "Lyon", "Marseille", "Nice"], "gold": 0},
                   "fr": {...}}}

    Per language: ``prompt`` is required; ``candidates`` (at least two, candidate j the same
    entity in every language) is optional; ``gold`` (index into candidates) defaults to the
    first answer found among the candidates; ``answers`` (gold aliases, the first canonical)
    defaults to the gold candidate. Without candidates, an entry with answers is an *open*
    item, scored by matching the answers. ``"format": "mc"`` (per language, or on the item
    for all of them) shows the candidates as lettered options and expects a letter.
    ``meta`` (optional) is kept as strings. Blank lines are ignored. The set's languages are
    those of all items, in order of first appearance; keys may be FLORES-200 codes.
    """
    p = Path(path).expanduser()
    return parse_jsonl_text(_read_text(p), source=str(p), name=p.stem,
                            on_missing=on_missing, on_error=on_error)


# -- dispatch -------------------------------------------------------------------------------


def load_dataset(path_or_name: str | Path | None, *, on_missing: str = "fail",
                 on_error: str = "fail") -> ParallelDataset:
    """Load a data set by path or name.

    ``None``, ``"builtin"`` or ``"demo"`` give the packaged demo set (to load a directory
    called ``demo``, write ``./demo``); a directory of ``{lang}.tsv`` files is read as
    BMLAMA; otherwise a directory of ``{lang}.txt`` files as parallel sentences (files whose
    names are not language codes, such as README.md, LICENSE or notes.txt, are ignored); a
    ``.jsonl`` file as JSONL. Anything else raises a DataError listing the accepted formats.
    ``on_error`` (``"fail"`` or ``"skip"``) and ``on_missing`` are described at the top of
    this module; what was skipped is in ``dataset.problems``.
    """
    _check_policy(on_missing, ON_MISSING, "on_missing")
    _check_policy(on_error, ON_ERROR, "on_error")
    if path_or_name is None or (isinstance(path_or_name, str)
                                and path_or_name.strip().lower() in BUILTIN_NAMES):
        from xlgap.data.builtin import load_builtin  # builtin imports this module

        return load_builtin()
    p = Path(path_or_name).expanduser()
    accepted = "accepted: " + "; ".join(ACCEPTED_FORMATS)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory ({accepted})")
    if p.is_dir():
        # Decided by files named like languages, so notes.tsv beside en.txt and fr.txt
        # does not make the directory look like BMLAMA.
        children = list(p.iterdir())
        if any(_is_data_name(c, ".tsv") for c in children):
            return load_bmlama_dir(p, on_missing=on_missing, on_error=on_error)
        if any(_is_data_name(c, ".txt") for c in children):
            return load_sentence_dir(p, on_missing=on_missing, on_error=on_error)
        raise DataError(f"{p}: a directory without {{lang}}.tsv or {{lang}}.txt files "
                        f"({accepted})")
    if p.suffix.lower() == ".jsonl":
        return load_jsonl(p, on_missing=on_missing, on_error=on_error)
    raise DataError(f"{p}: unknown data format ({accepted})")


# -- description ----------------------------------------------------------------------------


def describe(dataset: ParallelDataset) -> dict[str, Any]:
    """Summary of a data set for ``xlgap data show``: per-language coverage with names and
    scripts, candidates per item, answer formats, and the share of cloze (``<mask>``)
    prompts."""
    entries = [e for it in dataset.items for e in it.langs.values()]
    n_cands = [it.n_candidates for it in dataset.items if it.n_candidates > 0]
    languages = []
    for lang in dataset.languages:
        mine = [it[lang] for it in dataset.items if it.has(lang)]
        languages.append({
            "code": lang, "name": language_name(lang), "script": language_script(lang),
            "original": dataset.original_codes.get(lang, lang), "items": len(mine),
            "cloze_share": sum(e.is_cloze for e in mine) / len(mine) if mine else 0.0,
        })
    return {
        "name": dataset.name,
        "source": dataset.source_path,
        "items": len(dataset.items),
        "languages": languages,
        "scripts": sorted({lang["script"] for lang in languages}),
        "complete_items": sum(all(it.has(lang) for lang in dataset.languages)
                              for it in dataset.items),
        "items_with_candidates": len(n_cands),
        "candidates": ({"min": min(n_cands), "mean": sum(n_cands) / len(n_cands),
                        "max": max(n_cands)} if n_cands else None),
        "cloze_share": sum(e.is_cloze for e in entries) / len(entries) if entries else 0.0,
        "answer_formats": {f: n for f in ANSWER_FORMATS
                           if (n := sum(it.answer_format == f for it in dataset.items))},
        "dropped": len(dataset.dropped),
        "problems": len(dataset.problems),
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_description(desc: dict[str, Any]) -> str:
    """The output of :func:`describe` as text: a header and an aligned language table."""
    langs = desc["languages"]
    lines = [f"{desc['name']}: {_count(desc['items'], 'item')}, "
             f"{_count(len(langs), 'language')}, {_count(len(desc['scripts']), 'script')} "
             f"({', '.join(desc['scripts'])})"]
    if desc.get("source"):
        lines.append(f"source: {desc['source']}")
    cands = desc["candidates"]
    if cands:
        lines.append(f"candidates per item: min {cands['min']}, mean {cands['mean']:.2f}, "
                     f"max {cands['max']} ({desc['items_with_candidates']} items have them)")
    else:
        lines.append("candidates per item: none (free-form answers or plain sentences)")
    formats = desc.get("answer_formats") or {}
    if formats:
        lines.append("answer formats: " + ", ".join(f"{n} {f}" for f, n in formats.items()))
    lines.append(f"cloze prompts ({MASK}): {desc['cloze_share']:.1%}")
    lines.append(f"items with every language: {desc['complete_items']}")
    if desc["dropped"]:
        lines.append(f"dropped while loading: {desc['dropped']} items")
    if desc.get("problems"):
        lines.append(f"problems while loading (skipped or ignored): {desc['problems']}")
    renamed = [f"{lang['original']} -> {lang['code']}" for lang in langs
               if lang.get("original", lang["code"]) != lang["code"]]
    if renamed:
        lines.append("language codes read as: " + ", ".join(renamed))
    header = ("code", "language", "script", "items", "cloze")
    table = [header] + [(lang["code"], lang["name"], lang["script"], str(lang["items"]),
                         f"{lang['cloze_share']:.0%}") for lang in langs]
    widths = [max(len(row[j]) for row in table) for j in range(len(header))]
    right = {3, 4}  # numbers align right
    lines.append("")
    for row in table:
        cells = [cell.rjust(w) if j in right else cell.ljust(w)
                 for j, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)

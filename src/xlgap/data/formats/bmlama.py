"""BMLAMA-style TSV directories: one ``{lang}.tsv`` per language, parallel by line."""

from __future__ import annotations

from pathlib import Path

from xlgap.data.formats import Format
from xlgap.data.items import MASK, LangEntry, ParallelDataset
from xlgap.data.reading import (
    ON_ERROR,
    ON_MISSING,
    Draft,
    as_dir,
    assemble,
    check_policy,
    check_same_length,
    is_data_name,
    language_files,
    read_lines,
)
from xlgap.errors import DataError

BMLAMA_COLUMNS = ("Prompt", "Ans", "Candidate Ans", "Subject")


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
    check_policy(on_missing, ON_MISSING, "on_missing")
    check_policy(on_error, ON_ERROR, "on_error")
    root = as_dir(path)
    found = language_files(root, ".tsv")
    files = found.files
    rows: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}  # file line number of data row 0
    for lang, p in files.items():
        lines = read_lines(p)
        if not lines:
            raise DataError(f"{p}: empty file")
        has_header = MASK not in lines[0]
        rows[lang] = lines[1:] if has_header else lines
        first_line[lang] = 2 if has_header else 1
    n = check_same_length(root, rows, files, "rows")
    drafts = []
    for i in range(n):
        draft = Draft(f"{root.name}-{i}")
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
    return assemble(root.name, list(files), drafts, str(root), on_missing, on_error,
                     original_codes=found.names, problems=found.ignored)



def _detect(path: Path) -> bool:
    # Decided by files named like languages, so notes.tsv beside en.txt and fr.txt does
    # not make a directory look like BMLAMA.
    return path.is_dir() and any(is_data_name(c, ".tsv") for c in path.iterdir())


FORMAT = Format(
    name="bmlama",
    description="a directory of {lang}.tsv files (BMLAMA columns: Prompt, Ans, "
                "Candidate Ans, Subject)",
    detect=_detect,
    load=load_bmlama_dir,
    priority=10,
)

"""Parallel sentences: one ``{lang}.txt`` per language, one sentence per line."""

from __future__ import annotations

from pathlib import Path

from xlgap.data.formats import Format
from xlgap.data.items import LangEntry, ParallelDataset
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


def load_sentence_dir(path: str | Path, *, on_missing: str = "fail",
                      on_error: str = "fail") -> ParallelDataset:
    """Load a directory of ``{lang}.txt`` files holding one sentence per line, parallel by
    line (e.g. a FLORES subset). Items have only a ``prompt``: the sentence.

    Any non-empty line is a valid sentence, so only ``on_missing`` changes the result;
    ``on_error`` is checked and accepted so that every loader takes the same options."""
    check_policy(on_missing, ON_MISSING, "on_missing")
    check_policy(on_error, ON_ERROR, "on_error")
    root = as_dir(path)
    found = language_files(root, ".txt")
    files = found.files
    rows = {lang: read_lines(p) for lang, p in files.items()}
    n = check_same_length(root, rows, files, "lines")
    drafts = []
    for i in range(n):
        draft = Draft(f"{root.name}-{i}")
        for lang, p in files.items():
            loc = f"{root.name}/{p.name} line {i + 1}"
            draft.locs[lang] = loc
            sentence = rows[lang][i].strip()
            if sentence:
                draft.entries[lang] = LangEntry(sentence)
            else:
                draft.missing.append((lang, loc))
        drafts.append(draft)
    return assemble(root.name, list(files), drafts, str(root), on_missing, on_error,
                     original_codes=found.names, problems=found.ignored)


def _detect(path: Path) -> bool:
    return path.is_dir() and any(is_data_name(c, ".txt") for c in path.iterdir())


FORMAT = Format(
    name="sentences",
    description="a directory of {lang}.txt files (parallel sentences, one per line)",
    detect=_detect,
    load=load_sentence_dir,
    priority=20,
)

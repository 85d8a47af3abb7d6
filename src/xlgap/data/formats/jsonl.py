"""The general JSONL format: one item per line (see docs/data.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xlgap.data.formats import Format
from xlgap.data.items import ENTRY_FORMATS, LETTERS, MC, TEXT_FORMAT, LangEntry, ParallelDataset
from xlgap.data.languages import validate_language
from xlgap.data.reading import ON_ERROR, ON_MISSING, Draft, assemble, check_policy, read_text
from xlgap.errors import DataError, LanguageError

_ENTRY_KEYS = frozenset({"prompt", "answers", "candidates", "gold", "format"})
_ITEM_KEYS = frozenset({"id", "langs", "meta", "format", "source"})


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


def parse_entry(raw: Any, loc: str, draft: Draft, item_format: str) -> LangEntry:
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
                codes: dict[str, str]) -> Draft:
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
    draft = Draft(item_id, meta=_jsonl_meta(obj.get("meta"), loc))
    if obj.get("source") is not None:
        # The item's own source language (ECLeKTic: where the fact comes from); it must be
        # one of the item's languages, else transfer from it cannot be measured.
        draft.source = validate_language(str(obj["source"]), f"{loc} (item {item_id}, 'source')")
    keys: dict[str, str] = {}
    for code, raw in langs.items():
        lang = validate_language(code, f"{loc} (item {item_id})")
        if lang in draft.entries:
            raise DataError(f"{loc}: language {lang} appears twice in item {item_id} "
                            f"(keys {keys[lang]!r} and {code!r})")
        keys[lang] = code
        entry_loc = f"{loc} ({lang})"
        draft.locs[lang] = entry_loc
        draft.entries[lang] = parse_entry(raw, entry_loc, draft, item_format)
    if draft.source and draft.source not in draft.entries:
        raise DataError(f"{loc}: 'source' {draft.source!r} is not one of the item's languages "
                        f"{sorted(draft.entries)}")
    for lang, code in keys.items():  # only once the whole line is good
        codes.setdefault(lang, code)
    return draft


def parse_jsonl_text(text: str, *, source: str, name: str, on_missing: str = "fail",
                     on_error: str = "fail") -> ParallelDataset:
    """Parse JSONL text (see :func:`load_jsonl`); ``source`` names it in messages."""
    check_policy(on_missing, ON_MISSING, "on_missing")
    check_policy(on_error, ON_ERROR, "on_error")
    drafts: list[Draft] = []
    seen: dict[str, int] = {}  # id -> line number
    codes: dict[str, str] = {}  # language -> key as written; insertion order = first seen
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        loc = f"{source} line {number}"
        try:
            draft = _jsonl_item(line, loc, seen, codes)
        except (DataError, LanguageError) as exc:
            drafts.append(Draft("", broken=exc))
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
    return assemble(name, list(codes), drafts, source, on_missing, on_error,
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
    return parse_jsonl_text(read_text(p), source=str(p), name=p.stem,
                            on_missing=on_missing, on_error=on_error)



def _detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".jsonl"


FORMAT = Format(
    name="jsonl",
    description="a .jsonl file (one item per line)",
    detect=_detect,
    load=load_jsonl,
    priority=30,
)

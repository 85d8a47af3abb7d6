"""Tables read through the ``datasets`` library: local ``.parquet`` and ``.csv`` files,
folders written by ``Dataset.save_to_disk``, and ``hf:ORG/NAME[:CONFIG][@SPLIT]`` names on
the Hugging Face Hub. Columns become item fields through a :class:`ColumnMap` (long or
wide layout, see :mod:`xlgap.data.mapping`). ``datasets`` is imported only when a table is
read (``pip install 'xlgap[hf]'``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xlgap.data.formats import Format
from xlgap.data.formats.jsonl import parse_entry
from xlgap.data.items import LETTERS, TEXT_FORMAT, ParallelDataset
from xlgap.data.languages import validate_language
from xlgap.data.mapping import LANG_SLOT, ColumnMap
from xlgap.data.reading import Draft, assemble
from xlgap.errors import DataError, LanguageError

HF_PREFIX = "hf:"
_SUFFIXES = {".parquet": "parquet", ".csv": "csv"}
# Files that Dataset.save_to_disk / DatasetDict.save_to_disk write into their folder.
_SAVED_MARKERS = ("state.json", "dataset_info.json", "dataset_dict.json")
_SPLIT_PREFERENCE = ("test", "validation", "dev", "train")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("reading Parquet, CSV, save_to_disk folders and hf: data sets needs "
                        "the 'datasets' package: pip install 'xlgap[hf]'") from None
    return datasets


def _pick_split(found: Mapping[str, Any], where: str) -> Any:
    """The split to use when none was named: test, else validation, dev, train, else the
    only one."""
    names = list(found)
    for name in (*_SPLIT_PREFERENCE, *(names[:1] if len(names) == 1 else [])):
        if name in found:
            return found[name]
    raise DataError(f"{where}: several splits ({', '.join(names)}) and none named; add "
                    "@SPLIT")


def parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``hf:ORG/NAME[:CONFIG][@SPLIT]`` -> (repo id, config or None, split or None)."""
    body = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
    body, _, split = body.partition("@")
    repo, _, config = body.partition(":")
    if not repo or repo.count("/") > 1:
        raise DataError(f"{spec}: expected hf:ORG/NAME[:CONFIG][@SPLIT], e.g. "
                        "hf:openai/MMMLU:FR_FR@test")
    return repo, config or None, split or None


def _read_local(path: Path) -> Any:
    ds = _datasets()
    if path.is_dir():
        try:
            loaded = ds.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise DataError(f"{path}: not a save_to_disk folder ({exc})") from None
        return _pick_split(loaded, str(path)) if isinstance(loaded, ds.DatasetDict) else loaded
    builder = _SUFFIXES[path.suffix.lower()]
    # Read with pyarrow (a dependency of datasets) and wrap: datasets.load_dataset("parquet")
    # would first copy the file into the Hugging Face cache, for nothing.
    try:
        if builder == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path)
    except Exception as exc:  # pyarrow raises many kinds; say which file
        raise DataError(f"{path}: cannot read as {builder} ({type(exc).__name__}: {exc})") \
            from None
    return ds.Dataset(table)


def _read_hub(spec: str) -> Any:
    repo, config, split = parse_hf_spec(spec)
    ds = _datasets()
    try:
        loaded = ds.load_dataset(repo, config, split=split)
    except Exception as exc:  # network, auth, unknown config: one message naming the spec
        raise DataError(f"{spec}: cannot load from the Hugging Face Hub ({type(exc).__name__}:"
                        f" {exc}); without a network, save it elsewhere with "
                        "save_to_disk and pass that folder") from None
    return _pick_split(loaded, spec) if split is None else loaded


# -- rows -> items --------------------------------------------------------------------------


def _cell(row: Mapping[str, Any], column: str, loc: str) -> Any:
    if column not in row:
        raise DataError(f"{loc}: no column {column!r} (columns: {', '.join(row)})")
    return row[column]


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, Iterable):
        return [str(v) for v in value if v is not None and str(v).strip()]
    return [str(value)]


def _gold(value: Any, candidates: list[str], loc: str) -> int | None:
    """An index, an option letter or the gold candidate's text -> an index."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise DataError(f"{loc}: gold {value!r} is not an index, a letter or a candidate")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if len(text) == 1 and text.upper() in LETTERS[: len(candidates)]:
        return LETTERS.index(text.upper())
    if text in candidates:
        return candidates.index(text)
    raise DataError(f"{loc}: gold {value!r} is not an index, an option letter or one of the "
                    f"candidates {candidates}")


def _entry_raw(row: Mapping[str, Any], cmap: ColumnMap, lang: str, loc: str
               ) -> dict[str, Any] | None:
    """One language of one row as a JSONL entry, or None when its prompt is empty."""
    def col(pattern: str) -> str:
        return pattern.replace(LANG_SLOT, lang)

    prompt = _cell(row, col(cmap.prompt), loc)
    if prompt is None or not str(prompt).strip():
        return None
    raw: dict[str, Any] = {"prompt": str(prompt)}
    if cmap.candidates:
        parts = cmap.candidates.split("+")
        candidates = ([str(_cell(row, col(c), loc)) for c in parts] if len(parts) > 1
                      else _strings(_cell(row, col(parts[0]), loc)))
        raw["candidates"] = candidates
        if cmap.gold:
            gold = _gold(_cell(row, col(cmap.gold), loc), candidates, loc)
            if gold is not None:
                raw["gold"] = gold
    if cmap.answers:
        answers = _strings(_cell(row, col(cmap.answers), loc))
        if answers:
            raw["answers"] = answers
    if cmap.format:
        raw["format"] = cmap.format
    return raw


def rows_to_dataset(rows: Iterable[Mapping[str, Any]], columns: list[str], *, name: str,
                    source: str, cmap: ColumnMap | None, on_missing: str = "fail",
                    on_error: str = "fail") -> ParallelDataset:
    """Table rows (dicts) -> a data set, through ``cmap`` (see :mod:`xlgap.data.mapping`)."""
    cmap = (cmap or ColumnMap()).with_defaults(columns)
    if not cmap.prompt:
        raise DataError(f"{source}: no prompt column; name it with --data-map prompt=COLUMN "
                        f"(columns: {', '.join(columns)})")
    if cmap.wide:
        head, _, tail = cmap.prompt.partition(LANG_SLOT)
        langs = [c[len(head):len(c) - len(tail)] for c in columns
                 if c.startswith(head) and c.endswith(tail) and len(c) > len(head) + len(tail)]
        if not langs:
            raise DataError(f"{source}: no column matches prompt={cmap.prompt} "
                            f"(columns: {', '.join(columns)})")
    elif not cmap.lang:
        raise DataError(f"{source}: say where the language is: lang=COLUMN (one row per "
                        "language) or prompt=..{lang}.. (one column per language) in --data-map")
    drafts: dict[str, Draft] = {}
    codes: dict[str, str] = {}  # language -> as written, in order of first appearance
    broken: list[Draft] = []
    for number, row in enumerate(rows):
        loc = f"{source} row {number}"
        try:
            item_id = str(_cell(row, cmap.id, loc)).strip() if cmap.id else str(number)
            if cmap.wide:
                pairs = [(code, _entry_raw(row, cmap, code, loc)) for code in langs]
            else:
                pairs = [(str(_cell(row, cmap.lang, loc)), _entry_raw(row, cmap, "", loc))]
            draft = drafts.setdefault(item_id, Draft(item_id))
            for code, raw in pairs:
                lang = validate_language(code, f"{loc} (item {item_id})")
                codes.setdefault(lang, code)
                entry_loc = f"{loc} ({lang})"
                if raw is None:
                    continue  # an empty cell: a missing translation, found below
                if lang in draft.entries:
                    raise DataError(f"{entry_loc}: item {item_id} already has {lang}")
                draft.locs[lang] = entry_loc
                draft.entries[lang] = parse_entry(raw, entry_loc, draft, TEXT_FORMAT)
            if cmap.source:
                value = _cell(row, cmap.source, loc)
                if value:
                    draft.source = validate_language(str(value), f"{loc} (source)")
        except (DataError, LanguageError) as exc:
            broken.append(Draft("", broken=exc))
            if on_error == "fail":
                break
    for draft in drafts.values():
        draft.missing = [(lang, draft.locs.get(lang, f"{source} item {draft.id}"))
                         for lang in codes if lang not in draft.entries]
        if draft.source and draft.source not in draft.entries:
            draft.fail(f"{source} item {draft.id}: its source language {draft.source} has "
                       "no prompt")
    if not drafts and not broken:
        raise DataError(f"{source}: no rows")
    return assemble(name, list(codes), [*broken, *drafts.values()], source, on_missing,
                    on_error, original_codes=codes)


def _table_rows(table: Any) -> tuple[list[dict[str, Any]], list[str]]:
    return list(table), list(table.column_names)


def load_table(path: str | Path, *, on_missing: str = "fail", on_error: str = "fail",
               data_map: ColumnMap | None = None) -> ParallelDataset:
    """A local ``.parquet`` / ``.csv`` file or a ``save_to_disk`` folder."""
    p = Path(path).expanduser()
    rows, columns = _table_rows(_read_local(p))
    return rows_to_dataset(rows, columns, name=p.stem if p.is_file() else p.name,
                           source=str(p), cmap=data_map, on_missing=on_missing,
                           on_error=on_error)


def load_hf(spec: str, *, on_missing: str = "fail", on_error: str = "fail",
            data_map: ColumnMap | None = None) -> ParallelDataset:
    """``hf:ORG/NAME[:CONFIG][@SPLIT]`` from the Hugging Face Hub (or its local cache)."""
    repo, config, _ = parse_hf_spec(spec)
    rows, columns = _table_rows(_read_hub(spec))
    name = repo.split("/")[-1] + (f"-{config}" if config else "")
    return rows_to_dataset(rows, columns, name=name, source=spec, cmap=data_map,
                           on_missing=on_missing, on_error=on_error)


def _detect(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in _SUFFIXES
    return path.is_dir() and any((path / m).is_file() for m in _SAVED_MARKERS)


FORMAT = Format(
    name="table",
    description="a .parquet or .csv file or a save_to_disk folder (with --data-map; needs "
                "xlgap[hf])",
    detect=_detect,
    load=load_table,
    priority=40,
    takes_map=True,
)

__all__ = ["FORMAT", "HF_PREFIX", "load_hf", "load_table", "parse_hf_spec", "rows_to_dataset"]

"""Generate ``demo.jsonl``, xlgap's built-in demo set, from the tables in ``tables/``.

Run ``python src/xlgap/data/builtin/make_demo.py`` after editing a table; ``--check`` only
reports whether the shipped file matches the tables (the test suite does the same).

The tables are tab-separated; lines starting with ``#`` are comments, and the first other
line is a header that names the columns (languages by their code):

* ``entities.tsv``: every candidate, keyed, spelled once per language. Items refer to
  candidates by key, so candidate j is the same entity in every language by construction.
* ``aliases.tsv``: extra accepted answers of an entity in one language.
* ``templates.tsv``: one question pattern per language for categories whose questions share
  one; ``{}`` marks the slot.
* ``items.tsv``: the items in output order with their candidate keys, gold first. For a
  category in ``templates.tsv`` the language cells are the slot text, else whole questions.

Design: every item is a short factual question in each language with four candidates. The
gold answer is written first and moved to a position drawn from a fixed seed per item, so
that "always pick the first option" scores at chance. Distractors are real entities of the
same kind (other cities of the same country, other planets, ...), plausible and wrong.
Questions are written per language, not filled into one grammar: French, Russian, Korean,
Arabic and Swahili inflect the slot (``du Japon``, ``Японии``, ``일본은``, ``يقع``, ``uko``),
and those forms are spelled out in the slot cells.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
TABLES = HERE / "tables"
OUT = HERE / "demo.jsonl"


class TableError(ValueError):
    """A table is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Row:
    """One data line of a table: its cells by column name, and where it came from."""

    cells: dict[str, str]
    where: str  # "tables/items.tsv line 12", for messages


def read_table(name: str) -> tuple[list[str], list[Row]]:
    """The header and the rows of ``tables/{name}``. Every row must have one cell per
    column, and no cell may be empty: a missing translation would otherwise slip through."""
    path = TABLES / name
    header: list[str] | None = None
    rows: list[Row] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        where = f"tables/{name} line {number}"
        if header is None:
            header = cells
            continue
        if len(cells) != len(header):
            raise TableError(f"{where}: {len(cells)} cells, the header has {len(header)}")
        if any(not c.strip() or c != c.strip() for c in cells):
            raise TableError(f"{where}: an empty cell or one with surrounding spaces")
        rows.append(Row(dict(zip(header, cells, strict=True)), where))
    if header is None:
        raise TableError(f"tables/{name}: no header line")
    return header, rows


def load_tables() -> tuple[list[str], dict[str, dict[str, str]],
                           dict[str, dict[str, list[str]]], dict[str, dict[str, str]],
                           list[Row]]:
    """(languages, entities, aliases, templates, item rows), cross-checked."""
    header, entity_rows = read_table("entities.tsv")
    langs = header[1:]
    entities: dict[str, dict[str, str]] = {}
    for row in entity_rows:
        key = row.cells["key"]
        if key in entities:
            raise TableError(f"{row.where}: entity {key!r} is defined twice")
        entities[key] = {lang: row.cells[lang] for lang in langs}
    aliases: dict[str, dict[str, list[str]]] = {}
    for row in read_table("aliases.tsv")[1]:
        key, lang = row.cells["entity"], row.cells["lang"]
        if key not in entities or lang not in langs:
            raise TableError(f"{row.where}: unknown entity {key!r} or language {lang!r}")
        aliases.setdefault(key, {}).setdefault(lang, []).append(row.cells["alias"])
    t_header, t_rows = read_table("templates.tsv")
    if t_header[1:] != langs:
        raise TableError("tables/templates.tsv: its languages differ from entities.tsv")
    templates = {row.cells["category"]: {lang: row.cells[lang] for lang in langs}
                 for row in t_rows}
    for row in t_rows:
        if any(row.cells[lang].count("{}") != 1 for lang in langs):
            raise TableError(f"{row.where}: every template needs exactly one '{{}}'")
    i_header, item_rows = read_table("items.tsv")
    if i_header[3:] != langs:
        raise TableError("tables/items.tsv: its languages differ from entities.tsv")
    return langs, entities, aliases, templates, item_rows


def build_items() -> list[dict[str, object]]:
    """The JSONL records, in table order, with the gold moved to a seeded position."""
    langs, entities, aliases, templates, item_rows = load_tables()
    records: list[dict[str, object]] = []
    seen: set[str] = set()
    for row in item_rows:
        item_id, category = row.cells["id"], row.cells["category"]
        if item_id in seen:
            raise TableError(f"{row.where}: duplicate item id {item_id!r}")
        seen.add(item_id)
        cands = row.cells["candidates"].split()
        unknown = [c for c in cands if c not in entities]
        if unknown:
            raise TableError(f"{row.where}: unknown entities {unknown} (see entities.tsv)")
        order = list(range(len(cands)))
        # The id seeds the shuffle: the position depends on nothing but the item.
        random.Random(f"xlgap-demo/{item_id}").shuffle(order)
        keys = [cands[k] for k in order]
        gold = order.index(0)
        template = templates.get(category)
        entries: dict[str, object] = {}
        for lang in langs:
            names = [entities[key][lang] for key in keys]
            if len(set(names)) != len(names):
                raise TableError(f"{row.where}: repeated candidate in {lang}: {names}")
            cell = row.cells[lang]
            prompt = template[lang].replace("{}", cell) if template else cell
            extra = aliases.get(keys[gold], {}).get(lang, [])
            entries[lang] = {"prompt": prompt, "answers": [names[gold], *extra],
                             "candidates": names, "gold": gold}
        records.append({"id": item_id, "meta": {"category": category}, "langs": entries})
    return records


def render() -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in build_items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="only check that demo.jsonl matches the tables")
    args = ap.parse_args(argv)
    try:
        text = render()
    except TableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        ok = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT}: {'up to date' if ok else 'OUT OF DATE, rerun without --check'}")
        return 0 if ok else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({text.count(chr(10))} items)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Column mappings: which table columns hold an item's id, prompt, answers, candidates, gold
answer, language and source language (``--data-map``; a ``[data.map]`` table in a study).

Two layouts are read:

* **long**: one row per (item, language). ``lang`` names the language column and ``id`` the
  column that ties the rows of one item together::

      id=qid,prompt=question,answers=answer,candidates=choices,gold=label,lang=language

* **wide**: one row per item, one column per language. Field values hold ``{lang}`` where
  the language goes in the column name; the languages are those whose columns exist::

      id=q_id,prompt={lang}_q,answers={lang}_a,source=original_lang

``candidates`` may join several columns with ``+`` (``candidates=A+B+C+D``, each a string),
or name one column holding a list. ``gold`` is an index, an option letter (``"B"``) or the
text of the gold candidate. ``format=mc`` (a value, not a column) shows the candidates as
lettered options. Without a mapping the columns named like the fields are used (``id``,
``prompt``, ``answers``, ``candidates``, ``gold``, ``lang``, ``source``), so a table written
in xlgap's own field names needs none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from xlgap.data.items import ENTRY_FORMATS
from xlgap.errors import ConfigError

LANG_SLOT = "{lang}"
FIELDS = ("id", "prompt", "answers", "candidates", "gold", "lang", "source", "format")


@dataclass(frozen=True)
class ColumnMap:
    """Field -> column (or ``{lang}`` pattern); ``format`` is a value ("text" or "mc")."""

    id: str = ""
    prompt: str = ""
    answers: str = ""
    candidates: str = ""
    gold: str = ""
    lang: str = ""
    source: str = ""
    format: str = ""

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    @property
    def wide(self) -> bool:
        """One column per language (a ``{lang}`` pattern) rather than one row per language."""
        return not self.lang and LANG_SLOT in self.prompt

    def with_defaults(self, columns: list[str]) -> ColumnMap:
        """Fill the fields left empty with the same-named column, where the table has one."""
        present = set(columns)
        filled = {f: getattr(self, f) or (f if f in present and f != "format" else "")
                  for f in FIELDS}
        return ColumnMap(**filled)

    def text(self) -> str:
        return ",".join(f"{f}={getattr(self, f)}" for f in FIELDS if getattr(self, f))


def parse_data_map(spec: str | Mapping[str, object] | None) -> ColumnMap | None:
    """``"id=qid,prompt=question"`` (or the same as a mapping) -> a :class:`ColumnMap`."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, str):
        pairs: dict[str, str] = {}
        for part in spec.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ConfigError(f"--data-map: {part.strip()!r} is not FIELD=COLUMN (e.g. "
                                  "id=qid,prompt=question,lang=language)")
            pairs[key.strip()] = value.strip()
    else:
        pairs = {str(k): str(v) for k, v in spec.items()}
    unknown = sorted(set(pairs) - set(FIELDS))
    if unknown:
        raise ConfigError(f"--data-map: unknown field(s) {unknown}; fields: {', '.join(FIELDS)}")
    if pairs.get("format", "text") not in ENTRY_FORMATS:
        raise ConfigError(f"--data-map: format must be one of {list(ENTRY_FORMATS)}, got "
                          f"{pairs['format']!r}")
    column_map = ColumnMap(**pairs)
    if column_map.lang and any(LANG_SLOT in v for v in pairs.values()):
        raise ConfigError("--data-map: use either lang=COLUMN (one row per language) or "
                          "{lang} patterns (one column per language), not both")
    return column_map

"""The parallel item: one fact (or sentence) asked in several languages."""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from xlgap.data.splits import parse_split, split_items
from xlgap.errors import ConfigError

MASK = "<mask>"

# How an entry is meant to be answered (LangEntry.answer_format):
OPEN = "open"  # free text, scored against the gold answers (aliases); no candidates
CANDIDATES = "candidates"  # free text mapped to one of the candidates (BMLAMA, the demo)
MC = "mc"  # lettered options "A. ... B. ..." in the prompt; the answer is a letter
NO_ANSWER = "none"  # a plain sentence (parallel text for representation analyses)
ANSWER_FORMATS = (OPEN, CANDIDATES, MC, NO_ANSWER)

# Values of the stored ``format`` field (the JSONL key ``"format"``).
TEXT_FORMAT = "text"
ENTRY_FORMATS = (TEXT_FORMAT, MC)
# Option letters of a lettered multiple-choice entry: Latin capitals in every language,
# as multilingual MC benchmarks do, so a letter means the same option everywhere.
LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class LangEntry:
    """One item in one language.

    ``prompt`` is a question, a cloze sentence holding one ``<mask>``, or (for parallel
    sentence data) the sentence itself. ``answers`` are gold answer strings: the first is the
    canonical form, the rest aliases. ``candidates`` are the answer options, in the same
    order in every language of the item (candidate j is the same entity everywhere), and
    ``gold`` indexes the gold candidate. ``format`` is ``"mc"`` when the options are shown
    lettered and the model answers with a letter, else ``"text"``.
    """

    prompt: str
    answers: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()
    gold: int | None = None
    format: str = TEXT_FORMAT

    @property
    def is_cloze(self) -> bool:
        return MASK in self.prompt

    @property
    def answer_format(self) -> str:
        """``"open"``, ``"candidates"``, ``"mc"`` or ``"none"`` (see the constants above)."""
        if self.format == MC:
            return MC
        if self.candidates:
            return CANDIDATES
        return OPEN if self.answers else NO_ANSWER

    @property
    def is_open(self) -> bool:
        """A question with gold answers and no candidates: any free text may be right."""
        return self.answer_format == OPEN

    @property
    def is_mc(self) -> bool:
        return self.format == MC

    @property
    def letters(self) -> tuple[str, ...]:
        """The option letters of a lettered entry (``("A", "B", "C")``), else ``()``."""
        return tuple(LETTERS[: len(self.candidates)]) if self.is_mc else ()

    @property
    def gold_letter(self) -> str | None:
        """The letter of the gold option of a lettered entry, else None."""
        if not self.is_mc or self.gold is None:
            return None
        return LETTERS[self.gold]


@dataclass(frozen=True)
class Item:
    id: str
    langs: dict[str, LangEntry] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    # The language the item was written in, when the data set records it (ECLeKTic: the
    # language of the one Wikipedia that has the fact), so transfer can be measured from
    # there rather than from one --source for all; "" when the data set does not say.
    source: str = ""

    def __getitem__(self, lang: str) -> LangEntry:
        return self.langs[lang]

    def has(self, lang: str) -> bool:
        return lang in self.langs

    @property
    def n_candidates(self) -> int:
        return max((len(e.candidates) for e in self.langs.values()), default=0)

    @property
    def answer_format(self) -> str:
        """The item's format. Loaders make candidates and letters agree across languages;
        an item whose gold answers exist in some languages only counts as open."""
        formats = {e.answer_format for e in self.langs.values()}
        return next((f for f in (MC, CANDIDATES, OPEN) if f in formats), NO_ANSWER)

    @property
    def is_open(self) -> bool:
        return self.answer_format == OPEN


@dataclass
class ParallelDataset:
    """Items plus the languages the set declares (every item should have each of them)."""

    name: str
    languages: list[str]
    items: list[Item]
    source_path: str = ""
    # Items a loader left out (on_missing="skip" / on_error="skip"): id -> reason.
    dropped: dict[str, str] = field(default_factory=dict)
    # Everything the loader skipped or ignored, in file order, each message naming the file
    # and line: dropped items, malformed lines (on_error="skip") that may not even have an
    # id, and files with the data suffix that were not read as data.
    problems: list[str] = field(default_factory=list)
    # Language code -> the name the source used for it (a file name or JSONL key), so
    # 'eng_Latn' read as 'en' can be traced back; identical where nothing was mapped.
    original_codes: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    @property
    def has_candidates(self) -> bool:
        return any(e.candidates for it in self.items for e in it.langs.values())

    @property
    def has_open_items(self) -> bool:
        return any(it.is_open for it in self.items)

    @property
    def item_sources(self) -> dict[str, str]:
        """Item id -> its own source language, for the items that record one."""
        return {it.id: it.source for it in self.items if it.source}

    def by_source(self) -> dict[str, ParallelDataset]:
        """The items grouped by their own source language (``""``: items without one), each
        group a data set of its own, in order of first appearance. A run per group measures
        transfer from where each fact comes from (ECLeKTic's protocol) with today's
        one-source runs."""
        groups: dict[str, list[Item]] = {}
        for it in self.items:
            groups.setdefault(it.source, []).append(it)
        return {src: ParallelDataset(f"{self.name}-from-{src}" if src else self.name,
                                     list(self.languages), items, self.source_path,
                                     dict(self.dropped), list(self.problems),
                                     dict(self.original_codes))
                for src, items in groups.items()}

    def subset(self, limit: int | None = None, languages: Iterable[str] | None = None
               ) -> ParallelDataset:
        """First ``limit`` items, restricted to ``languages`` (order kept)."""
        langs = list(languages) if languages is not None else list(self.languages)
        items = self.items if limit is None else self.items[:limit]
        keep = set(langs)
        items = [Item(it.id, {k: v for k, v in it.langs.items() if k in keep}, it.meta,
                      it.source) for it in items]
        codes = {k: v for k, v in self.original_codes.items() if k in keep}
        return ParallelDataset(self.name, langs, items, self.source_path, dict(self.dropped),
                               list(self.problems), codes)

    def only(self, ids: Iterable[str]) -> ParallelDataset:
        """The items whose ids are in ``ids`` (data order kept); the loader's record
        (``dropped``, ``problems``, ``original_codes``) stays with them."""
        keep = set(ids)
        return dataclasses.replace(self, items=[it for it in self.items if it.id in keep],
                                   dropped=dict(self.dropped), problems=list(self.problems),
                                   original_codes=dict(self.original_codes))

    def split(self, fractions: str | Sequence[float], seed: int,
              need: Sequence[str] = ()) -> dict[str, Any]:
        """Seeded, disjoint train / dev / test ids: ``{"seed", "fractions", "train", "dev",
        "test"}`` (fractions as ``"0.4,0.2,0.4"`` or three numbers, normalised), checking
        that every split named in ``need`` has at least 5 items. :meth:`only` turns a list
        of ids back into a data set."""
        parsed = parse_split(fractions)
        parts = split_items([it.id for it in self.items], parsed, seed)
        small = [name for name in need if len(parts[name]) < 5]
        if small:
            raise ConfigError(f"split {fractions} on {len(self.items)} items leaves fewer "
                              f"than 5 in {', '.join(small)}; use more items or other fractions")
        return {"seed": seed, "fractions": list(parsed), **parts}

    def as_open(self) -> ParallelDataset:
        """The same items asked as open questions: candidates dropped, the gold candidate
        first among the gold answers (items without a gold answer are left out). Comparing
        a run of this with a run of the original shows what the candidate list does."""
        items = []
        for it in self.items:
            langs = {}
            for lang, e in it.langs.items():
                gold = (e.candidates[e.gold],) if e.gold is not None and e.candidates else ()
                answers = tuple(dict.fromkeys(a for a in (*gold, *e.answers) if a))
                if answers:
                    langs[lang] = LangEntry(e.prompt, answers=answers)
            if langs:
                items.append(Item(it.id, langs, it.meta, it.source))
        return ParallelDataset(self.name + " (open)", list(self.languages), items,
                               self.source_path, dict(self.dropped), list(self.problems),
                               dict(self.original_codes))

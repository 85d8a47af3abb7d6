"""The parallel item: one fact (or sentence) asked in several languages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

MASK = "<mask>"


@dataclass(frozen=True)
class LangEntry:
    """One item in one language.

    ``prompt`` is a question, a cloze sentence holding one ``<mask>``, or (for parallel
    sentence data) the sentence itself. ``answers`` are gold answer strings (aliases);
    ``candidates`` the answer options, in the same order in every language of the item
    (candidate j is the same entity everywhere). ``gold`` indexes the gold candidate.
    """

    prompt: str
    answers: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()
    gold: int | None = None

    @property
    def is_cloze(self) -> bool:
        return MASK in self.prompt


@dataclass(frozen=True)
class Item:
    id: str
    langs: dict[str, LangEntry] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, lang: str) -> LangEntry:
        return self.langs[lang]

    def has(self, lang: str) -> bool:
        return lang in self.langs

    @property
    def n_candidates(self) -> int:
        return max((len(e.candidates) for e in self.langs.values()), default=0)


@dataclass
class ParallelDataset:
    """Items plus the languages the set declares (every item should have each of them)."""

    name: str
    languages: list[str]
    items: list[Item]
    source_path: str = ""
    # Items a loader left out (on_missing="skip" / on_error="skip"): id -> reason.
    dropped: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    @property
    def has_candidates(self) -> bool:
        return any(e.candidates for it in self.items for e in it.langs.values())

    def subset(self, limit: int | None = None, languages: Iterable[str] | None = None
               ) -> ParallelDataset:
        """First ``limit`` items, restricted to ``languages`` (order kept)."""
        langs = list(languages) if languages is not None else list(self.languages)
        items = self.items if limit is None else self.items[:limit]
        keep = set(langs)
        items = [Item(it.id, {k: v for k, v in it.langs.items() if k in keep}, it.meta)
                 for it in items]
        return ParallelDataset(self.name, langs, items, self.source_path, dict(self.dropped))

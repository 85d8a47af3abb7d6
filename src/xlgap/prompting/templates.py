"""Baseline prompts: the question alone in the asked language.

Base models get a few-shot completion in that language (other items of the set as shots,
chosen by a fixed rule so every language sees parallel shots); chat models get one user
turn through the tokenizer's chat template. Cloze items (a sentence with ``<mask>``)
become a completion of the sentence up to the mask when the mask is not at its start.

Lettered multiple-choice entries (``format: "mc"``) show their options as ``A. ...``
lines under the question and are answered with a letter; with ``shuffle_options`` the
order of the options is permuted per (item, language) by a fixed rule, which separates a
position bias from the gap. Open entries (gold answers, no candidates) are asked like
questions and judged by alias match (:func:`xlgap.prompting.answers.answer_starts_with`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xlgap.data.items import LETTERS, MASK, Item, LangEntry
from xlgap.models.base import Backend
from xlgap.prompting.answers import OTHER, answer_starts_with, map_answer

CHAT_INSTRUCTION = ("Answer with only the answer (a few words), in the language of the "
                    "question.")
CHAT_MC_INSTRUCTION = "Answer with only the letter of the right option."
BLANK = "___"


@dataclass(frozen=True)
class ScoringPrompt:
    """A prompt and one continuation per candidate (for exact scoring)."""

    prompt: str
    continuations: tuple[str, ...]


def _cloze_parts(entry: LangEntry) -> tuple[str, str, str]:
    """(text before the mask, the space before it, text after it)."""
    before, _, after = entry.prompt.partition(MASK)
    stripped = before.rstrip()
    return stripped, before[len(stripped):], after


def _uses_prefix(entry: LangEntry) -> bool:
    return entry.is_cloze and not entry.is_mc and bool(_cloze_parts(entry)[0])


def _gold_text(entry: LangEntry) -> str:
    if entry.gold is not None and entry.candidates:
        return entry.candidates[entry.gold]
    return entry.answers[0] if entry.answers else ""


def question_text(entry: LangEntry, order: Sequence[int] | None = None) -> str:
    """The question as a person would read it (cloze masks shown as a blank; a lettered
    entry's options listed under it, in ``order`` when given)."""
    text = entry.prompt.replace(MASK, BLANK)
    if entry.is_mc:
        shown = order if order is not None else range(len(entry.candidates))
        text += "".join(f"\n{LETTERS[pos]}. {entry.candidates[j]}"
                        for pos, j in enumerate(shown))
    return text


def option_order(item_id: str, lang: str, n: int, shuffle: bool) -> list[int]:
    """The order in which a lettered entry shows its options: candidate indices by
    position (identity unless ``shuffle``; then a permutation fixed by item and language)."""
    if not shuffle:
        return list(range(n))
    seed = int.from_bytes(hashlib.sha256(f"{item_id}\t{lang}".encode()).digest()[:8], "little")
    return [int(j) for j in np.random.default_rng(seed).permutation(n)]


def answer_continuations(entry: LangEntry, *, chat: bool, cloze_prefix: bool,
                         order: Sequence[int] | None = None) -> tuple[str, ...]:
    """One continuation per candidate, in candidate order, ending where an answer ends:
    the rest of the sentence after a cloze prefix, the option's letter for a lettered
    entry (shown in ``order``), the candidate itself for a chat model, else the candidate
    on the answer line."""
    if entry.is_mc:
        shown = list(order) if order is not None else list(range(len(entry.candidates)))
        letters = {j: LETTERS[pos] for pos, j in enumerate(shown)}
        return tuple(letters[j] if chat else f" {letters[j]}\n"
                     for j in range(len(entry.candidates)))
    if cloze_prefix and not chat:
        _, space, after = _cloze_parts(entry)
        return tuple(f"{space}{c}{after}" for c in entry.candidates)
    if chat:
        return tuple(entry.candidates)
    return tuple(f" {c}\n" for c in entry.candidates)


def open_aliases(item: Item) -> dict[str, list[str]]:
    """The gold aliases of an item in each of its languages (open entries: their
    ``answers``; candidate entries: the gold candidate and its answers)."""
    out: dict[str, list[str]] = {}
    for code, entry in item.langs.items():
        names = [a for a in entry.answers if a]
        if entry.gold is not None and entry.candidates and not entry.is_mc:
            names.insert(0, entry.candidates[entry.gold])
        if names:
            out[code] = list(dict.fromkeys(names))
    return out


def next_shots(items: Sequence[Item], index: dict[str, int], item: Item, shots: int,
               langs: Sequence[str], answer_lang: str) -> list[Item]:
    """Few-shot examples for ``item``: the next ``shots`` items after it (cyclically) that
    have every language in ``langs`` and a gold answer in ``answer_lang``. The rule is
    the same in every language, so all languages see parallel shots."""
    if not items or shots <= 0:
        return []
    start = index.get(item.id, -1)
    chosen: list[Item] = []
    for step in range(1, len(items)):
        other = items[(start + step) % len(items)]
        if (other.id != item.id and all(other.has(lang) for lang in langs)
                and other.has(answer_lang) and _gold_text(other[answer_lang])):
            chosen.append(other)
            if len(chosen) == shots:
                break
    return chosen


class PromptBuilder:
    """Builds baseline prompts for one data set and one backend, and maps answers back."""

    def __init__(self, backend: Backend, items: Sequence[Item], shots: int = 3, *,
                 shuffle_options: bool = False) -> None:
        self.backend = backend
        self.items = list(items)
        self.shots = shots
        self.shuffle_options = shuffle_options
        self._index = {it.id: i for i, it in enumerate(self.items)}

    def order(self, item_id: str, lang: str, entry: LangEntry) -> list[int] | None:
        """The option order of a lettered entry (None for any other)."""
        if not entry.is_mc:
            return None
        return option_order(item_id, lang, len(entry.candidates), self.shuffle_options)

    def map_generated(self, item: Item, lang: str, text: str) -> int:
        """The answer concept a generated ``text`` names: a candidate index (a lettered
        entry's letter mapped back through its order, or the option's text), 0 for an
        open entry's answer that matches a gold alias, else OTHER."""
        entry = item[lang]
        if entry.is_open:
            # one rule in every language: an alias of any language of the item starts the
            # answer (the answer's language is reported apart, see open_aliases)
            aliases = [a for names in open_aliases(item).values() for a in names]
            return 0 if answer_starts_with(text, aliases, lang) else OTHER
        aliases = {entry.gold: [a for a in entry.answers if a]} \
            if entry.gold is not None else {}
        if entry.is_mc:
            order = self.order(item.id, lang, entry) or []
            by_letter = map_answer(text, [LETTERS[pos] for pos in range(len(order))])
            if by_letter != OTHER:
                return order[by_letter]
        return map_answer(text, entry.candidates, aliases, lang)

    def shot_items(self, item: Item, lang: str) -> list[Item]:
        """The next ``shots`` items after ``item`` (cyclically) that have ``lang``."""
        return next_shots(self.items, self._index, item, self.shots, [lang], lang)

    # -- few-shot blocks ---------------------------------------------------------------
    def _shot(self, item_id: str, lang: str, entry: LangEntry) -> str:
        if entry.is_mc:
            order = self.order(item_id, lang, entry) or []
            letter = LETTERS[order.index(entry.gold)] if entry.gold is not None else ""
            return f"Q: {question_text(entry, order)}\nA: {letter}"
        gold = _gold_text(entry)
        if _uses_prefix(entry):
            return entry.prompt.replace(MASK, gold)
        return f"Q: {question_text(entry)}\nA: {gold}"

    def _query(self, item_id: str, lang: str, entry: LangEntry) -> str:
        if _uses_prefix(entry):
            return _cloze_parts(entry)[0]
        return f"Q: {question_text(entry, self.order(item_id, lang, entry))}\nA:"

    def _sep(self, entry: LangEntry) -> str:
        return "\n" if _uses_prefix(entry) else "\n\n"

    def generation_prompt(self, item: Item, lang: str) -> str:
        """The prompt whose completion is the answer (cut at the first newline)."""
        entry = item[lang]
        if self.backend.is_chat:
            instruction = CHAT_MC_INSTRUCTION if entry.is_mc else CHAT_INSTRUCTION
            text = question_text(entry, self.order(item.id, lang, entry))
            return self.backend.chat_prompt(f"{instruction}\n\n{text}")
        shots = [self._shot(s.id, lang, s[lang]) for s in self.shot_items(item, lang)]
        return self._sep(entry).join([*shots, self._query(item.id, lang, entry)])

    def scoring_prompt(self, item: Item, lang: str) -> ScoringPrompt:
        """Prompt + one continuation per candidate, ending where an answer ends."""
        entry = item[lang]
        return ScoringPrompt(self.generation_prompt(item, lang), answer_continuations(
            entry, chat=self.backend.is_chat, cloze_prefix=_uses_prefix(entry),
            order=self.order(item.id, lang, entry)))

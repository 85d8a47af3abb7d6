"""Baseline prompts: the question alone in the asked language.

Base models get a few-shot completion in that language (other items of the set as shots,
chosen by a fixed rule so every language sees parallel shots); chat models get one user
turn through the tokenizer's chat template. Cloze items (a sentence with ``<mask>``)
become a completion of the sentence up to the mask when the mask is not at its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xlgap.data.items import MASK, Item, LangEntry
from xlgap.models.base import Backend

CHAT_INSTRUCTION = ("Answer with only the answer (a few words), in the language of the "
                    "question.")
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
    return entry.is_cloze and bool(_cloze_parts(entry)[0])


def _gold_text(entry: LangEntry) -> str:
    if entry.gold is not None and entry.candidates:
        return entry.candidates[entry.gold]
    return entry.answers[0] if entry.answers else ""


def question_text(entry: LangEntry) -> str:
    """The question as a person would read it (cloze masks shown as a blank)."""
    return entry.prompt.replace(MASK, BLANK)


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
    """Builds baseline prompts for one data set and one backend."""

    def __init__(self, backend: Backend, items: Sequence[Item], shots: int = 3) -> None:
        self.backend = backend
        self.items = list(items)
        self.shots = shots
        self._index = {it.id: i for i, it in enumerate(self.items)}

    def shot_items(self, item: Item, lang: str) -> list[Item]:
        """The next ``shots`` items after ``item`` (cyclically) that have ``lang``."""
        return next_shots(self.items, self._index, item, self.shots, [lang], lang)

    # -- few-shot blocks ---------------------------------------------------------------
    @staticmethod
    def _shot(entry: LangEntry) -> str:
        gold = _gold_text(entry)
        if _uses_prefix(entry):
            return entry.prompt.replace(MASK, gold)
        return f"Q: {question_text(entry)}\nA: {gold}"

    def _query(self, entry: LangEntry) -> str:
        if _uses_prefix(entry):
            return _cloze_parts(entry)[0]
        return f"Q: {question_text(entry)}\nA:"

    def _sep(self, entry: LangEntry) -> str:
        return "\n" if _uses_prefix(entry) else "\n\n"

    def generation_prompt(self, item: Item, lang: str) -> str:
        """The prompt whose completion is the answer (cut at the first newline)."""
        entry = item[lang]
        if self.backend.is_chat:
            return self.backend.chat_prompt(f"{CHAT_INSTRUCTION}\n\n{question_text(entry)}")
        shots = [self._shot(s[lang]) for s in self.shot_items(item, lang)]
        return self._sep(entry).join([*shots, self._query(entry)])

    def scoring_prompt(self, item: Item, lang: str) -> ScoringPrompt:
        """Prompt + one continuation per candidate, ending where an answer ends."""
        entry = item[lang]
        prompt = self.generation_prompt(item, lang)
        if _uses_prefix(entry) and not self.backend.is_chat:
            _, space, after = _cloze_parts(entry)
            conts = tuple(f"{space}{c}{after}" for c in entry.candidates)
        elif self.backend.is_chat:
            conts = tuple(entry.candidates)
        else:
            conts = tuple(f" {c}\n" for c in entry.candidates)
        return ScoringPrompt(prompt, conts)

"""Judging free-text answers to open questions with a model (``--judge MODEL``).

Without a judge an open answer is right when a gold alias of any language of the item
starts it (:func:`xlgap.prompting.answers.answer_starts_with`). A judge model instead reads the
question, the gold answers and the answer, and says yes or no; it decides every
non-empty answer (an empty one is wrong without asking). The prompt (base models get it
as a completion, chat models as one user turn):

    Decide whether the answer to the question is correct: it is when it names the same
    thing as one of the gold answers, in any language or spelling.
    Question: <the question>
    Gold answers: <every alias of every language of the item>; ...
    Answer: <the answer's first line>
    Correct (yes or no):

The judge answers greedily (3 tokens); its first word (the first run of letters, so
"**Yes**", "Yes," and "yes." count) "yes" (or "y", "true", "correct") is right, anything
else wrong. Its calls go through its backend and the result store like every
other call, so a rerun asks nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from xlgap.data.items import Item
from xlgap.models.base import Backend
from xlgap.prompting.answers import OTHER
from xlgap.prompting.templates import open_aliases, question_text

JUDGE_INSTRUCTION = ("Decide whether the answer to the question is correct: it is when it "
                     "names the same thing as one of the gold answers, in any language or "
                     "spelling.")
_YES = ("yes", "y", "true", "correct")


_WORD = re.compile(r"[^\W\d_]+")  # a run of letters (any script)


def _says_yes(reply: str) -> bool:
    """Whether the judge's first word is a yes: the first run of letters, so markdown,
    punctuation and case around it ("**Yes**", "Yes,", " yes.") do not matter."""
    word = _WORD.search(reply)
    return word is not None and word.group(0).lower() in _YES


def judge_prompt(backend: Backend, question: str, gold: Sequence[str], answer: str) -> str:
    body = (f"{JUDGE_INSTRUCTION}\nQuestion: {question}\nGold answers: {'; '.join(gold)}\n"
            f"Answer: {answer}\nCorrect (yes or no):")
    return backend.chat_prompt(body) if backend.is_chat else body


class Judge:
    """Decides open answers with ``backend``; ``name`` is recorded in run.json."""

    def __init__(self, backend: Backend, name: str) -> None:
        self.backend = backend
        self.name = name

    def judge(self, item: Item, lang: str, texts: Sequence[str]) -> list[int]:
        """Per text: 0 (the gold concept) when judged right, else OTHER."""
        entry = item[lang]
        answers = [t.strip().split("\n", 1)[0].strip() for t in texts]
        asks = sorted({a for a in answers if a})
        # the gold answers of every language of the item: the judge's rule ("in any
        # language") and the alias rule are then the same
        gold = list(dict.fromkeys(a for names in open_aliases(item).values() for a in names))
        prompts = [judge_prompt(self.backend, question_text(entry), gold, a) for a in asks]
        outs = self.backend.generate(prompts, n=1, temperature=0.0, max_new_tokens=3,
                                     seed=0) if prompts else []
        verdicts = {a: _says_yes(o[0]) for a, o in zip(asks, outs, strict=True)}
        return [0 if a and verdicts[a] else OTHER for a in answers]

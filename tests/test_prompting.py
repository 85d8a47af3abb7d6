"""Answer mapping and golden baseline prompts for base and chat models."""

from __future__ import annotations

import pytest

from fake_backend import FakeBackend
from xlgap.data.items import Item, LangEntry
from xlgap.prompting import OTHER, PromptBuilder, map_answer, normalize

CANDS_EN = ["Paris", "Lyon", "New York", "York"]


@pytest.mark.parametrize(("text", "expected"), [
    (" Paris", 0), ("paris.", 0), ("PARIS, the capital", 0), ("  Paris\nLyon", 0),
    (" New York City", 2), ("York", 3), ("It is Lyon.", 1), ("Parisian food", OTHER),
    ("", OTHER), ("   \n", OTHER), ("Lyon or Paris", 1), ("I don't know", OTHER),
    ("Ｐａｒｉｓ", 0),  # full-width forms fold under NFKC
])
def test_map_answer_latin(text, expected):
    assert map_answer(text, CANDS_EN) == expected


def test_map_answer_scripts_without_spaces():
    cands = ["パリ", "リヨン", "東京"]
    assert map_answer("パリです。", cands) == 0
    assert map_answer("首都は東京だと思う", cands) == 2
    assert map_answer("ロンドン", cands) == OTHER
    assert map_answer("巴黎。", ["巴黎", "里昂"]) == 0


def test_map_answer_aliases_and_cyrillic_arabic():
    assert map_answer("Париж", ["Париж", "Лион"]) == 0
    assert map_answer("باريس", ["لندن", "باريس"]) == 1
    assert map_answer("NYC", CANDS_EN, aliases={2: ["NYC"]}) == 2


def test_normalize():
    assert normalize("  Hello,   WORLD! ") == "hello world"
    assert normalize("Straße") == "strasse"


def _items() -> list[Item]:
    def entry(q, cands, gold=0):
        return LangEntry(q, (cands[gold],), tuple(cands), gold)
    return [
        Item("a", {"en": entry("What is the capital of France?", ["Paris", "Lyon"]),
                   "fr": entry("Quelle est la capitale de la France ?", ["Paris", "Lyon"])}),
        Item("b", {"en": entry("What is the capital of Japan?", ["Kyoto", "Tokyo"], 1),
                   "fr": entry("Quelle est la capitale du Japon ?", ["Kyoto", "Tokyo"], 1)}),
        Item("c", {"en": entry("The capital of Italy is <mask>.", ["Rome", "Milan"]),
                   "fr": entry("<mask> est la capitale de l'Italie.", ["Rome", "Milan"])}),
    ]


def test_base_model_prompts_are_few_shot_in_the_asked_language():
    items = _items()
    builder = PromptBuilder(FakeBackend(), items, shots=1)
    assert builder.generation_prompt(items[0], "fr") == (
        "Q: Quelle est la capitale du Japon ?\nA: Tokyo\n\n"
        "Q: Quelle est la capitale de la France ?\nA:")
    # a cloze with a mask after some text is completed from the prefix
    assert builder.generation_prompt(items[2], "en") == (
        "Q: What is the capital of France?\nA: Paris\nThe capital of Italy is")
    sp = builder.scoring_prompt(items[2], "en")
    assert sp.continuations == (" Rome.", " Milan.")
    # a mask at the start falls back to a question with a blank
    assert builder.generation_prompt(items[2], "fr").endswith(
        "Q: ___ est la capitale de l'Italie.\nA:")
    assert builder.scoring_prompt(items[0], "en").continuations == (" Paris\n", " Lyon\n")


class ChatFake(FakeBackend):
    is_chat = True

    def chat_prompt(self, user_message: str) -> str:
        return f"<user>{user_message}</user><model>"


def test_chat_model_prompts_use_the_chat_template():
    items = _items()
    builder = PromptBuilder(ChatFake(), items, shots=2)
    prompt = builder.generation_prompt(items[1], "en")
    assert prompt.startswith("<user>Answer with only the answer")
    assert prompt.endswith("What is the capital of Japan?</user><model>")
    assert "Tokyo" not in prompt  # no shots leak the answer
    assert builder.scoring_prompt(items[1], "en").continuations == ("Kyoto", "Tokyo")

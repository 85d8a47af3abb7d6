"""Answer mapping and golden baseline prompts for base and chat models."""

from __future__ import annotations

import pytest

from fake_backend import FakeBackend
from xlgap.data.items import Item, LangEntry
from xlgap.prompting import OTHER, PromptBuilder, map_answer, normalize
from xlgap.prompting.answers import answer_matches

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


@pytest.mark.parametrize(("text", "lang", "expected"), [
    ("Pérou", None, "perou"), ("ÉCOLE", "fr", "ecole"), ("São Paulo", "pt", "sao paulo"),
    ("Ελλάδα", "el", "ελλαδα"), ("Ёлка", "ru", "елка"),  # Greek tonos, Cyrillic diaeresis
    ("مُحَمَّد", "ar", "محمد"), ("أحمد", "ar", "احمد"),  # harakat and hamza are optional
    ("ガイド", "ja", "ガイド"), ("東京", "ja", "東京"),  # kana voicing marks are letters
    ("서울은", "ko", "서울은"), ("क़िला", "hi", "क़िला"),
    ("The Beatles", "en", "beatles"), ("l'Italie", "fr", "italie"), ("l’Italie", "fr", "italie"),
    ("Los Ángeles", "es", "angeles"), ("Die Zeit", "de", "zeit"), ("O Porto", "pt", "porto"),
    ("Het Loo", "nl", "loo"), ("Els Pirineus", "ca", "pirineus"), ("Il Cairo", "it", "cairo"),
    ("The Beatles", None, "beatles"),  # no language: any listed article
    ("Die Zeit", "en", "die zeit"),  # an article of another language stays
    ("A", "en", "a"), ("the", "en", "the"),  # a lone word is never dropped
    ("Ｔｏｋｙｏ　Ｔｏｗｅｒ", None, "tokyo tower"),
])
def test_normalize_across_scripts(text, lang, expected):
    assert normalize(text, lang) == expected


@pytest.mark.parametrize(("text", "aliases", "lang"), [
    # Latin: accents, case, punctuation, articles on either side
    ("Leonard de Vinci.", ["Léonard de Vinci"], "fr"),
    ("La tour Eiffel", ["tour Eiffel"], "fr"),
    ("Tour Eiffel", ["la Tour Eiffel"], "fr"),
    ("It is the Beatles, I think", ["Beatles"], "en"),
    ("los angeles", ["Los Ángeles"], "es"),
    ("PERÚ", ["Peru"], None),
    ("Answer: São Paulo\nbecause ...", ["Sao Paulo"], "pt"),
    # Cyrillic and Greek
    ("Москва.", ["москва"], "ru"),
    ("Столица — Москва", ["Москва"], "ru"),
    ("Ёлка", ["елка"], "ru"),
    ("Αθήνα", ["ΑΘΗΝΑ"], "el"),
    # Arabic: vowel marks, hamza, taa marbuta, Persian letters
    ("القاهرة", ["القاهره"], "ar"),
    ("إنها القاهِرة", ["القاهرة"], "ar"),
    ("کتاب", ["كتاب"], "fa"),
    # scripts without spaces: the alias may sit inside the text
    ("東京です。", ["東京"], "ja"),
    ("首都は東京だと思います", ["東京"], "ja"),
    ("答案是北京。", ["北京"], "zh"),
    ("它建于1945年", ["1945"], "zh"),
    # Korean particles attach to the noun
    ("서울은 한국의 수도입니다", ["서울"], "ko"),
    ("정답: 서울입니다", ["서울"], "ko"),
])
def test_answer_matches(text, aliases, lang):
    assert answer_matches(text, aliases, lang)


@pytest.mark.parametrize(("text", "aliases", "lang"), [
    ("Parisian food", ["Paris"], "en"),  # not a whole word
    ("Lyon", ["Paris"], "en"),
    ("", ["Paris"], "en"),
    ("   \n", ["Paris"], "en"),
    ("Paris", [], "en"),
    ("Paris", ["?!", ""], "en"),  # aliases that normalise to nothing match nothing
    ("Marseille\nParis", ["Paris"], "fr"),  # only the first line is the answer
    ("Moskau", ["Москва"], "de"),  # no transliteration
    ("京都", ["東京"], "ja"),
    ("부산", ["서울"], "ko"),
])
def test_answer_does_not_match(text, aliases, lang):
    assert not answer_matches(text, aliases, lang)


def test_map_answer_with_articles_accents_and_letters():
    assert map_answer("the Hague", ["The Hague", "Rome"]) == 0
    assert map_answer("Hague", ["The Hague", "Rome"]) == 0
    assert map_answer("La Haye", ["Rome", "La Haye"], lang="fr") == 1
    assert map_answer("Lima, Pérou", ["Quito", "Lima"]) == 1
    assert map_answer("Перу", ["Перу", "Чили"]) == 0
    # the form as written comes first: 'A. Paris' names option 'A', not the city
    assert map_answer("A. Paris", ["A", "B", "Paris"]) == 0
    assert map_answer("It is 1945年", ["1945", "1939"]) == 0


def test_map_answer_accents_still_separate_candidates():
    """BMLAMA-17 has items with both Αθήνα (Athens) and Αθηνά (Athena) as candidates: an
    exact spelling decides before accents are ignored."""
    cands = ["Αθηνά", "Μόσχα", "Αθήνα"]
    assert map_answer("Αθήνα", cands, lang="el") == 2
    assert map_answer("Αθηνά.", cands, lang="el") == 0
    assert map_answer("ΑΘΗΝΑ", ["Αθηνά", "Μόσχα"], lang="el") == 0  # unique once folded
    assert map_answer("luận lý học", ["luân lý học", "luận lý học"], lang="vi") == 1


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

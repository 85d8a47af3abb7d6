"""Golden prompts of every intervention strategy (base and chat models), the choice of
translation languages, and the answer parsers on clean, messy and empty outputs."""

from __future__ import annotations

import pytest

from fake_backend import FakeBackend
from xlgap.data.items import Item, LangEntry, ParallelDataset
from xlgap.errors import ConfigError
from xlgap.interventions.parsing import clean_answer, parse_after_marker, parse_direct
from xlgap.interventions.strategies import (
    StrategyOptions,
    get_strategy,
    majority,
    parse_strategy_list,
)
from xlgap.prompting import OTHER


def _e(prompt: str, cands: list[str], gold: int = 0) -> LangEntry:
    return LangEntry(prompt, (cands[gold],), tuple(cands), gold)


ITEMS = [
    Item("cap-fr", {"en": _e("What is the capital of France?", ["Paris", "Lyon"]),
                    "fr": _e("Quelle est la capitale de la France ?", ["Paris", "Lyon"]),
                    "ja": _e("フランスの首都はどこですか？", ["パリ", "リヨン"]),
                    "ru": _e("Какая столица Франции?", ["Париж", "Лион"])}),
    Item("born", {"en": _e("Charles II of Spain was born in <mask>.", ["London", "Madrid"], 1),
                  "fr": _e("Charles II d'Espagne est né à <mask>.", ["Londres", "Madrid"], 1),
                  "ja": _e("カルロス2世は<mask>に生まれました。", ["ロンドン", "マドリード"], 1),
                  "ru": _e("Карл II родился в <mask>.", ["Лондоне", "Мадриде"], 1)}),
    Item("cap-jp", {"en": _e("What is the capital of Japan?", ["Kyoto", "Tokyo"], 1),
                    "fr": _e("Quelle est la capitale du Japon ?", ["Kyoto", "Tokyo"], 1),
                    "ja": _e("日本の首都はどこですか？", ["京都", "東京"], 1),
                    "ru": _e("Какая столица Японии?", ["Киото", "Токио"], 1)}),
    # No Russian: the choice of translation languages must skip it.
    Item("moon", {"en": _e("What orbits the Earth?", ["the Moon", "Mars"]),
                  "fr": _e("Qu'est-ce qui tourne autour de la Terre ?", ["la Lune", "Mars"]),
                  "ja": _e("地球の周りを回るのは何ですか？", ["月", "火星"])}),
]
DATA = ParallelDataset("golden", ["en", "fr", "ja", "ru"], ITEMS)
OPTS = StrategyOptions(shots=1)


class ChatFake(FakeBackend):
    is_chat = True

    def chat_prompt(self, user_message: str) -> str:
        return f"<user>{user_message}</user><model>"


def strat(name: str, chat: bool = False, **opts):
    backend = ChatFake() if chat else FakeBackend()
    options = StrategyOptions(**{"shots": 1, **opts})
    return get_strategy(name, backend, DATA, options)


# -- base models ----------------------------------------------------------------------------


def test_baseline_delegates_to_prompt_builder():
    s = strat("baseline")
    assert s.prompt(ITEMS[0], "fr") == (
        "Charles II d'Espagne est né à Madrid.\n\n"
        "Q: Quelle est la capitale de la France ?\nA:")
    assert s.prompt(ITEMS[1], "ja") == (
        "Q: 日本の首都はどこですか？\nA: 東京\nカルロス2世は")


def test_tren_base_prompts_with_oracle_translations():
    s = strat("tren-2")
    tr = s.oracle_translations(ITEMS[0], "fr")
    assert tr == {"en": "What is the capital of France?", "ja": "フランスの首都はどこですか？"}
    assert s.prompt(ITEMS[0], "fr", tr) == (
        "English: Charles II of Spain was born in ___.\n"
        "Japanese: カルロス2世は___に生まれました。\n"
        "French: Charles II d'Espagne est né à Madrid.\n\n"
        "English: What is the capital of France?\n"
        "Japanese: フランスの首都はどこですか？\n"
        "French: Quelle est la capitale de la France ?\n"
        "Answer (French):")
    # A cloze with text before the mask ends as a completion, as in the baseline.
    s3 = strat("tren-3")
    tr = s3.oracle_translations(ITEMS[1], "ja")
    assert list(tr) == ["en", "fr", "ru"]
    assert s3.prompt(ITEMS[1], "ja", tr) == (
        "English: What is the capital of Japan?\n"
        "French: Quelle est la capitale du Japon ?\n"
        "Russian: Какая столица Японии?\n"
        "Japanese: 日本の首都はどこですか？\n"
        "Answer (Japanese): 東京\n\n"
        "English: Charles II of Spain was born in ___.\n"
        "French: Charles II d'Espagne est né à ___.\n"
        "Russian: Карл II родился в ___.\n"
        "Japanese: カルロス2世は")


def test_tta_base_prompt_demonstrates_translate_then_answer():
    s = strat("tta-1")
    assert s.prompt(ITEMS[1], "ja") == (
        "Translate each question into English, then answer it in Japanese.\n\n"
        "Question (Japanese): 日本の首都はどこですか？\n"
        "English: What is the capital of Japan?\n"
        "Answer (Japanese): 東京\n\n"
        "Question (Japanese): カルロス2世は___に生まれました。\n"
        "English:")
    s2 = strat("tta-2", shots=0)
    assert s2.prompt(ITEMS[0], "ru") == (
        "Translate each question into English and French, then answer it in Russian.\n\n"
        "Question (Russian): Какая столица Франции?\nEnglish:")


def test_tea_base_prompts():
    s = strat("tea")
    assert s.translation_prompt(ITEMS[1], "カルロス2世は___に生まれました。", "ja", "en") == (
        "Japanese: 日本の首都はどこですか？\n"
        "English: What is the capital of Japan?\n\n"
        "Japanese: カルロス2世は___に生まれました。\n"
        "English:")
    # The model's translation of a cloze keeps the blank: back to a completion prompt.
    assert s.answer_prompt(ITEMS[1], "ja", "Charles II was born in ___.") == (
        "Q: What is the capital of Japan?\nA: Tokyo\nCharles II was born in")
    # A question that is no cloze stays a question even if the model wrote a blank.
    assert s.answer_prompt(ITEMS[0], "fr", "The capital of ___ France?") == (
        "Charles II of Spain was born in Madrid.\n\nQ: The capital of ___ France?\nA:")
    # English itself is answered as in the baseline.
    assert s.answer_prompt(ITEMS[0], "en", "ignored") == strat("baseline").prompt(
        ITEMS[0], "en")
    assert s.term_prompt(ITEMS[1], "Madrid", "en", "ja") == (
        "English: Tokyo\nJapanese: 東京\n\nEnglish: Madrid\nJapanese:")


# -- chat models ----------------------------------------------------------------------------


def test_chat_prompts_are_one_user_turn():
    assert strat("baseline", chat=True).prompt(ITEMS[0], "fr") == (
        "<user>Answer with only the answer (a few words), in the language of the question."
        "\n\nQuelle est la capitale de la France ?</user><model>")
    s = strat("tren-2", chat=True)
    assert s.prompt(ITEMS[1], "ja", s.oracle_translations(ITEMS[1], "ja")) == (
        "<user>Answer the question with only the answer (a few words), in Japanese. The "
        "same question in other languages is given below it to help.\n\n"
        "Japanese: カルロス2世は___に生まれました。\n"
        "English: Charles II of Spain was born in ___.\n"
        "French: Charles II d'Espagne est né à ___.</user><model>")
    assert strat("tta-2", chat=True).prompt(ITEMS[0], "ru") == (
        "<user>First translate the question into English and French, one line per language "
        "('English: ...', 'French: ...'). Then write a last line 'Answer: ' followed by only "
        "the answer (a few words), in Russian.\n\nRussian: Какая столица Франции?"
        "</user><model>")
    tea = strat("tea", chat=True)
    assert tea.translation_prompt(ITEMS[0], "Quelle ?", "fr", "en") == (
        "<user>Translate this French text into English. Reply with the translation only."
        "\n\nQuelle ?</user><model>")
    assert tea.answer_prompt(ITEMS[1], "fr", "Charles II was born in ___.") == (
        "<user>Answer with only the answer (a few words), in the language of the question."
        "\n\nCharles II was born in ___.</user><model>")
    assert tea.term_prompt(ITEMS[1], "London", "en", "ru") == (
        "<user>Translate this English word or name into Russian. Reply with the "
        "translation only.\n\nLondon</user><model>")


# -- which translation languages ----------------------------------------------------------


def test_translation_languages_order_missing_and_other_scripts():
    s = strat("tren-2")
    # source first, then data order, never the asked language
    assert s.translation_languages(ITEMS[0], "ja", 2) == ["en", "fr"]
    assert s.translation_languages(ITEMS[0], "en", 2) == ["fr", "ja"]
    # an item without Russian skips it
    assert strat("tren-3").translation_languages(ITEMS[3], "fr", 2) == ["en", "ja"]
    with pytest.raises(ConfigError, match="needs 3 translation language"):
        strat("tren-3").translation_languages(ITEMS[3], "fr", 3)
    # other scripts than the source's (Latin): ja and ru only
    o = strat("tren-2", other_scripts=True)
    assert o.pool("fr") == ["ja", "ru"]
    assert o.pool("ja") == ["ru"]
    assert o.oracle_translations(ITEMS[0], "fr") == {"ja": "フランスの首都はどこですか？",
                                                      "ru": "Какая столица Франции?"}
    with pytest.raises(ConfigError, match="other-scripts"):
        o.check([(ITEMS[0], "ja")])
    # an explicit order wins
    assert strat("tren-1", translation_langs=("ru", "en")).pool("fr") == ["ru", "en"]


class Translator(FakeBackend):
    """Translates by looking the text up in the parallel data (greedy calls only)."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[str] = []

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        from xlgap.data.languages import language_name
        from xlgap.prompting.templates import question_text

        self.prompts.extend(prompts)
        out = []
        for p in prompts:
            if temperature == 0:
                text_line, dst_line = p.split("\n\n")[-1].split("\n")
                text = text_line.split(": ", 1)[1]
                dst = next(c for c in DATA.languages if language_name(c) + ":" == dst_line)
                hit = next(it for it in ITEMS for c in it.langs
                           if question_text(it[c]) == text)
                out.append([f" {question_text(hit[dst])}\nmore"] * n)
            else:
                out.append([" Tokyo"] * n)
        return out


def test_tren_with_model_translations_uses_the_models_text():
    backend = Translator()
    s = get_strategy("tren-1", backend, DATA, StrategyOptions(shots=1, translations="model",
                                                              samples=2))
    (res,) = s.run([(ITEMS[2], "fr")])
    # one greedy translation call (the prompt is the few-shot translation prompt), then
    # the answer prompt holds the model's (first-line) translation
    assert backend.prompts[0] == s.translation_prompt(
        ITEMS[2], "Quelle est la capitale du Japon ?", "fr", "en")
    assert res.intermediate["translations"] == {"en": "What is the capital of Japan?"}
    assert res.intermediate["translation_source"] == "model"
    assert backend.prompts[1] == s.prompt(ITEMS[2], "fr", {"en": "What is the capital of Japan?"})
    assert res.answers == [1, 1] and res.texts == ["Tokyo", "Tokyo"] and not any(res.failed)


# -- registry -----------------------------------------------------------------------------


def test_registry_names_and_errors():
    assert strat("TrEn-3").name == "tren-3"
    assert strat("vote-5").k == 5
    assert parse_strategy_list("baseline, tta-1,baseline,TEA") == ["baseline", "tta-1", "tea"]
    with pytest.raises(ConfigError, match="unknown strategy 'tren'"):
        parse_strategy_list("tren")
    with pytest.raises(ConfigError, match="k must be >= 1"):
        strat("tta-0")
    with pytest.raises(ConfigError, match="samples"):
        StrategyOptions(samples=0)


# -- parsers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("English: Who?\nAnswer (French): Paris", "Paris"),                 # well-formed
    ("answer: paris.", "paris"),                                        # wrong case, period
    ("ANSWER (FRENCH):   **Paris**!!  ", "Paris"),                       # markdown, shouting
    ("Answer: Lyon\nEnglish: x\nAnswer (French): Paris\nsome junk", "Paris"),  # last marker
    ("Answer (French): Paris\nAnswer:", "Paris"),                       # empty last marker
    ("Answer:\n  Paris  \n", "Paris"),                                  # answer on next line
    ("Answer:\nQuestion (French): x", None),                            # next line is a label
    ("回答 Answer： 東京。", "東京"),                                    # full-width colon
    ("English: What is it?\nFrench: Qu'est-ce ?", None),                # no marker
    ("", None), ("   \n\n", None),                                      # empty
])
def test_parse_after_marker(text, expected):
    assert parse_after_marker(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    (" Paris", "Paris"), ("\n\n  Paris.\nLyon", "Paris"), ("A: Paris", "Paris"),
    ("Answer (French): «Paris»", "Paris"), ('"Tokyo"', "Tokyo"), ("", None), (" \n ", None),
    ("...", None), ("東京です。", "東京です"),
])
def test_parse_direct(text, expected):
    assert parse_direct(text) == expected


def test_clean_answer_is_idempotent():
    for text in ["**Paris**.", " 'Paris'!", "Paris", "«東京»。"]:
        once = clean_answer(text)
        assert clean_answer(once) == once
        assert once in ("Paris", "東京")


def test_majority_vote_rule():
    from xlgap.prompting.answers import map_answer

    def cands(text: str) -> int:
        return map_answer(text, ["Paris", "Lyon"])

    assert majority([" Paris", " Lyon", " paris."], cands) == ("Paris", 0)
    # ties: the answer seen first wins
    assert majority([" Lyon", " Paris"], cands) == ("Lyon", 1)
    # identical free-form answers can win; they map to OTHER
    assert majority([" Nice", " nice", " Paris"], cands) == ("Nice", OTHER)
    # empty samples do not vote; all empty is a failed parse
    assert majority(["", " ", " Lyon"], cands) == ("Lyon", 1)
    assert majority(["", "  "], cands) == (None, OTHER)


class Scripted(FakeBackend):
    """Returns the given outputs, in order, as the samples of every prompt."""

    def __init__(self, outputs: list[str]) -> None:
        super().__init__()
        self.outputs = outputs
        self.stops: list[tuple[str, ...]] = []
        self.requests: list[tuple[list[str], int]] = []

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        self.stops.append(tuple(stop))
        self.requests.append((list(prompts), n))
        return [[self.outputs[k % len(self.outputs)] for k in range(n)] for _ in prompts]


class ScriptedChat(Scripted):
    is_chat = True


def test_failed_parses_are_counted_and_mapped_to_other():
    outputs = [" English: x\nAnswer (French): Lyon.", "", " English: x\nno marker",
               "Answer: PARIS"]
    s = get_strategy("tta-1", Scripted(outputs), DATA, StrategyOptions(samples=4))
    (res,) = s.run([(ITEMS[0], "fr")])
    assert res.texts == ["Lyon", "", "", "PARIS"]
    assert res.failed == [False, True, True, False] and res.n_failed == 2
    assert res.answers == [1, OTHER, OTHER, 0]
    assert res.raw == outputs
    # vote-k: R groups of k samples; a group of empty samples is one failed parse
    backend = Scripted([" Lyon", " Lyon", "", " "])
    v = get_strategy("vote-2", backend, DATA, StrategyOptions(samples=2, shots=1))
    (res,) = v.run([(ITEMS[0], "fr")])
    # the baseline prompt, sampled R * k = 4 times in one call
    assert backend.requests == [([strat("baseline").prompt(ITEMS[0], "fr")], 4)]
    assert res.answers == [1, OTHER] and res.failed == [False, True]
    assert res.raw == [[" Lyon", " Lyon"], ["", " "]]


def test_tta_stops_base_models_at_a_blank_line_and_lets_chat_models_finish():
    base = Scripted([" x\nAnswer (French): Paris"])
    get_strategy("tta-1", base, DATA, StrategyOptions(samples=1)).run([(ITEMS[0], "fr")])
    assert base.stops == [("\n\n", "\nQuestion")]
    chat = ScriptedChat(["English: What is the capital of France?\n\nAnswer: Paris"])
    (res,) = get_strategy("tta-1", chat, DATA, StrategyOptions(samples=1)).run(
        [(ITEMS[0], "fr")])
    assert chat.stops == [()] and res.texts == ["Paris"] and res.answers == [0]

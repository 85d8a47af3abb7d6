"""Open questions (issue 18, point 5): one correctness rule (aliases of every language of
the item, strict: the alias starts the answer), lenient matching and the answer's
language reported apart, and agreement that does not depend on the script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_backend import FakeBackend
from test_open_questions import open_data
from xlgap.data import load_dataset
from xlgap.data.items import Item, LangEntry
from xlgap.judging import Judge
from xlgap.prompting import answers
from xlgap.prompting.answers import OTHER, answer_matches
from xlgap.prompting.templates import PromptBuilder
from xlgap.runs import load_run
from xlgap.sampling import SamplingOptions, make_run
from xlgap.stats.diagnose import diagnose


@pytest.mark.parametrize(("text", "alias", "lang", "strict"), [
    ("Dresden. William Blake was killed in London.", "London", "en", False),
    ("Los Angeles et Naples", "Naples", "fr", False),
    ("オルブメンエ・ローマの文化祭に", "ローマ", "ja", False),
    ("青銅の代でローマへ行きました", "ローマ", "ja", False),
    ("London", "London", "en", True),
    ("The answer is London.", "London", "en", True),
    ("It is London", "London", "en", True),
    ("C'est Londres.", "Londres", "fr", True),
    ("Это Лондон", "Лондон", "ru", True),
    ("ロンドンです", "ロンドン", "ja", True),
    ("the Hague", "The Hague", "en", True),
])
def test_strict_match_needs_the_alias_first(text: str, alias: str, lang: str,
                                            strict: bool) -> None:
    assert answers.answer_starts_with(text, [alias], lang) is strict
    assert answer_matches(text, [alias], lang)  # the lenient rule finds it anywhere


ITEM = Item("o1", {"en": LangEntry("Where did Blake die?", answers=("London",)),
                   "ru": LangEntry("Где умер Блейк?", answers=("Лондон",)),
                   "ja": LangEntry("ブレイクはどこで死んだ？", answers=("ロンドン",))})


def test_one_correctness_rule_in_every_language() -> None:
    """An answer naming the gold in another language of the item is right, with or
    without a judge (the judge is shown every language's aliases)."""
    builder = PromptBuilder(FakeBackend(), [ITEM], shots=0)
    assert builder.map_generated(ITEM, "ru", "London") == 0
    assert builder.map_generated(ITEM, "ru", "Лондон") == 0
    assert builder.map_generated(ITEM, "ja", "Dresden. London.") == OTHER

    class SeesGold(FakeBackend):
        def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0,
                     stop=("\n",)):
            self.prompts = prompts
            return [[" yes"] for _ in prompts]

    backend = SeesGold()
    Judge(backend, "j").judge(ITEM, "ru", ["London"])
    assert all(name in backend.prompts[0] for name in ("London", "Лондон", "ロンドン"))


class WrongEverywhere(FakeBackend):
    """Right ("Author i") in English on even items; otherwise every language says
    "Paris" in its own script: French spells it like English, Japanese does not."""

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        out = []
        for p in prompts:
            last = p.strip().split("\n")[-2]
            i = int("".join(ch for ch in last if ch.isdigit()) or 0)
            if "Who wrote" in last:
                text = f" Author {i}" if i % 2 == 0 else " Paris"
            elif "Qui" in last:
                text = " Paris"
            else:
                text = " パリ"
            out.append([text] * n)
        return out


def test_open_agreement_does_not_depend_on_the_script(tmp_path: Path) -> None:
    data = load_dataset(open_data(tmp_path / "open.jsonl", n=8))
    out = make_run(WrongEverywhere(), data, tmp_path / "run", source="en",
                   targets=["fr", "ja"], options=SamplingOptions(samples=3, shots=1),
                   progress=False)
    diag = diagnose(load_run(out), n_boot=50, fit_model=False)
    fr, ja = diag["pairs"]["fr"], diag["pairs"]["ja"]
    # wrong answers agree in no script ("Paris" in French no more than "パリ"); only the
    # gold can: English is right on even items, French and Japanese never
    assert fr["agreement"]["estimate"] == ja["agreement"]["estimate"] == 0.0
    assert fr["chi2"]["estimate"] == pytest.approx(ja["chi2"]["estimate"])
    # strict and lenient accuracy and the answer's language, per language
    opened = diag["open_answers"]
    assert opened["en"]["strict"] == opened["en"]["lenient"] == pytest.approx(0.5)
    assert opened["en"]["other_language"] == 0.0
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    right = next(r for r in rows if r["lang"] == "en" and r["answer"] == 0)
    assert right["alias_langs"] == ["en"] and right["lenient"]

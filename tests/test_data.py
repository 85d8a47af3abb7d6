"""Tests for xlgap.data: language codes, the three loaders, missing-translation policies,
the description table and the built-in demo set. Fixtures are tiny files written here."""

from __future__ import annotations

import json
import runpy
from collections import Counter
from pathlib import Path

import pytest

from xlgap.data import (
    MASK,
    Item,
    LangEntry,
    ParallelDataset,
    describe,
    format_description,
    language_name,
    language_script,
    load_bmlama_dir,
    load_builtin,
    load_dataset,
    load_jsonl,
    load_sentence_dir,
    validate_language,
)
from xlgap.data.languages import check_known
from xlgap.errors import ConfigError, DataError, LanguageError

HEADER = "Prompt\tAns\tCandidate Ans\tSubject"


def write_dir(root: Path, files: dict[str, list[str]], newline: str = "\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (root / name).write_bytes(newline.join(lines).encode() + newline.encode())
    return root


def tsv(prompt: str, ans: str, cands: list[str], subject: str) -> str:
    return "\t".join([prompt, ans, ", ".join(cands), subject])


# -- language codes -------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "norm"), [
    ("en", "en"), ("ceb", "ceb"), ("zh-Hant", "zh-Hant"), ("pt-BR", "pt-BR"),
    ("EN", "en"), ("pt_br", "pt-BR"), ("eng", "en"), ("iw", "he"), (" ja ", "ja"),
])
def test_validate_language_accepts_and_normalises(code: str, norm: str) -> None:
    assert validate_language(code) == norm


@pytest.mark.parametrize("code", ["english", "e", "xx1", "xx", "und", "", "en-", "x-klingon"])
def test_validate_language_rejects_nonsense(code: str) -> None:
    with pytest.raises(LanguageError) as exc:
        validate_language(code, "file data/x.tsv")
    assert repr(code) in str(exc.value)
    assert "file data/x.tsv" in str(exc.value)


@pytest.mark.parametrize(("code", "norm"), [
    ("eng_Latn", "en"), ("fra_Latn", "fr"), ("zho_Hans", "zh-Hans"), ("zho_Hant", "zh-Hant"),
    ("arb_Arab", "ar"), ("kor_Hang", "ko"), ("jpn_Jpan", "ja"), ("srp_Cyrl", "sr-Cyrl"),
    ("cmn", "zh"), ("en-Latn", "en"), ("sr-Latn", "sr-Latn"),
    ("aka_Latn", "ak-Latn"), ("twi_Latn", "tw-Latn"),  # both in FLORES-200: kept apart
])
def test_flores_codes_map_to_bcp47(code: str, norm: str) -> None:
    assert validate_language(code) == norm


def test_language_names_and_scripts() -> None:
    assert language_name("ja") == "Japanese"
    assert language_name("zh-Hant") == "Chinese (Traditional)"
    scripts = {c: language_script(c) for c in ("en", "ja", "ar", "ru", "zh", "hi", "ko")}
    assert scripts == {"en": "Latn", "ja": "Jpan", "ar": "Arab", "ru": "Cyrl", "zh": "Hans",
                       "hi": "Deva", "ko": "Kore"}
    assert language_script("zh-Hant") == "Hant"
    assert language_script("sr-Latn") == "Latn"  # an explicit script subtag wins
    assert language_script("sr") == "Cyrl"


def test_check_known_lists_the_known_languages() -> None:
    assert check_known(["EN", "fr"], ["en", "fr", "ja"], "data set demo") == ["en", "fr"]
    with pytest.raises(LanguageError) as exc:
        check_known(["en", "de"], ["en", "fr", "ja"], "data set demo")
    assert "'de'" in str(exc.value)
    assert "en, fr, ja" in str(exc.value)
    with pytest.raises(LanguageError) as exc:
        check_known(["xx"], ["en", "fr"], "data set demo")
    assert "'xx'" in str(exc.value)
    assert "en, fr" in str(exc.value)


def test_check_known_finds_script_tagged_codes() -> None:
    """FLORES names keep a script that tells variants apart; a plain request still finds
    the one variant it means, and the data set's own code comes back."""
    known = ["ak-Latn", "en", "zh-Hans", "zh-Hant"]
    assert check_known(["zh", "zh-Hant", "ak", "eng_Latn"], known, "d") == [
        "zh-Hans", "zh-Hant", "ak-Latn", "en"]
    with pytest.raises(LanguageError, match="'zh' is not in d"):
        check_known(["zh"], ["zh-Hant"], "d")
    with pytest.raises(LanguageError, match="'en' is not in d"):
        check_known(["en"], ["en-GB"], "d")


# -- BMLAMA-style TSV -----------------------------------------------------------------------


def bmlama_fixture(root: Path) -> Path:
    """Three facts in en/ja/zh; zh has the 5-field header of the real zh.tsv, every file
    has CRLF endings, and ja's third row quotes its candidate field CSV-style."""
    en = [HEADER,
          tsv(f"Paris is the capital of {MASK}.", "France", ["Spain", "France", "Italy"], "Paris"),
          tsv(f"Tokyo is located in {MASK}.", "Japan", ["Japan", "China", "Korea"], "Tokyo"),
          tsv(f"The Olympic flag has {MASK} rings.", "five", ["four", "six", "five"], "flag")]
    ja = [HEADER,
          tsv(f"パリは{MASK}の首都です。", "フランス",
              ["スペイン", "フランス", "イタリア"], "パリ"),
          tsv(f"東京は{MASK}にあります。", "日本", ["日本", "中国", "韓国"], "東京"),
          "\t".join([f"五輪の旗には{MASK}つの輪があります。", "五", '"四, 六, 五"', "旗"])]
    zh = ["Prompt\tAns\tCandidate\tAns\tSubject",
          tsv(f"巴黎是{MASK}的首都。", "法国", ["西班牙", "法国", "意大利"], "巴黎"),
          tsv(f"东京位于{MASK}。", "日本", ["日本", "中国", "韩国"], "东京"),
          tsv(f"奥林匹克旗上有{MASK}个环。", "五", ["四", "六", "五"], "奥林匹克旗")]
    return write_dir(root, {"en.tsv": en, "ja.tsv": ja, "zh.tsv": zh}, newline="\r\n")


def test_bmlama_dir_reads_by_position_and_finds_gold(tmp_path: Path) -> None:
    root = bmlama_fixture(tmp_path / "mini")
    (root / "LICENSE").write_text("not data")  # other files are ignored
    ds = load_bmlama_dir(root)
    assert ds.name == "mini"
    assert ds.languages == ["en", "ja", "zh"]
    assert [it.id for it in ds] == ["mini-0", "mini-1", "mini-2"]
    assert [it["en"].gold for it in ds] == [1, 0, 2]
    for it in ds:
        for lang in ds.languages:
            e = it[lang]
            assert e.is_cloze
            assert e.candidates[e.gold] == e.answers[0]
            assert not any(c.endswith("\r") for c in (e.prompt, *e.candidates))
    assert ds.items[0]["zh"].candidates == ("西班牙", "法国", "意大利")
    assert ds.items[0].meta == {"subject": "Paris"}
    # the quoted ja field is unquoted before it is split
    assert ds.items[2]["ja"].candidates == ("四", "六", "五")
    assert ds.items[2]["ja"].gold == 2


def test_bmlama_without_header_keeps_first_row(tmp_path: Path) -> None:
    rows = [tsv(f"A is in {MASK}.", "x", ["x", "y"], "A"),
            tsv(f"B is in {MASK}.", "y", ["x", "y"], "B")]
    root = write_dir(tmp_path / "nohead", {"en.tsv": rows, "fr.tsv": [HEADER, *rows]})
    ds = load_bmlama_dir(root)
    assert [it["en"].gold for it in ds] == [0, 1]
    assert [it["fr"].gold for it in ds] == [0, 1]
    (root / "en.tsv").write_text(rows[0] + "\nbroken row\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"nohead/en\.tsv line 2: expected 4"):
        load_bmlama_dir(root)


def test_bmlama_quoted_answer_matches_quoted_candidate(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "q", {
        "en.tsv": [HEADER, tsv(f"It is {MASK}.", "LGBT", ["art", "LGBT"], "x")],
        "he.tsv": [HEADER, "\t".join([f"זה {MASK}.", '"להט""ב"', '"אמנות, להט""ב"', "x"])],
    })
    ds = load_bmlama_dir(root)
    he = ds.items[0]["he"]
    assert he.candidates == ("אמנות", 'להט"ב')
    assert he.answers == ('להט"ב',)
    assert he.gold == ds.items[0]["en"].gold == 1


def test_bmlama_gold_position_must_agree_across_languages(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "g", {
        "en.tsv": [HEADER, tsv(f"A {MASK}.", "a", ["a", "b"], "s"),
                   tsv(f"C {MASK}.", "c", ["c", "d"], "s")],
        "fr.tsv": [HEADER, tsv(f"A {MASK}.", "b", ["a", "b"], "s"),
                   tsv(f"C {MASK}.", "c", ["c", "d"], "s")],
    })
    with pytest.raises(DataError, match=r"g-0.*different candidate"):
        load_bmlama_dir(root)
    ds = load_bmlama_dir(root, on_error="skip")
    assert [it.id for it in ds] == ["g-1"]
    assert list(ds.dropped) == ["g-0"]


def test_bmlama_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    root = bmlama_fixture(tmp_path / "bad")
    lines = (root / "ja.tsv").read_text(encoding="utf-8").splitlines()
    lines[2] = "東京は<mask>にあります。\t日本"  # 2 fields; file line 3 = data row 1
    (root / "ja.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_bmlama_dir(root)
    msg = str(exc.value)
    assert "ja.tsv line 3" in msg
    assert "found 2" in msg
    ds = load_bmlama_dir(root, on_error="skip")
    assert [it.id for it in ds] == ["bad-0", "bad-2"]
    assert "ja.tsv line 3" in ds.dropped["bad-1"]


def test_bmlama_answer_not_among_candidates(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "na", {
        "en.tsv": [HEADER, tsv(f"X is {MASK}.", "red", ["blue", "green"], "X")],
    })
    with pytest.raises(DataError, match=r"na/en\.tsv line 2.*'red' is not among"):
        load_bmlama_dir(root)
    with pytest.raises(DataError, match="no usable items"):  # all dropped: nothing left
        load_bmlama_dir(root, on_error="skip")


def test_bmlama_candidate_counts_must_agree(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "cc", {
        "en.tsv": [HEADER, tsv(f"A {MASK}.", "a", ["a", "b", "c"], "s"),
                   tsv(f"B {MASK}.", "b", ["a", "b"], "s")],
        "es.tsv": [HEADER, tsv(f"A {MASK}.", "a", ["a", "b"], "s"),
                   tsv(f"B {MASK}.", "b", ["a", "b"], "s")],
    })
    with pytest.raises(DataError) as exc:
        load_bmlama_dir(root)
    assert "en.tsv line 2: 3" in str(exc.value)
    assert "es.tsv line 2: 2" in str(exc.value)
    assert [it.id for it in load_bmlama_dir(root, on_error="skip")] == ["cc-1"]


def test_bmlama_unknown_language_file(tmp_path: Path) -> None:
    """A name shaped like a code but not one is a typo that would lose a language: it
    stops loading. A name of another shape is not data and is passed over."""
    root = bmlama_fixture(tmp_path / "lang")
    en = (root / "en.tsv").read_text(encoding="utf-8")
    (root / "xx1.tsv").write_text(en, encoding="utf-8")
    ds = load_bmlama_dir(root)
    assert ds.languages == ["en", "ja", "zh"]
    assert ds.problems == ["lang/xx1.tsv: ignored, 'xx1' is not a language code"]
    (root / "jp.tsv").write_text(en, encoding="utf-8")
    with pytest.raises(LanguageError, match=r"jp\.tsv"):
        load_bmlama_dir(root)


def test_bmlama_different_row_counts(tmp_path: Path) -> None:
    root = bmlama_fixture(tmp_path / "len")
    lines = (root / "en.tsv").read_text(encoding="utf-8").splitlines()
    (root / "en.tsv").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_bmlama_dir(root)
    assert "en.tsv: 2" in str(exc.value)
    assert "ja.tsv: 3" in str(exc.value)


def test_bmlama_missing_translation_policies(tmp_path: Path) -> None:
    root = bmlama_fixture(tmp_path / "miss")
    lines = (root / "zh.tsv").read_bytes().decode().split("\r\n")
    lines[2] = ""  # data row 1 has no zh
    (root / "zh.tsv").write_bytes("\r\n".join(lines).encode())
    with pytest.raises(DataError) as exc:
        load_bmlama_dir(root)
    assert "miss/zh.tsv line 3" in str(exc.value)
    assert "miss-1" in str(exc.value)
    assert "zh" in str(exc.value)
    skipped = load_bmlama_dir(root, on_missing="skip")
    assert [it.id for it in skipped] == ["miss-0", "miss-2"]
    assert set(skipped.dropped) == {"miss-1"}
    kept = load_bmlama_dir(root, on_missing="keep")
    assert len(kept) == 3
    assert not kept.items[1].has("zh")
    assert kept.items[1].has("en")
    assert kept.items[1].has("ja")
    assert kept.dropped == {}


def test_bmlama_skip_lists_problems_with_file_and_line(tmp_path: Path) -> None:
    root = bmlama_fixture(tmp_path / "probs")
    lines = (root / "en.tsv").read_text(encoding="utf-8").splitlines()
    lines[1] = "no mask here\tFrance\tSpain, France\tParis"
    lines[3] = "too\tfew"
    (root / "en.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = load_bmlama_dir(root, on_error="skip")
    assert [it.id for it in ds] == ["probs-1"]
    assert len(ds.problems) == 2
    assert ds.problems[0].startswith("probs/en.tsv line 2: the prompt must hold exactly one")
    assert ds.problems[1].startswith("probs/en.tsv line 4: expected 4 tab-separated fields")
    assert set(ds.dropped) == {"probs-0", "probs-2"}


def test_files_that_are_not_languages_are_ignored(tmp_path: Path) -> None:
    root = bmlama_fixture(tmp_path / "withdocs")
    (root / "LICENSE").write_text("Apache License\n", encoding="utf-8")
    (root / "README.md").write_text("# data\n", encoding="utf-8")
    (root / "notes.txt").write_text("to do\n", encoding="utf-8")
    (root / "english.tsv").write_text("not\tdata\n", encoding="utf-8")
    (root / ".en.tsv.swp").write_text("editor file\n", encoding="utf-8")
    ds = load_dataset(root)
    assert ds.languages == ["en", "ja", "zh"]
    assert len(ds) == 3
    # only a file with the data suffix is worth a note; README and LICENSE are expected
    assert ds.problems == ["withdocs/english.tsv: ignored, 'english' is not a language code"]
    sents = write_dir(tmp_path / "sents", {"en.txt": ["One."], "fr.txt": ["Un."],
                                           "notes.txt": ["remember the milk"],
                                           "notes.tsv": ["a\tb"]})
    (sents / "LICENSE").write_text("CC BY-SA\n", encoding="utf-8")
    fl = load_dataset(sents)  # notes.tsv does not make this a BMLAMA directory
    assert fl.languages == ["en", "fr"]
    assert fl.problems == ["sents/notes.txt: ignored, 'notes' is not a language code"]
    only_notes = write_dir(tmp_path / "only", {"notes.txt": ["x"], "README.txt": ["y"]})
    with pytest.raises(DataError, match=r"no \{lang\}\.txt files \(found only README\.txt, "
                                        r"notes\.txt\)"):
        load_sentence_dir(only_notes)


def test_flores_style_file_names(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "flores", {
        "eng_Latn.txt": ["The cat sleeps."], "fra_Latn.txt": ["Le chat dort."],
        "zho_Hans.txt": ["猫在睡觉。"], "arb_Arab.txt": ["القط نائم."]})
    ds = load_dataset(root)
    assert ds.languages == ["ar", "en", "fr", "zh-Hans"]
    assert ds.original_codes == {"ar": "arb_Arab", "en": "eng_Latn", "fr": "fra_Latn",
                                 "zh-Hans": "zho_Hans"}
    assert ds.items[0]["fr"].prompt == "Le chat dort."
    # --source en --targets fr,zh select these languages
    assert check_known(["en", "fr", "zh"], ds.languages, "data set flores") == [
        "en", "fr", "zh-Hans"]
    sub = ds.subset(None, ["en", "fr"])
    assert sub.original_codes == {"en": "eng_Latn", "fr": "fra_Latn"}
    text = format_description(describe(ds))
    assert "arb_Arab -> ar" in text
    assert "zho_Hans -> zh-Hans" in text


def test_two_files_for_one_language_is_an_error(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "twice", {"en.txt": ["a"], "eng_Latn.txt": ["b"],
                                          "fr.txt": ["c"]})
    with pytest.raises(DataError) as exc:
        load_dataset(root)
    msg = str(exc.value)
    assert "en.txt and eng_Latn.txt are both language en" in msg
    assert "'eng_Latn' are read as 'en'" in msg


# -- sentence files -------------------------------------------------------------------------


def test_sentence_dir(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "sents", {
        "en.txt": ["The cat sleeps.", "It rains."],
        "de.txt": ["Die Katze schläft.", "Es regnet."],
    })
    ds = load_sentence_dir(root)
    assert ds.languages == ["de", "en"]
    assert [it.id for it in ds] == ["sents-0", "sents-1"]
    assert ds.items[1]["de"] == LangEntry("Es regnet.")
    assert not ds.has_candidates


def test_sentence_dir_unequal_lengths(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "uneq", {
        "en.txt": ["One.", "Two.", "Three."],
        "fr.txt": ["Un.", "Deux."],
    })
    with pytest.raises(DataError) as exc:
        load_sentence_dir(root)
    assert "en.txt: 3" in str(exc.value)
    assert "fr.txt: 2" in str(exc.value)


def test_sentence_dir_blank_line_is_a_missing_translation(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "blank", {
        "en.txt": ["One.", "Two.", "Three."],
        "fr.txt": ["Un.", "   ", "Trois."],
    })
    with pytest.raises(DataError, match=r"blank/fr\.txt line 2"):
        load_sentence_dir(root)
    assert len(load_sentence_dir(root, on_missing="skip")) == 2
    kept = load_sentence_dir(root, on_missing="keep")
    assert [it.has("fr") for it in kept] == [True, False, True]


# -- JSONL ----------------------------------------------------------------------------------


def jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False))
                            + "\n" for r in records), encoding="utf-8")
    return path


CAPITAL = {"id": "capital-fr", "meta": {"topic": "geo", "level": 1}, "langs": {
    "en": {"prompt": "What is the capital of France?", "answers": ["Paris"],
           "candidates": ["Lyon", "Paris", "Nice", "Lille"]},
    "fr": {"prompt": "Quelle est la capitale de la France ?",
           "candidates": ["Lyon", "Paris", "Nice", "Lille"], "gold": 1},
    "ja": {"prompt": "フランスの首都は？", "answers": ["パリ", "巴里"],
           "candidates": ["リヨン", "パリ", "ニース", "リール"], "gold": 1},
}}
FREE = {"id": 7, "langs": {"en": {"prompt": "Name a primary colour.", "answers": ["red"]},
                           "fr": {"prompt": "Citez une couleur primaire."},
                           "ja": {"prompt": "原色を一つ挙げてください。"}}}


def test_jsonl_happy_path(tmp_path: Path) -> None:
    ds = load_jsonl(jsonl(tmp_path / "mine.jsonl", [CAPITAL, "", FREE]))
    assert ds.name == "mine"
    assert ds.languages == ["en", "fr", "ja"]
    cap, free = ds.items
    assert cap["en"].gold == 1  # from the first answer found among the candidates
    assert cap["fr"].answers == ("Paris",)  # from the gold candidate
    assert cap["ja"].answers == ("パリ", "巴里")
    assert cap.meta == {"topic": "geo", "level": "1"}
    assert free.id == "7"
    assert free["en"] == LangEntry("Name a primary colour.", ("red",))
    assert free.n_candidates == 0


@pytest.mark.parametrize(("line", "pattern"), [
    ('{"id": "a", "langs": {"en": {"prompt": "x"}', r"line 2: not valid JSON"),
    ('{"id": "a", "langs": {"en": {"answers": ["x"]}}}', r"line 2 \(en\): missing 'prompt'"),
    ('{"langs": {"en": {"prompt": "x"}}}', r"line 2: missing 'id'"),
    ('{"id": "a"}', r"line 2: missing 'langs'"),
    ('{"id": "capital-fr", "langs": {"en": {"prompt": "x"}}}', r"line 2: duplicate id"),
    ('{"id": "a", "langs": {"en": {"prompt": "x", "candidates": ["p", "q"], "gold": 2}}}',
     r"line 2 \(en\): 'gold' 2 is out of range"),
    ('{"id": "a", "langs": {"en": {"prompt": "x", "candidates": ["p", "q"]}}}',
     r"give 'gold' or 'answers'"),
    ('{"id": "a", "langs": {"en": {"prompt": "x", "gold": 0}}}', r"no 'candidates'"),
    ('{"id": "a", "langs": {"en": {"prompt": "x", "candidate": ["p"]}}}', r"unknown keys"),
    ('[1, 2]', r"line 2: expected a JSON object"),
])
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, pattern: str) -> None:
    path = jsonl(tmp_path / "bad.jsonl", [CAPITAL, line])
    with pytest.raises(DataError, match=pattern) as exc:
        load_jsonl(path)
    assert "bad.jsonl" in str(exc.value)


def test_jsonl_bad_language_code(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "l.jsonl", [{"id": "a", "langs": {"english": {"prompt": "x"}}}])
    with pytest.raises(LanguageError, match=r"l\.jsonl line 1"):
        load_jsonl(path)


def test_jsonl_item_problems_follow_on_error(tmp_path: Path) -> None:
    wrong_gold = {"id": "wrong", "langs": {
        "en": {"prompt": "x", "answers": ["p"], "candidates": ["p", "q"], "gold": 1}}}
    not_among = {"id": "absent", "langs": {
        "en": {"prompt": "x", "answers": ["z"], "candidates": ["p", "q"]}}}
    path = jsonl(tmp_path / "items.jsonl", [CAPITAL, wrong_gold, not_among])
    with pytest.raises(DataError, match=r"line 2 \(en\): the gold candidate 'q'"):
        load_jsonl(path)
    ds = load_jsonl(path, on_error="skip", on_missing="keep")
    assert [it.id for it in ds] == ["capital-fr"]
    assert set(ds.dropped) == {"wrong", "absent"}


def test_jsonl_on_error_skip_reports_every_bad_line(tmp_path: Path) -> None:
    good = {"id": "ok", "langs": {"en": {"prompt": "2+2?", "answers": ["4", "four"]},
                                  "fr": {"prompt": "2+2 ?", "answers": ["4", "quatre"]}}}
    later = {"id": "later", "langs": {"en": {"prompt": "3+3?", "answers": ["6"]},
                                      "fr": {"prompt": "3+3 ?", "answers": ["6"]}}}
    wrong_gold = {"id": "wrong", "langs": {
        "en": {"prompt": "x", "answers": ["p"], "candidates": ["p", "q"], "gold": 1},
        "fr": {"prompt": "x", "answers": ["p"], "candidates": ["p", "q"], "gold": 1}}}
    path = jsonl(tmp_path / "messy.jsonl", [
        good,                                                     # line 1
        '{"id": "broken", "langs": {',                            # line 2: bad JSON
        {"id": "ok", "langs": {"en": {"prompt": "dup"}}},         # line 3: duplicate id
        {"id": "lang", "langs": {"english": {"prompt": "x"}}},    # line 4: bad language
        {"id": "schema", "langs": {"en": {"answer": ["x"]}}},     # line 5: unknown key
        wrong_gold,                                               # line 6: item problem
        "",                                                       # line 7: blank, fine
        later,                                                    # line 8
    ])
    with pytest.raises(DataError, match=r"messy\.jsonl line 2: not valid JSON.*"
                                        r"on_error='skip' skips such lines"):
        load_jsonl(path)
    ds = load_dataset(str(path), on_error="skip")
    assert [it.id for it in ds] == ["ok", "later"]
    assert ds.languages == ["en", "fr"]
    assert ds.items[0]["fr"].prompt == "2+2 ?"  # the first 'ok' is kept, not the duplicate
    lines = [int(p.split(" line ")[1].split(":")[0].split(" ")[0]) for p in ds.problems]
    assert lines == [2, 3, 4, 5, 6]
    assert "not valid JSON" in ds.problems[0]
    assert "duplicate id 'ok' (first on line 1)" in ds.problems[1]
    assert "invalid language code 'english'" in ds.problems[2]
    assert "unknown keys ['answer']" in ds.problems[3]
    assert "the gold candidate 'q'" in ds.problems[4]
    assert all(str(path) in p for p in ds.problems)
    assert list(ds.dropped) == ["wrong"]  # lines without a usable id are only in problems
    assert describe(ds)["problems"] == 5
    # a subset keeps the record
    assert ds.subset(1).problems == ds.problems


def test_jsonl_first_problem_in_file_order_decides(tmp_path: Path) -> None:
    wrong_gold = {"id": "wrong", "langs": {
        "en": {"prompt": "x", "answers": ["p"], "candidates": ["p", "q"], "gold": 1}}}
    path = jsonl(tmp_path / "order.jsonl", [wrong_gold, "not json"])
    with pytest.raises(DataError, match=r"line 1 \(en\): the gold candidate"):
        load_jsonl(path)
    bad_lang = jsonl(tmp_path / "l.jsonl", [{"id": "a", "langs": {"xx": {"prompt": "x"}}},
                                           {"id": "b", "langs": {"en": {"prompt": "y"}}}])
    with pytest.raises(LanguageError, match=r"l\.jsonl line 1.*on_error='skip'"):
        load_jsonl(bad_lang)
    assert [it.id for it in load_jsonl(bad_lang, on_error="skip")] == ["b"]


def test_jsonl_every_line_bad_is_still_an_error(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "junk.jsonl", ["{", "[]", '{"id": 1}'])
    with pytest.raises(DataError, match=r"no usable items; all 3 were left out, e\.g\. "):
        load_jsonl(path, on_error="skip")


def test_missing_translations_skipped_are_problems_too(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "gap", {"en.txt": ["One.", "Two."], "fr.txt": ["Un.", ""]})
    ds = load_sentence_dir(root, on_missing="skip", on_error="skip")
    assert [it.id for it in ds] == ["gap-0"]
    assert ds.problems == ["gap/fr.txt line 2: item gap-1 has no fr (French) translation"]


def test_jsonl_flores_keys(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "f.jsonl", [
        {"id": "a", "langs": {"eng_Latn": {"prompt": "Capital of Japan?", "answers": ["Tokyo"]},
                              "zho_Hans": {"prompt": "日本的首都？", "answers": ["东京"]}}},
        {"id": "b", "langs": {"en": {"prompt": "Capital of Peru?", "answers": ["Lima"]},
                              "zh-Hans": {"prompt": "秘鲁的首都？", "answers": ["利马"]}}},
    ])
    ds = load_jsonl(path)
    assert ds.languages == ["en", "zh-Hans"]
    assert ds.original_codes == {"en": "eng_Latn", "zh-Hans": "zho_Hans"}
    assert ds.items[1]["zh-Hans"].answers == ("利马",)
    twice = jsonl(tmp_path / "t.jsonl", [{"id": "a", "langs": {
        "en": {"prompt": "x"}, "eng_Latn": {"prompt": "y"}}}])
    with pytest.raises(DataError, match=r"language en appears twice in item a "
                                        r"\(keys 'en' and 'eng_Latn'\)"):
        load_jsonl(twice)


OPEN = {"id": "open-1", "langs": {
    "en": {"prompt": "Who painted the Mona Lisa?",
           "answers": ["Leonardo da Vinci", "Leonardo", "da Vinci"]},
    "fr": {"prompt": "Qui a peint la Joconde ?", "answers": ["Léonard de Vinci", "Léonard"]}}}
LETTERED = {"id": "mc-1", "format": "mc", "langs": {
    "en": {"prompt": "Which planet is largest?", "candidates": ["Mars", "Jupiter", "Venus"],
           "gold": 1},
    "fr": {"prompt": "Quelle planète est la plus grande ?",
           "candidates": ["Mars", "Jupiter", "Vénus"], "answers": ["Jupiter"]}}}


def test_open_items_mc_items_and_candidates_mix(tmp_path: Path) -> None:
    cands = {"id": "cand-1", "langs": {
        "en": {"prompt": "Capital of France?", "candidates": ["Lyon", "Paris"], "gold": 1},
        "fr": {"prompt": "Capitale de la France ?", "candidates": ["Lyon", "Paris"],
               "gold": 1}}}
    ds = load_jsonl(jsonl(tmp_path / "mixed.jsonl", [OPEN, LETTERED, cands]))
    open_item, mc_item, cand_item = ds.items
    en = open_item["en"]
    assert en.is_open and en.answer_format == "open"
    assert en.answers[0] == "Leonardo da Vinci"  # the canonical answer comes first
    assert en.candidates == () and en.gold is None
    assert open_item.is_open and open_item.answer_format == "open"
    mc = mc_item["fr"]
    assert mc.answer_format == "mc" and mc.is_mc and not mc.is_open
    assert mc.format == "mc"
    assert mc.letters == ("A", "B", "C")
    assert mc.gold == 1 and mc.gold_letter == "B"
    assert mc.answers == ("Jupiter",)
    assert mc_item["en"].answers == ("Jupiter",)  # defaults to the gold candidate
    assert cand_item["en"].answer_format == "candidates"
    assert cand_item["en"].letters == () and cand_item["en"].gold_letter is None
    assert ds.has_open_items and ds.has_candidates
    assert LangEntry("A sentence.").answer_format == "none"
    desc = describe(ds)
    assert desc["answer_formats"] == {"open": 1, "candidates": 1, "mc": 1}
    assert "answer formats: 1 open, 1 candidates, 1 mc" in format_description(desc)


@pytest.mark.parametrize(("record", "pattern"), [
    ({"id": "a", "format": "mc", "langs": {"en": {"prompt": "x", "answers": ["y"]}}},
     r"line 1 \(en\): 'format': 'mc' needs 'candidates'"),
    ({"id": "a", "langs": {"en": {"prompt": "x", "candidates": [f"c{i}" for i in range(27)],
                                  "gold": 0, "format": "mc"}}},
     r"at most 26 candidates"),
    ({"id": "a", "format": "letters", "langs": {"en": {"prompt": "x"}}},
     r"line 1: 'format' must be one of \['text', 'mc'\]"),
])
def test_mc_schema_errors(tmp_path: Path, record: dict, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        load_jsonl(jsonl(tmp_path / "mc.jsonl", [record]))


def test_mc_must_be_lettered_in_every_language(tmp_path: Path) -> None:
    half = {"id": "half", "langs": {
        "en": {"prompt": "x", "candidates": ["p", "q"], "gold": 0, "format": "mc"},
        "fr": {"prompt": "x", "candidates": ["p", "q"], "gold": 0}}}
    path = jsonl(tmp_path / "half.jsonl", [half, OPEN])
    with pytest.raises(DataError, match=r"item half: 'format' differs between languages"):
        load_jsonl(path)
    assert [it.id for it in load_jsonl(path, on_error="skip")] == ["open-1"]


def test_jsonl_missing_language_policies(tmp_path: Path) -> None:
    no_ja = {"id": "capital-de", "langs": {
        "en": {"prompt": "What is the capital of Germany?", "answers": ["Berlin"]},
        "fr": {"prompt": "Quelle est la capitale de l'Allemagne ?", "answers": ["Berlin"]}}}
    path = jsonl(tmp_path / "m.jsonl", [no_ja, FREE])
    with pytest.raises(DataError) as exc:
        load_jsonl(path)
    assert "m.jsonl line 1" in str(exc.value)
    assert "capital-de" in str(exc.value)
    assert "ja (Japanese)" in str(exc.value)
    skipped = load_jsonl(path, on_missing="skip")
    assert [it.id for it in skipped] == ["7"]
    assert list(skipped.dropped) == ["capital-de"]
    kept = load_jsonl(path, on_missing="keep")
    assert [it.has("ja") for it in kept] == [False, True]
    # a subset keeps the record of what was dropped
    assert skipped.subset(1, ["en"]).dropped == skipped.dropped


# -- dispatch and policies ------------------------------------------------------------------


def test_load_dataset_dispatch(tmp_path: Path) -> None:
    tsv_dir = bmlama_fixture(tmp_path / "tsvs")
    txt_dir = write_dir(tmp_path / "txts", {"en.txt": ["a"], "fr.txt": ["b"]})
    jl = jsonl(tmp_path / "x.jsonl", [CAPITAL])
    assert load_dataset(str(tsv_dir)).items[0]["en"].is_cloze
    assert load_dataset(txt_dir).languages == ["en", "fr"]
    assert load_dataset(str(jl)).name == "x"
    for name in (None, "builtin", "demo", "BUILTIN"):
        assert load_dataset(name).name == "builtin"
    # .csv is a table format now (read through `datasets`); .xml is no format at all
    other = tmp_path / "notes.xml"
    other.write_text("<a/>\n")
    with pytest.raises(DataError, match=r"accepted: .*\.tsv.*\.txt.*\.jsonl.*\.parquet"):
        load_dataset(str(other))
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"without \{lang\}\.tsv or \{lang\}\.txt"):
        load_dataset(str(empty))


def test_bad_policy_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="on_missing"):
        load_dataset(None, on_missing="ignore")
    with pytest.raises(ConfigError, match="on_error"):
        load_jsonl(jsonl(tmp_path / "p.jsonl", [CAPITAL]), on_error="keep")


# -- describe -------------------------------------------------------------------------------


def test_describe_counts(tmp_path: Path) -> None:
    items = [
        Item("a", {"en": LangEntry(f"x {MASK}", ("p",), ("p", "q"), 0),
                   "fr": LangEntry("y?", ("p",), ("p", "q"), 0)}),
        Item("b", {"en": LangEntry("z?", ("r",), ("r", "s", "t", "u"), 0)}),
        Item("c", {"en": LangEntry("plain"), "fr": LangEntry("simple")}),
    ]
    desc = describe(ParallelDataset("toy", ["en", "fr"], items, "/tmp/toy",
                                    {"d": "no fr"}))
    assert desc["items"] == 3
    assert desc["candidates"] == {"min": 2, "mean": 3.0, "max": 4}
    assert desc["items_with_candidates"] == 2
    assert desc["cloze_share"] == pytest.approx(1 / 5)
    assert desc["complete_items"] == 2
    assert desc["dropped"] == 1
    assert [(lang["code"], lang["items"]) for lang in desc["languages"]] == [("en", 3),
                                                                          ("fr", 2)]
    assert desc["languages"][0]["cloze_share"] == pytest.approx(1 / 3)
    assert desc["scripts"] == ["Latn"]
    text = format_description(desc)
    assert "toy: 3 items, 2 languages" in text
    assert "min 2, mean 3.00, max 4" in text
    rows = [line for line in text.splitlines() if line.startswith("  ")]
    assert rows[0].split() == ["code", "language", "script", "items", "cloze"]
    assert rows[1].split() == ["en", "English", "Latn", "3", "33%"]
    # aligned: every row puts its item count in the same column
    assert len({row.index(row.split()[3]) + len(row.split()[3]) for row in rows}) == 1


# -- the built-in demo set ------------------------------------------------------------------


def test_builtin_invariants() -> None:
    ds = load_builtin()
    assert ds.name == "builtin"
    assert len(ds) >= 60
    assert len(ds.languages) >= 10
    assert {"en", "es", "fr", "de", "ru", "zh", "ja", "ar", "hi", "sw"} <= set(ds.languages)
    assert len({language_script(lang) for lang in ds.languages}) >= 4
    assert len({it.id for it in ds}) == len(ds)
    for it in ds:
        assert all(it.has(lang) for lang in ds.languages), it.id
        sizes = {len(it[lang].candidates) for lang in ds.languages}
        assert len(sizes) == 1, it.id
        assert sizes.pop() >= 4, it.id
        golds = {it[lang].gold for lang in ds.languages}
        assert len(golds) == 1, it.id  # candidate j is the same entity everywhere
        for lang in ds.languages:
            e = it[lang]
            assert 0 <= e.gold < len(e.candidates)
            assert e.candidates[e.gold] in e.answers
            assert len(set(e.candidates)) == len(e.candidates)
            assert e.prompt.strip()
    # the gold is not always in one position: "pick option k" stays at chance level
    positions = Counter(it["en"].gold for it in ds)
    assert len(positions) >= 3
    assert max(positions.values()) < 0.5 * len(ds)


def test_builtin_is_written_in_each_script() -> None:
    """Catch a question left untranslated: each prompt must use its language's script."""
    ranges = {"ru": ("\u0400", "\u04ff"), "ar": ("\u0600", "\u06ff"), "hi": ("\u0900", "\u097f"),
              "ko": ("\uac00", "\ud7a3"), "ja": ("\u3040", "\u30ff"), "zh": ("\u4e00", "\u9fff")}
    ds = load_builtin()
    for it in ds:
        for lang, (lo, hi) in ranges.items():
            prompt = it[lang].prompt
            if lang == "ja" and any("\u4e00" <= ch <= "\u9fff" for ch in prompt):
                continue  # kanji-only Japanese questions are fine
            assert any(lo <= ch <= hi for ch in prompt), (it.id, lang, prompt)
        assert len({it[lang].prompt for lang in ds.languages}) >= len(ds.languages) - 1


def test_builtin_file_matches_its_generator() -> None:
    import xlgap.data

    script = Path(xlgap.data.__file__).parent / "builtin" / "make_demo.py"
    generated = runpy.run_path(str(script))["render"]()
    shipped = (script.parent / "demo.jsonl").read_text(encoding="utf-8")
    assert generated == shipped, "demo.jsonl is out of date: rerun make_demo.py"


def test_builtin_table_errors_name_file_and_line(tmp_path: Path) -> None:
    import shutil

    import xlgap.data

    script = Path(xlgap.data.__file__).parent / "builtin" / "make_demo.py"
    tables = tmp_path / "tables"
    shutil.copytree(script.parent / "tables", tables)
    ns = runpy.run_path(str(script))
    ns["build_items"].__globals__["TABLES"] = tables  # the functions' own module globals
    assert len(ns["build_items"]()) == 70
    lines = (tables / "items.tsv").read_text(encoding="utf-8").split("\n")
    row = next(i for i, line in enumerate(lines) if line.startswith("capital-japan\t"))
    lines[row] = lines[row].replace("tokyo kyoto", "tokyo kioto")
    (tables / "items.tsv").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"tables/items\.tsv line {row + 1}: unknown "
                                         r"entities \['kioto'\]"):
        ns["build_items"]()
    lines[row] = lines[row].rsplit("\t", 1)[0]  # one cell short
    (tables / "items.tsv").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"tables/items\.tsv line {row + 1}: 13 cells"):
        ns["build_items"]()


# -- the benchmarks' layouts (written by the project: tests/bmlama_fixture.py, fixtures/) ----


def test_bmlama_and_sentence_folders_in_their_published_layout(shared_data: Path) -> None:
    bm = load_dataset(str(shared_data / "bmlama17"))
    assert len(bm.languages) == 17
    assert "de" not in bm.languages
    assert len(bm) == 40
    assert bm.dropped == {}
    for it in bm.items:
        for lang in bm.languages:
            e = it[lang]
            assert e.prompt.count(MASK) == 1
            assert e.candidates[e.gold] == e.answers[0]
    # zh.tsv's five-field header and CRLF ends read as four fields, line i the same fact
    assert [it["zh"].answers for it in bm] == [it["en"].answers for it in bm]
    he_quoted = [it for it in bm if any('"' in c for c in it["he"].candidates)]
    assert he_quoted, "Hebrew LGBT candidate keeps its inner quote"
    assert he_quoted[0]["he"].candidates == he_quoted[0]["en"].candidates
    assert bm.problems == []  # its LICENSE file is not data and needs no note
    assert bm.original_codes == {lang: lang for lang in bm.languages}
    fl = load_dataset(str(shared_data / "flores100"))
    assert fl.languages == ["de", "en", "es", "fr", "it"]
    assert len(fl) == 40
    assert all(it.has(lang) for it in fl for lang in fl.languages)
    assert fl.problems == []


def test_real_sentences_under_flores200_names(tmp_path: Path, shared_data: Path) -> None:
    """The sentences read through links named the FLORES-200 way (nothing copied)."""
    src = shared_data / "flores100"
    names = {"de": "deu_Latn", "en": "eng_Latn", "es": "spa_Latn", "fr": "fra_Latn",
             "it": "ita_Latn"}
    root = tmp_path / "flores200"
    root.mkdir()
    for lang, name in names.items():
        (root / f"{name}.txt").symlink_to((src / f"{lang}.txt").resolve())
    (root / "README.md").write_text("links\n", encoding="utf-8")
    ds = load_dataset(str(root))
    plain = load_dataset(str(src))
    assert ds.languages == plain.languages
    assert ds.original_codes == names
    assert [it["fr"].prompt for it in ds] == [it["fr"].prompt for it in plain]

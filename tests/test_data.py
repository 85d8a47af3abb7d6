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

SHARED = Path(__file__).parents[1] / ".." / "shared" / "data"
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
    root = bmlama_fixture(tmp_path / "lang")
    (root / "xx1.tsv").write_text((root / "en.tsv").read_text(encoding="utf-8"),
                                  encoding="utf-8")
    with pytest.raises(LanguageError, match=r"xx1\.tsv"):
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
    other = tmp_path / "notes.csv"
    other.write_text("a,b\n")
    with pytest.raises(DataError, match=r"accepted: .*\.tsv.*\.txt.*\.jsonl"):
        load_dataset(str(other))
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"without \.tsv or \.txt"):
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


# -- the real data sets (read in place, when this checkout has them) ------------------------


def test_real_shared_data() -> None:
    if not (SHARED / "bmlama17").is_dir() or not (SHARED / "flores100").is_dir():
        pytest.skip("shared data not present")
    bm = load_dataset(str(SHARED / "bmlama17"))
    assert len(bm.languages) == 17
    assert "de" not in bm.languages
    assert len(bm) == 6792
    assert bm.dropped == {}
    for it in bm.items[::97]:
        for lang in bm.languages:
            e = it[lang]
            assert e.prompt.count(MASK) == 1
            assert e.candidates[e.gold] == e.answers[0]
    he_quoted = [it for it in bm if any('"' in c for c in it["he"].candidates)]
    assert he_quoted, "Hebrew LGBT candidate keeps its inner quote"
    fl = load_dataset(str(SHARED / "flores100"))
    assert fl.languages == ["de", "en", "es", "fr", "it"]
    assert len(fl) == 100
    assert all(it.has(lang) for it in fl for lang in fl.languages)

"""Tables through the ``datasets`` library: a local Parquet file (long layout), a
``save_to_disk`` folder (wide layout), CSV, ``hf:ORG/NAME[:CONFIG][@SPLIT]`` names, and the
column mapping (``--data-map``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xlgap.data import load_dataset, parse_data_map
from xlgap.data.formats.table import parse_hf_spec
from xlgap.errors import ConfigError, DataError

datasets = pytest.importorskip("datasets")

LONG = {  # one row per (question, language), as multilingual MC sets are often published
    "qid": ["q1", "q1", "q2", "q2"],
    "language": ["en", "fr", "en", "fr"],
    "question": ["Capital of France?", "Capitale de la France ?", "2+2?", "2+2 ?"],
    "choices": [["Paris", "Lyon"], ["Paris", "Lyon"], ["3", "4"], ["3", "4"]],
    "label": [0, 0, 1, 1],
}
LONG_MAP = "id=qid,prompt=question,candidates=choices,gold=label,lang=language"


def test_hf_reads_a_local_parquet_file_in_long_layout(tmp_path: Path) -> None:
    path = tmp_path / "mc.parquet"
    datasets.Dataset.from_dict(LONG).to_parquet(str(path))
    ds = load_dataset(path, data_map=LONG_MAP)
    assert ds.name == "mc" and ds.languages == ["en", "fr"]
    assert [it.id for it in ds.items] == ["q1", "q2"]
    assert ds.items[1]["fr"].candidates == ("3", "4") and ds.items[1]["fr"].gold == 1
    assert ds.items[0]["en"].answers == ("Paris",)  # the gold candidate
    lettered = load_dataset(path, data_map=LONG_MAP + ",format=mc")
    assert lettered.items[1]["en"].gold_letter == "B"
    with pytest.raises(DataError, match="say where the language is"):
        load_dataset(path, data_map="id=qid,prompt=question")


def test_hf_reads_a_save_to_disk_folder_in_wide_layout(tmp_path: Path) -> None:
    # ECLeKTic-like: one row per question, one column per language, a source per row
    wide = {"q_id": [7, 8], "original_lang": ["de", "en"],
            "en_q": ["Who?", "Where?"], "en_a": ["Anna", "Oslo"],
            "de_q": ["Wer?", "Wo?"], "de_a": ["Anna", "Oslo"],
            "ja_q": ["誰？", ""], "ja_a": ["アンナ", ""]}
    folder = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(wide)}).save_to_disk(str(folder))
    cmap = "id=q_id,prompt={lang}_q,answers={lang}_a,source=original_lang"
    ds = load_dataset(folder, data_map=cmap, on_missing="keep")
    assert ds.languages == ["en", "de", "ja"] and ds.name == "saved"
    assert [it.source for it in ds.items] == ["de", "en"]
    assert ds.items[0]["ja"].answers == ("アンナ",) and ds.items[0].is_open
    assert not ds.items[1].has("ja")  # an empty cell is a missing translation
    with pytest.raises(DataError, match="item 8 has no ja"):
        load_dataset(folder, data_map=cmap)


def test_csv_with_option_columns_and_letter_answers(tmp_path: Path) -> None:
    # MMMLU's layout: Question, A, B, C, D, Answer (a letter); one file per language
    path = tmp_path / "mmlu_fr.csv"
    path.write_text("id,lang,Question,A,B,C,D,Answer\n1,fr,Q ?,a,b,c,d,C\n2,fr,R ?,e,f,g,h,A\n",
                    encoding="utf-8")
    ds = load_dataset(path, data_map="id=id,lang=lang,prompt=Question,candidates=A+B+C+D,"
                                     "gold=Answer,format=mc")
    assert ds.items[0]["fr"].gold_letter == "C" and ds.items[0]["fr"].candidates[2] == "c"


def test_default_columns_need_no_map(tmp_path: Path) -> None:
    path = tmp_path / "plain.parquet"
    datasets.Dataset.from_dict({"id": ["a", "a"], "lang": ["en", "es"],
                                "prompt": ["Hello", "Hola"]}).to_parquet(str(path))
    assert load_dataset(path).items[0]["es"].prompt == "Hola"


def test_hf_names_go_through_datasets_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake(repo: str, config: str | None = None, split: str | None = None) -> Any:
        calls.append((repo, config, split))
        table = datasets.Dataset.from_dict(LONG)
        return table if split else datasets.DatasetDict({"train": table, "test": table})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    ds = load_dataset("hf:org/mc:fr@validation", data_map=LONG_MAP)
    assert calls[-1] == ("org/mc", "fr", "validation") and ds.name == "mc-fr"
    assert load_dataset("hf:org/mc", data_map=LONG_MAP).source_path == "hf:org/mc"
    assert calls[-1] == ("org/mc", None, None)  # the test split is picked


def test_the_map_is_checked() -> None:
    assert parse_hf_spec("hf:a/b:c@d") == ("a/b", "c", "d")
    with pytest.raises(DataError, match="expected hf:ORG/NAME"):
        parse_hf_spec("hf:a/b/c")
    assert parse_data_map({"id": "qid", "prompt": "q"}).text() == "id=qid,prompt=q"
    with pytest.raises(ConfigError, match="unknown field"):
        parse_data_map("question=q")
    with pytest.raises(ConfigError, match="not FIELD=COLUMN"):
        parse_data_map("id")
    with pytest.raises(ConfigError, match="either lang=COLUMN"):
        parse_data_map("lang=l,prompt={lang}_q")


def test_a_map_for_a_fixed_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": 1, "langs": {"en": {"prompt": "a"}}}\n')
    with pytest.raises(DataError, match="--data-map applies to tables"):
        load_dataset(path, data_map="id=x")


def test_global_mmlu_aligns_by_sample_id_and_keeps_letters(tmp_path: Path) -> None:
    # Global-MMLU's published columns ({lang}/test-00000-of-00001.parquet on
    # huggingface.co/datasets/CohereForAI/Global-MMLU): sample_id, subject, question,
    # option_a..option_d, answer (a letter), cultural_sensitivity_label, ...
    from xlgap.data import converters

    files = {}
    for lang in converters.GLOBAL_MMLU_LANGS:
        order = [1, 0] if lang == "ja" else [0, 1]  # row order may differ; sample_id aligns
        (tmp_path / "hub" / lang).mkdir(parents=True)
        rows = [{"sample_id": f"astronomy/test/{i}", "subject": "astronomy",
                 "question": f"[{lang}] question {i}", "option_a": "a", "option_b": "b",
                 "option_c": "c", "option_d": "d", "answer": "CA"[i],
                 "cultural_sensitivity_label": "CS" if i else "", "is_annotated": True}
                for i in order]
        path = tmp_path / "hub" / lang / "test-00000-of-00001.parquet"  # as on the Hub
        datasets.Dataset.from_list(rows).to_parquet(str(path))
        files[f"{lang}.test.parquet"] = path
    out = tmp_path / "g.jsonl"
    converters.global_mmlu(files, out)
    ds = load_dataset(out)
    assert len(ds.languages) == 15 and [it.id for it in ds.items] == \
        ["astronomy/test/0", "astronomy/test/1"]
    second = ds.items[1]
    assert second["ja"].prompt == "[ja] question 1" and second["ja"].gold_letter == "A"
    assert second["en"].letters == ("A", "B", "C", "D")
    assert second.meta == {"subject": "astronomy", "cultural_sensitivity_label": "CS"}
    # `xlgap data get global-mmlu --from` a copy of the Hub folder, published paths as they are
    from xlgap.data import get_dataset

    got = get_dataset("global-mmlu", out=tmp_path / "gm", from_dir=tmp_path / "hub")
    assert got.name == "global-mmlu.jsonl" and len(load_dataset(got).items) == 2

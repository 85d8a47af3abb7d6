"""Converters from each catalogued benchmark's published files to xlgap's formats.

Each takes ``files`` (file name -> path of the verified raw file) and ``out`` (the path to
create: a folder or a ``.jsonl`` file) and writes nothing else. They stay faithful to the
benchmark: ECLeKTic keeps each question's source language, MMLU its four lettered options,
FLORES its sentence alignment. Schemas are those published by the data sets (cited in each
function and in the test fixtures).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from xlgap.data.items import LETTERS
from xlgap.errors import DataError

# openai/MMMLU file locales (test/mmlu_{LOCALE}.csv) -> the BCP 47 tag xlgap uses.
MMMLU_LOCALES = {"AR-XY": "ar", "BN-BD": "bn", "DE-DE": "de", "ES-LA": "es-419",
                 "FR-FR": "fr", "HI-IN": "hi", "ID-ID": "id", "IT-IT": "it", "JA-JP": "ja",
                 "KO-KR": "ko", "PT-BR": "pt-BR", "SW-KE": "sw", "YO-NG": "yo", "ZH-CN": "zh"}
# The FLORES-200 subset: the demo's 11 languages (7 scripts) plus Italian and Turkish.
FLORES_CODES = ("eng_Latn", "fra_Latn", "spa_Latn", "deu_Latn", "ita_Latn", "rus_Cyrl",
                "zho_Hans", "jpn_Jpan", "kor_Hang", "arb_Arab", "hin_Deva", "swh_Latn",
                "tur_Latn")

# The Global-MMLU subset: its English, the MMMLU languages, and Portuguese and Yoruba.
GLOBAL_MMLU_LANGS = ("en", "ar", "bn", "de", "es", "fr", "hi", "id", "it", "ja", "ko", "pt",
                     "sw", "yo", "zh")
XCOPA_LANGS = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")


def _write_jsonl(out: Path, items: Iterable[dict[str, Any]]) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
            n += 1
    if not n:
        raise DataError(f"{out.name}: the conversion produced no items")
    return n


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path.name} line {number}: not valid JSON "
                                    f"({exc.msg})") from None


def copy_tsv_dir(files: dict[str, Path], out: Path) -> None:
    """BMLAMA: the ``{lang}.tsv`` files are xlgap's BMLAMA format already; copied as is
    (the loader copes with their quirks: zh.tsv's five-field header, Hebrew quoting)."""
    out.mkdir(parents=True)
    for name, path in files.items():
        shutil.copyfile(path, out / name)


def eclektic(files: dict[str, Path], out: Path) -> None:
    """ECLeKTic ``eclektic_main.jsonl``: one object per question, wide by language:
    ``q_id``, ``original_lang`` (the language of the only Wikipedia with the fact),
    ``title``, ``url``, ``question``/``answer``/``content`` in the original language, and
    ``{lang}_q``, ``{lang}_a``, ``{lang}_c`` for each of the 12 languages.

    Each question becomes an open item (gold answer, no candidates) with ``source`` set to
    ``original_lang``, so transfer is measured from the language the fact comes from.
    """
    path = files["eclektic_main.jsonl"]

    def items() -> Iterator[dict[str, Any]]:
        for number, row in _jsonl_rows(path):
            where = f"{path.name} line {number}"
            for key in ("q_id", "original_lang"):
                if key not in row:
                    raise DataError(f"{where}: no {key!r} (is this ECLeKTic's main file?)")
            langs = {}
            for key, value in row.items():
                if not key.endswith("_q") or not isinstance(value, str) or not value.strip():
                    continue
                lang = key[:-2]
                answer = row.get(f"{lang}_a")
                entry: dict[str, Any] = {"prompt": value.strip()}
                if isinstance(answer, str) and answer.strip():
                    entry["answers"] = [answer.strip()]
                langs[lang] = entry
            source = str(row["original_lang"])
            if source not in langs:
                raise DataError(f"{where}: question {row['q_id']} has no {source}_q in its "
                                "own source language")
            meta = {k: str(row[k]) for k in ("title", "url") if row.get(k)}
            yield {"id": str(row["q_id"]), "source": source, "meta": meta, "langs": langs}

    _write_jsonl(out, items())


def _mmmlu_rows(path: Path) -> list[dict[str, str]]:
    """An openai/MMMLU ``test/mmlu_{LOCALE}.csv``: an unnamed index column, then
    ``Question``, ``A``, ``B``, ``C``, ``D``, ``Answer`` (a letter), ``Subject``."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    need = ("Question", "A", "B", "C", "D", "Answer", "Subject")
    if rows and any(k not in rows[0] for k in need):
        raise DataError(f"{path.name}: expected columns {list(need)}, found {list(rows[0])}")
    return rows


def _mmlu_english(tar_path: Path) -> dict[str, list[list[str]]]:
    """The original MMLU ``data.tar``: ``data/test/{subject}_test.csv``, no header,
    columns question, A, B, C, D, answer letter."""
    by_subject: dict[str, list[list[str]]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) < 3 or parts[-2] != "test" or not member.name.endswith("_test.csv"):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
            subject = parts[-1].removesuffix("_test.csv")
            by_subject[subject] = [r for r in csv.reader(text) if r]
    if not by_subject:
        raise DataError(f"{tar_path.name}: no data/test/*_test.csv files (is this MMLU's "
                        "data.tar?)")
    return by_subject


def _mc_entry(question: str, options: list[str], answer: str, where: str) -> dict[str, Any]:
    letter = answer.strip().upper()
    if letter not in LETTERS[: len(options)]:
        raise DataError(f"{where}: answer {answer!r} is not one of the option letters")
    return {"prompt": question.strip(), "candidates": [o.strip() for o in options],
            "gold": LETTERS.index(letter), "format": "mc"}


def mmmlu(files: dict[str, Path], out: Path) -> None:
    """MMMLU's 14 locales plus MMLU's English test set, one item per question with four
    lettered options (format ``mc``), aligned by subject and position in the subject."""
    per_lang: dict[str, dict[str, list[dict[str, Any]]]] = {}
    english = _mmlu_english(files["data.tar"])
    per_lang["en"] = {s: [_mc_entry(r[0], r[1:5], r[5], f"data.tar {s} row {i}")
                          for i, r in enumerate(rows)] for s, rows in english.items()}
    for locale, lang in MMMLU_LOCALES.items():
        name = f"mmlu_{locale}.csv"
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for i, r in enumerate(_mmmlu_rows(files[name])):
            grouped[r["Subject"]].append(_mc_entry(r["Question"], [r[k] for k in "ABCD"],
                                                   r["Answer"], f"{name} row {i + 2}"))
        per_lang[lang] = grouped
    subjects = sorted({s for grouped in per_lang.values() for s in grouped})
    for lang, grouped in per_lang.items():
        for subject in subjects:
            n_en, n = len(per_lang["en"].get(subject, [])), len(grouped.get(subject, []))
            if n != n_en:
                raise DataError(f"MMMLU {lang}: subject {subject} has {n} questions, English "
                                f"has {n_en}; rows cannot be aligned")

    def items() -> Iterator[dict[str, Any]]:
        for subject in subjects:
            for i in range(len(per_lang["en"][subject])):
                yield {"id": f"{subject}-{i}", "meta": {"subject": subject},
                       "langs": {lang: grouped[subject][i] for lang, grouped in per_lang.items()}}

    _write_jsonl(out, items())


def global_mmlu(files: dict[str, Path], out: Path) -> None:
    """Global-MMLU ``{lang}/test-00000-of-00001.parquet`` (saved here as
    ``{lang}.test.parquet``): ``sample_id`` (``subject/test/N``, the same question in every
    language), ``subject``, ``question``, ``option_a`` ... ``option_d``, ``answer`` (a
    letter), ``cultural_sensitivity_label`` (CS, CA or empty) and more. Aligned by
    ``sample_id``; four lettered options; the CS/CA label is kept in ``meta``."""
    import pyarrow.parquet as pq  # xlgap[hf]; only this converter reads Parquet

    per_lang: dict[str, dict[str, dict[str, Any]]] = {}
    meta: dict[str, dict[str, str]] = {}
    for lang in GLOBAL_MMLU_LANGS:
        name = f"{lang}.test.parquet"
        rows = pq.read_table(files[name]).to_pylist()
        entries: dict[str, dict[str, Any]] = {}
        for i, r in enumerate(rows):
            where = f"{name} row {i}"
            try:
                sid = str(r["sample_id"])
                options = [str(r[f"option_{k}"]) for k in "abcd"]
                entries[sid] = _mc_entry(str(r["question"]), options, str(r["answer"]), where)
            except KeyError as exc:
                raise DataError(f"{where}: no column {exc} (is this Global-MMLU?)") from None
            if lang == "en":
                meta[sid] = {k: str(r[k]) for k in ("subject", "cultural_sensitivity_label")
                             if r.get(k)}
        per_lang[lang] = entries
    ids = list(per_lang["en"])
    for lang, entries in per_lang.items():
        if set(entries) != set(ids):
            odd = sorted(set(entries) ^ set(ids))[:3]
            raise DataError(f"Global-MMLU {lang}: its sample_ids differ from English's "
                            f"(e.g. {odd}); rows cannot be aligned")
    _write_jsonl(out, ({"id": sid, "meta": meta[sid],
                        "langs": {lang: per_lang[lang][sid] for lang in per_lang}}
                       for sid in ids))


def flores200(files: dict[str, Path], out: Path) -> None:
    """FLORES-200 ``flores200_dataset.tar.gz``: ``flores200_dataset/devtest/{code}.devtest``,
    one sentence per line, line i the same sentence in every language. Written as
    ``{code}.txt`` (FLORES names, read as BCP 47 tags by the loader)."""
    wanted = {f"{code}.devtest": code for code in FLORES_CODES}
    out.mkdir(parents=True)
    found: dict[str, int] = {}
    with tarfile.open(files["flores200_dataset.tar.gz"]) as tar:
        for member in tar:
            base = member.name.rsplit("/", 1)[-1]
            if base not in wanted or "/devtest/" not in f"/{member.name}":
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            text = handle.read().decode("utf-8")
            code = wanted[base]
            (out / f"{code}.txt").write_text(text, encoding="utf-8")
            found[code] = len(text.rstrip("\n").split("\n"))
    missing = [c for c in FLORES_CODES if c not in found]
    if missing:
        raise DataError(f"flores200_dataset.tar.gz: no devtest file for {', '.join(missing)}")
    if len(set(found.values())) > 1:
        raise DataError(f"FLORES-200 devtest files differ in length: {found}")


def xcopa(files: dict[str, Path], out: Path) -> None:
    """XCOPA ``data/{lang}/test.{lang}.jsonl``: ``premise``, ``choice1``, ``choice2``,
    ``question`` ("cause" or "effect"), ``label`` (0 or 1), ``idx``, ``changed``. Items are
    aligned by ``idx``; the two choices become lettered options (format ``mc``)."""
    by_idx: dict[str, dict[str, Any]] = {}
    for lang in XCOPA_LANGS:
        name = f"test.{lang}.jsonl"
        for number, row in _jsonl_rows(files[name]):
            where = f"{name} line {number}"
            try:
                idx, label = str(row["idx"]), int(row["label"])
                question = str(row["question"])
                entry = {"prompt": f"{row['premise'].strip()} ({question})",
                         "candidates": [row["choice1"].strip(), row["choice2"].strip()],
                         "gold": label, "format": "mc"}
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{where}: not an XCOPA row ({exc})") from None
            item = by_idx.setdefault(idx, {"id": f"xcopa-{idx}", "meta": {"question": question},
                                           "langs": {}})
            item["langs"][lang] = entry
    _write_jsonl(out, (by_idx[k] for k in sorted(by_idx, key=lambda k: int(k))))

"""A small BMLAMA-17 written by the project (no row copied from the data set), in the
published layout of ``1_easyrun/BMLAMA17/{lang}.tsv`` with its quirks: header ``Prompt``,
``Ans``, ``Candidate Ans``, ``Subject``; ``zh.tsv``'s header of five fields (``Candidate``
and ``Ans`` split by a tab) and CRLF line ends; Hebrew candidate lists quoted CSV-style with
an inner doubled quote; a ``LICENSE`` file beside the data; line i the same fact in every
language. The prompts carry their language's code, so each language's text differs."""

from __future__ import annotations

from pathlib import Path

LANGS = ("ar", "ca", "el", "en", "es", "fa", "fr", "he", "hu", "ja", "ko", "nl", "ru", "tr",
         "uk", "vi", "zh")
CITIES = ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Seoul", "Quito", "Dakar", "Hanoi", "Riga")
RELATIONS = ("{} was born in <mask>.", "{} died in <mask>.", "{} worked in <mask>.",
             "The headquarters of {} is in <mask>.")
PEOPLE = ("Ada Vell", "Bruno Kant", "Chiara Lune", "Dmitri Osk", "Elif Sarn", "Farid Qom",
          "Greta Holm", "Hugo Brel", "Ines Dara", "Jonas Pell")
QUOTED = 'LGBT"Q'  # a candidate with a quote inside: Hebrew's list is quoted CSV-style


def facts(n: int) -> list[tuple[str, str, int, list[str]]]:
    """``n`` facts: (subject, template, gold index, candidates), two to five candidates."""
    out = []
    for i in range(n):
        subject = f"{PEOPLE[i % len(PEOPLE)]} {i // len(PEOPLE) + 1}"
        k = 2 + i % 4
        candidates = [CITIES[(i + j) % len(CITIES)] for j in range(k)]
        if i == 3:
            candidates[-1] = QUOTED
        out.append((subject, RELATIONS[i % len(RELATIONS)], (i * 7) % k, candidates))
    return out


def write_bmlama17(folder: Path, n: int = 40) -> Path:
    """``folder`` with ``{lang}.tsv`` for the 17 languages (``n`` facts) and a LICENSE."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = facts(n)
    for lang in LANGS:
        header = "Prompt\tAns\tCandidate\tAns\tSubject" if lang == "zh" else \
            "Prompt\tAns\tCandidate Ans\tSubject"
        lines = [header]
        for subject, template, gold, candidates in rows:
            cands = ", ".join(candidates)
            if lang == "he" and '"' in cands:
                cands = '"' + cands.replace('"', '""') + '"'
            lines.append(f"[{lang}] {template.format(subject)}\t{candidates[gold]}\t{cands}\t"
                         f"{subject}")
        end = "\r\n" if lang == "zh" else "\n"
        (folder / f"{lang}.tsv").write_bytes((end.join(lines) + end).encode("utf-8"))
    (folder / "LICENSE").write_text("Apache License, Version 2.0 (test fixture)\n",
                                    encoding="utf-8")
    return folder

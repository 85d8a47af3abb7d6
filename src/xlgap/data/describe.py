"""A data set in numbers and as text, for ``xlgap data show``."""

from __future__ import annotations

from typing import Any

from xlgap.data.items import ANSWER_FORMATS, MASK, ParallelDataset
from xlgap.data.languages import language_name, language_script


def describe(dataset: ParallelDataset) -> dict[str, Any]:
    """Summary of a data set for ``xlgap data show``: per-language coverage with names and
    scripts, candidates per item, answer formats, and the share of cloze (``<mask>``)
    prompts."""
    entries = [e for it in dataset.items for e in it.langs.values()]
    n_cands = [it.n_candidates for it in dataset.items if it.n_candidates > 0]
    languages = []
    for lang in dataset.languages:
        mine = [it[lang] for it in dataset.items if it.has(lang)]
        languages.append({
            "code": lang, "name": language_name(lang), "script": language_script(lang),
            "original": dataset.original_codes.get(lang, lang), "items": len(mine),
            "cloze_share": sum(e.is_cloze for e in mine) / len(mine) if mine else 0.0,
        })
    return {
        "name": dataset.name,
        "source": dataset.source_path,
        "items": len(dataset.items),
        "languages": languages,
        "scripts": sorted({lang["script"] for lang in languages}),
        "complete_items": sum(all(it.has(lang) for lang in dataset.languages)
                              for it in dataset.items),
        "items_with_candidates": len(n_cands),
        "candidates": ({"min": min(n_cands), "mean": sum(n_cands) / len(n_cands),
                        "max": max(n_cands)} if n_cands else None),
        "cloze_share": sum(e.is_cloze for e in entries) / len(entries) if entries else 0.0,
        "answer_formats": {f: n for f in ANSWER_FORMATS
                           if (n := sum(it.answer_format == f for it in dataset.items))},
        "dropped": len(dataset.dropped),
        "problems": len(dataset.problems),
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_description(desc: dict[str, Any]) -> str:
    """The output of :func:`describe` as text: a header and an aligned language table."""
    langs = desc["languages"]
    lines = [f"{desc['name']}: {_count(desc['items'], 'item')}, "
             f"{_count(len(langs), 'language')}, {_count(len(desc['scripts']), 'script')} "
             f"({', '.join(desc['scripts'])})"]
    if desc.get("source"):
        lines.append(f"source: {desc['source']}")
    cands = desc["candidates"]
    if cands:
        lines.append(f"candidates per item: min {cands['min']}, mean {cands['mean']:.2f}, "
                     f"max {cands['max']} ({desc['items_with_candidates']} items have them)")
    else:
        lines.append("candidates per item: none (free-form answers or plain sentences)")
    formats = desc.get("answer_formats") or {}
    if formats:
        lines.append("answer formats: " + ", ".join(f"{n} {f}" for f, n in formats.items()))
    lines.append(f"cloze prompts ({MASK}): {desc['cloze_share']:.1%}")
    lines.append(f"items with every language: {desc['complete_items']}")
    if desc["dropped"]:
        lines.append(f"dropped while loading: {desc['dropped']} items")
    if desc.get("problems"):
        lines.append(f"problems while loading (skipped or ignored): {desc['problems']}")
    renamed = [f"{lang['original']} -> {lang['code']}" for lang in langs
               if lang.get("original", lang["code"]) != lang["code"]]
    if renamed:
        lines.append("language codes read as: " + ", ".join(renamed))
    header = ("code", "language", "script", "items", "cloze")
    table = [header] + [(lang["code"], lang["name"], lang["script"], str(lang["items"]),
                         f"{lang['cloze_share']:.0%}") for lang in langs]
    widths = [max(len(row[j]) for row in table) for j in range(len(header))]
    right = {3, 4}  # numbers align right
    lines.append("")
    for row in table:
        cells = [cell.rjust(w) if j in right else cell.ljust(w)
                 for j, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)

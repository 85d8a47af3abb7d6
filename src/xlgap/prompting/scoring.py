"""Candidate scoring and parallel texts for the white-box analyses: one home for the loops
that turn items into per-language candidate log-probabilities or parallel sentences, shared
by consistency, steering and fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xlgap.data.items import MASK, ParallelDataset
from xlgap.errors import ConfigError
from xlgap.prompting.templates import PromptBuilder


def parallel_texts(dataset: ParallelDataset, languages: Sequence[str]) -> dict[str, list[str]]:
    """One sentence per item and language, rows parallel: cloze masks are filled with the
    gold candidate so each row is a natural sentence. Items lacking a language are left out
    of every language, so rows stay aligned."""
    texts: dict[str, list[str]] = {lang: [] for lang in languages}
    for item in dataset.items:
        if not all(item.has(lang) for lang in languages):
            continue
        for lang in languages:
            entry = item[lang]
            text = entry.prompt
            if MASK in text:
                fill = (entry.candidates[entry.gold] if entry.gold is not None and
                        entry.candidates else (entry.answers[0] if entry.answers else ""))
                text = text.replace(MASK, fill)
            texts[lang].append(text)
    if not texts[languages[0]]:
        raise ConfigError("no item has every requested language; pick --targets that the "
                          "data set covers")
    return texts


def candidate_scores(backend: Any, dataset: ParallelDataset, languages: Sequence[str],
                     shots: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Log-probability of every candidate, per language: (Q, M) NaN-padded, and gold."""
    builder = PromptBuilder(backend, dataset.items, shots=shots)
    width = max((it.n_candidates for it in dataset.items), default=0)
    items = [it for it in dataset.items if all(it.has(lang) and it[lang].candidates
                                               for lang in languages)]
    scores: dict[str, np.ndarray] = {}
    gold: dict[str, np.ndarray] = {}
    for lang in languages:
        prompts = [builder.scoring_prompt(it, lang) for it in items]
        got = backend.score_batch([(p.prompt, list(p.continuations)) for p in prompts])
        arr = np.full((len(items), width), np.nan)
        for row, values in enumerate(got):
            arr[row, :len(values)] = values
        scores[lang] = arr
        gold[lang] = np.array([it[lang].gold if it[lang].gold is not None else -1
                               for it in items])
    return scores, gold

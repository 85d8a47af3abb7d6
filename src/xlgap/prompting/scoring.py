"""Candidate scoring and parallel texts for the white-box analyses: one home for the loops
that turn items into per-language candidate log-probabilities or parallel sentences, shared
by consistency, steering and fine-tuning; and the one softmax that turns candidate
log-probabilities into distributions (exact-mode runs, strategies, steering, fine-tuning)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from xlgap.data.items import MASK, ParallelDataset
from xlgap.errors import ConfigError
from xlgap.progress import progress_bar
from xlgap.prompting.templates import PromptBuilder


def softmax(logps: Sequence[float] | np.ndarray) -> np.ndarray:
    """Log-probabilities -> probabilities along the last axis. Non-finite entries (NaN
    padding of a ragged candidate list, -inf) get probability 0; a row with none finite is
    all NaN."""
    x = np.asarray(logps, dtype=np.float64)
    ok = np.isfinite(x)
    top = np.where(ok, x, -np.inf).max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(ok, np.exp(x - top), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, e / total, np.nan)


def distributions(logps: np.ndarray) -> np.ndarray:
    """Candidate log-probabilities ``(Q, M)`` (NaN padding) -> ``(Q, M + 1)`` exact
    distributions with an empty "other" column, as :mod:`xlgap.stats.metrics` wants."""
    p = softmax(logps)
    return np.concatenate([p, np.zeros((len(p), 1))], axis=1)


@contextlib.contextmanager
def scoring_progress(backend: Any, total: int, desc: str, enabled: bool) -> Iterator[None]:
    """A progress bar fed by the result store's per-chunk callback while the block runs
    (nothing when disabled or when the backend is not behind the store)."""
    if not enabled or "on_chunk" not in vars(backend):
        yield
        return
    bar = progress_bar(total=total, desc=desc, unit="q", enabled=enabled)
    previous = backend.on_chunk

    def update(n: int) -> None:
        bar.update(n)
        if previous is not None:
            previous(n)

    backend.on_chunk = update
    try:
        yield
    finally:
        backend.on_chunk = previous
        bar.close()


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

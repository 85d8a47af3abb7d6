"""Response ensembling: vote-k, the plurality answer of k samples of the baseline prompt."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xlgap.data.items import Item, ParallelDataset
from xlgap.interventions.parsing import parse_direct
from xlgap.interventions.strategies.base import (
    PairResult,
    Strategy,
    StrategyOptions,
    _k,
    register_strategy,
)
from xlgap.models.base import Backend
from xlgap.prompting.answers import OTHER, normalize


class Vote(Strategy):
    """vote-k: each final answer is the majority over k baseline samples.

    Votes are over answer concepts: a sample naming candidate j votes for j; one naming
    no candidate votes for its normalised text (so identical free-form answers can win);
    an empty sample does not vote. Ties go to the answer seen first among the k samples.
    """

    def __init__(self, backend: Backend, dataset: ParallelDataset, options: StrategyOptions,
                 k: int) -> None:
        super().__init__(backend, dataset, options)
        self.k = k
        self.name = f"vote-{k}"

    def run(self, pairs: Sequence[tuple[Item, str]]) -> list[PairResult]:
        r, k = self.options.samples, self.k
        outs = self.sample([self.builder.generation_prompt(it, lang) for it, lang in pairs],
                           n=r * k)
        results = []
        for (it, lang), raws in zip(pairs, outs, strict=True):
            texts, answers, failed, groups = [], [], [], []
            for rep in range(r):
                group = raws[rep * k:(rep + 1) * k]
                text, answer = majority(group, lambda t, it=it, lang=lang:
                                        self.builder.map_generated(it, lang, t), lang)
                texts.append(text or "")
                answers.append(answer)
                failed.append(text is None)
                groups.append(group)
            results.append(PairResult(it.id, lang, texts, answers, failed, groups,
                                      {"k": k}))
        return results

    def score(self, pairs: Sequence[tuple[Item, str]]) -> list[list[float]]:
        """The distribution of the majority of k answers drawn from the baseline's exact
        distribution (seeded per item and language)."""
        base = self.score_prompts([self.builder.scoring_prompt(it, lang)
                                   for it, lang in pairs])
        return [vote_distribution(p, self.k, _pair_seed(self.options.seed, it.id, lang))
                for (it, lang), p in zip(pairs, base, strict=True)]


def _pair_seed(seed: int, item_id: str, lang: str) -> int:
    digest = hashlib.sha256(f"{seed}\t{item_id}\t{lang}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


VOTE_DRAWS = 4000  # Monte Carlo draws for the exact distribution of a k-vote winner


def vote_distribution(probs: Sequence[float], k: int, seed: int) -> list[float]:
    """The distribution of the winner of k answers drawn from ``probs`` (plurality; ties go
    to the answer drawn first, as in :func:`majority`), by seeded Monte Carlo."""
    p = np.asarray(probs, dtype=np.float64)
    m = p.size
    draws = np.random.default_rng(seed).choice(m, size=(VOTE_DRAWS, k), p=p / p.sum())
    onehot = draws[:, :, None] == np.arange(m)
    counts = onehot.sum(axis=1)
    first = np.where(onehot.any(axis=1), onehot.argmax(axis=1), k)
    winner = np.argmax(counts * (k + 1) - first, axis=1)
    return (np.bincount(winner, minlength=m) / VOTE_DRAWS).tolist()


def majority(raws: Sequence[str], concept: Callable[[str], int], lang: str | None = None
             ) -> tuple[str | None, int]:
    """The winning (text, answer concept) over ``raws``, each parsed answer mapped by
    ``concept`` (a candidate index or OTHER); ``(None, OTHER)`` when every sample is empty.
    See :class:`Vote` for the rule."""
    counts: dict[tuple[str, Any], int] = {}
    first_text: dict[tuple[str, Any], str] = {}
    for raw in raws:
        parsed = parse_direct(raw)
        if parsed is None:
            continue
        idx = concept(parsed)
        key: tuple[str, Any] = ("c", idx) if idx != OTHER else ("t", normalize(parsed, lang))
        counts[key] = counts.get(key, 0) + 1
        first_text.setdefault(key, parsed)
    if not counts:
        return None, OTHER
    # max() keeps the first maximal key in insertion order: ties go to the first seen.
    best = max(counts, key=lambda key: counts[key])
    return first_text[best], best[1] if best[0] == "c" else OTHER


register_strategy(r"vote-(\d+)", lambda b, d, o, m: Vote(b, d, o, _k(m)),
                  "majority answer over k samples of the baseline prompt")

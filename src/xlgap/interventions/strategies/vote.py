"""Response ensembling: vote-k, the plurality answer of k samples of the baseline prompt."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from xlgap.data.items import Item, ParallelDataset
from xlgap.errors import ConfigError
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
        """The exact distribution of the plurality winner of k answers drawn from the
        baseline's exact distribution (:func:`vote_distribution`)."""
        base = self.score_prompts([self.builder.scoring_prompt(it, lang)
                                   for it, lang in pairs])
        return [vote_distribution(p, self.k) for p in base]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.k, "vote_rule": VOTE_RULE}
        if self.options.exact:
            out["not_applicable"] = EXACT_NOT_APPLICABLE
        return out


VOTE_RULE = ("plurality of k answers; a tie goes to the tied answer drawn first, which "
             "over exact distributions splits the win evenly among the tied answers")
# A plurality vote over k i.i.d. draws keeps the argmax of the distribution it draws from
# (the count vector is exchangeable across answers, and the likelier answer stochastically
# dominates in it), so in exact mode every statistic of the mode equals the baseline's.
EXACT_NOT_APPLICABLE: dict[str, Any] = {
    "metrics": ["transfer", "overall_success", "agreement", "mode_accuracy"],
    "reason": ("exact vote-k keeps the mode of the baseline distribution it votes over, so "
               "the ensembled statistics (of the mode) equal the baseline's by construction "
               "and have no test; the per-response metrics (one vote-k answer against one "
               "baseline answer), accuracy (P(gold)) and the distances between "
               "distributions (chi-square, Jensen-Shannon, L2) can move, and are tested"),
}
MAX_COMPOSITIONS = 5_000_000  # count vectors enumerated at most (m = 10, k = 5: 2,002)


@lru_cache(maxsize=32)
def _compositions(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every count vector of k draws over m answers ``(N, m)`` and the log multinomial
    coefficient of each."""
    n = math.comb(m + k - 1, k)
    if n > MAX_COMPOSITIONS:
        raise ConfigError(f"exact vote-{k} over {m} candidates needs {n:,} count vectors; "
                          f"lower k, or drop --exact to vote on sampled answers")
    counts = np.zeros((n, m), dtype=np.int64)
    for row, combo in enumerate(itertools.combinations_with_replacement(range(m), k)):
        np.add.at(counts[row], list(combo), 1)
    lgam = np.array([math.lgamma(c + 1) for c in range(k + 1)])
    return counts, math.lgamma(k + 1) - lgam[counts].sum(axis=1)


def vote_distribution(probs: Sequence[float], k: int) -> list[float]:
    """The exact distribution of the winner of k i.i.d. answers drawn from ``probs``.

    Every count vector c of the k draws has the multinomial probability
    ``k! / prod(c_i!) * prod(p_i^c_i)``; its plurality winners are the answers with the
    largest count. :func:`majority` gives a tie to the tied answer drawn first; given the
    counts, the draws are in uniformly random order, so that answer is each tied one with
    the same chance, and a tie's probability is split evenly among the tied answers.
    """
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum()
    counts, log_coef = _compositions(p.size, k)
    logp = np.log(np.where(p > 0, p, 1.0))
    # an answer of probability 0 is never drawn: count vectors that draw it are impossible
    impossible = ((counts > 0) & (p <= 0)).any(axis=1)
    prob = np.where(impossible, 0.0, np.exp(log_coef + counts @ logp))
    top = counts == counts.max(axis=1, keepdims=True)
    out = (prob[:, None] * top / top.sum(axis=1, keepdims=True)).sum(axis=0)
    return (out / out.sum()).tolist()


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

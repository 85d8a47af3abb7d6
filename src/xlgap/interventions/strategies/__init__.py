"""Prompt strategies that try to close the cross-lingual gap at the input or the output.

The shared machinery and the registry are in :mod:`.base` (its docstring describes every
strategy); the strategies register themselves from :mod:`.translation` (baseline, TrEn-k,
TTA-k, TEA) and :mod:`.vote` (vote-k). :func:`register_strategy` is the one seam for a new
strategy.
"""

from xlgap.interventions.strategies import translation as _translation  # noqa: F401 - registers
from xlgap.interventions.strategies import vote as _vote  # noqa: F401 - registers
from xlgap.interventions.strategies.base import (
    PIVOT,
    PairResult,
    Strategy,
    StrategyOptions,
    get_strategy,
    parse_strategy_list,
    register_strategy,
    strategy_help,
)
from xlgap.interventions.strategies.translation import (
    Baseline,
    TranslateEnglishAnswer,
    TranslateThenAnswer,
    TranslationEnsemble,
)
from xlgap.interventions.strategies.vote import Vote, majority, vote_distribution

__all__ = [
    "PIVOT",
    "Baseline",
    "PairResult",
    "Strategy",
    "StrategyOptions",
    "TranslateEnglishAnswer",
    "TranslateThenAnswer",
    "TranslationEnsemble",
    "Vote",
    "get_strategy",
    "majority",
    "parse_strategy_list",
    "register_strategy",
    "strategy_help",
    "vote_distribution",
]

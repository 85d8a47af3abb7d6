"""Prompt strategies that try to close the cross-lingual gap at the input or the output.

The shared machinery and the registry :data:`~.base.STRATEGIES` are in :mod:`.base` (its
docstring describes every strategy); the strategies register themselves from
:mod:`.translation` (baseline, TrEn-k, TTA-k, TEA) and :mod:`.vote` (vote-k), imported on
first use. A new strategy is a :class:`~.base.StrategySpec` registered with
:func:`register_strategy`, or, from another package, listed in the entry-point group
``xlgap.strategies``.
"""

from xlgap.interventions.strategies.base import (
    PIVOT,
    STRATEGIES,
    PairResult,
    Strategy,
    StrategyOptions,
    StrategySpec,
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
    "STRATEGIES",
    "Baseline",
    "PairResult",
    "Strategy",
    "StrategyOptions",
    "StrategySpec",
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

"""Interventions at the input and output that try to close the cross-lingual gap:
translation ensembles (TrEn-k), translate-then-answer (TTA-k), translate-English-answer
(TEA) and response ensembling (vote-k), run into standard run directories and compared
with the baseline (``xlgap intervene``; see ``docs/interventions.md``).

Inside the model (white-box; they load torch, so they are not imported here):
:mod:`xlgap.interventions.steering` (``train_steering_vectors``, ``vectors.apply``,
``run_steering``) and :mod:`xlgap.interventions.finetune` (``run_finetune``); see
``docs/steering.md``."""

from xlgap.interventions.evaluate import compare_runs, evaluate_dirs, run_strategy
from xlgap.interventions.parsing import clean_answer, parse_after_marker, parse_direct
from xlgap.interventions.strategies import (
    PairResult,
    Strategy,
    StrategyOptions,
    get_strategy,
    parse_strategy_list,
    register_strategy,
)

__all__ = [
    "PairResult",
    "Strategy",
    "StrategyOptions",
    "clean_answer",
    "compare_runs",
    "evaluate_dirs",
    "get_strategy",
    "parse_after_marker",
    "parse_direct",
    "parse_strategy_list",
    "register_strategy",
    "run_strategy",
]

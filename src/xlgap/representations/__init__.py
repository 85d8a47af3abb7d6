"""Representation analyses: ILO (Interlingual Local Overlap), cross-lingual similarity, rank
consistency, extraction; each figure with a bootstrap interval and a chance level.

Everything here works on plain numpy arrays, one layer at a time, so a model is only
needed for :func:`extract_hidden_states`.

The one-layer ILO function is ``xlgap.representations.ilo.ilo``; it is not re-exported
here so that ``xlgap.representations.ilo`` keeps naming the module.
"""

from xlgap.representations.extract import (
    CenteredStates,
    HiddenStateSet,
    extract_hidden_states,
    layer_plan,
    load_or_extract,
)
from xlgap.representations.ilo import (
    IloResult,
    ilo_by_layer,
    ilo_from_npz,
    ilo_uncertainty,
    knn,
    knn_cosine,
)
from xlgap.representations.similarity import (
    layerwise_similarity,
    linear_cka,
    linear_cka_biased,
    parallel_cosine,
    retrieval_accuracy,
    retrieval_accuracy_directed,
)
from xlgap.stats.consistency import (
    consistency_matrix,
    rank_consistency,
    rankc,
    shared_rates,
)

__all__ = [
    "CenteredStates",
    "HiddenStateSet",
    "IloResult",
    "consistency_matrix",
    "extract_hidden_states",
    "ilo_by_layer",
    "ilo_from_npz",
    "ilo_uncertainty",
    "knn",
    "knn_cosine",
    "layer_plan",
    "layerwise_similarity",
    "linear_cka",
    "linear_cka_biased",
    "load_or_extract",
    "parallel_cosine",
    "rank_consistency",
    "rankc",
    "retrieval_accuracy",
    "retrieval_accuracy_directed",
    "shared_rates",
]

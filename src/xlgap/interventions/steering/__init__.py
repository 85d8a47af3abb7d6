"""Steering a white-box model toward the source language or the shared space.

* :mod:`.vectors`: pure aggregators (language means, direction vectors), the vectors
  file, and :func:`train_steering_vectors`; ``vectors.apply(model, layers, alpha)`` steers
  inside a ``with`` block.
* :mod:`.hooks`: :class:`Steering` and the :func:`steering` context manager (hooks always
  removed; the fingerprint tagged while active).
* :mod:`.experiment`: :func:`run_steering`, the experiment of ``xlgap steer``, returning
  a :class:`SteeringResult`.
"""

from xlgap.interventions.steering.experiment import (
    Setting,
    SteeringResult,
    SteerOptions,
    parse_sweep,
    run_steering,
)
from xlgap.interventions.steering.hooks import Steering, parse_layers, steering, steering_tag
from xlgap.interventions.steering.metrics import (
    distributions,
    inside_summary,
    scoring_progress,
    target_parts,
)
from xlgap.interventions.steering.splits import parse_split, split_items
from xlgap.interventions.steering.vectors import (
    SteeringVectors,
    apply_steering_options,
    compute_vectors,
    direction_vectors,
    hidden_by_language,
    language_means,
    random_like,
    train_steering_vectors,
)

__all__ = [
    "Setting",
    "SteerOptions",
    "Steering",
    "SteeringResult",
    "SteeringVectors",
    "apply_steering_options",
    "compute_vectors",
    "direction_vectors",
    "distributions",
    "hidden_by_language",
    "inside_summary",
    "language_means",
    "parse_layers",
    "parse_split",
    "parse_sweep",
    "random_like",
    "run_steering",
    "scoring_progress",
    "split_items",
    "steering",
    "steering_tag",
    "target_parts",
    "train_steering_vectors",
]

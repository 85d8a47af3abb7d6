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
from xlgap.interventions.steering.vectors import (
    SteeringVectors,
    apply_steering_options,
    compute_vectors,
    direction_vectors,
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
    "language_means",
    "parse_layers",
    "parse_sweep",
    "random_like",
    "run_steering",
    "steering",
    "steering_tag",
    "train_steering_vectors",
]

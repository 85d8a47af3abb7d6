"""The random-direction control of the steering experiment, as a distribution.

One random draw cannot say whether the chosen direction beats "any push of that size": its
p-values resample items, never directions. So the control is many draws (``draws``,
default 20), and the steered effect is read as a percentile among theirs.

Each draw is ONE direction ``u`` shared by every layer of the setting (the steered vectors
at consecutive layers point roughly the same way, so their pushes add up almost linearly;
independent directions per layer would add only as the square root of the layer count).
At layer ``l`` the draw adds ``c * |v_l| * u``, with ``c = |sum_l v_l| / sum_l |v_l|``: the
per-layer profile of the steered vector, and exactly its total push ``|sum_l v_l|`` (with
one layer, simply ``|v| u``).

``u`` is isotropic (``kind="isotropic"``) or drawn from the states' covariance at the
first steered layer (``kind="covariance"``, a random combination of centred training
states): an isotropic push in a residual stream with a few outlier dimensions lands mostly
where the model never varies, which is a weak control; the covariance one pushes along
directions the states do vary in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from xlgap.errors import ConfigError
from xlgap.interventions import arms
from xlgap.representations.layerwise import inside_summary, parallel_cosines
from xlgap.stats.pairs import Part

CONTROL_KINDS = ("isotropic", "covariance")
#: metrics where a lower value is better (distances); every other one: higher is better
LOWER_IS_BETTER = ("chi2", "js")


def draw_seed(seed: int, draw: int, target_index: int) -> int:
    """The seed of one draw for one target: distinct across draws and targets."""
    return seed * 7919 + draw * 104729 + target_index + 1


def random_direction(vector: torch.Tensor, layers: Sequence[int], seed: int,
                     basis: np.ndarray | None = None) -> torch.Tensor:
    """A ``(layers, d)`` control for ``vector``: one random unit direction ``u`` scaled at
    every layer ``l`` to ``c |v_l|`` (``c`` as in the module docstring), so that at the
    steered ``layers`` it has the vector's per-layer profile and its total push.

    ``basis`` (``(n, d)``, centred states) draws ``u`` from their covariance
    (``u ~ sum_i g_i basis_i``); None draws it isotropic."""
    v = torch.as_tensor(vector).detach().float()
    chosen = sorted({int(x) for x in layers})
    if not chosen or max(chosen) >= v.shape[0] or min(chosen) < 0:
        raise ConfigError(f"random_direction: layers {list(layers)} outside the vector's "
                          f"{v.shape[0]} layers")
    rng = np.random.default_rng(int(seed))
    if basis is None:
        u = rng.standard_normal(v.shape[1])
    else:
        b = np.asarray(basis, dtype=np.float64)
        if b.ndim != 2 or b.shape[1] != v.shape[1]:
            raise ConfigError(f"random_direction: basis must be (n, {v.shape[1]}), got "
                              f"{b.shape}")
        u = rng.standard_normal(b.shape[0]) @ b
    u = u / max(float(np.linalg.norm(u)), 1e-12)
    norms = v.norm(dim=-1).double()
    total = float(v[chosen].double().sum(0).norm())
    per_layer = float(norms[chosen].sum())
    scale = total / per_layer if per_layer > 0 else 0.0
    out = torch.as_tensor(np.outer(norms.numpy() * scale, u), dtype=torch.float32)
    return out


def covariance_basis(states: Mapping[str, np.ndarray], layer: int) -> np.ndarray:
    """Centred pooled states of every language at ``layer`` (``{lang: (n, layers, d)}``),
    scaled so ``basis.T @ basis`` is their covariance."""
    x = np.concatenate([np.asarray(s, dtype=np.float64)[:, layer] for s in states.values()])
    if len(x) < 2:
        raise ConfigError("a covariance-matched control needs at least 2 training states")
    x = x - x.mean(0)
    return x / np.sqrt(len(x) - 1)


def total_push(vector: torch.Tensor, layers: Sequence[int], alpha: float) -> float:
    """The norm of everything a setting adds to the residual stream (alpha split over the
    layers, as the hooks do): ``|alpha / n * sum_l v_l|``."""
    chosen = sorted({int(x) for x in layers})
    v = torch.as_tensor(vector).detach().double()
    return float((alpha / len(chosen)) * v[chosen].sum(0).norm())


def rank_summary(steered: float | None, random: Sequence[float | None], lower_better: bool
                 ) -> dict[str, Any]:
    """Where the steered effect falls among the random draws' effects: ``percentile``
    (share of draws below it, ties counted half, in %), and the one-sided rank ``p`` that
    the shared direction does better than a random one (``(1 + #draws at least as good) /
    (draws + 1)``; its floor ``p_floor`` is ``1 / (draws + 1)``)."""
    r = np.array([np.nan if x is None else float(x) for x in random], dtype=float)
    r = r[np.isfinite(r)]
    # ci: none (the random draws' spread is ``random_range``, not an interval of the estimate)
    out: dict[str, Any] = {"estimate": steered, "ci": None, "n": len(r), "percentile": None,
                           "p": None, "p_floor": None,
                           "better": "lower" if lower_better else "higher",
                           "random_range": None}
    if steered is None or not np.isfinite(steered) or not len(r):
        return out
    below = float((r < steered).sum()) + 0.5 * float((r == steered).sum())
    as_good = int((r <= steered).sum()) if lower_better else int((r >= steered).sum())
    out.update(percentile=100.0 * below / len(r), p=(1 + as_good) / (len(r) + 1),
               p_floor=1 / (len(r) + 1),
               random_range=[float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))])
    return out


def metric_effects(parts: Mapping[str, Mapping[str, Part]],
                   base: Mapping[str, Mapping[str, Part]]) -> dict[str, float]:
    """Pooled (over targets) point effect of an arm on every metric: arm - no steering."""
    a = arms.point_estimates(arms.stacked(parts))
    b = arms.point_estimates(arms.stacked(base))
    return {k: float(a[k] - b[k]) for k in a if k in b}


def ilo_point(states: Mapping[str, np.ndarray], k: int) -> list[float]:
    """Mean ILO by layer (no intervals), as
    :func:`xlgap.representations.layerwise.inside_summary` computes it."""
    return [float(x) for x in inside_summary(states, next(iter(states)), k=k)["ilo"]]


def cos_point(states: Mapping[str, np.ndarray], source: str) -> np.ndarray:
    """Mean parallel cosine with the source by layer (centred as the inside summary)."""
    return parallel_cosines(states, source).mean(axis=0)

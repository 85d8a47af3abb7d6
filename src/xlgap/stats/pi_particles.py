"""The particle machinery of the pi model fit (:mod:`xlgap.stats.pi`).

Per option count M, one bank of particles ``(mu, s)`` drawn from a broad proposal, with
``log E[softmax(mu + s e)]`` by quasi-Monte Carlo; the population prior is a histogram
over (margin, sigma0, s) cells fitted by EM to counts (empirical Bayes). The fit options
live here so that both modules share them; :mod:`xlgap.stats.pi` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc

from xlgap.stats.bootstrap import DEFAULT_N_BOOT


@dataclass(frozen=True)
class PiFitOptions:
    """Knobs of :func:`fit_pi_model` (defaults fit Q=500, K=20, M=4 in about 5 s)."""

    n_particles: int = 16000
    n_eps: int = 64  # quasi-Monte Carlo points for E[softmax z]
    n_post: int = 192  # particles resampled from each source posterior
    tau_grid: tuple[float, ...] = tuple(float(x) for x in np.geomspace(0.5, 5.0, 15).round(4))
    eta_grid: tuple[float, ...] = tuple(float(x) for x in np.geomspace(0.125, 8.0, 16).round(4))
    pi_points: int = 101
    n_boot: int = DEFAULT_N_BOOT
    alpha: float = 0.05
    k_eff: float = 50.0  # exact mode: distributions count as this many answers
    bias_prior: str = "fitted"  # "fitted" | "source" | "target"
    ecm_iters: int = 30  # rounds of the bias-prior refit for bias_prior="fitted"
    bias_prior_strength: float = 20.0  # pseudo-items pulling a fitted bias prior to the source's
    prior_iters: int = 150
    prior_smoothing: float = 0.5  # pseudo-count per histogram cell
    seed: int = 0
    s_range: tuple[float, float] = (0.4, 2.0)  # proposal for the logit spread s


# the proposal the particle bank is drawn from, and the prior histogram's cells
_SIGMA0_MAX = 1.5
_MARGIN_MAX = 10.0
_MARGIN_BINS = 8
_SIGMA0_BINS = 3
_S_BINS = 3


@dataclass
class Bank:
    """Particles for one option count M and their source-side quantities."""

    m: int
    mu: np.ndarray  # (N, M)
    s: np.ndarray  # (N,)
    cell: np.ndarray  # (N,) histogram cell of each particle
    logp: np.ndarray  # (N, M) log E[softmax(mu + s e)]

def log_mean_softmax(mu: np.ndarray, s: np.ndarray, eps: np.ndarray,
                      chunk: int = 2048) -> np.ndarray:
    """``log E[softmax(mu + s e)]`` for rows of ``mu`` (N, M), ``s`` (N,), draws ``eps`` (R, M).

    Options go on the first axis so that the sums over options are adds of contiguous
    slabs (numpy reduces a short last axis slowly); logits are shifted by each row's
    largest centre and clipped, which keeps float32 exponentials finite.
    """
    n, m = mu.shape
    out = np.empty((n, m), dtype=np.float32)
    eps_t = eps.T.astype(np.float32)[:, None, :]  # (M, 1, R)
    shifted = (mu - mu.max(axis=1, keepdims=True)).T.astype(np.float32)  # (M, N)
    s32 = s.astype(np.float32)
    avg = np.full(eps.shape[0], 1.0 / eps.shape[0], dtype=np.float32)
    for a in range(0, n, chunk):
        z = shifted[:, a:a + chunk, None] + s32[None, a:a + chunk, None] * eps_t  # (M, n, R)
        np.clip(z, -80.0, 80.0, out=z)
        np.exp(z, out=z)
        denom = z[0].copy()
        for j in range(1, m):
            denom += z[j]
        np.reciprocal(denom, out=denom)
        z *= denom[None]
        mean = z @ avg  # (M, n): a matrix-vector product beats a reduction here
        out[a:a + chunk] = np.log(np.maximum(mean, 1e-30)).T
    return out


def normal_draws(seed: list[int], n_eps: int, m: int) -> np.ndarray:
    """``(R, M)`` standard normal points: scrambled Sobol (R rounded to a power of two).

    Quasi-random points cut the error of ``E[softmax]`` several-fold against as many
    random draws; that matters because tau and eta trade off along a shallow ridge where
    a systematic integration error would decide the maximum.
    """
    r = 1 << max(int(np.ceil(np.log2(max(n_eps, 2)))), 1)
    u = qmc.Sobol(m, scramble=True, seed=np.random.default_rng(seed)).random(r)
    return ndtri(np.clip(u, 1e-12, 1 - 1e-12))


def make_bank(m: int, opts: PiFitOptions, eps: np.ndarray) -> Bank:
    """Particles from the broad proposal, their histogram cells and source probabilities."""
    rng = np.random.default_rng([opts.seed, 1000 + m])
    n = opts.n_particles
    sigma0 = rng.uniform(0.0, _SIGMA0_MAX, n)
    margin = rng.uniform(0.0, _MARGIN_MAX, n)
    s = rng.uniform(*opts.s_range, n)
    mu = sigma0[:, None] * rng.standard_normal((n, m))
    mu[np.arange(n), rng.integers(0, m, n)] += margin
    mu -= mu.mean(axis=1, keepdims=True)  # softmax is shift invariant
    cm = np.minimum((margin / _MARGIN_MAX * _MARGIN_BINS).astype(int), _MARGIN_BINS - 1)
    cg = np.minimum((sigma0 / _SIGMA0_MAX * _SIGMA0_BINS).astype(int), _SIGMA0_BINS - 1)
    lo, hi = opts.s_range
    cs = np.minimum(((s - lo) / (hi - lo) * _S_BINS).astype(int),
                    _S_BINS - 1)
    cell = (cm * _SIGMA0_BINS + cg) * _S_BINS + cs
    return Bank(m=m, mu=mu, s=s, cell=cell, logp=log_mean_softmax(mu, s, eps))


CHUNK = 1024  # items per block when a (items x particles) matrix is formed
N_CELLS = _MARGIN_BINS * _SIGMA0_BINS * _S_BINS


def cell_likelihoods(counts: np.ndarray, bank: Bank) -> tuple[np.ndarray, np.ndarray]:
    """Per item, the mean likelihood of its counts over each cell's particles.

    Returns ``(lik, top)``: ``lik`` is ``(Q, C)`` scaled by ``exp(-top)`` per row, where
    ``top`` is the item's largest particle log likelihood, so that a prior with cell
    probabilities ``w`` gives the prior predictive ``log P(counts) = top + log(lik @ w)``.
    Items are processed in blocks so that memory stays ``O(block x N)``.
    """
    onehot = np.zeros((bank.cell.size, N_CELLS))
    onehot[np.arange(bank.cell.size), bank.cell] = 1.0
    onehot /= np.maximum(onehot.sum(axis=0, keepdims=True), 1.0)
    logp = bank.logp.T.astype(np.float64)
    lik = np.empty((counts.shape[0], N_CELLS))
    top = np.empty(counts.shape[0])
    for a in range(0, counts.shape[0], CHUNK):
        ll = counts[a:a + CHUNK] @ logp
        top[a:a + CHUNK] = ll.max(axis=1)
        lik[a:a + CHUNK] = np.exp(ll - top[a:a + CHUNK, None]) @ onehot
    return lik, top


def em_cells(lik: np.ndarray, occupied: np.ndarray, opts: PiFitOptions,
              weights: np.ndarray | None = None, init: np.ndarray | None = None,
              centre: np.ndarray | None = None, strength: float = 0.0) -> np.ndarray:
    """EM (MAP) for histogram cell probabilities maximising ``sum_i weight_i log(lik_i @ w)``.

    A small pseudo-count per occupied cell keeps every region possible; ``strength``
    pseudo-items spread as ``centre`` shrink the fit towards another prior (used to pull
    a bias prior fitted on few items towards the source prior).
    """
    w = init.copy() if init is not None else occupied / occupied.sum()
    if lik.shape[0] == 0:
        return w
    wt = np.ones(lik.shape[0]) if weights is None else weights
    prior = opts.prior_smoothing * occupied
    if centre is not None:
        prior = prior + strength * centre
    for _ in range(opts.prior_iters):
        joint = lik * w
        resp = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1e-300)
        mass = wt @ resp
        new = (mass + prior) / (mass.sum() + prior.sum())
        done = np.max(np.abs(new - w)) < 1e-7
        w = new
        if done:
            break
    return w

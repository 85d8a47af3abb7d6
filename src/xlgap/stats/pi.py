"""pi, the share of the cross-lingual gap that is *variance* rather than *bias*, two ways.

The model (see ``xlgap.stats.simulate``): per question the source answers around a centre
``mu_s`` with spread ``s`` (fresh logits ``z ~ N(mu_s, s^2 I)`` per response, answer
``~ softmax z``); per (question, target) ``kappa ~ Bernoulli(pi)`` is drawn once, and the
target answers around ``mu_s / tau`` with spread ``sqrt(eta) s`` (variance) or around an
unrelated ``mu_b`` with spread ``s_b`` (bias).

1. :func:`xlgap.stats.mismatch.pi_mismatch` -- the heuristic (its own module): 1 minus the
   mean over candidate items of ``|p_i - q_i|`` where the source mode ``i`` differs from
   the target mode (0 where they agree). Cheap, but a bias item whose unrelated centre
   leads on the same option counts as variance, and a variance item whose flatter target
   mode flips by sampling noise counts as bias.

2. :func:`fit_pi_model` (this module; particles and prior in :mod:`xlgap.stats.pi_particles`)
   -- maximum likelihood for ``(pi, tau, eta)`` with the per-question quantities
   integrated out. Because ``z`` is drawn afresh for every response, a
   language's K answers are multinomial with probabilities ``E[softmax z]``; everything a
   question tells us is its source counts ``c_s`` and target counts ``c_t`` over the
   candidates ("other" answers are left out: the model is about the distribution over
   answer concepts). The likelihood of a (question, target) pair is::

       P(c_s) * [ pi * P(c_t | c_s, variance; tau, eta) + (1 - pi) * P(c_t | bias) ]

   * ``P(c_t | c_s, variance)`` integrates over the posterior of ``(mu_s, s)`` given the
     source counts, with the target probabilities ``E[softmax(mu_s/tau + sqrt(eta) s e)]``;
   * ``P(c_t | bias)`` is the prior predictive: the bias centre is unrelated to the source,
     so it is a fresh draw from the population of centres. This is what lets the model
     credit a bias item that shares the source mode by chance to bias with the right odds.

   The integrals are Monte Carlo over one bank of particles ``(mu, s)`` per option count
   M, drawn from a broad proposal (``mu = sigma0 * N(0, I) + margin * e_lead``, lead
   uniform, ``sigma0 ~ U(0, 1.5)``, ``margin ~ U(0, 10)``, ``s ~ U(0.4, 2.0)``) and
   reweighted to a population prior. ``E[softmax]`` is a quasi-Monte Carlo average over
   fixed scrambled Sobol normal points (common random numbers, so the likelihood is
   smooth in tau and eta). The population prior is a histogram over (margin, sigma0, s)
   cells fitted to the source counts by EM (empirical Bayes), so it follows how confident
   the model under study really is. The source posterior of each question is represented
   by ``n_post`` particles resampled from it (systematic resampling: an unbiased picture
   of the posterior, where keeping only the heaviest particles would skew it).

   The bias prior (``bias_prior``):

   * ``"fitted"`` (default): starts as the source prior and is refitted by ECM, each
     round an EM step on the target counts weighted by every item's posterior
     probability of being bias, shrunk towards the source prior by
     ``bias_prior_strength`` pseudo-items. Under the model (``mu_b`` drawn like ``mu_s``)
     it stays at the source prior; when a target language is in general less (or more)
     sure of its wrong answers it follows the bias items, which keeps pi from drifting;
   * ``"source"``: the source prior as is (the model taken literally);
   * ``"target"``: an empirical-Bayes fit to all of the target's counts.

   ``(tau, eta)`` are searched on a log grid (15 x 16: tau 0.5-5, eta 0.125-8) and
   ``pi`` profiled out (by bisection for the estimate, on a 101-point grid refined by a
   parabola in the bootstrap); the per-item log likelihood table makes the bootstrap
   over items cheap, which gives percentile 95% CIs for all three (the priors are held
   fixed across replicates). tau and eta both flatten the target and trade off along a ridge, and
   where the ridge lies depends on the spread ``s``, which the source answers barely
   identify: their estimates lean on the assumed range of ``s`` and their intervals are
   wide. pi is what the data pin down. Several targets share ``(pi, tau, eta)`` in the
   overall fit (a composite likelihood: pairs of one item are treated as independent
   given the source; the bootstrap resamples whole items, which keeps the CI honest).

   Exact-mode runs have distributions instead of counts: they are fitted as expected
   counts ``k_eff * p`` (``k_eff`` = 50 by default), i.e. as if 50 answers had been drawn.
   A multinomial likelihood of fractional counts is a pseudo-likelihood; smaller
   ``k_eff`` treats the distributions as noisier and pulls pi up (measured on simulated
   distributions at pi = 0.5, M = 4: +0.06 with 20, +0.03 with 50, +0.015 with 100; at
   pi = 0.3, M = 10: +0.09, +0.05, +0.025). The diagnosis refits at 20 and 100 as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import logsumexp

from xlgap.errors import DataError
from xlgap.progress import progress_bar
from xlgap.stats.pi_particles import (
    CHUNK,
    N_CELLS,
    Bank,
    PiFitOptions,
    cell_likelihoods,
    em_cells,
    log_mean_softmax,
    make_bank,
    normal_draws,
)

__all__ = ["PiEstimate", "PiFitOptions", "PiModelResult", "counts_from_probs",
           "fit_pi_model"]

@dataclass
class PiEstimate:
    """One fit: point estimates, percentile CIs and what they rest on."""

    pi: float
    pi_ci: tuple[float, float]
    tau: float
    tau_ci: tuple[float, float]
    eta: float
    eta_ci: tuple[float, float]
    n_pairs: int
    loglik: float
    posterior: dict[str, np.ndarray]  # target -> (Q,) P(variance | data), NaN if unused
    at_grid_edge: list[str] = field(default_factory=list)

    @property
    def estimate_outside_ci(self) -> bool:
        return not self.pi_ci[0] <= self.pi <= self.pi_ci[1]

    def as_dict(self) -> dict[str, Any]:
        def ci(x: tuple[float, float]) -> list[float]:
            return [float(x[0]), float(x[1])]

        return {"estimate": float(self.pi), "ci": ci(self.pi_ci),
                "estimate_outside_ci": self.estimate_outside_ci,
                "tau": {"estimate": float(self.tau), "ci": ci(self.tau_ci)},
                "eta": {"estimate": float(self.eta), "ci": ci(self.eta_ci)},
                "n_pairs": int(self.n_pairs), "loglik": float(self.loglik),
                "at_grid_edge": list(self.at_grid_edge)}


@dataclass
class PiModelResult:
    """Per-target fits and the overall fit (shared pi, tau, eta across targets)."""

    targets: dict[str, PiEstimate | None]
    overall: PiEstimate | None
    method: str
    options: PiFitOptions

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = (self.overall.as_dict() if self.overall is not None
                               else {"estimate": None, "ci": None, "tau": None, "eta": None})
        out["method"] = self.method
        out["targets"] = {t: (e.as_dict() if e is not None else None)
                          for t, e in self.targets.items()}
        return out


METHOD = ("maximum likelihood of the bias/variance mixture, per-question centres "
          "integrated out by Monte Carlo under an empirical-Bayes prior (bias prior: {bias}); "
          "(tau, eta) on a log grid, pi profiled; percentile bootstrap over items")

@dataclass
class _BiasPart:
    """The bias side of one target for the items of one option count M.

    ``log P(c_t | bias) = top + log(lik @ w)`` with ``w`` the bias prior's cell
    probabilities, so refitting the bias prior never touches the particles again.
    """

    rows: np.ndarray  # item indices (into the full item list)
    lik: np.ndarray  # (n, C)
    top: np.ndarray  # (n,)
    occupied: np.ndarray  # (C,) cells that hold particles
    w: np.ndarray  # (C,) current bias prior
    w_source: np.ndarray  # (C,) the source prior (what a fitted bias prior shrinks to)

    def log_bias(self) -> np.ndarray:
        return self.top + np.log(np.maximum(self.lik @ self.w, 1e-300))


@dataclass
class _Tables:
    """Per target: ``log_var`` ``(Q, G)`` (NaN = unusable item) and the bias parts."""

    log_var: dict[str, np.ndarray]
    bias: dict[str, list[_BiasPart]]

    def deltas(self, targets: list[str] | None = None) -> dict[str, np.ndarray]:
        """``log P(c_t | c_s, variance; g) - log P(c_t | bias)`` per target."""
        out = {}
        for t in targets if targets is not None else list(self.log_var):
            d = self.log_var[t].copy()
            for part in self.bias[t]:
                d[part.rows] -= part.log_bias()[:, None]
            out[t] = d
        return out


def _resample(log_post: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: ``size`` particle indices per row, drawn in proportion to
    ``exp(log_post)`` (each row its own posterior).

    An equally weighted resample represents the posterior without bias; keeping the
    heaviest particles instead would keep only the likeliest centres (for a question
    answered 20/20 the most extreme ones) and skew every prediction made from them.
    """
    w = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    cdf = np.cumsum(w, axis=1)
    cdf /= cdf[:, -1:]
    u = (np.arange(size)[None, :] + rng.random((w.shape[0], 1))) / size  # (Q, L)
    idx = np.empty(u.shape, dtype=np.int64)
    for i in range(w.shape[0]):
        idx[i] = np.searchsorted(cdf[i], u[i])
    return np.minimum(idx, w.shape[1] - 1)


def _posterior_sample(counts: np.ndarray, bank: Bank, log_prior: np.ndarray, size: int,
                      rng: np.random.Generator) -> np.ndarray:
    """``(Q, size)`` particle indices resampled from each item's posterior."""
    logp = bank.logp.T.astype(np.float64)
    return np.concatenate([
        _resample(counts[a:a + CHUNK] @ logp + log_prior, size, rng)
        for a in range(0, counts.shape[0], CHUNK)])


def _grid(opts: PiFitOptions) -> tuple[np.ndarray, np.ndarray]:
    """The (tau, eta) grid, flattened: ``tau`` varies slowest."""
    tt, ee = np.meshgrid(np.asarray(opts.tau_grid), np.asarray(opts.eta_grid), indexing="ij")
    return tt.ravel(), ee.ravel()


def _build_tables(source_counts: np.ndarray, target_counts: Mapping[str, np.ndarray],
                  n_options: np.ndarray, opts: PiFitOptions, progress: bool) -> _Tables:
    """Variance log likelihoods on the (tau, eta) grid and the bias parts, per target.

    An item is unusable (NaN) when it has no candidate answer in the source or in that
    target, or fewer than 2 options. Items are grouped by option count M, each group with
    its own particle bank and source prior.
    """
    q = source_counts.shape[0]
    taus, etas = _grid(opts)
    g = taus.size
    log_var = {t: np.full((q, g), np.nan) for t in target_counts}
    bias: dict[str, list[_BiasPart]] = {t: [] for t in target_counts}
    groups = sorted({int(m) for m in n_options if m >= 2})
    bar = progress_bar(total=len(groups) * (g + 1), desc="pi model", unit="step",
                       enabled=progress, leave=False)
    for m in groups:
        rows = np.nonzero(n_options == m)[0]
        cs = source_counts[rows, :m]
        rows, cs = rows[cs.sum(axis=1) > 0], cs[cs.sum(axis=1) > 0]
        if rows.size == 0:
            bar.update(g + 1)
            continue
        eps = normal_draws([opts.seed, 2, m], opts.n_eps, m)
        bank = make_bank(m, opts, eps)
        per_cell = np.bincount(bank.cell, minlength=N_CELLS).astype(np.float64)
        occupied = per_cell > 0
        w_src = em_cells(cell_likelihoods(cs, bank)[0], occupied, opts)
        log_prior = np.log(w_src[bank.cell] / per_cell[bank.cell])
        idx = _posterior_sample(cs, bank, log_prior, opts.n_post,
                                np.random.default_rng([opts.seed, 4, m]))
        used, pos = np.unique(idx, return_inverse=True)
        pos = pos.reshape(idx.shape)
        tgt: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for t, counts in target_counts.items():
            ct = counts[rows, :m]
            ok = ct.sum(axis=1) > 0
            lik, top = cell_likelihoods(ct[ok], bank)
            w = em_cells(lik, occupied, opts) if opts.bias_prior == "target" else w_src
            bias[t].append(_BiasPart(rows=rows[ok], lik=lik, top=top, occupied=occupied,
                                     w=w.copy(), w_source=w_src))
            tgt[t] = (ok, ct[ok].astype(np.float32))
        bar.update(1)
        mu_u, s_u = bank.mu[used], bank.s[used]
        log_size = np.log(idx.shape[1])
        for gi in range(g):
            logp_var = log_mean_softmax(mu_u / taus[gi], np.sqrt(etas[gi]) * s_u, eps)
            for t, (ok, ct) in tgt.items():
                ll = np.einsum("qlm,qm->ql", logp_var[pos[ok]], ct)  # (Qt, L)
                log_var[t][rows[ok], gi] = logsumexp(ll, axis=1) - log_size
            bar.update(1)
    bar.close()
    return _Tables(log_var=log_var, bias=bias)


def _profile_mle(deltas: Mapping[str, np.ndarray]) -> tuple[float, int, float]:
    """``(pi, grid index, log likelihood)`` maximising the mixture over pi and the grid.

    For every grid point pi is found by bisection on the (decreasing) slope, all grid
    points at once.
    """
    d = np.concatenate([x[np.all(np.isfinite(x), axis=1)] for x in deltas.values()])
    r = np.expm1(np.clip(d, -50.0, 50.0))  # (n, G)
    lo = np.zeros(d.shape[1])
    hi = np.full(d.shape[1], 1.0 - 1e-9)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        up = (r / (1.0 + mid * r)).sum(axis=0) > 0
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    pis = 0.5 * (lo + hi)
    with np.errstate(divide="ignore"):
        ll = np.logaddexp(np.log(pis) + d, np.log1p(-pis)).sum(axis=0)
    gi = int(np.argmax(ll))
    return float(pis[gi]), gi, float(ll[gi])


def _fit_bias_priors(tables: _Tables, targets: list[str], opts: PiFitOptions) -> None:
    """ECM for ``bias_prior="fitted"``: alternate the profile MLE of (pi, tau, eta) with
    an EM update of each target's bias prior, each item's target counts weighted by its
    posterior probability of being a bias item. Updates ``tables`` in place.

    ``log P(c_t | c_s, variance)`` does not depend on the bias prior, so each round only
    recomputes the bias predictive from cached cell likelihoods.
    """
    last = -np.inf
    for _ in range(opts.ecm_iters):
        deltas = tables.deltas(targets)
        pi, gi, ll = _profile_mle(deltas)
        # the full log likelihood adds back log P(c_t | bias), which the refit changes
        ll += sum(float(part.log_bias().sum()) for t in targets for part in tables.bias[t])
        if ll - last < 1e-3:
            break
        last = ll
        with np.errstate(divide="ignore", over="ignore"):
            logit = np.log(pi) - np.log1p(-pi)
        for t in targets:
            post_var = 1.0 / (1.0 + np.exp(-(logit + deltas[t][:, gi])))
            for part in tables.bias[t]:
                part.w = em_cells(part.lik, part.occupied, opts,
                                   weights=1.0 - post_var[part.rows], init=part.w,
                                   centre=part.w_source, strength=opts.bias_prior_strength)


def _pi_table(delta: np.ndarray, pis: np.ndarray) -> np.ndarray:
    """``(Q, G, P)`` per-item mixture log likelihoods ``log(pi e^delta + 1 - pi)``.

    The constant ``log P(c_s) + log P(c_t | bias)`` is left out: it does not depend on
    ``(pi, tau, eta)``.
    """
    with np.errstate(divide="ignore"):
        lp, l1p = np.log(pis), np.log1p(-pis)
    return np.logaddexp(lp[None, None, :] + delta[:, :, None],
                        l1p[None, None, :]).astype(np.float32)


def _refine_pi(delta: np.ndarray) -> float:
    """Exact maximiser over pi in [0, 1] of ``sum_i log(pi e^d_i + 1 - pi)`` (concave).

    The slope in pi is ``sum_i r_i / (1 + pi r_i)`` with ``r_i = e^d_i - 1``, decreasing in
    pi, so bisection finds its root.
    """
    r = np.expm1(np.clip(delta, -50.0, 50.0))

    def slope(p: float) -> float:
        return float(np.sum(r / (1.0 + p * r)))

    # r >= -1, so 1 + p r > 0 for p < 1; at the ends use the limits that stay finite
    if slope(0.0) <= 0:
        return 0.0
    if slope(1.0 - 1e-12) >= 0:
        return 1.0
    lo, hi = 0.0, 1.0 - 1e-12
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if slope(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _mixture_loglik(pi: float, delta: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        return float(np.sum(np.logaddexp(np.log(pi) + delta, np.log1p(-pi))))


def _parabola_peak(left: np.ndarray, mid: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Offset (in grid steps, within [-0.5, 0.5]) of the vertex through three points."""
    curv = left - 2.0 * mid + right
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(curv < 0, 0.5 * (left - right) / np.where(curv < 0, curv, -1.0), 0.0)
    return np.clip(off, -0.5, 0.5)


def _estimate(deltas: Mapping[str, np.ndarray], opts: PiFitOptions,
              rng: np.random.Generator) -> PiEstimate | None:
    """Profile maximum likelihood and bootstrap CIs from ``delta`` tables ``(Q, G)``.

    With several targets the per-item log likelihoods are summed (one shared pi, tau,
    eta); the bootstrap resamples items with all their pairs. The per-item table over
    the (tau, eta, pi) grid is built in blocks of items, and each replicate's total is a
    weighted sum of it, so memory stays ``O(n_boot x grid)``. A replicate's pi is refined
    between grid points by a parabola through its three best values.
    """
    taus, etas = _grid(opts)
    pis = np.linspace(0.0, 1.0, opts.pi_points)
    n_p = pis.size
    oks = {t: np.all(np.isfinite(d), axis=1) for t, d in deltas.items()}
    used = np.zeros(next(iter(deltas.values())).shape[0], dtype=bool)
    for ok in oks.values():
        used |= ok
    rows = np.nonzero(used)[0]
    if rows.size == 0:
        return None
    nq = rows.size
    w = rng.multinomial(nq, np.full(nq, 1.0 / nq), size=opts.n_boot).astype(np.float32)
    total = np.zeros(taus.size * n_p)
    boot = np.zeros((opts.n_boot, taus.size * n_p), dtype=np.float32)
    for a in range(0, nq, 256):
        r = rows[a:a + 256]
        block = np.zeros((r.size, taus.size * n_p), dtype=np.float32)
        for t, d in deltas.items():
            ok = oks[t][r]
            if ok.any():
                block[ok] += _pi_table(d[r[ok]], pis).reshape(int(ok.sum()), -1)
        total += block.sum(axis=0, dtype=np.float64)
        boot += w[:, a:a + 256] @ block
    gi = int(np.argmax(total)) // n_p
    stacked = np.concatenate([d[oks[t], gi] for t, d in deltas.items()])
    pi_hat = _refine_pi(stacked)
    arg = np.argmax(boot, axis=1)
    boot_g, pidx = np.divmod(arg, n_p)
    cube = boot.reshape(opts.n_boot, taus.size, n_p)[np.arange(opts.n_boot), boot_g]
    lft = cube[np.arange(opts.n_boot), np.maximum(pidx - 1, 0)]
    rgt = cube[np.arange(opts.n_boot), np.minimum(pidx + 1, n_p - 1)]
    mid = cube[np.arange(opts.n_boot), pidx]
    inner = (pidx > 0) & (pidx < n_p - 1)
    off = np.where(inner, _parabola_peak(lft, mid, rgt), 0.0)
    boot_pi = np.clip(pis[pidx] + off * (pis[1] - pis[0]), 0.0, 1.0)
    qs = [100 * opts.alpha / 2, 100 * (1 - opts.alpha / 2)]
    plo, phi = np.percentile(boot_pi, qs)
    tlo, thi = np.percentile(taus[boot_g], qs)
    elo, ehi = np.percentile(etas[boot_g], qs)
    posterior = {}
    with np.errstate(divide="ignore", over="ignore"):
        logit = np.log(pi_hat) - np.log1p(-pi_hat)
        for t, d in deltas.items():
            post = np.full(d.shape[0], np.nan)
            post[oks[t]] = 1.0 / (1.0 + np.exp(-(logit + d[oks[t], gi])))
            posterior[t] = post
    edges = [name for name, val, grid in (("tau", taus[gi], opts.tau_grid),
                                          ("eta", etas[gi], opts.eta_grid))
             if val in (min(grid), max(grid))]
    # The interval is reported as the bootstrap gives it: the point estimate (refined by
    # bisection) can fall outside a percentile interval of grid-refined replicates, and
    # widening the interval to contain it would hide that (see ``estimate_outside_ci``).
    return PiEstimate(pi=pi_hat, pi_ci=(float(plo), float(phi)),
                      tau=float(taus[gi]), tau_ci=(float(tlo), float(thi)),
                      eta=float(etas[gi]), eta_ci=(float(elo), float(ehi)),
                      n_pairs=int(stacked.size), loglik=_mixture_loglik(pi_hat, stacked),
                      posterior=posterior, at_grid_edge=edges)


def _check_counts(name: str, arr: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        raise DataError(f"pi fit: counts for {name!r} have shape {arr.shape}, expected "
                        f"{shape if shape is not None else '(Q, M)'}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DataError(f"pi fit: counts for {name!r} must be finite and >= 0")
    return arr


def _usable(tables: _Tables, target: str) -> bool:
    return bool(np.any(np.all(np.isfinite(tables.log_var[target]), axis=1)))


def fit_pi_model(source_counts: np.ndarray, target_counts: Mapping[str, np.ndarray],
                 n_options: np.ndarray | int, *, options: PiFitOptions | None = None,
                 progress: bool = False) -> PiModelResult:
    """Fit ``(pi, tau, eta)`` per target and overall (see the module docstring).

    ``source_counts`` is ``(Q, >= M)`` answer counts per candidate (an extra "other" column
    beyond each item's ``n_options`` is ignored); ``target_counts`` maps each target to an
    array of the same shape. A row of zeros (no candidate answers, or the pair is missing)
    drops out; so do items with fewer than 2 options. Exact-mode callers pass
    :func:`counts_from_probs` of the distributions.
    """
    opts = options or PiFitOptions()
    if opts.bias_prior not in ("source", "target", "fitted"):
        raise DataError(f"pi fit: bias_prior must be 'source', 'target' or 'fitted', not "
                        f"{opts.bias_prior!r}")
    src = _check_counts("source", source_counts, None)
    q = src.shape[0]
    m_arr = (np.full(q, int(n_options), dtype=np.int64) if np.isscalar(n_options)
             else np.asarray(n_options, dtype=np.int64))
    if m_arr.shape != (q,):
        raise DataError(f"pi fit: n_options has shape {m_arr.shape}, expected ({q},)")
    if src.shape[1] < m_arr.max(initial=0):
        raise DataError(f"pi fit: counts have {src.shape[1]} columns but an item has "
                        f"{m_arr.max()} options")
    tgts = {t: _check_counts(t, c, src.shape) for t, c in target_counts.items()}
    tables = _build_tables(src, tgts, m_arr, opts, progress)
    rng = np.random.default_rng([opts.seed, 3])
    per_target: dict[str, PiEstimate | None] = {}
    for t in tgts:
        if opts.bias_prior == "fitted" and _usable(tables, t):
            _fit_bias_priors(tables, [t], opts)
        per_target[t] = _estimate(tables.deltas([t]), opts, rng)
    if len(tgts) == 1:
        overall = next(iter(per_target.values()))
    elif tgts:
        if opts.bias_prior == "fitted" and any(_usable(tables, t) for t in tgts):
            # shared (pi, tau, eta): refit the bias priors, starting from per-target fits
            _fit_bias_priors(tables, [t for t in tgts if _usable(tables, t)], opts)
        overall = _estimate(tables.deltas(), opts, rng)
    else:
        overall = None
    return PiModelResult(targets=per_target, overall=overall,
                         method=METHOD.format(bias=opts.bias_prior), options=opts)


def counts_from_probs(probs: np.ndarray, k_eff: float = 50.0) -> np.ndarray:
    """Exact-mode distributions as expected counts of ``k_eff`` answers."""
    return np.asarray(probs, dtype=np.float64) * k_eff

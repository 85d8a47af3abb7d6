"""Simulated runs drawn from the bias/variance model of the cross-lingual gap.

Per question (M options) the source has a centre ``mu_s`` and a spread ``s``; every
response draws fresh logits ``z ~ N(mu_s, s^2 I)`` and an answer ``~ Categorical(softmax z)``.
Per (question, target) a type ``kappa ~ Bernoulli(pi)`` is drawn once: a *variance* gap
(``kappa = 1``) keeps the centre, shrunk, and widens the spread,
``z ~ N(mu_s / tau, eta s^2 I)``; a *bias* gap (``kappa = 0``) answers around an unrelated
centre, ``z ~ N(mu_b, s_b^2 I)``.

How the per-question quantities are drawn (chosen to look like a real model's answers):

* a centre is ``mu = background * N(0, I_M) + margin * e_lead``: a uniformly chosen leading
  option ahead of Gaussian background logits (sd ``background`` = 0.6) by a margin
  ``~ Gamma(margin_shape = 2, margin_scale = 1.5)`` (mean 3: most questions confident,
  a sizeable minority torn between options);
* ``mu_b`` is drawn the same way, independently, so a bias centre is as confident as a
  source centre but leads on an unrelated option (the same one by chance with
  probability 1/M: the case that fools a mode-matching estimator);
* ``s`` and ``s_b`` are drawn independently from ``Uniform(0.5, 1.5)``, so a bias target is
  not given away by its spread;
* the gold answer is the source centre's leading option with probability ``p_gold`` = 0.8,
  otherwise another option uniformly: the source mode is then right about 70% of the time
  and a single sampled answer about 56% of the time;
* defaults ``tau = 1.5``, ``eta = 2``: a variance target keeps the source's favourite but
  with visibly lower confidence, as published analyses report for target languages;
* optionally a response is "other" (no candidate) with probability ``other_rate``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlgap.errors import ConfigError
from xlgap.io import dump_json
from xlgap.provenance import tagged
from xlgap.runs import EMBEDDINGS_FILE, OTHER, RunWriter

DEFAULT_TAU = 1.5
DEFAULT_ETA = 2.0
DEFAULT_MARGIN_SHAPE = 2.0
DEFAULT_MARGIN_SCALE = 1.5
DEFAULT_BACKGROUND = 0.6
DEFAULT_SPREAD = (0.5, 1.5)
DEFAULT_P_GOLD = 0.8


@dataclass
class SimData:
    """A simulated run as arrays: answers are option indices, -1 for "other"."""

    source: str
    targets: list[str]
    samples: dict[str, np.ndarray]  # lang -> (Q, K)
    kappa: dict[str, np.ndarray]  # target -> (Q,) 1 = variance, 0 = bias
    gold: np.ndarray  # (Q,)
    mu_s: np.ndarray  # (Q, M)
    s: np.ndarray  # (Q,)
    n_options: int
    params: dict[str, float]


def draw_centres(rng: np.random.Generator, questions: int, options: int, *,
                 margin_shape: float = DEFAULT_MARGIN_SHAPE,
                 margin_scale: float = DEFAULT_MARGIN_SCALE,
                 background: float = DEFAULT_BACKGROUND) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(Q, M)`` with a random leading option; returns ``(mu, lead)``."""
    mu = background * rng.standard_normal((questions, options))
    lead = rng.integers(0, options, size=questions)
    mu[np.arange(questions), lead] += rng.gamma(margin_shape, margin_scale, size=questions)
    return mu, lead


def sample_answers(rng: np.random.Generator, mu: np.ndarray, spread: np.ndarray, k: int,
                   other_rate: float = 0.0) -> np.ndarray:
    """K answers per row: fresh ``z ~ N(mu, spread^2 I)`` per answer, then softmax draw."""
    q, m = mu.shape
    z = mu[:, None, :] + spread[:, None, None] * rng.standard_normal((q, k, m))
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=-1)
    u = rng.random((q, k, 1)) * cdf[..., -1:]
    answers = np.minimum((u > cdf).sum(axis=-1), m - 1)
    if other_rate > 0:
        answers = np.where(rng.random((q, k)) < other_rate, OTHER, answers)
    return answers.astype(np.int64)


def _target_names(targets: Sequence[str] | int) -> list[str]:
    if isinstance(targets, int):
        if targets < 1:
            raise ConfigError(f"simulate: need at least one target, got {targets}")
        return [f"t{i + 1}" for i in range(targets)]
    names = [str(t) for t in targets]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"simulate: targets must be distinct and non-empty: {names}")
    return names


def simulate_arrays(*, pi: float = 0.9, tau: float = DEFAULT_TAU, eta: float = DEFAULT_ETA,
                    questions: int = 500, samples: int = 20, options: int = 4, seed: int = 0,
                    targets: Sequence[str] | int = ("t1",), source: str = "en",
                    margin_shape: float = DEFAULT_MARGIN_SHAPE,
                    margin_scale: float = DEFAULT_MARGIN_SCALE,
                    background: float = DEFAULT_BACKGROUND,
                    spread: tuple[float, float] = DEFAULT_SPREAD,
                    p_gold: float = DEFAULT_P_GOLD, other_rate: float = 0.0,
                    bias_margin_scale: float | None = None) -> SimData:
    """Draw a whole run in memory (see the module docstring for the model).

    ``bias_margin_scale`` (default: ``margin_scale``) lets bias centres be drawn less (or
    more) confident than source centres: a deliberate departure from the model, for
    checking how the estimators cope when a target language is unsure in general.
    """
    if not 0.0 <= pi <= 1.0:
        raise ConfigError(f"simulate: pi must be in [0, 1], got {pi}")
    if tau <= 0 or eta <= 0:
        raise ConfigError(f"simulate: tau and eta must be > 0, got tau={tau}, eta={eta}")
    if questions < 1 or samples < 1 or options < 2:
        raise ConfigError("simulate: need questions >= 1, samples >= 1, options >= 2")
    if not 0.0 <= other_rate < 1.0 or not 0.0 <= p_gold <= 1.0:
        raise ConfigError("simulate: other_rate must be in [0, 1) and p_gold in [0, 1]")
    names = _target_names(targets)
    if source in names:
        raise ConfigError(f"simulate: source {source!r} is also a target")
    rng = np.random.default_rng(seed)
    q, m = questions, options
    lo, hi = spread
    mu_s, lead = draw_centres(rng, q, m, margin_shape=margin_shape, margin_scale=margin_scale,
                              background=background)
    s = rng.uniform(lo, hi, size=q)
    # gold: the source's leading option, or (1 - p_gold) of the time another option
    shift = rng.integers(1, m, size=q)
    gold = np.where(rng.random(q) < p_gold, lead, (lead + shift) % m)
    out = {source: sample_answers(rng, mu_s, s, samples, other_rate)}
    kappa: dict[str, np.ndarray] = {}
    for t in names:
        kap = (rng.random(q) < pi).astype(np.int64)
        mu_b, _ = draw_centres(rng, q, m, margin_shape=margin_shape,
                               margin_scale=(margin_scale if bias_margin_scale is None
                                             else bias_margin_scale),
                               background=background)
        s_b = rng.uniform(lo, hi, size=q)
        var = kap == 1
        mu_t = np.where(var[:, None], mu_s / tau, mu_b)
        s_t = np.where(var, np.sqrt(eta) * s, s_b)
        out[t] = sample_answers(rng, mu_t, s_t, samples, other_rate)
        kappa[t] = kap
    params = {"pi": pi, "tau": tau, "eta": eta, "margin_shape": margin_shape,
              "margin_scale": margin_scale, "background": background, "spread_lo": lo,
              "spread_hi": hi, "p_gold": p_gold, "other_rate": other_rate,
              "bias_margin_scale": (margin_scale if bias_margin_scale is None
                                    else bias_margin_scale)}
    return SimData(source=source, targets=names, samples=out, kappa=kappa, gold=gold,
                   mu_s=mu_s, s=s, n_options=m, params=params)


def simulate_run(out_dir: str | os.PathLike[str], *, pi: float = 0.9,
                 tau: float = DEFAULT_TAU, eta: float = DEFAULT_ETA, questions: int = 500,
                 samples: int = 20, options: int = 4, seed: int = 0,
                 targets: Sequence[str] | int = ("t1",), source: str = "en",
                 embed_dim: int = 16, **model: float) -> Path:
    """Write a simulated sample-mode run to ``out_dir`` and return its path.

    Besides the run files it writes ``truth.json`` (the parameters and the true
    ``kappa`` per item and target, 1 = variance) and ``answer_embeddings.npz`` (a random
    near-unit vector of size ``embed_dim`` per option, so the L2 metric has input).
    ``model`` passes the population settings of :func:`simulate_arrays` through
    (``margin_shape``, ``margin_scale``, ``background``, ``spread``, ``p_gold``,
    ``other_rate``).
    """
    out = Path(out_dir)
    if (out / "run.json").exists():
        raise ConfigError(f"simulate: {out} already holds a run; choose another directory")
    sim = simulate_arrays(pi=pi, tau=tau, eta=eta, questions=questions, samples=samples,
                          options=options, seed=seed, targets=targets, source=source,
                          **model)  # type: ignore[arg-type]
    ids = [f"q{i:05d}" for i in range(questions)]
    meta = {"model": "simulated", "source": source, "languages": [source, *sim.targets],
            "targets": sim.targets, "mode": "sample", "samples": samples,
            "data": "simulated", "strategy": "baseline",
            "options": {"simulator": {**sim.params, "seed": seed, "questions": questions,
                                      "n_options": options}}}
    writer = RunWriter(out, meta)
    writer.add_items({"id": ids[i], "n_options": options, "gold": int(sim.gold[i]),
                      "candidates": {lang: [f"option {j}" for j in range(options)]
                                     for lang in meta["languages"]}}
                     for i in range(questions))
    for lang, ans in sim.samples.items():
        writer.add_samples({"item": ids[i], "lang": lang, "sample": k, "answer": int(ans[i, k])}
                           for i in range(questions) for k in range(samples))
    rng = np.random.default_rng([seed, 7])
    vectors = rng.standard_normal((questions, options, embed_dim)) / np.sqrt(embed_dim)
    np.savez(out / EMBEDDINGS_FILE, **{ids[i]: vectors[i] for i in range(questions)})
    truth = {"params": sim.params, "seed": seed,
             "kappa": {ids[i]: {t: int(sim.kappa[t][i]) for t in sim.targets}
                       for i in range(questions)},
             "pi_empirical": {t: float(sim.kappa[t].mean()) for t in sim.targets}}
    dump_json(tagged("truth", truth), out / "truth.json", indent=1)
    return out

"""pi estimators: parameter recovery on simulated runs, and the mismatch heuristic."""

from __future__ import annotations

import numpy as np
import pytest

from xlgap.errors import DataError
from xlgap.stats.pi import (
    PiFitOptions,
    counts_from_probs,
    fit_pi_model,
    mismatch_per_item,
    pi_mismatch,
)
from xlgap.stats.simulate import simulate_arrays


def _counts(answers: np.ndarray, m: int) -> np.ndarray:
    """(Q, K) answers -> (Q, M + 1) counts with "other" last."""
    return np.stack([(answers == j).sum(axis=1) for j in range(m)]
                    + [(answers == -1).sum(axis=1)], axis=1).astype(float)


def _ref_mismatch(p: list[float], q: list[float]) -> float:
    a = [j for j, v in enumerate(p) if v == max(p)]
    b = [j for j, v in enumerate(q) if v == max(q)]
    return sum(abs(p[i] - q[i]) for i in a for j in b if i != j) / (len(a) * len(b))


def test_mismatch_matches_reference() -> None:
    rng = np.random.default_rng(3)
    p = np.stack([np.bincount(rng.integers(0, 4, 6), minlength=4) / 6 for _ in range(80)])
    q = np.stack([np.bincount(rng.integers(0, 4, 6), minlength=4) / 6 for _ in range(80)])
    vals = mismatch_per_item(p, q)
    for i in range(80):
        assert vals[i] == pytest.approx(_ref_mismatch(p[i].tolist(), q[i].tolist()))
    assert pi_mismatch(p, q) == pytest.approx(1 - np.mean(vals))
    assert pi_mismatch(p, p) == 1.0


@pytest.mark.parametrize("pi", [0.5, 0.9])
def test_model_recovers_pi(pi: float) -> None:
    """Q=500 questions, K=20 samples, M=4 options, simulator defaults (tau 1.5, eta 2)."""
    sim = simulate_arrays(pi=pi, questions=500, samples=20, options=4, seed=2024)
    cs, ct = _counts(sim.samples["en"], 4), _counts(sim.samples["t1"], 4)
    fit = fit_pi_model(cs, {"t1": ct}, 4)
    est = fit.overall
    assert est is not None and fit.targets["t1"] is est
    mism = pi_mismatch(cs / 20, ct / 20)
    print(f"\npi={pi}: model {est.pi:.3f} [{est.pi_ci[0]:.3f}, {est.pi_ci[1]:.3f}] "
          f"(realised {sim.kappa['t1'].mean():.3f}); mismatch {mism:.3f}; "
          f"tau {est.tau:.2f} {est.tau_ci}, eta {est.eta:.2f} {est.eta_ci}")
    assert abs(est.pi - pi) <= 0.05
    assert est.pi_ci[0] <= pi <= est.pi_ci[1]
    assert est.pi_ci[1] - est.pi_ci[0] < 0.15
    assert est.tau_ci[0] <= est.tau <= est.tau_ci[1]
    assert est.eta_ci[0] <= est.eta <= est.eta_ci[1]
    # the per-item posterior separates the two kinds of item
    post = est.posterior["t1"]
    kappa = sim.kappa["t1"]
    assert post[kappa == 1].mean() > post[kappa == 0].mean() + 0.3
    assert np.mean(post) == pytest.approx(est.pi, abs=0.01)  # EM fixed point
    if pi == 0.5:
        # chance agreement of bias items inflates the heuristic; the model corrects it
        assert mism - pi > 0.15


def test_two_targets_per_target_and_pooled() -> None:
    a = simulate_arrays(pi=0.9, questions=300, samples=20, options=4, seed=7)
    # same seed, so the same source; the target is drawn with another pi
    b2 = simulate_arrays(pi=0.5, questions=300, samples=20, options=4, seed=7)
    cs = _counts(a.samples["en"], 4)
    assert np.array_equal(cs, _counts(b2.samples["en"], 4))
    fit = fit_pi_model(cs, {"hi": _counts(a.samples["t1"], 4),
                            "lo": _counts(b2.samples["t1"], 4)}, 4)
    hi, lo, pooled = fit.targets["hi"], fit.targets["lo"], fit.overall
    assert hi is not None and lo is not None and pooled is not None
    assert abs(hi.pi - 0.9) < 0.07 and abs(lo.pi - 0.5) < 0.08
    assert lo.pi < pooled.pi < hi.pi and pooled.n_pairs == 600
    assert fit.as_dict()["targets"]["hi"]["estimate"] == pytest.approx(hi.pi)


def test_exact_mode_and_mixed_option_counts() -> None:
    """Distributions (here: frequencies of 400 answers) fitted as expected counts; items
    with 3 and 5 options are fitted in one call."""
    s3 = simulate_arrays(pi=0.7, questions=200, samples=400, options=3, seed=11)
    s5 = simulate_arrays(pi=0.7, questions=200, samples=400, options=5, seed=12)
    ps, pt = np.zeros((400, 6)), np.zeros((400, 6))
    for rows, sim, m in ((slice(0, 200), s3, 3), (slice(200, 400), s5, 5)):
        c_s, c_t = _counts(sim.samples["en"], m) / 400, _counts(sim.samples["t1"], m) / 400
        ps[rows, :m], ps[rows, 5] = c_s[:, :m], c_s[:, m]
        pt[rows, :m], pt[rows, 5] = c_t[:, :m], c_t[:, m]
    n_opt = np.repeat([3, 5], 200)
    opts = PiFitOptions(n_particles=8000)
    fit = fit_pi_model(counts_from_probs(ps, opts.k_eff), {"t": counts_from_probs(pt)},
                       n_opt, options=opts).overall
    assert fit is not None and fit.n_pairs == 400
    assert abs(fit.pi - 0.7) < 0.08
    assert fit.pi_ci[0] - 0.02 <= 0.7 <= fit.pi_ci[1] + 0.02


def test_unusable_input() -> None:
    empty = np.zeros((5, 4))
    fit = fit_pi_model(empty, {"t": empty}, 3, options=PiFitOptions(n_particles=500))
    assert fit.overall is None and fit.as_dict()["estimate"] is None
    with pytest.raises(DataError, match="shape"):
        fit_pi_model(np.ones((5, 4)), {"t": np.ones((4, 4))}, 3)
    with pytest.raises(DataError, match=">= 0"):
        fit_pi_model(np.ones((5, 4)), {"t": -np.ones((5, 4))}, 3)
    with pytest.raises(DataError, match="bias_prior"):
        fit_pi_model(np.ones((5, 4)), {"t": np.ones((5, 4))}, 3,
                     options=PiFitOptions(bias_prior="nope"))

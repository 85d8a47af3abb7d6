"""pi inside its checked range (issue 24, point 5): a flagged verdict when a fitted
parameter stops at the edge of its grid, a grid that holds the committed fits, and recovery at a
low pi with ten candidates (the range of the committed headline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xlgap.runs import load_run
from xlgap.stats.diagnose import diagnose, verdict
from xlgap.stats.pi import PiFitOptions, fit_pi_model
from xlgap.stats.simulate import simulate_arrays, simulate_run


def _counts(answers: np.ndarray, m: int) -> np.ndarray:
    return np.stack([(answers == j).sum(axis=1) for j in range(m)]
                    + [(answers == -1).sum(axis=1)], axis=1).astype(float)


def test_verdict_flagged_when_eta_sits_at_its_grid_edge(tmp_path: Path) -> None:
    """Failing first (the verdict ignored ``at_grid_edge``): a run simulated with eta = 4,
    fitted on a grid that stops at eta = 1. The fit pins eta at the edge, and the verdict
    leads with that flag (before: a plain "gap is mostly variance (pi = ...)")."""
    run = load_run(simulate_run(tmp_path / "run", pi=0.8, eta=4.0, questions=200,
                                samples=10, seed=3))
    narrow = PiFitOptions(n_particles=4000, tau_grid=(1.0, 1.5, 2.25),
                          eta_grid=(0.5, 0.7, 1.0))
    diag = diagnose(run, n_boot=100, pi_options=narrow)
    model = diag["pi"]["model"]
    assert "eta" in model["at_grid_edge"] and model["eta"]["estimate"] == 1.0
    text = verdict(diag)
    assert text.startswith("flagged") and "edge of its grid" in text, text
    assert "eta = 1" in text and text.index("eta = 1") < text.index("gap is")


def test_verdict_given_inside_the_grid(tmp_path: Path) -> None:
    """Known answer on the default grid: a variance-heavy run (pi 0.9, simulator defaults)
    puts no parameter at an edge, and the verdict reads pi."""
    run = load_run(simulate_run(tmp_path / "run", pi=0.9, questions=300, samples=20,
                                seed=4))
    diag = diagnose(run, n_boot=100, pi_options=PiFitOptions(n_particles=6000))
    assert diag["pi"]["model"]["at_grid_edge"] == []
    assert verdict(diag).startswith("gap is mostly variance"), verdict(diag)


def test_default_grid_reaches_below_the_committed_edge() -> None:
    """The committed bmlama-exact fit stopped at eta = 0.5 and the demo's at a tau edge:
    the default grid now extends past both (eta down to 1/8, tau from 0.5 to 5)."""
    opts = PiFitOptions()
    assert min(opts.eta_grid) <= 0.125 + 1e-9 and max(opts.eta_grid) >= 8.0
    assert min(opts.tau_grid) <= 0.5 and max(opts.tau_grid) >= 4.0


@pytest.mark.parametrize("pi", [0.2])
def test_model_recovers_a_low_pi_with_ten_candidates(pi: float) -> None:
    """The headline's range: pi below 0.3 and M = 10 (coverage over replicates is in
    bench/pi_coverage.py and docs/diagnosis.md); one run, its CI covers the truth."""
    sim = simulate_arrays(pi=pi, questions=400, samples=10, options=10, seed=21)
    est = fit_pi_model(_counts(sim.samples["en"], 10), {"t1": _counts(sim.samples["t1"], 10)},
                       10, options=PiFitOptions(n_particles=8000, n_boot=200)).overall
    assert est is not None
    truth = float(sim.kappa["t1"].mean())
    assert abs(est.pi - truth) <= 0.08
    assert est.pi_ci[0] - 0.02 <= truth <= est.pi_ci[1] + 0.02


def _exact_run(tmp_path: Path, pi: float) -> Path:
    """An exact-mode run: each distribution is the shares of 400 simulated answers
    (close to the expected softmax an exact run scores)."""
    from xlgap.runs import RunWriter

    sim = simulate_arrays(pi=pi, questions=150, samples=400, options=4, seed=13)
    w = RunWriter(tmp_path / "exact", {"model": "toy", "source": "en", "targets": ["t1"],
                                       "mode": "exact"})
    w.add_items({"id": f"i{i}", "n_options": 4, "gold": int(sim.gold[i])} for i in range(150))
    w.add_distributions({"item": f"i{i}", "lang": lang,
                         "probs": (np.bincount(sim.samples[lang][i], minlength=4) / 400
                                   ).tolist()}
                        for lang in ("en", "t1") for i in range(150))
    return w.dir


def test_exact_mode_reports_pi_by_k_eff(tmp_path: Path) -> None:
    """Exact mode fits distributions as k_eff pseudo-answers: the diagnosis refits at 20
    and 100 beside the default 50, and the verdict shows them. Fewer pseudo-answers
    treat the distributions as noisier and pull pi up, so pi falls as k_eff grows."""
    run = load_run(_exact_run(tmp_path, 0.5))
    quick = PiFitOptions(n_particles=3000, tau_grid=(1.0, 1.5, 2.25), eta_grid=(1.0, 2.0, 4.0))
    diag = diagnose(run, n_boot=100, pi_options=quick)
    sens = diag["pi"]["model"]["k_eff_sensitivity"]
    assert [r["k_eff"] for r in sens] == [20.0, 50.0, 100.0]
    assert sens[1]["estimate"] == diag["pi"]["model"]["estimate"]
    est = [r["estimate"] for r in sens]
    assert est[0] > est[1] > est[2]
    assert "by k_eff: 20: " in verdict(diag)


def test_verdict_flagged_when_k_eff_changes_it() -> None:
    """A pi whose class (bias / mixed) differs between k_eff values gets a flagged
    verdict; one whose class holds is read as usual."""
    def diag(ci_100: list[float]) -> dict:
        sens = [{"k_eff": 20.0, "estimate": 0.46, "ci": [0.42, 0.50]},
                {"k_eff": 50.0, "estimate": 0.34, "ci": [0.30, 0.37]},
                {"k_eff": 100.0, "estimate": 0.26, "ci": ci_100}]
        model = {"estimate": 0.34, "ci": [0.30, 0.37], "at_grid_edge": [],
                 "k_eff_sensitivity": sens}
        return {"overall": {"agreement": {"estimate": 0.5}}, "pi": {"model": model},
                "checks": {}}

    assert verdict(diag([0.23, 0.299])).startswith("flagged, the verdict depends on k_eff")
    assert verdict(diag([0.23, 0.31])).startswith("gap is mixed (pi = 0.34 [0.30, 0.37] (by")

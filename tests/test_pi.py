"""pi estimators: parameter recovery on simulated runs, and the mismatch heuristic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xlgap.errors import DataError
from xlgap.runs import RunWriter, load_run
from xlgap.stats.diagnose import diagnose, verdict
from xlgap.stats.mismatch import mismatch_per_item, pi_mismatch
from xlgap.stats.pi import (
    PiFitOptions,
    counts_from_probs,
    fit_pi_model,
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


# -- pi_mismatch only where it means something (review finding 4) ------------------------


def _run(path: Path, answers: dict[str, np.ndarray], texts: dict[str, list[list[str]]],
         *, is_open: bool = False, m: int = 4) -> Path:
    """A sample-mode run from (Q, K) answer indices (-1: the text names no candidate)."""
    langs = list(answers)
    q, k = answers[langs[0]].shape
    with RunWriter(path, {"source": langs[0], "targets": langs[1:], "samples": k}) as w:
        w.add_items([{"id": f"i{i}", "n_options": 1 if is_open else m, "gold": 0,
                      **({"open": True} if is_open else {})} for i in range(q)])
        w.add_samples([{"item": f"i{i}", "lang": lang, "sample": s,
                        "answer": int(answers[lang][i, s]), "text": texts[lang][i][s]}
                       for lang in langs for i in range(q) for s in range(k)])
    return path


def test_pi_mismatch_reads_candidate_columns_only(tmp_path: Path) -> None:
    """Failed before: the shared "other" answer was both modes, so every item "agreed"
    (pi_mismatch 1.0) although the candidate answers point in opposite directions."""
    q = 20
    # source: 3 x candidate 0, 1 x candidate 1; target the reverse; both 6 x "dunno"
    src = np.array([0, 0, 0, 1] + [-1] * 6)
    tgt = np.array([1, 1, 1, 0] + [-1] * 6)
    answers = {"en": np.tile(src, (q, 1)), "de": np.tile(tgt, (q, 1))}
    texts = {lang: [[f"c{a}" if a >= 0 else "dunno" for a in row] for row in arr]
             for lang, arr in answers.items()}
    run = load_run(_run(tmp_path / "r", answers, texts))
    vals = mismatch_per_item(run.probs["en"], run.probs["de"], n_candidates=run.m_max)
    np.testing.assert_allclose(vals, 0.5)  # |0.75 - 0.25| on the renormalised candidates
    diag = diagnose(run, n_boot=100, fit_model=False)
    assert diag["checks"]["mostly_other"] and diag["pairs"]["de"]["pi_mismatch"] is None
    # here 60% of answers are "other": the check withholds it; with 40% it is read
    answers = {lang: np.concatenate([a[:, :4], a[:, :4], a[:, 4:6]], axis=1)
               for lang, a in answers.items()}
    texts = {lang: [[f"c{a}" if a >= 0 else "dunno" for a in row] for row in arr]
             for lang, arr in answers.items()}
    diag = diagnose(load_run(_run(tmp_path / "r2", answers, texts)), n_boot=100,
                    fit_model=False)
    assert not diag["checks"]["mostly_other"]
    assert diag["pairs"]["de"]["pi_mismatch"] == pytest.approx(0.5)
    assert diag["overall"]["pi_mismatch"] == pytest.approx(0.5)


def test_pi_mismatch_is_null_when_most_answers_name_no_candidate(tmp_path: Path) -> None:
    """Failed before: 0.8-ish on runs whose answers are almost all "other"."""
    rng = np.random.default_rng(0)
    q, k = 30, 5
    answers = {lang: np.where(rng.random((q, k)) < 0.9, -1, 0) for lang in ("en", "hi")}
    texts = {lang: [[f"t{rng.integers(50)}" if a < 0 else "c0" for a in row] for row in arr]
             for lang, arr in answers.items()}
    diag = diagnose(load_run(_run(tmp_path / "r", answers, texts)), n_boot=100,
                    fit_model=False)
    assert diag["checks"]["mostly_other"]
    assert diag["pairs"]["hi"]["pi_mismatch"] is None
    assert diag["overall"]["pi_mismatch"] is None and diag["pi"]["mismatch"] is None


def test_pi_mismatch_is_null_on_open_items(tmp_path: Path) -> None:
    """Failed before: 0.75 on the open-question run whose agreement is 0.02-0.15."""
    rng = np.random.default_rng(1)
    q, k = 30, 5
    answers = {lang: np.where(rng.random((q, k)) < 0.3, 0, -1) for lang in ("en", "ja")}
    texts = {lang: [[f"w{rng.integers(20)}" if a < 0 else "gold" for a in row]
                    for row in arr] for lang, arr in answers.items()}
    diag = diagnose(load_run(_run(tmp_path / "r", answers, texts, is_open=True)),
                    n_boot=100, fit_model=False)
    assert diag["pairs"]["ja"]["pi_mismatch"] is None
    assert diag["pairs"]["ja"]["pi_mismatch_ci"] is None
    assert diag["pi"]["mismatch"] is None


def test_verdict_never_falls_back_to_pi_mismatch(tmp_path: Path) -> None:
    """Failed before: without the model fit the verdict printed "pi (mismatch
    heuristic) = ..." as its finding."""
    rng = np.random.default_rng(2)
    q, k = 40, 6
    answers = {"en": np.where(rng.random((q, k)) < 0.8, 0, 1),
               "de": rng.integers(0, 4, (q, k))}
    texts = {lang: [[f"c{a}" for a in row] for row in arr] for lang, arr in answers.items()}
    diag = diagnose(load_run(_run(tmp_path / "r", answers, texts)), n_boot=100,
                    fit_model=False)
    assert diag["pi"]["mismatch"] is not None  # computed and reported ...
    text = verdict(diag)
    assert "mismatch" not in text and text.startswith("no verdict"), text  # ... never a verdict

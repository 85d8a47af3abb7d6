"""Metrics against naive loop references, bootstrap behaviour, ensembling curves, diagnosis."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest

from xlgap.stats.bootstrap import (
    bootstrap_ci,
    mean_with_ci,
    paired_bootstrap_pvalue,
    ratio_ci,
)
from xlgap.stats.diagnose import diagnose_dir, format_summary
from xlgap.stats.ensembling import ensembling_curve, per_item_curves, samples_from_probs
from xlgap.stats.metrics import (
    accuracy_per_item,
    agreement_per_item,
    chi2_per_item,
    confidence_bins,
    confidence_per_item,
    l2_per_item,
    mode_correct_per_item,
    overall_success_per_item,
    transfer_parts,
)
from xlgap.stats.pi import PiFitOptions
from xlgap.stats.simulate import simulate_arrays, simulate_run

# ---------------------------------------------------------------------------------------
# naive references: one item at a time, plain Python


def _modes(row: list[float]) -> list[int]:
    top = max(row)
    return [j for j, v in enumerate(row) if v == top]


def _ref_agreement(p: list[float], q: list[float]) -> float:
    a, b = set(_modes(p)), set(_modes(q))
    return len(a & b) / len(a | b)


def _ref_correct(p: list[float], gold: int) -> float:
    a = _modes(p)
    return sum(1.0 for x in a if x == gold) / len(a)


def _ref_chi2(p: list[float], q: list[float]) -> float:
    return sum((x - y) ** 2 / (x + y) for x, y in zip(p, q, strict=True) if x + y > 0)


def _ref_l2(p: list[float], q: list[float], emb: np.ndarray) -> float:
    def centre(r: list[float]) -> np.ndarray:
        mass = sum(r[:-1])
        return sum(r[j] / mass * emb[j] for j in range(len(r) - 1))

    return float(np.linalg.norm(centre(p) - centre(q)))


def _random_dists(rng: np.random.Generator, q: int, o: int, k: int) -> np.ndarray:
    """Empirical distributions of k answers over o options: small k makes ties common."""
    counts = np.stack([np.bincount(rng.integers(0, o, k), minlength=o) for _ in range(q)])
    return counts / k


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    q, m = 60, 4
    p = _random_dists(rng, q, m + 1, 5)
    qd = _random_dists(rng, q, m + 1, 5)
    qd[:5] = p[:5]  # some identical pairs
    gold = rng.integers(-1, m, q)  # -1 = unknown
    emb = rng.standard_normal((q, m, 3))
    return {"p": p, "q": qd, "gold": gold, "emb": emb}


def test_mode_metrics_match_reference(data: dict[str, np.ndarray]) -> None:
    p, q, gold = data["p"], data["q"], data["gold"]
    agree = agreement_per_item(p, q)
    correct = mode_correct_per_item(p, gold)
    success = overall_success_per_item(p, q, gold)
    num, den = transfer_parts(p, q, gold)
    acc = accuracy_per_item(q, gold)
    for i in range(p.shape[0]):
        pi, qi = p[i].tolist(), q[i].tolist()
        assert agree[i] == pytest.approx(_ref_agreement(pi, qi))
        if gold[i] < 0:
            assert np.isnan(correct[i]) and np.isnan(success[i]) and np.isnan(acc[i])
            continue
        assert correct[i] == pytest.approx(_ref_correct(pi, gold[i]))
        # ties in both languages are broken by one shared draw (a random order of the
        # options, each language taking the first of its modes): both are gold when gold
        # is a mode of both and comes first among the union of the modes
        a, b = set(_modes(pi)), set(_modes(qi))
        both = (gold[i] in a and gold[i] in b) / len(a | b)
        assert success[i] == pytest.approx(both)
        assert num[i] == pytest.approx(both) and den[i] == pytest.approx(_ref_correct(pi, gold[i]))
        assert acc[i] == pytest.approx(qi[gold[i]])
    assert 0 < np.nanmean(agree) < 1  # the data does exercise ties and disagreements


def test_distances_match_reference(data: dict[str, np.ndarray]) -> None:
    p, q, emb = data["p"], data["q"], data["emb"]
    chi2 = chi2_per_item(p, q)
    l2 = l2_per_item(p, q, emb)
    for i in range(p.shape[0]):
        assert chi2[i] == pytest.approx(_ref_chi2(p[i].tolist(), q[i].tolist()))
        if p[i, :-1].sum() > 0 and q[i, :-1].sum() > 0:
            assert l2[i] == pytest.approx(_ref_l2(p[i].tolist(), q[i].tolist(), emb[i]))
        else:
            assert np.isnan(l2[i])
    assert np.allclose(chi2[:5], 0) and np.allclose(chi2_per_item(p, p), 0)
    assert np.allclose(l2[:5][np.isfinite(l2[:5])], 0)
    disjoint = chi2_per_item(np.array([[1.0, 0, 0]]), np.array([[0, 0.5, 0.5]]))
    assert disjoint[0] == pytest.approx(2.0)


def test_missing_rows_are_nan() -> None:
    p = np.array([[0.5, 0.5, 0.0], [np.nan, np.nan, np.nan]])
    q = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    for vals in (agreement_per_item(p, q), chi2_per_item(p, q), confidence_per_item(p)):
        assert np.isfinite(vals[0]) and np.isnan(vals[1])


def test_confidence_bins_match_reference(data: dict[str, np.ndarray]) -> None:
    conf = confidence_per_item(data["p"])
    agree = agreement_per_item(data["p"], data["q"])
    out = confidence_bins(conf, agree, 4, n_bins=5)
    assert sum(out["count"]) == len(conf)
    for (lo, hi), a, n in zip(out["bins"], out["agreement"], out["count"], strict=True):
        first = lo == out["bins"][0][0]
        sel = [j for j, c in enumerate(conf)
               if (c < hi or (hi == 1.0 and c <= hi)) and (c >= lo or first)]
        assert n == len(sel)
        if n:
            assert a == pytest.approx(sum(agree[j] for j in sel) / n)


# ---------------------------------------------------------------------------------------
# bootstrap


def test_bootstrap_ci_contains_estimate_and_shrinks() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 200, 800):
        x = rng.normal(1.0, 2.0, n)
        lo, hi = bootstrap_ci(x, n_boot=1000, seed=1)
        assert lo < x.mean() < hi
        # the percentile interval is close to the normal-theory one
        assert hi - lo == pytest.approx(2 * 1.96 * x.std() / np.sqrt(n), rel=0.2)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # a statistic function gives the same answer as the vectorised mean
    x = rng.normal(size=100)
    assert bootstrap_ci(x, np.mean, n_boot=500, seed=3) == pytest.approx(
        bootstrap_ci(x, n_boot=500, seed=3), abs=0.05)


def test_bootstrap_handles_nan_and_pairs_per_item() -> None:
    x = np.array([[1.0, np.nan], [0.0, 1.0], [np.nan, np.nan], [1.0, 1.0]])
    out = mean_with_ci(x, n_boot=200, seed=0)
    assert out["estimate"] == pytest.approx(4 / 5) and out["n"] == 5
    assert 0 <= out["ci"][0] <= 0.8 <= out["ci"][1] <= 1
    lo, hi = ratio_ci(np.array([1.0, 0.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0, 2.0]),
                      n_boot=500, seed=0)
    assert lo <= 3 / 5 <= hi


def test_paired_bootstrap_pvalue() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, 300)
    shifted = a + 0.3 + rng.normal(0.0, 0.5, 300)
    noise = a + rng.normal(0.0, 0.5, 300)
    assert paired_bootstrap_pvalue(shifted, a, n_boot=2000, seed=0) < 0.01
    assert paired_bootstrap_pvalue(noise, a, n_boot=2000, seed=0) > 0.1
    assert paired_bootstrap_pvalue(a, a, n_boot=500, seed=0) == 1.0


# ---------------------------------------------------------------------------------------
# ensembling


def _exact_expected_chi2(src: list[int], tgt: list[int], k: int, o: int) -> float:
    """Mean chi-square over every pair of k-subsets (brute force)."""
    vals = []
    for s in itertools.combinations(src, k):
        for t in itertools.combinations(tgt, k):
            p = [s.count(j) / k for j in range(o)]
            q = [t.count(j) / k for j in range(o)]
            vals.append(_ref_chi2(p, q))
    return float(np.mean(vals))


def test_ensembling_curve_matches_brute_force() -> None:
    src = np.array([[0, 0, 1, -1, 2], [1, 1, 1, 0, 1]])
    tgt = np.array([[2, 2, 0, 1, 1], [1, 0, 0, 0, -1]])
    curves = per_item_curves(src, tgt, np.array([3, 2]), repeats=3000, seed=0)["chi2"]
    assert curves is not None, "chi-square curves missing"
    for i in range(2):
        s = [a if a >= 0 else 3 for a in src[i]]
        t = [a if a >= 0 else 3 for a in tgt[i]]
        for k in range(1, 6):
            assert curves[i, k - 1] == pytest.approx(_exact_expected_chi2(s, t, k, 4),
                                                     abs=0.02)


def test_ensembling_variance_falls_bias_stays_and_is_fast() -> None:
    emb = np.random.default_rng(0).standard_normal((500, 4, 16)) / 4
    out = {}
    for pi in (1.0, 0.0):
        sim = simulate_arrays(pi=pi, questions=500, samples=20, options=4, seed=2)
        t0 = time.perf_counter()
        out[pi] = ensembling_curve(sim.samples["en"], sim.samples["t1"], np.full(500, 4),
                                   embeddings=emb, repeats=20, seed=0)
        assert time.perf_counter() - t0 < 2.0
    var, bias = np.array(out[1.0]["chi2"]), np.array(out[0.0]["chi2"])
    assert np.all(np.diff(var) < 0)  # pooling always helps a variance gap
    assert var[-1] < 0.35 * var[0] and out[1.0]["drop"] > 0.65
    # a bias gap keeps most of its distance: the centres differ
    assert bias[-1] > 0.55 * bias[0] and out[0.0]["drop"] < out[1.0]["drop"] - 0.3
    assert bias[-1] > 3 * var[-1]
    assert out[1.0]["l2"][-1] < 0.5 * out[1.0]["l2"][0]
    assert out[0.0]["l2"][-1] > 0.6 * out[0.0]["l2"][0]


def test_samples_from_probs_frequencies() -> None:
    probs = np.array([[0.6, 0.3, 0.0, 0.1], [np.nan] * 4])
    draws = samples_from_probs(probs, 20000, seed=0)
    freq = [np.mean(draws[0] == j) for j in (0, 1, 2, 3)]  # column 3: an other concept
    assert freq == pytest.approx([0.6, 0.3, 0.0, 0.1], abs=0.015)
    assert (draws[1] == -2).all()


# ---------------------------------------------------------------------------------------
# diagnosis end to end (small run, reduced pi fit to keep the test quick)


def test_diagnose_dir_writes_json_and_summary(tmp_path: Path) -> None:
    d = simulate_run(tmp_path / "sim", pi=0.9, questions=150, samples=10, options=4,
                     seed=4, targets=["de", "ja"])
    quick = PiFitOptions(n_particles=4000, tau_grid=(1.0, 1.5, 2.25),
                         eta_grid=(1.0, 2.0, 4.0))
    diag = diagnose_dir(d, n_boot=200, seed=0, pi_options=quick)
    saved = json.loads((d / "diagnosis.json").read_text())
    assert saved["format"] == "diagnosis" and saved["n_items"] == 150
    assert saved["targets"] == ["de", "ja"] and saved["mode"] == "sample"
    for lang in ("en", "de", "ja"):
        acc = saved["accuracy"][lang]
        assert acc["ci"][0] <= acc["estimate"] <= acc["ci"][1]
    for scope in (*(saved["pairs"][t] for t in ("de", "ja")), saved["overall"]):
        for key in ("agreement", "overall_success", "transfer", "chi2", "l2", "js"):
            assert scope[key]["ci"][0] <= scope[key]["estimate"] <= scope[key]["ci"][1]
        ens = scope["ensembling"]
        assert ens["k"] == list(range(1, 11)) and len(ens["chi2"]) == 10
        assert len(ens["l2"]) == 10 and ens["drop"] > 0.4
    # pooled agreement lies between the two pairs' values
    pair_vals = [saved["pairs"][t]["agreement"]["estimate"] for t in ("de", "ja")]
    assert min(pair_vals) <= saved["overall"]["agreement"]["estimate"] <= max(pair_vals)
    model = saved["pi"]["model"]
    assert model["ci"][0] <= model["estimate"] <= model["ci"][1]
    assert set(model["targets"]) == {"de", "ja"} and model["method"]
    assert saved["pi"]["mismatch"] == pytest.approx(saved["overall"]["pi_mismatch"])
    cva = saved["confidence_vs_agreement"]
    assert len(cva["bins"]) == len(cva["agreement"]) == len(cva["count"]) == 5
    assert sum(cva["count"]) == 300
    assert saved["verdict"]  # plots are drawn by the CLI (xlgap.cli.commands.sample)
    text = format_summary(diag)
    assert "verdict:" in text and "en-de" in text and "overall" in text


def test_diagnose_exact_mode_with_missing_pairs(tmp_path: Path) -> None:
    from xlgap.runs import RunWriter, load_run
    from xlgap.stats.diagnose import diagnose

    sim = simulate_arrays(pi=0.8, questions=80, samples=200, options=3, seed=9,
                          other_rate=0.05)
    w = RunWriter(tmp_path / "exact", {"model": "toy", "source": "en", "targets": ["t1"],
                                       "mode": "exact"})
    w.add_items({"id": f"i{i}", "n_options": 3, "gold": int(sim.gold[i])} for i in range(80))
    rows = []
    for lang in ("en", "t1"):
        for i in range(80 if lang == "en" else 70):  # the last 10 items lack the target
            freq = np.bincount(sim.samples[lang][i][sim.samples[lang][i] >= 0], minlength=3)
            rows.append({"item": f"i{i}", "lang": lang, "probs": (freq / freq.sum()).tolist()})
    w.add_distributions(rows)
    run = load_run(w.dir)
    quick = PiFitOptions(n_particles=3000, tau_grid=(1.0, 1.5, 2.25), eta_grid=(1.0, 2.0))
    diag = diagnose(run, n_boot=100, pi_options=quick)
    pair = diag["pairs"]["t1"]
    assert diag["mode"] == "exact" and pair["n_items"] == 70
    assert pair["agreement"]["n"] == 70 and diag["accuracy"]["en"]["n"] == 80
    assert pair["ensembling"]["k"] == list(range(1, 21)) and pair["l2"] is None
    assert pair["pi_model"]["n_pairs"] == 70
    assert "exact distributions" in diag["pi"]["model"]["method"]
    assert any("t1" in msg for msg in diag["warnings"])
    json.dumps(diag, allow_nan=False)  # valid JSON throughout

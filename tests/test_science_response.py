"""Per-response metrics, a fixed denominator, paired tests on shared entries and Holm's
adjustment of a best-of-k headline (issue 24, points 1, 2, 7 and 8)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from xlgap.interventions.evaluate import compare_runs
from xlgap.report.sections.interventions import intervention_summary
from xlgap.runs import load_run
from xlgap.stats.bootstrap import paired_ratio_test
from xlgap.stats.diagnose import diagnose
from xlgap.stats.multiple import adjust_holm_map
from xlgap.stats.pairs import (
    PAIR_METRICS,
    Part,
    pair_parts,
    paired_test,
    reference_transfer_parts,
    source_differs,
    summarise,
)
from xlgap.stats.simulate import simulate_run

RESPONSE = ("response_transfer", "response_agreement", "response_success")
TEST_KEYS = {"estimate", "ci", "p", "p_floor", "n", "a", "b"}


def _dists(rng: np.random.Generator, q: int, o: int) -> np.ndarray:
    return rng.dirichlet(np.full(o, 0.7), size=q)


# -- point 7: a paired test compares the arms on the entries both have ---------------------


def test_paired_test_masks_both_arms_to_shared_entries() -> None:
    """Failing first: the arms agree on every entry both have; A lacks half of B's
    entries, and the ones it lacks are B's zeros. Pooling each arm over its own entries
    gave a difference of 0.25 with p 0.01; on the shared entries there is none."""
    b = np.r_[np.ones(40), np.zeros(40)]
    a = b.copy()
    a[40:60] = np.nan  # A lacks half of B's zeros: pooled alone A = 40/60, B = 40/80
    res = paired_test({"m": Part.mean(a)}, {"m": Part.mean(b)}, n_boot=1000)["m"]
    assert res is not None
    assert res["estimate"] == 0.0 and res["a"] == res["b"]
    assert res["p"] == 1.0
    assert res["n"] == 60  # items with an entry in both arms
    # the pooled ratio test (transfer's parts) obeys the same rule
    ones = np.ones_like(b)
    ratio = paired_ratio_test(a, np.where(np.isfinite(a), ones, np.nan), b, ones,
                              n_boot=500)
    assert ratio["estimate"] == 0.0 and ratio["p"] == 1.0


def test_a_paired_test_has_one_shape() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random((30, 2)), rng.random((30, 2))
    res = paired_test({"m": Part.mean(a)}, {"m": Part.mean(b)}, n_boot=200)["m"]
    assert res is not None and set(res) == TEST_KEYS
    assert res["estimate"] == pytest.approx(res["a"] - res["b"])


# -- point 1: per-response metrics ----------------------------------------------------------


def _naive(p: np.ndarray, q: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """The per-response metrics by brute force over answer pairs (one source answer j
    with probability p_j, one target answer l with probability q_l, independently)."""
    both = agree = src = 0.0
    for i in range(p.shape[0]):
        for j, lo in itertools.product(range(p.shape[1]), repeat=2):
            w = p[i, j] * q[i, lo]
            agree += w * (j == lo)
            both += w * (j == gold[i] and lo == gold[i])
            src += w * (j == gold[i])
    n = p.shape[0]
    return {"response_transfer": both / src, "response_agreement": agree / n,
            "response_success": both / n}


def test_response_metrics_are_registered_and_match_the_answer_pairs() -> None:
    """Failing first: the registry held only the modes' transfer and agreement."""
    rng = np.random.default_rng(0)
    p, q = _dists(rng, 30, 4), _dists(rng, 30, 4)
    gold = rng.integers(0, 4, 30)
    for name in RESPONSE:
        assert name in PAIR_METRICS
    est = summarise(pair_parts(p, q, gold, metrics=RESPONSE), n_boot=50)
    for name, want in _naive(p, q, gold).items():
        got = est[name]
        assert got is not None and got["estimate"] == pytest.approx(want, rel=1e-12)
    # the modes' figures are labelled as the ensemble's
    for name in ("transfer", "agreement", "overall_success"):
        assert "ensembled" in PAIR_METRICS[name].label


def test_response_metrics_from_samples_are_the_share_of_answer_pairs(tmp_path: Path) -> None:
    """Sample mode: over the R x R (source answer, target answer) pairs of an item."""
    run = load_run(simulate_run(tmp_path / "s", pi=0.5, questions=25, samples=5, options=3,
                                seed=2, targets=["de"]))
    s, t, gold = run.samples["en"], run.samples["de"], run.gold
    pairs = [(a, b, g) for i, g in enumerate(gold) for a in s[i] for b in t[i]]
    both = sum(a == g and b == g for a, b, g in pairs)
    diag = diagnose(run, n_boot=20, fit_model=False)
    got = diag["pairs"]["de"]
    assert got["response_success"]["estimate"] == pytest.approx(both / len(pairs))
    assert got["response_transfer"]["estimate"] == pytest.approx(
        both / sum(a == g for a, _, g in pairs))
    assert got["response_agreement"]["estimate"] == pytest.approx(
        sum(a == b for a, b, _ in pairs) / len(pairs))
    for name in RESPONSE:
        assert diag["overall"][name]["estimate"] is not None


@pytest.mark.parametrize("case", ["same", "all_right", "unparseable"])
def test_response_metrics_on_known_answers(case: str) -> None:
    rng = np.random.default_rng(1)
    q_n, o = 20, 4
    gold = rng.integers(0, o, q_n)
    if case == "same":
        p = _dists(rng, q_n, o)
        q = p.copy()
    elif case == "all_right":
        p = np.eye(o)[gold]
        q = p.copy()
    else:  # every answer names no candidate: its own "no answer" column per language
        p = np.zeros((q_n, o + 2))
        q = np.zeros((q_n, o + 2))
        p[:, o], q[:, o + 1] = 1.0, 1.0
    est = {k: v["estimate"] for k, v in summarise(pair_parts(p, q, gold, metrics=RESPONSE),
                                                  n_boot=20).items() if v}
    if case == "same":
        # one answer against an independent one: agreement is sum p^2, not 1
        assert est["response_agreement"] == pytest.approx(np.mean((p ** 2).sum(axis=1)))
        assert est["response_success"] == pytest.approx(np.mean(p[np.arange(q_n), gold] ** 2))
    elif case == "all_right":
        assert est == {"response_transfer": 1.0, "response_agreement": 1.0,
                       "response_success": 1.0}
    else:
        assert est["response_agreement"] == 0.0 and est["response_success"] == 0.0
        assert est["response_transfer"] is None  # no right source answer: undefined (null)


@pytest.mark.parametrize(("pi", "below"), [(1.0, True), (0.0, False)])
def test_a_variance_gap_shows_per_response_below_ensembled(tmp_path: Path, pi: float,
                                                           below: bool) -> None:
    """The paper's point: a variance-type gap keeps the source's mode, so the ensemble
    transfers it and one response does not; a bias-type gap is lost to both alike."""
    run = load_run(simulate_run(tmp_path / "v", pi=pi, questions=400, samples=20,
                                options=4, seed=5, targets=["de"]))
    o = diagnose(run, n_boot=200, fit_model=False)["overall"]
    ens, one = o["transfer"]["estimate"], o["response_transfer"]["estimate"]
    rec = o["ensembling_recovers"]
    assert rec["estimate"] == pytest.approx(ens - one)
    if below:
        assert one < ens - 0.1 and rec["ci"][0] > 0 and rec["p"] < 0.01
    else:
        assert one > ens - 0.05 and rec["ci"][0] < 0.02


# -- point 2: a fixed denominator ------------------------------------------------------------


def test_reference_transfer_holds_the_denominator_fixed() -> None:
    """Failing first (no such definition): a strategy that loses half of the source's
    right answers and keeps the target's raises ordinary transfer; on the reference's
    source-correct items the target is as right as before."""
    q_n = 40
    gold = np.zeros(q_n, dtype=np.int64)
    right, wrong = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    src = np.tile(right, (q_n, 1))
    tgt = np.tile(right, (q_n, 1))
    tgt[: q_n // 2] = wrong  # the target is right on half of the items
    arm_src = src.copy()
    arm_src[: q_n // 2] = wrong  # the strategy loses exactly the items the target misses
    base = summarise(pair_parts(src, tgt, gold, metrics=["transfer"]), n_boot=20)
    arm = summarise(pair_parts(arm_src, tgt, gold, metrics=["transfer"]), n_boot=20)
    assert base["transfer"]["estimate"] == 0.5 and arm["transfer"]["estimate"] == 1.0
    better_tgt = tgt.copy()
    better_tgt[:10] = right  # a strategy that does fix a quarter of the target's answers
    for ensembled in (False, True):
        def fixed(target: np.ndarray, ensembled: bool = ensembled) -> float:
            # the reference's (baseline's) source, the compared arm's target
            part = reference_transfer_parts(src, target, gold, ensembled=ensembled)
            return summarise({"t": part}, n_boot=20)["t"]["estimate"]

        assert fixed(tgt) == 0.5  # the arm that only lost source answers: no gain
        assert fixed(better_tgt) == 0.75
    assert source_differs(src, arm_src) and not source_differs(src, src.copy())


def test_reference_transfer_of_the_reference_is_its_response_transfer() -> None:
    rng = np.random.default_rng(4)
    p, q = _dists(rng, 30, 4), _dists(rng, 30, 4)
    gold = rng.integers(0, 4, 30)
    own = summarise(pair_parts(p, q, gold, metrics=["response_transfer"]), n_boot=20)
    fixed = summarise({"t": reference_transfer_parts(p, q, gold)}, n_boot=20)
    assert fixed["t"]["estimate"] == pytest.approx(own["response_transfer"]["estimate"])


def test_interventions_compare_on_the_baseline_source_items(tmp_path: Path) -> None:
    run = load_run(simulate_run(tmp_path / "b", pi=0.5, questions=60, samples=6, options=4,
                                seed=1, targets=["de", "ja"]))
    worse = load_run(simulate_run(tmp_path / "w", pi=0.5, questions=60, samples=6,
                                  options=4, seed=9, targets=["de", "ja"]))
    table = compare_runs({"baseline": run, "copy": run, "other": worse}, n_boot=50)
    s = table["strategies"]
    assert s["copy"]["source_differs"] is False and s["other"]["source_differs"] is True
    fixed = s["copy"]["on_baseline_source_correct"]
    assert fixed["response_transfer"]["estimate"] == pytest.approx(
        s["baseline"]["response_transfer"]["estimate"])
    assert set(fixed["vs_baseline"]["response_transfer"]) == TEST_KEYS
    for name in ("copy", "other"):
        tests = s[name]["vs_baseline"]
        for metric in RESPONSE:
            assert set(tests[metric]) == TEST_KEYS
        assert "p_vs_baseline" not in s[name]


# -- point 8: a best of k strategies is read with Holm's adjustment --------------------------


def _result(ps: dict[str, float], holm: bool = True) -> dict[str, object]:
    def est(x: float) -> dict[str, object]:
        return {"estimate": x, "ci": [x - 0.05, x + 0.05]}

    adjusted = adjust_holm_map(ps)
    strategies: dict[str, object] = {"baseline": {"response_transfer": est(0.40),
                                                  "transfer": est(0.45), "vs_baseline": None}}
    for i, (name, p) in enumerate(ps.items()):
        strategies[name] = {"response_transfer": est(0.45 + 0.01 * i), "transfer": est(0.5),
                            "vs_baseline": {"response_transfer": {
                                "estimate": 0.05 + 0.01 * i, "ci": [0.0, 0.1], "p": p,
                                "p_floor": 0.002, "n": 100, "a": 0.45, "b": 0.40}}}
        if holm:
            strategies[name]["p_holm"] = {"response_transfer": adjusted[name]}
    return {"baseline": "baseline", "n_boot": 1000, "strategies": strategies}


def test_the_best_of_k_strategies_is_not_significant_unadjusted() -> None:
    """Failing first: the headline picked the best of three strategies and called an
    unadjusted p of 0.03 significant; Holm over the three gives 0.09."""
    text = intervention_summary(_result({"a": 0.5, "b": 0.4, "c": 0.03}))
    assert text is not None
    assert "per-response transfer" in text and "Holm" in text
    assert "not significant" in text and "0.090" in text
    one = intervention_summary(_result({"c": 0.03}))
    assert one is not None and ", significant" in one
    older = intervention_summary(_result({"a": 0.5, "b": 0.4, "c": 0.03}, holm=False))
    assert older is not None and "significant" not in older and "unadjusted" in older


def test_compare_runs_stores_holm_over_the_strategies(tmp_path: Path) -> None:
    runs = {name: load_run(simulate_run(tmp_path / name, pi=0.5, questions=40, samples=4,
                                        options=4, seed=seed, targets=["de"]))
            for name, seed in (("baseline", 1), ("x", 2), ("y", 3))}
    s = compare_runs(runs, n_boot=100)["strategies"]
    for metric in ("response_transfer", "transfer", "chi2"):
        raw = {n: s[n]["vs_baseline"][metric]["p"] for n in ("x", "y")}
        want = adjust_holm_map(raw)
        assert {n: s[n]["p_holm"][metric] for n in ("x", "y")} == want
    assert s["baseline"]["p_holm"] is None


def test_the_headline_on_known_answers(tmp_path: Path) -> None:
    """A strategy identical to the baseline beats nothing; one that answers every target
    question right (source unchanged) helped, and says how much ensembling adds."""
    run = load_run(simulate_run(tmp_path / "b", pi=0.5, questions=60, samples=6, options=4,
                                seed=1, targets=["de"]))
    same = intervention_summary(compare_runs({"baseline": run, "copy": run}, n_boot=100))
    assert same is not None and same.startswith("no strategy beat baseline")
    assert "+0.0 points" in same and "not significant" in same
    right = dict(run.probs)
    right["de"] = np.eye(run.probs["de"].shape[1])[run.gold]
    oracle = type(run)(**{**run.__dict__, "probs": right})
    text = intervention_summary(compare_runs({"baseline": run, "oracle": oracle}, n_boot=100))
    assert text is not None and text.startswith("oracle helped most")
    assert "per-response transfer on baseline's source-correct items 100.0%" in text
    assert ", significant" in text
    assert "source answers differ" not in text


# -- point 2 in the headline: a strategy cannot win by shrinking its own denominator ----


def _exact_run(path: Path, probs: dict[str, np.ndarray], gold: np.ndarray) -> Path:
    from xlgap.runs import RunWriter

    langs = list(probs)
    q, m = probs[langs[0]].shape
    with RunWriter(path, {"source": langs[0], "languages": langs, "mode": "exact"}) as w:
        w.add_items({"id": f"q{i}", "n_options": m, "gold": int(gold[i])} for i in range(q))
        w.add_distributions({"item": f"q{i}", "lang": lang, "probs": probs[lang][i].tolist()}
                            for lang in langs for i in range(q))
    return path


def test_a_strategy_that_loses_source_items_is_not_headlined_as_helping(tmp_path: Path
                                                                          ) -> None:
    """Failing first (the demo's tren-1): an arm that gets its source wrong exactly where
    the target is wrong, targets unchanged, raises per-response transfer from 0.5 to 1.0
    through its denominator alone; the headline called it the strategy that helped most.
    On the baseline's source-correct items it transfers what baseline does, and its
    overall success is no higher."""
    q = 40
    gold = np.zeros(q, dtype=int)
    right, wrong = np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0, 0.0])
    target = np.array([right if i % 2 == 0 else wrong for i in range(q)])
    source = np.tile(right, (q, 1))
    shrunk = target.copy()  # source right only where the target is right
    base = load_run(_exact_run(tmp_path / "baseline", {"en": source, "fr": target}, gold))
    arm = load_run(_exact_run(tmp_path / "tren", {"en": shrunk, "fr": target}, gold))
    result = compare_runs({"baseline": base, "tren": arm}, n_boot=100)
    s = result["strategies"]["tren"]
    assert s["response_transfer"]["estimate"] == pytest.approx(1.0)
    assert result["strategies"]["baseline"]["response_transfer"]["estimate"] == \
        pytest.approx(0.5)
    assert s["on_baseline_source_correct"]["response_transfer"]["estimate"] == \
        pytest.approx(0.5)
    text = intervention_summary(result)
    assert text is not None and text.startswith("no strategy beat baseline")
    assert "on baseline's source-correct items 50.0% against 50.0%" in text
    assert "overall success 50.0% against 50.0%" in text
    assert "its source answers differ" in text and "100.0%" in text

"""The pair-metric pipeline (stats/pairs.py) and the one bootstrap (stats/bootstrap.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from xlgap.errors import ConfigError
from xlgap.stats.bootstrap import (
    DEFAULT_N_BOOT,
    bootstrap_ci,
    item_counts,
    mean_with_ci,
    paired_bootstrap_pvalue,
    paired_ratio_pvalue,
    percentile_ci,
    ratio_ci,
    ratio_with_ci,
    resample_weights,
    weighted_mean,
)
from xlgap.stats.metrics import agreement_per_item, js_per_item, transfer_parts
from xlgap.stats.pairs import (
    PAIR_METRICS,
    PairMetric,
    Part,
    pair_parts,
    paired_test,
    register_pair_metric,
    select_target,
    stack_parts,
    summarise,
)


def _dists(rng: np.random.Generator, q: int, o: int) -> np.ndarray:
    x = rng.dirichlet(np.full(o, 0.5), size=q)
    x[rng.random((q, o)) < 0.2] = 0.0  # zero columns as runs have (padding, unused others)
    x[:, 0] += 1e-3
    return x / x.sum(axis=1, keepdims=True)


@pytest.fixture()
def pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    p, q = _dists(rng, 60, 6), _dists(rng, 60, 6)
    q[5] = np.nan  # a missing (item, target) pair
    gold = rng.integers(0, 4, 60)
    gold[7] = -1  # unknown gold
    return p, q, gold


# -- the js seam ---------------------------------------------------------------------------


def test_js_matches_scipy_and_is_zero_for_equal_distributions(pair) -> None:  # type: ignore[no-untyped-def]
    p, q, _ = pair
    got = js_per_item(p, q)
    for i in range(len(p)):
        if not np.isfinite(q[i]).all():
            assert np.isnan(got[i])
            continue
        assert got[i] == pytest.approx(jensenshannon(p[i], q[i], base=2) ** 2, abs=1e-12)
    np.testing.assert_allclose(js_per_item(p, p), 0.0, atol=1e-15)
    disjoint = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    other = np.array([[0.0, 0.3, 0.7], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(js_per_item(disjoint, other), [1.0, 1.0])
    assert np.nanmin(got) >= 0.0 and np.nanmax(got) <= 1.0


def test_js_is_a_registered_lower_is_better_mean(pair) -> None:  # type: ignore[no-untyped-def]
    p, q, gold = pair
    js = PAIR_METRICS["js"]
    assert (js.aggregation, js.direction) == ("mean", "lower")
    parts = pair_parts(p, q, gold)
    assert list(parts) == list(PAIR_METRICS)
    out = summarise(parts, n_boot=200)
    vals = js_per_item(p, q)
    assert out["js"]["estimate"] == pytest.approx(np.nanmean(vals))
    assert out["js"]["n"] == int(np.isfinite(vals).sum())


# -- parts, summaries, registry -------------------------------------------------------------


def test_summarise_gives_the_old_mean_and_ratio_figures(pair) -> None:  # type: ignore[no-untyped-def]
    """The registry path equals mean_with_ci / ratio_with_ci on the same arrays (so the
    diagnosis keeps its numbers)."""
    p, q, gold = pair
    out = summarise(pair_parts(p, q, gold), n_boot=300, seed=4)
    assert out["agreement"] == mean_with_ci(agreement_per_item(p, q), n_boot=300, seed=4)
    num, den = transfer_parts(p, q, gold)
    assert out["transfer"] == ratio_with_ci(num, den, n_boot=300, seed=4)
    assert out["l2"] is None  # no embeddings given


def test_stack_and_select_targets(pair) -> None:  # type: ignore[no-untyped-def]
    p, q, gold = pair
    one, two = pair_parts(p, q, gold), pair_parts(p, p, gold)
    stacked = stack_parts([one, two])
    assert stacked["chi2"] is not None and stacked["chi2"].num.shape == (60, 2)
    back = select_target(stacked, 1)["transfer"]
    assert back is not None and two["transfer"] is not None
    np.testing.assert_array_equal(back.num, two["transfer"].num)
    # pooled over targets: transfer of a target equal to its source is 1
    assert summarise(select_target(stacked, 1), n_boot=10)["transfer"]["estimate"] == 1.0


def test_register_pair_metric_refuses_duplicates_and_bad_fields() -> None:
    with pytest.raises(ConfigError):
        register_pair_metric(PairMetric("js", lambda p, q, g, e: p[:, 0], "mean", "x",
                                        "lower"))
    with pytest.raises(ConfigError):
        register_pair_metric(PairMetric("x_new", lambda p, q, g, e: p[:, 0], "median",  # type: ignore[arg-type]
                                        "x", "lower"))


def test_part_values_and_mean() -> None:
    part = Part.mean(np.array([1.0, np.nan, 3.0]))
    np.testing.assert_array_equal(part.den, [1.0, np.nan, 1.0])
    np.testing.assert_array_equal(part.values, [1.0, np.nan, 3.0])


# -- bootstrap rules ------------------------------------------------------------------------


def test_ratio_ci_drops_items_without_data() -> None:
    """Review finding 15 (failed before): ratio_ci kept items with no finite pair in its
    resampling pool, so its CI differed from bootstrap_ci's on the same data."""
    rng = np.random.default_rng(0)
    num = rng.random((40, 3))
    den = np.ones((40, 3))
    num[::4] = np.nan  # ten items with no (item, target) pair at all
    kept = np.isfinite(num).any(axis=1)
    with_gaps = ratio_ci(num, den, n_boot=500, seed=1)
    assert with_gaps == ratio_ci(num[kept], den[kept], n_boot=500, seed=1)
    assert with_gaps == bootstrap_ci(num, n_boot=500, seed=1)


def test_paired_test_drops_items_without_data_in_either_arm() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((30, 2)), rng.random((30, 2)) + 0.1
    a[:6], b[:6] = np.nan, np.nan
    full = paired_test({"m": Part.mean(a)}, {"m": Part.mean(b)}, n_boot=400)["m"]
    cut = paired_test({"m": Part.mean(a[6:])}, {"m": Part.mean(b[6:])}, n_boot=400)["m"]
    assert full == cut and full is not None and full["n"] == 24
    ones = np.ones_like(a)
    assert paired_ratio_pvalue(a, ones, b, ones, n_boot=400) == paired_ratio_pvalue(
        a[6:], ones[6:], b[6:], ones[6:], n_boot=400)


def test_paired_test_tests_the_pooled_estimates_on_shared_entries() -> None:
    """Review finding 14 made the test recompute the pooled means it reports; issue 24
    (point 7) pools both on the entries finite in both arms, so the missing entries of
    one arm are not read as a difference. Here each arm alone pools to 1.0 and 0.5, but
    on the entries both have they agree: a = b = 1, no difference."""
    a = np.r_[np.ones(20), np.full(20, np.nan)]
    b = np.r_[np.ones(20), np.zeros(20)]
    assert mean_with_ci(a)["estimate"] == 1.0 and mean_with_ci(b)["estimate"] == 0.5
    assert paired_bootstrap_pvalue(a, b, n_boot=1000) == 1.0
    res = paired_test({"m": Part.mean(a)}, {"m": Part.mean(b)}, n_boot=1000)["m"]
    assert res is not None
    assert (res["a"], res["b"], res["estimate"], res["n"]) == (1.0, 1.0, 0.0, 20)
    # where the shared entries differ, the test sees it
    b2 = np.r_[np.zeros(20), np.zeros(20)]
    res2 = paired_test({"m": Part.mean(a)}, {"m": Part.mean(b2)}, n_boot=1000)["m"]
    assert res2 is not None and res2["estimate"] == 1.0 and res2["ci"][0] > 0


def test_p_at_the_floor_is_flagged() -> None:
    """Review finding 12: the smallest p a bootstrap can give is stored as p_floor, so
    that it is printed as "< 0.002" and not as a measured 0.002."""
    rng = np.random.default_rng(2)
    a = rng.random((50, 2))
    res = paired_test({"m": Part.mean(a + 1)}, {"m": Part.mean(a)}, n_boot=999)["m"]
    assert res is not None
    assert res["p_floor"] == pytest.approx(2 / 1000)
    assert res["p"] == pytest.approx(res["p_floor"])
    same = paired_test({"m": Part.mean(a)}, {"m": Part.mean(a)}, n_boot=999)["m"]
    assert same is not None and same["p"] == 1.0 and same["estimate"] == 0.0


def test_paired_ratio_matches_a_loop() -> None:
    """The pooled-ratio test recomputes sum(num)/sum(den) per arm on each joint resample."""
    rng = np.random.default_rng(5)
    na, nb = rng.random((25, 2)), rng.random((25, 2))
    den = np.ones((25, 2))
    res = paired_test({"t": Part.ratio(na, den)}, {"t": Part.ratio(nb, den)}, n_boot=300,
                      seed=7)["t"]
    w = resample_weights(25, 300, np.random.default_rng(7))
    diff = (w @ na.sum(1)) / (w @ den.sum(1)) - (w @ nb.sum(1)) / (w @ den.sum(1))
    below = (1 + np.sum(diff <= 1e-12 * max(1, np.abs(diff).max()))) / 301
    above = (1 + np.sum(diff >= -1e-12 * max(1, np.abs(diff).max()))) / 301
    assert res is not None and res["p"] == pytest.approx(min(1.0, 2 * min(below, above)))


def test_one_rng_convention() -> None:
    """item_counts (representations) and the CIs of stats draw the same replicates."""
    np.testing.assert_array_equal(item_counts(17, 50, seed=3),
                                  resample_weights(17, 50, np.random.default_rng(3)))
    assert DEFAULT_N_BOOT == 1000
    # a representation figure's CI (weighted_mean over item_counts) is the stats CI
    v = np.random.default_rng(4).random(30)
    assert percentile_ci(weighted_mean(v, item_counts(30, 200, seed=3))) == pytest.approx(
        bootstrap_ci(v, n_boot=200, seed=3))


# -- the seam: a registered metric reaches every result without further edits ----------------


@pytest.fixture()
def sim_run(tmp_path):  # type: ignore[no-untyped-def]
    from xlgap.runs import load_run
    from xlgap.stats.simulate import simulate_run

    return load_run(simulate_run(tmp_path / "sim", pi=0.5, questions=40, samples=6,
                                 options=4, seed=1, targets=["de", "ja"]))


def test_js_in_diagnosis_and_interventions(sim_run) -> None:  # type: ignore[no-untyped-def]
    from xlgap.interventions.evaluate import compare_runs
    from xlgap.stats.diagnose import diagnose

    diag = diagnose(sim_run, n_boot=50, fit_model=False)
    for scope in (diag["pairs"]["de"], diag["pairs"]["ja"], diag["overall"]):
        assert 0 < scope["js"]["estimate"] < 1 and scope["js"]["n"] > 0
    table = compare_runs({"baseline": sim_run, "copy": sim_run}, n_boot=50)["strategies"]
    assert table["copy"]["js"]["estimate"] == pytest.approx(diag["overall"]["js"]["estimate"])
    assert table["copy"]["per_target"]["de"]["js"]["estimate"] == pytest.approx(
        diag["pairs"]["de"]["js"]["estimate"])
    same = table["copy"]["vs_baseline"]["js"]
    assert same["estimate"] == 0.0 and same["p"] == 1.0


def test_a_new_metric_needs_only_its_registry_entry(sim_run) -> None:  # type: ignore[no-untyped-def]
    from xlgap.interventions.evaluate import compare_runs
    from xlgap.stats.diagnose import diagnose

    metric = register_pair_metric(PairMetric(
        "src_top", lambda p, q, g, e: np.nanmax(p, axis=1), "mean", "source top", "higher"))
    try:
        diag = diagnose(sim_run, n_boot=20, fit_model=False)
        table = compare_runs({"baseline": sim_run, "b": sim_run}, n_boot=20)["strategies"]
    finally:
        del PAIR_METRICS[metric.name]
    assert diag["pairs"]["de"]["src_top"]["estimate"] > 0.25
    assert table["b"]["src_top"]["estimate"] == pytest.approx(
        diag["overall"]["src_top"]["estimate"])
    assert table["b"]["vs_baseline"]["src_top"]["p"] == 1.0

"""Cross-lingual similarity (cosine, CKA, retrieval), consistency measures, their bootstrap
intervals and chance levels, the commands on data without English, and plots."""

from __future__ import annotations

import itertools
import json
import math
import re
import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from xlgap.errors import ConfigError, DataError
from xlgap.report.plots.representations import (
    plot_ilo_by_layer,
    plot_pair_heatmap,
    plot_similarity_by_layer,
)
from xlgap.representations.ilo import ilo_by_layer
from xlgap.representations.similarity import (
    layerwise_similarity,
    linear_cka,
    linear_cka_biased,
    pair_chance,
    pair_metrics,
    pair_replicates,
    parallel_cosine,
    retrieval_accuracy,
    retrieval_accuracy_directed,
    retrieval_hits,
)
from xlgap.stats.bootstrap import item_counts, percentile_ci, shuffles
from xlgap.stats.consistency import (
    average_ranks,
    consistency_matrix,
    rank_consistency,
    rankc,
    shared_rates,
)

# ------------------------------------------------------------------ references


def naive_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA as normalised HSIC with linear kernels: n x n Gram matrices and centring matrix."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k = x @ x.T
    m = y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h))

    return hsic(k, m) / math.sqrt(hsic(k, k) * hsic(m, m))


def hsic_unbiased_gram(k: np.ndarray, m: np.ndarray) -> float:
    """Song et al.'s (2012) unbiased HSIC in its closed form, with n x n Grams."""
    n = len(k)
    k, m = k.copy(), m.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(m, 0.0)
    one = np.ones(n)
    return float(np.trace(k @ m) + (one @ k @ one) * (one @ m @ one) / ((n - 1) * (n - 2))
                 - 2 / (n - 2) * (one @ k @ m @ one)) / (n * (n - 3))


def naive_cka_debiased(x: np.ndarray, y: np.ndarray) -> float:
    k, m = x @ x.T, y @ y.T
    return hsic_unbiased_gram(k, m) / math.sqrt(hsic_unbiased_gram(k, k)
                                                * hsic_unbiased_gram(m, m))


def hsic_u_tuples(k: np.ndarray, m: np.ndarray, w: np.ndarray) -> float:
    """HSIC as the U-statistic E[k_ij m_ij] + E[k_ij m_qr] - 2 E[k_ij m_iq] over tuples of
    distinct items, each tuple weighted by the product of its items' weights: the
    definition, by enumeration (small n only)."""
    n = len(k)

    def mean_over(f, r: int) -> float:
        total = norm = 0.0
        for tup in itertools.permutations(range(n), r):
            weight = float(np.prod(w[list(tup)]))
            total += weight * f(*tup)
            norm += weight
        return total / norm

    return (mean_over(lambda i, j: k[i, j] * m[i, j], 2)
            + mean_over(lambda i, j, q, r: k[i, j] * m[q, r], 4)
            - 2 * mean_over(lambda i, j, q: k[i, j] * m[i, q], 3))


def cka_tuples(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    k, m = x @ x.T, y @ y.T
    return hsic_u_tuples(k, m, w) / math.sqrt(hsic_u_tuples(k, k, w) * hsic_u_tuples(m, m, w))


def cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


# ----------------------------------------------------------------------- CKA


@pytest.mark.parametrize(("n", "d1", "d2"), [(50, 8, 5), (12, 30, 20)])
def test_cka_biased_matches_naive_hsic(n: int, d1: int, d2: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d1))
    y = x[:, :min(d1, d2)] @ rng.normal(size=(min(d1, d2), d2)) + rng.normal(size=(n, d2))
    assert linear_cka_biased(x, y) == pytest.approx(naive_cka(x, y), rel=1e-10)
    assert linear_cka_biased(x, x) == pytest.approx(1.0)
    assert 0.0 < linear_cka_biased(x, y) < 1.0


@pytest.mark.parametrize(("n", "d1", "d2"), [(8, 2, 3), (8, 20, 12), (60, 8, 5), (12, 30, 20)])
def test_cka_debiased_matches_unbiased_hsic(n: int, d1: int, d2: int) -> None:
    # (8, 2, 3) and (60, 8, 5) take the feature-space path, the others the Gram path
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d1)) + 3.0  # a shift: the estimator must not depend on it
    y = x[:, :min(d1, d2)] @ rng.normal(size=(min(d1, d2), d2)) + rng.normal(size=(n, d2))
    xc, yc = x - x.mean(0), y - y.mean(0)
    ref = naive_cka_debiased(xc, yc)
    assert linear_cka(x, y) == pytest.approx(ref, rel=1e-9)
    assert naive_cka_debiased(x, y) == pytest.approx(ref, rel=1e-8)  # shift-invariant
    if n <= 8:  # the closed form is the U-statistic of the definition
        assert ref == pytest.approx(cka_tuples(xc, yc, np.ones(n)), rel=1e-9)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert 0.0 < linear_cka(x, y) < 1.0


def test_debiased_cka_of_unrelated_representations_is_near_zero() -> None:
    # 50 items in 640 dimensions (Gemma 3 270M's width): the biased estimator sees
    # structure in pure noise, the debiased one does not
    rng = np.random.default_rng(2)
    biased, debiased = [], []
    for _ in range(20):
        x, y = rng.normal(size=(50, 640)), rng.normal(size=(50, 640))
        biased.append(linear_cka_biased(x, y))
        debiased.append(linear_cka(x, y))
    assert np.mean(biased) > 0.8
    assert abs(np.mean(debiased)) < 0.05
    assert np.mean(np.abs(debiased)) < 0.05
    x = rng.normal(size=(50, 640))
    q, _ = np.linalg.qr(rng.normal(size=(640, 640)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 2.5 * x @ q - 7.0) == pytest.approx(1.0)


def test_cka_invariances() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 10))
    z = rng.normal(size=(40, 6)) + x[:, :6]
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    xt = 3.7 * x @ q + 5.0  # rotation, isotropic scaling, translation
    for cka in (linear_cka, linear_cka_biased):
        assert cka(x, xt) == pytest.approx(1.0)
        assert cka(xt, z) == pytest.approx(cka(x, z), rel=1e-10)
        # not invariant to anisotropic scaling (it is not a trivial constant)
        xs = x * np.linspace(0.1, 10, 10)
        assert cka(xs, z) != pytest.approx(cka(x, z), rel=1e-3)


def test_cka_constant_is_nan_and_validation() -> None:
    for cka in (linear_cka, linear_cka_biased):
        assert math.isnan(cka(np.ones((5, 3)), np.arange(15.0).reshape(5, 3)))
        with pytest.raises(DataError, match="same number of rows"):
            cka(np.ones((5, 3)), np.ones((4, 3)))
    assert math.isnan(linear_cka(np.eye(3), np.eye(3)))  # n < 4: undefined


# -------------------------------------------------------------------- cosine


def test_parallel_cosine_matches_loops() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(25, 7)) + 1.0
    b = a + rng.normal(size=a.shape)
    b[3] = 0.0  # zero vector: cosine 0 with everything
    n = len(a)
    par = [0.0 if not b[i].any() else cos(a[i], b[i]) for i in range(n)]
    non = [0.0 if not b[j].any() else cos(a[i], b[j])
           for i in range(n) for j in range(n) if i != j]
    got = parallel_cosine(a, b)
    assert got["parallel"] == pytest.approx(np.mean(par), rel=1e-12)
    assert got["non_parallel"] == pytest.approx(np.mean(non), rel=1e-12)
    assert got["difference"] == pytest.approx(np.mean(par) - np.mean(non), rel=1e-12)
    assert got["difference"] > 0.1


def test_parallel_cosine_validation() -> None:
    with pytest.raises(DataError, match="at least 2 rows"):
        parallel_cosine(np.ones((1, 3)), np.ones((1, 3)))
    with pytest.raises(DataError, match="different dimensions"):
        parallel_cosine(np.ones((3, 3)), np.ones((3, 4)))


# ----------------------------------------------------------------- retrieval


def brute_retrieval(a: np.ndarray, b: np.ndarray) -> float:
    hits = 0
    for i in range(len(a)):
        sims = [cos(a[i], b[j]) for j in range(len(b))]
        hits += int(np.argmax(sims)) == i
    return hits / len(a)


@pytest.mark.parametrize("chunk", [1, 6, 1000])
def test_retrieval_on_permuted_copy(chunk: int) -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 16))
    perm = rng.permutation(40)
    perm[:10] = np.arange(10)  # ten fixed points...
    perm[10:] = 10 + rng.permutation(30)
    fixed = float(np.mean(perm == np.arange(40)))
    b = a[perm]
    # the nearest row of b to a_i is b_j with perm[j] == i: a hit iff i is a fixed point
    assert retrieval_accuracy_directed(a, b, chunk) == pytest.approx(fixed)
    assert retrieval_accuracy(a, b, chunk) == pytest.approx(fixed)
    assert retrieval_accuracy(a, a + 1e-3 * rng.normal(size=a.shape), chunk) == 1.0


def test_retrieval_matches_brute_force_noisy() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=(60, 8))
    b = a + 0.9 * rng.normal(size=a.shape)
    ab = retrieval_accuracy_directed(a, b, chunk=7)
    ba = retrieval_accuracy_directed(b, a, chunk=7)
    assert ab == pytest.approx(brute_retrieval(a, b))
    assert ba == pytest.approx(brute_retrieval(b, a))
    assert 0.0 < ab < 1.0
    assert retrieval_accuracy(a, b, 7) == pytest.approx((ab + ba) / 2)
    with pytest.raises(ConfigError, match="chunk"):
        retrieval_accuracy(a, b, 0)


# ------------------------------------------------------------------ layerwise


def test_layerwise_similarity_structure_and_values() -> None:
    rng = np.random.default_rng(5)
    n, n_layers, d = 30, 3, 8
    base = rng.normal(size=(n, n_layers, d))
    noise = np.array([2.0, 0.5, 0.05])[None, :, None]  # later layers more aligned
    states = {lang: base + noise * rng.normal(size=base.shape) for lang in ("en", "de", "fr")}
    res = layerwise_similarity(states)
    assert res["pairs"] == [["en", "de"], ["en", "fr"], ["de", "fr"]]
    assert [e["layer"] for e in res["layers"]] == [0, 1, 2]
    json.dumps(res, allow_nan=False)
    row = res["layers"][1]["pairs"][2]
    a, b = states["de"][:, 1], states["fr"][:, 1]
    assert (row["a"], row["b"]) == ("de", "fr")
    assert row["cka"] == pytest.approx(naive_cka_debiased(a - a.mean(0), b - b.mean(0)))
    assert row["cka_biased"] == pytest.approx(naive_cka(a, b))
    assert row["cos_parallel"] == pytest.approx(parallel_cosine(a, b)["parallel"])
    assert row["retrieval_ab"] == pytest.approx(brute_retrieval(a, b))
    mean_cka = np.mean([r["cka"] for r in res["layers"][1]["pairs"]])
    assert res["layers"][1]["mean"]["cka"] == pytest.approx(mean_cka)
    # alignment grows with depth in this construction
    assert (res["layers"][0]["mean"]["retrieval"] < res["layers"][2]["mean"]["retrieval"])
    assert res["layers"][0]["mean"]["cka"] < res["layers"][2]["mean"]["cka"]

    piv = layerwise_similarity(lambda i: {lang: s[:, i] for lang, s in states.items()},
                               pivot="fr", n_layers=3)
    assert piv["pairs"] == [["fr", "en"], ["fr", "de"]]
    assert piv["layers"][2]["pairs"][0]["cka"] == pytest.approx(
        linear_cka(states["fr"][:, 2], states["en"][:, 2]))
    with pytest.raises(ConfigError, match="pivot"):
        layerwise_similarity(states, pivot="xx")
    with pytest.raises(DataError, match="n, layers, d"):
        layerwise_similarity({"en": np.ones((3, 4)), "de": np.ones((3, 4))})


# -------------------------------------------------- bootstrap intervals and chance


def aligned_pair(rng: np.random.Generator, n: int = 60, d: int = 16, noise: float = 0.8
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Parallel rows: shared sentence content plus noise, and an offset on one side."""
    content = rng.normal(size=(n, d))
    return (content + 0.3 * rng.normal(size=(n, d)),
            content + noise * rng.normal(size=(n, d)) + 1.0)


def test_replicates_of_a_full_draw_are_the_estimates() -> None:
    rng = np.random.default_rng(20)
    a, b = aligned_pair(rng, n=40, d=8)
    reps = pair_replicates(a, b, np.ones((1, 40)), chunk=7)
    est = pair_metrics(a, b, chunk=7)
    assert set(reps) == set(est) - {"cka_biased"}  # the biased CKA gets no interval
    for key, values in reps.items():
        assert values[0] == pytest.approx(est[key], rel=1e-9, abs=1e-12), key


def test_replicates_recompute_the_metrics_on_the_draw() -> None:
    rng = np.random.default_rng(21)
    n = 7
    a, b = aligned_pair(rng, n=n, d=3, noise=1.0)
    w = np.array([2.0, 0.0, 1.0, 3.0, 1.0, 0.0, 0.0])  # items 1, 5, 6 not drawn
    reps = pair_replicates(a, b, w[None])
    # debiased CKA: the U-statistic over distinct drawn items, weighted by their draws
    ac, bc = a - a.mean(0), b - b.mean(0)
    assert reps["cka"][0] == pytest.approx(cka_tuples(ac, bc, w), rel=1e-9)
    # cosine means: the rows of the draw, copies of an item not a non-parallel pair
    rows = np.repeat(np.arange(n), w.astype(int))
    par = [cos(a[i], b[i]) for i in rows]
    non = [cos(a[i], b[j]) for p, i in enumerate(rows) for q, j in enumerate(rows)
           if p != q and i != j]
    assert reps["cos_parallel"][0] == pytest.approx(np.mean(par))
    assert reps["cos_non_parallel"][0] == pytest.approx(np.mean(non))
    # retrieval: drawn queries, the whole sample as candidates
    hits = retrieval_hits(a, b)
    assert hits.tolist() == [int(np.argmax([cos(a[i], b[j]) for j in range(n)])) == i
                             for i in range(n)]
    assert reps["retrieval_ab"][0] == pytest.approx(np.mean(hits[rows]))


@pytest.mark.parametrize("d", [6, 300])  # feature-space and Gram paths of the CKA
def test_chance_is_the_mean_over_shuffled_pairings(d: int) -> None:
    rng = np.random.default_rng(24)
    a, b = aligned_pair(rng, n=30, d=d)
    perms = shuffles(30, 3, seed=2)
    got = pair_chance(a, b, perms)
    for key in got:
        ref = np.mean([pair_metrics(a, b[perm])[key] for perm in perms])
        assert got[key] == pytest.approx(ref, rel=1e-9, abs=1e-12), key


def test_intervals_contain_mean_type_estimates_and_chance_is_below_aligned() -> None:
    rng = np.random.default_rng(22)
    a, b = aligned_pair(rng, n=80, d=16, noise=1.0)
    est = pair_metrics(a, b)
    reps = pair_replicates(a, b, item_counts(80, 200, seed=0))
    chance = pair_chance(a, b, shuffles(80, 5, seed=0))
    for key in ("cos_parallel", "cos_non_parallel", "cos_difference", "retrieval", "cka"):
        lo, hi = percentile_ci(reps[key])
        assert lo <= est[key] <= hi, key
        assert hi - lo > 0, key
    for key in ("cos_parallel", "cos_difference", "cka", "retrieval"):
        assert chance[key] < percentile_ci(reps[key])[0], key
    # without correspondence: no parallel advantage, no shared geometry, retrieval ~ 1/n
    assert abs(chance["cos_difference"]) < 0.05
    assert abs(chance["cka"]) < 0.05
    assert chance["retrieval"] < 0.1
    assert chance["cka_biased"] > 0.05  # the biased estimator's floor is not 0
    # the non-parallel mean does not need the pairing at all
    assert chance["cos_non_parallel"] == pytest.approx(est["cos_non_parallel"], abs=0.02)


def test_layerwise_similarity_summaries() -> None:
    rng = np.random.default_rng(23)
    n, d = 50, 12
    base = rng.normal(size=(n, 3, d))
    noise = np.array([3.0, 1.0, 0.3])[None, :, None]
    states = {lang: base + noise * rng.normal(size=base.shape) for lang in ("fr", "de", "it")}
    res = layerwise_similarity(states, pivot="fr", n_boot=100, n_shuffles=3, seed=4)
    json.dumps(res, allow_nan=False)
    assert res["pairs"] == [["fr", "de"], ["fr", "it"]]
    assert (res["n_boot"], res["n_shuffles"], res["seed"]) == (100, 3, 4)
    for entry in res["layers"]:
        for row in entry["pairs"]:
            assert set(row["summary"]) == set(res["metrics"])
            for key, fig in row["summary"].items():
                assert set(fig) == {"estimate", "ci", "chance"}
                assert fig["estimate"] == pytest.approx(row[key])
        fig = entry["summary"]["cos_parallel"]
        assert fig["estimate"] == pytest.approx(entry["mean"]["cos_parallel"])
        assert fig["ci"][0] <= fig["estimate"] <= fig["ci"][1]
        assert entry["summary"]["cka_biased"]["ci"] is None
        assert entry["summary"]["cka_biased"]["chance"] is not None
    best = res["layers"][2]["summary"]
    for key in ("cos_parallel", "cka", "retrieval"):
        assert best[key]["chance"] < best[key]["ci"][0], key
    # the same seed gives the same draws: results are reproducible
    assert layerwise_similarity(states, pivot="fr", n_boot=100, n_shuffles=3, seed=4) == res
    plain = layerwise_similarity(states, pivot="fr")
    assert "summary" not in plain["layers"][0] and "n_boot" not in plain


# ---------------------------------------------------------------- consistency


def test_average_ranks_match_scipy() -> None:
    from scipy.stats import rankdata

    rng = np.random.default_rng(6)
    v = rng.integers(0, 4, size=30).astype(float)
    np.testing.assert_allclose(average_ranks(v), rankdata(v))


def test_rank_consistency_matches_scipy_with_ties_and_padding() -> None:
    rng = np.random.default_rng(7)
    q, m = 40, 6
    a = rng.integers(-5, 0, size=(q, m)).astype(float)  # integer log-probs: many ties
    b = a + rng.integers(-2, 3, size=(q, m))
    n_cand = rng.integers(1, m + 1, size=q)  # variable candidate counts, NaN-padded
    for i, c in enumerate(n_cand):
        a[i, c:] = np.nan
        b[i, c:] = np.nan
    b[0, :] = -1.0  # constant ranking: Spearman undefined, item skipped
    a[0, :] = np.arange(m)
    n_cand[0] = m
    ref = []
    for i in range(q):
        c = n_cand[i]
        if c < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on the constant item, then gives NaN
            rho = spearmanr(a[i, :c], b[i, :c]).statistic
        if not np.isnan(rho):
            ref.append(rho)
    assert rank_consistency(a, b) == pytest.approx(np.mean(ref), rel=1e-12)
    assert rank_consistency(a, a) == pytest.approx(1.0)
    assert rank_consistency(a, -a) == pytest.approx(-1.0)
    assert math.isnan(rank_consistency(np.array([[1.0, np.nan]]), np.array([[2.0, np.nan]])))


def rankc_loop(a: np.ndarray, b: np.ndarray) -> float:
    vals = []
    for x, y in zip(a, b, strict=True):
        ok = ~(np.isnan(x) | np.isnan(y))
        x, y = x[ok], y[ok]
        n = len(x)
        if n < 2:
            continue
        rx = sorted(range(n), key=lambda c, x=x: (-x[c], c))
        ry = sorted(range(n), key=lambda c, y=y: (-y[c], c))
        w = [math.exp(n - j) for j in range(1, n + 1)]
        p = [len(set(rx[:j]) & set(ry[:j])) / j for j in range(1, n + 1)]
        vals.append(sum(wi * pi for wi, pi in zip(w, p, strict=True)) / sum(w))
    return float(np.mean(vals))


def test_rankc_matches_definition() -> None:
    # hand-worked: reversed 3-candidate ranking: P@1 = 0, P@2 = 1/2, P@3 = 1
    e = math.e
    assert rankc(np.array([[3.0, 2.0, 1.0]]), np.array([[1.0, 2.0, 3.0]])) == pytest.approx(
        (0.5 * e + 1) / (e**2 + e + 1))
    rng = np.random.default_rng(8)
    a = rng.normal(size=(30, 7))
    b = a + rng.normal(size=a.shape)
    a[3, 4:] = np.nan
    b[3, 4:] = np.nan
    a[5, :] = np.round(a[5, :])  # ties
    assert rankc(a, b) == pytest.approx(rankc_loop(a, b), rel=1e-12)
    assert rankc(a, a) == pytest.approx(1.0)
    assert rankc(a, b) < 1.0


def test_shared_rates_match_loops() -> None:
    rng = np.random.default_rng(9)
    q, m = 200, 4
    a = rng.normal(size=(q, m))
    b = a + rng.normal(size=(q, m))
    a[::7, 3] = np.nan  # padding never wins
    b[::7, 3] = np.nan
    gold = rng.integers(0, 3, size=q)
    got = shared_rates(a, b, gold)
    pa = [int(np.nanargmax(r)) for r in a]
    pb = [int(np.nanargmax(r)) for r in b]
    counts = {"tr_plus": 0, "tr_minus": 0, "a_only": 0, "b_only": 0, "both_wrong": 0}
    for i in range(q):
        ca, cb = pa[i] == gold[i], pb[i] == gold[i]
        counts["tr_plus"] += ca and cb
        counts["tr_minus"] += (not ca) and (not cb) and pa[i] == pb[i]
        counts["a_only"] += ca and not cb
        counts["b_only"] += cb and not ca
        counts["both_wrong"] += (not ca) and (not cb)
    for key, c in counts.items():
        assert got[key] == pytest.approx(c / q), key
    assert got["tr_plus"] + got["a_only"] + got["b_only"] + got["both_wrong"] == pytest.approx(1)
    assert got["tr_minus"] > 0 and got["tr_plus"] > 0
    with pytest.raises(DataError, match="gold index out of range"):
        shared_rates(a, b, np.full(q, 9))
    with pytest.raises(DataError, match="no scored candidate"):
        shared_rates(np.full((2, 4), np.nan), b[:2], gold[:2])
    with pytest.raises(DataError, match="shape"):
        shared_rates(a, b[:, :2], gold)


def test_consistency_matrix() -> None:
    rng = np.random.default_rng(10)
    base = rng.normal(size=(50, 5))
    scores = {lang: base + s * rng.normal(size=base.shape)
              for lang, s in (("en", 0.1), ("de", 0.5), ("sw", 3.0))}
    gold = np.argmax(base, axis=1)
    res = consistency_matrix(scores, gold)
    assert res["languages"] == ["en", "de", "sw"]
    mats = res["matrices"]
    for key, mat in mats.items():
        assert np.allclose(np.array(mat, dtype=float), np.array(mat, dtype=float).T), key
    for (i, la), (j, lb) in itertools.combinations(enumerate(res["languages"]), 2):
        assert mats["rank_consistency"][i][j] == pytest.approx(
            rank_consistency(scores[la], scores[lb]))
        assert mats["rankc"][i][j] == pytest.approx(rankc(scores[la], scores[lb]))
        assert mats["tr_plus"][i][j] == pytest.approx(
            shared_rates(scores[la], scores[lb], gold)["tr_plus"])
    assert mats["tr_plus"][0][0] == pytest.approx(np.mean(np.argmax(scores["en"], 1) == gold))
    # the noisiest language is the least consistent with English
    assert mats["rank_consistency"][0][1] > mats["rank_consistency"][0][2]
    json.dumps(res, allow_nan=False)
    with pytest.raises(DataError, match="differs"):
        consistency_matrix(scores, {"en": gold, "de": gold, "sw": (gold + 1) % 5})


def test_consistency_intervals_and_chance() -> None:
    rng = np.random.default_rng(12)
    q, m = 120, 6
    base = rng.normal(size=(q, m))
    scores = {"fr": base + 0.4 * rng.normal(size=base.shape),
              "de": base + 0.6 * rng.normal(size=base.shape)}
    scores["de"][::9, 4:] = np.nan  # fewer candidates for some items
    gold = np.argmax(base, axis=1)
    res = consistency_matrix(scores, gold, n_boot=200, n_shuffles=5, seed=1)
    json.dumps(res, allow_nan=False)
    row = res["pairs"][0]
    assert set(row["summary"]) == {"rank_consistency", "rankc", "tr_plus", "tr_minus",
                                   "same_answer"}
    for key, fig in row["summary"].items():
        assert fig["estimate"] == pytest.approx(row[key])
        assert fig["ci"][0] <= fig["estimate"] <= fig["ci"][1], key  # all are item means
    for key in ("rank_consistency", "rankc", "same_answer"):
        assert row["summary"][key]["chance"] < row["summary"][key]["ci"][0], key
    assert abs(row["summary"]["rank_consistency"]["chance"]) < 0.1  # random rankings
    # shuffled, being right in both is a coincidence of two accuracies
    acc = [np.mean(np.nanargmax(scores[lang], axis=1) == gold) for lang in ("fr", "de")]
    assert row["summary"]["tr_plus"]["chance"] == pytest.approx(acc[0] * acc[1], abs=0.05)
    assert res["n_boot"] == 200 and "chance_method" in res
    assert "summary" not in consistency_matrix(scores, gold)["pairs"][0]


# ---------------------------------------------------------------------- plots


def test_plots_write_png(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    base = rng.normal(size=(20, 3, 6))
    states = {lang: base + rng.normal(size=base.shape) for lang in ("en", "de", "fr", "sw")}
    layers = ilo_by_layer(lambda i: {k: v[:, i] for k, v in states.items()}, n_layers=3,
                          k=3, t=2)
    with_ci = ilo_by_layer(lambda i: {k: v[:, i] for k, v in states.items()}, n_layers=3,
                           k=3, t=2, n_boot=20, n_shuffles=2)
    sim = layerwise_similarity(states)
    sim_ci = layerwise_similarity(states, n_boot=20, n_shuffles=2)
    paths = [plot_ilo_by_layer(layers, tmp_path / "ilo.png"),
             plot_ilo_by_layer({"layers": layers}, tmp_path / "ilo2.png"),
             plot_ilo_by_layer({"layers": with_ci, "preset": "paper", "metric": "euclidean",
                                "k": 3}, tmp_path / "ilo3.png"),
             plot_similarity_by_layer(sim, tmp_path / "sim.png"),
             plot_similarity_by_layer(sim_ci, tmp_path / "sim2.png"),
             plot_pair_heatmap([[1.0, 0.5], [0.5, None]], ["en", "de"], "t",
                               tmp_path / "sub" / "heat.png")]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="does not match"):
        plot_pair_heatmap([[1.0]], ["en", "de"], "t", tmp_path / "x.png")
    with pytest.raises(DataError, match="no layers"):
        plot_ilo_by_layer([], tmp_path / "y.png")


# ------------------------------------------------ commands on data without English


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from xlgap.cli import main
    from xlgap.models import register_backend

    register_backend("fake", "fake_backend:make")
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


@pytest.fixture
def fr_de(tmp_path):
    """A two-language parallel sentence set with no English."""
    d = tmp_path / "frde"
    d.mkdir()
    nouns = [("chat", "Katze"), ("chien", "Hund"), ("maison", "Haus"), ("arbre", "Baum"),
             ("livre", "Buch"), ("ville", "Stadt"), ("pomme", "Apfel"), ("porte", "Tür")]
    fr = [f"Le {a} numéro {i} est ici." for i in range(3) for a, _ in nouns]
    de = [f"Die {b} Nummer {i} ist hier." for i in range(3) for _, b in nouns]
    (d / "fr.txt").write_text("\n".join(fr) + "\n", encoding="utf-8")
    (d / "de.txt").write_text("\n".join(de) + "\n", encoding="utf-8")
    return d


def test_commands_work_without_english(capsys, tmp_path, fr_de) -> None:
    common = ("--model", "fake:x", "--data", str(fr_de), "--source", "fr", "--store",
              str(tmp_path / "store"), "--n-boot", "30", "--n-shuffles", "2")
    out = tmp_path / "run"
    code, text, err = run_cli(capsys, "similarity", *common, "--out", str(out))
    assert code == 0, err
    sim = json.loads((out / "similarity.json").read_text())
    assert sim["pivot"] == "fr" and sim["pairs"] == [["fr", "de"]]  # the source is the pivot
    fig = sim["layers"][0]["summary"]["cka"]
    assert set(fig) == {"estimate", "ci", "chance"} and fig["ci"] is not None
    assert "CKA (debiased)" in text
    index = (out / "hidden" / "index.json").read_bytes()
    stamp = (out / "hidden" / "layer_000.npy").stat().st_mtime_ns

    code, text, err = run_cli(capsys, "ilo", *common, "--out", str(out), "--preset", "paper")
    assert code == 0, err
    ilo_json = json.loads((out / "ilo.json").read_text())
    assert {key: ilo_json[key] for key in ("preset", "metric", "k", "t", "centered")} == {
        "preset": "paper", "metric": "euclidean", "k": 10, "t": 1, "centered": False}
    assert "Wilie" in ilo_json["score"] and "2503.11280" in ilo_json["score"]
    assert set(ilo_json["layers"][0]["summary"]["mean"]) == {"estimate", "ci", "chance",
                                                             "mixed_reference"}
    # one path to the hidden states: ilo reused what similarity extracted
    assert (out / "hidden" / "index.json").read_bytes() == index
    assert (out / "hidden" / "layer_000.npy").stat().st_mtime_ns == stamp

    code, _, err = run_cli(capsys, "inside", *common, "--out", str(tmp_path / "in"),
                           "--k", "3", "--distance", "euclidean")
    assert code == 0, err
    inside = json.loads((tmp_path / "in" / "ilo.json").read_text())
    assert (inside["preset"], inside["k"], inside["metric"], inside["centered"]) == (
        "xlgap", 3, "euclidean", True)
    assert (tmp_path / "in" / "similarity.png").exists()

    no_source = [a for a in common if a not in ("--source", "fr")]
    code, _, err = run_cli(capsys, "similarity", *no_source, "--out", str(tmp_path / "x"))
    # without --source the default 'en' is not there: the data's first language is the
    # source, and the command says so
    assert code == 0, err
    first = re.search(r"source language '(\w+)'", err)
    assert "has no 'en'" in err and first is not None
    assert json.loads((tmp_path / "x" / "similarity.json").read_text())["pivot"] == first[1]


def test_consistency_command_without_english(capsys, tmp_path) -> None:
    d = tmp_path / "bm"
    d.mkdir()
    rows = {"fr": [("La capitale de la France est <mask>.", "Paris", "Paris,Berlin,Rome"),
                   ("La capitale de l'Italie est <mask>.", "Rome", "Paris,Berlin,Rome"),
                   ("La capitale de l'Allemagne est <mask>.", "Berlin", "Paris,Berlin,Rome")],
            "de": [("Die Hauptstadt Frankreichs ist <mask>.", "Paris", "Paris,Berlin,Rom"),
                   ("Die Hauptstadt Italiens ist <mask>.", "Rom", "Paris,Berlin,Rom"),
                   ("Die Hauptstadt Deutschlands ist <mask>.", "Berlin", "Paris,Berlin,Rom")]}
    for lang, items in rows.items():
        lines = ["Prompt\tAns\tCandidate Ans\tSubject"] + ["\t".join((*r, "x")) for r in items]
        (d / f"{lang}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, text, err = run_cli(capsys, "consistency", "--model", "fake:x", "--data", str(d),
                              "--source", "de", "--store", str(tmp_path / "store"), "--out",
                              str(tmp_path / "c"), "--n-boot", "20", "--shots", "0")
    assert code == 0, err
    res = json.loads((tmp_path / "c" / "consistency.json").read_text())
    assert res["languages"] == ["de", "fr"]
    assert set(res["pairs"][0]["summary"]["rankc"]) == {"estimate", "ci", "chance"}
    assert "de-fr" in text


@pytest.mark.parametrize("command", ["ilo", "similarity", "inside", "consistency"])
def test_command_help_lists_the_new_options(capsys, command: str) -> None:
    code, text, _ = run_cli(capsys, command, "--help")
    assert code == 0
    for flag in ("--n-boot", "--n-shuffles", "--preset", "--distance", "--pivot"):
        assert flag in text


@pytest.mark.slow
def test_real_flores_states_beat_their_chance_levels(embedded_backend, shared_data,
                                                     tmp_path) -> None:
    """Gemma 3 270M on 40 parallel sentences (the project's, FLORES-like length) in French
    and German (no English): every similarity figure's interval lies above its
    shuffled-pairing chance level."""
    from xlgap.representations.extract import CenteredStates, load_or_extract
    from xlgap.representations.ilo import ilo_uncertainty

    texts = {lang: (shared_data / "flores100" / f"{lang}.txt").read_text(
        encoding="utf-8").splitlines()[:40] for lang in ("fr", "de")}
    hs = load_or_extract(embedded_backend, texts, tmp_path, pooling="mean_no_bos",
                         layers=[6, 12], batch_size=16, progress=False)
    states = CenteredStates(hs)
    sim = layerwise_similarity(states, pivot="fr", n_boot=200, n_shuffles=5)
    for entry in sim["layers"]:
        summary = entry["summary"]
        for key in ("cos_parallel", "cos_difference", "cka", "retrieval"):
            fig = summary[key]
            assert fig["ci"][0] <= fig["estimate"] <= fig["ci"][1], (entry["layer"], key)
            assert fig["chance"] < fig["ci"][0], (entry["layer"], key)
        assert abs(summary["cka"]["chance"]) < 0.1
        # the biased CKA's floor is well above the debiased one's
        assert summary["cka_biased"]["chance"] > summary["cka"]["chance"]
    ilo12 = ilo_uncertainty(states.layer(12), k=5, t=None, n_boot=200, n_shuffles=5)
    lo, hi = ilo12["summary"]["mean"]["ci"]
    assert lo <= ilo12["mean"] <= hi

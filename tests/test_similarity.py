"""Cross-lingual similarity (cosine, CKA, retrieval), consistency measures, and plots."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from xlgap.errors import ConfigError, DataError
from xlgap.report.representation_plots import (
    plot_ilo_by_layer,
    plot_pair_heatmap,
    plot_similarity_by_layer,
)
from xlgap.representations.consistency import (
    average_ranks,
    consistency_matrix,
    rank_consistency,
    rankc,
    shared_rates,
)
from xlgap.representations.ilo import ilo_by_layer
from xlgap.representations.similarity import (
    layerwise_similarity,
    linear_cka,
    parallel_cosine,
    retrieval_accuracy,
    retrieval_accuracy_directed,
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


def cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


# ----------------------------------------------------------------------- CKA


@pytest.mark.parametrize(("n", "d1", "d2"), [(50, 8, 5), (12, 30, 20)])
def test_cka_matches_naive_hsic(n: int, d1: int, d2: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d1))
    y = x[:, :min(d1, d2)] @ rng.normal(size=(min(d1, d2), d2)) + rng.normal(size=(n, d2))
    assert linear_cka(x, y) == pytest.approx(naive_cka(x, y), rel=1e-10)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert 0.0 < linear_cka(x, y) < 1.0


def test_cka_invariances() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 10))
    z = rng.normal(size=(40, 6)) + x[:, :6]
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    xt = 3.7 * x @ q + 5.0  # rotation, isotropic scaling, translation
    assert linear_cka(x, xt) == pytest.approx(1.0)
    assert linear_cka(xt, z) == pytest.approx(linear_cka(x, z), rel=1e-10)
    # not invariant to anisotropic scaling (it is not a trivial constant)
    xs = x * np.linspace(0.1, 10, 10)
    assert linear_cka(xs, z) != pytest.approx(linear_cka(x, z), rel=1e-3)


def test_cka_constant_is_nan_and_validation() -> None:
    assert math.isnan(linear_cka(np.ones((5, 3)), np.arange(15.0).reshape(5, 3)))
    with pytest.raises(DataError, match="same number of rows"):
        linear_cka(np.ones((5, 3)), np.ones((4, 3)))


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
    assert row["cka"] == pytest.approx(naive_cka(a, b))
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


# ---------------------------------------------------------------------- plots


def test_plots_write_png(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    base = rng.normal(size=(20, 3, 6))
    states = {lang: base + rng.normal(size=base.shape) for lang in ("en", "de", "fr", "sw")}
    layers = ilo_by_layer(lambda i: {k: v[:, i] for k, v in states.items()}, n_layers=3,
                          k=3, t=2)
    sim = layerwise_similarity(states)
    paths = [plot_ilo_by_layer(layers, tmp_path / "ilo.png"),
             plot_ilo_by_layer({"layers": layers}, tmp_path / "ilo2.png"),
             plot_similarity_by_layer(sim, tmp_path / "sim.png"),
             plot_pair_heatmap([[1.0, 0.5], [0.5, None]], ["en", "de"], "t",
                               tmp_path / "sub" / "heat.png")]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="does not match"):
        plot_pair_heatmap([[1.0]], ["en", "de"], "t", tmp_path / "x.png")
    with pytest.raises(DataError, match="no layers"):
        plot_ilo_by_layer([], tmp_path / "y.png")

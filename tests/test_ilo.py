"""ILO (Interlingual Local Overlap) and the chunked k-NN, checked against brute-force
references; ILO's bootstrap intervals, chance level and presets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlgap.errors import ConfigError, DataError
from xlgap.representations import ilo as ilo_module
from xlgap.representations.ilo import (
    PRESETS,
    default_t,
    ilo,
    ilo_by_layer,
    ilo_from_npz,
    ilo_uncertainty,
    knn,
    knn_cosine,
    knn_euclidean,
)

# ----------------------------------------------------------------- brute-force references


def brute_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Full N x N cosine matrix, each row sorted by (-similarity, index) in pure Python."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.sqrt((x * x).sum(axis=1))
    xn = np.zeros_like(x)
    for i in range(len(x)):
        if norms[i] > 0:
            xn[i] = x[i] / norms[i]
    sim = xn @ xn.T
    out = []
    for i in range(len(x)):
        cands = [j for j in range(len(x)) if j != i]
        cands.sort(key=lambda j, i=i: (-sim[i, j], j))
        out.append(cands[:k])
    return np.array(out)


def brute_knn_euclidean(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's k nearest rows by Euclidean distance, sorted by (distance, index)."""
    x = np.asarray(x, dtype=np.float64)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2))
    return np.array([sorted((j for j in range(len(x)) if j != i),
                            key=lambda j, i=i: (dist[i, j], j))[:k] for i in range(len(x))])


def brute_ilo(vectors: dict[str, np.ndarray], k: int, t: int, metric: str = "cosine",
              weight: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """ILO straight from the definition, with loops and Python sets; ``weight`` (per
    pooled point, 0 = not drawn) re-weights the points on fixed neighbour lists."""
    langs = list(vectors)
    labels = [lang for lang in langs for _ in range(len(vectors[lang]))]
    pooled = np.concatenate([vectors[lang] for lang in langs])
    nn = (brute_knn if metric == "cosine" else brute_knn_euclidean)(pooled, k)
    w = np.ones(len(labels)) if weight is None else weight
    res: dict[str, dict[str, float]] = {"bridge": {}, "reach": {}, "ilo": {}}
    for lang in langs:
        idx = [p for p, lab in enumerate(labels) if lab == lang and w[p] > 0]
        bridged = 0.0
        seen: set[str] = set()
        for p in idx:
            others = {labels[q] for q in nn[p]} - {lang}
            bridged += w[p] * (len(others) >= t)
            seen |= others
        b = bridged / sum(w[p] for p in idx)
        r = len(seen) / (len(langs) - 1)
        res["bridge"][lang] = b
        res["reach"][lang] = r
        res["ilo"][lang] = 0.0 if b == 0 or r == 0 else 2 * b * r / (b + r)
    return res


def clustered(rng: np.random.Generator, n_lang: int, n: int, d: int, spread: float
              ) -> dict[str, np.ndarray]:
    """Parallel base sentences plus a language offset of size ``spread`` plus noise."""
    base = rng.normal(size=(n, d))
    return {f"l{j}": base + spread * rng.normal(size=d) + 0.3 * rng.normal(size=(n, d))
            for j in range(n_lang)}


# ----------------------------------------------------------------------------- k-NN


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_knn_matches_brute_force_random(chunk: int, dtype: type) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 12)).astype(dtype)
    np.testing.assert_array_equal(knn_cosine(x, 5, chunk=chunk), brute_knn(x, 5))


@pytest.mark.parametrize("pool_size", [6, 40])
@pytest.mark.parametrize("slack", [0, 64, 10**9])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_knn_exact_ties_go_to_lower_index(chunk: int, slack: int, pool_size: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # slack decides which rows take the one-row-at-a-time path for heavy ties: all
    # rows (0), the zero-vector rows (64), none (10**9); all must give the same answer.
    monkeypatch.setattr(ilo_module, "_TIE_SLACK", slack)
    # Rows with exactly four 1s among 8 dims normalise to entries 0.5, so every cosine is a
    # multiple of 0.25 computed exactly whatever the BLAS summation order: many exact ties,
    # which must break by index. A small pool gives large groups of equal rows; a larger
    # one few copies, so distinct similarity levels above a tie at the k-th place.
    rng = np.random.default_rng(1)
    pool = np.zeros((pool_size, 8))
    for row in pool[1:]:  # row 0 stays a zero vector: similarity 0 to everything
        row[rng.choice(8, size=4, replace=False)] = 1.0
    x = pool[rng.integers(0, pool_size, size=120)]
    got = knn_cosine(x, 7, chunk=chunk)
    ref = brute_knn(x, 7)
    np.testing.assert_array_equal(got, ref)
    # The tie-break really matters: in some row the k-th best similarity is shared by a
    # neighbour and by a non-neighbour, so an arbitrary pick among ties would differ.
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    xn = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    kth = sim[np.arange(len(x)), ref[:, -1]]
    assert np.any((sim >= kth[:, None]).sum(axis=1) > 7)


@pytest.mark.parametrize("chunk", [1, 13, 10_000])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_knn_euclidean_matches_brute_force(chunk: int, dtype: type) -> None:
    rng = np.random.default_rng(10)
    # a large common offset, like hidden states: centring keeps the scores precise
    x = (rng.normal(size=(120, 10)) + 50.0).astype(dtype)
    np.testing.assert_array_equal(knn_euclidean(x, 6, chunk=chunk), brute_knn_euclidean(x, 6))
    np.testing.assert_array_equal(knn(x, 6, "euclidean", chunk), knn_euclidean(x, 6))
    # cosine and Euclidean disagree on such data (the offset dominates every cosine)
    assert not np.array_equal(knn_cosine(x, 6), knn_euclidean(x, 6))
    with pytest.raises(ConfigError, match="unknown distance"):
        knn(x, 3, "manhattan")


def test_knn_zero_vectors_no_nan_and_self_excluded() -> None:
    x = np.zeros((6, 3))
    x[3] = [1.0, 0.0, 0.0]
    nn = knn_cosine(x, 2)
    assert not np.any(nn == np.arange(6)[:, None])
    # all similarities are 0 for zero rows: neighbours are the lowest other indices
    np.testing.assert_array_equal(nn[0], [1, 2])
    np.testing.assert_array_equal(nn[1], [0, 2])


def test_knn_validation() -> None:
    with pytest.raises(ConfigError, match="k\\+1"):
        knn_cosine(np.ones((3, 2)), 3)
    with pytest.raises(ConfigError, match="k must be"):
        knn_cosine(np.ones((3, 2)), 0)
    with pytest.raises(DataError, match="2-D"):
        knn_cosine(np.ones(5), 1)
    with pytest.raises(DataError, match="NaN"):
        knn_cosine(np.array([[1.0, np.nan], [1.0, 0.0], [0.0, 1.0]]), 1)


# ----------------------------------------------------------------------------- ILO


@pytest.mark.parametrize(("spread", "k", "t"), [(0.0, 5, 3), (1.0, 5, 3), (1.5, 4, 2),
                                               (3.0, 6, 1)])
def test_ilo_matches_brute_force(spread: float, k: int, t: int) -> None:
    rng = np.random.default_rng(2)
    vecs = clustered(rng, 5, 40, 10, spread)
    got = ilo(vecs, k=k, t=t, chunk=17)
    ref = brute_ilo(vecs, k, t)
    for key in ("bridge", "reach", "ilo"):
        assert getattr(got, key) == pytest.approx(ref[key], abs=1e-12), key
    assert got.mean == pytest.approx(np.mean(list(ref["ilo"].values())))
    d = got.to_dict()
    assert json.loads(json.dumps(d))["ilo"] == pytest.approx(ref["ilo"])
    assert (d["k"], d["t"]) == (k, t)


@pytest.mark.parametrize(("spread", "k", "t"), [(1.0, 5, 3), (1.5, 10, 3), (3.0, 4, 1)])
def test_ilo_euclidean_matches_brute_force(spread: float, k: int, t: int) -> None:
    vecs = clustered(np.random.default_rng(9), 5, 30, 8, spread)
    got = ilo(vecs, k=k, t=t, metric="euclidean")
    ref = brute_ilo(vecs, k, t, metric="euclidean")
    for key in ("bridge", "reach", "ilo"):
        assert getattr(got, key) == pytest.approx(ref[key], abs=1e-12), key
    assert got.to_dict()["metric"] == "euclidean"


def test_presets_and_default_t() -> None:
    assert PRESETS["paper"] == {"metric": "euclidean", "k": 10, "t": 3, "center": False}
    assert PRESETS["xlgap"] == {"metric": "cosine", "k": 5, "t": 3, "center": True}
    assert [default_t(n) for n in (2, 3, 4, 17)] == [1, 2, 3, 3]
    two = clustered(np.random.default_rng(11), 2, 20, 6, 1.0)
    assert ilo(two, k=4, t=None).t == 1
    assert ilo(two, k=4, t=None).ilo == ilo(two, k=4, t=1).ilo


def test_ilo_intermediate_values_are_informative() -> None:
    # The medium spread must give values strictly inside (0, 1), or the brute-force
    # comparison above would only test the extremes.
    vecs = clustered(np.random.default_rng(2), 5, 40, 10, 1.0)
    res = ilo(vecs)
    assert 0.0 < res.mean < 1.0
    assert any(0.0 < b < 1.0 for b in res.bridge.values())


def test_ilo_perfectly_mixed_is_one() -> None:
    # Each language = the same parallel sentences + tiny noise: a point's neighbours are
    # its translations, which come from 5 distinct other languages.
    rng = np.random.default_rng(3)
    base = rng.normal(size=(60, 32))
    vecs = {f"l{j}": base + 1e-3 * rng.normal(size=base.shape) for j in range(8)}
    res = ilo(vecs, k=5, t=3)
    assert res.mean == pytest.approx(1.0)
    assert all(v == 1.0 for v in res.bridge.values())
    assert all(v == 1.0 for v in res.reach.values())


def test_ilo_same_distribution_is_high() -> None:
    # No parallel structure, but every language drawn from one distribution: neighbours
    # come from random languages, so most points bridge and every language reaches all.
    rng = np.random.default_rng(4)
    vecs = {f"l{j}": rng.normal(size=(100, 16)) for j in range(10)}
    res = ilo(vecs)
    assert res.mean > 0.9
    assert min(res.reach.values()) == 1.0


def test_ilo_separated_clusters_is_zero() -> None:
    rng = np.random.default_rng(5)
    d = 16
    vecs = {}
    for j in range(6):
        centre = np.zeros(d)
        centre[j] = 100.0  # orthogonal directions: cosine between languages near 0
        vecs[f"l{j}"] = centre + rng.normal(size=(50, d))
    res = ilo(vecs)
    assert res.mean == 0.0
    assert all(v == 0.0 for v in res.bridge.values())
    assert all(v == 0.0 for v in res.reach.values())


def test_ilo_validation() -> None:
    rng = np.random.default_rng(6)
    three = {f"l{j}": rng.normal(size=(5, 4)) for j in range(3)}
    with pytest.raises(ConfigError, match="n_languages - 1 = 2"):
        ilo(three, k=5, t=3)
    with pytest.raises(ConfigError, match="t <= k"):
        ilo({f"l{j}": rng.normal(size=(5, 4)) for j in range(6)}, k=2, t=3)
    with pytest.raises(ConfigError, match="k must be"):
        ilo(three, k=0, t=1)
    with pytest.raises(ConfigError, match="t must be"):
        ilo(three, k=2, t=0)
    with pytest.raises(ConfigError, match="k\\+1 = 6"):
        ilo({"a": np.ones((2, 3)), "b": np.ones((2, 3))}, k=5, t=1)
    with pytest.raises(DataError, match="dimension 5"):
        ilo({"a": np.ones((4, 3)), "b": np.ones((4, 5))}, k=2, t=1)
    with pytest.raises(DataError, match="2-D"):
        ilo({"a": np.ones((4, 3, 2)), "b": np.ones((4, 3))}, k=2, t=1)
    with pytest.raises(DataError, match="non-empty strings"):
        ilo({"": np.ones((4, 3)), "b": np.ones((4, 3))}, k=2, t=1)
    with pytest.raises(DataError, match="non-empty mapping"):
        ilo({}, k=2, t=1)


def test_ilo_by_layer_sources_agree() -> None:
    rng = np.random.default_rng(7)
    per_layer = [clustered(rng, 4, 20, 8, s) for s in (0.0, 1.0, 5.0)]
    from_list = ilo_by_layer(per_layer, k=4, t=2)
    from_fn = ilo_by_layer(lambda i: per_layer[i], n_layers=3, k=4, t=2)
    assert from_list == from_fn
    assert [e["layer"] for e in from_list] == [0, 1, 2]
    for i, entry in enumerate(from_list):
        ref = brute_ilo(per_layer[i], 4, 2)
        assert entry["ilo"] == pytest.approx(ref["ilo"])
        assert set(entry) == {"layer", "ilo", "bridge", "reach", "mean"}
    # more separated layers have lower overlap
    assert from_list[0]["mean"] > from_list[2]["mean"]
    assert ilo_by_layer(per_layer, layers=[2], k=4, t=2) == [from_list[2]]
    with pytest.raises(ConfigError, match="n_layers"):
        ilo_by_layer(lambda i: per_layer[i])
    with pytest.raises(ConfigError, match="out of range"):
        ilo_by_layer(per_layer, layers=[3])


def test_ilo_from_npz(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(8)
    vecs = clustered(rng, 4, 25, 6, 1.0)
    p = tmp_path / "v.npz"
    np.savez(p, **vecs)
    res = ilo_from_npz(p, k=4, t=2)
    assert [e["layer"] for e in res["layers"]] == [0]
    assert res["layers"][0]["ilo"] == pytest.approx(brute_ilo(vecs, 4, 2)["ilo"])
    assert res["languages"] == list(vecs)
    json.dumps(res)

    # 3-D arrays: (n, layers, d)
    stacked = {lang: np.stack([v, v * 0 + rng.normal(size=v.shape)], axis=1)
               for lang, v in vecs.items()}
    p3 = tmp_path / "v3.npz"
    np.savez(p3, **stacked)
    res3 = ilo_from_npz(p3, k=4, t=2)
    assert len(res3["layers"]) == 2
    assert res3["layers"][0]["ilo"] == res["layers"][0]["ilo"]

    bad = tmp_path / "bad.npz"
    np.savez(bad, a=np.ones((4, 3)), b=np.ones(4))
    with pytest.raises(DataError, match="2-D"):
        ilo_from_npz(bad)
    with pytest.raises(DataError, match="no such file"):
        ilo_from_npz(tmp_path / "missing.npz")
    few = tmp_path / "few.npz"
    np.savez(few, a=np.ones((4, 3)), b=np.ones((4, 3)))
    with pytest.raises(ConfigError, match=r"few\.npz.*n_languages - 1"):
        ilo_from_npz(few, k=5, t=3)


# ------------------------------------------------------- intervals and chance level


def test_ilo_uncertainty_estimate_and_full_draw() -> None:
    vecs = clustered(np.random.default_rng(12), 5, 40, 10, 1.0)
    res = ilo_uncertainty(vecs, k=5, t=3, n_boot=50, n_shuffles=3)
    plain = ilo(vecs, k=5, t=3)
    assert res["ilo"] == plain.ilo and res["mean"] == plain.mean
    assert res["resampling"] == "items" and res["t"] == 3
    json.dumps(res, allow_nan=False)
    mean = res["summary"]["mean"]
    assert set(mean) == {"estimate", "ci", "chance", "mixed_reference"}
    assert mean["estimate"] == plain.mean and mean["mixed_reference"] == mean["chance"]
    assert set(res["summary"]["ilo"]) == set(vecs)
    # no replicates, no chance: nulls
    bare = ilo_uncertainty(vecs, k=5, t=3, n_boot=0, n_shuffles=0)
    assert bare["summary"]["mean"] == {"estimate": plain.mean, "ci": None, "chance": None,
                                       "mixed_reference": None}


def test_ilo_replicate_reweights_points_on_fixed_neighbours(
        monkeypatch: pytest.MonkeyPatch) -> None:
    vecs = clustered(np.random.default_rng(13), 4, 15, 6, 1.0)
    counts = np.array([np.random.default_rng(0).multinomial(15, np.full(15, 1 / 15))],
                      dtype=float)
    monkeypatch.setattr(ilo_module, "item_counts", lambda n, n_boot, seed: counts)
    res = ilo_uncertainty(vecs, k=4, t=2, n_boot=1, n_shuffles=0)
    # the same item is drawn in every language: weights repeat per language block
    ref = brute_ilo(vecs, 4, 2, weight=np.tile(counts[0], 4))
    assert res["summary"]["mean"]["ci"][0] == pytest.approx(np.mean(list(ref["ilo"].values())))
    for lang, fig in res["summary"]["ilo"].items():
        assert fig["ci"][0] == pytest.approx(ref["ilo"][lang])


def test_ilo_interval_contains_estimate_and_narrows_with_more_items() -> None:
    widths = []
    for n in (30, 200):
        vecs = clustered(np.random.default_rng(14), 5, n, 10, 1.0)
        res = ilo_uncertainty(vecs, k=5, t=3, n_boot=200, n_shuffles=0)
        lo, hi = res["summary"]["mean"]["ci"]
        assert 0.0 < res["mean"] < 1.0
        assert lo <= res["mean"] <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0]


def test_ilo_ignores_row_pairing_so_chance_permutes_language_labels() -> None:
    rng = np.random.default_rng(15)
    vecs = clustered(rng, 5, 40, 10, 1.5)
    shuffled = {lang: (v[rng.permutation(len(v))] if lang == "l1" else v)
                for lang, v in vecs.items()}
    # a row shuffle across languages cannot be ILO's chance level: it changes nothing
    assert ilo(shuffled).ilo == ilo(vecs).ilo
    # separated languages: ILO 0, far below what unlabelled geometry would give
    res = ilo_uncertainty(clustered(rng, 5, 40, 10, 3.0), n_boot=20, n_shuffles=5)
    assert res["mean"] == 0.0 and res["summary"]["mean"]["chance"] > 0.5
    # languages drawn from one distribution: labels carry no information, ILO ~ chance
    same = {f"l{j}": rng.normal(size=(60, 12)) for j in range(6)}
    res = ilo_uncertainty(same, n_boot=20, n_shuffles=5)
    assert res["summary"]["mean"]["chance"] == pytest.approx(res["mean"], abs=0.05)


def test_ilo_uncertainty_unequal_languages_and_by_layer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(16)
    vecs = {"a": rng.normal(size=(30, 6)), "b": rng.normal(size=(20, 6)),
            "c": rng.normal(size=(25, 6))}
    res = ilo_uncertainty(vecs, k=4, t=2, n_boot=30, n_shuffles=2)
    assert res["resampling"] == "per language"
    lo, hi = res["summary"]["mean"]["ci"]
    assert lo <= hi
    per_layer = [clustered(rng, 4, 20, 8, s) for s in (0.0, 2.0)]
    layers = ilo_by_layer(per_layer, k=4, t=2, n_boot=30, n_shuffles=2, metric="euclidean")
    assert all(set(e) == {"layer", "ilo", "bridge", "reach", "mean", "summary"}
               for e in layers)
    assert layers[0]["ilo"] == ilo(per_layer[0], k=4, t=2, metric="euclidean").ilo
    p = tmp_path / "v.npz"
    np.savez(p, **per_layer[1])
    out = ilo_from_npz(p, k=4, t=None, metric="euclidean", n_boot=10)
    assert out["metric"] == "euclidean" and out["t"] == 3
    assert out["layers"][0]["summary"]["mean"]["chance"] is None
    with pytest.raises(ConfigError, match="n_boot"):
        ilo_uncertainty(vecs, k=4, t=2, n_boot=-1)

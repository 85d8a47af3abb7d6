"""Issue 24, point 3: the steering control is a distribution of random directions.

Failing first on the old code (fab4fcd):
* ``test_control_is_one_direction_shared_across_layers_with_the_steered_total_push``: the
  old control drew an independent direction per layer, norm-matched per layer only;
* ``test_steer_ranks_the_steered_effect_among_many_random_directions``: the old
  ``steering.json`` control had no ``draws`` nor per-draw effects, one draw only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import xlgap.cli
import xlgap.cli.workspace
from xlgap.interventions.arms import mean_parts
from xlgap.interventions.steering import SteeringVectors
from xlgap.interventions.steering import control as ctl
from xlgap.interventions.steering.experiment import Setting, control_vectors
from xlgap.models.cached import CachedBackend
from xlgap.representations.ilo import ilo_difference
from xlgap.stats.pairs import Part
from xlgap.store import Store


def _vectors(layers: int = 4, d: int = 16, seed: int = 0) -> SteeringVectors:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g)
    # consecutive layers point roughly the same way, with growing norms (as in a model)
    v = torch.stack([(i + 1) * (base + 0.3 * torch.randn(d, generator=g))
                     for i in range(layers)])
    return SteeringVectors({"shared.fr": v, "shared.ru": -v})


def test_control_is_one_direction_shared_across_layers_with_the_steered_total_push():
    vectors = _vectors()
    setting = Setting("shared", (1, 2, 3), 1.0)
    control = control_vectors(vectors, setting, ["fr", "ru"], seed=3)
    for t in ("fr", "ru"):
        r, v = control[t], vectors.vectors[f"shared.{t}"]
        rows = r[[1, 2, 3]]
        unit = rows / rows.norm(dim=-1, keepdim=True)
        # one direction: every steered layer's row is parallel to the others
        np.testing.assert_allclose((unit @ unit.T).numpy(), np.ones((3, 3)), atol=1e-5)
        # norm-matched in total: what the hooks add over the layers has the steered norm
        assert ctl.total_push(r, setting.layers, 1.0) == pytest.approx(
            ctl.total_push(v, setting.layers, 1.0), rel=1e-5)
        # and the per-layer profile of the steered vector
        ratio = rows.norm(dim=-1) / v[[1, 2, 3]].norm(dim=-1)
        np.testing.assert_allclose(ratio.numpy(), ratio[0].item(), rtol=1e-5)
    # the targets and the draws get different directions
    assert not torch.allclose(control["fr"][1] / control["fr"][1].norm(),
                              control["ru"][1] / control["ru"][1].norm())
    other = control_vectors(vectors, setting, ["fr", "ru"], seed=3, draw=1)
    assert not torch.allclose(other["fr"], control["fr"])


def test_one_layer_control_has_the_vector_norm_and_covariance_draws_stay_in_its_span():
    vectors = _vectors()
    v = vectors.vectors["shared.fr"]
    r = ctl.random_direction(v, [2], seed=1)
    assert r[2].norm().item() == pytest.approx(v[2].norm().item(), rel=1e-5)
    # a covariance-matched draw is a combination of the (centred) states: it stays in
    # their span, here two directions only
    rng = np.random.default_rng(0)
    span = rng.standard_normal((2, v.shape[1]))
    states = {"en": (rng.standard_normal((30, 1)) * span[0] + rng.standard_normal((30, 1))
                     * span[1])[:, None, :].repeat(4, axis=1)}
    basis = ctl.covariance_basis(states, 2)
    r = ctl.random_direction(v, [2], seed=5, basis=basis).numpy()[2]
    coef, *_ = np.linalg.lstsq(span.T, r, rcond=None)
    np.testing.assert_allclose(span.T @ coef, r, atol=1e-4 * np.linalg.norm(r))


def test_rank_of_the_steered_effect_on_known_cases():
    draws = [0.0, 0.1, 0.2, 0.3]
    top = ctl.rank_summary(0.5, draws, lower_better=False)
    assert top["percentile"] == 100 and top["p"] == pytest.approx(1 / 5)
    assert top["p_floor"] == pytest.approx(1 / 5) and top["n"] == 4
    bottom = ctl.rank_summary(-1.0, draws, lower_better=False)
    assert bottom["percentile"] == 0 and bottom["p"] == 1
    # a distance: lower is better, so the lowest effect is the best rank
    assert ctl.rank_summary(-1.0, draws, lower_better=True)["p"] == pytest.approx(1 / 5)
    tie = ctl.rank_summary(0.1, draws, lower_better=False)
    assert tie["percentile"] == pytest.approx(100 * 1.5 / 4)
    assert ctl.rank_summary(None, draws, lower_better=False)["percentile"] is None


def test_mean_parts_pool_every_draw():
    rng = np.random.default_rng(1)
    arms = [{"fr": {"transfer": Part(rng.integers(0, 2, 9).astype(float),
                                     rng.integers(0, 2, 9).astype(float) + 1)}}
            for _ in range(3)]
    mean = mean_parts(arms)["fr"]["transfer"]
    naive = (sum(a["fr"]["transfer"].num.sum() for a in arms)
             / sum(a["fr"]["transfer"].den.sum() for a in arms))
    assert mean.num.sum() / mean.den.sum() == pytest.approx(naive)


def test_ilo_difference_is_zero_for_equal_arms_and_matches_the_point_ilo():
    rng = np.random.default_rng(2)
    before = {lang: rng.standard_normal((20, 2, 8)) for lang in ("en", "fr", "ru")}
    same = ilo_difference(before, before, k=3, n_boot=50, seed=0)
    assert all(e["estimate"] == 0 and e["ci"] == [0, 0] for e in same)
    # after: fr moved onto en at layer 1 (item by item), so the languages mix more there
    after = {**before, "fr": before["fr"].copy()}
    after["fr"][:, 1] = before["en"][:, 1] + 0.01 * rng.standard_normal((20, 8))
    diff = ilo_difference(before, after, k=3, n_boot=200, seed=0)
    naive = np.array(ctl.ilo_point(after, 3)) - np.array(ctl.ilo_point(before, 3))
    np.testing.assert_allclose([e["estimate"] for e in diff], naive, atol=1e-12)
    assert diff[0]["estimate"] == 0
    assert diff[1]["estimate"] > 0 and diff[1]["ci"][0] <= diff[1]["estimate"] <= diff[1]["ci"][1]


def test_steer_ranks_the_steered_effect_among_many_random_directions(tmp_path, monkeypatch,
                                                                      tiny_backend):
    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    cached.name = "tiny"
    monkeypatch.setattr(xlgap.cli.workspace, "open_backend", lambda cfg: cached)
    out = tmp_path / "steer"
    assert xlgap.cli.run(["steer", "--no-progress", "--data", "builtin", "--limit", "25",
                          "--targets", "fr", "--directions", "shared", "--layers", "1+2",
                          "--alphas", "4", "--n-boot", "30", "--shots", "1",
                          "--control-draws", "5", "--out", str(out)]) == 0
    result = json.loads((out / "steering.json").read_text())
    control = result["control"]
    assert control["draws"] == 5 and len(control["effects"]["per_draw"]) == 5
    assert control["shared_across_layers"] is True
    push = control["total_push"]["fr"]
    assert push["control"] == pytest.approx(push["steered"], rel=1e-5)
    # the percentile is recomputed from the stored per-draw effects
    for metric, rank in control["rank"].items():
        steered = control["effects"]["steered"][metric]
        draws = [d[metric] for d in control["effects"]["per_draw"]]
        below = sum(x < steered for x in draws) + 0.5 * sum(x == steered for x in draws)
        assert rank["percentile"] == pytest.approx(100 * below / 5)
        assert rank["estimate"] == pytest.approx(
            result["best"]["test"]["all"][metric]["estimate"]
            - result["baseline"]["test"]["all"][metric]["estimate"])
    # by layer: where the ILO and cosine changes fall among the draws', and the paired ILO
    # change of the steered arm; nothing moves at layer 0, below the steering
    inside_rank = control["inside_rank"]
    assert len(inside_rank["ilo_change"]) == tiny_backend.n_layers
    assert len(inside_rank["per_draw"]["cos_parallel_change"]) == 5
    ilo_change = result["inside"]["ilo_change"]["steered"]
    assert len(ilo_change) == tiny_backend.n_layers and ilo_change[0]["estimate"] == 0
    assert all({"estimate", "ci", "p", "n"} <= set(e) for e in ilo_change)
    # issue 24, point 8: the best setting's p's are Holm-adjusted over every test of the
    # table (metrics, pooled and per target), and the report's headline says so
    holm = result["best"]["holm"]
    groups = {"all": result["best"]["test"]["all"], **result["best"]["test"]["per_target"]}
    tested = [(g, m) for g, stats in groups.items() for m, s in stats.items()
              if (s.get("vs_base") or {}).get("p") is not None]
    assert holm["family"] == len(tested) and "Holm" in holm["label"]
    for g, m in tested:
        assert groups[g][m]["vs_base"]["p"] <= holm["p"][g][m] <= 1
    from xlgap.report.sections.steering import steering_summary, steering_table

    text = steering_summary(result)
    assert "Holm" in text and "percentile among 5 random" in text
    assert "significant" not in text
    header = steering_table(result)[0].header
    assert "p (Holm)" in header and "percentile among 5 random" in header

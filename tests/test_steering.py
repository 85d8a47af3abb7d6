"""Steering vectors and hooks on a tiny random Gemma 3: hooks always go away, alpha = 0
changes nothing, a steered call never touches the unsteered cache, and ``xlgap steer``
runs end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import xlgap.cli
import xlgap.cli.workspace
from xlgap.cli.commands.sample import SampleConfig
from xlgap.data.items import Item, LangEntry, ParallelDataset
from xlgap.data.splits import split_items
from xlgap.errors import ConfigError
from xlgap.interventions.arms import target_parts
from xlgap.interventions.steering import (
    Setting,
    SteeringVectors,
    apply_steering_options,
    direction_vectors,
    language_means,
    parse_layers,
    parse_sweep,
    steering,
    steering_tag,
)
from xlgap.models.cached import CachedBackend
from xlgap.models.layers import hook_point
from xlgap.prompting.scoring import distributions, scoring_progress
from xlgap.store import Store

TEXTS = ["The capital of France is Paris.", "La capitale de la France est Paris.",
         "Die Hauptstadt von Frankreich ist Paris.", "one two three"]
REQUESTS = [("The capital of France is", [" Paris", " Berlin.", " Rome and more"]),
            ("Die Hauptstadt von Frankreich ist", [" Paris", " Berlin"])]


def random_vector(backend, seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    hidden = backend.model.config.hidden_size
    return torch.randn(backend.n_layers, hidden, generator=g) * scale


def hook_counts(backend) -> list[int]:
    """Forward hooks on every module. transformers installs its own at the first forward
    pass, so one is run first: the counts then compare ours only."""
    backend.hidden_states(TEXTS[:1], pooling="last")
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in backend.model.modules()]


# -- vectors -----------------------------------------------------------------------------


def test_direction_vectors_are_differences_of_means():
    rng = np.random.default_rng(0)
    states = {lang: rng.normal(size=(n, 3, 4)) for lang, n in (("en", 5), ("fr", 7), ("ja", 2))}
    means = language_means(states)
    vecs = direction_vectors(means, "en", ["fr", "ja"])
    assert set(vecs) == {"source.fr", "source.ja", "shared.fr", "shared.ja"}
    np.testing.assert_allclose(vecs["source.fr"].numpy(),
                               states["en"].mean(0) - states["fr"].mean(0), atol=1e-6)
    # the shared centre weighs languages alike, whatever their item counts
    centre = np.mean([states[x].mean(0) for x in ("en", "fr", "ja")], axis=0)
    np.testing.assert_allclose(vecs["shared.ja"].numpy(), centre - states["ja"].mean(0),
                               atol=1e-6)
    assert vecs["shared.fr"].dtype == torch.float32 and vecs["shared.fr"].shape == (3, 4)


def test_vectors_file_round_trip_and_names(tmp_path):
    vecs = {"shared.fr": torch.ones(4, 8), "source.fr": torch.zeros(4, 8),
            "shared.ja": torch.full((4, 8), 2.0), "mean.en": torch.ones(4, 8)}
    meta = {"fingerprint": "abc", "layers": [0, 1, 2, 3], "pooling": "last",
            "languages": ["en", "fr", "ja"], "data": "x", "item_ids": ["a", "b"]}
    path = SteeringVectors(vecs, meta).save(tmp_path / "v.safetensors")
    back = SteeringVectors.load(path)
    assert back.meta == meta and back.targets == ["fr", "ja"]
    assert torch.equal(back.vectors["shared.ja"], vecs["shared.ja"])
    assert back.resolve("fr") == "shared.fr" and back.resolve("source.fr") == "source.fr"
    with pytest.raises(ConfigError, match="name"):
        back.resolve("")  # two targets: the user must say which
    with pytest.raises(ConfigError, match="no steering vector"):
        back.resolve("de")


def test_layer_lists_and_sweep_grid():
    assert parse_layers("6") == [6] and parse_layers("4+8") == [4, 8]
    assert parse_layers("2-4") == [2, 3, 4] and parse_layers([3, 1, 3]) == [1, 3]
    grid = parse_sweep("shared,source", "1,2+3", "0.5,1")
    assert len(grid) == 8 and Setting("source", (2, 3), 1.0) in grid
    with pytest.raises(ConfigError):
        parse_sweep("sideways", "1", "1")


def test_split_is_disjoint_complete_and_seeded():
    ids = [f"i{i}" for i in range(50)]
    a = split_items(ids, (0.4, 0.2, 0.4), seed=3)
    assert [len(a[k]) for k in ("train", "dev", "test")] == [20, 10, 20]
    assert sorted(a["train"] + a["dev"] + a["test"]) == sorted(ids)
    assert not set(a["train"]) & set(a["dev"]) and not set(a["dev"]) & set(a["test"])
    assert a == split_items(ids, (0.4, 0.2, 0.4), seed=3)
    assert a != split_items(ids, (0.4, 0.2, 0.4), seed=4)


def test_dataset_split_and_only_keep_the_loaders_record():
    """``ParallelDataset.split`` gives the same ids as :func:`split_items`; ``only`` keeps
    the data order and what the loader recorded (dropped items, problems, original codes),
    which the old rebuild with four arguments lost."""
    items = [Item(f"i{i}", {"en": LangEntry(f"q{i}")}) for i in range(30)]
    data = ParallelDataset("toy", ["en"], items, "toy.jsonl", {"x": "no en"},
                           ["toy.jsonl:3: bad line"], {"en": "eng_Latn"})
    split = data.split("0.5,0.2,0.3", seed=1, need=("train", "test"))
    assert {k: split[k] for k in ("train", "dev", "test")} == split_items(
        [it.id for it in items], (0.5, 0.2, 0.3), seed=1)
    assert split["seed"] == 1 and split["fractions"] == pytest.approx([0.5, 0.2, 0.3])
    test = data.only(reversed(split["test"]))
    assert [it.id for it in test.items] == split["test"]  # data order, not the ids' order
    assert (test.dropped, test.problems, test.original_codes, test.source_path) == (
        {"x": "no en"}, ["toy.jsonl:3: bad line"], {"en": "eng_Latn"}, "toy.jsonl")
    with pytest.raises(ConfigError, match="fewer than 5 in dev"):
        data.split("0.9,0.05,0.05", seed=1, need=("dev",))


def test_metric_parts_of_a_known_case():
    src = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.5, np.nan]]))
    tgt = np.log(np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.2, 0.8, np.nan]]))
    gold = np.array([0, 1, 0])
    p = distributions(tgt)
    np.testing.assert_allclose(p[:, :-1].sum(1), 1.0)
    assert (p[:, -1] == 0).all() and p[2, 2] == 0
    parts = target_parts(src, tgt, gold)
    np.testing.assert_allclose(parts["accuracy"].values, [0.6, 0.3, 0.2])
    np.testing.assert_allclose(parts["agreement"].values, [1.0, 0.0, 0.5])  # item 3: source tie
    np.testing.assert_allclose(parts["transfer"].den, [1.0, 1.0, 0.5])
    np.testing.assert_allclose(parts["transfer"].num, [1.0, 0.0, 0.0])
    assert parts["rankc"].values[0] == pytest.approx(1.0)
    assert {"js", "chi2", "overall_success"} <= set(parts)  # every registered pair metric


# -- hooks -------------------------------------------------------------------------------


def test_hooks_are_removed_after_an_exception(tiny_backend):
    before_hooks, before_fp = hook_counts(tiny_backend), tiny_backend.fingerprint
    vec = random_vector(tiny_backend)
    with pytest.raises(RuntimeError, match="boom"), steering(tiny_backend, vec, [1, 2], 3.0):
        assert [len(m._forward_hooks) + len(m._forward_pre_hooks)
                for m in tiny_backend.model.modules()] != before_hooks
        assert tiny_backend.fingerprint != before_fp
        raise RuntimeError("boom")
    assert hook_counts(tiny_backend) == before_hooks
    assert tiny_backend.modifiers == [] and tiny_backend.fingerprint == before_fp
    # an error raised by the model call itself inside the block
    with pytest.raises(ValueError), steering(tiny_backend, vec, [0], 1.0):
        tiny_backend.hidden_states(TEXTS, pooling="no-such-pooling")
    assert hook_counts(tiny_backend) == before_hooks and tiny_backend.modifiers == []
    # a bad layer fails before anything is installed
    with pytest.raises(ConfigError, match="cannot steer at layer"), \
            steering(tiny_backend, vec, [tiny_backend.n_layers - 1], 1.0):
        pass
    assert hook_counts(tiny_backend) == before_hooks and tiny_backend.modifiers == []


def test_alpha_zero_reproduces_unsteered_results_exactly(tiny_backend):
    plain_scores = tiny_backend.score_batch(REQUESTS)
    plain_states = tiny_backend.hidden_states(TEXTS, pooling="mean")
    plain_text = tiny_backend.generate(TEXTS[:2], n=1, temperature=0.0, max_new_tokens=5)
    with steering(tiny_backend, random_vector(tiny_backend, scale=50.0), [0, 1, 2], 0.0):
        assert tiny_backend.score_batch(REQUESTS) == plain_scores
        assert np.array_equal(tiny_backend.hidden_states(TEXTS, pooling="mean"), plain_states)
        assert tiny_backend.generate(TEXTS[:2], n=1, temperature=0.0,
                                     max_new_tokens=5) == plain_text


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_steering_adds_alpha_v_at_its_layer_and_changes_all_three_calls(tiny_backend, layer):
    vec = random_vector(tiny_backend, seed=layer)
    plain = tiny_backend.hidden_states(TEXTS, pooling="mean")
    plain_scores = tiny_backend.score_batch(REQUESTS)
    plain_text = tiny_backend.generate(TEXTS[:2], n=1, temperature=0.0, max_new_tokens=6)
    with steering(tiny_backend, vec, [layer], 2.0):
        steered = tiny_backend.hidden_states(TEXTS, pooling="mean")
        scores = tiny_backend.score_batch(REQUESTS)
        text = tiny_backend.generate(TEXTS[:2], n=1, temperature=0.0, max_new_tokens=6)
    # below the layer nothing moves; at the layer the recorded state is shifted by alpha*v
    assert np.array_equal(steered[:, :layer], plain[:, :layer])
    np.testing.assert_allclose(steered[:, layer] - plain[:, layer],
                               np.broadcast_to(2.0 * vec[layer].numpy(), plain[:, layer].shape),
                               atol=1e-4)
    assert not np.allclose(steered[:, -1], plain[:, -1])
    assert not np.allclose(np.array(scores[0]), np.array(plain_scores[0]))
    assert isinstance(text, list)
    del plain_text  # greedy text may or may not change on a random model


def test_steered_calls_never_touch_the_unsteered_cache(tiny_backend, tmp_path):
    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    vec = random_vector(tiny_backend, scale=2.0)
    plain = cached.score_batch(REQUESTS)
    plain_states = cached.hidden_states(TEXTS, pooling="last")
    computed = cached.computed
    with steering(cached, vec, [1], 1.5):
        steered = cached.score_batch(REQUESTS)
        assert cached.computed == computed + len(REQUESTS)  # not served from the plain cache
        steered_states = cached.hidden_states(TEXTS, pooling="last")
        assert cached.computed == computed + len(REQUESTS) + len(TEXTS)
    assert steered != plain and not np.allclose(steered_states, plain_states)
    # the plain entries were not overwritten by the steered ones
    assert cached.score_batch(REQUESTS) == plain
    assert np.array_equal(cached.hidden_states(TEXTS, pooling="last"), plain_states)
    assert cached.computed == computed + len(REQUESTS) + len(TEXTS)
    # the same steering again is served from its own entries; another alpha is not
    with steering(cached, vec, [1], 1.5):
        assert cached.score_batch(REQUESTS) == steered
    assert cached.computed == computed + len(REQUESTS) + len(TEXTS)
    with steering(cached, vec, [1], 0.5):
        cached.score_batch(REQUESTS)
    assert cached.computed == computed + 2 * len(REQUESTS) + len(TEXTS)
    tags = {steering_tag(vec[[1]], [1], 1.5), steering_tag(vec[[1]], [1], 0.5),
            steering_tag(vec[[2]], [2], 1.5), steering_tag(vec[[1]] * 2, [1], 1.5)}
    assert len(tags) == 4


def test_apply_steering_options_keeps_steering_and_tags_the_fingerprint(tiny_backend, tmp_path):
    vec = random_vector(tiny_backend)
    meta = {"fingerprint": tiny_backend.fingerprint, "best": {"direction": "shared",
                                                              "layers": [1], "alpha": 1.0}}
    path = SteeringVectors({"shared.fr": vec, "source.fr": -vec}, meta).save(
        tmp_path / "v.safetensors")
    base_hooks, base_fp = hook_counts(tiny_backend), tiny_backend.fingerprint
    assert apply_steering_options(tiny_backend, "", "", None) is tiny_backend
    try:
        apply_steering_options(tiny_backend, str(path), "", None)
        assert len(tiny_backend.modifiers) == 1 and tiny_backend.fingerprint != base_fp
        assert tiny_backend.steering_handles[0].tag == steering_tag(vec[[1]], [1], 1.0)
        apply_steering_options(tiny_backend, f"{path}:source.fr", "2", 0.5)
        assert tiny_backend.steering_handles[1].tag == steering_tag(-vec[[2]], [2], 0.5)
    finally:
        for handle in getattr(tiny_backend, "steering_handles", []):
            handle.remove()
        tiny_backend.steering_handles = []
    assert hook_counts(tiny_backend) == base_hooks and tiny_backend.fingerprint == base_fp
    with pytest.raises(ConfigError):
        apply_steering_options(tiny_backend, str(tmp_path / "missing.safetensors"), "1", 1.0)


def test_scoring_progress_chains_and_restores_the_store_callback(tiny_backend, tmp_path):
    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    seen: list[int] = []
    cached.on_chunk = seen.append
    with scoring_progress(cached, len(REQUESTS), "test", True):
        cached.score_batch(REQUESTS)
    assert seen == [len(REQUESTS)] and cached.on_chunk == seen.append
    with scoring_progress(tiny_backend, 1, "test", True):  # not behind the store: no bar
        pass


def test_hook_points_follow_the_declared_layout(tiny_backend):
    model = tiny_backend.model
    # layer 0 is the first block's input (hidden_states[0]), not the embedding module
    assert hook_point(model, 0) == (model.model.layers[0], "input")
    assert hook_point(model, 2) == (model.model.layers[1], "output")


# -- the command -------------------------------------------------------------------------


def test_steer_command_end_to_end(tmp_path, monkeypatch, tiny_backend):
    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    cached.name = "tiny"
    monkeypatch.setattr(xlgap.cli.workspace, "open_backend", lambda cfg: cached)
    out = tmp_path / "steer"
    args = ["steer", "--no-progress", "--data", "builtin", "--limit", "30", "--targets",
            "fr,de", "--directions", "shared,source", "--layers", "1,0+2", "--alphas", "0.5,2",
            "--n-boot", "50", "--shots", "1", "--out", str(out)]
    assert xlgap.cli.run(args) == 0
    result = json.loads((out / "steering.json").read_text())
    split = result["split"]
    assert len(split["train"]) == 12 and len(split["dev"]) == 6 and len(split["test"]) == 12
    assert len(result["sweep"]) == 8
    best = result["best"]
    keys = ("direction", "layers", "alpha")
    assert {k: best[k] for k in keys} in [{k: r[k] for k in keys} for r in result["sweep"]]
    for metric in ("accuracy", "agreement", "transfer", "rankc", "js"):
        stat = best["test"]["all"][metric]
        assert stat["ci"][0] <= stat["estimate"] <= stat["ci"][1]
        assert 0 < stat["vs_base"]["p"] <= 1
        assert set(best["test"]["per_target"]) == {"fr", "de"}
    assert len(result["inside"]["steered"]["ilo"]) == tiny_backend.n_layers
    assert result["format"] == "steering" and "command" in result["provenance"]
    for name in ("steering_sweep.png", "steering_test.png", "steering_inside.png"):
        assert (out / name).stat().st_size > 0
    for name in ("steering_sweep.png", "steering_test.png", "steering_inside.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    vectors = SteeringVectors.load(out / "vectors.safetensors")
    assert vectors.meta["item_ids"] == split["train"]
    assert vectors.meta["best"]["alpha"] == best["alpha"]
    assert vectors.vectors["shared.fr"].shape == (tiny_backend.n_layers, 64)
    assert tiny_backend.modifiers == []
    # a rerun computes nothing new: every score is in the store under its own key
    computed = cached.computed
    assert xlgap.cli.run(args) == 0
    assert cached.computed == computed


@pytest.mark.slow
def test_steering_on_the_embedded_model(embedded_backend):
    """Gemma 3 270M: the hook sits where hidden_states says, alpha 0 changes nothing, and
    the hooks are gone afterwards."""
    backend = embedded_backend
    texts = ["Paris is the capital of France.", "Paris est la capitale de la France."]
    request = [("Paris is the capital of", [" France.", " Italy."])]
    vec = random_vector(backend, scale=20.0)
    hooks = hook_counts(backend)
    plain, plain_scores = backend.hidden_states(texts, pooling="mean"), backend.score_batch(
        request)
    with steering(backend, vec, [6], 0.0):
        assert np.array_equal(backend.hidden_states(texts, pooling="mean"), plain)
        assert backend.score_batch(request) == plain_scores
    with steering(backend, vec, [6], 1.0):
        steered = backend.hidden_states(texts, pooling="mean")
    assert np.array_equal(steered[:, :6], plain[:, :6])
    np.testing.assert_allclose(steered[:, 6] - plain[:, 6],
                               np.broadcast_to(vec[6].numpy(), plain[:, 6].shape), atol=1e-2)
    assert hook_counts(backend) == hooks and backend.modifiers == []


def test_any_command_runs_steered_with_the_steer_options(tiny_tokenizer, tmp_path, monkeypatch,
                                                         capsys):
    """``--steer FILE:NAME --steer-layers L --steer-alpha A`` through ``open_backend``:
    alpha 0 gives the unsteered distributions exactly (under its own cache entries), a
    real alpha changes them, and the options are refused where no hooks can go."""
    import xlgap.models
    from conftest import make_tiny_gemma
    from test_interventions import write_data
    from xlgap.errors import XlgapError
    from xlgap.models.hf import HFBackend

    monkeypatch.setattr(xlgap.models, "load_backend", lambda spec, **kw: HFBackend(
        make_tiny_gemma(len(tiny_tokenizer)), tiny_tokenizer, name="tiny-gemma", batch_size=4))
    model = HFBackend(make_tiny_gemma(len(tiny_tokenizer)), tiny_tokenizer, name="tiny-gemma")
    vec = random_vector(model, scale=3.0)
    path = SteeringVectors({"shared.fr": vec}, {"fingerprint": model.fingerprint}).save(
        tmp_path / "v.safetensors")
    data = write_data(tmp_path / "colors.jsonl", n=6, langs=["en", "fr"])

    def exact(name: str, *steer: str) -> dict:
        out = tmp_path / name
        assert xlgap.cli.run(["sample", "--data", str(data), "--exact", "--no-progress",
                              "--no-diagnose", "--store", str(tmp_path / "store"), "--out",
                              str(out), *steer]) == 0
        return {(r["item"], r["lang"]): r["probs"] for r in map(
            json.loads, (out / "distributions.jsonl").read_text().splitlines())}

    plain = exact("plain")
    zero = exact("zero", "--steer", f"{path}:shared.fr", "--steer-layers", "1",
                 "--steer-alpha", "0")
    steered = exact("steered", "--steer", f"{path}:shared.fr", "--steer-layers", "1",
                    "--steer-alpha", "2")
    # computed anew (another fingerprint), and the same: to float rounding, since hooks
    # send scoring through transformers' cache and the plain model through the
    # shared-prompt decoder
    assert zero.keys() == plain.keys()
    for key in plain:
        np.testing.assert_allclose(zero[key], plain[key], rtol=1e-5, atol=1e-9)
    assert any(not np.allclose(steered[k], plain[k]) for k in plain)
    run = json.loads((tmp_path / "steered" / "run.json").read_text())
    assert run["config"]["steer_alpha"] == 2 and run["fingerprint"] != json.loads(
        (tmp_path / "plain" / "run.json").read_text())["fingerprint"]
    with pytest.raises(XlgapError, match="--steer"):
        xlgap.cli.workspace.open_backend(SampleConfig(
            model="openai:m", base_url="http://127.0.0.1:1/v1", steer=str(path)))
    with pytest.raises(SystemExit):  # refused by steer itself, before anything loads
        xlgap.cli.main(["steer", "--data", str(data), "--steer", str(path), "--no-progress"])
    assert "--steer is for the other commands" in capsys.readouterr().err

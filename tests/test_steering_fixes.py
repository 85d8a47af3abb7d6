"""Issue 18, points 6 and 7: each test here failed on the code before the fix (fed3c8e).

* layer 0 is steered at the first block's input, which is ``hidden_states[0]``, also for
  models that change the embeddings inside their forward (Bloom's LayerNorm);
* alpha is the total strength of a multi-layer setting (each layer gets alpha / n);
* ``xlgap steer`` reports a norm-matched random-direction control on the test items, and
  ILO / similarity with CIs and chance levels;
* ``xlgap finetune`` compares every two freeze settings on the same items and counts the
  training examples it cut or dropped; long prompts lose their start, not their answer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import xlgap.cli
import xlgap.cli.workspace
from xlgap.interventions.finetune import completion_examples
from xlgap.interventions.steering import steering
from xlgap.models.cached import CachedBackend
from xlgap.store import Store

TEXTS = ["The capital of France is Paris.", "La capitale de la France est Paris.",
         "one two three"]


def tiny_bloom_backend(tokenizer):
    """A tiny random Bloom: it normalises the embeddings (``word_embeddings_layernorm``)
    inside the model's forward, so the embedding module's output is not hidden_states[0]."""
    from transformers import BloomConfig, BloomForCausalLM

    from xlgap.models.hf import HFBackend

    torch.manual_seed(0)
    config = BloomConfig(vocab_size=len(tokenizer), hidden_size=64, n_layer=3, n_head=2,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2, initializer_range=0.3)
    return HFBackend(BloomForCausalLM(config).eval(), tokenizer, name="tiny-bloom",
                     batch_size=4)


def random_vector(backend, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(backend.n_layers, backend.model.config.hidden_size, generator=g)


def test_layer0_steering_adds_to_hidden_states_0_on_bloom(tiny_tokenizer):
    """Layer 0 is hidden_states[0], the input of the first block: on Bloom that is the
    embeddings after their LayerNorm. The reference adds alpha * v right there (a hook on
    the LayerNorm); steering layer 0 must give the same states above it. Before the fix
    the vector went in before the LayerNorm, which normalised most of it away."""
    backend = tiny_bloom_backend(tiny_tokenizer)
    vec = random_vector(backend)
    norm = backend.model.transformer.word_embeddings_layernorm
    handle = norm.register_forward_hook(lambda mod, args, out: out + 1.5 * vec[0])
    try:
        reference = backend.hidden_states(TEXTS, pooling="mean")
    finally:
        handle.remove()
    plain = backend.hidden_states(TEXTS, pooling="mean")
    with steering(backend, vec, [0], 1.5):
        steered = backend.hidden_states(TEXTS, pooling="mean")
    assert not np.allclose(reference[:, 1:], plain[:, 1:])
    np.testing.assert_allclose(steered[:, 1:], reference[:, 1:], rtol=1e-4, atol=1e-4)
    assert backend.modifiers == []


def test_multi_layer_alpha_is_the_total_split_over_the_layers(tiny_backend):
    vec = random_vector(tiny_backend, seed=2)
    plain = tiny_backend.hidden_states(TEXTS, pooling="mean")
    with steering(tiny_backend, vec, [1, 2], 2.0):
        steered = tiny_backend.hidden_states(TEXTS, pooling="mean")
    # the first steered layer gets alpha / 2 of its vector (before: the full alpha)
    np.testing.assert_allclose(steered[:, 1] - plain[:, 1],
                               np.broadcast_to(1.0 * vec[1].numpy(), plain[:, 1].shape),
                               atol=1e-4)
    with steering(tiny_backend, vec, [1], 2.0):
        single = tiny_backend.hidden_states(TEXTS, pooling="mean")
    np.testing.assert_allclose(single[:, 1] - plain[:, 1],
                               np.broadcast_to(2.0 * vec[1].numpy(), plain[:, 1].shape),
                               atol=1e-4)


def test_steer_reports_a_norm_matched_random_control_and_inside_cis(tmp_path, monkeypatch,
                                                                    tiny_backend):
    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    cached.name = "tiny"
    monkeypatch.setattr(xlgap.cli.workspace, "open_backend", lambda cfg: cached)
    out = tmp_path / "steer"
    assert xlgap.cli.run(["steer", "--no-progress", "--data", "builtin", "--limit", "25",
                          "--targets", "fr", "--directions", "shared", "--layers", "1+2",
                          "--alphas", "4", "--n-boot", "30", "--shots", "1",
                          "--out", str(out)]) == 0
    result = json.loads((out / "steering.json").read_text())
    best, control = result["best"], result["control"]
    assert set(control["test"]["all"]) == set(best["test"]["all"])
    assert set(control["test"]["per_target"]) == {"fr"}
    for stat in control["test"]["all"].values():
        assert stat["vs_base"]["p"] is not None and stat["ci"] is not None
    # the same per-layer norms as the chosen vector, at the steered layers
    from xlgap.interventions.steering import SteeringVectors

    vec = SteeringVectors.load(out / "vectors.safetensors").vectors[f"{best['direction']}.fr"]
    # one direction over both layers, with the vector's per-layer profile (issue 24: its
    # total push matches, so each layer's norm is the vector's times |v1 + v2| / (|v1| + |v2|))
    norms = vec.norm(dim=-1)[[1, 2]].numpy()
    scale = vec[[1, 2]].sum(0).norm().item() / norms.sum()
    np.testing.assert_allclose(control["norms"]["fr"], norms * scale, rtol=1e-5)
    assert control["layers"] == best["layers"] and control["alpha"] == best["alpha"]
    # ILO and similarity by layer with CIs and chance levels, with and without steering
    for arm in ("baseline", "steered", "control"):
        summary = result["inside"][arm]["summary"]
        assert len(summary["ilo"]) == tiny_backend.n_layers
        for key in ("ilo", "cos_parallel"):
            figure = summary[key][1]
            assert figure["ci"][0] <= figure["estimate"] <= figure["ci"][1]
            assert figure["chance"] is not None
    change = result["inside"]["cos_parallel_change"]["steered"]
    first = change[0]["estimate"]
    assert len(change) == tiny_backend.n_layers and first == pytest.approx(0)


def test_long_prompts_lose_their_start_not_their_answer(tiny_tokenizer):
    prompt = "Q: What is the capital of Japan? " * 6 + "\nA:"
    examples = completion_examples(tiny_tokenizer.encode, [(prompt, " Tokyo")], max_length=16)
    assert len(examples) == 1  # before: dropped (the prompt alone was over the limit)
    ex = examples[0]
    assert len(ex.ids) == 16 and ex.ids[0] == tiny_tokenizer.bos_token_id
    assert tiny_tokenizer.decode(list(ex.ids[ex.start:])).strip() == "Tokyo"
    assert tiny_tokenizer.decode(list(ex.ids[1:])).endswith("\nA: Tokyo")


def test_finetune_compares_every_two_freeze_settings(tmp_path, monkeypatch, tiny_backend):
    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    cached.name = "tiny"
    monkeypatch.setattr(xlgap.cli.workspace, "open_backend", lambda cfg: cached)
    out = tmp_path / "ft"
    assert xlgap.cli.run(["finetune", "--no-progress", "--data", "builtin", "--limit", "20",
                          "--targets", "fr", "--freeze-first", "0,1,2", "--steps", "2",
                          "--train-batch", "2", "--n-boot", "30", "--shots", "1",
                          "--no-eval-trained", "--seeds", "2", "--out", str(out)]) == 0
    result = json.loads((out / "finetune.json").read_text())
    transfer = {(c["a"], c["b"]): c for c in result["comparisons"] if c["metric"] == "transfer"}
    assert set(transfer) == {(0, 1), (0, 2), (1, 2)}
    # settings compare by the mean of their seeds (issue 24)
    after = {s["freeze_first"]: s["pairs_after"]["transfer"]["estimate"]
             for s in result["settings"]}
    for (a, b), c in transfer.items():
        assert c["estimate"] == pytest.approx(after[a] - after[b])
        assert c["ci"][0] <= c["estimate"] <= c["ci"][1] and 0 < c["p"] <= 1
    assert {c["metric"] for c in result["comparisons"]} >= {"transfer", "js", "accuracy.fr"}
    # every training example accounted for: kept + dropped = given
    counts = result["example_counts"]
    assert counts["kept"] + counts["dropped"] == counts["given"] == len(result["split"]["train"])
    assert counts["kept"] == result["examples"] and "prompt_cut" in counts
    assert result["base"]["inside"]["summary"]["ilo"][1]["ci"] is not None

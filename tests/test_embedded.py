"""Integration tests on the embedded model (Gemma 3 270M), converted once per test session."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlgap.models.hf import HFBackend

pytestmark = pytest.mark.slow


def test_embedded_model_knows_a_capital(embedded_backend):
    assert embedded_backend.n_layers == 19  # embeddings + 18 blocks
    scores = embedded_backend.score("The capital of France is", [" Paris", " Berlin", " Rome",
                                                                 " Madrid"])
    assert int(np.argmax(scores)) == 0
    greedy = embedded_backend.generate(["The capital of France is the city of"], n=1,
                                       temperature=0.0, max_new_tokens=3)
    assert "Paris" in greedy[0][0]


def test_embedded_batched_equals_single(embedded_backend):
    prompts = ["The capital of Japan is", "La capitale de l'Italie est", "Столица Германии —",
               "日本の首都は"]
    single = HFBackend(embedded_backend.model, embedded_backend.tokenizer, name="single",
                       batch_size=1, fingerprint="single")
    assert embedded_backend.generate(prompts, n=1, temperature=0.0, max_new_tokens=6) == [
        single.generate([p], n=1, temperature=0.0, max_new_tokens=6)[0] for p in prompts]
    conts = [" Tokyo", " Kyoto", " Osaka"]
    batched = embedded_backend.score_batch([(p, conts) for p in prompts])
    for p, got in zip(prompts, batched, strict=True):
        np.testing.assert_allclose(got, single.score(p, conts), atol=1e-4)
    h_b = embedded_backend.hidden_states(prompts, layers=[0, 9, 18])
    h_s = np.concatenate([single.hidden_states([p], layers=[0, 9, 18]) for p in prompts])
    np.testing.assert_allclose(h_b, h_s, atol=1e-4, rtol=1e-4)


def test_conversion_failure_leaves_no_cache(tmp_path, monkeypatch):
    """An interrupted conversion never leaves a directory that would load wrong."""
    from xlgap.models import embedded, gguf_convert

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-conversion

    # after the weights are written, while the tokenizer is being built
    monkeypatch.setattr(gguf_convert, "_save_tokenizer", boom)
    with pytest.raises(KeyboardInterrupt):
        embedded.ensure_converted(tmp_path)
    assert not embedded.is_converted(tmp_path)
    models_dir = tmp_path / "models"
    assert [p.name for p in models_dir.iterdir() if not p.name.startswith(".convert.lock")] == []


def test_conversion_is_bit_identical_to_the_transformers_loader(tmp_path):
    """The fast conversion gives, tensor for tensor and bit for bit, the weights
    transformers' GGUF loader reads from the same file (its own ``load_gguf_checkpoint``,
    about 20 s here), and the config it derives."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from xlgap.models import embedded

    converted = embedded.ensure_converted()
    pkg = embedded._package()
    gguf = pkg.assemble(tmp_path / "gguf" / pkg.MODEL_NAME)
    config = AutoConfig.from_pretrained(converted)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    reference = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=skeleton)
    derived = reference["config"]
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim",
                "vocab_size", "sliding_window", "rms_norm_eps"):
        if key in derived:
            assert getattr(config, key) == derived[key], key
    tensors = reference["tensors"]
    with safe_open(converted / "model.safetensors", "pt") as ours:
        keys = sorted(ours.keys())
        assert len(keys) == 236
        assert set(keys) <= set(tensors)  # the loader also lists the tied head
        for key in keys:
            a, b = ours.get_tensor(key), tensors[key].to(torch.float32)
            assert a.dtype == torch.float32 and a.shape == b.shape, key
            assert torch.equal(a.view(torch.int32), b.view(torch.int32)), key


def test_demo_main_job_end_to_end(embedded_backend, tmp_path, capsys):
    """`xlgap demo` on a slice of the built-in set, sampled: the three research lines and
    the report, on the real model."""

    from xlgap.cli import main

    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--no-exact", "--limit", "6", "--targets", "fr,ja,ar", "--samples", "3",
              "--strategies", "baseline,tren-1",
              "--n-boot", "100", "--out", str(out), "--store", str(tmp_path / "store")])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "Accuracy per language" in text and "ILO) by layer" in text
    diag = json.loads((out / "run" / "diagnosis.json").read_text())
    assert set(diag["accuracy"]) == {"en", "fr", "ja", "ar"}
    # the mismatch heuristic is read over the candidates only: null when most answers
    # name none (review finding 4), a share otherwise
    mismatch = diag["pi"]["mismatch"]
    if diag["checks"]["mostly_other"]:
        assert mismatch is None
    else:
        assert 0.0 <= mismatch <= 1.0
    rows = (out / "run" / "samples.jsonl").read_text().splitlines()
    assert len(rows) == 6 * 4 * 3
    table = json.loads((out / "intervene" / "interventions.json").read_text())
    assert table["samples"] == 3 and "tren-1" in table["strategies"]
    ilo = json.loads((out / "inside" / "ilo.json").read_text())
    assert len(ilo["layers"]) == 19
    assert (out / "inside" / "similarity.png").exists()
    assert (out / "report.html").stat().st_size > 10_000

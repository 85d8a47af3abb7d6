"""Fine-tuning with frozen early blocks on a tiny random Gemma 3: what is frozen stays
put, batches and learning rates are pure functions of the step, a run killed with SIGKILL
resumes to the same weights as an uninterrupted one, and ``xlgap finetune`` runs end to
end."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import xlgap.cli
import xlgap.cli.workspace
from xlgap.errors import ConfigError
from xlgap.interventions.finetune import (
    CHECKPOINT,
    FINAL,
    TrainSpec,
    batch_indices,
    completion_examples,
    lr_at,
    prepare_model,
    text_examples,
    train,
)
from xlgap.models.cached import CachedBackend
from xlgap.store import Store

TESTS = Path(__file__).resolve().parent
PAIRS = [("The capital of France is", " Paris."), ("La capitale de la France est", " Paris."),
         ("Die Hauptstadt von Frankreich ist", " Paris."), ("one two three", " four five"),
         ("Berlin Madrid", " Rome Lisbon"), ("Q: What is the capital of Japan?\nA:", " Tokyo")]


def test_batches_are_seeded_epochs_and_pure():
    n, b = 7, 3
    seen = [i for step in range(7) for i in batch_indices(step, n, b, seed=1)]
    assert sorted(seen[:7]) == list(range(7)) and sorted(seen[7:14]) == list(range(7))
    assert batch_indices(5, n, b, 1) == batch_indices(5, n, b, 1)
    assert seen[:7] != [i for s in range(3) for i in batch_indices(s, n, b, 2)][:7]


def test_learning_rate_warms_up_then_decays():
    spec = TrainSpec(freeze_first=0, steps=20, lr=1.0, warmup=4)
    rates = [lr_at(s, spec) for s in range(20)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(rates[3:]))
    assert rates[-1] == pytest.approx(1.0 - 0.9 * 15 / 16)


def test_completion_examples_score_only_the_answer(tiny_tokenizer):
    examples = completion_examples(tiny_tokenizer.encode, PAIRS)
    for (prompt, completion), ex in zip(PAIRS, examples, strict=True):
        assert tiny_tokenizer.decode(list(ex.ids), skip_special_tokens=True) == prompt + completion
        scored = tiny_tokenizer.decode(list(ex.ids[ex.start:]))
        assert completion.strip() in scored and len(scored) <= len(completion) + 3
    plain = text_examples(tiny_tokenizer.encode, ["one two three four"])
    assert plain[0].start == 1


@pytest.mark.parametrize("method", ["lora", "full"])
def test_frozen_blocks_and_embeddings_do_not_move(tiny_backend, tiny_tokenizer, tmp_path, method):
    base = tiny_backend.model
    flags = [p.requires_grad for p in base.parameters()]
    spec = TrainSpec(freeze_first=2, steps=3, method=method, batch_size=2, lr=1e-2,
                     checkpoint_every=2)
    trainable, lm = prepare_model(base, spec)
    names = [n for n, p in trainable.named_parameters() if p.requires_grad]
    assert names and all(".layers.2." in n or n.endswith("model.norm.weight") for n in names)
    if method == "lora":
        assert all("lora_" in n for n in names)
    before = {n: p.detach().clone() for n, p in lm.named_parameters()}
    record = train(trainable, lm, completion_examples(tiny_tokenizer.encode, PAIRS), spec, tmp_path,
                   pad_id=tiny_tokenizer.pad_token_id)
    assert record["resumed_from"] == 0 and len(record["losses"]) == 3
    after = dict(lm.named_parameters())
    for name, value in before.items():
        moved = not torch.equal(after[name], value)
        frozen = ".layers.0." in name or ".layers.1." in name or "embed" in name
        if frozen or (method == "lora" and "lora_" not in name):
            assert not moved, name
    assert any(not torch.equal(after[n], before[n]) for n in before
               if ("lora_B" in n if method == "lora" else ".layers.2." in n))
    # the base model itself is never touched
    assert [p.requires_grad for p in base.parameters()] == flags
    with pytest.raises(ConfigError):
        prepare_model(base, TrainSpec(freeze_first=4, steps=1, method=method))


def test_lora_on_tied_embeddings_leaves_the_output_layer_as_trained(tiny_backend,
                                                                   tiny_tokenizer, tmp_path):
    """Gemma ties its output layer to the embeddings. LoRA on the embeddings must not
    reach the output layer when merged: the model evaluated is the model trained."""
    base = tiny_backend.model
    assert base.get_output_embeddings().weight is base.get_input_embeddings().weight
    spec = TrainSpec(freeze_first=3, steps=3, train_embeddings=True, batch_size=2, lr=5e-2)
    trainable, lm = prepare_model(base, spec)
    train(trainable, lm, completion_examples(tiny_tokenizer.encode, PAIRS), spec, tmp_path,
          pad_id=tiny_tokenizer.pad_token_id)
    ids = torch.tensor([list(completion_examples(tiny_tokenizer.encode, PAIRS)[0].ids)])
    with torch.no_grad():
        trained_logits = lm(input_ids=ids).logits
        merged = trainable.merge_and_unload()
        merged_logits = merged(input_ids=ids).logits
    assert not torch.equal(merged.get_input_embeddings().weight,
                           base.get_input_embeddings().weight)  # the embeddings did train
    torch.testing.assert_close(merged.get_output_embeddings().weight,
                               base.get_output_embeddings().weight, rtol=0, atol=0)
    torch.testing.assert_close(merged_logits, trained_logits, rtol=1e-4, atol=1e-4)
    # the base model stays tied and untouched
    assert base.get_output_embeddings().weight is base.get_input_embeddings().weight


_CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from conftest import make_tiny_gemma, make_tokenizer
    from xlgap.interventions.finetune import TrainSpec, completion_examples, prepare_model, train
    tok = make_tokenizer()
    model = make_tiny_gemma(len(tok))
    spec = TrainSpec(**{spec!r})
    trainable, lm = prepare_model(model, spec)

    def die(step):
        if step == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)

    train(trainable, lm, completion_examples(tok.encode, {pairs!r}), spec, {run_dir!r},
          pad_id=tok.pad_token_id, on_step=die)
""")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_killed_run_resumes_to_the_same_weights(tiny_tokenizer, tmp_path, method):
    from conftest import make_tiny_gemma

    spec = TrainSpec(freeze_first=1, steps=7, method=method, batch_size=3, lr=5e-3,
                     checkpoint_every=3, seed=5, warmup=2)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    script = _CHILD.format(tests=str(TESTS), spec=spec.as_dict(), kill_at=5, pairs=PAIRS,
                           run_dir=str(killed))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL, after the step-3 checkpoint
    assert (killed / CHECKPOINT).exists() and not (killed / FINAL).exists()
    examples = completion_examples(tiny_tokenizer.encode, PAIRS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the child: the same kernels, the same sums
    try:
        resumed_model = prepare_model(make_tiny_gemma(len(tiny_tokenizer)), spec)
        resumed = train(*resumed_model, examples, spec, killed, pad_id=tiny_tokenizer.pad_token_id)
        whole_model = prepare_model(make_tiny_gemma(len(tiny_tokenizer)), spec)
        whole = train(*whole_model, examples, spec, clean, pad_id=tiny_tokenizer.pad_token_id)
    finally:
        torch.set_num_threads(threads)
    assert resumed["resumed_from"] == 3 and whole["resumed_from"] == 0
    assert resumed["losses"] == whole["losses"]
    a, b = load_file(str(killed / FINAL)), load_file(str(clean / FINAL))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["weights_sha"] == whole["weights_sha"]
    assert not (killed / CHECKPOINT).exists()
    # a finished run is reloaded, not retrained; other options are refused
    again = train(*prepare_model(make_tiny_gemma(len(tiny_tokenizer)), spec), examples, spec,
                  clean, pad_id=tiny_tokenizer.pad_token_id)
    assert again["reloaded"] and again["weights_sha"] == whole["weights_sha"]
    other = TrainSpec(**{**spec.as_dict(), "lr": 1e-3})
    with pytest.raises(ConfigError, match="other options"):
        train(*prepare_model(make_tiny_gemma(len(tiny_tokenizer)), other), examples, other,
              clean, pad_id=tiny_tokenizer.pad_token_id)


def test_finetune_command_end_to_end(tmp_path, monkeypatch, tiny_backend):

    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    cached.name = "tiny"
    monkeypatch.setattr(xlgap.cli.workspace, "open_backend", lambda cfg: cached)
    out = tmp_path / "ft"
    fingerprint = tiny_backend.fingerprint
    flags = [p.requires_grad for p in tiny_backend.model.parameters()]
    args = ["finetune", "--no-progress", "--data", "builtin", "--limit", "24", "--targets",
            "fr,de", "--lang", "fr", "--freeze-first", "0,2", "--steps", "4", "--train-batch",
            "2", "--checkpoint-every", "2", "--n-boot", "50", "--shots", "1", "--out", str(out)]
    assert xlgap.cli.run(args) == 0
    result = json.loads((out / "finetune.json").read_text())
    assert [r["freeze_first"] for r in result["runs"]] == [0, 2]
    assert not set(result["split"]["train"]) & set(result["split"]["test"])
    for run in result["runs"]:
        assert len(run["ilo_before"]) == len(run["ilo_after"]) == tiny_backend.n_layers
        assert run["transfer_before"]["all"]["ci"][0] is not None
        assert set(run["transfer_after"]["per_target"]) == {"fr", "de"}
        assert 0 < run["transfer_after"]["p_value"]["all"] <= 1
        assert set(run["accuracy_after"]) == {"en", "fr", "de"}
        assert "trained_items" in run
        assert (out / f"freeze-{run['freeze_first']}" / FINAL).exists()
    assert result["runs"][0]["train"]["trainable_params"] > result["runs"][1]["train"][
        "trainable_params"]
    for name in ("finetune_ilo.png", "finetune_transfer.png"):
        assert (out / name).stat().st_size > 0
    for name in ("finetune_ilo.png", "finetune_transfer.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert result["format"] == "finetune" and "js" in result["runs"][0]["pairs_after"]["all"]
    # the base model is untouched: same weights, same fingerprint, no modifiers
    assert tiny_backend.fingerprint == fingerprint and tiny_backend.modifiers == []
    assert [p.requires_grad for p in tiny_backend.model.parameters()] == flags
    # a rerun reloads the finished fine-tunes and computes no score again
    computed = cached.computed
    assert xlgap.cli.run(args) == 0
    assert cached.computed == computed

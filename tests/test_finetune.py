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
            "2", "--checkpoint-every", "2", "--n-boot", "50", "--shots", "1", "--seeds", "1",
            "--out", str(out)]
    assert xlgap.cli.run(args) == 0
    result = json.loads((out / "finetune.json").read_text())
    assert [r["freeze_first"] for r in result["runs"]] == [0, 2]
    assert not set(result["split"]["train"]) & set(result["split"]["test"])
    for run in result["runs"]:
        assert len(run["ilo_before"]) == len(run["ilo_after"]) == tiny_backend.n_layers
        assert run["transfer_before"]["all"]["ci"][0] is not None
        assert set(run["transfer_after"]["per_target"]) == {"fr", "de"}
        assert 0 < run["transfer_after"]["all"]["vs_base"]["p"] <= 1
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


# -- issue 24, point 4 and the report's ILO column ----------------------------------------------
# Failing first on fab4fcd: test_finetune_table_prints_the_ilo_before_and_after (the column
# printed "- -> -" for the by-layer lists), test_run_finetune_trains_every_setting_with_
# several_seeds (one run per setting, no ``seeds``), test_transfer_on_the_base_model_s_
# source_correct_items_keeps_its_denominator and test_headline_p_is_holm_adjusted_over_
# the_settings (neither existed).


def test_finetune_table_prints_the_ilo_before_and_after():
    from xlgap.report.sections.finetune import finetune_table

    run = {"freeze_first": 0, "loss_first": 2.0, "loss_last": 1.0,
           "transfer_before": {"all": {"estimate": 0.5, "ci": [0.4, 0.6]}},
           "transfer_after": {"all": {"estimate": 0.6, "ci": [0.5, 0.7], "vs_base": {
               "estimate": 0.1, "ci": [0.0, 0.2], "n": 10, "p": 0.04, "p_floor": 0.01}}},
           "ilo_before": [0.1, 0.2, 0.6], "ilo_after": [0.2, 0.3, 0.7]}
    table = finetune_table({"runs": [run]})[0]
    ilo = table.rows[0][-1].text
    assert ilo != "- -> -"
    assert ilo == "0.300 -> 0.400"  # the mean over layers, before -> after


def test_transfer_on_the_base_model_s_source_correct_items_keeps_its_denominator():
    import numpy as np

    from xlgap.interventions.finetune.seeds import fixed_transfer_parts
    from xlgap.stats.metrics import transfer_parts

    def onehot(idx):  # (Q, M + 1) exact distributions with the mode at idx
        p = np.zeros((len(idx), 3))
        p[np.arange(len(idx)), idx] = 1.0
        return p

    gold = np.zeros(4, dtype=int)
    base = {"en": onehot([0, 0, 0, 0]), "fr": onehot([1, 1, 1, 1])}
    # after: the source is right on item 0 only, the target on items 0 and 1
    after = {"en": onehot([0, 1, 1, 1]), "fr": onehot([0, 0, 1, 1])}
    num, den = transfer_parts(after["en"], after["fr"], gold)
    assert num.sum() / den.sum() == 1.0  # 1 of 1: the denominator shrank
    fixed = fixed_transfer_parts(base, after, gold, "en", ["fr"])
    assert fixed.num.sum() / fixed.den.sum() == 0.5  # 2 of the base's 4
    # on the base model itself it is transfer
    same = fixed_transfer_parts(base, base, gold, "en", ["fr"])
    ref_num, ref_den = transfer_parts(base["en"], base["fr"], gold)
    np.testing.assert_array_equal(same.num[:, 0], ref_num)
    np.testing.assert_array_equal(same.den[:, 0], ref_den)


def test_headline_p_is_holm_adjusted_over_the_settings():
    from xlgap.interventions.finetune.seeds import FIXED, headline

    def setting(n, diff, p):
        return {"freeze_first": n, "pairs_after": {
            FIXED: {"estimate": 0.6, "n": 10, "vs_base": {
                "estimate": diff, "ci": [0, 1], "n": 10, "p": p, "p_floor": 0.001}},
            "overall_success": {"vs_base": {"estimate": 0.01, "p": 0.5}}}}

    head = headline([setting(0, 0.10, 0.01), setting(9, 0.05, 0.04)])
    assert head["freeze_first"] == 0 and head["p"] == 0.01
    assert head["p_holm"] == pytest.approx(0.02) and head["family"] == 2
    assert "Holm" in head["p_holm_label"] and head["overall_success"]["estimate"] == 0.01
    assert headline([setting(0, None, None)]) is None


def test_run_finetune_trains_every_setting_with_several_seeds(tiny_backend, tmp_path):
    from xlgap.data import load_dataset
    from xlgap.interventions.finetune import FinetuneOptions, run_finetune

    data = load_dataset(None).subset(20, ["en", "fr"])
    options = FinetuneOptions(source="en", targets=["fr"], freeze_first=[0, 2], steps=2,
                              train_batch=2, shots=1, n_boot=30, n_shuffles=0,
                              eval_trained=False, seeds=3)
    result = run_finetune(tiny_backend, data, options, work_dir=tmp_path / "ft")
    assert result.seeds == [0, 1, 2]
    assert [(r["freeze_first"], r["seed"]) for r in result.runs] == [
        (n, s) for n in (0, 2) for s in (0, 1, 2)]
    assert (tmp_path / "ft" / "freeze-2-seed-1" / FINAL).exists()
    # different seeds train different weights
    digests = {r["train"]["final_digest"] if "final_digest" in r["train"] else
               r["loss_last"] for r in result.runs if r["freeze_first"] == 0}
    assert len(digests) > 1
    for setting in result.settings:
        runs = [r for r in result.runs if r["freeze_first"] == setting["freeze_first"]]
        fixed = setting["pairs_after"]["transfer_base_items"]
        # the spread lists each seed's own estimate, as its run reports it
        assert fixed["seed_spread"]["values"] == pytest.approx(
            [r["transfer_base_items"]["estimate"] for r in runs])
        assert fixed["ci"][0] <= fixed["estimate"] <= fixed["ci"][1]
        assert 0 < fixed["vs_base"]["p"] <= 1 and "overall_success" in setting["pairs_after"]
        # one estimate shape: the paired test only under vs_base, its p keyed p
        assert not {"p", "p_value", "difference", "difference_ci"} & set(fixed)
        assert set(fixed["vs_base"]) == {"estimate", "ci", "n", "p", "p_floor"}
        assert fixed["vs_base"]["n"] > 0
        # paired ILO change per layer: its seed mean is the mean of the runs' changes
        assert setting["ilo_change"][1]["estimate"] == pytest.approx(
            sum(r["ilo_change"][1]["estimate"] for r in runs) / 3)
        assert setting["ilo_change"][0]["estimate"] == 0  # nothing moves the input layer
    assert result.headline is not None and result.headline["family"] == 2
    assert result.headline["p_holm"] >= result.headline["p"]
    between = {c["metric"]: c for c in result.comparisons}
    assert {"transfer", "transfer_base_items", "ilo_by_layer", "cos_parallel_by_layer"} <= set(
        between)
    assert len(between["ilo_by_layer"]["by_layer"]) == tiny_backend.n_layers

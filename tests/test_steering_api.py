"""The Python API of steering and fine-tuning: vectors trained and applied as a context
manager (hooks gone afterwards, also after an exception), and run_steering / run_finetune
results that save, reload and turn into DataFrames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlgap.data import load_dataset
from xlgap.interventions.finetune import (
    FinetuneOptions,
    FinetuneResult,
    prepare_completions,
    run_finetune,
)
from xlgap.interventions.steering import (
    SteeringResult,
    SteeringVectors,
    SteerOptions,
    run_steering,
    train_steering_vectors,
)
from xlgap.models.cached import CachedBackend
from xlgap.store import Store

TEXTS = ["The capital of France is Paris.", "one two three"]


def hooks(backend) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
               for m in backend.model.modules())


@pytest.fixture(scope="module")
def data():
    return load_dataset(None).subset(25, ["en", "fr", "de"])


def test_train_vectors_then_apply_as_a_context_manager(tiny_backend, data, tmp_path):
    vectors = train_steering_vectors(tiny_backend, data, "en", ["fr", "de"], pooling="mean")
    assert vectors.targets == ["de", "fr"] and vectors.meta["item_ids"] == [
        it.id for it in data.items]
    assert vectors.vectors["shared.fr"].shape == (tiny_backend.n_layers, 64)
    tiny_backend.hidden_states(TEXTS[:1], pooling="last")  # transformers' own hooks first
    base_hooks, base_fp = hooks(tiny_backend), tiny_backend.fingerprint
    plain = tiny_backend.hidden_states(TEXTS, pooling="mean")
    with vectors.apply(tiny_backend, layers=[1], alpha=1.0, target="fr") as handle:
        assert hooks(tiny_backend) == base_hooks + 1 and handle.active
        assert tiny_backend.fingerprint != base_fp
        steered = tiny_backend.hidden_states(TEXTS, pooling="mean")
    np.testing.assert_allclose(steered[:, 1] - plain[:, 1],
                               np.broadcast_to(vectors.vectors["shared.fr"][1].numpy(),
                                               plain[:, 1].shape), atol=1e-4)
    assert hooks(tiny_backend) == base_hooks and tiny_backend.fingerprint == base_fp
    with pytest.raises(RuntimeError, match="inside"), \
            vectors.apply(tiny_backend, layers="0+2", alpha=2.0, target="source.de"):
        assert hooks(tiny_backend) == base_hooks + 2
        raise RuntimeError("inside")
    assert hooks(tiny_backend) == base_hooks and tiny_backend.modifiers == []
    # saved and loaded, the same vectors steer the same way
    back = SteeringVectors.load(vectors.save(tmp_path / "v.safetensors"))
    with back.apply(tiny_backend, layers=[1], alpha=1.0, target="fr"):
        again = tiny_backend.hidden_states(TEXTS, pooling="mean")
    np.testing.assert_allclose(again, steered, atol=1e-5)


def test_run_steering_result_saves_loads_and_makes_a_frame(tiny_backend, data, tmp_path,
                                                           monkeypatch):
    import xlgap.provenance

    monkeypatch.setattr(xlgap.provenance, "_command", None)  # no CLI run in this process
    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    cached.name = "tiny"
    options = SteerOptions(source="en", targets=["fr", "de"], layers=[1, (1, 2)],
                           alphas=[1.0], shots=1, n_boot=30, n_shuffles=2)
    result = run_steering(cached, data, options)
    assert isinstance(result, SteeringResult) and len(result.sweep) == 2
    assert {"js", "transfer", "accuracy", "rankc"} <= set(result.best["test"]["all"])
    assert set(result.control["test"]["all"]) == set(result.best["test"]["all"])
    path = result.save(tmp_path / "out")
    assert path.name == "steering.json" and (tmp_path / "out" / "vectors.safetensors").exists()
    raw = json.loads(path.read_text())
    assert raw["format"] == "steering" and raw["format_version"] == 1
    assert raw["provenance"]["command"] is None  # a library call, not a command line
    loaded = SteeringResult.load(tmp_path / "out")
    assert loaded.best == json.loads(json.dumps(raw["best"]))
    assert loaded.steering_vectors.meta["best"]["layers"] == result.best["layers"]
    frame = loaded.to_frame()
    assert set(frame["arm"]) == {"no steering", "best", "control"}
    assert set(frame["target"]) == {"all", "fr", "de"}
    row = frame[(frame.arm == "best") & (frame.target == "all") & (frame.metric == "js")]
    assert len(row) == 1 and row.iloc[0]["estimate"] == pytest.approx(
        result.best["test"]["all"]["js"]["estimate"])
    assert frame[frame.arm == "no steering"]["p"].isna().all()
    assert tiny_backend.modifiers == []


def test_run_finetune_result_saves_loads_and_makes_a_frame(tiny_backend, data, tmp_path):
    options = FinetuneOptions(source="en", targets=["fr"], lang="fr", freeze_first=[0, 2],
                              steps=2, train_batch=2, shots=1, n_boot=30, n_shuffles=2,
                              eval_trained=False, seeds=1)
    result = run_finetune(tiny_backend, data, options, work_dir=tmp_path / "ft")
    assert isinstance(result, FinetuneResult) and [r["freeze_first"] for r in result.runs] == [
        0, 2]
    assert {c["metric"] for c in result.comparisons} >= {"transfer", "js", "accuracy.fr"}
    assert (tmp_path / "ft" / "freeze-2" / "final.safetensors").exists()
    path = result.save(tmp_path / "ft")
    raw = json.loads(path.read_text())
    assert raw["format"] == "finetune" and raw["comparisons"]
    loaded = FinetuneResult.load(path)
    assert loaded.runs[1]["pairs_after"]["all"]["js"]["estimate"] == pytest.approx(
        result.runs[1]["pairs_after"]["all"]["js"]["estimate"])
    frame = loaded.to_frame()
    assert set(frame["model"]) == {"base", "N=0", "N=2"}
    assert {"accuracy", "transfer", "js"} <= set(frame["metric"])
    assert frame[frame.model == "base"]["p"].isna().all()
    assert frame[frame.model == "N=2"]["p"].notna().any()
    assert tiny_backend.modifiers == []


def test_training_examples_are_counted_when_cut_or_dropped(tiny_tokenizer):
    long_prompt = "Berlin Madrid Rome Lisbon Vienna " * 5
    pairs = [("The capital of France is", " Paris."),  # fits
             (long_prompt, " Tokyo"),  # prompt cut from the left
             ("one", " two three four five six seven eight nine ten" * 3)]  # answer too long
    examples, counts = prepare_completions(tiny_tokenizer.encode, pairs, max_length=16)
    assert counts == {"given": 3, "kept": 2, "prompt_cut": 1, "dropped": 1}
    assert all(len(ex.ids) <= 16 for ex in examples)
    assert tiny_tokenizer.decode(list(examples[1].ids[examples[1].start:])).strip() == "Tokyo"

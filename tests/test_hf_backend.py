"""The HF backend on a tiny random Gemma 3: batching must not change any result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xlgap.models.hf import HFBackend

PROMPTS = ["The capital of France is", "Q: What is the capital of Japan?\nA:",
           "フランスの首都は", "one two", "Die Hauptstadt von Frankreich ist Paris. Berlin"]


def one_at_a_time(backend: HFBackend) -> HFBackend:
    return HFBackend(backend.model, backend.tokenizer, name=backend.name, batch_size=1,
                     fingerprint=backend.fingerprint)


def test_greedy_generation_batched_equals_single(tiny_backend):
    single = one_at_a_time(tiny_backend)
    batched = tiny_backend.generate(PROMPTS, n=1, temperature=0.0, max_new_tokens=8, stop=())
    alone = [single.generate([p], n=1, temperature=0.0, max_new_tokens=8, stop=())[0]
             for p in PROMPTS]
    assert batched == alone
    # and equal to transformers' own greedy decoding, token for token
    tok = tiny_backend.tokenizer
    for prompt, got in zip(PROMPTS, batched, strict=True):
        ids = tok(prompt, return_tensors="pt")
        ref = tiny_backend.model.generate(**ids, max_new_tokens=8, do_sample=False,
                                          pad_token_id=tok.pad_token_id, eos_token_id=1)
        text = tok.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert got[0] == text


def test_scores_batched_equal_single_and_naive(tiny_backend):
    requests = [("The capital of France is", [" Paris", " Berlin.", " Rome and more"]),
                ("Столица Франции —", [" Париж", " Берлин"]),
                ("one", [" two three four five", " six"])]
    single = one_at_a_time(tiny_backend)
    batched = tiny_backend.score_batch(requests)
    for (prompt, conts), got in zip(requests, batched, strict=True):
        alone = single.score(prompt, conts)
        np.testing.assert_allclose(got, alone, atol=1e-4)
        # naive reference: full forward over prompt + continuation, sum token log-probs
        tok = tiny_backend.tokenizer
        for cont, value in zip(conts, got, strict=True):
            p_ids = tok(prompt)["input_ids"]
            c_ids = tok(cont, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + c_ids])
            with torch.no_grad():
                logp = torch.log_softmax(tiny_backend.model(ids).logits[0].float(), -1)
            ref = sum(float(logp[len(p_ids) - 1 + t, c]) for t, c in enumerate(c_ids))
            assert value == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "mean_no_bos", "last"])
def test_hidden_states_batched_equal_single(tiny_backend, pooling):
    single = one_at_a_time(tiny_backend)
    batched = tiny_backend.hidden_states(PROMPTS, pooling=pooling)
    assert batched.shape == (len(PROMPTS), tiny_backend.n_layers, 64)
    for i, text in enumerate(PROMPTS):
        np.testing.assert_allclose(batched[i], single.hidden_states([text], pooling=pooling)[0],
                                   atol=1e-4)
    # naive reference for the mean over tokens of the last layer
    ids = tiny_backend.tokenizer(PROMPTS[1], return_tensors="pt")
    with torch.no_grad():
        hs = tiny_backend.model.base_model(**ids, output_hidden_states=True).hidden_states
    tokens = hs[1][0]
    expected = {"mean": tokens.mean(0), "mean_no_bos": tokens[1:].mean(0), "last": tokens[-1]}
    np.testing.assert_allclose(batched[1, 1], expected[pooling].numpy(), atol=1e-4)


def test_sampling_reproducible_and_independent_of_batch(tiny_backend):
    a = tiny_backend.generate(PROMPTS, n=6, temperature=1.0, max_new_tokens=6, seed=7, stop=())
    b = one_at_a_time(tiny_backend).generate(PROMPTS[2:3], n=6, temperature=1.0,
                                             max_new_tokens=6, seed=7, stop=())
    c = tiny_backend.generate(PROMPTS, n=6, temperature=1.0, max_new_tokens=6, seed=8, stop=())
    assert all(len(x) == 6 for x in a)
    assert a[2] == b[0]
    assert a != c
    assert len({s for x in a for s in x}) > len(PROMPTS)  # it really samples


def test_sampling_follows_the_model_distribution(tiny_backend):
    """First-token frequencies of many samples match the exact next-token distribution."""
    prompt = "one two"
    samples = tiny_backend.generate([prompt], n=400, temperature=1.0, max_new_tokens=1,
                                    seed=3, stop=())[0]
    tok = tiny_backend.tokenizer
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(tiny_backend.model(**ids).logits[0, -1].float(), -1)
    top = int(probs.argmax())
    freq = np.mean([s == tok.decode([top]) for s in samples])
    assert abs(freq - float(probs[top])) < 0.08


def test_stop_strings_cut_output(tiny_backend):
    outs = tiny_backend.generate(PROMPTS, n=3, temperature=1.0, max_new_tokens=12, seed=1,
                                 stop=("e",))
    assert all("e" not in s for x in outs for s in x)


def test_logit_lens_last_layer_equals_model_output(tiny_backend):
    tok = tiny_backend.tokenizer
    wanted = [[5, 9, 17], [3], [40, 41]]
    logps, ranks = tiny_backend.layer_logits(PROMPTS[:3], wanted)
    assert logps.shape == (3, tiny_backend.n_layers, 3)
    assert np.isnan(logps[1, :, 1:]).all()
    for i, prompt in enumerate(PROMPTS[:3]):
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            ref = torch.log_softmax(tiny_backend.model(**ids).logits[0, -1].float(), -1)
        np.testing.assert_allclose(logps[i, -1, :len(wanted[i])], ref[wanted[i]].numpy(),
                                   atol=1e-4)
        order = torch.argsort(ref, descending=True).tolist()
        assert [int(r) for r in ranks[i, -1, :len(wanted[i])]] == [order.index(t)
                                                                    for t in wanted[i]]
    # earlier layers give other distributions
    assert not np.allclose(logps[:, 0, 0], logps[:, -1, 0])


def test_samples_do_not_depend_on_batch_size_when_rows_finish_early(tiny_backend):
    """With a stop string rows finish at different steps and are dropped from the batch;
    a prompt's samples must still be the same however prompts are batched."""
    kwargs = {"n": 8, "temperature": 1.0, "max_new_tokens": 10, "seed": 5, "stop": ("e", "a")}
    together = tiny_backend.generate(PROMPTS, **kwargs)
    alone = [one_at_a_time(tiny_backend).generate([p], **kwargs)[0] for p in PROMPTS]
    assert together == alone
    lengths = {len(s) for x in together for s in x}
    assert len(lengths) > 2  # rows really finished at different steps


def test_a_registered_backend_gets_only_the_options_it_takes(monkeypatch, request) -> None:
    import xlgap.models
    from conftest import own_registry
    from xlgap.models import load_backend, register_backend

    seen = {}

    def narrow(name: str, *, device: str = "cpu"):
        seen.update(name=name, device=device)
        return "narrow"

    def wide(name: str, **options):
        seen.update(options)
        return "wide"

    own_registry(request, xlgap.models.BACKENDS)
    monkeypatch.setitem(__import__("sys").modules, "plugin_for_test", type(
        "M", (), {"narrow": staticmethod(narrow), "wide": staticmethod(wide)}))
    register_backend("narrow", "plugin_for_test:narrow")
    register_backend("wide", "plugin_for_test:wide")
    assert load_backend("narrow:x", device="cuda", is_chat=True, batch_size=4) == "narrow"
    assert seen == {"name": "x", "device": "cuda"}
    assert load_backend("wide:y", is_chat=True) == "wide" and seen["is_chat"] is True


def test_the_white_box_protocol_is_what_the_hf_backend_and_its_store_offer(tiny_backend,
                                                                          tmp_path):
    """``WhiteBox`` is declared, not guessed: the HF backend and the result store around it
    have it, a black-box backend does not, and the steering/lens entry points say so."""
    from fake_backend import FakeBackend
    from xlgap.errors import ModelError
    from xlgap.models.base import WhiteBox
    from xlgap.models.cached import CachedBackend
    from xlgap.models.layers import white_box
    from xlgap.store import Store

    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    assert isinstance(tiny_backend, WhiteBox) and isinstance(cached, WhiteBox)
    assert white_box(cached) is tiny_backend
    black = FakeBackend()
    assert not isinstance(black, WhiteBox)
    with pytest.raises(ModelError, match="white-box"):
        white_box(black)

"""Float32 linears through oneDNN's packed kernels: the same products as ``F.linear``, the
modules put back whatever happens, packed copies remade when a weight changes, and the
fused head on packed pieces drawing from and scoring with the exact softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xlgap.models import onednn, sampler
from xlgap.models.hf import HFBackend

pytestmark = pytest.mark.skipif(not onednn.available(), reason="PyTorch has no oneDNN here")


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 rounding of a sum of products (not to a lower precision)."""
    return bool(torch.allclose(a, b, rtol=1e-5, atol=1e-5))


@pytest.mark.parametrize(("out_f", "rows_shape"), [(96, (7,)), (40000, (5,)), (96, (3, 4))])
def test_packed_linear_equals_f_linear(out_f, rows_shape):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(out_f, 48, generator=gen)
    bias = torch.randn(out_f, generator=gen)
    x = torch.randn(*rows_shape, 48, generator=gen)
    packs = onednn.PackedWeights()
    assert close(packs.linear(x, weight), torch.nn.functional.linear(x, weight))
    assert close(packs.linear(x, weight, bias), torch.nn.functional.linear(x, weight, bias))
    # a wide weight is packed in pieces of PIECE rows, the last one shorter
    assert len(packs.pieces(weight)) == (-(-out_f // onednn.PIECE) if out_f > onednn.WIDE
                                         else 1)
    # and it is not a lower precision: bfloat16 inputs would miss this tolerance
    low = torch.nn.functional.linear(x.bfloat16(), weight.bfloat16()).float()
    assert not close(low, torch.nn.functional.linear(x, weight))


def test_a_changed_weight_is_packed_again():
    weight = torch.randn(32, 16)
    x = torch.randn(4, 16)
    packs = onednn.PackedWeights()
    first = packs.pieces(weight)
    assert packs.pieces(weight) is first  # reused while unchanged
    with torch.no_grad():
        weight.mul_(2.0)  # in place: same storage, new version
    assert packs.pieces(weight) is not first
    assert close(packs.linear(x, weight), x @ weight.T)


def _linear_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(),
                               torch.nn.Linear(32, 8, bias=False))


def test_the_context_switches_the_linears_and_always_puts_them_back():
    model = _linear_model()
    x = torch.randn(5, 16)
    with torch.inference_mode():
        ref = model(x)
    packs = onednn.PackedWeights()
    calls = []
    original = onednn.run_piece
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onednn, "run_piece", lambda *a: calls.append(1) or original(*a))
        with torch.inference_mode(), onednn.packed_linears(model, packs) as switched:
            assert switched and all("forward" in m.__dict__ for m in (model[0], model[2]))
            assert close(model(x), ref)
    assert len(calls) == 2  # both linears ran through the packed kernel
    assert all("forward" not in m.__dict__ for m in model.modules())
    with pytest.raises(KeyError), onednn.packed_linears(model, packs):
        raise KeyError("boom")
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_with_autograd_the_plain_linear_runs():
    model = _linear_model()
    x = torch.randn(5, 16)
    with onednn.packed_linears(model, onednn.PackedWeights()) as switched:
        assert switched
        model(x).sum().backward()  # the packed kernel has no backward: not used here
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_xlgap_onednn_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("XLGAP_ONEDNN", "0")
    model = _linear_model()
    with onednn.packed_linears(model, onednn.PackedWeights()) as switched:
        assert not switched and "forward" not in model[0].__dict__


@pytest.fixture(scope="module")
def wide_head() -> tuple[torch.Tensor, torch.Tensor]:
    """5000 words: two whole pieces and a short one."""
    gen = torch.Generator().manual_seed(3)
    return torch.randn(4, 24, generator=gen), torch.randn(5000, 24, generator=gen) * 0.5


def test_packed_head_draws_from_the_softmax(wide_head):
    from test_sampler import chi_square_p

    hidden, weight = wide_head
    pieces = onednn.PackedWeights().pieces(weight, onednn.PIECE)
    assert len(pieces) == 3
    n = 40000
    u = sampler.step_uniforms(sampler.stream_keys(2, [1], n), 0)
    rows = torch.zeros(n, dtype=torch.long)
    tokens = sampler.head_sample(hidden[:1], weight, u, 0.9, rows=rows, packed=pieces).numpy()
    probs = torch.softmax((hidden[0] @ weight.T).double() / 0.9, -1).numpy()
    counts = np.bincount(tokens, minlength=len(probs))
    assert chi_square_p(counts, probs) > 1e-4
    wrong = torch.softmax((hidden[0] @ weight.T).double() / 1.1, -1).numpy()
    assert chi_square_p(counts, wrong) < 1e-6
    # greedy: the full argmax
    best = sampler.head_sample(hidden, weight, u[:4], 0.0, packed=pieces)
    assert best.tolist() == (hidden @ weight.T).argmax(-1).tolist()


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_packed_head_log_probs_equal_the_log_softmax(wide_head, softcap):
    hidden, weight = wide_head
    packs = onednn.PackedWeights()
    assert len(packs.pieces(weight)) == 1  # narrower than WIDE: one piece, as linear() has
    rows = torch.tensor([0, 2, 2, 3, 1])
    tokens = torch.tensor([0, 4999, 17, 2048, 4095])
    logits = (hidden.double() @ weight.double().T)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    ref = torch.log_softmax(logits, -1)[rows, tokens]
    for packed in (packs.pieces(weight, onednn.PIECE), packs.pieces(weight), None):
        got = sampler.head_log_probs(hidden, weight, tokens, rows, softcap, packed)
        assert torch.allclose(got, ref, atol=1e-5), (packed is None, got, ref)


def test_backend_answers_and_scores_are_the_same_with_and_without_onednn(
        tiny_backend, monkeypatch):
    prompts = ["The capital of France is", "one two three"]
    conts = [" Paris", " Berlin", " four five"]
    fast_greedy = tiny_backend.generate(prompts, n=2, temperature=0.0, max_new_tokens=6)
    assert tiny_backend._packs._packs  # the packed path really ran
    fast_scores = tiny_backend.score_batch([(p, conts) for p in prompts])
    fast_states = tiny_backend.hidden_states(prompts, layers=[0, 2])
    monkeypatch.setenv("XLGAP_ONEDNN", "0")
    plain = HFBackend(tiny_backend.model, tiny_backend.tokenizer, name="tiny-plain")
    assert plain.generate(prompts, n=2, temperature=0.0, max_new_tokens=6) == fast_greedy
    np.testing.assert_allclose(plain.score_batch([(p, conts) for p in prompts]), fast_scores,
                               atol=1e-4)
    np.testing.assert_allclose(plain.hidden_states(prompts, layers=[0, 2]), fast_states,
                               atol=1e-4, rtol=1e-4)
    assert all("forward" not in m.__dict__ for m in tiny_backend.model.modules())


def test_copies_are_made_only_when_they_fit_in_memory(monkeypatch):
    model = _linear_model()
    weight_bytes = sum(m.weight.numel() * 4 for m in (model[0], model[2]))
    packs = onednn.PackedWeights()
    monkeypatch.setattr(onednn, "_available_bytes", lambda: weight_bytes)  # half would not do
    with onednn.packed_linears(model, packs) as switched:
        assert not switched and "forward" not in model[0].__dict__
    monkeypatch.setattr(onednn, "_available_bytes", lambda: 2 * weight_bytes)
    with torch.inference_mode(), onednn.packed_linears(model, packs) as switched:
        assert switched
        model(torch.randn(2, 16))  # packs both weights
    # copies already made count no more: the context keeps using them
    monkeypatch.setattr(onednn, "_available_bytes", lambda: 0)
    assert packs.has(model[0].weight) and onednn.fits(model, packs)


def test_a_model_with_nothing_to_pack_runs_as_before(tiny_tokenizer):
    """A bfloat16 model has no float32 linear: nothing is switched, the head is not packed
    (packing a bfloat16 or GPU weight would fail), and sampling works."""
    from conftest import make_tiny_gemma

    model = make_tiny_gemma(len(tiny_tokenizer), dtype=torch.bfloat16)
    backend = HFBackend(model, tiny_tokenizer, name="tiny-bf16")
    with onednn.packed_linears(model, backend._packs) as switched:
        assert not switched
    out = backend.generate(["one two"], n=3, temperature=1.0, max_new_tokens=4)
    assert len(out[0]) == 3 and backend._packs._packs == {}


def test_nested_contexts_leave_the_outer_one_in_charge():
    model = _linear_model()
    packs = onednn.PackedWeights()
    with torch.inference_mode(), onednn.packed_linears(model, packs) as outer:
        with onednn.packed_linears(model, packs) as inner:
            assert outer and inner
        assert "forward" in model[0].__dict__  # the inner exit did not unpatch
    assert "forward" not in model[0].__dict__


def test_inference_tensor_weights_are_not_packed():
    """Weights made under inference mode have no version counter to see changes by."""
    with torch.inference_mode():
        model = _linear_model()
        x = torch.randn(3, 16)
        with onednn.packed_linears(model, onednn.PackedWeights()) as switched:
            assert not switched
            assert model(x).shape == (3, 8)

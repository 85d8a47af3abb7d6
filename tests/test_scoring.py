"""Candidate scoring tokenizes prompt and continuation jointly (issue: scoring what the model
would write), checked against a naive full forward pass over the joint tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xlgap.models.hf import HFBackend


def naive_joint_logprob(backend: HFBackend, prompt: str, conts: list[str]) -> list[float]:
    """Reference: one unbatched forward per candidate over ``prompt + cont``'s own tokens,
    summing log p of every token after the prefix that all candidates and the prompt share."""
    p_ids = backend.encode(prompt)
    joint = [backend.encode(prompt + c) for c in conts]
    cut = min(next((i for i, (a, b) in enumerate(zip(p_ids, j, strict=False)) if a != b),
                   min(len(p_ids), len(j))) for j in joint)
    out = []
    for ids in joint:
        with torch.no_grad():
            logits = backend.model(torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        out.append(float(sum(logp[t - 1, ids[t]] for t in range(cut, len(ids)))))
    return out


def straddling_split(backend: HFBackend, text: str) -> int | None:
    """A character position where a token of ``text`` straddles prompt/continuation."""
    whole = backend.encode(text)
    for cut in range(2, len(text) - 1):
        head = backend.encode(text[:cut])
        if whole[:len(head)] != head:
            return cut
    return None


@pytest.mark.parametrize("text", ["フランスの首都はパリです。", "法国的首都是巴黎。",
                                  "The capital of France is Paris."])
def test_straddling_token_is_scored_jointly(tiny_backend, text):
    cut = straddling_split(tiny_backend, text)
    assert cut is not None, "the tiny tokenizer merges across every split point"
    prompt, gold = text[:cut], text[cut:]
    conts = [gold, gold[::-1], "x" + gold]
    got = tiny_backend.score(prompt, conts)
    want = naive_joint_logprob(tiny_backend, prompt, conts)
    np.testing.assert_allclose(got, want, atol=1e-4)
    # Appending the separately tokenized continuation (the old way) scores other tokens.
    sep = [tiny_backend.encode(c, add_special_tokens=False) for c in conts]
    p_ids = tiny_backend.encode(prompt)
    assert p_ids + sep[0] != tiny_backend.encode(text)


def test_normalisation_divides_by_tokens_and_bytes(tiny_backend):
    prompt, conts = "The capital of France is", [" Paris.", " Berlin Madrid Rome"]
    total = tiny_backend.score(prompt, conts)
    per_token = tiny_backend.score(prompt, conts, normalize="tokens")
    per_byte = tiny_backend.score(prompt, conts, normalize="bytes")
    _, tails, sizes = tiny_backend._joint_request(prompt, conts)
    np.testing.assert_allclose(per_token, [t / len(x) for t, x in zip(total, tails,
                                                                        strict=True)])
    np.testing.assert_allclose(per_byte, [t / len(c.encode()) for t, c in zip(total, conts,
                                                                             strict=True)])
    assert sizes == [len(c.encode()) for c in conts]
    with pytest.raises(ValueError, match="normalisation"):
        tiny_backend.score(prompt, conts, normalize="chars")


@pytest.mark.slow
def test_embedded_zh_cloze_scored_jointly(embedded_backend):
    """bmlama17 zh: "…在" + "大马士革" is one token "在大" in Gemma's vocabulary."""
    prompt = "伊本·赫勒敦死在"
    conts = ["大马士革。", "开罗。", "巴黎。"]
    joint = embedded_backend.encode(prompt + conts[0])
    alone = embedded_backend.encode(prompt)
    assert joint[:len(alone)] != alone, "expected a token across the prompt's end"
    got = embedded_backend.score(prompt, conts)
    np.testing.assert_allclose(got, naive_joint_logprob(embedded_backend, prompt, conts),
                               atol=1e-3)

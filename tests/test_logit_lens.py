"""Logit-lens curves on the tiny model: shapes, bounds, and the last layer equals the
model's own next-token probability of the gold answer's first token."""

from __future__ import annotations

import numpy as np
import torch

from xlgap.data import load_builtin
from xlgap.prompting.templates import PromptBuilder
from xlgap.report.plots.representations import plot_logit_lens
from xlgap.representations.logit_lens import answer_tokens, logit_lens


def test_logit_lens_curves(tiny_backend, tmp_path):
    items = load_builtin().subset(6, ["en", "fr", "ja"]).items
    result = logit_lens(tiny_backend, items, ["en", "fr", "ja"], pivot="en", shots=1)
    assert result["layers"] == list(range(tiny_backend.n_layers))
    for lang in ("en", "fr", "ja"):
        curves = result["languages"][lang]
        assert curves["n_items"] == 6
        assert len(curves["p_gold"]) == tiny_backend.n_layers
        assert all(0.0 <= p <= 1.0 for p in curves["p_gold"])
    assert result["languages"]["en"]["pivot_share"] is None or all(
        0 <= v <= 1 for v in result["languages"]["en"]["pivot_share"])
    # last layer = the model's real next-token distribution
    builder = PromptBuilder(tiny_backend, items, shots=1)
    probs = []
    for it in items:
        prompt, gold_tok, _ = answer_tokens(tiny_backend, builder, it, "ja", "en")
        ids = tiny_backend.tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            p = torch.softmax(tiny_backend.model(**ids).logits[0, -1].float(), -1)
        probs.append(float(p[gold_tok]))
    np.testing.assert_allclose(result["languages"]["ja"]["p_gold"][-1], np.mean(probs),
                               rtol=1e-3, atol=1e-6)
    assert plot_logit_lens(result, tmp_path / "lens.png").stat().st_size > 1000


def test_logit_lens_without_english(tiny_backend):
    # no English in the data: the latent-language curve compares with the pivot given
    items = load_builtin().subset(4, ["fr", "ja"]).items
    assert not any(it.has("en") for it in items)
    result = logit_lens(tiny_backend, items, ["fr", "ja"], pivot="fr", shots=1)
    assert result["pivot"] == "fr"
    assert set(result["languages"]) == {"fr", "ja"}
    ja = result["languages"]["ja"]
    assert ja["n_items"] == 4 and len(ja["p_gold"]) == tiny_backend.n_layers
    if ja["pivot_share"] is not None:
        assert all(0.0 <= v <= 1.0 for v in ja["pivot_share"])

"""The logit lens: what each layer would answer, and in which language it "thinks".

At the answer position (the end of the baseline prompt) the final norm and the
unembedding are applied to every layer's residual. Per layer we read

* the probability and rank of the gold candidate's first token (as the asked language
  writes it), and
* the *latent language*: the mass on the English answer's first token against the mass
  on the target-language answer's first token (candidates are parallel, so candidate j
  in English names the same entity). Items whose two tokens coincide (e.g. "Paris" in
  French) say nothing about language and are left out of that curve.

The English token follows the same spacing as the target continuation (a leading space
when the target's answer starts with one), so both are the token the model would emit
next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xlgap.data.items import Item
from xlgap.errors import ConfigError
from xlgap.models.base import Backend, WhiteBox
from xlgap.progress import progress_bar
from xlgap.prompting.templates import PromptBuilder


def first_token(backend: Backend, text: str) -> int | None:
    ids = backend.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
    return ids[0] if ids else None


def answer_tokens(backend: Backend, builder: PromptBuilder, item: Item, lang: str,
                  pivot: str) -> tuple[str, int | None, int | None]:
    """(prompt, gold first token in ``lang``, the pivot language's gold first token)."""
    sp = builder.scoring_prompt(item, lang)
    gold = item[lang].gold
    if gold is None or gold >= len(sp.continuations):
        return sp.prompt, None, None
    cont = sp.continuations[gold]
    tgt = first_token(backend, cont)
    piv = None
    if item.has(pivot) and item[pivot].gold is not None:
        word = item[pivot].candidates[item[pivot].gold]
        piv = first_token(backend, (" " if cont.startswith(" ") else "") + word)
    return sp.prompt, tgt, piv


def logit_lens(backend: Backend, items: Sequence[Item], languages: Sequence[str], *,
               pivot: str = "en", shots: int = 3, progress: bool = False) -> dict[str, Any]:
    """Per language and layer: gold-token probability and rank, and latent-language mass.

    Returns a JSON-ready dict ``{"layers": [...], "languages": {lang: {...curves...}}}``.
    """
    if not isinstance(backend, WhiteBox):
        raise ConfigError(f"the logit lens needs a white-box Hugging Face model; "
                          f"{backend.kind!r} has no layers")
    builder = PromptBuilder(backend, items, shots=shots)
    n_layers = backend.n_layers
    out: dict[str, Any] = {"pivot": pivot, "layers": list(range(n_layers)), "languages": {}}
    for lang in progress_bar(languages, desc="logit lens", unit="language",
                             enabled=progress):
        rows = [answer_tokens(backend, builder, it, lang, pivot) for it in items if it.has(lang)]
        rows = [r for r in rows if r[1] is not None]
        if not rows:
            continue
        prompts = [r[0] for r in rows]
        tokens = [[r[1], r[2] if r[2] is not None else r[1]] for r in rows]
        logps, ranks = backend.layer_logits(prompts, tokens)  # type: ignore[attr-defined]
        p_gold, p_pivot = np.exp(logps[:, :, 0]), np.exp(logps[:, :, 1])
        distinct = np.array([r[2] is not None and r[2] != r[1] for r in rows])
        share = p_pivot / np.maximum(p_pivot + p_gold, 1e-30)
        out["languages"][lang] = {
            "n_items": len(rows),
            "p_gold": p_gold.mean(0).tolist(),
            "log10_rank_gold": np.log10(ranks[:, :, 0] + 1).mean(0).tolist(),
            "median_rank_gold": np.median(ranks[:, :, 0], axis=0).tolist(),
            "top1_gold": (ranks[:, :, 0] == 0).mean(0).tolist(),
            "n_latent_items": int(distinct.sum()),
            "p_pivot": p_pivot[distinct].mean(0).tolist() if distinct.any() else None,
            "p_target": p_gold[distinct].mean(0).tolist() if distinct.any() else None,
            "pivot_share": share[distinct].mean(0).tolist() if distinct.any() else None,
        }
    return out

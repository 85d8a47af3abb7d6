"""Where each architecture keeps its blocks, final norm and unembedding, declared as data.

Analyses (logit lens, steering, freezing layers) ask this module for module paths instead
of hard-coding ``model.model.layers``. A new model family is one entry in
``ARCHITECTURES``; families not listed are handled by :func:`guess_layout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xlgap.errors import ConfigError, ModelError
from xlgap.models.base import WhiteBox


@dataclass(frozen=True)
class LayerLayout:
    """Dotted attribute paths inside a causal LM."""

    blocks: str  # ModuleList of transformer blocks
    final_norm: str  # norm applied before the unembedding
    unembed: str  # output projection to the vocabulary
    embed: str  # token embedding


_LLAMA_LIKE = LayerLayout("model.layers", "model.norm", "lm_head", "model.embed_tokens")

#: model_type (from the HF config) -> layout
ARCHITECTURES: dict[str, LayerLayout] = {
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "gemma3": LayerLayout("model.language_model.layers", "model.language_model.norm",
                          "lm_head", "model.language_model.embed_tokens"),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "gpt2": LayerLayout("transformer.h", "transformer.ln_f", "lm_head", "transformer.wte"),
    "gpt_neox": LayerLayout("gpt_neox.layers", "gpt_neox.final_layer_norm", "embed_out",
                            "gpt_neox.embed_in"),
    "bloom": LayerLayout("transformer.h", "transformer.ln_f", "lm_head",
                         "transformer.word_embeddings"),
}

# Tried in order when the model type is not declared above.
_BLOCK_CANDIDATES = ("model.layers", "model.language_model.layers", "transformer.h",
                     "gpt_neox.layers", "model.decoder.layers", "transformer.blocks")
_NORM_CANDIDATES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f")


def get_module(model: nn.Module, path: str) -> Any:
    obj: Any = model
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _has(model: nn.Module, path: str) -> bool:
    try:
        get_module(model, path)
    except AttributeError:
        return False
    return True


def guess_layout(model: nn.Module) -> LayerLayout:
    """Find the blocks, norm and head of an undeclared architecture by common names."""
    blocks = next((p for p in _BLOCK_CANDIDATES
                   if _has(model, p) and isinstance(get_module(model, p), nn.ModuleList)), None)
    if blocks is None:
        raise ModelError(f"cannot find the transformer blocks of {type(model).__name__}; "
                         f"tried {', '.join(_BLOCK_CANDIDATES)}. Declare its layout in "
                         "xlgap.models.layers.ARCHITECTURES.")
    parent = blocks.rsplit(".", 1)[0]
    norm = next((f"{parent}.{n}" for n in _NORM_CANDIDATES if _has(model, f"{parent}.{n}")), None)
    out = model.get_output_embeddings()
    unembed = next((name for name, mod in model.named_modules() if mod is out), None)
    emb = model.get_input_embeddings()
    embed = next((name for name, mod in model.named_modules() if mod is emb), None)
    if norm is None or unembed is None or embed is None:
        raise ModelError(f"cannot find the final norm / unembedding of {type(model).__name__}; "
                         "declare its layout in xlgap.models.layers.ARCHITECTURES.")
    return LayerLayout(blocks, norm, unembed, embed)


def layout_for(model: nn.Module) -> LayerLayout:
    """The declared layout for the model's type, else a guessed one (checked to exist)."""
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    layout = ARCHITECTURES.get(model_type)
    if layout is not None and all(_has(model, p) for p in
                                  (layout.blocks, layout.final_norm, layout.unembed)):
        return layout
    return guess_layout(model)


def blocks(model: nn.Module) -> nn.ModuleList:
    return get_module(model, layout_for(model).blocks)


def logit_lens_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(final norm, unembedding): applied to a residual they give next-token logits."""
    layout = layout_for(model)
    return get_module(model, layout.final_norm), get_module(model, layout.unembed)


def apply_logit_head(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from residual-stream states, with the model's final soft-capping if any."""
    norm, head = logit_lens_head(model)
    logits = head(norm(hidden))
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


# -- white-box access (steering, fine-tuning) ---------------------------------------------------


def white_box(backend: Any) -> Any:
    """The Hugging Face backend under any wrappers (the result store's ``inner``)."""
    inner = backend
    while "inner" in vars(inner):
        inner = inner.inner
    if not isinstance(inner, WhiteBox):
        raise ModelError(f"this needs a white-box Hugging Face model; backend "
                         f"{getattr(inner, 'kind', type(inner).__name__)!r} has no hooks")
    return inner


def steerable_layers(model: nn.Module) -> range:
    """Hidden-state layers a vector can be added at: 0 (the input of the first block) and
    the output of every block but the last (Hugging Face reports the last one after the
    final norm, outside the residual stream a hook sees)."""
    return range(0, len(blocks(model)))


def hook_point(model: nn.Module, layer: int) -> tuple[nn.Module, str]:
    """Where hidden-state layer ``layer`` can be changed: ``(module, "input")`` for layer 0,
    the input of the first block (``hidden_states[0]`` is exactly that tensor: Gemma 1/2
    scale the embeddings and Bloom normalises them inside the model's forward, so the
    embedding module's output lives in another space), else ``(module, "output")``, the
    block whose output is that layer."""
    allowed = steerable_layers(model)
    if layer not in allowed:
        raise ConfigError(f"cannot steer at layer {layer}: this model takes layers "
                          f"{allowed.start}..{allowed.stop - 1} (0 = the input of the first "
                          "block; the last layer is reported after the final norm)")
    if layer == 0:
        return blocks(model)[0], "input"
    return blocks(model)[layer - 1], "output"


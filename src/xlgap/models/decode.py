"""Decoding steps for many samples of few prompts, sharing each prompt's KV cache.

``HFBackend.generate`` draws ``n`` samples per prompt. Through transformers' cache every
sample needs its own copy of the prompt's keys and values (``n``-fold copies, and each
step concatenates, i.e. copies, the whole cache again). Here the prompt is encoded once by
the model itself; each decoding step then runs the model's own submodules (norms,
projections, MLP) on the new tokens only, and attention reads two parts:

* the prompt's keys/values, shared by its samples (one batched matmul per prompt with the
  ``n x heads`` queries as rows), and
* each sample's own keys/values, written into a preallocated ``[max_new, rows, kv, d]``
  buffer (no concatenation).

Only architectures whose layers this reproduces exactly are taken (Gemma 3 text models,
checked by module types and shapes), and only while the whole sequence fits in the sliding
window; the caller falls back to transformers' cache otherwise, and whenever hooks (e.g.
steering) or adapters modify the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

_SUPPORTED = {"gemma3_text", "gemma3"}


def _has_hooks(model: torch.nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class SharedPrefixDecoder:
    """Decoding state of the samples of a few prompts, whose prompt caches are shared.

    Live rows are kept compact (a prompt's rows adjacent), so the projections and the MLP
    run on live rows only. Only attention over the prompt, one batched matmul for all
    prompts, sees a padded ``[prompts, width]`` layout (``width``: the most live rows of
    any prompt); padding there costs a few small matmul rows, not a whole block's work.
    """

    def __init__(self, model: Any, cache: Any, mask: torch.Tensor, positions: torch.Tensor,
                 owner: torch.Tensor, max_new: int) -> None:
        self.body = model.base_model
        self.config = model.config.get_text_config()
        self.layers = list(self.body.layers[: self.config.num_hidden_layers])
        # Prompt keys/values per layer: [prompts, kv, width, d], shared by their samples.
        self.prefix = [(layer.keys, layer.values) for layer in cache.layers]
        # Additive mask for prompt padding (left), one row per prompt.
        bias = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        self.bias = bias.masked_fill_(mask == 0, -torch.inf)[:, None, None, :]
        self.prompts = torch.arange(mask.shape[0], device=owner.device)
        self._place(owner)
        self.next_pos = positions[owner, -1] + 1  # per row
        rows, kv, d = len(owner), self.config.num_key_value_heads, self.config.head_dim
        dtype, dev = self.prefix[0][0].dtype, self.prefix[0][0].device
        # step-major [max_new, rows, kv, d]: dropping rows copies only the steps written
        self.keys = [torch.empty((max_new, rows, kv, d), dtype=dtype, device=dev)
                     for _ in self.layers]
        self.values = [torch.empty_like(k) for k in self.keys]
        self.t = 0  # tokens fed so far
        # Gemma's RMSNorm scales by (1 + w): computed once here, not at every call.
        self.norm_scale = {id(m): 1.0 + m.weight.float() for m in model.modules()
                           if type(m).__name__.endswith("RMSNorm")}

    def _place(self, owner: torch.Tensor) -> None:
        """Each live row's slot in the padded ``[prompts, width]`` layout of prompt
        attention (``owner``: the prompt of each live row, sorted)."""
        _, counts = torch.unique_consecutive(owner, return_counts=True)
        self.owner, self.width = owner, int(counts.max())
        rank = torch.repeat_interleave(torch.arange(len(counts), device=owner.device), counts)
        first = torch.cumsum(counts, 0) - counts
        within = torch.arange(len(owner), device=owner.device) - first[rank]
        self.slot_of_row = rank * self.width + within
        self.padded = len(owner) != len(counts) * self.width

    @staticmethod
    def supports(model: Any) -> bool:
        """Whether this decoder reproduces ``model`` exactly (architecture, no hooks)."""
        config = model.config.get_text_config()
        if getattr(config, "model_type", None) not in _SUPPORTED or _has_hooks(model):
            return False
        if getattr(config, "attn_logit_softcapping", None) or getattr(
                config, "use_bidirectional_attention", False):
            return False
        body = model.base_model
        layers = body.layers[: config.num_hidden_layers]
        lin = torch.nn.Linear
        for layer in layers:
            attn = layer.self_attn
            if any(type(m) is not lin or m.bias is not None for m in (
                    attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)):
                return False  # adapters (LoRA) or biases: not what the step below computes
        return True

    @staticmethod
    def fits(model: Any, width: int, max_new: int) -> bool:
        """Whether this decoder can take prompts of up to ``width`` tokens and ``max_new``
        new ones (before any prompt is encoded)."""
        if not SharedPrefixDecoder.supports(model):
            return False
        window = getattr(model.config.get_text_config(), "sliding_window", None)
        # past the window, attention would start to cut; transformers handles that
        return window is None or width + max_new < window

    @staticmethod
    def applies(model: Any, cache: Any, width: int, max_new: int) -> bool:
        """Whether this decoder reproduces ``model`` exactly for this prompt batch."""
        if not SharedPrefixDecoder.fits(model, width, max_new):
            return False
        config = model.config.get_text_config()
        layers = model.base_model.layers[: config.num_hidden_layers]
        layers_cache = getattr(cache, "layers", None)
        return (layers_cache is not None and len(layers_cache) == len(layers)
                and all(getattr(c, "keys", None) is not None and c.keys.shape[-2] == width
                        for c in layers_cache))

    def select(self, keep: torch.Tensor) -> None:
        """Rows become ``keep`` (row indices, non-decreasing): a row left out is dropped, a
        row named twice is copied (its samples drew different tokens). A prompt's cache is
        narrowed away when it has no row left."""
        if len(keep) == len(self.owner) and bool(
                (keep == torch.arange(len(keep), device=keep.device)).all()):
            return
        if len(keep) > 1 and bool((keep[1:] < keep[:-1]).any()):
            raise ValueError("decoder rows must stay ordered by prompt (keep non-decreasing)")
        # Each change copies the rows' own keys/values of the steps so far: like attention
        # over them, linear in the answer length per step (answers here are short).
        owner = self.owner[keep]
        prompts = torch.unique_consecutive(owner)
        if len(prompts) < len(self.prompts):
            idx = torch.searchsorted(self.prompts, prompts)
            self.prefix = [(k[idx], v[idx]) for k, v in self.prefix]
            self.bias = self.bias[idx]
            self.prompts = prompts
        self._place(owner)
        self.next_pos = self.next_pos[keep]
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                fresh = torch.empty((buf.shape[0], len(keep), *buf.shape[2:]),
                                    dtype=buf.dtype, device=buf.device)
                torch.index_select(buf[:self.t], 1, keep, out=fresh[:self.t])
                buffers[i] = fresh

    def _norm(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        scale = self.norm_scale.get(id(module))
        if scale is None or x.dtype != torch.float32:
            return module(x)
        # Gemma3RMSNorm's float32 arithmetic, in the same order (same bits)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.eps) * scale

    def _to_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Rows -> the padded ``[prompts * width, ...]`` layout (padding slots are zero)."""
        if not self.padded:
            return x
        out = x.new_zeros((len(self.prompts) * self.width, *x.shape[1:]))
        out[self.slot_of_row] = x
        return out

    def _from_padded(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.slot_of_row] if self.padded else x

    def _attend(self, i: int, q: torch.Tensor, scaling: float) -> torch.Tensor:
        """Attention of ``q`` [rows, heads, d] over prompt + own tokens of layer ``i``."""
        n_rows, heads, d = q.shape
        kv = self.keys[i].shape[2]
        g, p, m = heads // kv, len(self.prompts), self.width
        pk, pv = self.prefix[i]
        width = pk.shape[-2]
        # prompt part: [p, kv, m*g, d] @ [p, kv, d, width], one matmul for all prompts
        qp = self._to_padded(q).view(p, m, kv, g, d).transpose(1, 2).reshape(p, kv, m * g, d)
        sp = torch.matmul(qp, pk.transpose(-1, -2)).mul_(scaling).add_(self.bias)
        sp = self._from_padded(sp.view(p, kv, m, g, width).transpose(1, 2)
                               .reshape(p * m, kv, g, width))
        # own part: each row's generated tokens
        qg = q.view(n_rows, kv, g, d)
        own_k = self.keys[i][:self.t].permute(1, 2, 3, 0)  # [rows, kv, d, t]
        own = torch.matmul(qg, own_k).mul_(scaling)
        probs = torch.softmax(torch.cat([sp.float(), own.float()], dim=-1), dim=-1)
        probs = probs.to(q.dtype)
        out = torch.matmul(probs[..., width:], self.values[i][:self.t].transpose(0, 1)
                           .transpose(1, 2))
        pp = self._to_padded(probs[..., :width]).view(p, m, kv, g, width).transpose(1, 2)
        prompt_out = torch.matmul(pp.reshape(p, kv, m * g, width), pv)
        out += self._from_padded(prompt_out.view(p, kv, m, g, d).transpose(1, 2)
                                 .reshape(p * m, kv, g, d))
        return out.reshape(n_rows, heads * d)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per live row; returns each live row's final (normed) state."""
        body, config = self.body, self.config
        h = body.embed_tokens(tokens[:, None])[:, 0]  # scaled as the model does
        pos = self.next_pos[:, None]
        rope = {lt: body.rotary_emb(h[:, None], pos, lt) for lt in set(config.layer_types)}
        t = self.t
        self.t += 1
        n_rows = h.shape[0]
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = self._norm(layer.input_layernorm, h)
            q = self._norm(attn.q_norm, attn.q_proj(x).view(n_rows, -1, attn.head_dim))
            k = self._norm(attn.k_norm, attn.k_proj(x).view(n_rows, -1, attn.head_dim))
            v = attn.v_proj(x).view(n_rows, -1, attn.head_dim)
            cos, sin = rope[config.layer_types[i]]  # [rows, 1, d]: broadcast over heads
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.keys[i][t] = k
            self.values[i][t] = v
            a = attn.o_proj(self._attend(i, q, attn.scaling))
            h = h + self._norm(layer.post_attention_layernorm, a)
            m = layer.mlp(self._norm(layer.pre_feedforward_layernorm, h))
            h = h + self._norm(layer.post_feedforward_layernorm, m)
        self.next_pos = self.next_pos + 1
        return self._norm(body.norm, h)


# -- prompts encoded in groups of similar length -----------------------------------------
@dataclass
class PromptKV:
    keys: torch.Tensor  # [prompts, kv, width, d]
    values: torch.Tensor


@dataclass
class PromptCache:
    """The prompts' keys/values per layer, as the decoder reads them from transformers'
    cache (``cache.layers[i].keys``)."""

    layers: list[PromptKV] = field(default_factory=list)


def length_groups(lengths: list[int], overhead: int = 64) -> list[range]:
    """Contiguous groups of length-sorted prompts to encode one batch each, fewest padded
    positions in all, counting ``overhead`` positions for each extra forward call (its
    fixed cost). Exact dynamic programme over the cut points (quadratic in prompts)."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for stop in range(1, n + 1):
        for start in range(stop):
            cost = best[start] + (stop - start) * lengths[stop - 1] + overhead
            if cost < best[stop]:
                best[stop], cut[stop] = cost, start
    groups = []
    stop = n
    while stop > 0:
        groups.append(range(cut[stop], stop))
        stop = cut[stop]
    return groups[::-1]


def merge_prompt_caches(caches: list[Any], width: int) -> PromptCache:
    """One cache of all groups' prompts, each group's keys/values left-padded with zeros
    to ``width`` positions (the decoder masks padding: a zero key there gets no weight)."""
    merged = PromptCache()
    for layer in range(len(caches[0].layers)):
        def padded(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, 0, width - t.shape[-2], 0))

        merged.layers.append(PromptKV(
            torch.cat([padded(c.layers[layer].keys) for c in caches]),
            torch.cat([padded(c.layers[layer].values) for c in caches])))
    return merged

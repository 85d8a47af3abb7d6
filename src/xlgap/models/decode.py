"""Decoding steps for many samples of few prompts, sharing each prompt's KV cache.

``HFBackend.generate`` draws ``n`` samples per prompt. Through transformers' cache every
sample needs its own copy of the prompt's keys and values (``n``-fold copies, and each
step concatenates, i.e. copies, the whole cache again). Here the prompt is encoded once by
the model itself; each decoding step then runs the model's own submodules (norms,
projections, MLP) on the new tokens only, and attention reads two parts:

* the prompt's keys/values, shared by its samples (one batched matmul per prompt with the
  ``n x heads`` queries as rows), and
* each sample's own keys/values, written into a preallocated ``[rows, kv, max_new, d]``
  buffer (no concatenation).

Only architectures whose layers this reproduces exactly are taken (Gemma 3 text models,
checked by module types and shapes), and only while the whole sequence fits in the sliding
window; the caller falls back to transformers' cache otherwise, and whenever hooks (e.g.
steering) or adapters modify the model.
"""

from __future__ import annotations

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

    Rows live in a padded ``[prompts, slots]`` layout so that attention over the prompt
    is one batched matmul for all prompts; dropping finished rows repacks the layout
    (a prompt with fewer live rows than the widest gets padding slots that repeat one of
    its rows and are never read).
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
        self.owner = owner  # prompt of each live row, sorted (a prompt's rows are adjacent)
        self.prompts = torch.arange(mask.shape[0], device=owner.device)
        self.slots = len(owner) // mask.shape[0]  # every prompt starts with its n rows
        self.slot_of_row = torch.arange(len(owner), device=owner.device)
        self.row_of_slot = self.slot_of_row.clone()
        self.next_pos = positions[owner, -1] + 1  # per slot
        rows, kv, d = len(owner), self.config.num_key_value_heads, self.config.head_dim
        dtype, dev = self.prefix[0][0].dtype, self.prefix[0][0].device
        # step-major [max_new, slots, kv, d]: repacking copies only the steps written
        self.keys = [torch.empty((max_new, rows, kv, d), dtype=dtype, device=dev)
                     for _ in self.layers]
        self.values = [torch.empty_like(k) for k in self.keys]
        self.t = 0  # tokens fed so far
        # Gemma's RMSNorm scales by (1 + w): computed once here, not at every call.
        self.norm_scale = {id(m): 1.0 + m.weight.float() for m in model.modules()
                           if type(m).__name__.endswith("RMSNorm")}
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
    def applies(model: Any, cache: Any, width: int, max_new: int) -> bool:
        """Whether this decoder reproduces ``model`` exactly for this prompt batch."""
        if not SharedPrefixDecoder.supports(model):
            return False
        config = model.config.get_text_config()
        window = getattr(config, "sliding_window", None)
        if window is not None and width + max_new >= window:
            return False  # the window would start to cut; transformers handles that
        layers = model.base_model.layers[: config.num_hidden_layers]
        layers_cache = getattr(cache, "layers", None)
        return (layers_cache is not None and len(layers_cache) == len(layers)
                and all(getattr(c, "keys", None) is not None and c.keys.shape[-2] == width
                        for c in layers_cache))

    def select(self, keep: torch.Tensor) -> None:
        """Keep only live rows ``keep`` (sorted); their slots are repacked, the prompts'
        caches are only narrowed when a prompt has no live row left."""
        owner, old_slot = self.owner[keep], self.slot_of_row[keep]
        prompts, counts = torch.unique_consecutive(owner, return_counts=True)
        width = int(counts.max())
        rank = torch.repeat_interleave(torch.arange(len(prompts), device=owner.device), counts)
        first = torch.cumsum(counts, 0) - counts  # first live row of each prompt
        within = torch.arange(len(owner), device=owner.device) - first[rank]
        new_slot = rank * width + within
        # padding slots repeat their prompt's first row
        src_slot = old_slot[first].repeat_interleave(width)
        src_slot[new_slot] = old_slot
        row_of_slot = first.repeat_interleave(width)
        row_of_slot[new_slot] = torch.arange(len(owner), device=owner.device)
        if len(prompts) < len(self.prompts):
            idx = torch.searchsorted(self.prompts, prompts)
            self.prefix = [(k[idx], v[idx]) for k, v in self.prefix]
            self.bias = self.bias[idx]
        self.owner, self.prompts, self.slots = owner, prompts, width
        self.slot_of_row, self.row_of_slot = new_slot, row_of_slot
        self.next_pos = self.next_pos[src_slot]
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                fresh = torch.empty((buf.shape[0], len(src_slot), *buf.shape[2:]),
                                    dtype=buf.dtype, device=buf.device)
                torch.index_select(buf[:self.t], 1, src_slot, out=fresh[:self.t])
                buffers[i] = fresh

    def _norm(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        scale = self.norm_scale.get(id(module))
        if scale is None or x.dtype != torch.float32:
            return module(x)
        # Gemma3RMSNorm's float32 arithmetic, in the same order (same bits)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.eps) * scale

    def _attend(self, i: int, q: torch.Tensor, scaling: float) -> torch.Tensor:
        """Attention of ``q`` [slots, heads, d] over prompt + own tokens of layer ``i``."""
        n_slots, heads, d = q.shape
        kv = self.keys[i].shape[2]
        g, p, m = heads // kv, len(self.prompts), self.slots
        pk, pv = self.prefix[i]
        width = pk.shape[-2]
        # prompt part: [p, kv, m*g, d] @ [p, kv, d, width], one matmul for all prompts
        qp = q.view(p, m, kv, g, d).transpose(1, 2).reshape(p, kv, m * g, d)
        sp = torch.matmul(qp, pk.transpose(-1, -2)).mul_(scaling).add_(self.bias)
        sp = sp.view(p, kv, m, g, width).transpose(1, 2).reshape(n_slots, kv, g, width)
        # own part: each slot's generated tokens
        qg = q.view(n_slots, kv, g, d)
        own_k = self.keys[i][:self.t].permute(1, 2, 3, 0)  # [slots, kv, d, t]
        own = torch.matmul(qg, own_k).mul_(scaling)
        probs = torch.softmax(torch.cat([sp.float(), own.float()], dim=-1), dim=-1)
        probs = probs.to(q.dtype)
        out = torch.matmul(probs[..., width:], self.values[i][:self.t].transpose(0, 1)
                           .transpose(1, 2))
        pp = probs[..., :width].reshape(p, m, kv, g, width).transpose(1, 2)
        prompt_out = torch.matmul(pp.reshape(p, kv, m * g, width), pv)
        out += prompt_out.view(p, kv, m, g, d).transpose(1, 2).reshape(n_slots, kv, g, d)
        return out.reshape(n_slots, heads * d)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per live row; returns each live row's final (normed) state."""
        body, config = self.body, self.config
        h = body.embed_tokens(tokens[self.row_of_slot][:, None])[:, 0]  # scaled as the model does
        pos = self.next_pos[:, None]
        rope = {lt: body.rotary_emb(h[:, None], pos, lt) for lt in set(config.layer_types)}
        t = self.t
        self.t += 1
        n_slots = h.shape[0]
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = self._norm(layer.input_layernorm, h)
            q = self._norm(attn.q_norm, attn.q_proj(x).view(n_slots, -1, attn.head_dim))
            k = self._norm(attn.k_norm, attn.k_proj(x).view(n_slots, -1, attn.head_dim))
            v = attn.v_proj(x).view(n_slots, -1, attn.head_dim)
            cos, sin = rope[config.layer_types[i]]  # [slots, 1, d]: broadcast over heads
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.keys[i][t] = k
            self.values[i][t] = v
            a = attn.o_proj(self._attend(i, q, attn.scaling))
            h = h + self._norm(layer.post_attention_layernorm, a)
            m = layer.mlp(self._norm(layer.pre_feedforward_layernorm, h))
            h = h + self._norm(layer.post_feedforward_layernorm, m)
        self.next_pos = self.next_pos + 1
        return self._norm(body.norm, h[self.slot_of_row])

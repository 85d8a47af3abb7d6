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
    """Decoding state of ``rows`` samples whose prompts' caches are shared, not copied."""

    def __init__(self, model: Any, cache: Any, mask: torch.Tensor, positions: torch.Tensor,
                 owner: torch.Tensor, max_new: int) -> None:
        self.body = model.base_model
        self.config = model.config.get_text_config()
        self.layers = list(self.body.layers[: self.config.num_hidden_layers])
        # Prompt keys/values per layer: [prompts, kv, width, d], shared by their samples.
        self.prefix = [(layer.keys, layer.values) for layer in cache.layers]
        # Additive mask for prompt padding (left), one row per prompt.
        self.bias = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        self.bias.masked_fill_(mask == 0, -torch.inf)
        self.owner = owner  # prompt of each row, sorted, so each prompt's rows are contiguous
        self.next_pos = positions[owner, -1] + 1
        rows, kv, d = len(owner), self.config.num_key_value_heads, self.config.head_dim
        dtype, dev = self.prefix[0][0].dtype, self.prefix[0][0].device
        self.keys = [torch.empty((rows, kv, max_new, d), dtype=dtype, device=dev)
                     for _ in self.layers]
        self.values = [torch.empty_like(k) for k in self.keys]
        self.t = 0  # tokens fed so far

    @staticmethod
    def applies(model: Any, cache: Any, width: int, max_new: int) -> bool:
        """Whether this decoder reproduces ``model`` exactly for this prompt batch."""
        config = model.config.get_text_config()
        if getattr(config, "model_type", None) not in _SUPPORTED or _has_hooks(model):
            return False
        if getattr(config, "attn_logit_softcapping", None) or getattr(
                config, "use_bidirectional_attention", False):
            return False
        window = getattr(config, "sliding_window", None)
        if window is not None and width + max_new >= window:
            return False  # the window would start to cut; transformers handles that
        body = model.base_model
        layers = body.layers[: config.num_hidden_layers]
        lin = torch.nn.Linear
        for layer in layers:
            attn = layer.self_attn
            if any(type(m) is not lin or m.bias is not None for m in (
                    attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)):
                return False  # adapters (LoRA) or biases: not what the step below computes
        layers_cache = getattr(cache, "layers", None)
        return (layers_cache is not None and len(layers_cache) == len(layers)
                and all(getattr(c, "keys", None) is not None and c.keys.shape[-2] == width
                        for c in layers_cache))

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (sorted): their own buffers are copied, prompts are not."""
        self.owner, self.next_pos = self.owner[keep], self.next_pos[keep]
        self.keys = [k[keep] for k in self.keys]
        self.values = [v[keep] for v in self.values]

    def _groups(self) -> list[tuple[int, int, int]]:
        """(prompt, first row, end row) of each prompt that still has rows."""
        prompts, counts = torch.unique_consecutive(self.owner, return_counts=True)
        out, start = [], 0
        for p, c in zip(prompts.tolist(), counts.tolist(), strict=True):
            out.append((p, start, start + c))
            start += c
        return out

    def _attend(self, i: int, q: torch.Tensor, groups: list[tuple[int, int, int]],
                scaling: float) -> torch.Tensor:
        """Attention of ``q`` [rows, heads, d] over prompt + own tokens of layer ``i``."""
        rows, heads, d = q.shape
        kv = self.keys[i].shape[1]
        g = heads // kv
        pk, pv = self.prefix[i]
        width = pk.shape[-2]
        qg = q.view(rows, kv, g, d)
        scores = torch.empty((rows, kv, g, width + self.t), dtype=torch.float32,
                             device=q.device)
        for p, a, b in groups:
            # [kv, (b-a)*g, d] @ [kv, d, width]: the prompt's samples as one wide matmul.
            qp = qg[a:b].permute(1, 0, 2, 3).reshape(kv, (b - a) * g, d)
            sp = torch.matmul(qp, pk[p].transpose(1, 2)).view(kv, b - a, g, width)
            scores[a:b, :, :, :width] = sp.permute(1, 0, 2, 3) * scaling + self.bias[p]
        own_k = self.keys[i][:, :, :self.t]
        scores[..., width:] = torch.matmul(qg, own_k.transpose(2, 3)) * scaling
        probs = torch.softmax(scores, dim=-1).to(q.dtype)
        out = torch.matmul(probs[..., width:], self.values[i][:, :, :self.t])
        for p, a, b in groups:
            pp = probs[a:b, :, :, :width].permute(1, 0, 2, 3).reshape(kv, (b - a) * g, width)
            out[a:b] += torch.matmul(pp, pv[p]).view(kv, b - a, g, d).permute(1, 0, 2, 3)
        return out.reshape(rows, heads * d)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; returns the final (normed) hidden state of each row."""
        body, config = self.body, self.config
        h = body.embed_tokens(tokens[:, None])[:, 0]  # [rows, hidden], scaled as the model does
        pos = self.next_pos[:, None]
        rope = {lt: body.rotary_emb(h[:, None], pos, lt) for lt in set(config.layer_types)}
        groups = self._groups()
        t = self.t
        self.t += 1
        rows = h.shape[0]
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_norm(attn.q_proj(x).view(rows, -1, attn.head_dim))
            k = attn.k_norm(attn.k_proj(x).view(rows, -1, attn.head_dim))
            v = attn.v_proj(x).view(rows, -1, attn.head_dim)
            cos, sin = rope[config.layer_types[i]]  # [rows, 1, d]: broadcast over heads
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.keys[i][:, :, t] = k
            self.values[i][:, :, t] = v
            a = attn.o_proj(self._attend(i, q, groups, attn.scaling))
            h = h + layer.post_attention_layernorm(a)
            m = layer.mlp(layer.pre_feedforward_layernorm(h))
            h = h + layer.post_feedforward_layernorm(m)
        self.next_pos = self.next_pos + 1
        return body.norm(h)

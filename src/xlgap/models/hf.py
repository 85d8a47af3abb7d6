"""Hugging Face causal LMs behind the xlgap backend interface.

Batching is where peer tools most often go wrong, so every batched path here uses left
padding, an attention mask and explicit position ids (``cumsum(mask) - 1``), and the
tests check batched results against one-at-a-time results.

Speed on small CPUs: a 262k-token output head dominates each decoding step, so

* every public method runs the model's float32 linear layers through oneDNN's packed
  kernels (:mod:`xlgap.models.onednn`: 2.3x MKL's float32 rate on AMD processors);
* ``generate`` encodes each prompt once (in groups of similar length); its ``n`` samples
  share its KV cache and samples that drew the same tokens share one computed row
  (:mod:`xlgap.models.decode`, Gemma 3; other models copy the cache through
  transformers); the output head and the sampling step are fused over vocabulary chunks
  so the ``[rows x vocabulary]`` logit matrix never exists (:mod:`xlgap.models.sampler`);
  prompts are batched together (sorted by length) and rows that finished leave the
  batch (answers are short);
* ``score`` encodes each prompt once, copies its cache to its continuations, and takes
  a continuation's first token from the prompt's last position (shared by all
  continuations); a token's log-probability is its logit minus the fused head's
  log-sum-exp, so the logit matrix never exists here either.

Sampling is counter-based: sample ``k`` of a prompt draws, at step ``t``, the uniform
hashed from (run seed, prompt tokens, ``k``, ``t``), so a prompt's samples do not depend
on what else is in its batch, nor on ``n``.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xlgap.errors import ModelError
from xlgap.models.base import POOLINGS, Backend
from xlgap.models.decode import (
    PromptCache,
    SharedPrefixDecoder,
    length_groups,
    merge_prompt_caches,
)
from xlgap.models.hf_scoring import ExactScoring
from xlgap.models.hf_support import (
    fast_inference,
    out_of_memory_hint,
    resolve_device,
    resolve_dtype,
    weights_fingerprint,
)
from xlgap.models.layers import apply_logit_head
from xlgap.models.onednn import PackedWeights
from xlgap.models.onednn import eligible as onednn_eligible
from xlgap.models.sampler import head_sample, step_uniforms, stream_keys
from xlgap.models.tokens import adds_special_tokens, cut_at_stop, resolve_is_chat


class HFBackend(ExactScoring, Backend):
    """Any ``AutoModelForCausalLM`` (a hub id, a local directory, or a model object)."""

    kind = "hf"

    def __init__(self, model: Any, tokenizer: Any, *, name: str, batch_size: int = 16,
                 is_chat: bool | None = None, fingerprint: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = max(1, int(batch_size))
        self.device = next(model.parameters()).device
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.is_chat = resolve_is_chat(tokenizer, name, is_chat)
        self._fingerprint = fingerprint or weights_fingerprint(model, name)
        #: tags of modifications active on the model (steering hooks, adapters); they are
        #: part of the fingerprint, so a modified model never shares cache entries with
        #: the plain one. Whoever installs a modification adds its tag and removes it after.
        self.modifiers: list[str] = []
        eos = getattr(model.generation_config, "eos_token_id", None) if hasattr(
            model, "generation_config") else None
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if tokenizer.eos_token_id is not None:
            eos_ids.append(tokenizer.eos_token_id)
        self._eos = frozenset(int(e) for e in eos_ids)
        # transformers renamed ``past_key_values`` to ``cache`` in 5.x.
        params = inspect.signature(self.model.base_model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        # oneDNN-packed copies of the float32 weights, made on first use (one copy of the
        # linear weights in memory); _packed_head: the linears are switched to them now
        self._packs = PackedWeights()
        self._packed_head = False

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "auto", dtype: str = "auto",
                        batch_size: int = 16, is_chat: bool | None = None,
                        chat_template: str | None = None) -> HFBackend:
        """``chat_template``: a Jinja template to use instead of the tokenizer's own."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        local = Path(name_or_path).expanduser()
        offline = bool(os.environ.get("HF_HUB_OFFLINE")) or local.exists()
        try:
            tok = AutoTokenizer.from_pretrained(str(local) if local.exists() else name_or_path,
                                                local_files_only=offline)
            model = AutoModelForCausalLM.from_pretrained(
                str(local) if local.exists() else name_or_path, dtype=torch_dtype,
                local_files_only=offline)
        except (OSError, ValueError) as exc:
            tried = [f"local path {local} ({'exists' if local.exists() else 'does not exist'})"]
            if not local.exists():
                tried.append(f"Hugging Face id {name_or_path!r} "
                             f"({'offline cache only' if offline else 'cache, then the hub'})")
            raise ModelError(f"model {name_or_path!r} not found; tried {'; '.join(tried)}. "
                             f"Use --model embedded, a local directory with config.json and "
                             f"weights, or a hub id. ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]})") from exc
        model.to(dev)
        if chat_template:
            tok.chat_template = chat_template
        return cls(model, tok, name=name_or_path, batch_size=batch_size, is_chat=is_chat)

    # -- properties --------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        if not self.modifiers:
            return self._fingerprint
        tagged = "|".join([self._fingerprint, *self.modifiers])
        return hashlib.sha256(tagged.encode()).hexdigest()[:24]

    @property
    def supports_white_box(self) -> bool:
        return True

    @property
    def n_layers(self) -> int:
        return int(self.model.config.get_text_config().num_hidden_layers) + 1

    def chat_prompt(self, user_message: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False,
            add_generation_prompt=True)

    # -- tokenisation helpers ----------------------------------------------------------
    def _add_special(self, text: str) -> bool:
        return adds_special_tokens(self.tokenizer, self.is_chat, text)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        add = add_special_tokens and self._add_special(text)
        return list(self.tokenizer(text, add_special_tokens=add)["input_ids"])

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            if seq:
                ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
                mask[row, width - len(seq):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 past: Any = None) -> tuple[torch.Tensor, Any]:
        """Final (post-norm) hidden states of every position, and the updated cache."""
        from transformers import DynamicCache

        cache = past if past is not None else DynamicCache(config=self.model.config)
        out = self.model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    **{self._cache_kw: cache}, use_cache=True)
        return out.last_hidden_state, cache

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.model.get_output_embeddings()
        logits = head(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits.float()

    # -- generate ----------------------------------------------------------------------
    @fast_inference
    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0,
                 max_new_tokens: int = 16, seed: int = 0,
                 stop: Sequence[str] = ("\n",)) -> list[list[str]]:
        encoded = [self.encode(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        # Rows in flight = prompts x n. The output head wants wide matmuls, and every
        # batch ends in a tail of few long answers where the head's weight is read for a
        # few rows; so take many rows: batch_size * 32 when prompt caches are shared
        # (a row then costs only its own tokens), batch_size * 8 when each row copies
        # its prompt's cache.
        rows = self.batch_size * (32 if SharedPrefixDecoder.supports(self.model) else 8)
        per_batch = max(1, rows // max(1, n))
        results: list[list[str]] = [[] for _ in prompts]
        for start in range(0, len(order), per_batch):
            idx = order[start:start + per_batch]
            with out_of_memory_hint(self.batch_size):
                # an empty stop string is no stop (cut_at_stop's rule): it would end every
                # answer at its first token
                texts = self._sample([encoded[i] for i in idx], n, temperature,
                                     max_new_tokens, seed, tuple(s for s in stop if s))
            for i, t in zip(idx, texts, strict=True):
                results[i] = t
        return results

    def _head(self) -> tuple[torch.Tensor | None, float | None]:
        """The output head's weight when the fused sampler can use it (a plain bias-free
        linear head without hooks), and the final logit softcap."""
        config = self.model.config
        cap = getattr(config, "final_logit_softcapping", None)
        if cap is None and hasattr(config, "get_text_config"):
            cap = getattr(config.get_text_config(), "final_logit_softcapping", None)
        head = self.model.get_output_embeddings()
        plain = (type(head) is torch.nn.Linear and head.bias is None
                 and not head._forward_hooks and not head._forward_pre_hooks)
        return (head.weight if plain else None), cap

    def _sample(self, prompts: list[list[int]], n: int, temperature: float, max_new: int,
                seed: int, stop: tuple[str, ...]) -> list[list[str]]:
        last, cache, mask, positions, shared = self._encode_prompts(prompts, max_new)
        owner = torch.arange(len(prompts), device=self.device).repeat_interleave(n)
        weight, cap = self._head()
        # One counter-based random stream per sample: (seed, prompt, index) -> key.
        keys = np.concatenate([stream_keys(seed, p, n) for p in prompts])
        if shared:  # decoder rows start as one per prompt
            decoder = SharedPrefixDecoder(self.model, cache, mask, positions,
                                          torch.arange(len(prompts), device=self.device),
                                          max_new)
        else:  # transformers' cache: one copy of the prompt's cache per sample
            cache.batch_select_indices(owner)
            mask, next_pos = mask[owner], positions[owner, -1] + 1
        # ``states`` holds one state per computed row; sample row r reads states[parent[r]].
        # The first token of all n samples of a prompt comes from the same state.
        states, parent = last, owner
        slots = list(range(len(owner)))  # output slot of each sample row in flight
        out_tokens: list[list[int]] = [[] for _ in slots]
        finished = [False] * len(slots)
        for step in range(max_new):
            tokens = self._pick(states, parent, weight, cap, step_uniforms(keys, step),
                                temperature)
            self._append(tokens.tolist(), slots, out_tokens, finished, stop)
            alive = [r for r, slot in enumerate(slots) if not finished[slot]]
            if not alive or step == max_new - 1:
                break
            if shared:
                # Samples of a prompt that drew the same tokens so far have the same state:
                # one computed row each (the embedded model at temperature 1 saves about a
                # tenth of the rows in the first steps). Rows are ordered by (parent,
                # token), so a prompt's rows stay adjacent; a row that splits copies its
                # parent's cache.
                live = torch.tensor(alive, device=self.device)
                pairs = torch.stack([parent[live], tokens[live]], dim=1)
                unique, parent = torch.unique(pairs, dim=0, return_inverse=True)
                decoder.select(unique[:, 0])
                states = decoder.step(unique[:, 1])
                slots, keys = [slots[r] for r in alive], keys[alive]
                continue
            # Rows finished leave once an eighth finished (each leaving copies the cache).
            if len(alive) < len(slots) and len(slots) - len(alive) >= max(1, len(slots) // 8):
                sel = torch.tensor(alive, device=self.device)
                tokens, keys, slots = tokens[sel], keys[alive], [slots[r] for r in alive]
                cache.batch_select_indices(sel)
                mask, next_pos = mask[sel], next_pos[sel]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            hidden, cache = self._forward(tokens[:, None], mask, next_pos[:, None], cache)
            states, next_pos, parent = hidden[:, -1], next_pos + 1, None
        texts = [cut_at_stop(self.tokenizer.decode(t, skip_special_tokens=True), stop)
                 for t in out_tokens]
        return [texts[p * n:(p + 1) * n] for p in range(len(prompts))]

    def _encode_prompts(self, prompts: list[list[int]], max_new: int
                        ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor, bool]:
        """The prompts' last states, keys/values, mask and positions (left-padded to the
        longest), and whether :class:`SharedPrefixDecoder` takes over from here for
        ``max_new`` more tokens (then the cache is a :class:`PromptCache`, else
        transformers' own)."""
        ids, mask, positions = self._left_pad(prompts)
        width = ids.shape[1]
        shared = SharedPrefixDecoder.fits(self.model, width, max_new)
        if shared:
            last, cache = self._grouped_prefill(prompts, width)
            shared = SharedPrefixDecoder.applies(self.model, cache, width, max_new)
        if not shared:  # transformers' own cache, of all prompts at once
            hidden, cache = self._forward(ids, mask, positions)
            last = hidden[:, -1]
        return last, cache, mask, positions, shared

    def _grouped_prefill(self, prompts: list[list[int]], width: int
                         ) -> tuple[torch.Tensor, PromptCache]:
        """The prompts' last states and keys/values, encoded in groups of similar length
        (:func:`length_groups`, when the prompts come sorted by length), so that short
        prompts are not padded to the longest one; the caches are merged at ``width``."""
        lengths = [len(p) for p in prompts]
        groups = (length_groups(lengths) if lengths == sorted(lengths)
                  else [range(len(prompts))])
        last, caches = [], []
        for group in groups:
            ids, mask, positions = self._left_pad(prompts[group.start:group.stop])
            hidden, cache = self._forward(ids, mask, positions)
            last.append(hidden[:, -1])
            caches.append(cache)
        return torch.cat(last), merge_prompt_caches(caches, width)

    def _append(self, tokens: list[int], slots: list[int], out_tokens: list[list[int]],
                finished: list[bool], stop: tuple[str, ...]) -> None:
        """Each sample row's new token onto its answer; an end token or a stop string
        finishes it (rows already finished, not yet dropped, are skipped)."""
        for tok, slot in zip(tokens, slots, strict=True):
            if finished[slot]:
                continue
            if tok in self._eos:
                finished[slot] = True
                continue
            out_tokens[slot].append(tok)
            if stop and any(s in self.tokenizer.decode(out_tokens[slot][-4:]) for s in stop):
                finished[slot] = True

    def _packs_on(self, weight: torch.Tensor) -> bool:
        """Whether the head's ``weight`` runs through packed pieces now."""
        return self._packed_head and onednn_eligible(weight)

    def _pick(self, states: torch.Tensor, rows: torch.Tensor | None, weight: torch.Tensor | None,
              cap: float | None, uniforms: torch.Tensor, temperature: float) -> torch.Tensor:
        """One token per row (``states[rows]``) through the fused head sampler; a head it
        cannot fuse (hooks, bias, adapters) is applied whole, then sampled by the same law."""
        if weight is None:
            return head_sample(self._logits(states), None, uniforms, temperature, rows=rows)
        packed = self._packs.pieces(weight) if self._packs_on(weight) else None
        return head_sample(states, weight, uniforms, temperature, cap, rows=rows, packed=packed)

    def _all_layer_batches(self, encoded: list[list[int]]
                           ) -> Iterator[tuple[list[int], torch.Tensor, Any]]:
        """Length-sorted batches through the model body with every layer's states kept:
        (original indices, attention mask, model output) per batch."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            ids, mask, positions = self._left_pad([encoded[i] for i in idx])
            with out_of_memory_hint(self.batch_size):
                res = self.model.base_model(input_ids=ids, attention_mask=mask,
                                            position_ids=positions, output_hidden_states=True,
                                            use_cache=False)
            yield idx, mask, res

    # -- hidden states -----------------------------------------------------------------
    @fast_inference
    def hidden_states(self, texts: Sequence[str], layers: Sequence[int] | None = None,
                      pooling: str = "mean") -> np.ndarray:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        layer_idx = list(range(self.n_layers)) if layers is None else list(layers)
        bad = [i for i in layer_idx if not -self.n_layers <= i < self.n_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range: this model has {self.n_layers} "
                             "hidden-state layers (0 = embeddings)")
        encoded = [self.encode(t) for t in texts]
        has_bos = self.tokenizer.bos_token_id is not None and all(
            e and e[0] == self.tokenizer.bos_token_id for e in encoded)
        hidden_size = int(self.model.config.get_text_config().hidden_size)
        out = np.zeros((len(texts), len(layer_idx), hidden_size), dtype=np.float32)
        for idx, mask, res in self._all_layer_batches(encoded):
            weights = mask.clone().float()
            if pooling == "mean_no_bos" and has_bos:
                first = mask.argmax(-1)  # left padding: first real token is the BOS
                weights[torch.arange(len(idx)), first] = 0.0
                weights[weights.sum(-1) == 0] = mask[weights.sum(-1) == 0].float()
            for j, layer in enumerate(layer_idx):
                h = res.hidden_states[layer].float()
                if pooling == "last":
                    pooled = h[:, -1]
                else:
                    pooled = (h * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
                out[idx, j] = pooled.cpu().numpy()
        return out

    # -- logit lens ---------------------------------------------------------------------
    @fast_inference
    def layer_logits(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The logit lens at the last prompt position, at every layer.

        The final norm and the unembedding are applied to each layer's residual. Returns
        ``(logprobs, ranks)``, each ``(len(prompts), n_layers, max_tokens)`` (NaN-padded):
        the log-probability of each requested token and its rank (0 = most likely).
        """
        encoded = [self.encode(p) for p in prompts]
        width = max((len(t) for t in token_ids), default=0)
        logps = np.full((len(prompts), self.n_layers, width), np.nan, dtype=np.float32)
        ranks = np.full((len(prompts), self.n_layers, width), np.nan, dtype=np.float32)
        for idx, _, res in self._all_layer_batches(encoded):
            for layer in range(self.n_layers):
                h = res.hidden_states[layer][:, -1]
                # HF's last entry already has the final norm applied.
                logits = (self._logits(h) if layer == self.n_layers - 1
                          else apply_logit_head(self.model, h).float())
                logp = torch.log_softmax(logits, dim=-1)
                for row, i in enumerate(idx):
                    toks = torch.tensor(list(token_ids[i]), dtype=torch.long, device=self.device)
                    if not len(toks):
                        continue
                    chosen = logp[row, toks]
                    logps[i, layer, :len(toks)] = chosen.cpu().numpy()
                    ranks[i, layer, :len(toks)] = (
                        (logp[row][None, :] > chosen[:, None]).sum(-1).cpu().numpy())
        return logps, ranks

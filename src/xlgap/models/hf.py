"""Hugging Face causal LMs behind the xlgap backend interface.

Batching is where peer tools most often go wrong, so every batched path here uses left
padding, an attention mask and explicit position ids (``cumsum(mask) - 1``), and the
tests check batched results against one-at-a-time results.

Speed on small CPUs: a 262k-token output head dominates each decoding step, so

* ``generate`` encodes each prompt once; its ``n`` samples share its KV cache
  (:mod:`xlgap.models.decode`, Gemma 3; other models copy the cache through
  transformers), the output head and the sampling step are fused over vocabulary chunks
  so the ``[rows x vocabulary]`` logit matrix never exists (:mod:`xlgap.models.sampler`);
  prompts are batched together (sorted by length) and rows that finished leave the
  batch (answers are short);
* ``score`` encodes each prompt once, copies its cache to its continuations, and takes
  the distribution of a continuation's first token from the prompt's last position
  (shared by all continuations), so the head runs only where it must.

Sampling is counter-based: sample ``k`` of a prompt draws, at step ``t``, the uniform
hashed from (run seed, prompt tokens, ``k``, ``t``), so a prompt's samples do not depend
on what else is in its batch, nor on ``n``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xlgap.errors import ModelError
from xlgap.models.base import POOLINGS, Backend, check_normalize
from xlgap.models.decode import SharedPrefixDecoder
from xlgap.models.layers import apply_logit_head
from xlgap.models.sampler import head_sample, step_uniforms, stream_keys
from xlgap.models.tokens import adds_special_tokens, cut_at_stop, joint_tokens, resolve_is_chat

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float64": torch.float64}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown --device {device!r}; use cpu, cuda, cuda:N or auto") from exc


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # float32 on CPU: half precision is slow there and breaks the 1e-4 batching checks.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ModelError(f"unknown --dtype {dtype!r}; choose one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def weights_fingerprint(model: torch.nn.Module, name: str) -> str:
    """Hash of the config and a sample of every parameter: cheap, and changes when weights do."""
    digest = hashlib.sha256(name.encode())
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for pname, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        digest.update(pname.encode())
        digest.update(flat[:256].float().cpu().numpy().tobytes())
        digest.update(flat[-256:].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:24]


@contextlib.contextmanager
def out_of_memory_hint(batch_size: int) -> Iterator[None]:
    """Turn an out-of-memory crash into advice to shrink the batch."""
    try:
        yield
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        raise ModelError(f"out of memory with --batch-size {batch_size}; try "
                         f"--batch-size {max(1, batch_size // 2)}") from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
            raise ModelError(f"out of memory with --batch-size {batch_size}; try "
                             f"--batch-size {max(1, batch_size // 2)}") from exc
        raise


class HFBackend(Backend):
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
    @torch.inference_mode()
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
        ids, mask, positions = self._left_pad(prompts)
        hidden, cache = self._forward(ids, mask, positions)
        owner = torch.arange(len(prompts), device=self.device).repeat_interleave(n)
        weight, cap = self._head()
        # One counter-based random stream per sample: (seed, prompt, index) -> key.
        keys = np.concatenate([stream_keys(seed, p, n) for p in prompts])
        shared = SharedPrefixDecoder.applies(self.model, cache, ids.shape[1], max_new)
        if shared:
            decoder = SharedPrefixDecoder(self.model, cache, mask, positions, owner, max_new)
        else:  # transformers' cache: one copy of the prompt's cache per sample
            cache.batch_select_indices(owner)
            mask, next_pos = mask[owner], positions[owner, -1] + 1
        # The first token of all n samples of a prompt comes from the same state.
        states, rows = hidden[:, -1], owner
        row_id = list(range(len(owner)))  # output slot of each active row
        out_tokens: list[list[int]] = [[] for _ in row_id]
        finished = [False] * len(row_id)
        for step in range(max_new):
            tokens = self._pick(states, rows, weight, cap, step_uniforms(keys, step),
                                temperature)
            for r, tok in enumerate(tokens.tolist()):
                slot = row_id[r]
                if finished[slot]:
                    continue  # finished, but not yet dropped from the batch
                if tok in self._eos:
                    finished[slot] = True
                    continue
                out_tokens[slot].append(tok)
                if stop and any(s in self.tokenizer.decode(out_tokens[slot][-4:]) for s in stop):
                    finished[slot] = True
            alive = [r for r, slot in enumerate(row_id) if not finished[slot]]
            if not alive or step == max_new - 1:
                break
            # Finished rows leave at once when prompt caches are shared (a row's own state
            # is small); copying transformers' cache waits until an eighth finished.
            if len(alive) < len(row_id) and (
                    shared or len(row_id) - len(alive) >= max(1, len(row_id) // 8)):
                sel = torch.tensor(alive, device=self.device)
                tokens, keys = tokens[sel], keys[alive]
                row_id = [row_id[r] for r in alive]
                if shared:
                    decoder.select(sel)
                else:
                    cache.batch_select_indices(sel)
                    mask, next_pos = mask[sel], next_pos[sel]
            if shared:
                states = decoder.step(tokens)
            else:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                hidden, cache = self._forward(tokens[:, None], mask, next_pos[:, None], cache)
                states, next_pos = hidden[:, -1], next_pos + 1
            rows = None
        texts = [cut_at_stop(self.tokenizer.decode(t, skip_special_tokens=True), stop)
                 for t in out_tokens]
        return [texts[p * n:(p + 1) * n] for p in range(len(prompts))]

    def _pick(self, states: torch.Tensor, rows: torch.Tensor | None, weight: torch.Tensor | None,
              cap: float | None, uniforms: torch.Tensor, temperature: float) -> torch.Tensor:
        """One token per row (``states[rows]``) through the fused head sampler; a head it
        cannot fuse (hooks, bias, adapters) is applied whole, then sampled by the same law."""
        if weight is None:
            return head_sample(self._logits(states), None, uniforms, temperature, rows=rows)
        return head_sample(states, weight, uniforms, temperature, cap, rows=rows)

    # -- score -------------------------------------------------------------------------
    def _joint_request(self, prompt: str, continuations: Sequence[str]
                       ) -> tuple[list[int], list[list[int]], list[int]]:
        """Joint tokenization of one request (:func:`xlgap.models.tokens.joint_tokens`):
        the shared token prefix, each candidate's tokens after it, and the UTF-8 bytes of
        the text those tokens cover."""
        cut, joint, sizes = joint_tokens(self.tokenizer, prompt, continuations,
                                         self._add_special(prompt))
        prefix = joint[0][:cut] if joint else self.encode(prompt)
        return prefix, [ids[cut:] for ids in joint], sizes

    @torch.inference_mode()
    def score_batch(self, requests: Sequence[tuple[str, Sequence[str]]],
                    normalize: str = "none") -> list[list[float]]:
        check_normalize(normalize)
        enc, sizes = [], []
        for prompt, conts in requests:
            prefix, tails, nbytes = self._joint_request(prompt, conts)
            enc.append((prefix, tails))
            sizes.append([len(t) for t in tails] if normalize == "tokens" else nbytes)
        order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))
        results: list[list[float]] = [[] for _ in requests]
        start = 0
        while start < len(order):
            # Group prompts until their continuations fill about batch_size * 8 rows
            # (continuations are a few tokens each).
            idx, rows = [], 0
            while start < len(order) and (not idx or rows + len(enc[order[start]][1])
                                          <= self.batch_size * 8):
                idx.append(order[start])
                rows += len(enc[order[start]][1])
                start += 1
            with out_of_memory_hint(self.batch_size):
                scored = self._score_group([enc[i] for i in idx])
            for i, s in zip(idx, scored, strict=True):
                results[i] = s
        if normalize != "none":
            results = [[v / n if n else 0.0 for v, n in zip(row, size, strict=True)]
                       for row, size in zip(results, sizes, strict=True)]
        return results

    def _score_group(self, group: list[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        prompts = [p for p, _ in group]
        ids, mask, positions = self._left_pad(prompts)
        hidden, cache = self._forward(ids, mask, positions)
        first_logp = torch.log_softmax(self._logits(hidden[:, -1]), dim=-1)  # (P, V)
        owner = [g for g, (_, conts) in enumerate(group) for _ in conts]
        conts = [c for _, cs in group for c in cs]
        scores = torch.zeros(len(conts), dtype=torch.float64)
        for r, cont in enumerate(conts):
            if cont:
                scores[r] = float(first_logp[owner[r], cont[0]])
        # Continuations longer than one token are fed after a copy of their prompt's
        # cache, shortest first in sub-batches, so padding stays small.
        longer = sorted((r for r, c in enumerate(conts) if len(c) > 1),
                        key=lambda r: len(conts[r]))
        for start in range(0, len(longer), self.batch_size * 4):
            rows = longer[start:start + self.batch_size * 4]
            token_lp, positions_of = self._score_tails(
                cache, mask, positions, [owner[r] for r in rows], [conts[r] for r in rows])
            scores.index_add_(0, torch.tensor([rows[i] for i in positions_of]), token_lp)
        out: list[list[float]] = [[] for _ in group]
        for r, g in enumerate(owner):
            out[g].append(float(scores[r]))
        return out

    def _score_tails(self, cache: Any, mask: torch.Tensor, positions: torch.Tensor,
                     owners: list[int], conts: list[list[int]]
                     ) -> tuple[torch.Tensor, list[int]]:
        """Log-probs of tokens 2.. of each continuation, fed after its prompt's cache.

        Returns the token log-probs and, for each, the index of its continuation.
        """
        sel = torch.tensor(owners, device=self.device)
        sub_cache = copy.deepcopy(cache)  # prompt caches are small; the original is reused
        sub_cache.batch_select_indices(sel)
        width = max(len(c) for c in conts) - 1  # the last token is predicted, never fed
        feed = torch.full((len(conts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        feed_mask = torch.zeros((len(conts), width), dtype=torch.long)
        for r, cont in enumerate(conts):
            feed[r, :len(cont) - 1] = torch.tensor(cont[:-1], dtype=torch.long)
            feed_mask[r, :len(cont) - 1] = 1
        feed, feed_mask = feed.to(self.device), feed_mask.to(self.device)
        full_mask = torch.cat([mask[sel], feed_mask], dim=1)
        feed_pos = positions[sel, -1:] + 1 + torch.arange(width, device=self.device)
        hidden, _ = self._forward(feed, full_mask, feed_pos, sub_cache)
        # Only positions that predict a real token go through the output head.
        want = [(r, t) for r, cont in enumerate(conts) for t in range(len(cont) - 1)]
        rr = torch.tensor([r for r, _ in want], device=self.device)
        tt = torch.tensor([t for _, t in want], device=self.device)
        logp = torch.log_softmax(self._logits(hidden[rr, tt]), dim=-1)
        target = torch.tensor([conts[r][t + 1] for r, t in want], device=self.device)
        token_lp = logp.gather(1, target[:, None]).squeeze(1).double().cpu()
        return token_lp, [r for r, _ in want]

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
    @torch.inference_mode()
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
    @torch.inference_mode()
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

"""Exact candidate scoring for :class:`xlgap.models.hf.HFBackend` (mixed into it).

A request is a prompt and its candidate continuations, tokenized jointly
(:func:`xlgap.models.tokens.joint_tokens`). Each prompt is encoded once; a candidate's
first token is read from its prompt's last state, shared by all candidates; its later
tokens are fed after the prompt, through the shared-prompt decoder where it applies (a
candidate is a row reading its prompt's cache) or after a copy of transformers' cache.
A token's log-probability is its logit minus the log-sum-exp of the fused head
(:func:`xlgap.models.sampler.head_log_probs`), so no ``[rows x vocabulary]`` matrix is
built.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from xlgap.models.base import check_normalize
from xlgap.models.decode import PromptCache, SharedPrefixDecoder
from xlgap.models.hf_support import fast_inference, out_of_memory_hint
from xlgap.models.sampler import head_log_probs
from xlgap.models.tokens import joint_tokens


class ExactScoring:
    """``score_batch`` and its helpers; the backend supplies the model, the tokenizer,
    ``encode``, ``_add_special``, ``_encode_prompts``, ``_left_pad``, ``_forward``,
    ``_logits``, ``_head`` and ``_packs_on``."""

    model: Any
    tokenizer: Any
    device: torch.device
    batch_size: int
    _packs: Any

    def _joint_request(self, prompt: str, continuations: Sequence[str]
                       ) -> tuple[list[int], list[list[int]], list[int]]:
        """Joint tokenization of one request (:func:`xlgap.models.tokens.joint_tokens`):
        the shared token prefix, each candidate's tokens after it, and the UTF-8 bytes of
        the text those tokens cover."""
        cut, joint, sizes = joint_tokens(self.tokenizer, prompt, continuations,
                                         self._add_special(prompt))
        prefix = joint[0][:cut] if joint else self.encode(prompt)
        return prefix, [ids[cut:] for ids in joint], sizes

    @fast_inference
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
        owner = [g for g, (_, conts) in enumerate(group) for _ in conts]
        conts = [c for _, cs in group for c in cs]
        longest = max((len(c) for c in conts), default=1)
        last, cache, mask, positions, shared = self._encode_prompts(prompts,
                                                                    max(1, longest - 1))
        scores = torch.zeros(len(conts), dtype=torch.float64)
        first = [r for r, cont in enumerate(conts) if cont]
        if first:  # a continuation's first token, from its prompt's last state
            scores[first] = self._token_logp(
                last, torch.tensor([owner[r] for r in first], device=self.device),
                torch.tensor([conts[r][0] for r in first], device=self.device)).cpu()
        if shared:
            scores += self._score_tails_shared(cache, mask, positions, owner, conts)
        else:
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

    def _score_tails_shared(self, cache: PromptCache, mask: torch.Tensor,
                            positions: torch.Tensor, owner: list[int],
                            conts: list[list[int]]) -> torch.Tensor:
        """Summed log-probs of tokens 2.. of each continuation, through the shared-prompt
        decoder: a continuation is a row reading its prompt's cache (no copy of it), fed
        one token per step; rows leave when their continuation ends."""
        total = torch.zeros(len(conts), dtype=torch.float64)
        live = [r for r, c in enumerate(conts) if len(c) > 1]  # prompt order (owner sorted)
        if not live:
            return total
        longest = max(len(conts[r]) for r in live)
        decoder = SharedPrefixDecoder(self.model, cache, mask, positions,
                                      torch.arange(len(mask), device=self.device), longest - 1)
        decoder.select(torch.tensor([owner[r] for r in live], device=self.device))
        for t in range(longest - 1):
            states = decoder.step(torch.tensor([conts[r][t] for r in live], device=self.device))
            target = torch.tensor([conts[r][t + 1] for r in live], device=self.device)
            total[live] += self._token_logp(states, None, target).cpu()
            keep = [j for j, r in enumerate(live) if len(conts[r]) > t + 2]
            if not keep:
                break
            decoder.select(torch.tensor(keep, device=self.device))
            live = [live[j] for j in keep]
        return total

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
        target = torch.tensor([conts[r][t + 1] for r, t in want], device=self.device)
        token_lp = self._token_logp(hidden[rr, tt], None, target).cpu()
        return token_lp, [r for r, _ in want]

    def _token_logp(self, states: torch.Tensor, rows: torch.Tensor | None,
                    tokens: torch.Tensor) -> torch.Tensor:
        """Log-probability (float64) of ``tokens[r]`` after state ``states[rows[r]]``: the
        fused head (:func:`head_log_probs`) when it applies, else a full log-softmax."""
        weight, cap = self._head()
        if weight is None:
            logp = torch.log_softmax(self._logits(states if rows is None else states[rows]),
                                     dim=-1)
            return logp.gather(1, tokens[:, None]).squeeze(1).double()
        packed = self._packs.pieces(weight) if self._packs_on(weight) else None
        return head_log_probs(states, weight, tokens, rows, cap, packed)

"""Sampling from the output head without materialising the logit matrix.

A 262k-word head turns each decoding step's ``[rows x hidden]`` states into a
``[rows x 262144]`` float32 matrix (about 1 MB per row) that softmax, cumsum and
searchsorted then read several times. Here the head is applied over vocabulary chunks
small enough to stay in the last-level cache, keeping only a log-sum-exp per row and
1024-word block; the law is the exact softmax over the full vocabulary:

1. ``lse[r, b] = logsumexp(logits[r, block b] / T)`` for every block of 1024 words
   (one pass over the head, applied a chunk of words at a time: 2048 on a CPU);
2. the block is drawn by inverting the cumulative block masses with the row's uniform;
3. inside the drawn block (recomputed for that row only: 1/256 of the head), the word
   is drawn by inverting the block's own cumulative distribution with the rescaled
   remainder of the same uniform.

This is inverse-CDF sampling in two stages, so token ``k`` is drawn with probability
``softmax(logits / T)[k]`` (up to float32 rounding, like the one-matrix version). Greedy
decoding (``T = 0``) keeps a running maximum instead.

Randomness is counter-based: a row's uniform for a step is a hash of (run seed, prompt
digest, sample index, step), so a sample never depends on what else is in its batch, on
which rows finished earlier, or on the order rows are processed in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xlgap.models.onednn import PIECE, run_piece

#: words per vocabulary chunk on a CPU: the packed head's piece, small enough that the
#: ``rows x CHUNK`` logits (4 MB at 480 rows) are read back by the log-sum-exp from cache,
#: not memory. On the 2-core test machine the head ran at 150-160 GFLOP/s through MKL with
#: 1024-2048-word chunks against 105-117 with 32768 (240-480 rows; 25 rows: 77 against
#: 44), and at about 400 through oneDNN's packed pieces.
CHUNK = PIECE
#: on a GPU, where each chunk is a kernel launch, chunks are wider
CHUNK_GPU = 32768
#: words per block of the first stage: one log-sum-exp per row and block is kept, and the
#: drawn block (not the whole chunk) is recomputed for its row in the second stage.
BLOCK = 1024

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, vectorised (uint64 arithmetic wraps, as intended)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def stream_keys(seed: int, prompt_ids: Sequence[int], n: int) -> np.ndarray:
    """One 64-bit key per sample of a prompt: a hash of (seed, prompt tokens, sample index)."""
    digest = hashlib.sha256(json.dumps([int(seed), [int(t) for t in prompt_ids]]).encode())
    base = np.uint64(int.from_bytes(digest.digest()[:8], "little"))
    with np.errstate(over="ignore"):
        return _splitmix64(base ^ _splitmix64(np.arange(n, dtype=np.uint64)))


def step_uniforms(keys: np.ndarray, step: int) -> torch.Tensor:
    """A uniform in [0, 1) per row for decoding step ``step`` (53 random bits, float64)."""
    with np.errstate(over="ignore"):
        mixed = _splitmix64(keys ^ _splitmix64(np.full_like(keys, step + 1)))
    return torch.from_numpy((mixed >> np.uint64(11)).astype(np.float64) * 2.0 ** -53)


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor | None, start: int, stop: int,
                  softcap: float | None, scale: float,
                  buffer: torch.Tensor | None = None,
                  packed: Sequence[Any] | None = None) -> torch.Tensor:
    """``logits[:, start:stop] * scale`` in float32 (softcapped first if the model does).

    ``weight=None``: ``hidden`` already holds the logits (a head that cannot be fused).
    ``buffer``: flat float32 scratch of at least ``rows x (stop - start)``, reused across
    chunks (a float32 head writes its logits there; the result is a view of it).
    ``packed``: the head in oneDNN pieces (:class:`xlgap.models.onednn.PackedWeights`),
    used instead of ``weight``; chunks are then pieces."""
    if packed is not None:
        logits = run_piece(hidden, packed[start // _piece_size(packed)])
    elif weight is None:
        logits = hidden[:, start:stop].float()
    elif buffer is not None and hidden.dtype == weight.dtype == buffer.dtype:
        logits = buffer[:hidden.shape[0] * (stop - start)].view(hidden.shape[0], stop - start)
        torch.mm(hidden, weight[start:stop].t(), out=logits)
    else:
        logits = torch.nn.functional.linear(hidden, weight[start:stop]).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if scale != 1.0:
        logits = logits * scale
    return logits


def _scales(weight: torch.Tensor | None, temperature: float,
            softcap: float | None) -> tuple[float, float]:
    """Where 1/temperature is applied: to the states (rows x hidden, cheaper than to every
    logit) unless softcapping needs the raw logits or the logits are given."""
    if softcap or weight is None:
        return 1.0, 1.0 / temperature
    return 1.0 / temperature, 1.0


def _piece_size(packed: Sequence[Any]) -> int:
    """Words per packed piece (all but the last piece have this many)."""
    return int(packed[0].shape[0])


def _chunk(hidden: torch.Tensor, chunk: int | None, packed: Sequence[Any] | None) -> int:
    """Words per chunk: the packed pieces' size, else as asked, else by device."""
    if packed is not None:
        return _piece_size(packed)
    if chunk:
        return chunk
    return CHUNK if hidden.device.type == "cpu" else CHUNK_GPU


def _vocab(hidden: torch.Tensor, weight: torch.Tensor | None) -> int:
    return hidden.shape[1] if weight is None else weight.shape[0]


def head_argmax(hidden: torch.Tensor, weight: torch.Tensor | None, softcap: float | None = None,
                chunk: int | None = None, packed: Sequence[Any] | None = None) -> torch.Tensor:
    """``argmax(hidden @ weight.T)`` per row, chunk by chunk (first index on ties)."""
    chunk = _chunk(hidden, chunk, packed)
    best = torch.full((hidden.shape[0],), -torch.inf, device=hidden.device)
    arg = torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
    vocab = _vocab(hidden, weight)
    for start in range(0, vocab, chunk):
        stop = min(start + chunk, vocab)
        val, idx = _chunk_logits(hidden, weight, start, stop, softcap, 1.0,
                                 packed=packed).max(dim=1)
        better = val > best  # strict: an earlier chunk keeps a tie, as argmax does
        best = torch.where(better, val, best)
        arg = torch.where(better, idx + start, arg)
    return arg


def chunk_log_masses(hidden: torch.Tensor, weight: torch.Tensor | None, temperature: float,
                     softcap: float | None = None, chunk: int | None = None,
                     block: int = BLOCK, packed: Sequence[Any] | None = None) -> torch.Tensor:
    """``[rows x n_blocks]``: the log-sum-exp of ``logits / temperature`` over each block of
    ``block`` words (the head is applied ``chunk`` words at a time, or piece by piece of
    ``packed``; a partial last block is padded with -inf, i.e. no mass)."""
    chunk = _chunk(hidden, chunk, packed)
    block = min(block, chunk)
    vocab = _vocab(hidden, weight)
    if chunk % block and chunk < vocab:  # blocks would straddle chunks
        raise ValueError(f"chunk {chunk} is not a multiple of block {block}")
    n_blocks = -(-vocab // block)
    out = torch.empty((hidden.shape[0], n_blocks), dtype=torch.float32, device=hidden.device)
    pre, post = _scales(weight, temperature, softcap)
    h = hidden if pre == 1.0 else hidden * pre
    buffer = None if packed is not None or weight is None else torch.empty(
        hidden.shape[0] * chunk, dtype=torch.float32, device=hidden.device)
    for start in range(0, vocab, chunk):
        stop = min(start + chunk, vocab)
        logits = _chunk_logits(h, weight, start, stop, softcap, post, buffer, packed)
        width = -(-(stop - start) // block) * block
        if width != stop - start:
            logits = torch.nn.functional.pad(logits, (0, width - (stop - start)),
                                             value=-torch.inf)
        out[:, start // block:start // block + width // block] = torch.logsumexp(
            logits.view(len(logits), width // block, block), dim=2)
    return out


def head_sample(hidden: torch.Tensor, weight: torch.Tensor | None, uniforms: torch.Tensor,
                temperature: float, softcap: float | None = None, chunk: int | None = None,
                rows: torch.Tensor | None = None, block: int = BLOCK,
                packed: Sequence[Any] | None = None) -> torch.Tensor:
    """One token per row from ``softmax(head(hidden) / temperature)``, by inverse CDF with
    the row's uniform (``uniforms``: ``[rows]`` in [0, 1)); ``temperature <= 0`` is greedy.

    ``weight=None``: ``hidden`` holds the logits. ``rows``: output row ``r`` uses state
    ``hidden[rows[r]]`` (samples of one prompt share their first state; the head then runs
    once per state, not once per sample). ``packed``: the head's weight in oneDNN pieces,
    for the pass over the whole vocabulary (the drawn block is recomputed from ``weight``).
    """
    if temperature <= 0:
        best = head_argmax(hidden, weight, softcap, chunk, packed)
        return best if rows is None else best[rows]
    chunk = _chunk(hidden, chunk, packed)
    block = min(block, chunk)
    lse = chunk_log_masses(hidden, weight, temperature, softcap, chunk, block,
                           packed).double()
    if rows is not None:
        lse, hidden = lse[rows], hidden[rows]
    masses = torch.softmax(lse, dim=1)  # each block's share of the row's probability
    cum = masses.cumsum(1)
    u = uniforms.to(device=hidden.device, dtype=torch.float64)[:, None] * cum[:, -1:]
    picked = torch.searchsorted(cum, u).squeeze(1).clamp(max=cum.shape[1] - 1)
    # The remainder of u inside the drawn block, rescaled to [0, 1).
    before = torch.where(picked > 0, cum.gather(1, (picked - 1).clamp(min=0)[:, None])[:, 0],
                         torch.zeros_like(u[:, 0]))
    inner = ((u[:, 0] - before) / masses.gather(1, picked[:, None])[:, 0]).clamp(0.0, 1.0)
    tokens = torch.empty(hidden.shape[0], dtype=torch.long, device=hidden.device)
    pre, post = _scales(weight, temperature, softcap)
    vocab = _vocab(hidden, weight)
    # Rows share few blocks (likely words cluster), so recompute per drawn block.
    for c in torch.unique(picked).tolist():
        sel = (picked == c).nonzero().squeeze(1)
        start, stop = c * block, min((c + 1) * block, vocab)
        h = hidden[sel] if pre == 1.0 else hidden[sel] * pre
        probs = torch.softmax(_chunk_logits(h, weight, start, stop, softcap, post).double(), 1)
        cdf = probs.cumsum(1)
        target = inner[sel][:, None] * cdf[:, -1:]
        pos = torch.searchsorted(cdf, target).squeeze(1).clamp(max=stop - start - 1)
        tokens[sel] = pos + start
    return tokens


def head_log_probs(hidden: torch.Tensor, weight: torch.Tensor, tokens: torch.Tensor,
                   rows: torch.Tensor | None = None, softcap: float | None = None,
                   packed: Sequence[Any] | None = None) -> torch.Tensor:
    """``log_softmax(head(hidden[rows]))[r, tokens[r]]`` per row, in float64, without the
    ``[rows x vocabulary]`` matrix: the normaliser is the log-sum-exp of the block masses
    (one pass over the head, per state, not per row), the token's logit one dot product."""
    lse = torch.logsumexp(chunk_log_masses(hidden, weight, 1.0, softcap,
                                           packed=packed).double(), dim=1)
    if rows is not None:
        hidden, lse = hidden[rows], lse[rows]
    # the token's logit as the head's matmul gives it: float32 products and sums, rounded
    # to the head's dtype (so that a half-precision model's logit and normaliser agree)
    logit = (hidden.float() * weight[tokens].float()).sum(-1)
    if hidden.dtype != torch.float32:
        logit = logit.to(hidden.dtype).float()
    if softcap:
        logit = torch.tanh(logit / softcap) * softcap
    return logit.double() - lse

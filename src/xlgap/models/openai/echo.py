"""Scoring through an OpenAI-compatible server's echo: where the echoed tokens of a text
lie, and the joint log-probability of each candidate continuation computed from them.

A completions request with ``echo``, ``logprobs`` and ``max_tokens = 0`` returns the
tokens of ``prompt + continuation`` as the server tokenized it, with their character
offsets and log-probabilities. :func:`echo_layout` turns that into an
:class:`EchoLayout` (checked against the text, so a server whose offsets drift is
refused rather than scored wrongly), and :func:`joint_scores` scores all the candidates
of one request from the same token boundary (the rule of
:meth:`xlgap.models.base.Backend.score_batch`). Everything here is pure: no HTTP.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xlgap.models.base import check_normalize

#: Store operation of an echoed-scoring request; its value is an :class:`EchoLayout`.
#: (Distinct from ``openai.completions`` so that totals stored by older versions, which
#: cannot be re-split jointly, are never read as layouts.)
ECHO_OP = "openai.echo"


@dataclass(frozen=True)
class EchoLayout:
    """Where the echoed tokens of one text lie, and their log-probabilities.

    Token ``i`` covers ``text[starts[i]:starts[i + 1]]``, the last one
    ``text[starts[-1]:end]``; a token that is a byte piece of a multi-byte character may
    cover nothing (its start equals the next one's). ``logprobs[i]`` is ``None`` only for
    the first token of a text without a BOS token: it has no context to be predicted from.
    """

    starts: tuple[int, ...]
    logprobs: tuple[float | None, ...]
    end: int

    @property
    def boundaries(self) -> tuple[int, ...]:
        return (*self.starts, self.end)

    def to_json(self) -> dict[str, Any]:
        return {"starts": list(self.starts), "logprobs": list(self.logprobs), "end": self.end}

    @classmethod
    def from_json(cls, value: Any) -> EchoLayout | None:
        """The layout stored by :meth:`to_json`, or ``None`` for anything else."""
        if not isinstance(value, dict):
            return None
        starts, lps, end = value.get("starts"), value.get("logprobs"), value.get("end")
        if not (isinstance(starts, list) and isinstance(lps, list) and isinstance(end, int)
                and len(starts) == len(lps) and all(isinstance(s, int) for s in starts)
                and all(lp is None or isinstance(lp, int | float) for lp in lps)):
            return None
        return cls(tuple(starts), tuple(None if lp is None else float(lp) for lp in lps), end)


def _is_offset(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def echo_layout(text: str, echoed: str, logprobs: Mapping[str, Any]) -> EchoLayout:
    """The layout of ``text`` from a legacy completions ``logprobs`` object of an echo.

    ``echoed`` is the choice's text (``text``, plus a generated token when the request
    had to use ``max_tokens: 1``); tokens starting at or after ``len(text)`` were
    generated and are dropped. Offsets are character offsets into ``echoed``. When the
    server also lists the token strings, each must be the text at its offset, so that a
    server whose offsets drift (e.g. raw byte-level pieces) is refused rather than
    scored wrongly; a leading special token (BOS), whose characters some servers count
    in the offsets although it is not part of the echo, is recognised and shifted out.
    Raises ``ValueError`` saying what is wrong.
    """
    token_lp = logprobs.get("token_logprobs")
    offsets = logprobs.get("text_offset")
    tokens = logprobs.get("tokens")
    if not isinstance(token_lp, list) or not isinstance(offsets, list):
        raise ValueError("no token_logprobs/text_offset in the response")
    if len(token_lp) != len(offsets):
        raise ValueError(f"{len(token_lp)} token_logprobs but {len(offsets)} text_offset")
    if not all(_is_offset(o) for o in offsets) or any(
            later < earlier for earlier, later in itertools.pairwise(offsets)):
        raise ValueError("text_offset is not a non-decreasing list of character offsets")
    if not (isinstance(tokens, list) and len(tokens) == len(offsets)
            and all(isinstance(t, str) for t in tokens)):
        tokens = None  # offsets alone are trusted as they are
    first, shift = 0, 0
    if tokens is not None and len(tokens) > 1 and not echoed.startswith(tokens[0], offsets[0]) \
            and offsets[1] - offsets[0] == len(tokens[0]):
        first, shift = 1, offsets[1]  # a BOS-like token that the echoed text does not contain
    starts: list[int] = []
    lps: list[float | None] = []
    end = 0
    for i in range(first, len(offsets)):
        start = offsets[i] - shift
        if start >= len(text):
            break  # generated, not echoed
        if start < 0:
            raise ValueError(f"token {i} lies before the start of the text")
        if tokens is not None:
            token = tokens[i]
            if echoed[start:start + len(token)] != token:
                raise ValueError(f"token {i} ({token!r}) is not the echoed text at character "
                                 f"{start} ({echoed[start:start + len(token)]!r}): the server's "
                                 "tokens and offsets do not line up with the text")
            end = start + len(token)
        lp = token_lp[i]
        if lp is None and not starts:
            lps.append(None)  # the first token of a text has no context
        elif isinstance(lp, int | float) and not isinstance(lp, bool) and math.isfinite(lp):
            lps.append(float(lp))
        else:
            raise ValueError(f"no log-probability for the token at character {start}")
        starts.append(start)
    if not starts:
        raise ValueError("no log-probabilities for the echoed tokens")
    if tokens is None:
        # without token strings, the last echoed token ends where the next (generated)
        # token starts, or with the text
        following = [o - shift for o in offsets[first + len(starts):]]
        end = min(following[0], len(text)) if following else len(text)
    end = min(max(end, starts[-1]), len(text))
    if text[end:].strip():
        raise ValueError(f"the echoed tokens stop at character {end} of {len(text)}")
    return EchoLayout(tuple(starts), tuple(lps), end)


def _common_prefix(sequences: Sequence[Sequence[int]]) -> list[int]:
    prefix: list[int] = []
    for values in zip(*sequences, strict=False):
        if any(v != values[0] for v in values):
            break
        prefix.append(values[0])
    return prefix


def joint_scores(prompt: str, continuations: Sequence[str], layouts: Sequence[EchoLayout],
                 normalize: str = "none") -> list[float]:
    """Log-probability of each continuation from the layouts of ``prompt + continuation``.

    For each candidate, its first scored token is the first whose end lies after the
    prompt; where that token straddles the prompt's end it starts inside the prompt. All
    candidates are then scored from one common start ``s``: the earliest of those starts,
    moved back if needed to the last boundary at which all the candidates' token
    sequences still agree (so each is scored over ``text[s:]``, whole tokens only, after
    the same context tokens). A candidate's value is the sum of the log-probabilities
    of its tokens starting at or after ``s``; ``normalize="tokens"`` divides it by their
    number and ``"bytes"`` by the UTF-8 length of the text they cover (0.0 when there is
    nothing to divide). An empty candidate's layout is that of the prompt alone.

    Raises ``ValueError`` when a scored token has no log-probability (it begins the text,
    e.g. an empty prompt without a BOS token) or the tokenizations share no boundary.
    """
    check_normalize(normalize)
    if len(continuations) != len(layouts):
        raise ValueError(f"{len(continuations)} continuations but {len(layouts)} layouts")
    cut = len(prompt)
    firsts = [next((start for start, end in zip(layout.starts, layout.boundaries[1:],
                                                strict=True) if end > cut), None)
              for layout in layouts]
    known = [f for f in firsts if f is not None]
    if not known:
        return [0.0] * len(continuations)  # only empty continuations: log P = 0
    earliest = min(known)
    shared = [b for b in _common_prefix([layout.boundaries for layout in layouts])
              if b <= earliest]
    if not shared:
        raise ValueError("the candidates' tokenizations share no token boundary before "
                         f"character {earliest}")
    start = max(shared)
    out: list[float] = []
    for continuation, layout in zip(continuations, layouts, strict=True):
        scored = [(s, lp) for s, lp in zip(layout.starts, layout.logprobs, strict=True)
                  if s >= start]
        total = 0.0
        for s, lp in scored:
            if lp is None:
                raise ValueError(f"the token at character {s} begins the text and has no "
                                 "log-probability; give a longer prompt")
            total += lp
        if normalize == "tokens":
            total = total / len(scored) if scored else 0.0
        elif normalize == "bytes":
            n_bytes = len((prompt + continuation)[start:layout.end].encode("utf-8"))
            total = total / n_bytes if n_bytes else 0.0
        out.append(total)
    return out

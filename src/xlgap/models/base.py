"""The one small interface every model backend implements.

Three operations cover everything xlgap does with a model:

* ``generate``: n sampled completions per prompt (a shared prompt is encoded once);
* ``score``: total log-probability of each continuation given a prompt (exact answer
  distributions over candidates, no sampling);
* ``hidden_states``: one pooled vector per text per layer.

Backends are registered by name and imported lazily (see :mod:`xlgap.models`), so
``import xlgap`` never pulls in torch or an HTTP client that a run does not need.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

POOLINGS = ("mean", "mean_no_bos", "last")


class Backend(ABC):
    """A language model behind the three xlgap operations."""

    #: registry name, e.g. "hf" or "openai"
    kind: str = "abstract"
    #: whether prompts should be wrapped in the tokenizer's chat template
    is_chat: bool = False

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the model's weights and settings; part of every cache key."""

    @property
    def supports_white_box(self) -> bool:
        """True when ``score`` and ``hidden_states`` are available."""
        return False

    @abstractmethod
    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0,
                 max_new_tokens: int = 16, seed: int = 0,
                 stop: Sequence[str] = ("\n",)) -> list[list[str]]:
        """Return ``n`` completions for each prompt (text after the prompt, cut at ``stop``).

        With the same seed, a prompt's completions are the same whatever else is in
        the batch. ``temperature == 0`` means greedy decoding.
        """

    def score(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        """Total log-probability of each continuation given ``prompt``."""
        return self.score_batch([(prompt, list(continuations))])[0]

    def score_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """``score`` for many (prompt, continuations) pairs; backends batch across them."""
        raise NotImplementedError(f"backend {self.kind!r} cannot score continuations")

    def hidden_states(self, texts: Sequence[str], layers: Sequence[int] | None = None,
                      pooling: str = "mean") -> np.ndarray:
        """Array ``(len(texts), len(layers), hidden)``; layer 0 is the embedding output."""
        raise NotImplementedError(f"backend {self.kind!r} has no hidden states")

    @property
    def n_layers(self) -> int:
        """Number of hidden-state layers (embeddings + blocks)."""
        raise NotImplementedError(f"backend {self.kind!r} has no layers")

    def chat_prompt(self, user_message: str) -> str:
        """The text a chat model sees for one user turn (its chat template applied)."""
        return user_message

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, connections)."""

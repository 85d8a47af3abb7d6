"""Fine-tuning on one language with the first N blocks frozen, LoRA (peft) or full.

The question it serves: if the early blocks, which map each language into the shared
space, are left alone, does training in one language carry over to the others, and what
happens to the overlap of languages inside the model? So a run trains one copy of the
model per N (``--freeze-first 0,6,12`` compares three) on text of one language only, and
the caller measures ILO, similarity and accuracy / transfer before and after.

Freezing N means: the embeddings (unless ``train_embeddings``) and blocks ``0..N-1`` get
no update. With LoRA the adapters go on every linear layer of blocks ``N..``; with full
fine-tuning those blocks and the final norm are trained as they are.

Training is reproducible and resumable: no dropout, batch ``s`` is a pure function of
the seed and ``s`` (:func:`batch_indices`), the learning rate a pure function of ``s``,
and a checkpoint (trainable weights, optimizer state, step, losses) is written atomically
every ``checkpoint_every`` steps. A run killed at any point (SIGKILL included) resumes
from its last checkpoint and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xlgap.errors import ConfigError, DataError
from xlgap.io import dump_json
from xlgap.models.hf import HFBackend
from xlgap.models.layers import get_module, layout_for, white_box
from xlgap.progress import progress_bar

METHODS = ("lora", "full")
CHECKPOINT = "checkpoint.pt"
FINAL = "final.safetensors"
FINAL_META = "final.json"


@dataclass(frozen=True)
class TrainSpec:
    """Everything that decides the trained weights (a checkpoint of another spec is
    never resumed)."""

    freeze_first: int
    steps: int
    method: str = "lora"
    train_embeddings: bool = False
    lr: float = 3e-4
    batch_size: int = 8
    rank: int = 8
    lora_alpha: float = 16.0
    warmup: int = 10
    seed: int = 0
    checkpoint_every: int = 25
    data_sha256: str = ""
    base_model: str = ""  # the base model's fingerprint: weights trained on another are refused

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Example:
    """Token ids of one training text; the loss covers the tokens from ``start`` on."""

    ids: tuple[int, ...]
    start: int


# -- data (pure) -------------------------------------------------------------------------------


def prepare_completions(encode: Callable[[str], list[int]], pairs: Sequence[tuple[str, str]],
                        max_length: int = 64) -> tuple[list[Example], dict[str, int]]:
    """Prompt + completion texts, the loss on the completion only, and what fitting them
    into ``max_length`` tokens cost: ``{"given", "kept", "prompt_cut", "dropped"}``.

    ``encode`` is the backend's (``HFBackend.encode``: no second BOS before a chat prompt
    that holds one as text). The pair is tokenized as one text (as the model would have
    read it); the completion starts at the first token where that differs from the
    prompt's own tokens. A text longer than ``max_length`` loses the start of its prompt
    (the leading special tokens, such as BOS, are kept), never its completion: the model
    still learns the answer, from the nearest context. Dropped: an empty completion, or one
    that alone leaves no room for a single token of context."""
    prefix = list(encode(""))  # the special tokens the tokenizer puts first (BOS)
    out: list[Example] = []
    counts = {"given": len(pairs), "kept": 0, "prompt_cut": 0, "dropped": 0}
    for prompt, completion in pairs:
        head = list(encode(prompt))
        full = list(encode(prompt + completion))
        start = 0
        while start < min(len(head), len(full)) and head[start] == full[start]:
            start += 1
        start = max(1, start)  # the first token is never predicted
        if start >= len(full):
            counts["dropped"] += 1
            continue
        if len(full) > max_length:
            front = len(prefix) if prefix and full[:len(prefix)] == prefix else 0
            answer = full[start:]
            room = max_length - front - len(answer)
            if room < 0 or front + room < 1:
                counts["dropped"] += 1
                continue
            full = full[:front] + full[start - room:start] + answer
            start = front + room
            counts["prompt_cut"] += 1
        out.append(Example(tuple(full), start))
    counts["kept"] = len(out)
    return out, counts


def completion_examples(encode: Callable[[str], list[int]], pairs: Sequence[tuple[str, str]],
                        max_length: int = 64) -> list[Example]:
    """The examples of :func:`prepare_completions` (without the counts)."""
    return prepare_completions(encode, pairs, max_length)[0]


def prepare_texts(encode: Callable[[str], list[int]], lines: Sequence[str],
                  max_length: int = 64) -> tuple[list[Example], dict[str, int]]:
    """Plain text, the loss on every token after the first; a line longer than
    ``max_length`` tokens is cut at the end (``text_cut``), one of a single token
    dropped."""
    out = []
    counts = {"given": len(lines), "kept": 0, "text_cut": 0, "dropped": 0}
    for line in lines:
        ids = list(encode(line))
        if len(ids) > max_length:
            ids = ids[:max_length]
            counts["text_cut"] += 1
        if len(ids) > 1:
            out.append(Example(tuple(ids), 1))
        else:
            counts["dropped"] += 1
    counts["kept"] = len(out)
    return out, counts


def text_examples(encode: Callable[[str], list[int]], lines: Sequence[str],
                  max_length: int = 64) -> list[Example]:
    """The examples of :func:`prepare_texts` (without the counts)."""
    return prepare_texts(encode, lines, max_length)[0]


def examples_digest(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.start, list(ex.ids)]).encode())
    return h.hexdigest()[:16]


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Example indices of training step ``step``: epochs are seeded permutations of the
    ``n`` examples laid end to end, and step ``s`` takes the next ``batch_size`` of them.
    A pure function of its arguments, so a resumed run sees the batches it would have."""
    if n <= 0:
        raise DataError("no training examples")
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(batch_size - len(out), n - offset)
        out.extend(int(i) for i in perm[offset:offset + take])
        pos += take
    return out


def lr_at(step: int, spec: TrainSpec) -> float:
    """Linear warm-up, then linear decay to a tenth of ``lr`` at the last step."""
    if spec.warmup > 0 and step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    span = max(1, spec.steps - spec.warmup)
    return spec.lr * (1.0 - 0.9 * min(1.0, (step - spec.warmup) / span))


def collate(examples: Sequence[Example], pad_id: int, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels (-100 where no loss is taken)."""
    width = max(len(ex.ids) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, ex in enumerate(examples):
        seq = torch.tensor(ex.ids, dtype=torch.long)
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
        labels[row, ex.start:len(seq)] = seq[ex.start:]
    return ids.to(device), mask.to(device), labels.to(device)


# -- the model ---------------------------------------------------------------------------------


def _untie_output(model: nn.Module) -> None:
    """Give the output layer its own copy of tied embeddings. LoRA on the embeddings
    trains an adapter beside the shared matrix, and merging it writes into that matrix,
    which would change the output layer too: the model evaluated would not be the one
    trained. (Costs one more vocabulary x width matrix.)"""
    out, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or emb is None or out.weight is not emb.weight:
        return
    out.weight = nn.Parameter(out.weight.detach().clone(), requires_grad=False)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = False


def prepare_model(base: nn.Module, spec: TrainSpec) -> tuple[nn.Module, nn.Module]:
    """A copy of ``base`` with only what ``spec`` trains left trainable.

    Returns ``(trainable, lm)``: the module whose parameters are trained and saved (the
    peft wrapper for LoRA) and the causal LM inside it (to run forward passes)."""
    if spec.method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {spec.method!r}")
    model = copy.deepcopy(base)
    model.requires_grad_(False)
    layout = layout_for(model)
    blocks = get_module(model, layout.blocks)
    n = len(blocks)
    if not 0 <= spec.freeze_first <= n:
        raise ConfigError(f"--freeze-first {spec.freeze_first}: this model has {n} blocks "
                          f"(use 0..{n})")
    if spec.method == "lora":
        from peft import LoraConfig, get_peft_model

        names = [f"{layout.blocks}.{i}.{sub}" for i in range(spec.freeze_first, n)
                 for sub, mod in blocks[i].named_modules() if isinstance(mod, nn.Linear)]
        if spec.train_embeddings:
            names.append(layout.embed)
            _untie_output(model)
        if not names:
            raise ConfigError(f"--freeze-first {spec.freeze_first} with frozen embeddings "
                              "leaves nothing for LoRA to train")
        torch.manual_seed(spec.seed)  # LoRA's A matrices start random: seed them
        with warnings.catch_warnings():
            # peft asks transformers about gradient checkpointing through a deprecated name
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = get_peft_model(model, LoraConfig(
                r=spec.rank, lora_alpha=spec.lora_alpha, lora_dropout=0.0, bias="none",
                target_modules=names))
        wrapped.eval()  # no dropout anywhere: a resumed run must repeat the same steps
        return wrapped, wrapped.get_base_model()
    for i in range(spec.freeze_first, n):
        blocks[i].requires_grad_(True)
    get_module(model, layout.final_norm).requires_grad_(True)
    if spec.train_embeddings:
        get_module(model, layout.embed).requires_grad_(True)
        get_module(model, layout.unembed).requires_grad_(True)
    model.eval()
    return model, model


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters()
            if p.requires_grad}


def load_trainable(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    params = dict(module.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in state]
    if missing or any(name not in params for name in state):
        raise DataError(f"checkpoint does not match the model being trained (missing "
                        f"{missing[:3]}...)")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def answer_logits(lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token logits of selected positions (with the model's soft-capping, if any)."""
    logits = lm.get_output_embeddings()(hidden)
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


def lm_loss(lm: nn.Module, ids: torch.Tensor, mask: torch.Tensor,
            labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the labelled tokens. The vocabulary head runs only at the
    positions that predict one (with a 262k-token head that is most of the cost)."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = lm.base_model(input_ids=ids, attention_mask=mask, position_ids=positions,
                        use_cache=False)
    hidden = out.last_hidden_state[:, :-1]
    target = labels[:, 1:]
    chosen = target != -100
    return F.cross_entropy(answer_logits(lm, hidden[chosen]), target[chosen])


# -- checkpoints -------------------------------------------------------------------------------


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_checkpoint(run_dir: Path, spec: TrainSpec) -> dict[str, Any] | None:
    """The checkpoint in ``run_dir`` if there is one; another spec's is an error."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated file cannot exist (atomic writes), but a foreign one can
        return None
    if state.get("spec") != spec.as_dict():
        raise ConfigError(f"{run_dir} holds a fine-tune made with other options "
                          f"({state.get('spec')}); resume with the same options or choose "
                          "another --out")
    return state


def read_final(run_dir: Path, spec: TrainSpec) -> tuple[dict[str, torch.Tensor],
                                                         dict[str, Any]] | None:
    """The finished run's trainable weights and record, if it finished with this spec."""
    weights, meta_path = run_dir / FINAL, run_dir / FINAL_META
    if not (weights.exists() and meta_path.exists()):
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("spec") != spec.as_dict():
        raise ConfigError(f"{run_dir} holds a fine-tune made with other options "
                          f"({meta.get('spec')}); choose another --out")
    from safetensors.torch import load_file

    return load_file(str(weights)), meta


def _write_final(run_dir: Path, state: Mapping[str, torch.Tensor], meta: dict[str, Any]
                 ) -> None:
    from safetensors.torch import save_file


    tmp = run_dir / f".{FINAL}.{os.getpid()}.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, run_dir / FINAL)
    dump_json(meta, run_dir / FINAL_META)  # written last: it marks the run finished


# -- training ----------------------------------------------------------------------------------


def train(trainable: nn.Module, lm: nn.Module, examples: Sequence[Example], spec: TrainSpec,
          run_dir: str | Path, *, pad_id: int, progress: bool = False,
          on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train (or resume, or reload a finished run) in ``run_dir``; returns the record:
    spec, losses per step, seconds, trainable parameter count, where it resumed from."""
    run_dir = Path(run_dir)
    done = read_final(run_dir, spec)
    if done is not None:
        load_trainable(trainable, done[0])
        return {**done[1], "reloaded": True}
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    losses: list[float] = []
    start, seconds = 0, 0.0
    ckpt = read_checkpoint(run_dir, spec)
    if ckpt is not None:
        load_trainable(trainable, ckpt["trainable"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, losses, seconds = int(ckpt["step"]), list(ckpt["losses"]), float(ckpt["seconds"])
    device = next(lm.parameters()).device
    began = time.time()
    bar = progress_bar(total=spec.steps, initial=start, enabled=progress, unit="step",
                       desc=f"fine-tune (first {spec.freeze_first} frozen)")
    for step in range(start, spec.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, spec)
        batch = [examples[i] for i in batch_indices(step, len(examples), spec.batch_size,
                                                    spec.seed)]
        loss = lm_loss(lm, *collate(batch, pad_id, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.update(1)
        done_steps = step + 1
        if done_steps % spec.checkpoint_every == 0 or done_steps == spec.steps:
            _atomic_torch_save({"spec": spec.as_dict(), "step": done_steps,
                                "trainable": trainable_state(trainable),
                                "optimizer": optimizer.state_dict(), "losses": losses,
                                "seconds": seconds + time.time() - began}, run_dir / CHECKPOINT)
        if on_step is not None:
            on_step(done_steps)
    bar.close()
    state = trainable_state(trainable)
    record = {"spec": spec.as_dict(), "losses": losses, "resumed_from": start,
              "seconds": round(seconds + time.time() - began, 1),
              "trainable_params": int(sum(v.numel() for v in state.values())),
              "weights_sha": state_digest(state), "examples": len(examples)}
    _write_final(run_dir, state, record)
    with contextlib.suppress(FileNotFoundError):
        (run_dir / CHECKPOINT).unlink()  # the final weights supersede it
    return {**record, "reloaded": False}


def finetuned_backend(base: Any, trainable: nn.Module, spec: TrainSpec, record: Mapping[str, Any]
                      ) -> Any:
    """An HF backend of the trained model (LoRA merged into the weights), whose fingerprint
    is the base one tagged with the fine-tune (a modifier), so results never mix."""
    inner = white_box(base)
    model = trainable.merge_and_unload() if spec.method == "lora" else trainable
    model.requires_grad_(False)
    backend = HFBackend(model, inner.tokenizer, name=f"{inner.name}+finetune",
                        batch_size=inner.batch_size, is_chat=inner.is_chat,
                        fingerprint=inner.fingerprint)
    backend.modifiers.append(f"finetune:{spec.method}:freeze={spec.freeze_first}:"
                             f"{record['weights_sha']}")
    return backend

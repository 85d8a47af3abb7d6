"""Tokenization rules that every local backend (HF, vLLM) shares, so both read a prompt,
and score a candidate, token for token the same way.

* :func:`resolve_is_chat`: whether prompts go through the chat template;
* :func:`adds_special_tokens`: whether encoding a text adds BOS (not when a chat-formatted
  prompt already holds it as text);
* :func:`joint_tokens`: the joint tokenization of one scoring request (the rule of
  :meth:`xlgap.models.base.Backend.score_batch`);
* :func:`cut_at_stop`: a completion cut at its first stop string (every backend, API ones
  included: a server may ignore or truncate the stop list).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xlgap.errors import ModelError

#: name parts that mark an instruction-tuned checkpoint
CHAT_NAME_TAGS = ("-it", "instruct", "chat")


def resolve_is_chat(tokenizer: Any, name: str, is_chat: bool | None) -> bool:
    """``is_chat`` as asked, or guessed when None. A chat template alone does not make a
    chat model (many base checkpoints ship one); instruction-tuned ones say so in their
    name. Asking for the template of a tokenizer that has none is an error."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if is_chat is None:
        lowered = name.lower()
        return has_template and any(tag in lowered for tag in CHAT_NAME_TAGS)
    if is_chat and not has_template:
        raise ModelError(f"model {name!r}: a chat template was asked for "
                         "(--chat-template yes), but its tokenizer has none; give one "
                         "as a file (--chat-template FILE.jinja)")
    return bool(is_chat)


def adds_special_tokens(tokenizer: Any, is_chat: bool, text: str) -> bool:
    """Whether encoding ``text`` adds the special tokens: not for a chat-formatted prompt,
    which already holds the BOS token as text."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (is_chat and bos and text.startswith(bos))


def joint_tokens(tokenizer: Any, prompt: str, continuations: Sequence[str],
                 add_special: bool) -> tuple[int, list[list[int]], list[int]]:
    """The joint tokenization of one scoring request.

    ``prompt + continuation`` is tokenized as one text, as the model would have written it
    (in scripts without spaces a prompt's last characters and an answer's first often
    merge into one token). Returns ``cut``, each candidate's joint token ids, and the
    UTF-8 bytes of the text its scored tokens cover. ``cut`` is the length of the longest
    token prefix that the prompt alone and every joint tokenization share, so all the
    candidates of a request are scored from the same point: a candidate's score is the
    sum over its tokens from ``cut`` on.
    """
    prompt_ids = list(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
    joint: list[tuple[list[int], list[tuple[int, int]] | None]] = []
    for cont in continuations:
        text = prompt + cont
        try:
            enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
            offsets = [tuple(o) for o in enc["offset_mapping"]]
        except (NotImplementedError, ValueError, TypeError):  # a slow tokenizer
            enc, offsets = tokenizer(text, add_special_tokens=add_special), None
        joint.append((list(enc["input_ids"]), offsets))
    cut = len(prompt_ids)
    for ids, _ in joint:
        shared = 0
        while shared < min(cut, len(ids)) and ids[shared] == prompt_ids[shared]:
            shared += 1
        cut = shared
    if cut == 0 and continuations:
        raise ModelError(f"cannot score continuations of prompt {prompt[:40]!r}: its first "
                         "token already depends on the continuation (no BOS)")
    sizes = []
    for cont, (ids, offsets) in zip(continuations, joint, strict=True):
        text = prompt + cont
        if cut >= len(ids):
            sizes.append(0)
        elif offsets is not None:
            sizes.append(len(text[offsets[cut][0]:].encode("utf-8")))
        else:
            sizes.append(len(tokenizer.decode(ids[cut:]).encode("utf-8")))
    return cut, [ids for ids, _ in joint], sizes


def cut_at_stop(text: str, stop: str | Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any stop string. An empty stop string is
    ignored: it occurs at position 0 of every text and would empty every completion."""
    stops = [stop] if isinstance(stop, str) else stop
    end = len(text)
    for s in stops:
        if s:
            pos = text.find(s)
            if 0 <= pos < end:
                end = pos
    return text[:end]

"""Backend for any OpenAI-compatible HTTP server (OpenAI, vLLM, llama.cpp server, TGI...).

HTTP goes through one ``httpx.Client`` per backend, shared by the worker threads, so
connections are reused; a thread pool provides concurrency.

Robustness is the point of this module. A long run against a remote server meets
rate limits, overloaded replicas, dropped connections and half-written bodies; each
request is therefore retried with exponential backoff and jitter (honouring
``Retry-After``), and every successful request is written to the :class:`Store` before
its result is used, so a run that finally fails keeps what it obtained and a rerun
asks the server only for what is missing. Errors that retrying cannot fix (a rejected
key, an unknown model, a bad request) fail fast instead of burning the retry budget.

The API key is a credential for one server. This module follows redirects itself
instead of letting the client do it, so that it alone decides where the key goes: it is
sent again only when a redirect stays on the same scheme, host and port (or upgrades
http to https on the same host), never to another server.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import itertools
import json
import logging
import math
import os
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.message import Message
from typing import Any, TypeVar

import httpx

from xlgap.errors import BackendError, ConfigError
from xlgap.models.base import Backend, check_normalize
from xlgap.store import Store, request_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses that say "try again later" rather than "your request is wrong".
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: A server asking for a longer pause than this (or than ``backoff_max`` if larger) is
#: obeyed only up to it, so one odd header cannot stall a run for hours.
RETRY_AFTER_CAP = 120.0
#: OpenAI accepts at most this many stop sequences; the rest are applied client-side.
MAX_SERVER_STOPS = 4
#: How many characters of a prompt an error message quotes.
PROMPT_QUOTE = 60
#: Seconds allowed for the ``GET /models`` lookup that enriches a 404 message.
MODELS_LOOKUP_TIMEOUT = 5.0
#: Redirects followed per request; a longer chain is a misconfiguration, not a hiccup.
MAX_REDIRECTS = 5
#: Store operation of an echoed-scoring request; its value is an :class:`EchoLayout`.
#: (Distinct from ``openai.completions`` so that totals stored by older versions, which
#: cannot be re-split jointly, are never read as layouts.)
ECHO_OP = "openai.echo"
#: The text :attr:`OpenAIBackend.can_score` asks the server to echo, once per backend.
PROBE_TEXT = "The capital of France is Paris."
_DEFAULT_PORTS = {"http": 80, "https": 443}

CANNOT_SCORE = "this server cannot score; use sampling or a white-box backend"


# -- pure helpers ----------------------------------------------------------------------

def normalise_base_url(base_url: str) -> str:
    """Canonical form of a server URL: lower-case scheme and host, no default port,
    no trailing slash. Two spellings of one server share a fingerprint and a cache."""
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigError("--base-url is empty; give e.g. http://localhost:8000/v1")
    parts = urllib.parse.urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--base-url {base_url!r} is not an http(s) URL; "
                          "give e.g. http://localhost:8000/v1")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as err:
        raise ConfigError(f"--base-url {base_url!r} has an invalid port: {err}") from None
    default_port = 80 if scheme == "http" else 443
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    if parts.username or parts.password:
        raise ConfigError("--base-url must not contain credentials; put the API key in an "
                          "environment variable (default $OPENAI_API_KEY) instead")
    if parts.query or parts.fragment:
        raise ConfigError(f"--base-url {base_url!r} has a query or fragment; give the API "
                          "root only, e.g. http://localhost:8000/v1")
    path = parts.path.rstrip("/")
    return urllib.parse.urlunsplit((scheme, netloc, path, parts.query, ""))


def derive_seed(seed: int, round_index: int) -> int:
    """Seed of the ``round_index``-th top-up request (round 0 uses ``seed`` itself).

    A top-up must not repeat the seed, or a server that honours seeds would return the
    same samples again; deriving it by hashing keeps reruns deterministic (and cached).
    """
    if round_index == 0:
        return int(seed)
    digest = hashlib.sha256(f"xlgap-topup:{int(seed)}:{round_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def backoff_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Pause before retry number ``attempt + 1``: ``min(cap, base * 2**attempt)`` scaled
    by ``jitter`` in [0.5, 1] so that clients released together do not retry together."""
    raw = base * (2.0 ** min(attempt, 62))
    return min(cap, raw) * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def parse_retry_after(headers: Message | Mapping[str, str] | httpx.Headers | None
                      ) -> float | None:
    """Seconds a server asks us to wait: ``retry-after-ms``, ``Retry-After`` as seconds or
    as an HTTP date; ``None`` when absent or unreadable."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
            if math.isfinite(value):
                return max(0.0, value)
        except ValueError:
            pass
    text = headers.get("Retry-After")
    if text is None:
        return None
    text = text.strip()
    try:
        value = float(text)
        return max(0.0, value) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text up to the earliest stop sequence (servers may ignore or truncate ``stop``)."""
    end = len(text)
    for s in stop:
        if s:
            pos = text.find(s)
            if 0 <= pos < end:
                end = pos
    return text[:end]


def same_server(origin: httpx.URL, target: httpx.URL) -> bool:
    """Whether a redirect from ``origin`` to ``target`` stays on the server the API key
    was given for: same host, scheme and port, or an http -> https upgrade of the same
    host on the default ports. A different port is a different server (another origin)."""
    if origin.host != target.host:
        return False
    origin_port = origin.port or _DEFAULT_PORTS.get(origin.scheme)
    target_port = target.port or _DEFAULT_PORTS.get(target.scheme)
    if origin.scheme == target.scheme:
        return origin_port == target_port
    return (origin.scheme, origin_port, target.scheme, target_port) == ("http", 80, "https", 443)


def caused_by(err: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of one of ``kinds`` in ``err``'s cause/context chain (httpx
    wraps DNS and certificate errors, which decide whether retrying can help)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True)
class EchoLayout:
    """Where the echoed tokens of one text lie, and their log-probabilities.

    Token ``i`` covers ``text[starts[i]:starts[i + 1]]``, the last one
    ``text[starts[-1]:end]``; a token that is a byte piece of a multi-byte character may
    cover nothing (its start equals the next one's). ``logprobs[i]`` is ``None`` only for
    the first token of a text without a BOS token: it has no context to be predicted from.
    """

    starts: tuple[int, ...]
    logprobs: tuple[float | None, ...]
    end: int

    @property
    def boundaries(self) -> tuple[int, ...]:
        return (*self.starts, self.end)

    def to_json(self) -> dict[str, Any]:
        return {"starts": list(self.starts), "logprobs": list(self.logprobs), "end": self.end}

    @classmethod
    def from_json(cls, value: Any) -> EchoLayout | None:
        """The layout stored by :meth:`to_json`, or ``None`` for anything else."""
        if not isinstance(value, dict):
            return None
        starts, lps, end = value.get("starts"), value.get("logprobs"), value.get("end")
        if not (isinstance(starts, list) and isinstance(lps, list) and isinstance(end, int)
                and len(starts) == len(lps) and all(isinstance(s, int) for s in starts)
                and all(lp is None or isinstance(lp, int | float) for lp in lps)):
            return None
        return cls(tuple(starts), tuple(None if lp is None else float(lp) for lp in lps), end)


def _is_offset(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def echo_layout(text: str, echoed: str, logprobs: Mapping[str, Any]) -> EchoLayout:
    """The layout of ``text`` from a legacy completions ``logprobs`` object of an echo.

    ``echoed`` is the choice's text (``text``, plus a generated token when the request
    had to use ``max_tokens: 1``); tokens starting at or after ``len(text)`` were
    generated and are dropped. Offsets are character offsets into ``echoed``. When the
    server also lists the token strings, each must be the text at its offset, so that a
    server whose offsets drift (e.g. raw byte-level pieces) is refused rather than
    scored wrongly; a leading special token (BOS), whose characters some servers count
    in the offsets although it is not part of the echo, is recognised and shifted out.
    Raises ``ValueError`` saying what is wrong.
    """
    token_lp = logprobs.get("token_logprobs")
    offsets = logprobs.get("text_offset")
    tokens = logprobs.get("tokens")
    if not isinstance(token_lp, list) or not isinstance(offsets, list):
        raise ValueError("no token_logprobs/text_offset in the response")
    if len(token_lp) != len(offsets):
        raise ValueError(f"{len(token_lp)} token_logprobs but {len(offsets)} text_offset")
    if not all(_is_offset(o) for o in offsets) or any(
            later < earlier for earlier, later in itertools.pairwise(offsets)):
        raise ValueError("text_offset is not a non-decreasing list of character offsets")
    if not (isinstance(tokens, list) and len(tokens) == len(offsets)
            and all(isinstance(t, str) for t in tokens)):
        tokens = None  # offsets alone are trusted as they are
    first, shift = 0, 0
    if tokens is not None and len(tokens) > 1 and not echoed.startswith(tokens[0], offsets[0]) \
            and offsets[1] - offsets[0] == len(tokens[0]):
        first, shift = 1, offsets[1]  # a BOS-like token that the echoed text does not contain
    starts: list[int] = []
    lps: list[float | None] = []
    end = 0
    for i in range(first, len(offsets)):
        start = offsets[i] - shift
        if start >= len(text):
            break  # generated, not echoed
        if start < 0:
            raise ValueError(f"token {i} lies before the start of the text")
        if tokens is not None:
            token = tokens[i]
            if echoed[start:start + len(token)] != token:
                raise ValueError(f"token {i} ({token!r}) is not the echoed text at character "
                                 f"{start} ({echoed[start:start + len(token)]!r}): the server's "
                                 "tokens and offsets do not line up with the text")
            end = start + len(token)
        lp = token_lp[i]
        if lp is None and not starts:
            lps.append(None)  # the first token of a text has no context
        elif isinstance(lp, int | float) and not isinstance(lp, bool) and math.isfinite(lp):
            lps.append(float(lp))
        else:
            raise ValueError(f"no log-probability for the token at character {start}")
        starts.append(start)
    if not starts:
        raise ValueError("no log-probabilities for the echoed tokens")
    if tokens is None:
        # without token strings, the last echoed token ends where the next (generated)
        # token starts, or with the text
        following = [o - shift for o in offsets[first + len(starts):]]
        end = min(following[0], len(text)) if following else len(text)
    end = min(max(end, starts[-1]), len(text))
    if text[end:].strip():
        raise ValueError(f"the echoed tokens stop at character {end} of {len(text)}")
    return EchoLayout(tuple(starts), tuple(lps), end)


def _common_prefix(sequences: Sequence[Sequence[int]]) -> list[int]:
    prefix: list[int] = []
    for values in zip(*sequences, strict=False):
        if any(v != values[0] for v in values):
            break
        prefix.append(values[0])
    return prefix


def joint_scores(prompt: str, continuations: Sequence[str], layouts: Sequence[EchoLayout],
                 normalize: str = "none") -> list[float]:
    """Log-probability of each continuation from the layouts of ``prompt + continuation``.

    For each candidate, its first scored token is the first whose end lies after the
    prompt; where that token straddles the prompt's end it starts inside the prompt. All
    candidates are then scored from one common start ``s``: the earliest of those starts,
    moved back if needed to the last boundary at which all the candidates' token
    sequences still agree (so each is scored over ``text[s:]``, whole tokens only, after
    the same context tokens). A candidate's value is the sum of the log-probabilities
    of its tokens starting at or after ``s``; ``normalize="tokens"`` divides it by their
    number and ``"bytes"`` by the UTF-8 length of the text they cover (0.0 when there is
    nothing to divide). An empty candidate's layout is that of the prompt alone.

    Raises ``ValueError`` when a scored token has no log-probability (it begins the text,
    e.g. an empty prompt without a BOS token) or the tokenizations share no boundary.
    """
    check_normalize(normalize)
    if len(continuations) != len(layouts):
        raise ValueError(f"{len(continuations)} continuations but {len(layouts)} layouts")
    cut = len(prompt)
    firsts = [next((start for start, end in zip(layout.starts, layout.boundaries[1:],
                                                strict=True) if end > cut), None)
              for layout in layouts]
    known = [f for f in firsts if f is not None]
    if not known:
        return [0.0] * len(continuations)  # only empty continuations: log P = 0
    earliest = min(known)
    shared = [b for b in _common_prefix([layout.boundaries for layout in layouts])
              if b <= earliest]
    if not shared:
        raise ValueError("the candidates' tokenizations share no token boundary before "
                         f"character {earliest}")
    start = max(shared)
    out: list[float] = []
    for continuation, layout in zip(continuations, layouts, strict=True):
        scored = [(s, lp) for s, lp in zip(layout.starts, layout.logprobs, strict=True)
                  if s >= start]
        total = 0.0
        for s, lp in scored:
            if lp is None:
                raise ValueError(f"the token at character {s} begins the text and has no "
                                 "log-probability; give a longer prompt")
            total += lp
        if normalize == "tokens":
            total = total / len(scored) if scored else 0.0
        elif normalize == "bytes":
            n_bytes = len((prompt + continuation)[start:layout.end].encode("utf-8"))
            total = total / n_bytes if n_bytes else 0.0
        out.append(total)
    return out


def parse_choices(payload: Any, chat: bool) -> list[str]:
    """Texts of a (chat) completion response, in choice-index order.

    Raises ``ValueError`` for a body that is JSON but not a completion response; the
    caller treats that like a truncated body and retries.
    """
    if not isinstance(payload, dict):
        raise ValueError(f"response is a JSON {type(payload).__name__}, not an object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError("response has no choices")
    indexed: list[tuple[int, int, str]] = []
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise ValueError("a choice is not an object")
        if chat:
            message = choice.get("message")
            if not isinstance(message, dict):
                raise ValueError("a chat choice has no message")
            text = message.get("content")
        else:
            text = choice.get("text")
        if text is None:
            text = ""  # e.g. a refusal or a tool call: no text, but a valid sample
        if not isinstance(text, str):
            raise ValueError("a choice's text is not a string")
        index = choice.get("index")
        indexed.append((index if isinstance(index, int) else position, position, text))
    indexed.sort()
    return [text for _, _, text in indexed]


def quote(text: str) -> str:
    """The first PROMPT_QUOTE characters of ``text``, for error messages."""
    return text[:PROMPT_QUOTE] + ("..." if len(text) > PROMPT_QUOTE else "")


def prompt_label(index: int, prompt: str) -> str:
    """How errors name a generation request: its prompt's index and opening."""
    return f"prompt {index} ({quote(prompt)!r})"


def server_message(raw: bytes) -> str:
    """The human-readable part of an error body (OpenAI style or plain text), shortened."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err
            return str(msg)[:300]
        if isinstance(err, str):
            return err[:300]
    return text[:300]


# -- errors ----------------------------------------------------------------------------

class HTTPStatusError(BackendError):
    """A request refused with an HTTP status that retrying cannot fix (401, 404, 400...).

    ``status`` is the HTTP status (0 when the host could not be reached at all) and
    ``model_missing`` is True when ``GET /models`` answered without the requested model.
    """

    def __init__(self, message: str, status: int, model_missing: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.model_missing = model_missing


class ScoringUnsupported(BackendError):
    """The server answers, but not with the echoed prompt log-probabilities that scoring
    needs (or with ones that cannot be lined up with the text)."""


class _Transient(Exception):
    """A failure that may go away: retry after a pause (``retry_after`` if the server
    said how long)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _HTTPFailure(Exception):
    """A non-retryable HTTP status, before it is turned into an HTTPStatusError."""

    def __init__(self, status: int, url: str, message: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {message}")
        self.status = status
        self.url = url
        self.message = message


class _NoScores(Exception):
    """A 200 response without usable prompt log-probabilities."""


class _Aborted(Exception):
    """Another request of the same batch failed for good; stop without retrying."""


class _MemoryCache:
    """Stand-in for :class:`Store` when none is given: results live as long as the
    backend, so a failed batch retried in the same process still resumes."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def get(self, model: str, key: str) -> Any | None:
        with self._lock:
            return self._data.get((model, key))

    def put(self, model: str, key: str, op: str, value: Any) -> None:
        with self._lock:
            self._data.setdefault((model, key), value)


#: One unit of work for the pool; it receives the batch's abort flag.
_Job = Callable[[threading.Event], None]


# -- the backend -----------------------------------------------------------------------

class OpenAIBackend(Backend):
    """A model served behind an OpenAI-compatible ``/v1`` API (black box: sampling and,
    where the server echoes prompt log-probabilities, scoring)."""

    kind = "openai"

    def __init__(self, model: str, base_url: str, *, api_key_env: str = "OPENAI_API_KEY",
                 store: Store | None = None, chat: bool = True, concurrency: int = 8,
                 max_retries: int = 8, timeout: float = 60.0, backoff_base: float = 0.5,
                 backoff_max: float = 30.0) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("the OpenAI backend needs a model name: --model openai:NAME")
        if int(concurrency) < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        if int(max_retries) < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if not float(timeout) > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if not (float(backoff_base) >= 0 and float(backoff_max) >= 0):
            raise ConfigError(f"backoff_base and backoff_max must be >= 0, got "
                              f"{backoff_base} and {backoff_max}")
        self.model = model.strip()
        self.base_url = normalise_base_url(base_url)
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env, "").strip() if api_key_env else ""
        self._api_key = key or None
        self.chat = bool(chat)
        self.is_chat = self.chat
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self._cache: Store | _MemoryCache = store if store is not None else _MemoryCache()
        # Created on first use (and again after close()), shared by the worker threads.
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        # Set after the first successful request: until then requests go one at a time,
        # so a rejected key or unknown model is reported once, not by every worker.
        self._server_ok = False
        # Some servers refuse max_tokens=0 for echo scoring; then 1 is used (the
        # generated token lies past the echoed text and is not counted).
        self._score_max_tokens = 0
        # None until a scoring request (or the can_score probe) has shown whether the
        # server echoes prompt log-probabilities.
        self._scoring: bool | None = None
        self._probe_lock = threading.Lock()
        self._rng = random.Random()

    # -- identity ----------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return f"openai:{self.model}@{self.base_url}"

    def __repr__(self) -> str:
        mode = "chat" if self.chat else "completions"
        return f"OpenAIBackend({self.model!r}, {self.base_url!r}, {mode})"

    # -- generation --------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0,
                 max_new_tokens: int = 16, seed: int = 0,
                 stop: Sequence[str] = ("\n",)) -> list[list[str]]:
        """``n`` completions per prompt, in prompt order (see :meth:`Backend.generate`).

        Each distinct prompt is one chain of requests: the first asks for ``n`` choices;
        if the server returns fewer, further requests with derived seeds ask for the
        rest. Every request's raw choices are stored before use, so reruns are free.
        Completions are cut at the first ``stop`` string client-side as well, in case
        the server ignores (or truncates the list of) stop sequences.
        """
        if isinstance(prompts, str):
            raise ConfigError("generate() takes a list of prompts, not a single string")
        prompts = list(prompts)
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise ConfigError(f"prompt {i} is a {type(p).__name__}, not a string")
        if int(n) < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        if int(max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        stops = [stop] if isinstance(stop, str) else [str(s) for s in stop]
        n, max_new_tokens, seed = int(n), int(max_new_tokens), int(seed)
        temperature = float(temperature)

        # Identical prompts share one request chain (and one result).
        first_index: dict[str, int] = {}
        for i, p in enumerate(prompts):
            first_index.setdefault(p, i)
        results: dict[str, list[str]] = {}

        def job(prompt: str, index: int) -> _Job:
            def run(abort: threading.Event) -> None:
                raw = self._collect(prompt, index, n, temperature, max_new_tokens, seed,
                                    stops, abort)
                results[prompt] = [cut_at_stop(t, stops) for t in raw]
            return run

        self._run_jobs([job(p, i) for p, i in first_index.items()])
        return [list(results[p]) for p in prompts]

    def _generation_body(self, prompt: str, n: int, temperature: float, max_new_tokens: int,
                         seed: int, stop: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "temperature": temperature,
                                "max_tokens": max_new_tokens, "n": n, "seed": seed}
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        server_stop = [s for s in stop if s][:MAX_SERVER_STOPS]
        if server_stop:
            body["stop"] = server_stop
        return body

    def _collect(self, prompt: str, index: int, n: int, temperature: float,
                 max_new_tokens: int, seed: int, stop: Sequence[str],
                 abort: threading.Event) -> list[str]:
        """Raw choices for one prompt, topping up until exactly ``n`` are collected."""
        op = "openai.chat" if self.chat else "openai.completions"
        path = "/chat/completions" if self.chat else "/completions"
        label = prompt_label(index, prompt)
        collected: list[str] = []
        round_index = 0
        # Each round yields at least one choice (an empty list is retried as malformed),
        # so at most n rounds are needed.
        while len(collected) < n:
            body = self._generation_body(prompt, n - len(collected), temperature,
                                         max_new_tokens, derive_seed(seed, round_index), stop)
            key = request_key(op, body)
            texts = self._cache.get(self.fingerprint, key)
            if texts is None:
                texts = self._request(path, body, label, abort,
                                      parse=lambda payload: parse_choices(payload, self.chat))
                self._cache.put(self.fingerprint, key, op, texts)
            collected.extend(texts[: n - len(collected)])
            round_index += 1
        return collected

    # -- scoring -----------------------------------------------------------------------
    @property
    def can_score(self) -> bool:
        """Whether this server can score continuations (echoed prompt log-probabilities).

        Known once a scoring request has succeeded or been answered without usable
        log-probabilities; until then the first access sends one small probe, the echo of
        :data:`PROBE_TEXT` (stored like any scoring request, so a rerun with a store asks
        nothing). A server that cannot be reached, or rejects the key or the model, raises
        the same :class:`BackendError` that any request would: that is not a "no".
        """
        with self._probe_lock:
            if self._scoring is None:
                # a "no" raises ScoringUnsupported after _echo has recorded it
                with contextlib.suppress(ScoringUnsupported):
                    self._layouts({PROBE_TEXT: "the can_score probe"})
            return bool(self._scoring)

    def score(self, prompt: str, continuations: Sequence[str],
              normalize: str = "none") -> list[float]:
        """Log-probability of each continuation given ``prompt`` (see score_batch)."""
        if isinstance(continuations, str):
            raise ConfigError("score() takes a list of continuations, not a single string")
        return self.score_batch([(prompt, list(continuations))], normalize=normalize)[0]

    def score_batch(self, requests: Sequence[tuple[str, Sequence[str]]],
                    normalize: str = "none") -> list[list[float]]:
        """Joint log-probability of each continuation, from echoed prompt log-probabilities.

        Each ``prompt + continuation`` is sent once to ``/completions`` with ``echo``,
        ``logprobs`` and ``max_tokens = 0``, so the server tokenizes it as one text; the
        echoed tokens' offsets then say where the prompt ends. A token straddling the end
        of the prompt is not split: all the candidates of a request are scored from the
        start of the earliest such token (see :func:`joint_scores`). ``normalize`` is one
        of :data:`~xlgap.models.base.NORMALIZATIONS`; it is applied client-side, so all
        three read the same stored requests. Raises :class:`ScoringUnsupported` when the
        server does not return usable prompt log-probabilities.
        """
        check_normalize(normalize)
        requests = list(requests)
        checked: list[tuple[str, list[str]]] = []
        texts: dict[str, str] = {}
        for r, item in enumerate(requests):
            try:
                prompt, continuations = item
            except (TypeError, ValueError):
                raise ConfigError(f"score request {r} is not a (prompt, continuations) "
                                  "pair") from None
            if isinstance(continuations, str) or not isinstance(prompt, str):
                raise ConfigError(f"score request {r}: give a prompt string and a list of "
                                  "continuation strings")
            continuations = list(continuations)
            for j, c in enumerate(continuations):
                if not isinstance(c, str):
                    raise ConfigError(f"score request {r}: continuation {j} is a "
                                      f"{type(c).__name__}, not a string")
            checked.append((prompt, continuations))
            if not any(continuations):
                continue  # log P(empty string) = 0, nothing to ask
            for j, c in enumerate(continuations):
                # an empty candidate is scored on the prompt's own tokens (see joint_scores)
                if prompt + c:
                    texts.setdefault(prompt + c, f"score request {r} continuation {j} "
                                     + repr(quote(prompt + c)))
        layouts = self._layouts(texts)
        empty = EchoLayout((), (), 0)
        out: list[list[float]] = []
        for r, (prompt, continuations) in enumerate(checked):
            if not any(continuations):
                out.append([0.0] * len(continuations))
                continue
            try:
                out.append(joint_scores(prompt, continuations,
                                        [layouts.get(prompt + c, empty) for c in continuations],
                                        normalize))
            except ValueError as err:
                raise BackendError(f"score request {r} ({quote(prompt)!r}) cannot be scored: "
                                   f"{err}") from None
        return out

    def _layouts(self, texts: Mapping[str, str]) -> dict[str, EchoLayout]:
        """The echo layout of each text (keys; values label them in errors), from the
        store or the server, with up to ``concurrency`` requests in flight."""
        layouts: dict[str, EchoLayout] = {}

        def job(text: str, label: str) -> _Job:
            def run(abort: threading.Event) -> None:
                layouts[text] = self._echo(text, label, abort)
            return run

        self._run_jobs([job(text, label) for text, label in texts.items()])
        return layouts

    def _echo(self, text: str, label: str, abort: threading.Event) -> EchoLayout:
        body: dict[str, Any] = {"model": self.model, "prompt": text, "max_tokens": 0,
                                "echo": True, "logprobs": 1, "temperature": 0.0}
        key = request_key(ECHO_OP, body)  # the logical request, whatever max_tokens is sent
        cached = EchoLayout.from_json(self._cache.get(self.fingerprint, key))
        if cached is not None:
            self._scoring = True
            return cached

        def parse(payload: Any) -> EchoLayout:
            if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list) \
                    or not payload["choices"] or not isinstance(payload["choices"][0], dict):
                raise ValueError("response has no choices")
            choice = payload["choices"][0]
            echoed = choice.get("text")
            if echoed is None:
                echoed = text  # the text is optional in some servers' echo responses
            if not isinstance(echoed, str) or not echoed.startswith(text):
                raise _NoScores("the prompt was not echoed back")
            logprobs = choice.get("logprobs")
            if not isinstance(logprobs, dict):
                raise _NoScores("the response carries no logprobs")
            try:
                return echo_layout(text, echoed, logprobs)
            except ValueError as err:
                # e.g. llama.cpp returns only the generated token's log-probability
                raise _NoScores(str(err)) from None

        while True:
            sent = dict(body, max_tokens=self._score_max_tokens)
            try:
                layout = self._request("/completions", sent, label, abort, parse=parse)
                break
            except _NoScores as err:
                self._scoring = False
                raise ScoringUnsupported(f"{CANNOT_SCORE} ({self.base_url}/completions with "
                                         f"echo+logprobs, {label}: {err})") from None
            except HTTPStatusError as err:
                if err.status in (400, 422) and self._score_max_tokens == 0:
                    self._score_max_tokens = 1  # retry once the way vLLM >= 0.6 wants it
                    continue
                if err.model_missing or err.status in (0, 401, 403):
                    raise
                self._scoring = False
                raise ScoringUnsupported(f"{CANNOT_SCORE} ({err})") from None
        self._scoring = True
        self._cache.put(self.fingerprint, key, ECHO_OP, layout.to_json())
        return layout

    # -- concurrency -------------------------------------------------------------------
    def _run_jobs(self, jobs: Sequence[_Job]) -> None:
        """Run jobs on a bounded pool; on the first failure stop starting new requests,
        let the ones in flight finish (their results are stored) and raise it.

        Until one request to this server has succeeded, jobs run one at a time, so a
        rejected key or unknown model costs one request, not ``concurrency`` of them.
        """
        abort = threading.Event()
        pending = list(jobs)
        while pending and (not self._server_ok or self.concurrency == 1):
            pending.pop(0)(abort)
        if not pending:
            return
        errors: list[BaseException] = []
        errors_lock = threading.Lock()

        def guarded(job: _Job) -> None:
            if abort.is_set():
                return  # a sibling failed: do not start new requests
            try:
                job(abort)
            except _Aborted:
                pass
            except BaseException as err:
                with errors_lock:
                    errors.append(err)
                abort.set()

        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(pending)),
                                  thread_name_prefix="xlgap-openai")
        try:
            futures = [pool.submit(guarded, job) for job in pending]
            wait(futures)
        except BaseException:
            abort.set()  # e.g. Ctrl-C: in-flight requests finish and are stored, then stop
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if errors:
            raise errors[0]

    # -- one request with retries ------------------------------------------------------
    def _request(self, path: str, body: Mapping[str, Any], label: str,
                 abort: threading.Event, parse: Callable[[Any], T]) -> T:
        """POST ``body`` to ``path`` until it succeeds, retrying transient failures.

        Raises :class:`HTTPStatusError` for a non-retryable status (at once) and
        :class:`BackendError` after ``max_retries`` retries, naming the request and the
        last error; raises ``_Aborted`` if a sibling request failed meanwhile.
        """
        url = self.base_url + path
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                raise _Aborted()
            try:
                result = parse(self._post(url, data))
                self._server_ok = True
                return result
            except _Transient as err:
                last, wait_s = str(err), err.retry_after
            except ValueError as err:  # JSON, but not the expected shape: retry it too
                last, wait_s = f"malformed response from {url}: {err}", None
            except _HTTPFailure as err:
                raise self._fatal(err, label) from None
            if attempt == self.max_retries:
                break
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_max,
                                  self._rng.random())
            if wait_s is not None:
                delay = max(delay, min(wait_s, max(self.backoff_max, RETRY_AFTER_CAP)))
            logger.info("%s: %s; retry %d/%d in %.3fs", label, last, attempt + 1,
                        self.max_retries, delay)
            if abort.wait(delay):
                raise _Aborted()
        raise BackendError(f"request for {label} to {url} failed after "
                           f"{self.max_retries + 1} attempts; last error: {last}. Results "
                           "obtained so far are stored: a rerun fetches only the missing ones.")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "xlgap-openai-backend"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _http(self) -> httpx.Client:
        """The backend's client (one connection pool for all its threads)."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    # one limit for connecting, each read, each write and waiting for a
                    # pooled connection: a stalled server costs at most this per attempt
                    timeout=httpx.Timeout(self.timeout),
                    # enough connections for every worker plus the /models lookup
                    limits=httpx.Limits(max_connections=self.concurrency + 1,
                                        max_keepalive_connections=self.concurrency),
                    # _send follows redirects itself, to decide where the key may go
                    follow_redirects=False)
            return self._client

    def close(self) -> None:
        """Close the connection pool (a later request opens a new one)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _send(self, method: str, url: str, data: bytes | None,
              timeout: float | None = None) -> httpx.Response:
        """One request, following up to MAX_REDIRECTS redirects; returns the final
        response, whatever its status. Transport errors propagate (httpx exceptions).

        httpx already drops ``Authorization`` when a redirect leaves the origin; this
        checks every hop against the configured server once more, so the key can never
        reach another host whatever the httpx version. A redirect that would turn a POST
        into a GET (301/302/303) is refused: the API would answer with a confusing 404
        or 405, and the right fix is the final URL as ``--base-url``.
        """
        client = self._http()
        origin = httpx.URL(url)
        request = client.build_request(method, url, content=data, headers=self._headers(),
                                       timeout=timeout if timeout is not None
                                       else httpx.USE_CLIENT_DEFAULT)
        for _ in range(MAX_REDIRECTS + 1):
            response = client.send(request)
            following = response.next_request
            if following is None:
                return response
            response.close()
            where = f"{request.url} redirected (HTTP {response.status_code}) to {following.url}"
            if following.method != request.method:
                raise _HTTPFailure(response.status_code, str(request.url),
                                   f"{where}, which would turn the {request.method} into a "
                                   f"{following.method}; give the final server's API root as "
                                   "--base-url")
            if not same_server(origin, following.url):
                following.headers.pop("Authorization", None)
            logger.debug("%s", where)
            request = following
        raise _HTTPFailure(response.status_code, url, f"more than {MAX_REDIRECTS} redirects "
                           f"(last to {request.url})")

    def _post(self, url: str, data: bytes) -> Any:
        """One POST; returns the decoded JSON, or raises _Transient / _HTTPFailure."""
        try:
            response = self._send("POST", url, data)
        except httpx.UnsupportedProtocol as err:  # e.g. a redirect to ftp://
            raise _HTTPFailure(0, url, f"cannot follow: {err}") from None
        except httpx.ConnectError as err:
            # no such host, or a certificate that does not verify: retrying cannot help
            fatal = caused_by(err, (socket.gaierror, ssl.SSLCertVerificationError))
            if fatal is not None:
                raise _HTTPFailure(0, url, f"cannot connect: {fatal}") from None
            raise _Transient(f"connection to {url} failed: {err!r}") from None
        except httpx.RequestError as err:
            # timeouts, resets, bodies shorter than their Content-Length, ...
            raise _Transient(f"connection to {url} failed: {err!r}") from None
        status = response.status_code
        final_url = str(response.url)
        if not 200 <= status < 300:
            detail = server_message(response.content)
            if status in RETRYABLE_STATUSES:
                raise _Transient(f"HTTP {status} from {final_url}: {detail}",
                                 parse_retry_after(response.headers))
            raise _HTTPFailure(status, final_url, detail)
        raw = response.content
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise _Transient(f"malformed JSON from {final_url} ({len(raw)} bytes): "
                             f"{err}") from None

    def _fatal(self, err: _HTTPFailure, label: str) -> HTTPStatusError:
        """A clear error for a status that retrying cannot fix."""
        if err.status in (401, 403):
            if not same_server(httpx.URL(self.base_url), httpx.URL(err.url)):
                return HTTPStatusError(
                    f"{err.url}, reached by a redirect from {self.base_url}, refused the "
                    f"request (HTTP {err.status}: {err.message}); the API key is never sent "
                    "to another server: if you trust it, give its API root as --base-url",
                    err.status)
            if self._api_key:
                what = f"the API key in ${self.api_key_env} was rejected by {err.url}"
            else:
                what = f"{err.url} requires an API key, but ${self.api_key_env} is not set"
            return HTTPStatusError(f"{what} (HTTP {err.status}: {err.message})", err.status)
        if err.status == 404:
            models = self.list_models()
            missing = False
            if models is None:
                hint = (f"; GET {self.base_url}/models did not answer either: check "
                        "--base-url (it usually ends in /v1)")
            elif self.model not in models:
                missing = True
                shown = ", ".join(models[:50]) + (" ..." if len(models) > 50 else "")
                hint = (f"; model {self.model!r} is not served there. Available models: "
                        f"{shown or '(none)'}")
            else:
                hint = (f"; the server lists model {self.model!r}, so it probably lacks this "
                        "endpoint (chat models: chat=True; base models: chat=False)")
            return HTTPStatusError(f"HTTP 404 from {err.url}: {err.message}{hint}", 404,
                                   model_missing=missing)
        if err.status == 0:
            return HTTPStatusError(f"request for {label}: {err.message}", 0)
        return HTTPStatusError(f"request for {label} was refused: HTTP {err.status} from "
                               f"{err.url}: {err.message}", err.status)

    def list_models(self) -> list[str] | None:
        """Model ids from ``GET {base_url}/models``, or ``None`` if it does not answer."""
        try:
            response = self._send("GET", self.base_url + "/models", None,
                                  timeout=min(self.timeout, MODELS_LOOKUP_TIMEOUT))
            payload = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, _HTTPFailure, ValueError):
            return None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            return None
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

"""Backend for any OpenAI-compatible HTTP server (OpenAI, vLLM, llama.cpp server, TGI...).

Only the standard library is used: ``urllib.request`` for HTTP and a thread pool for
concurrency, so the backend adds no dependency.

Robustness is the point of this module. A long run against a remote server meets
rate limits, overloaded replicas, dropped connections and half-written bodies; each
request is therefore retried with exponential backoff and jitter (honouring
``Retry-After``), and every successful request is written to the :class:`Store` before
its result is used, so a run that finally fails keeps what it obtained and a rerun
asks the server only for what is missing. Errors that retrying cannot fix (a rejected
key, an unknown model, a bad request) fail fast instead of burning the retry budget.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import math
import os
import random
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from email.message import Message
from typing import Any, TypeVar

from xlgap.errors import BackendError, ConfigError
from xlgap.models.base import Backend
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


def parse_retry_after(headers: Message | Mapping[str, str] | None) -> float | None:
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


def continuation_logprob(logprobs: Mapping[str, Any], prompt_chars: int,
                         end_chars: int) -> float:
    """Sum of token log-probabilities of tokens starting in ``[prompt_chars, end_chars)``.

    ``logprobs`` is the legacy completions ``logprobs`` object (``token_logprobs`` and
    ``text_offset``, character offsets into the echoed text). Tokens past ``end_chars``
    were generated, not echoed, and are ignored. Raises ``ValueError`` when the object is
    incomplete, which callers report as a server that cannot score.
    """
    token_lp = logprobs.get("token_logprobs")
    offsets = logprobs.get("text_offset")
    if not isinstance(token_lp, list) or not isinstance(offsets, list):
        raise ValueError("no token_logprobs/text_offset in the response")
    if len(token_lp) != len(offsets):
        raise ValueError(f"{len(token_lp)} token_logprobs but {len(offsets)} text_offset")
    total = 0.0
    for offset, lp in zip(offsets, token_lp, strict=True):
        if not isinstance(offset, int) or offset < prompt_chars or offset >= end_chars:
            continue
        if lp is None:
            raise ValueError(f"no log-probability for the token at character {offset}")
        total += float(lp)
    return total


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
        # urllib's default opener honours http(s)_proxy / no_proxy from the environment.
        self._opener = urllib.request.build_opener()
        # Set after the first successful request: until then requests go one at a time,
        # so a rejected key or unknown model is reported once, not by every worker.
        self._server_ok = False
        # Some servers refuse max_tokens=0 for echo scoring; then 1 is used (the
        # generated token lies past the echoed text and is not counted).
        self._score_max_tokens = 0
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
    def score(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        """Total log-probability of each continuation given ``prompt`` (see score_batch)."""
        if isinstance(continuations, str):
            raise ConfigError("score() takes a list of continuations, not a single string")
        return self.score_batch([(prompt, list(continuations))])[0]

    def score_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Total log-probability of each continuation, from echoed prompt log-probabilities.

        Sends ``prompt + continuation`` to ``/completions`` with ``echo``, ``logprobs`` and
        ``max_tokens = 0`` and sums the log-probabilities of the tokens that start at or
        after ``len(prompt)``. The prompt should end where a token ends (typically: no
        trailing space, continuation starting with a space); a token straddling the
        boundary counts as prompt. Raises :class:`BackendError` when the server does not
        return prompt log-probabilities.
        """
        requests = list(requests)
        labels: dict[tuple[str, str], str] = {}
        for r, item in enumerate(requests):
            try:
                prompt, continuations = item
            except (TypeError, ValueError):
                raise ConfigError(f"score request {r} is not a (prompt, continuations) "
                                  "pair") from None
            if isinstance(continuations, str) or not isinstance(prompt, str):
                raise ConfigError(f"score request {r}: give a prompt string and a list of "
                                  "continuation strings")
            for j, c in enumerate(continuations):
                if not isinstance(c, str):
                    raise ConfigError(f"score request {r}: continuation {j} is a "
                                      f"{type(c).__name__}, not a string")
                labels.setdefault((prompt, c), f"score request {r} continuation {j} "
                                  + repr(quote(prompt + c)))
        values: dict[tuple[str, str], float] = {}

        def job(pair: tuple[str, str], label: str) -> _Job:
            def run(abort: threading.Event) -> None:
                values[pair] = self._score_one(pair[0], pair[1], label, abort)
            return run

        self._run_jobs([job(pair, label) for pair, label in labels.items()])
        return [[values[(p, c)] for c in cs] for p, cs in requests]

    def _score_one(self, prompt: str, continuation: str, label: str,
                   abort: threading.Event) -> float:
        if not continuation:
            return 0.0  # log P(empty string) = 0
        text = prompt + continuation
        body: dict[str, Any] = {"model": self.model, "prompt": text, "max_tokens": 0,
                                "echo": True, "logprobs": 1, "temperature": 0.0}
        op = "openai.completions"
        key = request_key(op, body)  # the logical request, whatever max_tokens is sent
        cached = self._cache.get(self.fingerprint, key)
        if cached is not None:
            return float(cached)

        def parse(payload: Any) -> float:
            if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list) \
                    or not payload["choices"] or not isinstance(payload["choices"][0], dict):
                raise ValueError("response has no choices")
            choice = payload["choices"][0]
            echoed = choice.get("text")
            if isinstance(echoed, str) and not echoed.startswith(text):
                raise _NoScores("the prompt was not echoed back")
            logprobs = choice.get("logprobs")
            if not isinstance(logprobs, dict):
                raise _NoScores("the response carries no logprobs")
            offsets = logprobs.get("text_offset")
            if not isinstance(offsets, list) or not any(
                    isinstance(o, int) and len(prompt) <= o < len(text) for o in offsets):
                # e.g. llama.cpp returns only the generated token's log-probability
                raise _NoScores("no log-probabilities for the echoed continuation tokens")
            try:
                return continuation_logprob(logprobs, len(prompt), len(text))
            except ValueError as err:
                raise _NoScores(str(err)) from None

        while True:
            sent = dict(body, max_tokens=self._score_max_tokens)
            try:
                value = self._request("/completions", sent, label, abort, parse=parse)
                break
            except _NoScores as err:
                raise BackendError(f"{CANNOT_SCORE} ({self.base_url}/completions with "
                                   f"echo+logprobs: {err})") from None
            except HTTPStatusError as err:
                if err.status in (400, 422) and self._score_max_tokens == 0:
                    self._score_max_tokens = 1  # retry once the way vLLM >= 0.6 wants it
                    continue
                if err.model_missing or err.status in (0, 401, 403):
                    raise
                raise BackendError(f"{CANNOT_SCORE} ({err})") from None
        self._cache.put(self.fingerprint, key, op, value)
        return value

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

    def _post(self, url: str, data: bytes) -> Any:
        """One POST; returns the decoded JSON, or raises _Transient / _HTTPFailure."""
        req = urllib.request.Request(url, data=data, headers=self._headers(), method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            try:
                detail = server_message(err.read())
            except (OSError, http.client.HTTPException):
                detail = str(err.reason)
            if err.code in RETRYABLE_STATUSES:
                raise _Transient(f"HTTP {err.code} from {url}: {detail}",
                                 parse_retry_after(err.headers)) from None
            raise _HTTPFailure(err.code, url, detail) from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, socket.gaierror | ssl.SSLCertVerificationError):
                raise _HTTPFailure(0, url, f"cannot connect: {reason}") from None
            raise _Transient(f"connection to {url} failed: {reason!r}") from None
        except (OSError, http.client.HTTPException) as err:
            # read timeouts, resets mid-body, IncompleteRead, RemoteDisconnected...
            raise _Transient(f"connection to {url} failed: {err!r}") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise _Transient(f"malformed JSON from {url} ({len(raw)} bytes): {err}") from None

    def _fatal(self, err: _HTTPFailure, label: str) -> HTTPStatusError:
        """A clear error for a status that retrying cannot fix."""
        if err.status in (401, 403):
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
        req = urllib.request.Request(self.base_url + "/models", headers=self._headers(),
                                     method="GET")
        try:
            with self._opener.open(req, timeout=min(self.timeout, MODELS_LOOKUP_TIMEOUT)) as r:
                payload = json.loads(r.read().decode("utf-8"))
        except (OSError, http.client.HTTPException, ValueError):
            return None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            return None
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

"""Backend for any OpenAI-compatible HTTP server (OpenAI, vLLM, llama.cpp server, TGI...).

A thread pool provides concurrency; HTTP, retries and the API-key rule are in
:mod:`xlgap.models.openai.http`, the echo-scoring maths in :mod:`xlgap.models.openai.echo`.

Every successful request is written to the :class:`Store` before its result is used, so
a run that finally fails keeps what it obtained and a rerun asks the server only for
what is missing: the backend caches itself (``caches_itself``), per HTTP request.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from xlgap.errors import BackendError, ConfigError
from xlgap.models import register_backend
from xlgap.models.base import Backend, check_normalize
from xlgap.models.openai.echo import ECHO_OP, EchoLayout, echo_layout, joint_scores
from xlgap.models.openai.http import Aborted, APIClient, HTTPStatusError
from xlgap.models.tokens import cut_at_stop
from xlgap.store import Store, request_key

#: OpenAI accepts at most this many stop sequences; the rest are applied client-side.
MAX_SERVER_STOPS = 4
#: How many characters of a prompt an error message quotes.
PROMPT_QUOTE = 60
#: The text :attr:`OpenAIBackend.can_score` asks the server to echo, once per backend.
PROBE_TEXT = "The capital of France is Paris."

CANNOT_SCORE = "this server cannot score; use sampling or a white-box backend"


def derive_seed(seed: int, round_index: int) -> int:
    """Seed of the ``round_index``-th top-up request (round 0 uses ``seed`` itself).

    A top-up must not repeat the seed, or a server that honours seeds would return the
    same samples again; deriving it by hashing keeps reruns deterministic (and cached).
    """
    if round_index == 0:
        return int(seed)
    digest = hashlib.sha256(f"xlgap-topup:{int(seed)}:{round_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def reported_usage(payload: Any) -> dict[str, int] | None:
    """The server's own token counts of one response (``usage``), or None where it sent
    none (or sent something else)."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    counts = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
               for v in counts.values()):
        return None
    return counts  # type: ignore[return-value]


class TokenCounts:
    """The tokens the server reported for this backend's generation responses, summed
    over responses (stored ones included: a rerun from the store costs nothing, but a
    plan made from it must price what the run asked for); ``unreported`` counts the
    responses without counts (a server that sends none, or a response stored by an older
    xlgap). Thread-safe: requests run in parallel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = {"responses": 0, "unreported": 0, "prompt_tokens": 0,
                        "completion_tokens": 0}

    def add(self, usage: Mapping[str, int] | None) -> None:
        with self._lock:
            self._totals["responses"] += 1
            if usage is None:
                self._totals["unreported"] += 1
            else:
                self._totals["prompt_tokens"] += usage["prompt_tokens"]
                self._totals["completion_tokens"] += usage["completion_tokens"]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)


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


class ScoringUnsupported(BackendError):
    """The server answers, but not with the echoed prompt log-probabilities that scoring
    needs (or with ones that cannot be lined up with the text)."""


class _NoScores(Exception):
    """A 200 response without usable prompt log-probabilities."""


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


@register_backend("openai")
class OpenAIBackend(Backend):
    """A model served behind an OpenAI-compatible ``/v1`` API (black box: sampling and,
    where the server echoes prompt log-probabilities, scoring)."""

    kind = "openai"
    # black box behind a server: scoring where it echoes log-probabilities, no hidden
    # states or hooks, no Ray sharding (it batches itself), results stored per request
    scores = True
    caches_itself = True
    in_process = False

    def __init__(self, model: str, base_url: str, *, api_key_env: str = "OPENAI_API_KEY",
                 store: Store | None = None, chat: bool = True, concurrency: int = 8,
                 max_retries: int = 8, timeout: float = 60.0, backoff_base: float = 0.5,
                 backoff_max: float = 30.0) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("the OpenAI backend needs a model name: --model openai:NAME")
        if int(concurrency) < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        self.model = model.strip()
        self.http = APIClient(base_url, model=self.model, api_key_env=api_key_env,
                              concurrency=int(concurrency), max_retries=max_retries,
                              timeout=timeout, backoff_base=backoff_base,
                              backoff_max=backoff_max)
        self.base_url = self.http.base_url
        self.api_key_env = api_key_env
        self.chat = bool(chat)
        self.is_chat = self.chat
        self.concurrency = int(concurrency)
        self._cache: Store | _MemoryCache = store if store is not None else _MemoryCache()
        # Some servers refuse max_tokens=0 for echo scoring; then 1 is used (the
        # generated token lies past the echoed text and is not counted).
        self._score_max_tokens = 0
        # None until a scoring request (or the can_score probe) has shown whether the
        # server echoes prompt log-probabilities.
        self._scoring: bool | None = None
        self._probe_lock = threading.Lock()
        self._tokens = TokenCounts()

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
            stored = self._cache.get(self.fingerprint, key)
            if stored is None:
                seen: dict[str, Any] = {}

                def parse(payload: Any, seen: dict[str, Any] = seen) -> list[str]:
                    seen["usage"] = reported_usage(payload)
                    return parse_choices(payload, self.chat)

                texts = self.http.request(path, body, label, abort, parse=parse)
                usage = seen.get("usage")
                self._cache.put(self.fingerprint, key, op, {"texts": texts, "usage": usage})
            elif isinstance(stored, dict):
                texts, usage = stored["texts"], stored.get("usage")
            else:  # stored by an xlgap that kept the choices only
                texts, usage = stored, None
            self._tokens.add(usage)
            collected.extend(texts[: n - len(collected)])
            round_index += 1
        return collected

    def token_counts(self) -> dict[str, int]:
        """The server-reported tokens of the generation responses so far
        (:class:`TokenCounts`): what ``usage.jsonl`` records for a backend without a
        tokenizer of its own, so that ``xlgap plan`` can price an API pilot."""
        return self._tokens.snapshot()

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
                layout = self.http.request("/completions", sent, label, abort, parse=parse)
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
        # (not self.http.server_ok: a rejected key or unknown model is reported once)
        while pending and (not self.http.server_ok or self.concurrency == 1):
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
            except Aborted:
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

    # -- connections -------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool (a later request opens a new one)."""
        self.http.close()

    def list_models(self) -> list[str] | None:
        """Model ids from ``GET {base_url}/models``, or ``None`` if it does not answer."""
        return self.http.list_models()

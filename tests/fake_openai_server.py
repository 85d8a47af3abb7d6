"""A real OpenAI-compatible HTTP server on loopback, with faults injected on demand.

Tests of :mod:`xlgap.models.openai` run the backend against this server over real
sockets, so retries, timeouts, dropped connections and truncated bodies are exercised
exactly as a remote server would produce them.

* Answers are deterministic: a function of (prompt, seed, choice index), or of the prompt
  alone at temperature 0 (see :func:`fake_answer`), so a run with faults can be compared
  with a fault-free run.
* ``/v1/completions`` with ``echo`` and ``logprobs`` returns token log-probabilities of a
  whitespace tokenizer under a hash-defined bigram "model" (:func:`text_logprobs`), a
  ground truth the client's scores are checked against.
* Faults come from a ``schedule`` (applied to the 1st, 2nd, ... POST in arrival order),
  from ``fail_prompts`` (every request whose prompt contains one of the substrings fails),
  or at random with probability ``fault_rate``. Random faults are drawn from a hash of
  (``fault_seed``, request body, how often that body was seen), so they do not depend on
  thread scheduling, and at most ``max_consecutive_faults`` in a row hit one body.
* Every request is recorded (path, body, fault, headers) so tests can count what reached
  the server and check what it was sent (e.g. that an API key never arrived); ``issued``
  lists, per prompt, the texts actually sent in fault-free responses.
* ``redirect_prefix`` makes the server answer requests under that path with a redirect
  (``redirect_status``) to ``redirect_to`` plus the rest of the path: another server's
  ``base_url``, or a path on this one. ``bos_token`` mimics vLLM's echo of a model with a
  BOS token (listed first, its characters counted in the offsets, absent from the text);
  ``token_space`` writes token strings with that character for spaces (raw byte-level
  pieces, as older vLLM versions did), so they no longer match the text.

Use it as a context manager; the server always shuts down on exit::

    with FakeOpenAIServer(fault_rate=0.3) as server:
        backend = OpenAIBackend("fake-model", server.base_url, backoff_base=0.001)
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Fault names accepted in ``schedule``, ``fault_kinds`` and ``permanent_fault``.
FAULT_KINDS = ("429", "500", "502", "503", "504", "drop", "malformed", "truncated", "empty",
               "slow", "401")
#: The mix used by ``fault_rate`` unless told otherwise.
DEFAULT_RANDOM_FAULTS = ("429", "500", "503", "drop", "malformed", "truncated", "empty")

_TOKEN = re.compile(r"\s*\S+")


# -- the deterministic "model" ---------------------------------------------------------

def _hash_int(*parts: object) -> int:
    blob = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def fake_answer(prompt: str, seed: int, index: int, temperature: float,
                max_tokens: int = 16) -> str:
    """The completion the fake server gives for one choice, before stop sequences.

    Two to four pseudo-words (at most ``max_tokens``), then a newline and a tail, so a
    ``"\\n"`` stop sequence visibly matters. At temperature 0 it is the greedy answer and
    ignores seed and index.
    """
    if temperature == 0:
        seed, index = 0, 0
    h = _hash_int("answer", prompt, seed, index)
    k = min(2 + h % 3, max(1, max_tokens))
    words = [f"w{(h >> (8 * i)) & 0xFFFF:04x}" for i in range(k)]
    return " " + " ".join(words) + "\nTAIL"


def tokenize(text: str) -> list[tuple[int, str]]:
    """Whitespace tokens with their character offsets; a token carries the whitespace
    before it, so the tokens concatenate back to the text (minus trailing spaces)."""
    return [(m.start(), m.group()) for m in _TOKEN.finditer(text)]


def token_logprob(previous: str | None, token: str) -> float:
    """Log-probability of ``token`` after ``previous`` under the fake bigram model:
    a hash-defined value in [-8, -0.05)."""
    return -0.05 - (_hash_int("lp", previous, token) % 7951) / 1000.0


def text_logprobs(text: str) -> dict[str, list[Any]]:
    """Legacy ``logprobs`` object for ``text``: the first token has no log-probability."""
    toks = tokenize(text)
    token_lps: list[float | None] = []
    for i, (_, tok) in enumerate(toks):
        token_lps.append(None if i == 0 else token_logprob(toks[i - 1][1], tok))
    return {"tokens": [t for _, t in toks], "token_logprobs": token_lps,
            "text_offset": [o for o, _ in toks],
            "top_logprobs": [None if lp is None else {t: lp}
                             for (_, t), lp in zip(toks, token_lps, strict=True)]}


def with_bos(logprobs: dict[str, list[Any]], bos: str) -> dict[str, list[Any]]:
    """``logprobs`` as vLLM reports them for a model that prepends ``bos``: the BOS token
    comes first (no log-probability), its characters shift every offset after it, and
    the first real token gets a log-probability (it now has a context)."""
    tokens = [bos, *logprobs["tokens"]]
    lps: list[float | None] = [None]
    for i, tok in enumerate(logprobs["tokens"]):
        lps.append(token_logprob(bos, tok) if i == 0 else logprobs["token_logprobs"][i])
    return {"tokens": tokens, "token_logprobs": lps,
            "text_offset": [0, *[o + len(bos) for o in logprobs["text_offset"]]],
            "top_logprobs": [None if lp is None else {t: lp}
                             for t, lp in zip(tokens, lps, strict=True)]}


def _cut(text: str, stop: Sequence[str]) -> str:
    end = len(text)
    for s in stop:
        pos = text.find(s) if s else -1
        if 0 <= pos < end:
            end = pos
    return text[:end]


def _prompt_of(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    if isinstance(body.get("prompt"), str):
        return body["prompt"]
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("content", ""))
    return ""


@dataclass(frozen=True)
class Record:
    """One request as the server saw it."""

    method: str
    path: str
    body: Any
    fault: str | None
    #: request headers, names in lower case
    headers: Mapping[str, str] = field(default_factory=dict)


# -- the server ------------------------------------------------------------------------

class FakeOpenAIServer:
    """Loopback OpenAI-compatible server; see the module docstring.

    Every option is a plain attribute and may be changed while the server runs (e.g.
    ``server.fail_prompts = ()`` to "repair" a permanent fault between two runs).
    """

    def __init__(self, *, models: Sequence[str] = ("fake-model",), api_key: str | None = None,
                 max_n: int | None = None, schedule: Iterable[str | None] = (),
                 fault_rate: float = 0.0, fault_kinds: Sequence[str] = DEFAULT_RANDOM_FAULTS,
                 fault_seed: int = 0, max_consecutive_faults: int = 3,
                 fail_prompts: Sequence[str] = (), permanent_fault: str = "500",
                 retry_after: float | str | Callable[[], str] | None = 0.0,
                 slow_seconds: float = 0.5, latency: float = 0.0, honour_stop: bool = True,
                 supports_completions: bool = True, supports_logprobs: bool = True,
                 supports_echo: bool = True, reject_max_tokens_zero: bool = False,
                 reverse_choices: bool = False, redirect_prefix: str | None = None,
                 redirect_to: str = "", redirect_status: int = 307,
                 bos_token: str | None = None, token_space: str | None = None,
                 keep_alive: bool = False) -> None:
        for kind in [*schedule, *fault_kinds, permanent_fault]:
            if kind is not None and kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault {kind!r}; choose from {FAULT_KINDS}")
        self.models = list(models)
        self.api_key = api_key
        self.max_n = max_n
        self.schedule: list[str | None] = list(schedule)
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.fault_seed = fault_seed
        self.max_consecutive_faults = max_consecutive_faults
        self.fail_prompts = tuple(fail_prompts)
        self.permanent_fault = permanent_fault
        self.slow_seconds = slow_seconds
        self.latency = latency
        self.honour_stop = honour_stop
        self.supports_completions = supports_completions
        self.supports_logprobs = supports_logprobs
        self.supports_echo = supports_echo
        self.reject_max_tokens_zero = reject_max_tokens_zero
        self.reverse_choices = reverse_choices
        #: ``Retry-After`` of 429 and 503 faults: seconds, a header value, or a function
        #: giving one at answer time (e.g. an HTTP date); None sends no header
        self.retry_after = retry_after
        self.redirect_prefix = redirect_prefix
        self.redirect_to = redirect_to
        self.redirect_status = redirect_status
        self.bos_token = bos_token
        self.token_space = token_space
        #: HTTP/1.1 with persistent connections (default: HTTP/1.0, one request each, so
        #: that a dropped connection is unambiguous)
        self.keep_alive = keep_alive

        self.records: list[Record] = []
        self.issued: dict[str, list[str]] = defaultdict(list)
        self.faults: Counter[str] = Counter()
        self.max_in_flight = 0
        #: TCP connections accepted (with keep_alive, fewer than requests when reused)
        self.connections = 0
        self._in_flight = 0
        self._seen: Counter[str] = Counter()
        self._streak: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> FakeOpenAIServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.fake = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-openai-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # wakes handlers sleeping in "slow" faults or latency
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started: use it as a context manager"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- what tests inspect ------------------------------------------------------------
    def headers_seen(self, name: str) -> list[str | None]:
        """The value of header ``name`` in each request received, in arrival order."""
        with self._lock:
            return [r.headers.get(name.lower()) for r in self.records]

    def count(self, path: str | None = None) -> int:
        """Requests received (for ``path`` only, e.g. "/v1/completions", if given)."""
        with self._lock:
            return sum(1 for r in self.records if path is None or r.path == path)

    def count_prompt(self, substring: str) -> int:
        """Requests whose prompt contains ``substring``."""
        with self._lock:
            return sum(1 for r in self.records if substring in _prompt_of(r.body))

    def reset_counts(self) -> None:
        with self._lock:
            self.records.clear()
            self.faults.clear()
            self.issued.clear()
            self.max_in_flight = 0
            self.connections = 0

    # -- decisions (called by the handler) ---------------------------------------------
    def _redirect_target(self, path: str) -> str | None:
        """Where a request for ``path`` is redirected, or None to answer it here."""
        prefix = self.redirect_prefix
        if prefix is None or not (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
            return None
        return self.redirect_to.rstrip("/") + path[len(prefix.rstrip("/")):]

    def _retry_after_header(self) -> dict[str, str]:
        value = self.retry_after
        if value is None:
            return {}
        return {"Retry-After": value() if callable(value) else str(value)}

    def _admit(self, method: str, path: str, body: Any, headers: Mapping[str, str],
               redirected: bool = False) -> str | None:
        """Record a request and decide its fault (None: answer normally). A redirected
        request is recorded but takes no fault (the schedule is for real answers)."""
        with self._lock:
            fault: str | None = None
            if method == "POST" and not redirected:
                fault = self._decide_fault(body)
            self.records.append(Record(method, path, body, fault, dict(headers)))
            if fault is not None:
                self.faults[fault] += 1
            return fault

    def _decide_fault(self, body: Any) -> str | None:
        if self.schedule:
            return self.schedule.pop(0)
        prompt = _prompt_of(body)
        if any(s in prompt for s in self.fail_prompts):
            return self.permanent_fault
        if self.fault_rate <= 0:
            return None
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        attempt = self._seen[key]
        self._seen[key] += 1
        if self._streak[key] < self.max_consecutive_faults:
            rng = random.Random(f"{self.fault_seed}:{key}:{attempt}")
            if rng.random() < self.fault_rate:
                self._streak[key] += 1
                return rng.choice(self.fault_kinds)
        self._streak[key] = 0
        return None

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _issue(self, prompt: str, texts: Sequence[str]) -> None:
        with self._lock:
            self.issued[prompt].extend(texts)


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) overflows under a burst of concurrent clients, and the
    # kernel then drops SYNs that are retried only after a second.
    request_queue_size = 128
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a drop is unambiguous
    server_version = "FakeOpenAI/1.0"

    @property
    def fake(self) -> FakeOpenAIServer:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    def setup(self) -> None:
        super().setup()
        fake = self.fake
        with fake._lock:
            fake.connections += 1
        if fake.keep_alive:
            self.protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logs
        pass

    # -- plumbing ----------------------------------------------------------------------
    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. timed out): nothing to do

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "fake_error",
                                      "code": status}}, headers)

    # -- GET ---------------------------------------------------------------------------
    def _header_map(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _redirect(self, target: str) -> None:
        try:
            self.send_response(self.fake.redirect_status)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        target = self.fake._redirect_target(self.path)
        self.fake._admit("GET", self.path, None, self._header_map(),
                          redirected=target is not None)
        if target is not None:
            self._redirect(target)
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "owned_by": "fake"} for m in self.fake.models]})
        else:
            self._error(404, f"no route {self.path}")

    # -- POST --------------------------------------------------------------------------
    def do_POST(self) -> None:
        fake = self.fake
        fake._enter()
        try:
            self._post(fake)
        finally:
            fake._leave()

    def _post(self, fake: FakeOpenAIServer) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        path = self.path.rstrip("/")
        target = fake._redirect_target(path)
        fault = fake._admit("POST", path, body, self._header_map(),
                            redirected=target is not None)
        if target is not None:
            self._redirect(target)
            return
        if fake.latency > 0 and fake._stop.wait(fake.latency):
            return
        if fake.api_key is not None and \
                self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            self._error(401, "Incorrect API key provided")
            return
        if fault is not None and fault != "slow":
            self._fault(fault)
            return
        if fault == "slow" and fake._stop.wait(fake.slow_seconds):
            return
        if not isinstance(body, dict):
            self._error(400, "body is not a JSON object")
            return
        if body.get("model") not in fake.models:
            self._error(404, f"The model `{body.get('model')}` does not exist")
            return
        if path == "/v1/chat/completions":
            self._completion(fake, body, chat=True, record=fault is None)
        elif path == "/v1/completions" and fake.supports_completions:
            self._completion(fake, body, chat=False, record=fault is None)
        else:
            self._error(404, f"no route {path}")

    def _fault(self, fault: str) -> None:
        fake = self.fake
        if fault == "429":
            self._error(429, "Rate limit reached", fake._retry_after_header())
        elif fault == "503":
            self._error(503, "injected 503", fake._retry_after_header())
        elif fault in ("500", "502", "504"):
            self._error(int(fault), f"injected {fault}")
        elif fault == "401":
            self._error(401, "Incorrect API key provided")
        elif fault == "empty":  # valid JSON, but not a completion
            self._send(200, {"object": "chat.completion", "choices": []})
        elif fault == "drop":
            self.close_connection = True  # close the socket without a response
        elif fault in ("malformed", "truncated"):
            full = json.dumps({"choices": [{"index": 0, "text": "x" * 64}]}).encode()
            cut = full[: len(full) // 2]
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                # malformed: a complete but cut JSON body; truncated: the connection ends
                # before the announced Content-Length
                self.send_header("Content-Length", str(len(cut if fault == "malformed"
                                                           else full)))
                self.end_headers()
                self.wfile.write(cut)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

    def _completion(self, fake: FakeOpenAIServer, body: dict[str, Any], chat: bool,
                    record: bool) -> None:
        prompt = _prompt_of(body)
        n = int(body.get("n") or 1)
        k = min(n, fake.max_n) if fake.max_n else n
        max_tokens = int(body.get("max_tokens") if body.get("max_tokens") is not None else 16)
        temperature = float(body.get("temperature", 1.0))
        seed = int(body.get("seed") or 0)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        wants_logprobs = body.get("logprobs") is not None and not chat
        echo = bool(body.get("echo")) and not chat and fake.supports_echo
        if max_tokens == 0 and fake.reject_max_tokens_zero:
            self._error(400, "max_tokens must be at least 1, got 0.")
            return
        choices = []
        texts = []
        for i in range(k):
            text = "" if max_tokens == 0 else fake_answer(prompt, seed, i, temperature,
                                                          max_tokens)
            if fake.honour_stop:
                text = _cut(text, stop)
            texts.append(text)
            if chat:
                choices.append({"index": i, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text}})
                continue
            full = prompt + text if echo else text
            choice: dict[str, Any] = {"index": i, "text": full, "finish_reason": "stop",
                                      "logprobs": None}
            if wants_logprobs and fake.supports_logprobs:
                if echo:
                    lp = text_logprobs(full)
                    if fake.bos_token is not None:
                        lp = with_bos(lp, fake.bos_token)
                    if fake.token_space is not None:
                        lp["tokens"] = [t.replace(" ", fake.token_space) for t in lp["tokens"]]
                    choice["logprobs"] = lp
                else:  # like llama.cpp: only the generated tokens
                    lp = text_logprobs(prompt + text)
                    keep = [j for j, o in enumerate(lp["text_offset"]) if o >= len(prompt)]
                    choice["logprobs"] = {name: [vals[j] for j in keep]
                                          for name, vals in lp.items()}
            choices.append(choice)
        if fake.reverse_choices:
            choices.reverse()
        if record:
            fake._issue(prompt, texts)
        payload = {"id": f"fake-{_hash_int(json.dumps(body, sort_keys=True)) % 10**8}",
                   "object": "chat.completion" if chat else "text_completion",
                   "created": 0, "model": body.get("model"), "choices": choices,
                   "usage": {"prompt_tokens": len(tokenize(prompt)),
                             "completion_tokens": sum(len(tokenize(t)) for t in texts)}}
        self._send(200, payload)

"""HTTP for the OpenAI-compatible backend: one client per backend, retries, and the rule
for where the API key may go.

HTTP goes through one ``httpx.Client`` per backend, shared by the worker threads, so
connections are reused.

A long run against a remote server meets rate limits, overloaded replicas, dropped
connections and half-written bodies: each request is retried (through ``tenacity``) after
a pause that honours the server's ``Retry-After`` and otherwise grows exponentially with
jitter (:class:`wait_retry_after`). Errors that retrying cannot fix (a rejected key, an
unknown model, a bad request) fail fast instead of burning the retry budget.

The API key is a credential for one server. This module follows redirects itself
instead of letting the client do it, so that it alone decides where the key goes: it is
sent again only when a redirect stays on the same scheme, host and port (or upgrades
http to https on the same host), never to another server.
"""

from __future__ import annotations

import email.utils
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
from collections.abc import Callable, Mapping
from email.message import Message
from typing import Any, TypeVar

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)
from tenacity.wait import wait_base

from xlgap.errors import BackendError, ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses that say "try again later" rather than "your request is wrong".
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: A server asking for a longer pause than this (or than ``backoff_max`` if larger) is
#: obeyed only up to it, so one odd header cannot stall a run for hours.
RETRY_AFTER_CAP = 120.0
#: Seconds allowed for the ``GET /models`` lookup that enriches a 404 message.
MODELS_LOOKUP_TIMEOUT = 5.0
#: Redirects followed per request; a longer chain is a misconfiguration, not a hiccup.
MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}


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


class Transient(Exception):
    """A failure that may go away: retry after a pause (``retry_after`` if the server
    said how long)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HTTPFailure(Exception):
    """A non-retryable HTTP status, before it is turned into an HTTPStatusError."""

    def __init__(self, status: int, url: str, message: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {message}")
        self.status = status
        self.url = url
        self.message = message


class Aborted(Exception):
    """Another request of the same batch failed for good; stop without retrying."""



class wait_retry_after(wait_base):  # lower case: tenacity names its waits so
    """Tenacity wait: the pause the server asked for (``Retry-After``, capped at
    :data:`RETRY_AFTER_CAP` or ``cap`` if larger), never less than exponential backoff
    with jitter (:func:`backoff_delay`), which is all there is when it asked nothing."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = backoff_delay(retry_state.attempt_number - 1, self.base, self.cap,
                              self.rng.random())
        outcome = retry_state.outcome
        err = outcome.exception() if outcome is not None and outcome.failed else None
        asked = getattr(err, "retry_after", None)
        if asked is not None:
            delay = max(delay, min(asked, max(self.cap, RETRY_AFTER_CAP)))
        return delay


# -- the client --------------------------------------------------------------------------

class APIClient:
    """POSTs JSON to one OpenAI-compatible server, with retries and the key rule above.

    ``model`` only enriches error messages (a 404 lists the models the server has).
    """

    def __init__(self, base_url: str, *, model: str, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, max_retries: int = 8, timeout: float = 60.0,
                 backoff_base: float = 0.5, backoff_max: float = 30.0) -> None:
        if int(max_retries) < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if not float(timeout) > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if not (float(backoff_base) >= 0 and float(backoff_max) >= 0):
            raise ConfigError(f"backoff_base and backoff_max must be >= 0, got "
                              f"{backoff_base} and {backoff_max}")
        self.base_url = normalise_base_url(base_url)
        self.model = model
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env, "").strip() if api_key_env else ""
        self._api_key = key or None
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.wait = wait_retry_after(float(backoff_base), float(backoff_max))
        # Created on first use (and again after close()), shared by the worker threads.
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        #: set after the first successful request (the backend then goes concurrent)
        self.server_ok = False

    # -- one request with retries ------------------------------------------------------
    def request(self, path: str, body: Mapping[str, Any], label: str,
                abort: threading.Event, parse: Callable[[Any], T]) -> T:
        """POST ``body`` to ``path`` until it succeeds, retrying transient failures.

        Raises :class:`HTTPStatusError` for a non-retryable status (at once) and
        :class:`BackendError` after ``max_retries`` retries, naming the request and the
        last error; raises :class:`Aborted` if a sibling request failed meanwhile.
        """
        url = self.base_url + path
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")

        def attempt() -> T:
            if abort.is_set():
                raise Aborted()
            try:
                result = parse(self.post(url, data))
            except ValueError as err:  # JSON, but not the expected shape: retry it too
                raise Transient(f"malformed response from {url}: {err}") from None
            self.server_ok = True
            return result

        def pause(seconds: float) -> None:
            if abort.wait(seconds):  # a sibling failed for good: stop waiting
                raise Aborted()

        def log(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            logger.info("%s: %s; retry %d/%d in %.3fs", label, err, state.attempt_number,
                        self.max_retries, delay)

        retrying = Retrying(stop=stop_after_attempt(self.max_retries + 1), wait=self.wait,
                            retry=retry_if_exception_type(Transient), sleep=pause,
                            before_sleep=log, reraise=True)
        try:
            return retrying(attempt)
        except Transient as err:
            raise BackendError(f"request for {label} to {url} failed after "
                               f"{self.max_retries + 1} attempts; last error: {err}. Results "
                               "obtained so far are stored: a rerun fetches only the missing "
                               "ones.") from None
        except HTTPFailure as err:
            raise self.fatal(err, label) from None

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
                    # send() follows redirects itself, to decide where the key may go
                    follow_redirects=False)
            return self._client

    def close(self) -> None:
        """Close the connection pool (a later request opens a new one)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def send(self, method: str, url: str, data: bytes | None,
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
                raise HTTPFailure(response.status_code, str(request.url),
                                   f"{where}, which would turn the {request.method} into a "
                                   f"{following.method}; give the final server's API root as "
                                   "--base-url")
            if not same_server(origin, following.url):
                following.headers.pop("Authorization", None)
            logger.debug("%s", where)
            request = following
        raise HTTPFailure(response.status_code, url, f"more than {MAX_REDIRECTS} redirects "
                           f"(last to {request.url})")

    def post(self, url: str, data: bytes) -> Any:
        """One POST; returns the decoded JSON, or raises Transient / HTTPFailure."""
        try:
            response = self.send("POST", url, data)
        except httpx.UnsupportedProtocol as err:  # e.g. a redirect to ftp://
            raise HTTPFailure(0, url, f"cannot follow: {err}") from None
        except httpx.ConnectError as err:
            # no such host, or a certificate that does not verify: retrying cannot help
            fatal = caused_by(err, (socket.gaierror, ssl.SSLCertVerificationError))
            if fatal is not None:
                raise HTTPFailure(0, url, f"cannot connect: {fatal}") from None
            raise Transient(f"connection to {url} failed: {err!r}") from None
        except httpx.RequestError as err:
            # timeouts, resets, bodies shorter than their Content-Length, ...
            raise Transient(f"connection to {url} failed: {err!r}") from None
        status = response.status_code
        final_url = str(response.url)
        if not 200 <= status < 300:
            detail = server_message(response.content)
            if status in RETRYABLE_STATUSES:
                raise Transient(f"HTTP {status} from {final_url}: {detail}",
                                 parse_retry_after(response.headers))
            raise HTTPFailure(status, final_url, detail)
        raw = response.content
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise Transient(f"malformed JSON from {final_url} ({len(raw)} bytes): "
                             f"{err}") from None

    def fatal(self, err: HTTPFailure, label: str) -> HTTPStatusError:
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
            response = self.send("GET", self.base_url + "/models", None,
                                  timeout=min(self.timeout, MODELS_LOOKUP_TIMEOUT))
            payload = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, HTTPFailure, ValueError):
            return None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            return None
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

"""The OpenAI-compatible backend against a real loopback HTTP server that injects faults.

Expected answers come from the fake server's deterministic answer function, so every
test checks real outputs, and request counts are taken on the server side.
"""

from __future__ import annotations

import email.utils
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fake_openai_server import (
    FakeOpenAIServer,
    fake_answer,
    text_logprobs,
    token_logprob,
    tokenize,
    with_bos,
)
from xlgap.errors import BackendError, ConfigError
from xlgap.models.openai import (
    CANNOT_SCORE,
    MAX_REDIRECTS,
    PROBE_TEXT,
    EchoLayout,
    OpenAIBackend,
    ScoringUnsupported,
    backoff_delay,
    derive_seed,
    echo_layout,
    joint_scores,
    normalise_base_url,
    parse_choices,
    parse_retry_after,
    same_server,
)
from xlgap.models.tokens import cut_at_stop
from xlgap.store import Store

MODEL = "fake-model"
PROMPTS = [f"Question {i}: what is the capital of country number {i}?" for i in range(30)]
FAST = {"backoff_base": 0.001, "backoff_max": 0.01}


def expected(prompts: list[str], n: int, seed: int, temperature: float = 0.8,
             max_tokens: int = 16, stop: tuple[str, ...] = ("\n",)) -> list[list[str]]:
    """What a fault-free server answers when every prompt gets its n choices at once."""
    return [[cut_at_stop(fake_answer(p, seed, i, temperature, max_tokens), stop)
             for i in range(n)] for p in prompts]


def backend(server: FakeOpenAIServer, store: Store | None = None, **kw: object) -> OpenAIBackend:
    options: dict[str, object] = {"concurrency": 8, "max_retries": 8, "timeout": 5.0, **FAST}
    options.update(kw)
    return OpenAIBackend(MODEL, server.base_url, store=store, **options)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # a developer's real key must never be sent to the fake server
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


# -- happy path --------------------------------------------------------------------------

def test_happy_path_every_sample_once_in_order(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        out = backend(server, Store(tmp_path)).generate(PROMPTS, n=5, temperature=0.8, seed=7)
        assert out == expected(PROMPTS, 5, 7)
        assert server.count() == 30 == server.count("/v1/chat/completions")
        for p, samples in zip(PROMPTS, out, strict=True):
            assert server.issued[p] == samples  # each sample served once, kept once
            assert len(set(samples)) == 5
        body = server.records[0].body
        assert body["messages"] == [{"role": "user", "content": body["messages"][0]["content"]}]
        assert (body["n"], body["seed"], body["max_tokens"], body["stop"]) == (5, 7, 16, ["\n"])
        assert body["temperature"] == 0.8 and body["model"] == MODEL


def test_same_seed_same_samples_whatever_the_batch() -> None:
    with FakeOpenAIServer() as server:
        alone = backend(server).generate([PROMPTS[3]], n=3, seed=1)
        in_batch = backend(server).generate(PROMPTS[:6], n=3, seed=1)
        assert in_batch[3] == alone[0]
        assert backend(server).generate(PROMPTS[:2], n=3, seed=2) != in_batch[:2]


def test_requests_are_concurrent_but_bounded() -> None:
    with FakeOpenAIServer(latency=0.05) as server:
        out = backend(server, concurrency=4).generate(PROMPTS[:16], n=2, seed=0)
        assert out == expected(PROMPTS[:16], 2, 0, temperature=1.0)
        assert 2 <= server.max_in_flight <= 4


# -- faults ------------------------------------------------------------------------------

def test_injected_faults_change_nothing(tmp_path: Path) -> None:
    kinds = ("429", "500", "503", "drop", "malformed", "truncated", "empty")
    with FakeOpenAIServer(fault_rate=0.3, fault_kinds=kinds, fault_seed=1) as server:
        store = Store(tmp_path)
        b = backend(server, store)
        out = b.generate(PROMPTS, n=5, temperature=0.8, seed=7)
        assert out == expected(PROMPTS, 5, 7)
        n_faults = sum(server.faults.values())
        assert n_faults >= 10 and len(server.faults) >= 6, server.faults
        # each fault costs exactly one extra request, nothing is requested twice otherwise
        assert server.count() == 30 + n_faults
        assert store.count(b.fingerprint) == 30


@pytest.mark.parametrize("chat", [True, False])
def test_each_fault_kind_is_survived(chat: bool) -> None:
    kinds = ["429", "500", "502", "503", "504", "drop", "malformed", "truncated", "empty"]
    with FakeOpenAIServer(schedule=kinds) as server:
        out = backend(server, chat=chat, max_retries=len(kinds)).generate(PROMPTS[:3], n=2)
        assert out == expected(PROMPTS[:3], 2, 0, temperature=1.0)
        assert server.count() == 3 + len(kinds)
        assert server.faults == dict.fromkeys(kinds, 1)


def test_slow_responses_time_out_and_are_retried() -> None:
    with FakeOpenAIServer(schedule=["slow", "slow"], slow_seconds=2.0) as server:
        t0 = time.perf_counter()
        out = backend(server, timeout=0.2).generate(PROMPTS[:1], n=2, seed=0)
        elapsed = time.perf_counter() - t0
        assert out == expected(PROMPTS[:1], 2, 0, temperature=1.0)
        assert server.count() == 3
        assert elapsed >= 0.4  # two client timeouts of 0.2 s


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_on_503_is_waited_for(form: str) -> None:
    def header() -> str:  # an HTTP date has whole seconds: this one is 1 to 2 s away
        return email.utils.formatdate(time.time() + 2, usegmt=True)

    value = 1.0 if form == "seconds" else header
    with FakeOpenAIServer(schedule=["503"], retry_after=value) as server:
        t0 = time.perf_counter()
        out = backend(server).generate(PROMPTS[:1], n=1, seed=0)  # backoff alone: ~0.001 s
        waited = time.perf_counter() - t0
        assert out == expected(PROMPTS[:1], 1, 0, temperature=1.0)
        assert server.count() == 2 and server.faults["503"] == 1
        assert waited >= (1.0 if form == "seconds" else 0.9)


def test_giving_up_names_the_url_and_the_status() -> None:
    with FakeOpenAIServer(fail_prompts=["poison"], permanent_fault="503") as server:
        b = backend(server, max_retries=2)
        with pytest.raises(BackendError) as info:
            b.generate(["poison"])
        message = str(info.value)
        assert f"{server.base_url}/chat/completions" in message
        assert "HTTP 503" in message and "failed after 3 attempts" in message
        assert server.count() == 3


def test_retry_after_is_honoured() -> None:
    with FakeOpenAIServer(schedule=["429"], retry_after=0.2) as server:
        t0 = time.perf_counter()
        out = backend(server).generate(PROMPTS[:1], n=1, seed=0)
        assert time.perf_counter() - t0 >= 0.2
        assert server.count() == 2 and server.faults["429"] == 1
        assert out == expected(PROMPTS[:1], 1, 0, temperature=1.0)


def test_a_sibling_failure_cuts_a_retry_after_wait_short() -> None:
    """Retries run through tenacity; its sleep is the batch's abort flag, so a request
    waiting out a long Retry-After stops as soon as another request fails for good."""
    with FakeOpenAIServer(fail_prompts=["poison"], permanent_fault="401") as server:
        b = backend(server)
        b.generate(PROMPTS[:1], n=1)  # the server answers: requests now go concurrently
        server.fault_rate, server.fault_kinds, server.retry_after = 1.0, ("429",), 30.0
        t0 = time.perf_counter()
        with pytest.raises(BackendError, match="401"):
            b.generate([*PROMPTS[1:4], "poison"], n=1)
        assert time.perf_counter() - t0 < 10.0  # not the 30 s the server asked for


def test_backoff_grows_exponentially() -> None:
    with FakeOpenAIServer(schedule=["500", "503", "502"]) as server:
        t0 = time.perf_counter()
        backend(server, backoff_base=0.04, backoff_max=10.0).generate(PROMPTS[:1], n=1)
        # jitter keeps at least half of 0.04 * (1 + 2 + 4)
        assert time.perf_counter() - t0 >= 0.14
        assert server.count() == 4


def test_backoff_delay_and_retry_after_parsing() -> None:
    assert backoff_delay(0, 0.5, 30.0, 1.0) == 0.5
    assert backoff_delay(3, 0.5, 30.0, 1.0) == 4.0
    assert backoff_delay(3, 0.5, 30.0, 0.0) == 2.0
    assert backoff_delay(10, 0.5, 30.0, 1.0) == 30.0  # capped
    assert backoff_delay(10_000, 0.5, 30.0, 1.0) == 30.0  # no overflow
    assert parse_retry_after({"Retry-After": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after({"Retry-After": future}) or 0) <= 31


def test_bad_key_fails_fast_with_one_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLGAP_TEST_KEY", "wrong")
    with FakeOpenAIServer(api_key="right") as server:
        b = backend(server, api_key_env="XLGAP_TEST_KEY", backoff_base=0.5, backoff_max=30)
        t0 = time.perf_counter()
        with pytest.raises(BackendError, match=r"\$XLGAP_TEST_KEY was rejected") as info:
            b.generate(PROMPTS, n=2)
        assert time.perf_counter() - t0 < 0.5
        assert server.base_url in str(info.value)
        assert server.count() == 1


def test_missing_key_is_reported_and_good_key_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XLGAP_TEST_KEY", raising=False)
    with FakeOpenAIServer(api_key="right") as server:
        with pytest.raises(BackendError, match=r"\$XLGAP_TEST_KEY is not set"):
            backend(server, api_key_env="XLGAP_TEST_KEY").generate(PROMPTS[:3])
        assert server.count() == 1
        monkeypatch.setenv("XLGAP_TEST_KEY", "right")
        out = backend(server, api_key_env="XLGAP_TEST_KEY").generate(PROMPTS[:3], seed=4)
        assert out == expected(PROMPTS[:3], 1, 4, temperature=1.0)


def test_unknown_model_lists_the_served_models() -> None:
    with FakeOpenAIServer(models=["fake-model", "other-model"]) as server:
        b = OpenAIBackend("no-such-model", server.base_url, **FAST)
        with pytest.raises(BackendError, match="no-such-model") as info:
            b.generate(PROMPTS[:5])
        assert "fake-model, other-model" in str(info.value)
        assert server.count("/v1/chat/completions") == 1 and server.count("/v1/models") == 1


def test_unreachable_server_fails_after_retries() -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = OpenAIBackend(MODEL, f"http://127.0.0.1:{port}/v1", max_retries=2, **FAST)
    with pytest.raises(BackendError, match="failed after 3 attempts") as info:
        b.generate(["hello"])
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in str(info.value)


def test_permanent_failure_keeps_what_succeeded(tmp_path: Path) -> None:
    prompts = PROMPTS[:12]
    prompts[5] = "poison " + "x" * 100
    with FakeOpenAIServer(fail_prompts=["poison"]) as server:
        store = Store(tmp_path)
        b = backend(server, store, concurrency=1, max_retries=3)
        with pytest.raises(BackendError) as info:
            b.generate(prompts, n=2, seed=1)
        message = str(info.value)
        assert "prompt 5" in message and repr(prompts[5][:60] + "...") in message
        assert "HTTP 500" in message and "4 attempts" in message
        assert server.count_prompt("poison") == 4  # 1 try + max_retries
        assert server.count() == 5 + 4  # prompts 0-4, then poison; 6-11 never started
        assert store.count(b.fingerprint) == 5

        server.fail_prompts = ()
        server.reset_counts()
        rerun = backend(server, Store(tmp_path), concurrency=1)
        assert rerun.generate(prompts, n=2, seed=1) == expected(prompts, 2, 1, 1.0)
        assert server.count() == 12 - 5  # only the missing ones


def test_permanent_failure_concurrent_resume(tmp_path: Path) -> None:
    prompts = list(PROMPTS)
    prompts[17] = "poison pill"
    with FakeOpenAIServer(fail_prompts=["poison"], latency=0.01) as server:
        store = Store(tmp_path)
        b = backend(server, store, concurrency=4, max_retries=2)
        with pytest.raises(BackendError, match="prompt 17"):
            b.generate(prompts, n=3, seed=2)
        done = store.count(b.fingerprint)
        assert 1 <= done < 30
        server.fail_prompts = ()
        server.reset_counts()
        out = backend(server, store, concurrency=4).generate(prompts, n=3, seed=2)
        assert out == expected(prompts, 3, 2, 1.0)
        assert server.count() == 30 - done


# -- redirects and the API key -----------------------------------------------------------

KEY = "sk-test-secret"


@pytest.fixture()
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("XLGAP_TEST_KEY", KEY)
    return "XLGAP_TEST_KEY"


def sent_key(server: FakeOpenAIServer) -> list[bool]:
    """For each request the server received: whether it carried the API key."""
    return [KEY in (value or "") for value in server.headers_seen("Authorization")]


def test_a_redirect_to_another_port_never_carries_the_key(api_key: str) -> None:
    # 127.0.0.1:A -> 127.0.0.1:B: same host, another port, so another origin
    with FakeOpenAIServer() as other, \
            FakeOpenAIServer(redirect_prefix="/v1", redirect_to="") as first:
        first.redirect_to = other.base_url
        b = backend(first, api_key_env=api_key)
        out = b.generate(PROMPTS[:3], n=2, seed=1)
        assert out == expected(PROMPTS[:3], 2, 1, 1.0)  # the 307 was followed, with the body
        assert first.count() == 3 and sent_key(first) == [True] * 3
        assert other.count() == 3 and sent_key(other) == [False] * 3
        assert [r.method for r in other.records] == ["POST"] * 3


def test_a_redirect_to_another_host_name_never_carries_the_key(api_key: str) -> None:
    # one server, reached as 127.0.0.1 and redirected to "localhost": another host
    with FakeOpenAIServer(redirect_prefix="/api/v1", redirect_to="") as server:
        server.redirect_to = f"http://localhost:{server.port}/v1"
        b = OpenAIBackend(MODEL, f"http://127.0.0.1:{server.port}/api/v1",
                          api_key_env=api_key, **FAST)
        assert b.generate(PROMPTS[:1], seed=2) == expected(PROMPTS[:1], 1, 2, 1.0)
        assert [r.path for r in server.records] == ["/api/v1/chat/completions",
                                                    "/v1/chat/completions"]
        assert sent_key(server) == [True, False]


def test_the_models_lookup_does_not_leak_the_key_through_a_redirect(api_key: str) -> None:
    with FakeOpenAIServer(models=["m1", "m2"]) as other, \
            FakeOpenAIServer(redirect_prefix="/v1", redirect_to="") as first:
        first.redirect_to = other.base_url
        assert backend(first, api_key_env=api_key).list_models() == ["m1", "m2"]
        assert sent_key(first) == [True] and sent_key(other) == [False]


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_that_would_turn_the_post_into_a_get_is_refused(api_key: str,
                                                                   status: int) -> None:
    with FakeOpenAIServer() as other, \
            FakeOpenAIServer(redirect_prefix="/v1", redirect_to="",
                             redirect_status=status) as first:
        first.redirect_to = other.base_url
        with pytest.raises(BackendError, match="would turn the POST into a GET") as info:
            backend(first, api_key_env=api_key).generate(PROMPTS[:2])
        assert f"{other.base_url}/chat/completions" in str(info.value)
        assert first.count() == 1  # not retried
        assert other.count() == 0


def test_a_same_server_redirect_keeps_the_key(api_key: str) -> None:
    with FakeOpenAIServer(api_key=KEY, redirect_prefix="/old/v1", redirect_to="/v1",
                          redirect_status=308) as server:
        b = OpenAIBackend(MODEL, f"http://127.0.0.1:{server.port}/old/v1",
                          api_key_env=api_key, **FAST)
        assert b.generate(PROMPTS[:2], seed=3) == expected(PROMPTS[:2], 1, 3, 1.0)
        assert sent_key(server) == [True] * 4  # two redirects, two answers, all with the key


def test_a_redirected_server_asking_for_the_key_is_explained(api_key: str) -> None:
    with FakeOpenAIServer(api_key=KEY) as other, \
            FakeOpenAIServer(redirect_prefix="/v1", redirect_to="") as first:
        first.redirect_to = other.base_url
        with pytest.raises(BackendError, match="never sent to another server") as info:
            backend(first, api_key_env=api_key).generate(PROMPTS[:1])
        assert other.base_url in str(info.value) and first.base_url in str(info.value)
        assert other.count() == 1 and sent_key(other) == [False]


def test_redirect_loops_are_bounded() -> None:
    with FakeOpenAIServer(redirect_prefix="/v1", redirect_to="/v1") as server:
        with pytest.raises(BackendError, match=f"more than {MAX_REDIRECTS} redirects"):
            backend(server).generate(PROMPTS[:1])
        assert server.count() == MAX_REDIRECTS + 1


def test_same_server() -> None:
    def same(a: str, b: str) -> bool:
        return same_server(httpx.URL(a), httpx.URL(b))

    assert same("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/other")
    assert same("https://API.example.com/v1", "https://api.example.com:443/v2")
    assert same("http://api.example.com/v1", "https://api.example.com/v1")  # upgrade
    assert not same("https://api.example.com/v1", "http://api.example.com/v1")  # downgrade
    assert not same("http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1")
    assert not same("http://127.0.0.1:8000/v1", "http://localhost:8000/v1")
    assert not same("https://api.example.com/v1", "https://api.example.com.evil.io/v1")


def test_connections_are_reused_and_close_releases_them() -> None:
    with FakeOpenAIServer(keep_alive=True) as server:
        b = backend(server, concurrency=1)
        assert b.generate(PROMPTS[:8], seed=4) == expected(PROMPTS[:8], 1, 4, 1.0)
        assert server.count() == 8 and server.connections == 1
        b.close()
        b.close()  # idempotent
        assert b.generate(PROMPTS[8:10], seed=4) == expected(PROMPTS[8:10], 1, 4, 1.0)
        assert server.connections == 2  # a new pool after close()
        b.close()


# -- cache -------------------------------------------------------------------------------

def test_rerun_makes_zero_requests(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        first = backend(server, Store(tmp_path)).generate(PROMPTS, n=4, seed=3)
        assert server.count() == 30
        server.reset_counts()
        # a new backend and a reopened store, as in a new process
        again = backend(server, Store(tmp_path)).generate(PROMPTS, n=4, seed=3)
        assert again == first and server.count() == 0
        # other arguments are other requests
        backend(server, Store(tmp_path)).generate(PROMPTS[:5], n=4, seed=4)
        assert server.count() == 5


def test_without_store_the_backend_still_resumes() -> None:
    with FakeOpenAIServer() as server:
        b = backend(server)
        b.generate(PROMPTS[:4], n=2)
        b.generate(PROMPTS[:4], n=2)
        assert server.count() == 4


def test_duplicate_prompts_share_one_request() -> None:
    with FakeOpenAIServer() as server:
        out = backend(server).generate([PROMPTS[0], PROMPTS[1], PROMPTS[0]], n=2, seed=5)
        assert out[0] == out[2] == expected(PROMPTS[:1], 2, 5, 1.0)[0]
        assert server.count() == 2


# -- choices -----------------------------------------------------------------------------

def test_fewer_choices_than_n_are_topped_up(tmp_path: Path) -> None:
    prompts = PROMPTS[:6]
    with FakeOpenAIServer(max_n=2) as server:
        out = backend(server, Store(tmp_path)).generate(prompts, n=5, seed=9)
        for p, samples in zip(prompts, out, strict=True):
            assert len(samples) == 5 and len(set(samples)) == 5
            assert server.issued[p] == samples
            assert samples[:2] == expected([p], 2, 9, 1.0)[0]
        assert server.count() == 6 * 3  # 2 + 2 + 1 choices
        rounds = [(r.body["n"], r.body["seed"]) for r in server.records
                  if r.body["messages"][0]["content"] == prompts[0]]
        assert rounds == [(5, 9), (3, derive_seed(9, 1)), (1, derive_seed(9, 2))]
        server.reset_counts()
        assert backend(server, Store(tmp_path)).generate(prompts, n=5, seed=9) == out
        assert server.count() == 0


def test_choices_are_ordered_by_index() -> None:
    with FakeOpenAIServer(reverse_choices=True) as server:
        assert backend(server).generate(PROMPTS[:3], n=4, seed=2) == expected(PROMPTS[:3], 4,
                                                                              2, 1.0)


def test_stop_is_applied_even_if_the_server_ignores_it() -> None:
    with FakeOpenAIServer(honour_stop=False) as server:
        b = backend(server)
        cut = b.generate(PROMPTS[:3], n=2, seed=0)
        assert cut == expected(PROMPTS[:3], 2, 0, 1.0)
        assert all("\n" not in s and "TAIL" not in s for row in cut for s in row)
        full = b.generate(PROMPTS[:3], n=2, seed=0, stop=())
        assert all(s.endswith("\nTAIL") for row in full for s in row)


def test_completion_mode_for_base_models() -> None:
    with FakeOpenAIServer() as server:
        b = backend(server, chat=False)
        out = b.generate(PROMPTS[:5], n=3, temperature=0.0, max_new_tokens=2, seed=0)
        assert out == expected(PROMPTS[:5], 3, 0, temperature=0.0, max_tokens=2)
        assert all(len(set(row)) == 1 for row in out)  # greedy: identical choices
        assert server.count("/v1/completions") == 5 and server.count() == 5
        assert server.records[0].body["prompt"] == PROMPTS[0]


# -- scoring -----------------------------------------------------------------------------

def reference_logprob(prompt: str, continuation: str) -> float:
    """Chain rule on the fake bigram model, token by token (no offsets involved)."""
    previous = tokenize(prompt)[-1][1]
    total = 0.0
    for _, tok in tokenize(continuation):
        total += token_logprob(previous, tok)
        previous = tok
    return total


def joint_logprob(text: str) -> float:
    return sum(lp for lp in text_logprobs(text)["token_logprobs"] if lp is not None)


SCORE_REQUESTS = [("The capital of France is", [" Paris", " Lyon", " Paris and Lyon"]),
                  ("Die Hauptstadt von Frankreich ist", [" Paris", " Berlin"])]


def test_score_via_echo_logprobs(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        b = backend(server, Store(tmp_path))
        got = b.score_batch(SCORE_REQUESTS)
        for (prompt, conts), row in zip(SCORE_REQUESTS, got, strict=True):
            for c, value in zip(conts, row, strict=True):
                assert value == pytest.approx(reference_logprob(prompt, c), abs=1e-9)
                # log P(c | p) = log P(p + c) - log P(p)
                assert value == pytest.approx(joint_logprob(prompt + c) - joint_logprob(prompt),
                                              abs=1e-9)
        assert got[0][2] < got[0][0]  # more tokens, each with log-probability < 0
        assert server.count("/v1/completions") == 5
        body = server.records[0].body
        assert body["echo"] is True and body["max_tokens"] == 0 and body["logprobs"] in (0, 1)
        server.reset_counts()
        assert backend(server, Store(tmp_path)).score_batch(SCORE_REQUESTS) == got
        assert server.count() == 0
        assert b.score("anything", [""]) == [0.0]


def test_score_falls_back_when_max_tokens_zero_is_refused() -> None:
    with FakeOpenAIServer(reject_max_tokens_zero=True) as server:
        b = backend(server)
        got = b.score_batch(SCORE_REQUESTS)
        assert got[1][1] == pytest.approx(reference_logprob(*SCORE_REQUESTS[1][:1],
                                                            " Berlin"), abs=1e-9)
        assert got[0][0] == pytest.approx(reference_logprob("The capital of France is",
                                                            " Paris"), abs=1e-9)
        assert [r.body["max_tokens"] for r in server.records[:2]] == [0, 1]
        assert server.count() == 6  # one refusal, then 5 scores


@pytest.mark.parametrize("server_options", [
    {"supports_logprobs": False},   # logprobs: null
    {"supports_echo": False},       # only generated tokens (like llama.cpp)
    {"supports_completions": False},  # chat-only server: 404 on /completions
])
def test_score_on_a_server_that_cannot(server_options: dict[str, bool]) -> None:
    with FakeOpenAIServer(**server_options) as server:
        with pytest.raises(BackendError, match=CANNOT_SCORE):
            backend(server).score("The capital of France is", [" Paris"])
        assert server.count("/v1/completions") == 1  # no retries


STRADDLE_PROMPT = "The capital of France is P"  # ends inside the word the answers finish
STRADDLE = (STRADDLE_PROMPT, ["aris", "aris and Lyon", " Lyon"])


def test_a_token_straddling_the_prompt_end_is_scored_jointly(tmp_path: Path) -> None:
    prompt, conts = STRADDLE
    start = prompt.rindex(" P")  # " Paris" and " P" both start here
    with FakeOpenAIServer() as server:
        got = backend(server, Store(tmp_path)).score(prompt, conts)
        # "aris" is the token " Paris" (never split), predicted after " is"
        assert got[0] == pytest.approx(token_logprob(" is", " Paris"), abs=1e-12)
        # every candidate is scored from the same point, over text it fully covers
        for c, value in zip(conts, got, strict=True):
            want = joint_logprob(prompt + c) - joint_logprob(prompt[:start])
            assert value == pytest.approx(want, abs=1e-9)
        assert got[2] == pytest.approx(token_logprob(" is", " P")
                                       + token_logprob(" P", " Lyon"), abs=1e-12)
        assert server.count() == 3
        # concurrent after the first: any order
        assert sorted(r.body["prompt"] for r in server.records) == sorted(prompt + c
                                                                          for c in conts)


def test_normalised_scores_per_token_and_per_byte(tmp_path: Path) -> None:
    requests = [*SCORE_REQUESTS, STRADDLE,
                ("Die größte Stadt der Schweiz ist", [" Zürich", " Genf"])]
    with FakeOpenAIServer() as server:
        b = backend(server, Store(tmp_path))
        total = b.score_batch(requests)
        asked = server.count()
        per_token = b.score_batch(requests, normalize="tokens")
        per_byte = b.score_batch(requests, normalize="bytes")
        assert server.count() == asked  # normalising reuses the same stored requests
        # the covered text: the continuation, or from the straddling token's start
        covered = {(p, c): c for p, cs in requests for c in cs}
        start = STRADDLE_PROMPT.rindex(" P")
        covered.update({(STRADDLE_PROMPT, c): (STRADDLE_PROMPT + c)[start:]
                        for c in STRADDLE[1]})
        for (p, cs), t_row, k_row, b_row in zip(requests, total, per_token, per_byte,
                                                strict=True):
            for c, t, k, by in zip(cs, t_row, k_row, b_row, strict=True):
                text = covered[(p, c)]
                assert k == pytest.approx(t / len(tokenize(text)), abs=1e-12)
                assert by == pytest.approx(t / len(text.encode("utf-8")), abs=1e-12)
        assert per_byte[3][0] == pytest.approx(total[3][0] / len(" Zürich".encode()))
        assert len(" Zürich".encode()) == 8
        assert per_token[2][0] == total[2][0]  # "aris": one token, " Paris"
        with pytest.raises(ValueError, match="unknown score normalisation"):
            b.score_batch(requests, normalize="chars")
        assert b.score("anything", ["", ""], normalize="bytes") == [0.0, 0.0]


def test_an_empty_candidate_is_scored_on_the_prompt_alone() -> None:
    prompt = STRADDLE_PROMPT
    start = prompt.rindex(" P")
    with FakeOpenAIServer() as server:
        got = backend(server).score(prompt, ["aris", ""])
        # both from the start of " P": the empty candidate keeps the prompt's " P"
        assert got[1] == pytest.approx(token_logprob(" is", " P"), abs=1e-12)
        assert got[0] == pytest.approx(joint_logprob(prompt + "aris")
                                       - joint_logprob(prompt[:start]), abs=1e-9)
        assert sorted(r.body["prompt"] for r in server.records) == [prompt, prompt + "aris"]


def test_a_bos_token_counted_in_the_offsets_is_shifted_out() -> None:
    with FakeOpenAIServer(bos_token="<|begin_of_text|>") as server:
        b = backend(server)
        got = b.score_batch([*SCORE_REQUESTS, STRADDLE])
        for (prompt, conts), row in zip(SCORE_REQUESTS, got[:2], strict=True):
            for c, value in zip(conts, row, strict=True):
                assert value == pytest.approx(reference_logprob(prompt, c), abs=1e-9)
        assert got[2][0] == pytest.approx(token_logprob(" is", " Paris"), abs=1e-12)
        # with a BOS token even the first word has a log-probability
        assert b.score("", ["Paris"]) == [pytest.approx(token_logprob("<|begin_of_text|>",
                                                                      "Paris"))]
    with FakeOpenAIServer() as server, \
            pytest.raises(BackendError, match="begins the text and has no log-probability"):
        backend(server).score("", ["Paris"])


def test_tokens_that_do_not_match_the_text_are_refused() -> None:
    # raw byte-level pieces ("Ġis"): offsets computed from them cannot be trusted
    with FakeOpenAIServer(token_space="\u0120") as server:
        b = backend(server)
        with pytest.raises(ScoringUnsupported, match="do not line up") as info:
            b.score("The capital of France is", [" Paris"])
        assert CANNOT_SCORE in str(info.value)
        assert b.can_score is False and server.count() == 1


def test_can_score_probes_once_and_remembers(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        b = backend(server, Store(tmp_path))
        assert b.can_score is True and b.can_score is True
        assert server.count("/v1/completions") == 1 == server.count()
        assert server.records[0].body["prompt"] == PROBE_TEXT
        assert server.records[0].body["echo"] is True
        assert backend(server, Store(tmp_path)).can_score is True  # the probe is stored
        assert server.count() == 1
        scored = backend(server)  # no store: a successful score answers the question
        scored.score("The capital of France is", [" Paris"])
        assert scored.can_score is True and server.count() == 2


@pytest.mark.parametrize("server_options", [
    {"supports_logprobs": False},
    {"supports_echo": False},
    {"supports_completions": False},
])
def test_can_score_is_false_where_scoring_is_not_supported(
        server_options: dict[str, bool]) -> None:
    with FakeOpenAIServer(**server_options) as server:
        b = backend(server)
        assert b.can_score is False and b.can_score is False
        assert server.count("/v1/completions") == 1


def test_can_score_raises_what_a_request_would(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLGAP_TEST_KEY", "wrong")
    with FakeOpenAIServer(api_key="right") as server:
        b = backend(server, api_key_env="XLGAP_TEST_KEY")
        with pytest.raises(BackendError, match="was rejected"):
            _ = b.can_score


def test_joint_scores_start_where_all_tokenizations_agree() -> None:
    # prompt "abcdefghi" (9 characters). A: [0,5) [5,8) [8,12): its token [8,12) straddles
    # the prompt's end. B: [0,5) [5,7) [7,9) [9,13): no boundary at 8, so both are scored
    # from 5, the last boundary their token sequences share, over text[5:].
    prompt = "abcdefghi"
    a = EchoLayout((0, 5, 8), (None, -1.0, -2.0), 12)
    b = EchoLayout((0, 5, 7, 9), (None, -0.5, -0.25, -4.0), 13)
    assert joint_scores(prompt, ["xyz", "wxyz"], [a, b]) == [-3.0, -4.75]
    assert joint_scores(prompt, ["xyz", "wxyz"], [a, b], "tokens") == [-1.5, -4.75 / 3]
    assert joint_scores(prompt, ["xyz", "wxyz"], [a, b], "bytes") == [-3.0 / 7, -4.75 / 8]
    # tokenizations that agree: the plain case, scored from the prompt's end
    c = EchoLayout((0, 5, 9), (None, -1.0, -2.0), 12)
    d = EchoLayout((0, 5, 9), (None, -1.0, -3.0), 13)
    assert joint_scores(prompt, ["xyz", "wxyz"], [c, d]) == [-2.0, -3.0]
    with pytest.raises(ValueError, match="unknown score normalisation"):
        joint_scores(prompt, ["xyz"], [c], "chars")


def test_echo_layout_reads_offsets_tokens_and_bos() -> None:
    # offsets only; the last entry is the generated token of a max_tokens=1 request
    plain = {"token_logprobs": [None, -1.0, -2.0], "text_offset": [0, 1, 3]}
    assert echo_layout("a b", "a b c", plain) == EchoLayout((0, 1), (None, -1.0), 3)
    # a BOS token whose characters the server counted in the offsets
    bos = {"tokens": ["<s>", "Hi", " there"], "token_logprobs": [None, -1.0, -2.0],
           "text_offset": [0, 3, 5]}
    assert echo_layout("Hi there", "Hi there", bos) == EchoLayout((0, 2), (-1.0, -2.0), 8)
    assert with_bos(text_logprobs("Hi there"), "<s>")["text_offset"] == [0, 3, 5]
    # byte pieces decoded as empty strings cover nothing; the next token holds the character
    pieces = {"tokens": ["x", "", "é"], "token_logprobs": [None, -1.0, -2.0],
              "text_offset": [0, 1, 1]}
    assert echo_layout("xé", "xé", pieces) == EchoLayout((0, 1, 1), (None, -1.0, -2.0), 2)
    bad: list[tuple[str, dict[str, list[Any]], str]] = [
        ("a b", {"tokens": ["a", "Ġb"], "token_logprobs": [None, -1.0], "text_offset": [0, 1]},
         "do not line up"),
        ("a b", {"token_logprobs": [None, None, -1.0], "text_offset": [0, 1, 2]},
         "no log-probability"),
        ("a b", {"token_logprobs": [None, -1.0], "text_offset": [1, 0]}, "non-decreasing"),
        ("a b", {"token_logprobs": [None], "text_offset": [0, 1]}, "text_offset"),
        ("a bc", {"tokens": ["a", " "], "token_logprobs": [None, -1.0], "text_offset": [0, 1]},
         "stop at character 2"),
    ]
    for text, logprobs, message in bad:
        with pytest.raises(ValueError, match=message):
            echo_layout(text, text, logprobs)


def test_stored_layouts_round_trip_and_old_totals_are_not_layouts() -> None:
    layout = EchoLayout((0, 4), (None, -1.5), 9)
    assert EchoLayout.from_json(layout.to_json()) == layout
    for old in (-3.25, None, {"starts": [0], "logprobs": [], "end": 1}, [1, 2]):
        assert EchoLayout.from_json(old) is None


# -- small pieces ------------------------------------------------------------------------

def test_fingerprint_normalises_the_url() -> None:
    b = OpenAIBackend(MODEL, "HTTP://LocalHost:80/v1/")
    assert b.fingerprint == "openai:fake-model@http://localhost/v1"
    assert normalise_base_url("https://api.example.com:443/v1") == "https://api.example.com/v1"
    assert normalise_base_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert not b.supports_white_box and b.kind == "openai"
    for bad in ("localhost:8000/v1", "ftp://host/v1", "http://u:p@host/v1", "", "http:///v1",
                "http://host/v1?x=1"):
        with pytest.raises(ConfigError):
            normalise_base_url(bad)


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        OpenAIBackend(MODEL, "http://localhost/v1", concurrency=0)
    with pytest.raises(ConfigError):
        OpenAIBackend("", "http://localhost/v1")
    b = OpenAIBackend(MODEL, "http://localhost/v1")
    with pytest.raises(ConfigError):
        b.generate("a single string")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        b.generate(["x"], n=0)
    with pytest.raises(ConfigError):
        b.score("prompt", " single string")


def test_parse_choices() -> None:
    payload = {"choices": [{"index": 1, "message": {"content": "b"}},
                           {"index": 0, "message": {"content": None}}]}
    assert parse_choices(payload, chat=True) == ["", "b"]
    assert parse_choices({"choices": [{"text": "t"}]}, chat=False) == ["t"]
    for bad in ({"choices": []}, {"error": "x"}, [], {"choices": [{"message": "s"}]}):
        with pytest.raises(ValueError):
            parse_choices(bad, chat=True)

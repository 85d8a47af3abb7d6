"""The OpenAI-compatible backend against a real loopback HTTP server that injects faults.

Expected answers come from the fake server's deterministic answer function, so every
test checks real outputs, and request counts are taken on the server side.
"""

from __future__ import annotations

import email.utils
import socket
import time
from pathlib import Path

import pytest

from fake_openai_server import (
    FakeOpenAIServer,
    fake_answer,
    text_logprobs,
    token_logprob,
    tokenize,
)
from xlgap.errors import BackendError, ConfigError
from xlgap.models.openai_api import (
    CANNOT_SCORE,
    OpenAIBackend,
    backoff_delay,
    cut_at_stop,
    derive_seed,
    normalise_base_url,
    parse_choices,
    parse_retry_after,
)
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


def test_retry_after_is_honoured() -> None:
    with FakeOpenAIServer(schedule=["429"], retry_after=0.2) as server:
        t0 = time.perf_counter()
        out = backend(server).generate(PROMPTS[:1], n=1, seed=0)
        assert time.perf_counter() - t0 >= 0.2
        assert server.count() == 2 and server.faults["429"] == 1
        assert out == expected(PROMPTS[:1], 1, 0, temperature=1.0)


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
    with pytest.raises(BackendError, match="failed after 3 attempts"):
        b.generate(["hello"])


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

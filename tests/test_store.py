"""The result store: caching, resume after SIGKILL, and two processes sharing one store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from fake_backend import FakeBackend
from xlgap.models.cached import CachedBackend
from xlgap.store import ARRAY_FILE_THRESHOLD, Store, request_key

HERE = Path(__file__).resolve().parent


def test_roundtrip_json_small_and_large_arrays(tmp_path):
    store = Store(tmp_path)
    small = np.arange(10, dtype=np.float32)
    large = np.random.default_rng(0).normal(size=(ARRAY_FILE_THRESHOLD // 8 + 10,))
    store.put_many("m", "op", {"a": {"x": [1, "é"]}, "b": small, "c": large})
    again = Store(tmp_path)
    assert again.get("m", "a") == {"x": [1, "é"]}
    np.testing.assert_array_equal(again.get("m", "b"), small)
    np.testing.assert_array_equal(again.get("m", "c"), large)
    assert list((tmp_path / "arrays").rglob("*.npy"))  # the large one lives in a file
    assert again.get("other-model", "a") is None
    assert again.count("m") == 3


def test_lost_array_file_counts_as_missing(tmp_path):
    store = Store(tmp_path)
    store.put("m", "k", "op", np.ones(ARRAY_FILE_THRESHOLD // 4 + 1, dtype=np.float64))
    for f in (tmp_path / "arrays").rglob("*.npy"):
        f.unlink()
    assert store.get("m", "k") is None


def test_request_key_is_stable_and_order_free():
    assert request_key("g", {"a": 1, "b": [1, 2]}) == request_key("g", {"b": [1, 2], "a": 1})
    assert request_key("g", {"a": 1}) != request_key("g", {"a": 2})
    assert request_key("g", {"a": 1}) != request_key("h", {"a": 1})


def test_cached_backend_computes_nothing_twice(tmp_path):
    inner = FakeBackend()
    cached = CachedBackend(inner, Store(tmp_path), chunk_size=4)
    prompts = [f"p{i}" for i in range(10)]
    first = cached.generate(prompts, n=3, seed=1)
    assert cached.computed == 10
    again = CachedBackend(FakeBackend(), Store(tmp_path), chunk_size=4)
    assert again.generate(prompts, n=3, seed=1) == first
    assert again.computed == 0
    # a new seed or an extra prompt is computed, the rest is not
    again.generate([*prompts, "new"], n=3, seed=1)
    assert again.computed == 1
    h = again.hidden_states(["a", "b"], pooling="mean")
    np.testing.assert_array_equal(h, inner.hidden_states(["a", "b"], pooling="mean"))
    assert again.score("p", ["x", "y"]) == inner.score("p", ["x", "y"])


_WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    from fake_backend import FakeBackend
    from xlgap.models.cached import CachedBackend
    from xlgap.store import Store
    cached = CachedBackend(FakeBackend(delay={delay}), Store({store!r}), chunk_size=5)
    cached.generate([f"p{{i}}" for i in range({start}, {stop})], n=4, seed=0)
    print("computed", cached.computed)
""")


def _worker(store: Path, start: int, stop: int, delay: float) -> list[str]:
    return [sys.executable, "-c", _WORKER.format(here=str(HERE), store=str(store), start=start,
                                                 stop=stop, delay=delay)]


def test_sigkill_resumes_losing_at_most_the_chunk_in_flight(tmp_path):
    proc = subprocess.Popen(_worker(tmp_path, 0, 100, 0.15), stdout=subprocess.PIPE, text=True)
    store = None
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until a few chunks are stored
        time.sleep(0.2)
        if (tmp_path / "store.sqlite").exists():
            store = Store(tmp_path)
            if store.count() >= 15:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert store is not None, "the worker never created its store"
    kept = store.count()
    assert 15 <= kept < 100
    assert kept % 5 == 0  # whole chunks only
    out = subprocess.run(_worker(tmp_path, 0, 100, 0.0), capture_output=True, text=True,
                         check=True).stdout
    assert f"computed {100 - kept}" in out
    expected = FakeBackend().generate([f"p{i}" for i in range(100)], n=4, seed=0)
    assert CachedBackend(FakeBackend(), Store(tmp_path)).generate(
        [f"p{i}" for i in range(100)], n=4, seed=0) == expected


def test_two_processes_share_a_store(tmp_path):
    procs = [subprocess.Popen(_worker(tmp_path, a, b, 0.01), stdout=subprocess.PIPE, text=True)
             for a, b in ((0, 60), (30, 90))]
    for p in procs:
        assert p.wait(timeout=120) == 0
    conn = sqlite3.connect(tmp_path / "store.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert Store(tmp_path).count() == 90
    cached = CachedBackend(FakeBackend(), Store(tmp_path))
    got = cached.generate([f"p{i}" for i in range(90)], n=4, seed=0)
    assert cached.computed == 0
    assert got == FakeBackend().generate([f"p{i}" for i in range(90)], n=4, seed=0)

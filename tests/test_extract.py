"""Resumable hidden-state extraction with a deterministic fake backend."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from xlgap.errors import BackendError, ConfigError, DataError
from xlgap.models.base import Backend
from xlgap.representations.extract import (
    HIDDEN_DIR,
    INDEX_NAME,
    CenteredStates,
    HiddenStateSet,
    extract_hidden_states,
    layer_path,
    layer_plan,
    load_or_extract,
)
from xlgap.representations.ilo import ilo, ilo_by_layer
from xlgap.representations.similarity import layerwise_similarity

N_LAYERS = 4
DIM = 6


class Interrupted(RuntimeError):
    pass


class FakeBackend(Backend):
    """Pooled states = fixed random projections of a hash of the text (plus the pooling)."""

    kind = "fake"

    def __init__(self, fail_after: int | None = None, scale: float = 1.0,
                 name: str = "fake-v1") -> None:
        self.fail_after = fail_after
        self.scale = scale
        self.name = name
        self.calls: list[list[str]] = []
        self.proj = np.random.default_rng(0).normal(size=(N_LAYERS, 16, DIM))

    @property
    def fingerprint(self) -> str:
        return self.name

    @property
    def supports_white_box(self) -> bool:
        return True

    @property
    def n_layers(self) -> int:
        return N_LAYERS

    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0,
                 max_new_tokens: int = 16, seed: int = 0,
                 stop: Sequence[str] = ("\n",)) -> list[list[str]]:
        raise NotImplementedError

    def one(self, text: str, pooling: str = "mean") -> np.ndarray:
        digest = hashlib.sha256(f"{pooling}|{text}".encode()).digest()[:16]
        h = np.frombuffer(digest, dtype=np.uint8).astype(np.float64) / 255.0 - 0.5
        return self.scale * np.einsum("k,lkd->ld", h, self.proj)  # (layers, d)

    def hidden_states(self, texts: Sequence[str], layers: Sequence[int] | None = None,
                      pooling: str = "mean") -> np.ndarray:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise Interrupted("simulated crash")
        self.calls.append(list(texts))
        ids = list(range(N_LAYERS)) if layers is None else list(layers)
        return np.stack([self.one(t, pooling)[ids] for t in texts]).astype(np.float32)


def texts() -> dict[str, list[str]]:
    return {lang: [f"{lang} sentence {i}" for i in range(n)]
            for lang, n in (("en", 13), ("de", 13), ("sw", 11))}


def flat(tx: dict[str, list[str]]) -> list[str]:
    return [t for lang in tx for t in tx[lang]]


def by_length(tx: dict[str, list[str]]) -> list[str]:
    """The order batches take texts in: by length, ties by their flat position."""
    f = flat(tx)
    return [f[i] for i in sorted(range(len(f)), key=lambda i: (len(f[i]), i))]


def test_extract_writes_layers_and_index(tmp_path: Path) -> None:
    fake = FakeBackend()
    tx = texts()
    hs = extract_hidden_states(fake, tx, tmp_path, batch_size=5, progress=False)
    assert hs.complete and hs.n_layers == N_LAYERS and hs.layer_ids == [0, 1, 2, 3]
    assert len(fake.calls) == 8  # ceil(37 / 5)
    assert [t for c in fake.calls for t in c] == by_length(tx) != flat(tx)
    for i in range(N_LAYERS):
        arr = np.load(layer_path(tmp_path, i))
        assert arr.shape == (37, DIM) and arr.dtype == np.float16
        per_lang = hs.layer(i)
        assert list(per_lang) == ["en", "de", "sw"]
        for lang, rows in per_lang.items():
            assert rows.dtype == np.float32 and rows.shape == (len(tx[lang]), DIM)
            expect = np.stack([fake.one(t)[i] for t in tx[lang]]).astype(np.float32)
            np.testing.assert_array_equal(rows, expect.astype(np.float16).astype(np.float32))
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["n_done"] == 8 and all(index["done"])
    assert index["fingerprint"] == "fake-v1" and index["pooling"] == "mean"
    assert index["n_per_language"] == {"en": 13, "de": 13, "sw": 11}
    # a complete extraction is not redone
    again = FakeBackend()
    extract_hidden_states(again, tx, tmp_path, batch_size=5, progress=False)
    assert again.calls == []


def test_interrupted_extraction_resumes(tmp_path: Path) -> None:
    tx = texts()
    full = extract_hidden_states(FakeBackend(), tx, tmp_path / "full", batch_size=4,
                                 layers=[0, 2, 3], progress=False)
    crashing = FakeBackend(fail_after=3)
    with pytest.raises(Interrupted):
        extract_hidden_states(crashing, tx, tmp_path / "part", batch_size=4, layers=[0, 2, 3],
                              progress=True)
    index = json.loads((tmp_path / "part" / INDEX_NAME).read_text())
    assert index["n_done"] == 3 and index["done"][:3] == [True] * 3 and not any(index["done"][3:])
    with pytest.raises(DataError, match="unfinished"):
        HiddenStateSet(tmp_path / "part").layer(0)

    resumed = FakeBackend()
    part = extract_hidden_states(resumed, tx, tmp_path / "part", batch_size=4, layers=[0, 2, 3],
                                 progress=False)
    # finished batches (the 12 shortest texts) were not asked for again
    assert [t for c in resumed.calls for t in c] == by_length(tx)[12:]
    assert len(resumed.calls) == 10 - 3
    for i in (0, 2, 3):
        a, b = full.layer(i), part.layer(i)
        for lang in tx:
            np.testing.assert_array_equal(a[lang], b[lang])
    with pytest.raises(ConfigError, match="not extracted"):
        part.layer(1)


@pytest.mark.parametrize("change", ["pooling", "texts", "fingerprint", "layers", "dtype"])
def test_mismatched_index_starts_fresh(tmp_path: Path, change: str) -> None:
    tx = texts()
    with pytest.raises(Interrupted):
        extract_hidden_states(FakeBackend(fail_after=2), tx, tmp_path, batch_size=4,
                              progress=False)
    kwargs: dict = {"batch_size": 4, "progress": False}
    fake = FakeBackend()
    if change == "pooling":
        kwargs["pooling"] = "last"
    elif change == "texts":
        tx["en"][0] = "changed"
    elif change == "fingerprint":
        fake = FakeBackend(name="fake-v2")
    elif change == "layers":
        kwargs["layers"] = [1, 3]
    else:
        kwargs["dtype"] = np.float32
    hs = extract_hidden_states(fake, tx, tmp_path, **kwargs)
    assert len(fake.calls) == 10  # everything recomputed
    pooling = kwargs.get("pooling", "mean")
    en = hs.layer(3)["en"]
    expect = np.stack([fake.one(t, pooling)[3] for t in tx["en"]]).astype(np.float32)
    np.testing.assert_allclose(en, expect, rtol=2e-3, atol=2e-3)
    if change == "layers":
        assert not layer_path(tmp_path, 0).exists()


def test_float16_overflow_and_bad_backends(tmp_path: Path) -> None:
    tx = texts()
    with pytest.raises(DataError, match="overflow float16"):
        extract_hidden_states(FakeBackend(scale=1e6), tx, tmp_path / "a", progress=False)
    hs = extract_hidden_states(FakeBackend(scale=1e6), tx, tmp_path / "a", dtype=np.float32,
                               progress=False)
    assert np.abs(hs.layer(1)["en"]).max() > 65504

    class WrongShape(FakeBackend):
        def hidden_states(self, texts: Sequence[str], layers: Sequence[int] | None = None,
                          pooling: str = "mean") -> np.ndarray:
            return np.zeros((len(texts), DIM))

    with pytest.raises(BackendError, match="shape"):
        extract_hidden_states(WrongShape(), tx, tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="pooling"):
        extract_hidden_states(FakeBackend(), tx, tmp_path / "c", pooling="max", progress=False)
    with pytest.raises(ConfigError, match="out of range"):
        extract_hidden_states(FakeBackend(), tx, tmp_path / "c", layers=[4], progress=False)
    with pytest.raises(DataError, match="non-empty list"):
        extract_hidden_states(FakeBackend(), {"en": []}, tmp_path / "c", progress=False)
    with pytest.raises(DataError, match="no hidden-state index"):
        HiddenStateSet(tmp_path / "nothing")


def test_stored_states_feed_the_analyses(tmp_path: Path) -> None:
    tx = {lang: [f"s{i}" for i in range(20)] for lang in ("en", "de", "fr", "sw")}
    hs = extract_hidden_states(FakeBackend(), tx, tmp_path, batch_size=8, progress=False)
    layers = ilo_by_layer(hs, k=4, t=2)
    assert [e["layer"] for e in layers] == hs.layer_ids
    # identical texts in every language give identical vectors: the neighbours of a point
    # are its copies in the other languages, so ILO is 1 at every layer
    assert all(e["mean"] == pytest.approx(1.0) for e in layers)
    assert layers[2]["ilo"] == ilo(hs.layer(2), k=4, t=2).ilo
    sim = layerwise_similarity(hs, pivot="en", layers=[1])
    assert sim["layers"][0]["mean"]["cka"] == pytest.approx(1.0)
    assert sim["layers"][0]["mean"]["retrieval"] == 1.0


class Wrapper:
    """Stands for a caching backend: the real one is ``inner``."""

    def __init__(self, inner: FakeBackend) -> None:
        self.inner = inner


def test_load_or_extract_is_one_path_under_out_hidden(tmp_path: Path) -> None:
    tx = texts()
    fake = FakeBackend()
    hs = load_or_extract(Wrapper(fake), tx, tmp_path, pooling="mean", batch_size=8,
                         progress=False)
    assert hs.out_dir == tmp_path / HIDDEN_DIR and (tmp_path / "hidden" / INDEX_NAME).is_file()
    assert len(fake.calls) == 5  # the inner backend did the work, not the wrapper
    again = FakeBackend()
    same = load_or_extract(again, tx, tmp_path, pooling="mean", batch_size=8, progress=False)
    assert again.calls == []  # a second command reuses the finished extraction
    np.testing.assert_array_equal(same.layer(2)["sw"], hs.layer(2)["sw"])


def test_layer_plan_accepts_every_form(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    stacked = {lang: rng.normal(size=(5, 3, 4)) for lang in ("en", "de")}
    per_layer = [{lang: a[:, i] for lang, a in stacked.items()} for i in range(3)]
    forms = [stacked, per_layer, (lambda i: per_layer[i])]
    for form in forms:
        ids, load = layer_plan(form, n_layers=3)
        assert ids == [0, 1, 2]
        np.testing.assert_array_equal(load(1)["de"], stacked["de"][:, 1])
    assert layer_plan(stacked, layers=[2])[0] == [2]
    hs = extract_hidden_states(FakeBackend(), texts(), tmp_path, progress=False)
    assert layer_plan(hs)[0] == hs.layer_ids
    with pytest.raises(ConfigError, match="out of range"):
        layer_plan(per_layer, layers=[3])
    with pytest.raises(ConfigError, match="n_layers"):
        layer_plan(lambda i: per_layer[i])
    with pytest.raises(DataError, match="n, layers, d"):
        layer_plan({"en": np.ones((3, 4))})
    with pytest.raises(DataError, match="expected"):
        layer_plan(42)  # type: ignore[arg-type]


def test_centered_states_remove_the_shared_mean_only() -> None:
    rng = np.random.default_rng(4)
    shift = 100.0 * rng.normal(size=6)  # a huge direction every state shares
    raw = [{lang: rng.normal(size=(10, 6)) + shift + off
            for lang, off in (("en", 0.0), ("de", 2.0))} for _ in range(2)]
    centred = CenteredStates(raw)
    assert centred.layer_ids == [0, 1]
    layer = centred.layer(1)
    pooled = np.concatenate(list(layer.values()))
    np.testing.assert_allclose(pooled.mean(0), 0.0, atol=1e-9)
    # differences between points (and so between languages) are kept
    np.testing.assert_allclose(layer["de"] - layer["en"], raw[1]["de"] - raw[1]["en"])
    assert layer["en"].dtype == np.float64
    assert CenteredStates([{k: v.astype(np.float32) for k, v in raw[0].items()}]
                          ).layer(0)["en"].dtype == np.float32


def test_a_resume_that_orders_the_texts_otherwise_starts_afresh(tmp_path: Path) -> None:
    """The batch order is part of the index: a backend that measures length otherwise
    (here one that tokenizes) never fills the rows another order left unfinished."""

    class Tokenizing(FakeBackend):
        def encode(self, text: str) -> list[int]:
            return [0] * (100 - len(text))  # the opposite order to characters

    tx = texts()
    full = extract_hidden_states(FakeBackend(), tx, tmp_path / "full", batch_size=4,
                                 progress=False)
    with pytest.raises(Interrupted):
        extract_hidden_states(FakeBackend(fail_after=3), tx, tmp_path / "part", batch_size=4,
                              progress=False)
    other = Tokenizing()
    part = extract_hidden_states(other, tx, tmp_path / "part", batch_size=4, progress=False)
    assert len(other.calls) == 10  # all batches again, in its own order
    for i in range(N_LAYERS):
        for lang in tx:
            np.testing.assert_array_equal(full.layer(i)[lang], part.layer(i)[lang])

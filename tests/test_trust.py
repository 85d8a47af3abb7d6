"""Headline numbers on runs whose answer is known (issue: numbers people can trust).

Every verdict is tried on a run built so that the right answer is certain: every answer
unparseable, every answer right, target = source, a source at chance; "other" answers
agree only when their texts do; the pi interval is reported as the bootstrap gives it;
resumes refuse other data; a run directory has one writer at a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xlgap.errors import ConfigError, DataError
from xlgap.runs import RunWriter, load_run
from xlgap.stats import pi as pi_module
from xlgap.stats.bootstrap import paired_ratio_pvalue, resample_weights
from xlgap.stats.diagnose import diagnose, verdict
from xlgap.stats.metrics import agreement_per_item, chi2_per_item

M = 4


def write_run(path: Path, answers: dict[str, np.ndarray], texts: dict[str, list[list[str]]]
              | None = None, gold: np.ndarray | None = None) -> Path:
    """A sample-mode run from (Q, K) answer arrays per language (source first)."""
    langs = list(answers)
    q, k = answers[langs[0]].shape
    gold = np.zeros(q, dtype=int) if gold is None else gold
    with RunWriter(path, {"source": langs[0], "targets": langs[1:], "samples": k}) as w:
        w.add_items([{"id": f"i{i}", "n_options": M, "gold": int(gold[i])} for i in range(q)])
        w.add_samples([{"item": f"i{i}", "lang": lang, "sample": s,
                        "answer": int(answers[lang][i, s]),
                        "text": (texts[lang][i][s] if texts else f"c{answers[lang][i, s]}")}
                       for lang in langs for i in range(q) for s in range(k)])
    return path


def diag_of(path: Path) -> dict:
    return diagnose(load_run(path), n_boot=200, fit_model=False)


# -- "other" is not an answer both languages share -------------------------------------


def test_two_different_other_answers_do_not_agree(tmp_path: Path) -> None:
    other = np.full((3, 1), -1)
    texts = {"en": [["Paris"], ["Paris"], [""]], "fr": [["Lyon"], ["  paris!"], [""]]}
    run = load_run(write_run(tmp_path / "r", {"en": other, "fr": other}, texts))
    agree = agreement_per_item(run.probs["en"], run.probs["fr"])
    # different texts disagree; the same normalised text agrees; two empty answers never do
    assert agree.tolist() == [0.0, 1.0, 0.0]
    assert chi2_per_item(run.probs["en"], run.probs["fr"]).tolist() == [2.0, 0.0, 2.0]
    assert run.other_labels[0] == ["paris", "lyon"]
    assert run.other_share("en") == 1.0


def test_every_answer_unparseable_gives_no_verdict(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    q, k = 40, 5
    answers = {lang: np.full((q, k), -1) for lang in ("en", "hi")}
    texts = {lang: [[str(rng.integers(1000)) if rng.random() < 0.5 else ""
                     for _ in range(k)] for _ in range(q)] for lang in answers}
    diag = diag_of(write_run(tmp_path / "r", answers, texts))
    assert diag["checks"]["mostly_other"] and diag["checks"]["other_share"]["hi"] == 1.0
    text = verdict(diag)
    assert text.startswith("no verdict: most answers name no candidate"), text
    assert diag["pairs"]["hi"]["agreement"]["estimate"] < 0.2  # not "little gap"


def test_every_answer_right_is_little_gap(tmp_path: Path) -> None:
    q, k = 30, 4
    answers = {lang: np.zeros((q, k), dtype=int) for lang in ("en", "fr", "ja")}
    diag = diag_of(write_run(tmp_path / "r", answers))
    assert diag["accuracy"]["ja"]["estimate"] == 1.0
    assert diag["overall"]["transfer"]["estimate"] == 1.0
    assert diag["overall"]["agreement"]["estimate"] == 1.0
    assert diag["checks"]["source_above_chance"]
    assert verdict(diag).startswith("little gap")


def test_target_equal_to_source_has_transfer_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    q, k = 60, 6
    gold = rng.integers(0, M, q)
    # a source that knows most items, with ties between gold and another option
    src = np.where(rng.random((q, k)) < 0.6, gold[:, None], rng.integers(0, M, (q, k)))
    src[:10] = np.array([0, 0, 0, 1, 1, 1])  # exact ties
    diag = diag_of(write_run(tmp_path / "r", {"en": src, "de": src.copy()}, gold=gold))
    pair = diag["pairs"]["de"]
    assert pair["transfer"]["estimate"] == 1.0
    assert pair["agreement"]["estimate"] == 1.0 and pair["chi2"]["estimate"] == 0.0
    assert verdict(diag).startswith("little gap")


def test_source_at_chance_gives_no_verdict(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    q, k = 200, 10
    answers = {lang: rng.integers(0, M, (q, k)) for lang in ("en", "fr")}
    diag = diag_of(write_run(tmp_path / "r", answers))
    assert diag["checks"]["chance_accuracy"] == pytest.approx(1 / M)
    assert not diag["checks"]["source_above_chance"]
    assert verdict(diag).startswith("no verdict: the source is not above chance")


# -- one transfer statistic, and its test ------------------------------------------------


def test_paired_ratio_pvalue_matches_a_loop() -> None:
    rng = np.random.default_rng(4)
    q = 50
    den = rng.integers(0, 3, (q, 2)).astype(float)
    num_a = np.minimum(den, rng.integers(0, 3, (q, 2)))
    num_b = np.minimum(den, rng.integers(0, 2, (q, 2)))
    got = paired_ratio_pvalue(num_a, den, num_b, den, n_boot=500, seed=9)
    w = resample_weights(q, 500, np.random.default_rng(9))
    diffs = []
    for rep in w:
        ra = (rep @ num_a.sum(1)) / (rep @ den.sum(1))
        rb = (rep @ num_b.sum(1)) / (rep @ den.sum(1))
        diffs.append(ra - rb)
    diffs = np.array(diffs)
    want = min(1.0, 2 * min((1 + np.sum(diffs <= 1e-12)) / 501,
                            (1 + np.sum(diffs >= -1e-12)) / 501))
    assert got == pytest.approx(want)
    assert paired_ratio_pvalue(num_a, den, num_a, den, n_boot=200) == 1.0


# -- pi: the interval as computed ------------------------------------------------------------


def test_pi_interval_is_not_widened_to_the_estimate(monkeypatch) -> None:
    from xlgap.stats.simulate import simulate_arrays

    sim = simulate_arrays(pi=0.6, questions=150, samples=10, options=M, seed=5)

    def counts(a: np.ndarray) -> np.ndarray:
        return np.stack([(a == j).sum(axis=1) for j in range(M)], axis=1).astype(float)

    opts = pi_module.PiFitOptions(n_particles=3000, n_boot=200, ecm_iters=3)
    honest = pi_module.fit_pi_model(counts(sim.samples["en"]), {"t1": counts(
        sim.samples["t1"])}, M, options=opts).overall
    # an estimate off its bootstrap distribution must stay off it, and be flagged
    monkeypatch.setattr(pi_module, "_refine_pi", lambda delta: 0.999)
    fit = pi_module.fit_pi_model(counts(sim.samples["en"]), {"t1": counts(
        sim.samples["t1"])}, M, options=opts).overall
    assert fit.pi == 0.999
    assert fit.pi_ci == honest.pi_ci and fit.pi_ci[1] < 0.999
    assert fit.estimate_outside_ci and fit.as_dict()["estimate_outside_ci"]


# -- provenance, resumes and the writer's lock ---------------------------------------------


def _dataset(path: Path, capital: str = "Paris") -> Path:
    rows = []
    for i in range(4):
        langs = {lang: {"prompt": f"{word} {i} <mask>.", "candidates": [capital, "Rome"],
                        "gold": 0} for lang, word in (("en", "Item"), ("fr", "Objet"))}
        rows.append(json.dumps({"id": f"q{i}", "langs": langs}))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_run_records_provenance_and_refuses_other_data(tmp_path: Path) -> None:
    from fake_backend import FakeBackend
    from xlgap.data import load_dataset
    from xlgap.sampling import SamplingOptions, make_run

    opts = SamplingOptions(exact=True, shots=0, embed_answers=False)
    backend = FakeBackend()
    data = load_dataset(_dataset(tmp_path / "d.jsonl"))
    out = make_run(backend, data, tmp_path / "run", source="en", targets=["fr"], options=opts)
    meta = json.loads((out / "run.json").read_text())
    prov = meta["provenance"]
    assert {"xlgap", "torch", "transformers"} <= set(prov["versions"])
    assert len(prov["data_hash"]) == 24 and meta["answer_options"]["exact"] is True
    diag = diagnose(load_run(out), n_boot=50, fit_model=False)
    assert diag["provenance"]["data_hash"] == prov["data_hash"]
    # the same data resumes (nothing to do); other content for the same ids is refused
    make_run(backend, data, out, source="en", targets=["fr"], options=opts)
    changed = load_dataset(_dataset(tmp_path / "d2.jsonl", capital="Lyon"))
    with pytest.raises(DataError, match="differs from the data this run was made with"):
        make_run(backend, changed, out, source="en", targets=["fr"], options=opts)
    with pytest.raises(ConfigError, match="normalize='none' \\(now 'tokens'\\)"):
        make_run(backend, data, out, source="en", targets=["fr"],
                 options=SamplingOptions(exact=True, shots=0, embed_answers=False,
                                         normalize="tokens"))


def test_a_run_directory_has_one_writer(tmp_path: Path) -> None:
    meta = {"source": "en", "targets": ["fr"], "samples": 1}
    first = RunWriter(tmp_path / "run", meta)
    with pytest.raises(DataError, match="is being written by process"):
        RunWriter(tmp_path / "run", meta)
    first.close()
    RunWriter(tmp_path / "run", meta).close()
    # a writer killed with SIGKILL leaves no stale lock
    code = ("import sys, time; from xlgap.runs import RunWriter; "
            f"w = RunWriter({str(tmp_path / 'run2')!r}, {meta!r}); print('ready', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(DataError, match="being written"):
            RunWriter(tmp_path / "run2", meta)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.1)
    RunWriter(tmp_path / "run2", meta).close()


def test_store_keys_change_with_the_algorithm_version(tmp_path: Path, monkeypatch) -> None:
    from fake_backend import FakeBackend
    from xlgap import store as store_module
    from xlgap.models.cached import CachedBackend
    from xlgap.store import Store

    inner = FakeBackend()
    cached = CachedBackend(inner, Store(tmp_path / "s"))
    cached.score_batch([("p", ["a", "b"])])
    cached.score_batch([("p", ["a", "b"])])
    assert inner.calls == 1
    monkeypatch.setitem(store_module.ALGORITHM_VERSIONS, "score", 99)
    cached.score_batch([("p", ["a", "b"])])
    assert inner.calls == 2  # new scoring code never reads the old results
    cached.score_batch([("p", ["a", "b"])], normalize="tokens")
    assert inner.calls == 3  # normalisation is part of the key

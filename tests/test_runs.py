"""Run directory format: writer/loader round trip, resume after a crash, error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xlgap.errors import ConfigError, DataError
from xlgap.runs import RunWriter, done_keys, load_run
from xlgap.stats.simulate import simulate_run

META = {"model": "toy", "source": "en", "targets": ["de", "ja"], "mode": "sample",
        "samples": 3, "data": "toy.jsonl"}
ITEMS = [
    {"id": "a", "n_options": 3, "gold": 0, "candidates": {"en": ["x", "y", "z"]}},
    {"id": "b", "n_options": 2, "gold": None},
    {"id": "c", "n_options": 4, "gold": 3},
]
# (item, lang) -> answers for samples 0..2 (-1 = other)
ANSWERS = {
    ("a", "en"): [0, 0, 1], ("a", "de"): [2, -1, 2], ("a", "ja"): [0, 1, 0],
    ("b", "en"): [1, 1, 1], ("b", "de"): [0, 1, -1], ("b", "ja"): [1, 0, 0],
    ("c", "en"): [3, 3, 2], ("c", "de"): [3, 0, 1], ("c", "ja"): [-1, -1, 3],
}


def _rows(pairs=ANSWERS):
    return [{"item": i, "lang": lang, "sample": k, "answer": a, "text": f"t{a}"}
            for (i, lang), ans in pairs.items() for k, a in enumerate(ans)]


def _write(tmp_path: Path) -> Path:
    w = RunWriter(tmp_path / "run", META)
    assert w.add_items(ITEMS) == 3
    w.add_samples(_rows())
    return w.dir


def test_round_trip_sample_mode(tmp_path: Path) -> None:
    run = load_run(_write(tmp_path))
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["format"] == "run" and meta["format_version"] == 1
    assert meta["languages"] == ["en", "de", "ja"]
    assert run.source == "en" and run.targets == ["de", "ja"] and run.mode == "sample"
    assert run.item_ids == ["a", "b", "c"] and run.k == 3
    assert run.n_options.tolist() == [3, 2, 4] and run.gold.tolist() == [0, -1, 3]
    assert run.counts is not None
    # every "other" answer here has the text "t-1": one shared concept per item
    assert run.n_columns == run.m_max + 1
    for (item, lang), ans in ANSWERS.items():
        i = run.item_ids.index(item)
        assert run.samples[lang][i].tolist() == [a if a >= 0 else run.m_max for a in ans]
        if -1 in ans:
            assert run.other_labels[i] == ["t 1"]
        expect = np.zeros(run.n_columns)
        for a in ans:
            expect[a if a >= 0 else run.m_max] += 1
        assert run.counts[lang][i].tolist() == expect.tolist()
        assert np.allclose(run.probs[lang][i], expect / 3)
    assert all(run.present[lang].all() for lang in run.languages)
    assert run.missing == {"en": 0, "de": 0, "ja": 0} and not run.warnings
    assert run.embeddings is None


def test_missing_pair_and_incomplete_samples_are_dropped_with_warning(tmp_path: Path) -> None:
    pairs = dict(ANSWERS)
    del pairs[("b", "ja")]
    pairs[("c", "de")] = [3, 0]  # only 2 of 3 samples: incomplete
    w = RunWriter(tmp_path / "run", META)
    w.add_items(ITEMS)
    w.add_samples(_rows(pairs))
    run = load_run(w.dir)
    assert run.present["ja"].tolist() == [True, False, True]
    assert run.present["de"].tolist() == [True, True, False]
    assert run.missing == {"en": 0, "de": 1, "ja": 1}
    assert len(run.warnings) == 2
    assert (run.samples["ja"][1] == -2).all() and run.counts["ja"][1].sum() == 0
    assert done_keys(w.dir) == set(pairs) - {("c", "de")}


def test_resume_with_torn_last_line(tmp_path: Path) -> None:
    first = {k: v for k, v in ANSWERS.items() if k[0] != "c"}
    w = RunWriter(tmp_path / "run", META)
    w.add_items(ITEMS)
    w.add_samples(_rows(first))
    w.add_samples(_rows({("c", "en"): [3, 3]}))  # crashed after 2 of 3 samples ...
    with (w.dir / "samples.jsonl").open("a") as fh:
        fh.write('{"item": "c", "lang": "en", "sam')  # ... in the middle of a line
    # the torn line is ignored by readers; the incomplete pair is not done
    assert done_keys(w.dir) == set(first)
    assert load_run(w.dir).present["en"].tolist() == [True, True, False]
    # the crashed writer's lock went with its process; reopening cuts the torn line and
    # the resumed run redoes the pairs not done
    w.close()
    w2 = RunWriter(tmp_path / "run", META)
    assert w2.add_items(ITEMS) == 0  # already there
    todo = {k: v for k, v in ANSWERS.items() if k not in w2.done_keys()}
    assert set(todo) == {("c", "en"), ("c", "de"), ("c", "ja")}
    w2.add_samples(_rows(todo))
    text = (w.dir / "samples.jsonl").read_text()
    assert text.endswith("\n") and '"sam\n' not in text
    run = load_run(w.dir)
    assert all(run.present[lang].all() for lang in run.languages)
    assert run.samples["en"][2].tolist() == ANSWERS[("c", "en")]
    assert w2.done_keys() == set(ANSWERS)


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    d = _write(tmp_path)
    path = d / "samples.jsonl"
    lines = path.read_text().splitlines()
    lines[4] = '{"item": "a", "lang": "en", oops}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"samples\.jsonl:5: not valid JSON"):
        load_run(d)


def test_field_errors_name_file_and_line(tmp_path: Path) -> None:
    d = _write(tmp_path)
    path = d / "samples.jsonl"
    with path.open("a") as fh:
        fh.write(json.dumps({"item": "b", "lang": "en", "sample": 0, "answer": 2}) + "\n")
    with pytest.raises(DataError, match=r"samples\.jsonl:28: answer 2 outside -1\.\.1"):
        load_run(d)
    path.write_text(json.dumps({"item": "zz", "lang": "en", "sample": 0, "answer": 0}) + "\n")
    with pytest.raises(DataError, match=r"samples\.jsonl:1: item 'zz' is not in items"):
        load_run(d)
    path.write_text(json.dumps({"item": "a", "lang": "fr", "sample": 0, "answer": 0}) + "\n")
    with pytest.raises(DataError, match="language 'fr'"):
        load_run(d)
    (d / "items.jsonl").write_text('{"id": "a", "n_options": 2, "gold": 5}\n')
    with pytest.raises(DataError, match=r"items\.jsonl:1: gold 5"):
        load_run(d)


def test_duplicate_sample_keeps_last_value(tmp_path: Path) -> None:
    d = _write(tmp_path)
    w = RunWriter(d, META)
    w.add_samples([{"item": "a", "lang": "en", "sample": 2, "answer": 2}])
    assert load_run(d).samples["en"][0].tolist() == [0, 0, 2]


def test_reopen_with_other_settings_is_refused(tmp_path: Path) -> None:
    d = _write(tmp_path)
    with pytest.raises(DataError, match="samples=3"):
        RunWriter(d, {**META, "samples": 5})
    with pytest.raises(DataError, match="mode"):
        RunWriter(d, {**META, "mode": "exact"})


def test_exact_mode(tmp_path: Path) -> None:
    meta = {"model": "toy", "source": "en", "targets": ["de"], "mode": "exact"}
    w = RunWriter(tmp_path / "run", meta)
    w.add_items(ITEMS)
    w.add_distributions([
        {"item": "a", "lang": "en", "probs": [0.7, 0.2, 0.1]},
        {"item": "a", "lang": "de", "probs": [0.1, 0.1, 0.8]},
        {"item": "b", "lang": "en", "probs": [0.5, 0.5]},
        {"item": "c", "lang": "en", "probs": [0.1, 0.2, 0.3, 0.4]},
        {"item": "c", "lang": "de", "probs": [0.25, 0.25, 0.25, 0.25]},
    ])
    with pytest.raises(DataError, match="add_samples"):
        w.add_samples(_rows())
    assert w.done_keys() == {("a", "en"), ("a", "de"), ("b", "en"), ("c", "en"), ("c", "de")}
    run = load_run(w.dir)
    assert run.mode == "exact" and run.counts is None and run.samples == {}
    assert run.probs["en"].shape == (3, 4)  # candidates only: scores have no "other"
    assert np.allclose(run.probs["en"][0], [0.7, 0.2, 0.1, 0])
    assert np.allclose(run.probs["de"][2], [0.25, 0.25, 0.25, 0.25])
    assert run.present["de"].tolist() == [True, False, True] and run.missing["de"] == 1
    dist = w.dir / "distributions.jsonl"
    with dist.open("a") as fh:
        fh.write(json.dumps({"item": "b", "lang": "de", "probs": [0.5, 0.4]}) + "\n")
    with pytest.raises(DataError, match=r"distributions\.jsonl:6: probs sum to 0\.9"):
        load_run(w.dir)
    lines = dist.read_text().splitlines()
    lines[-1] = json.dumps({"item": "b", "lang": "de", "probs": [0.2, 0.3, 0.5]})
    dist.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"distributions\.jsonl:6: 3 probs for item 'b'"):
        load_run(w.dir)


def test_simulated_run_loads_with_embeddings_and_truth(tmp_path: Path) -> None:
    d = simulate_run(tmp_path / "sim", pi=0.7, questions=40, samples=6, options=3, seed=1,
                     targets=["de", "sw"], embed_dim=8)
    run = load_run(d)
    truth = json.loads((d / "truth.json").read_text())
    assert run.targets == ["de", "sw"] and run.k == 6 and run.n_items == 40
    assert run.embeddings is not None and run.embeddings["q00000"].shape == (3, 8)
    assert set(truth["kappa"]) == set(run.item_ids)
    assert truth["params"]["pi"] == 0.7
    assert all(run.present[lang].all() for lang in run.languages)
    assert run.counts is not None and (run.counts["de"].sum(axis=1) == 6).all()
    with pytest.raises(ConfigError, match="already holds a run"):
        simulate_run(d, pi=0.5, questions=5, samples=2, options=2, seed=0)


def test_writer_checks_rows_before_writing(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run", {**META, "languages": ["en"], "targets": ["de", "ja"]})
    assert w.meta["languages"] == ["en", "de", "ja"]
    w.add_items(ITEMS)
    bad = [({"item": "zz", "lang": "en", "sample": 0, "answer": 0}, "has not been added"),
           ({"item": "a", "lang": "fr", "sample": 0, "answer": 0}, "language 'fr'"),
           ({"item": "a", "lang": "en", "sample": 3, "answer": 0}, r"sample index 3"),
           ({"item": "a", "lang": "en", "sample": 0, "answer": -5}, "answer -5"),
           ({"item": "a", "lang": "en", "sample": 0}, "missing field 'answer'")]
    for row, msg in bad:
        with pytest.raises(DataError, match=msg):
            w.add_samples([row])
    assert not (w.dir / "samples.jsonl").exists()
    with pytest.raises(DataError, match="n_options"):
        w.add_items([{"id": "d", "n_options": -1}])


def test_item_without_candidates_is_set_aside(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run", META)
    w.add_items([*ITEMS, {"id": "open", "n_options": 0}])
    w.add_samples(_rows())
    w.add_samples({"item": "open", "lang": "en", "sample": k, "answer": -1} for k in range(3))
    run = load_run(w.dir)
    assert run.item_ids == ["a", "b", "c"]
    assert any("no candidates" in msg for msg in run.warnings)


def test_another_process_holding_the_run_is_named_and_its_death_frees_it(tmp_path: Path
                                                                         ) -> None:
    """The run lock is an OS lock (filelock): a second writer in another process gets
    a clear error naming the holder; when the holder dies (no close), the lock goes."""
    import os
    import subprocess
    import sys

    code = ("import sys, time\n"
            "from xlgap.runs import RunWriter\n"
            f"w = RunWriter({str(tmp_path / 'run')!r}, {META!r})\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError, match=f"is being written by process {holder.pid}"):
            RunWriter(tmp_path / "run", META)
    finally:
        holder.kill()
        holder.wait()
    RunWriter(tmp_path / "run", META).close()

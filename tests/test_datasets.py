"""The benchmark catalogue: converters on tiny fixtures in each data set's published schema
(tests/fixtures/datasets/README.md cites where each schema comes from), the download path
against a local HTTP server (resume, restart, checksum mismatch, no network, never a
half-written cache), ``xlgap data list/get``, and named sources in ``load_dataset``."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import xlgap.cli
from xlgap.data import catalog, converters, load_dataset
from xlgap.data.catalog import RemoteFile, get_dataset
from xlgap.data.download import ChecksumError, fetch
from xlgap.data.formats import formats
from xlgap.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"


# -- a local HTTP server --------------------------------------------------------------------


class _Files:
    """What the server serves, and how it misbehaves."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()  # send half of the body, then drop the connection
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)


class _Handler(http.server.BaseHTTPRequestHandler):
    state: _Files

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        st = self.state
        st.requests.append((self.path, self.headers.get("Range")))
        body = st.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not st.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if self.path in st.cut_once:
            st.cut_once.discard(self.path)
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)


@pytest.fixture
def server() -> Iterator[tuple[str, _Files]]:
    state = _Files()
    handler = type("H", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("XLGAP_CACHE", str(root))
    return root


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- downloads ------------------------------------------------------------------------------


def test_fetch_resumes_a_killed_download(server, tmp_path: Path) -> None:
    base, state = server
    body = bytes(range(256)) * 200
    state.files["/f.bin"] = body
    state.cut_once.add("/f.bin")
    dest = tmp_path / "dl" / "f.bin"
    with pytest.raises(DataError, match="run the command again to resume"):
        fetch(f"{base}/f.bin", dest, sha(body), timeout=5)
    part = dest.with_name("f.bin.part")
    assert not dest.exists() and 0 < part.stat().st_size < len(body)  # never a half file
    assert fetch(f"{base}/f.bin", dest, sha(body), timeout=5) == sha(body)
    assert dest.read_bytes() == body and not part.exists()
    assert state.requests[-1][1] == f"bytes={len(body) // 2}-"  # resumed, not restarted


def test_fetch_restarts_when_the_server_ignores_ranges(server, tmp_path: Path) -> None:
    base, state = server
    body = b"x" * 10_000
    state.files["/f.bin"] = body
    state.ignore_range = True
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"garbage that must not stay")
    assert fetch(f"{base}/f.bin", dest, sha(body), timeout=5) == sha(body)
    assert dest.read_bytes() == body


def test_checksum_mismatch_names_the_file_and_both_hashes(server, tmp_path: Path) -> None:
    base, state = server
    state.files["/en.tsv"] = b"tampered\n"
    dest = tmp_path / "en.tsv"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        fetch(f"{base}/en.tsv", dest, wrong, timeout=5)
    message = str(err.value)
    assert "en.tsv" in message and wrong in message and sha(b"tampered\n") in message
    assert not dest.exists() and not dest.with_name("en.tsv.part").exists()


def test_no_network_names_the_url_and_the_way_round(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/eclektic_main.jsonl"  # discard port: nothing listens
    with pytest.raises(DataError) as err:
        fetch(url, tmp_path / "eclektic_main.jsonl", timeout=2)
    assert url in str(err.value) and "xlgap data get NAME --from DIR" in str(err.value)
    assert "'eclektic_main.jsonl'" in str(err.value)


# -- get_dataset: download, convert once, manifest ------------------------------------------


def _served(entry: catalog.DatasetInfo, base: str, state: _Files, folder: Path,
            pin: bool = False) -> catalog.DatasetInfo:
    """The entry with its files served from ``base`` (contents from ``folder``)."""
    files = []
    for remote in entry.files:
        data = (folder / remote.name).read_bytes()
        state.files[f"/{remote.name}"] = data
        files.append(RemoteFile(f"{base}/{remote.name}", remote.name,
                                sha(data) if pin else None))
    return replace(entry, files=tuple(files))


def test_get_dataset_downloads_converts_once_and_loads_by_name(
        server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, state = server
    entry = _served(catalog.CATALOG["eclektic"], base, state, FIXTURES, pin=True)
    monkeypatch.setitem(catalog.CATALOG, "eclektic", entry)
    path = get_dataset("eclektic")
    assert path == cache / "datasets" / "eclektic" / "eclektic.jsonl"
    manifest = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["items"] == 2 and manifest["language_count"] == 3
    assert manifest["revision"] == catalog.CATALOG["eclektic"].revision
    assert manifest["files"][0]["pinned"] and len(manifest["files"][0]["sha256"]) == 64
    assert "Goldman" in manifest["citation"] and manifest["licence"].startswith("CC-BY")
    served = len(state.requests)
    assert get_dataset("eclektic") == path and len(state.requests) == served  # cached
    ds = load_dataset("eclektic")  # a name, resolved to the cached copy
    assert ds.item_sources == {"17": "he", "18": "ja"}
    assert ds.items[0]["en"].is_open and ds.items[0]["ja"].answers == ("1923年",)


def test_a_failed_conversion_leaves_no_cache(server, cache: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    base, state = server
    entry = _served(catalog.CATALOG["eclektic"], base, state, FIXTURES)

    def broken(files: dict[str, Path], out: Path) -> None:
        out.write_text('{"id": 1, "langs": {"en": {"prompt": "half')
        raise KeyboardInterrupt  # killed mid-conversion

    monkeypatch.setitem(catalog.CATALOG, "eclektic", replace(entry, convert=broken))
    with pytest.raises(KeyboardInterrupt):
        get_dataset("eclektic")
    folder = cache / "datasets" / "eclektic"
    assert catalog.cached_path("eclektic") is None
    assert not (folder / "eclektic.jsonl").exists() and not (folder / "manifest.json").exists()
    assert [p.name for p in folder.iterdir()] == ["raw"]  # only the verified download
    monkeypatch.setitem(catalog.CATALOG, "eclektic", entry)
    assert load_dataset("eclektic").name == "eclektic"  # the next use converts again


def test_get_dataset_offline_says_how_to_place_the_files(monkeypatch) -> None:
    entry = catalog.CATALOG["xcopa"]
    offline = replace(entry, files=tuple(replace(f, url=f"http://127.0.0.1:9/{f.name}")
                                         for f in entry.files))
    monkeypatch.setitem(catalog.CATALOG, "xcopa", offline)
    with pytest.raises(DataError, match=r"127\.0\.0\.1:9/test\.et\.jsonl .*xlgap data get "
                                        r"xcopa --from DIR"):
        load_dataset("xcopa")
    assert catalog.cached_path("xcopa") is None


def test_a_checksum_mismatch_stops_get_dataset(server, monkeypatch) -> None:
    base, state = server
    entry = _served(catalog.CATALOG["eclektic"], base, state, FIXTURES, pin=True)
    state.files["/eclektic_main.jsonl"] += b"\n"  # the server now sends other bytes
    monkeypatch.setitem(catalog.CATALOG, "eclektic", entry)
    with pytest.raises(ChecksumError, match=r"eclektic_main\.jsonl: sha256 mismatch: expected"):
        get_dataset("eclektic")
    assert catalog.cached_path("eclektic") is None


def _bmlama_files(folder: Path, langs: tuple[str, ...]) -> Path:
    """BMLAMA's published TSV layout (header Prompt, Ans, Candidate Ans, Subject)."""
    folder.mkdir(parents=True)
    for lang in langs:
        (folder / f"{lang}.tsv").write_text(
            "Prompt\tAns\tCandidate Ans\tSubject\n"
            f"[{lang}] X was born in <mask>.\tParis\tLondon, Paris\tX\n"
            f"[{lang}] Y died in <mask>.\tRome\tRome, Oslo, Kyiv\tY\n", encoding="utf-8")
    return folder


def _pinned_to(entry: catalog.DatasetInfo, folder: Path) -> catalog.DatasetInfo:
    """The entry with its pins replaced by the sha256 of the files in ``folder``."""
    return replace(entry, files=tuple(replace(f, sha256=sha((folder / f.name).read_bytes()))
                                      for f in entry.files))


def test_get_dataset_from_a_folder_needs_no_network(tmp_path: Path, cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    local = _bmlama_files(tmp_path / "copy", catalog.BMLAMA17_LANGS)
    monkeypatch.setitem(catalog.CATALOG, "bmlama17",
                        _pinned_to(catalog.CATALOG["bmlama17"], local))
    path = get_dataset("bmlama17", from_dir=local)
    ds = load_dataset("bmlama17")
    assert path.name == "bmlama17" and len(ds.languages) == 17
    assert [it.id for it in ds.items] == ["bmlama17-0", "bmlama17-1"]
    manifest = catalog.read_manifest("bmlama17")
    assert manifest is not None and manifest["fetched_from"] == str(local)
    assert manifest["pinned"] is True and all(f["pinned"] for f in manifest["files"])
    assert [f["from"] for f in manifest["files"]] == \
        [str(local / f"{lang}.tsv") for lang in catalog.BMLAMA17_LANGS]
    (local / "vi.tsv").unlink()
    with pytest.raises(DataError, match=r"no file named vi\.tsv \(1 of 17 missing\)"):
        get_dataset("bmlama17", out=tmp_path / "other", from_dir=local)
    assert not (tmp_path / "other" / "manifest.json").exists()


def test_a_copy_that_is_not_the_published_bytes_is_refused(tmp_path: Path) -> None:
    """The real pins: made-up TSVs in BMLAMA's layout are refused, naming both hashes."""
    local = _bmlama_files(tmp_path / "copy", catalog.BMLAMA17_LANGS)
    with pytest.raises(ChecksumError) as err:
        get_dataset("bmlama17", out=tmp_path / "out", from_dir=local)
    published = catalog.CATALOG["bmlama17"].files[0].sha256
    message = str(err.value)
    assert message.startswith("ar.tsv: sha256 mismatch") and "refused" in message
    assert published in message and sha((local / "ar.tsv").read_bytes()) in message
    assert catalog.cached_path("bmlama17", tmp_path / "out") is None


def test_the_pins_are_the_repositories_latest_commits() -> None:
    """BMLAMA at the commit with the fixed zh/he files, XCOPA at the one where Quechua is
    test.qu.jsonl; every file of the three sets has its sha256."""
    from xlgap.data.published import FILES, REPOS

    for name, count in (("bmlama17", 17), ("bmlama53", 53), ("xcopa", 11)):
        entry = catalog.CATALOG[name]
        assert entry.revision == REPOS[name][1] and len(entry.files) == count
        assert all(f.sha256 == FILES[name][f.name].sha256 and entry.revision in f.url
                   for f in entry.files)
        assert entry.summary()["pinned"] is True
    assert catalog.CATALOG["bmlama17"].revision.startswith("13c9d46c")
    qu = next(f for f in catalog.CATALOG["xcopa"].files if f.name == "test.qu.jsonl")
    assert qu.url.endswith("/data/qu/test.qu.jsonl")


# -- converters on the published schemas ----------------------------------------------------


def test_eclektic_keeps_each_question_s_source_language(tmp_path: Path) -> None:
    out = tmp_path / "e.jsonl"
    converters.eclektic({"eclektic_main.jsonl": FIXTURES / "eclektic_main.jsonl"}, out)
    ds = load_dataset(out)
    assert ds.languages == ["en", "he", "ja"]
    assert [it.source for it in ds.items] == ["he", "ja"]
    assert all(it.is_open for it in ds.items)
    assert ds.items[1].meta["url"].startswith("https://ja.wikipedia.org")
    assert ds.subset(1, ["he", "en"]).items[0].source == "he"  # kept through subsets
    groups = ds.by_source()  # one run per source language measures transfer from it
    assert {src: [it.id for it in g.items] for src, g in groups.items()} == \
        {"he": ["17"], "ja": ["18"]}
    assert groups["ja"].name == "e-from-ja" and groups["ja"].languages == ds.languages
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q_id": 1, "original_lang": "ko", "en_q": "Q?", "en_a": "A"}\n')
    with pytest.raises(DataError, match="no ko_q"):
        converters.eclektic({"eclektic_main.jsonl": bad}, tmp_path / "x.jsonl")


def _mmlu_tar(path: Path, subjects: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for subject, body in subjects.items():
            info = tarfile.TarInfo(f"data/test/{subject}_test.csv")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def test_mmmlu_keeps_four_lettered_options_and_aligns_by_subject(tmp_path: Path) -> None:
    english = (FIXTURES / "mmlu_test.csv").read_bytes()
    files = {"data.tar": _mmlu_tar(tmp_path / "data.tar", {
        "abstract_algebra": english, "anatomy": b"Where is the heart?,Chest,Head,Leg,Arm,A\n"})}
    for locale in converters.MMMLU_LOCALES:
        files[f"mmlu_{locale}.csv"] = FIXTURES / "mmlu_DE-DE.csv"
    out = tmp_path / "m.jsonl"
    converters.mmmlu(files, out)
    ds = load_dataset(out)
    assert len(ds.languages) == 15 and "es-419" in ds.languages and "pt-BR" in ds.languages
    assert [it.id for it in ds.items] == ["abstract_algebra-0", "abstract_algebra-1",
                                          "anatomy-0"]
    first = ds.items[0]
    assert first["en"].is_mc and first["en"].letters == ("A", "B", "C", "D")
    assert first["en"].gold_letter == "B" and first["de"].gold_letter == "B"
    assert first["de"].prompt == "Was ist 2+2?" and first.meta["subject"] == "abstract_algebra"
    files["data.tar"] = _mmlu_tar(tmp_path / "short.tar", {"abstract_algebra": english})
    with pytest.raises(DataError, match="subject anatomy has 1 questions, English has 0"):
        converters.mmmlu(files, tmp_path / "n.jsonl")


def _flores_tar(path: Path, codes: tuple[str, ...], n: int = 3) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for split in ("dev", "devtest"):
            for code in (*codes, "fuv_Latn"):  # a language the subset leaves out
                body = "".join(f"{split} {code} sentence {i}.\n" for i in range(n)).encode()
                info = tarfile.TarInfo(f"flores200_dataset/{split}/{code}.{split}")
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return path


def test_flores200_keeps_sentence_alignment(tmp_path: Path) -> None:
    tar = _flores_tar(tmp_path / "f.tar.gz", converters.FLORES_CODES)
    out = tmp_path / "flores200"
    converters.flores200({"flores200_dataset.tar.gz": tar}, out)
    ds = load_dataset(out)
    assert len(ds.languages) == 13 and "zh-Hans" in ds.languages and "fuv" not in ds.languages
    assert ds.original_codes["en"] == "eng_Latn"
    assert ds.items[2]["ja"].prompt == "devtest jpn_Jpan sentence 2."  # line i everywhere
    assert ds.items[2]["en"].prompt == "devtest eng_Latn sentence 2."
    short = _flores_tar(tmp_path / "s.tar.gz", converters.FLORES_CODES[:-1])
    with pytest.raises(DataError, match="no devtest file for tur_Latn"):
        converters.flores200({"flores200_dataset.tar.gz": short}, tmp_path / "g")


def test_xcopa_gives_two_lettered_options_aligned_by_idx(tmp_path: Path) -> None:
    files = {}
    for lang in converters.XCOPA_LANGS:
        files[f"test.{lang}.jsonl"] = FIXTURES / "test.et.jsonl"
    out = tmp_path / "x.jsonl"
    converters.xcopa(files, out)
    ds = load_dataset(out)
    assert ds.languages == list(converters.XCOPA_LANGS)
    item = ds.items[0]
    assert item.id == "xcopa-1" and item["et"].is_mc and item["et"].gold_letter == "B"
    assert item["qu"].prompt.endswith("(effect)") and item.meta["question"] == "effect"


# -- the catalogue and the CLI ------------------------------------------------------------


def test_every_entry_is_complete_and_honest_about_what_is_pinned() -> None:
    assert {"bmlama17", "bmlama53", "eclektic", "mmmlu", "global-mmlu", "flores200", "xcopa"} \
        <= set(catalog.names())
    for entry in catalog.list_datasets():
        assert entry["licence"] and entry["citation"] and entry["source"].startswith("https")
        assert entry["files"] and all(f["url"].startswith("https://") for f in entry["files"])
        for f in entry["files"]:
            # a sha256 is either a real one or None (recorded on first download), never made up
            assert f["sha256"] is None or len(f["sha256"]) == 64
        assert entry["pinned"] == all(f["sha256"] for f in entry["files"])
        for remote in catalog.info(entry["name"]).files:
            assert remote.sha256 or remote.unpinned  # an unpinned file says why
        if entry["revision"] not in (None, "main"):
            assert len(entry["revision"]) == 40
            assert all(entry["revision"] in f["url"] for f in entry["files"])
        assert entry["cached"] is None


def test_data_list_and_get_from_the_command_line(tmp_path: Path, capsys) -> None:
    assert xlgap.cli.run(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert "bmlama17" in listing and "xlgap data get eclektic" in listing
    local = tmp_path / "copy"
    local.mkdir()
    shutil.copy(FIXTURES / "eclektic_main.jsonl", local)
    assert xlgap.cli.run(["data", "get", "eclektic", "--from", str(local)]) == 0
    out = capsys.readouterr().out
    assert "2 items in 3 languages" in out and "checksums recorded on this download" in out
    assert xlgap.cli.run(["data", "list"]) == 0
    assert "eclektic.jsonl" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        xlgap.cli.main(["data", "get", "nope"])
    assert "unknown data set 'nope'" in capsys.readouterr().err


def test_formats_are_registered_from_their_modules() -> None:
    assert [f.name for f in formats()] == ["bmlama", "sentences", "jsonl", "table"]


def test_item_source_in_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"id": "a", "source": "ja", "langs": {
        "en": {"prompt": "Q?", "answers": ["A"]}, "ja": {"prompt": "Q？", "answers": ["A"]}}})
        + "\n", encoding="utf-8")
    assert load_dataset(path).items[0].source == "ja"
    path.write_text(json.dumps({"id": "a", "source": "fr", "langs": {
        "en": {"prompt": "Q?"}}}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="'source' 'fr' is not one of the item's languages"):
        load_dataset(path)


def test_a_study_names_data_sets_and_maps_their_columns(tmp_path: Path) -> None:
    from xlgap.cli.study import load_study

    study = tmp_path / "s.toml"
    study.write_text("""
analyses = ["sample"]
[[models]]
model = "embedded"
[[data]]
data = "eclektic"
[[data]]
data = "hf:org/quiz@test"
[data.map]
id = "qid"
prompt = "question"
lang = "language"
""", encoding="utf-8")
    steps = load_study(study).steps
    assert [s.config.data for s in steps] == ["eclektic", "hf:org/quiz@test"]
    assert steps[1].config.data_map == "id=qid,prompt=question,lang=language"
    assert catalog.cached_path("eclektic") is None  # nothing fetched by reading the study

"""The papers' benchmarks by name: ``get_dataset("bmlama17")`` and ``list_datasets()``.

Each entry names its official files (URL, pinned revision, sha256 where one is known), its
licence and citation, and a converter into one of xlgap's formats
(:mod:`xlgap.data.converters`). ``get_dataset`` fetches the files (or takes them from a
folder, ``from_dir``), verifies them, converts them once into
``$XLGAP_CACHE/datasets/<name>/`` and writes ``manifest.json`` beside the data: source,
revision, licence, citation, item and language counts, the sha256 of every file read, and
whether each is pinned (and why not, where it is not).

BMLAMA-17, BMLAMA-53 and XCOPA are pinned byte for byte (:mod:`xlgap.data.published`): a
download or a ``--from`` copy with another sha256 is refused, naming both hashes. Files on
the Hugging Face hub are fetched by the hub's client (:mod:`xlgap.data.hub`); their sha256
could not be computed where the catalogue was written (no network), so it is only recorded,
with the commit the file was read at. Nothing under its final name is ever half-written:
files are renamed into place once complete, and the manifest is written last.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import xlgap.data.converters as conv
from xlgap.data.converters import (
    FLORES_CODES,
    GLOBAL_MMLU_LANGS,
    MMMLU_LOCALES,
    XCOPA_LANGS,
)
from xlgap.data.download import check_sha256, fetch
from xlgap.data.formats import find_format
from xlgap.data.hub import HubFile, hub_download
from xlgap.data.published import FILES, REPOS
from xlgap.errors import ConfigError, DataError
from xlgap.paths import datasets_root
from xlgap.registry import Registry

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class RemoteFile:
    url: str  # where it is published (a hub file: its web address, for people to follow)
    name: str  # the file's name in the download folder and in a --from folder
    sha256: str | None = None  # None: not pinned here; recorded in the manifest
    hub: HubFile | None = None  # fetched by the Hugging Face hub's client, not by URL
    unpinned: str = ""  # sha256 None: why (shown in the manifest)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    measures: str  # what it measures, one line (docs table, `xlgap data list`)
    languages: tuple[str, ...]
    items: str  # how many items, as published ("6,792 per language")
    licence: str
    citation: str
    homepage: str
    revision: str | None  # commit or tag the URLs are pinned to; None: a fixed release file
    files: tuple[RemoteFile, ...]
    output: str  # the converted data, relative to the data set's folder
    convert: Callable[[dict[str, Path], Path], None]
    notes: str = ""
    needs: tuple[str, ...] = field(default=())  # extra Python packages the converter needs

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "measures": self.measures,
                "languages": list(self.languages), "items": self.items,
                "licence": self.licence, "citation": self.citation,
                "source": self.homepage, "revision": self.revision,
                "files": [{"name": f.name, "url": f.url, "sha256": f.sha256}
                          for f in self.files],
                "pinned": all(f.sha256 for f in self.files),
                "notes": self.notes}


# -- the catalogue --------------------------------------------------------------------------

def _github(name: str) -> tuple[str, tuple[RemoteFile, ...]]:
    """The pinned commit and files of a GitHub-hosted set (:mod:`xlgap.data.published`)."""
    repo, revision = REPOS[name]
    return revision, tuple(
        RemoteFile(f"https://raw.githubusercontent.com/{repo}/{revision}/{pub.path}", fname,
                   pub.sha256) for fname, pub in FILES[name].items())


_NO_NETWORK = "no network where the catalogue was written, so its sha256 could not be computed"


def _hub(repo_id: str, revision: str, path: str, name: str, why: str) -> RemoteFile:
    return RemoteFile(f"https://huggingface.co/datasets/{repo_id}/resolve/{revision}/{path}",
                      name, None, HubFile(repo_id, path, revision), why)


BMLAMA17_LANGS = ("ar", "ca", "el", "en", "es", "fa", "fr", "he", "hu", "ja", "ko", "nl",
                  "ru", "tr", "uk", "vi", "zh")
BMLAMA53_LANGS = ("af", "ar", "az", "be", "bg", "bn", "ca", "ceb", "cs", "cy", "da", "de",
                  "el", "en", "es", "et", "eu", "fa", "fi", "fr", "ga", "gl", "he", "hi", "hr",
                  "hu", "hy", "id", "it", "ja", "ka", "ko", "la", "lt", "lv", "ms", "nl", "pl",
                  "pt", "ro", "ru", "sk", "sl", "sq", "sr", "sv", "ta", "th", "tr", "uk", "ur",
                  "vi", "zh")
_BMLAMA_CITE = ("Jirui Qi, Raquel Fernández, Arianna Bisazza. Cross-Lingual Consistency of "
                "Factual Knowledge in Multilingual Language Models. EMNLP 2023.")

_ECLEKTIC_REV = "86650a00986420df9939b5f29d256aebad04c767"
ECLEKTIC_LANGS = ("de", "en", "es", "fr", "he", "hi", "id", "it", "ja", "ko", "pt", "zh")

_MMMLU_REV = "main"  # no commit sha could be looked up here; see DatasetInfo.notes


_GLOBAL_MMLU_REV = "471a3c56f301ec6d1a4561f62c7dfd567fd021c9"


def _bmlama(name: str, langs: tuple[str, ...], items: str) -> DatasetInfo:
    revision, files = _github(name)
    if [f.name for f in files] != [f"{lang}.tsv" for lang in langs]:  # a catalogue bug
        raise AssertionError(f"{name}: the pinned files are not the languages' TSVs")
    return DatasetInfo(
        name=name, title=f"BMLAMA-{len(langs)}",
        measures="factual knowledge (cloze with candidates), cross-lingual consistency",
        languages=langs, items=items, licence="Apache-2.0", citation=_BMLAMA_CITE,
        homepage="https://github.com/Betswish/Cross-Lingual-Consistency",
        revision=revision, files=files, output=name, convert=conv.copy_tsv_dir,
        notes="Pinned to the authors' latest commit, which fixes zh.tsv (e.g. 'capital' as "
              "a city, not a letter) and he.tsv (doubled quoting); every file's sha256 is "
              "checked.")


def _checked(obj: Any) -> DatasetInfo:
    if not isinstance(obj, DatasetInfo):
        raise ConfigError(f"a data set must be a xlgap.data.catalog.DatasetInfo, got {obj!r}")
    return obj


#: data set name -> :class:`DatasetInfo`. Another package adds a data set through the
#: entry-point group ``xlgap.datasets`` (``myset = "package.module:INFO"``, a DatasetInfo);
#: ``xlgap data list``, ``xlgap data get`` and ``--data myset`` see it once installed.
CATALOG: Registry[DatasetInfo] = Registry("data set", "xlgap.datasets",
                                          convert=_checked)
for _entry in (
    _bmlama("bmlama17", BMLAMA17_LANGS, "6,792 per language"),
    _bmlama("bmlama53", BMLAMA53_LANGS, "3,070 items over 53 languages"),
    DatasetInfo(
        name="eclektic", title="ECLeKTic",
        measures="cross-lingual knowledge transfer: open questions whose fact comes from one "
                 "language's Wikipedia (per-item source language)",
        languages=ECLEKTIC_LANGS, items="384 questions x 12 languages (paper)",
        licence="CC-BY-4.0 (as published by Google; check the release page)",
        citation="Omer Goldman, Uri Shaham, Dan Malkin, et al. ECLeKTic: a Novel Challenge "
                 "Set for Evaluation of Cross-Lingual Knowledge Transfer. arXiv:2502.21228, "
                 "2025.",
        homepage="https://huggingface.co/datasets/ura-hcmut/ECLeKTic",
        revision=_ECLEKTIC_REV,
        files=(_hub("ura-hcmut/ECLeKTic", _ECLEKTIC_REV, "eclektic_main.jsonl",
                    "eclektic_main.jsonl", f"revision pinned to a commit; {_NO_NETWORK}"),),
        output="eclektic.jsonl", convert=conv.eclektic,
        notes="Google released ECLeKTic on Kaggle (login needed); the file is fetched from the "
              "Hugging Face copy that HELM pins (ura-hcmut/ECLeKTic at this revision)."),
    DatasetInfo(
        name="mmmlu", title="MMMLU (OpenAI) + MMLU English",
        measures="knowledge and reasoning, four lettered options (format mc)",
        languages=("en", *MMMLU_LOCALES.values()), items="14,042 per language",
        licence="MIT (MMMLU); MIT (MMLU)",
        citation="Dan Hendrycks, Collin Burns, Steven Basart, et al. Measuring Massive "
                 "Multitask Language Understanding. ICLR 2021. OpenAI, MMMLU (2024).",
        homepage="https://huggingface.co/datasets/openai/MMMLU",
        revision=_MMMLU_REV,
        files=(*(_hub("openai/MMMLU", _MMMLU_REV, f"test/mmlu_{loc}.csv", f"mmlu_{loc}.csv",
                      "not pinned: no commit of openai/MMMLU could be looked up where the "
                      "catalogue was written (no network), so 'main' is read; the commit "
                      f"read is recorded as resolved_revision; {_NO_NETWORK}")
                 for loc in MMMLU_LOCALES),
               RemoteFile("https://people.eecs.berkeley.edu/~hendrycks/data.tar",
                          "data.tar", unpinned="a release file with no published sha256; "
                          f"{_NO_NETWORK}")),
        output="mmmlu.jsonl", convert=conv.mmmlu,
        notes="MMMLU has no English; English comes from the original MMLU test set "
              "(data.tar). Rows are aligned by subject and position within the subject; "
              "the converter checks that every subject has the same count in every "
              "language. Not pinned: no commit of openai/MMMLU could be looked up without "
              "a network, so 'main' is read and the commit read is recorded."),
    DatasetInfo(
        name="global-mmlu", title="Global-MMLU (15 languages)",
        measures="knowledge and reasoning, four lettered options (format mc), with culturally "
                 "sensitive (CS) / agnostic (CA) labels in meta",
        languages=GLOBAL_MMLU_LANGS, items="14,042 per language",
        licence="Apache-2.0",
        citation="Shivalika Singh, Angelika Romanou, Clémentine Fourrier, et al. Global MMLU: "
                 "Understanding and Addressing Cultural and Linguistic Biases in "
                 "Multilingual Evaluation. arXiv:2412.03304, 2024.",
        homepage="https://huggingface.co/datasets/CohereForAI/Global-MMLU",
        revision=_GLOBAL_MMLU_REV,
        files=tuple(_hub("CohereForAI/Global-MMLU", _GLOBAL_MMLU_REV,
                         f"{lang}/test-00000-of-00001.parquet", f"{lang}.test.parquet",
                         f"revision pinned to a commit; {_NO_NETWORK}")
                    for lang in GLOBAL_MMLU_LANGS),
        output="global-mmlu.jsonl", convert=conv.global_mmlu, needs=("pyarrow",),
        notes="Parquet files: converting them needs pyarrow (pip install 'xlgap[hf]'). "
              "Aligned by sample_id, English included."),
    DatasetInfo(
        name="flores200", title="FLORES-200 devtest (13 languages)",
        measures="parallel sentences (ILO, similarity, logit lens on natural text)",
        languages=FLORES_CODES, items="1,012 sentences per language",
        licence="CC-BY-SA-4.0",
        citation="NLLB Team, Marta R. Costa-jussà, James Cross, et al. No Language Left "
                 "Behind: Scaling Human-Centered Machine Translation. 2022.",
        homepage="https://github.com/facebookresearch/flores/tree/main/flores200",
        revision=None,
        files=(RemoteFile("https://dl.fbaipublicfiles.com/nllb/flores200_dataset.tar.gz",
                          "flores200_dataset.tar.gz", unpinned="a fixed release archive with "
                          f"no published sha256; {_NO_NETWORK}"),),
        output="flores200", convert=conv.flores200,
        notes="A fixed release archive (2022-06-30); only the listed languages' devtest "
              "files are extracted, line i of every file is sentence i."),
    DatasetInfo(
        name="xcopa", title="XCOPA test",
        measures="causal commonsense reasoning, two lettered options (format mc)",
        languages=XCOPA_LANGS, items="500 per language",
        licence="CC-BY-4.0",
        citation="Edoardo M. Ponti, Goran Glavaš, Olga Majewska, Qianchu Liu, Ivan Vulić, "
                 "Anna Korhonen. XCOPA: A Multilingual Dataset for Causal Commonsense "
                 "Reasoning. EMNLP 2020.",
        homepage="https://github.com/cambridgeltl/xcopa",
        revision=_github("xcopa")[0], files=_github("xcopa")[1],
        output="xcopa.jsonl", convert=conv.xcopa,
        notes="Pinned to the repository's latest commit (CRLF line ends; Quechua is "
              "test.qu.jsonl there). XCOPA has no English file; choose --source among its "
              "languages. The "
              "question type (cause/effect) is added to each prompt as an English tag, the "
              "same in every language."),
):
    CATALOG.register(_entry.name, _entry)


def names() -> list[str]:
    return list(CATALOG)


def is_known(name: str) -> bool:
    return isinstance(name, str) and name in CATALOG


def info(name: str) -> DatasetInfo:
    if name not in CATALOG:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(CATALOG)}")
    try:
        return CATALOG[name]
    except ConfigError as exc:  # a plugin's entry that does not load
        raise DataError(str(exc)) from exc


def dataset_dir(name: str, out: str | Path | None = None) -> Path:
    return Path(out).expanduser() if out else datasets_root() / name


def cached_path(name: str, out: str | Path | None = None) -> Path | None:
    """The converted data when it is complete (its manifest written), else None."""
    folder = dataset_dir(name, out)
    data = folder / info(name).output
    return data if (folder / MANIFEST).is_file() and data.exists() else None


def read_manifest(name: str, out: str | Path | None = None) -> dict[str, Any] | None:
    path = dataset_dir(name, out) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def list_datasets() -> list[dict[str, Any]]:
    """Every catalogue entry (see :meth:`DatasetInfo.summary`) with ``cached``: the path of
    the converted copy, or None."""
    out = []
    for name in CATALOG:
        entry = info(name)
        cached = cached_path(name)
        out.append({**entry.summary(), "cached": str(cached) if cached else None})
    return out


def _find_local(from_dir: Path, remote: RemoteFile) -> Path | None:
    """``from_dir/NAME``, else the file under its published path (a copy of the repository
    or of the Hub folder: ``en/test-00000-of-00001.parquet``), else one ``NAME`` anywhere
    below ``from_dir``."""
    direct = from_dir / remote.name
    if direct.is_file():
        return direct
    parts = [p for p in urlparse(remote.url).path.split("/") if p]
    for k in range(min(len(parts), 4), 1, -1):  # the longest published tail first
        candidate = from_dir.joinpath(*parts[-k:])
        if candidate.is_file():
            return candidate
    matches = sorted(from_dir.rglob(remote.name))
    if len(matches) > 1:
        raise DataError(f"{from_dir}: several files named {remote.name!r} "
                        f"({', '.join(str(m) for m in matches[:3])}); keep one")
    return matches[0] if matches else None


def _gather(entry: DatasetInfo, folder: Path, from_dir: Path | None
            ) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """The raw files (downloaded into ``folder/raw`` or found in ``from_dir``), verified."""
    if from_dir is not None:
        found = {r.name: _find_local(from_dir, r) for r in entry.files}
        missing = [r for r in entry.files if found[r.name] is None]
        if missing:
            shown = ", ".join(r.name for r in missing[:8])
            more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            raise DataError(f"--from {from_dir}: no file named {shown}{more} ({len(missing)} "
                            f"of {len(entry.files)} missing); they are published at "
                            f"{missing[0].url.rsplit('/', 1)[0]}/")
    files: dict[str, Path] = {}
    record = []
    for remote in entry.files:
        row: dict[str, Any] = {"name": remote.name, "url": remote.url}
        if from_dir is not None:
            path = found[remote.name]
            assert path is not None  # checked above
            digest = check_sha256(path, remote.sha256, str(path))
            row["from"] = str(path.resolve())  # the folder it came from, wherever run
        elif remote.hub is not None:
            path, commit = hub_download(remote.hub, name=remote.name, dataset=entry.name)
            digest = check_sha256(path, remote.sha256, str(path))
            row["resolved_revision"] = commit
        else:
            path = folder / "raw" / remote.name
            digest = fetch(remote.url, path, remote.sha256, dataset=entry.name)
        files[remote.name] = path
        row.update(sha256=digest, pinned=remote.sha256 is not None)
        if remote.sha256 is None:
            row["why_not_pinned"] = remote.unpinned or "no sha256 known to xlgap"
        record.append(row)
    return files, record


def _counts(data: Path) -> tuple[int, list[str]]:
    fmt = find_format(data)
    if fmt is None:  # a converter bug, not a user error
        raise DataError(f"{data}: the converted data is in no known format")
    dataset = fmt.load(data, on_missing="keep", on_error="fail")
    return len(dataset.items), list(dataset.languages)


def get_dataset(name: str, out: str | Path | None = None,
                from_dir: str | Path | None = None) -> Path:
    """The converted data of catalogue entry ``name`` (a directory or a .jsonl file).

    Cached in ``$XLGAP_CACHE/datasets/<name>/`` (or ``out``); fetched and converted on
    first use, from the official URLs or from the files in ``from_dir``. Later calls
    return the cached copy without touching the network.
    """
    entry = info(name)
    folder = dataset_dir(name, out)
    cached = cached_path(name, out)
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(from_dir).expanduser() if from_dir else None
    if source is not None and not source.is_dir():
        raise DataError(f"--from {source}: not a directory")
    for module in entry.needs:  # before any download: fail fast, say what to install
        try:
            __import__(module)
        except ImportError:
            raise DataError(f"converting {name} needs the Python package {module!r} "
                            "(pip install 'xlgap[hf]')") from None
    files, record = _gather(entry, folder, source)
    # Convert into a scratch folder beside the target, then rename: a killed conversion
    # leaves only the scratch folder, never a partial data set under its real name.
    scratch = Path(tempfile.mkdtemp(prefix=".convert-", dir=folder))
    try:
        staged = scratch / entry.output
        entry.convert(files, staged)
        n_items, languages = _counts(staged)
        final = folder / entry.output
        if final.is_dir():
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
        os.replace(staged, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    manifest = {
        "format": "dataset_manifest", "format_version": 1, **entry.summary(),
        "files": record, "pinned": all(r["pinned"] for r in record),
        "data": entry.output, "items": n_items,
        "languages": languages, "language_count": len(languages),
        "items_published": entry.items,
        "fetched_from": str(Path(source).resolve()) if source else "download",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
    log.info("%s: %d items in %d languages at %s", name, n_items, len(languages), final)
    return final

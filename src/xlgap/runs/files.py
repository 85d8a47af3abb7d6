"""The run directory's files: their names, JSON Lines appended safely (flushed, fsynced,
a torn last line cut on reopening), the writer's lock, and the reads a resumed run needs
(:func:`read_meta`, :func:`done_keys`)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from xlgap.errors import DataError

FORMAT = "run"  # the format tag (older runs say "xlgap-run/1", still read)
RUN_FILE = "run.json"
ITEMS_FILE = "items.jsonl"
SAMPLES_FILE = "samples.jsonl"
DISTRIBUTIONS_FILE = "distributions.jsonl"
EMBEDDINGS_FILE = "answer_embeddings.npz"
SAMPLE_EMBEDDINGS_FILE = "sample_embeddings.npz"
OTHER = -1  # answer index of a response that matches no candidate
LOCK_FILE = ".lock"
MISSING = -2  # fill value in ``Run.samples`` for an (item, language) with no data
_PROB_TOLERANCE = 1e-3  # how far a distribution's sum may be from 1 before it is an error


# --------------------------------------------------------------------------------------
# JSON Lines helpers


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each line; tolerate only a torn final line.

    A final line without a newline that does not parse is what a crash mid-write leaves:
    it is skipped. Any other unparsable line, or a line that is not a JSON object, is a
    :class:`DataError` naming the file and the line.
    """
    with path.open("rb") as fh:
        data = fh.read()
    if not data:
        return
    lines = data.split(b"\n")
    torn_possible = not data.endswith(b"\n")
    last = len(lines) - 1
    for idx, raw in enumerate(lines):
        lineno = idx + 1
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if torn_possible and idx == last:
                return  # the write a crash interrupted
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got "
                            f"{type(obj).__name__}")
        yield lineno, obj


def _repair_tail(path: Path) -> None:
    """Cut a torn final line (no trailing newline) so that appends start on a fresh line.

    A final line that lacks its newline but parses (a file written by another tool) is
    kept and given the newline instead.
    """
    if not path.exists():
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            json.loads(tail.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            fh.truncate(cut)
        else:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def _append_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append rows as JSON Lines, flush and fsync; return how many were written."""
    lines = [json.dumps(dict(r), ensure_ascii=False, separators=(",", ":")) + "\n"
             for r in rows]
    if not lines:
        return 0
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(lines))
        fh.flush()
        os.fsync(fh.fileno())
    return len(lines)


def _require(obj: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str
             ) -> Any:
    """``obj[key]`` checked against ``types`` (a JSON ``true`` never passes as a number)."""
    if key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise DataError(f"{where}: field {key!r} has type {type(value).__name__}")
    return value


def _lock_dir(run_dir: Path) -> FileLock:
    """Take the run directory's exclusive OS lock (it goes with a crashed writer's process:
    never stale); the holder notes its process id in the file for a second writer's error."""
    lock, path = FileLock(str(run_dir / LOCK_FILE)), run_dir / LOCK_FILE
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        raise DataError(f"{run_dir} is being written by {holder or 'another process'}; wait "
                        "for it to finish, or choose another --out") from None
    with contextlib.suppress(OSError):  # a note only (Windows locks the file's first byte)
        path.write_text(f"process {os.getpid()}", encoding="utf-8")
    return lock


# --------------------------------------------------------------------------------------
# writing


def done_keys(run_dir: str | os.PathLike[str]) -> set[tuple[str, str]]:
    """Complete ``(item, lang)`` pairs of the run in ``run_dir`` (see RunWriter)."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if meta.get("mode") == "exact":
        path = run_dir / DISTRIBUTIONS_FILE
        if not path.exists():
            return set()
        return {(str(o.get("item")), str(o.get("lang"))) for _, o in _iter_jsonl(path)}
    path = run_dir / SAMPLES_FILE
    if not path.exists():
        return set()
    k = int(meta.get("samples") or 0)
    seen: dict[tuple[str, str], set[int]] = {}
    for _, o in _iter_jsonl(path):
        s = o.get("sample")
        if isinstance(s, int) and not isinstance(s, bool):
            seen.setdefault((str(o.get("item")), str(o.get("lang"))), set()).add(s)
    return {key for key, idx in seen.items() if len(idx & set(range(k))) == k}


# --------------------------------------------------------------------------------------
# reading


def read_meta(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``run.json``."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise DataError(f"{path}: no run.json (not a run directory)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object")
    fmt = meta.get("format", FORMAT)
    if fmt != FORMAT and not str(fmt).startswith("xlgap-run/"):
        raise DataError(f"{path}: unknown format {fmt!r}")
    if meta.get("mode", "sample") not in ("sample", "exact"):
        raise DataError(f"{path}: mode must be 'sample' or 'exact', not {meta.get('mode')!r}")
    if "source" not in meta:
        raise DataError(f"{path}: missing field 'source'")
    return meta

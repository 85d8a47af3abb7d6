"""Persistent store of every model result, keyed by (model fingerprint, request hash).

SQLite in WAL mode holds the index and small values; arrays above a size threshold go
to ``.npy`` files the index points to. Rows are written as each batch finishes, so a
run killed mid-way loses at most the batch in flight, and a rerun computes nothing
twice. Several processes may share one store: SQLite serialises writers, array files
are written to a temporary name and renamed, and inserts are idempotent.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

ARRAY_FILE_THRESHOLD = 256 * 1024  # bytes; larger arrays live in files, not in the DB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    model   TEXT NOT NULL,
    key     TEXT NOT NULL,
    op      TEXT NOT NULL,
    kind    TEXT NOT NULL,          -- 'json' | 'array' | 'file'
    value   BLOB,
    created REAL NOT NULL,
    PRIMARY KEY (model, key)
);
"""


#: Version of the algorithm behind each operation, part of every key: a change to how an
#: operation computes its result bumps it, so the store never serves results of old code.
#: score 2: joint tokenization of prompt + continuation, and normalisation.
ALGORITHM_VERSIONS: dict[str, int] = {"generate": 1, "score": 2, "hidden_states": 1}


def request_key(op: str, payload: Mapping[str, Any]) -> str:
    """Stable hash of an operation, its algorithm version and its arguments (canonical
    JSON, sorted keys)."""
    version = ALGORITHM_VERSIONS.get(op, 1)
    blob = json.dumps({"op": op, "op_version": version, **payload}, sort_keys=True,
                      ensure_ascii=False,
                      separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Store:
    """A result cache shared by runs, processes and backends."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "arrays").mkdir(exist_ok=True)
        self.path = self.root / "store.sqlite"
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False,
                                     isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=60000")
        # Switching a new database to WAL takes an exclusive lock, and SQLite answers
        # "locked" at once (without its busy handler) when another process is doing the
        # same: retry for a while instead.
        for attempt in range(200):
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.executescript(_SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 199:
                    raise
                time.sleep(0.05 + random.random() * 0.1)
        self._conn.execute("PRAGMA synchronous=NORMAL")

    # -- reading -----------------------------------------------------------------------
    def get(self, model: str, key: str) -> Any | None:
        return self.get_many(model, [key]).get(key)

    def get_many(self, model: str, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        out: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT key, kind, value FROM results WHERE model=? AND key IN ({marks})",
                    [model, *chunk]).fetchall()
            for key, kind, value in rows:
                decoded = self._decode(kind, value)
                if decoded is not None:
                    out[key] = decoded
        return out

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])
            return int(self._conn.execute("SELECT COUNT(*) FROM results WHERE model=?",
                                          (model,)).fetchone()[0])

    # -- writing -----------------------------------------------------------------------
    def put(self, model: str, key: str, op: str, value: Any) -> None:
        self.put_many(model, op, {key: value})

    def put_many(self, model: str, op: str, values: Mapping[str, Any]) -> None:
        """Insert results in one transaction (idempotent: an existing key is kept)."""
        rows = [(model, key, op, *self._encode(model, key, value), time.time())
                for key, value in values.items()]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO results (model, key, op, kind, value, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- encoding ----------------------------------------------------------------------
    def _encode(self, model: str, key: str, value: Any) -> tuple[str, bytes | str]:
        if isinstance(value, np.ndarray):
            if value.nbytes <= ARRAY_FILE_THRESHOLD:
                buf = io.BytesIO()
                np.save(buf, value, allow_pickle=False)
                return "array", buf.getvalue()
            model_dir = self.root / "arrays" / hashlib.sha256(model.encode()).hexdigest()[:16]
            model_dir.mkdir(parents=True, exist_ok=True)
            final = model_dir / f"{key}.npy"
            if not final.exists():
                tmp = model_dir / f".{key}.{uuid.uuid4().hex}.tmp"
                with open(tmp, "wb") as fh:
                    np.save(fh, value, allow_pickle=False)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
            return "file", str(final.relative_to(self.root))
        return "json", json.dumps(value, ensure_ascii=False)

    def _decode(self, kind: str, value: bytes | str) -> Any | None:
        if kind == "json":
            return json.loads(value)
        if kind == "array":
            return np.load(io.BytesIO(value), allow_pickle=False)
        path = self.root / str(value)
        try:
            return np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, EOFError):
            return None  # a lost or torn array file counts as not cached: recompute it

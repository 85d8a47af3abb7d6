"""Hub-hosted benchmarks through the Hugging Face hub's own client, offline: a loopback
server on 127.0.0.1 answers as the hub does (``X-Repo-Commit``, ``ETag``, gated repositories)
and ``HF_ENDPOINT`` points the real ``huggingface_hub`` at it. Each ``xlgap`` runs in a
subprocess, so ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and ``HF_HOME`` are read the
way a user's shell sets them."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xlgap.data import catalog

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # what the server says "main" is


class _Hub:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # "/datasets/REPO/resolve/REV/PATH" -> bytes
        self.token: str | None = None  # gated: this bearer token is needed
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization


class _HubHandler(http.server.BaseHTTPRequestHandler):
    hub: _Hub

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, with_body: bool) -> None:
        hub = self.hub
        auth = self.headers.get("Authorization")
        hub.requests.append((self.command, self.path, auth))
        if hub.token is not None and auth != f"Bearer {hub.token}":
            self.send_response(403)
            self.send_header("X-Error-Code", "GatedRepo")
            self.send_header("X-Error-Message", "Access to this dataset is restricted")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = hub.files.get(self.path.replace("/resolve/main/", f"/resolve/{COMMIT}/"))
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        revision = self.path.split("/resolve/", 1)[1].split("/", 1)[0]
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT if revision == "main" else revision)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_GET(self) -> None:
        self._answer(True)


@pytest.fixture
def hub() -> Iterator[tuple[str, _Hub]]:
    state = _Hub()
    handler = type("H", (_HubHandler,), {"hub": state})
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


# `xlgap data get NAME [--out DIR]` as the command runs it, without importing the rest of the
# CLI (torch): a few seconds less per process
_GET = """
import sys
from xlgap.data.catalog import get_dataset, read_manifest
from xlgap.errors import DataError
name, out = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
try:
    get_dataset(name, out=out)
except DataError as exc:
    sys.exit(f"xlgap: error: {exc}")
m = read_manifest(name, out)
print(f"{m['items']} items in {m['language_count']} languages")
"""


def data_get(tmp_path: Path, name: str, out: Path | None = None, **env: str
             ) -> subprocess.CompletedProcess:
    full = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
            "XLGAP_CACHE": str(tmp_path / "cache"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    full.pop("HF_TOKEN", None)
    full.update(env)
    args = [name, *([str(out)] if out else [])]
    return subprocess.run([sys.executable, "-c", _GET, *args], env=full, capture_output=True,
                          text=True, timeout=120)


def _serve_eclektic(state: _Hub) -> bytes:
    remote = catalog.CATALOG["eclektic"].files[0]
    assert remote.hub is not None
    body = (FIXTURES / "eclektic_main.jsonl").read_bytes()
    state.files[f"/datasets/{remote.hub.repo_id}/resolve/{remote.hub.revision}/"
                f"{remote.hub.filename}"] = body
    return body


def test_eclektic_through_the_hub_client_gated_cached_and_offline(hub, tmp_path) -> None:
    base, state = hub
    body = _serve_eclektic(state)
    state.token = "secret"  # a gated set
    denied = data_get(tmp_path, "eclektic", HF_ENDPOINT=base)
    assert denied.returncode == 1, denied.stderr
    assert "gated" in denied.stderr and "HF_TOKEN" in denied.stderr
    assert "Traceback" not in denied.stderr

    got = data_get(tmp_path, "eclektic", HF_ENDPOINT=base, HF_TOKEN="secret")
    assert got.returncode == 0, got.stderr
    assert "2 items in 3 languages" in got.stdout
    assert all(auth == "Bearer secret" for _, _, auth in state.requests[-2:])
    manifest = json.loads((tmp_path / "cache" / "datasets" / "eclektic" / "manifest.json")
                          .read_text(encoding="utf-8"))
    (row,) = manifest["files"]
    revision = catalog.CATALOG["eclektic"].revision
    assert row["resolved_revision"] == revision and manifest["revision"] == revision
    assert row["sha256"] == hashlib.sha256(body).hexdigest() and not row["pinned"]
    # the file lies in the hub's own cache (HF_HOME), not in a copy of xlgap's
    blobs = list((tmp_path / "hf").rglob("eclektic_main.jsonl"))
    assert blobs and blobs[0].read_bytes() == body

    # offline, another xlgap cache, the same hub cache: converted again, nothing requested
    served = len(state.requests)
    offline = data_get(tmp_path, "eclektic", tmp_path / "again", HF_ENDPOINT=base,
                       HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert len(state.requests) == served

    # offline and nothing cached: says so, and how to get round it
    empty = data_get(tmp_path, "eclektic", tmp_path / "third", HF_ENDPOINT=base,
                     HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty"))
    assert empty.returncode == 1
    assert "HF_HUB_OFFLINE=1" in empty.stderr and "--from DIR" in empty.stderr
    assert len(state.requests) == served


def test_a_branch_is_recorded_as_the_commit_it_resolved_to(hub, tmp_path) -> None:
    """MMMLU is read at 'main' (no commit could be looked up here): the commit the hub
    served is what the manifest records."""
    base, state = hub
    state.files[f"/datasets/openai/MMMLU/resolve/{COMMIT}/test/mmlu_DE-DE.csv"] = \
        (FIXTURES / "mmlu_DE-DE.csv").read_bytes()
    code = ("from xlgap.data.hub import HubFile, hub_download; "
            "p, c = hub_download(HubFile('openai/MMMLU', 'test/mmlu_DE-DE.csv', 'main'), "
            "name='mmlu_DE-DE.csv', dataset='mmmlu'); print(c); print(p)")
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": base}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    commit, path = done.stdout.split()
    assert commit == COMMIT and Path(path).read_bytes() == (FIXTURES / "mmlu_DE-DE.csv"
                                                            ).read_bytes()
    entry = catalog.CATALOG["mmmlu"]
    assert entry.revision == "main"
    assert all("not pinned" in f.unpinned and "no network" in f.unpinned
               for f in entry.files if f.hub is not None)


def test_a_missing_file_on_the_hub_is_named(hub, tmp_path) -> None:
    base, _ = hub  # serves nothing
    done = data_get(tmp_path, "eclektic", HF_ENDPOINT=base)
    assert done.returncode == 1 and "ura-hcmut/ECLeKTic@" in done.stderr
    assert "Traceback" not in done.stderr

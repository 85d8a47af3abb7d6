"""Fetch one file over HTTP(S) into the cache, safely.

The file is streamed to ``NAME.part`` beside its destination, checked against its sha256
when one is known, and only then renamed into place, so the cache never holds a
half-written file under its real name. A ``.part`` left by a killed download is resumed with
an HTTP ``Range`` request; a server that ignores ranges sends the whole file again and the
download restarts. A checksum mismatch removes the ``.part`` file and raises an error
naming the file and both hashes.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from xlgap.errors import DataError

log = logging.getLogger(__name__)
CHUNK = 1 << 16
USER_AGENT = "xlgap (https://github.com/; data catalogue)"


class ChecksumError(DataError):
    """A downloaded or hand-placed file does not have the pinned sha256."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str | None, what: str, name: str = "") -> str:
    """The file's sha256; raises :class:`ChecksumError` when ``expected`` is given and
    differs (None: not pinned, the hash is only recorded). ``name`` is the file's name in
    messages (a download is checked while it is still called ``NAME.part``)."""
    actual = sha256_of(path)
    if expected is not None and actual != expected.lower():
        raise ChecksumError(f"{name or path.name}: sha256 mismatch: expected {expected}, "
                            f"got {actual} (from {what}; the file was removed)"
                            if name else
                            f"{path.name}: sha256 mismatch: expected {expected}, got "
                            f"{actual} ({path}); refused: not the published file")
    return actual


def no_network_hint(url: str, name: str, reason: object, dataset: str = "NAME") -> str:
    return (f"cannot download {url} ({reason}). Without a network, download it elsewhere, "
            f"put it in a folder as {name!r} (with the data set's other files) and run "
            f"xlgap data get {dataset} --from DIR")


def fetch(url: str, dest: Path, sha256: str | None = None, *, timeout: float = 60.0,
          dataset: str = "NAME") -> str:
    """Download ``url`` to ``dest`` (resuming a ``.part``), verify, rename; the sha256.

    An existing ``dest`` is only verified: the rename is the last step, so a file under
    its real name is always complete.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        return check_sha256(dest, sha256, url)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part is already whole (or longer): restart
            part.unlink()
            return fetch(url, dest, sha256, timeout=timeout, dataset=dataset)
        raise DataError(no_network_hint(url, dest.name, f"HTTP {exc.code} {exc.reason}",
                                        dataset)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(no_network_hint(url, dest.name, reason, dataset)) from None
    with response:
        resumed = have and response.status == 206
        if have and not resumed:
            log.info("%s: the server ignored the range request; downloading again", url)
        elif resumed:
            log.info("%s: resuming after %d bytes", url, have)
        length = response.headers.get("Content-Length")
        expected_size = int(length) + (have if resumed else 0) if length else None
        try:
            with part.open("ab" if resumed else "wb") as f:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
        except (OSError, http.client.HTTPException) as exc:
            # a dropped connection: keep the .part, the next run resumes from it
            raise DataError(f"{url}: download interrupted after {part.stat().st_size} "
                            f"bytes ({type(exc).__name__}); run the command again to "
                            "resume") from None
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DataError(f"{url}: download stopped at {size} of {expected_size} bytes; run the "
                        "command again to resume")
    try:
        digest = check_sha256(part, sha256, url, dest.name)
    except ChecksumError:
        part.unlink()  # a wrong file must not be resumed from
        raise
    os.replace(part, dest)
    return digest

"""Files of data sets on the Hugging Face hub, through the hub's own client.

``huggingface_hub.hf_hub_download(repo_type="dataset", revision=...)`` does the fetching, so
everything users set up for the hub applies unchanged: its cache (``HF_HOME``,
``HF_HUB_CACHE``; a file already there is not downloaded again), resumed downloads,
``HF_ENDPOINT`` for a mirror, ``HF_TOKEN`` (or ``hf auth login``) for gated sets and
``HF_HUB_OFFLINE=1`` to use only what the cache holds. Its errors become a
:class:`~xlgap.errors.DataError` that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xlgap.errors import DataError


@dataclass(frozen=True)
class HubFile:
    repo_id: str  # "ORG/NAME" of a data set repository
    filename: str  # its path inside the repository
    revision: str  # a commit (pinned) or a branch such as "main" (not pinned)


def resolved_commit(path: Path) -> str | None:
    """The commit a file of the hub's cache belongs to (``.../snapshots/COMMIT/FILE``)."""
    parts = path.parts
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "snapshots":
            return parts[k + 1]
    return None


def hub_download(remote: HubFile, *, name: str, dataset: str) -> tuple[Path, str | None]:
    """The file in the hub's cache (downloaded there when missing) and the commit it was read
    at. ``name``: the file's name in a ``--from`` folder, for the hint when offline."""
    # Imported here: only fetching a hub-hosted data set needs the client.
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{remote.repo_id}@{remote.revision}:{remote.filename} on {constants.ENDPOINT}"
    way_round = (f"or download it elsewhere, put it in a folder as {name!r} (with the data "
                 f"set's other files) and run xlgap data get {dataset} --from DIR")
    try:
        path = Path(hf_hub_download(remote.repo_id, remote.filename, repo_type="dataset",
                                    revision=remote.revision))
    except GatedRepoError:
        raise DataError(f"{where}: the data set is gated; accept its terms on the hub and set "
                        f"HF_TOKEN (or run `hf auth login`), {way_round}") from None
    except RepositoryNotFoundError:
        raise DataError(f"{where}: no such data set, or a private one: set HF_TOKEN to a "
                        f"token that can read it, {way_round}") from None
    except RevisionNotFoundError:
        raise DataError(f"{where}: the hub has no revision {remote.revision}") from None
    except LocalEntryNotFoundError:
        # HF_HUB_OFFLINE=1, or the hub could not be reached, and not in the hub's cache
        raise DataError(f"cannot fetch {where}: the hub could not be reached (or "
                        f"HF_HUB_OFFLINE=1) and the file is not in the hub's cache "
                        f"({constants.HF_HUB_CACHE}). Connect, {way_round}") from None
    except EntryNotFoundError:
        raise DataError(f"{where}: no such file at that revision") from None
    except (HfHubHTTPError, OSError) as exc:
        raise DataError(f"cannot fetch {where} ({type(exc).__name__}: {exc}); "
                        f"{way_round}") from None
    return path, resolved_commit(path)

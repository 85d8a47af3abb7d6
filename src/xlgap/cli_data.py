"""``xlgap data list`` and ``xlgap data get``: the benchmark catalogue from the command line.

Kept apart from cli.py so that the CLI package can take it over as one module.
"""

from __future__ import annotations

from xlgap.data.catalog import get_dataset, info, list_datasets, read_manifest


def cmd_data_list() -> int:
    """One line per catalogued data set: name, languages, items, licence, where it is."""
    rows = [("name", "languages", "items", "licence", "cached")]
    for entry in list_datasets():
        rows.append((entry["name"], str(len(entry["languages"])), entry["items"],
                     entry["licence"].split(" ")[0], entry["cached"] or "no (xlgap data get "
                     f"{entry['name']})"))
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print("\nEach name works wherever a data path does (--data bmlama17, a study's data = "
          "\"...\"), fetched on first use.")
    return 0


def cmd_data_get(name: str, out: str | None = None, from_dir: str | None = None) -> int:
    """Fetch (or take from ``from_dir``), verify and convert ``name``; print where it is."""
    entry = info(name)
    path = get_dataset(name, out=out, from_dir=from_dir)
    manifest = read_manifest(name, out) or {}
    print(f"{entry.title}: {manifest.get('items', '?')} items in "
          f"{manifest.get('language_count', '?')} languages")
    print(f"data: {path}")
    print(f"licence: {entry.licence}")
    print(f"cite: {entry.citation}")
    unpinned = [f["name"] for f in manifest.get("files", []) if not f.get("pinned")]
    if unpinned:
        print(f"checksums recorded on this download (not pinned in xlgap): "
              f"{len(unpinned)} file(s); see {path.parent / 'manifest.json'}")
    return 0

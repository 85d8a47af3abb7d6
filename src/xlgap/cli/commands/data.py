"""``xlgap data show|list|get`` and ``xlgap convert``: look at data sets, fetch the
benchmarks known by name, prepare the embedded model."""

from __future__ import annotations

import argparse

from xlgap.cli.registry import command
from xlgap.cli.workspace import report_problems
from xlgap.data import describe, format_description, load_dataset
from xlgap.data.catalog import get_dataset, info, list_datasets, read_manifest
from xlgap.models.embedded import ensure_converted


def cmd_data_show(path: str, on_missing: str, on_error: str = "fail") -> int:
    dataset = load_dataset(path, on_missing=on_missing, on_error=on_error)
    report_problems(dataset.problems, dataset.name)
    print(format_description(describe(dataset)))
    return 0


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
    files = manifest.get("files", [])
    unpinned = [f for f in files if not f.get("pinned")]
    if files and not unpinned:
        print(f"pinned: all {len(files)} files have their published sha256 (revision "
              f"{manifest.get('revision')})")
    elif unpinned:
        print(f"checksums recorded on this download (not pinned in xlgap): "
              f"{len(unpinned)} file(s), {unpinned[0].get('why_not_pinned', '')}; see "
              f"{path.parent / 'manifest.json'}")
    return 0


def data_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    show = actions.add_parser("show", help="languages, item count and candidates per item")
    show.add_argument("path", help="'builtin', a .jsonl file or a data directory")
    show.add_argument("--on-missing", default="keep", choices=("fail", "skip", "keep"))
    show.add_argument("--on-error", default="fail", choices=("fail", "skip"),
                      help="a malformed line: fail, or skip it and report it")
    actions.add_parser("list", help="the benchmarks known by name, and which are cached")
    get = actions.add_parser("get", help="download, verify and convert a benchmark into the "
                             "cache (or --out DIR)")
    get.add_argument("name", help="a name from `xlgap data list`")
    get.add_argument("--out", default=None, help="folder for the converted copy (default: "
                     "$XLGAP_CACHE/datasets/NAME)")
    get.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                     help="take the published files from DIR instead of downloading them")
    parser.set_defaults(data_parser=parser)


@command("data", None, arguments=data_arguments)
def cmd_data(args: argparse.Namespace) -> int:
    action = getattr(args, "data_command", None)
    if action == "list":
        return cmd_data_list()
    if action == "get":
        return cmd_data_get(args.name, args.out, args.from_dir)
    if action != "show":
        args.data_parser.print_help()
        return 1
    return cmd_data_show(args.path, args.on_missing, args.on_error)


@command("convert", None, arguments=lambda parser: None)
def cmd_convert(_: argparse.Namespace) -> int:
    print(ensure_converted())
    return 0

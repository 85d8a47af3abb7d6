"""``xlgap data ...`` and ``xlgap convert``: look at data sets, prepare the embedded model."""

from __future__ import annotations

import argparse

from xlgap.cli.registry import command
from xlgap.cli.workspace import report_problems
from xlgap.data import describe, format_description, load_dataset


def cmd_data_show(path: str, on_missing: str, on_error: str = "fail") -> int:
    dataset = load_dataset(None if path in ("builtin", "demo") else path, on_missing=on_missing,
                           on_error=on_error)
    report_problems(dataset.problems, dataset.name)
    print(format_description(describe(dataset)))
    return 0


def data_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    show = actions.add_parser("show", help="languages, item count and candidates per item")
    show.add_argument("path", help="'builtin', a .jsonl file or a data directory")
    show.add_argument("--on-missing", default="keep", choices=("fail", "skip", "keep"))
    show.add_argument("--on-error", default="fail", choices=("fail", "skip"),
                      help="a malformed line: fail, or skip it and report it")
    parser.set_defaults(data_parser=parser)


@command("data", None, "inspect parallel data sets", arguments=data_arguments)
def cmd_data(args: argparse.Namespace) -> int:
    if getattr(args, "data_command", None) != "show":
        args.data_parser.print_help()
        return 1
    return cmd_data_show(args.path, args.on_missing, args.on_error)


@command("convert", None, "convert the embedded model into the cache (done automatically "
         "on first use)", arguments=lambda parser: None)
def cmd_convert(_: argparse.Namespace) -> int:
    from xlgap.models.embedded import ensure_converted

    print(ensure_converted())
    return 0

"""The ``xlgap`` command line: a parser built from the command registry
(:mod:`xlgap.cli.registry`). Each subcommand is a typed config (see :mod:`xlgap.cli.config`)
plus a function; errors that users can fix print one clear line, not a traceback."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from xlgap import __version__
from xlgap.cli.config import add_config_arguments, build_config, read_config_file
from xlgap.cli.registry import COMMANDS, Command, commands, help_of, load_command
from xlgap.errors import XlgapError
from xlgap.provenance import set_command


def build_parser(selected: str | None = None
                 ) -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    """The parser, with every command's options when ``selected`` is None, else only the
    selected command's (the others are listed with their help, their modules not
    imported: ``xlgap --help`` starts in a blink)."""
    parser = argparse.ArgumentParser(
        prog="xlgap", description="Measure, explain and reduce the cross-lingual gap of "
        "language models.")
    parser.add_argument("--version", action="version", version=f"xlgap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered = commands() if selected is None else (
        {selected: load_command(selected)} if selected in COMMANDS else {})
    for name in COMMANDS:
        help_text = help_of(name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        cmd = registered.get(name)
        if cmd is None:
            continue
        if cmd.arguments is not None:  # a command with its own sub-actions (``data``)
            cmd.arguments(p)
            continue
        # a command's config may name one positional argument (``xlgap run FILE``)
        positional = getattr(cmd.config, "positional", None)
        if positional:
            dest, nargs = positional
            p.add_argument(dest, nargs=nargs, default=argparse.SUPPRESS,
                           metavar=dest.upper())
        if cmd.config is not None:
            add_config_arguments(p, cmd.config)
    return parser, registered


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command is the first word that is not an option; only its module is imported.
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser, registered = build_parser(selected if selected in COMMANDS else "")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    cmd = registered[args.command]
    # Every result file written while the command runs records the command that made it
    # (and nothing written afterwards by library calls in the same process does).
    set_command(shlex.join(["xlgap", *argv]))
    try:
        if cmd.arguments is not None:
            return cmd.func(args)
        file_values = read_config_file(args.config_file) if args.config_file else None
        cfg: Any = build_config(cmd.config, args, file_values) if cmd.config else args
        return cmd.func(cfg)
    finally:
        set_command(None)


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(argv)
    except XlgapError as exc:
        print(f"xlgap: error: {exc}", file=sys.stderr)
        code = 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        code = 0
    except KeyboardInterrupt:
        print("\nxlgap: interrupted; results so far are saved - rerun the same command to "
              "resume", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()

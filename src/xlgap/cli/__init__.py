"""The command line: thin commands over the Python API, one registry of commands
(:mod:`xlgap.cli.registry`), typed configs that are at once flags and config-file keys."""

from xlgap.cli.main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]

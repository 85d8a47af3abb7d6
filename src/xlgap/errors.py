"""Errors that the CLI turns into one clear message instead of a traceback."""

from __future__ import annotations


class XlgapError(Exception):
    """Base class: a user-facing error whose message says what went wrong and where."""


class DataError(XlgapError):
    """A data file is malformed or inconsistent (the message names file and line)."""


class LanguageError(XlgapError):
    """A language code is not a valid BCP 47 tag, or is not in the data set."""


class ModelError(XlgapError):
    """A model could not be found, loaded or run."""


class BackendError(XlgapError):
    """A backend request failed for good (after retries)."""


class ConfigError(XlgapError):
    """An option or config file value is invalid."""

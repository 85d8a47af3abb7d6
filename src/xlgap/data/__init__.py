"""Parallel data: the item model, loaders for the supported formats, language codes, and
the built-in demo set."""

from xlgap.data.builtin import load_builtin
from xlgap.data.items import ANSWER_FORMATS, LETTERS, MASK, Item, LangEntry, ParallelDataset
from xlgap.data.languages import language_name, language_script, validate_language
from xlgap.data.loaders import (
    describe,
    format_description,
    load_bmlama_dir,
    load_dataset,
    load_jsonl,
    load_sentence_dir,
)

__all__ = [
    "ANSWER_FORMATS",
    "LETTERS",
    "MASK",
    "Item",
    "LangEntry",
    "ParallelDataset",
    "describe",
    "format_description",
    "language_name",
    "language_script",
    "load_bmlama_dir",
    "load_builtin",
    "load_dataset",
    "load_jsonl",
    "load_sentence_dir",
    "validate_language",
]

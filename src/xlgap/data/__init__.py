"""Parallel data: the item model, the formats xlgap reads (:mod:`xlgap.data.formats`), the
named sources (the built-in demo set, the benchmark catalogue, ``hf:`` names), language
codes, and a data set's description."""

from xlgap.data.catalog import get_dataset, list_datasets
from xlgap.data.describe import describe, format_description
from xlgap.data.items import ANSWER_FORMATS, LETTERS, MASK, Item, LangEntry, ParallelDataset
from xlgap.data.languages import language_name, language_script, validate_language
from xlgap.data.loaders import (
    load_bmlama_dir,
    load_builtin,
    load_dataset,
    load_jsonl,
    load_sentence_dir,
)
from xlgap.data.mapping import ColumnMap, parse_data_map

__all__ = [
    "ANSWER_FORMATS",
    "LETTERS",
    "MASK",
    "ColumnMap",
    "Item",
    "LangEntry",
    "ParallelDataset",
    "describe",
    "format_description",
    "get_dataset",
    "language_name",
    "language_script",
    "list_datasets",
    "load_bmlama_dir",
    "load_builtin",
    "load_dataset",
    "load_jsonl",
    "load_sentence_dir",
    "parse_data_map",
    "validate_language",
]

"""The run directory: what a sampling run writes and every analysis reads.

A run holds, for each item and language, either K sampled answers mapped to answer
concepts (``mode = "sample"``) or an exact distribution over the candidates
(``mode = "exact"``). The format is documented in ``docs/run-format.md``; any tool may
write it, and :func:`load_run` accepts any directory that follows it.

Files are JSON Lines appended in place, each call flushed and fsynced, so a run that is
killed keeps what it wrote; :class:`RunWriter` cuts a torn last line when it reopens the
directory, and :meth:`RunWriter.done_keys` tells a resumed run what to skip.
"""

from xlgap.runs.files import (
    DISTRIBUTIONS_FILE,
    EMBEDDINGS_FILE,
    FORMAT,
    ITEMS_FILE,
    LOCK_FILE,
    MISSING,
    OTHER,
    RUN_FILE,
    SAMPLE_EMBEDDINGS_FILE,
    SAMPLES_FILE,
    done_keys,
    read_meta,
)
from xlgap.runs.reader import Run, load_run, open_answer_summary, open_item_texts
from xlgap.runs.select import parse_failures, restrict_run
from xlgap.runs.usage import USAGE_FILE, UsageLog, read_usage
from xlgap.runs.writer import RunWriter

__all__ = [
    "DISTRIBUTIONS_FILE",
    "EMBEDDINGS_FILE",
    "FORMAT",
    "ITEMS_FILE",
    "LOCK_FILE",
    "MISSING",
    "OTHER",
    "RUN_FILE",
    "SAMPLES_FILE",
    "SAMPLE_EMBEDDINGS_FILE",
    "USAGE_FILE",
    "Run",
    "RunWriter",
    "UsageLog",
    "done_keys",
    "load_run",
    "open_answer_summary",
    "open_item_texts",
    "parse_failures",
    "read_meta",
    "read_usage",
    "restrict_run",
]

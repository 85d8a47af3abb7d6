"""Pull the final answer out of a model's output.

Direct strategies (baseline, TrEn-k, vote-k) ask for the answer alone, so the answer is
the first non-empty line. Translate-then-answer (TTA-k) lets the model write translations
first and the answer last, so the answer is what follows the *last* answer marker
(``Answer:``, ``Answer (French):``, ``**Answer:**``, any case). Both return ``None`` when
there is nothing to map (empty output, no marker): callers count that as a failed parse
and map it to OTHER, so no response is ever dropped silently.
"""

from __future__ import annotations

import re

# "answer", an optional "(Language)" tag, optional markdown emphasis, then a colon
# (ASCII or full-width, as CJK output often uses).
_MARKER = re.compile(r"answer\s*(?:\([^)\n]{0,40}\))?\s*\**\s*[:：]", re.IGNORECASE)
# A leading "A:" / "Answer:" that a chat model may echo before a direct answer.
_LEADING_LABEL = re.compile(r"^\s*(?:a|answer)\s*(?:\([^)\n]{0,40}\))?\s*\**\s*[:：]\s*",
                            re.IGNORECASE)
# Wrapping and trailing characters that are never part of an answer.
# A line that starts with a label of its own ("Question (French): ...", "English: ...").
_LABELLED_LINE = re.compile(r"^\s*[^\W\d_][\w ]{0,30}(?:\([^)\n]*\))?\s*[:：](?:\s|$)")
_EDGE_CHARS = " \t*_`\"'“”‘’«»「」『』"
_TRAILING_PUNCT = ".,;:!?。、，；：！？…"


def clean_answer(text: str) -> str:
    """Strip markdown emphasis, quotes and trailing punctuation around an answer."""
    out = text.strip()
    previous = None
    # Repeat: "**Paris**." needs the period, then the asterisks, removed.
    while out != previous:
        previous = out
        out = out.strip(_EDGE_CHARS).rstrip(_TRAILING_PUNCT)
    return out


def first_line(text: str) -> str | None:
    """The first non-empty line, stripped (a translated question: its punctuation is kept),
    or ``None``."""
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), None)


def parse_direct(text: str) -> str | None:
    """The answer of an output that should be the answer alone: its first non-empty line,
    without an echoed ``A:``/``Answer:`` label; ``None`` when nothing is left."""
    for line in text.splitlines():
        answer = clean_answer(_LEADING_LABEL.sub("", line, count=1))
        if answer:
            return answer
    return None


def parse_after_marker(text: str) -> str | None:
    """The answer written after the last answer marker that has one, else ``None``.

    The rest of the marker's line is the answer; when that is empty, the next non-empty
    line is taken unless it carries a label of its own (``Answer:\\nParis`` gives Paris,
    ``Answer:\\nQuestion: ...`` gives nothing). A marker with no answer falls back to an
    earlier marker (the model may have started a new block it did not finish).
    """
    for match in reversed(list(_MARKER.finditer(text))):
        line, _, after = text[match.end():].partition("\n")
        answer = clean_answer(line)
        if not answer:
            nxt = next((ln for ln in after.splitlines() if ln.strip()), "")
            if nxt and not _LABELLED_LINE.match(nxt):
                answer = clean_answer(nxt)
        if answer:
            return answer
    return None

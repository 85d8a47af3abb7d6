"""Map a sampled answer text to the candidate it names (an answer concept), else OTHER.

Normalisation: Unicode NFKC, case folding, punctuation dropped, whitespace collapsed.
Matching is script-aware: in scripts written without spaces (Han, kana, Thai, ...) a
candidate may be followed directly by more text, elsewhere it must end at a word boundary.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

OTHER = -1

_SPACE = re.compile(r"\s+")
# Scripts written without spaces between words.
_NO_SPACE_RANGES = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),  # Han
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0xAC00, 0xD7AF),  # Hangul syllables (particles attach to nouns)
)


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) else ch
                   for ch in text)
    return _SPACE.sub(" ", text).strip()


def _no_space_char(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _NO_SPACE_RANGES)


def _matches_at_start(answer: str, cand: str) -> bool:
    if not cand or not answer.startswith(cand):
        return False
    if len(answer) == len(cand):
        return True
    nxt = answer[len(cand)]
    return nxt == " " or _no_space_char(cand[-1]) or _no_space_char(nxt)


def _occurs(answer: str, cand: str) -> bool:
    if not cand:
        return False
    if _no_space_char(cand[0]) or _no_space_char(cand[-1]):
        return cand in answer
    return re.search(rf"(?:^| ){re.escape(cand)}(?: |$)", answer) is not None


def map_answer(text: str, candidates: Sequence[str],
               aliases: dict[int, Sequence[str]] | None = None) -> int:
    """Index of the candidate ``text`` names, or ``OTHER`` (-1).

    The answer is the first line of ``text``. A candidate that starts the answer wins
    (the longest, if several do); else a candidate named exactly once inside it.
    ``aliases`` maps a candidate index to extra spellings (e.g. gold answer aliases).
    """
    answer = normalize(text.strip().split("\n", 1)[0]) if text.strip() else ""
    if not answer:
        return OTHER
    forms: list[tuple[int, str]] = [(j, normalize(c)) for j, c in enumerate(candidates)]
    for j, extra in (aliases or {}).items():
        forms.extend((j, normalize(a)) for a in extra)
    starting = [(len(f), j) for j, f in forms if _matches_at_start(answer, f)]
    if starting:
        return max(starting)[1]
    inside = {j for j, f in forms if _occurs(answer, f)}
    if len(inside) == 1:
        return inside.pop()
    return OTHER

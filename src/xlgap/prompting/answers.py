"""Compare free-text answers with candidates and gold aliases, in any script.

:func:`normalize` gives the one comparable form of a text that every caller uses:

* Unicode NFKC (full-width and compatibility forms fold) and case folding;
* accents and other combining marks dropped after Latin, Greek and Cyrillic letters
  (``Pérou`` = ``Perou``, ``Ελλάδα`` = ``Ελλαδα``, ``Ёж`` = ``Еж``), and the optional vowel
  and hamza marks of Arabic and Hebrew, which writers include or leave out at will; Arabic-
  script letters that are written interchangeably fold together (``ة``/``ه``, ``ى``/``ي``,
  Persian ``ک``/``ی`` and Arabic ``ك``/``ي``). Marks of other scripts are parts of letters
  (Devanagari vowel signs, kana voicing marks), so they stay, and CJK text is kept as is;
* punctuation and symbols dropped, whitespace collapsed;
* one leading article dropped (``the``, ``l'``, ``los``, ``het``, ...), for the answer's
  language or, without one, for all languages in ``ARTICLES``.

Matching (:func:`map_answer` for candidates, :func:`answer_matches` for open answers) looks
at the first line of the answer and is script-aware: next to a character of a script written
without spaces (Han, kana, Hangul with its attached particles, Thai, ...) any position is a
word boundary, elsewhere a match must end at a space or the end of the text.
:func:`map_answer` compares strictly first (accents and articles count) and relaxes only
when that finds no candidate, so candidates that differ by an accent alone stay apart.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

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
# Scripts whose combining marks are dropped for comparison (see the module docstring).
_MARKS_DROPPED = frozenset({"LATIN", "GREEK", "CYRILLIC", "ARABIC", "HEBREW"})
_TATWEEL = "\u0640"  # Arabic letter-stretching stroke: layout, not spelling
# Letters that Arabic-script writing interchanges freely: final taa marbuta and haa,
# alef maqsura and yaa, and the Persian forms of kaf and yaa against the Arabic ones
# (models often answer Persian with Arabic code points).
_ARABIC_FOLD = str.maketrans({"\u0629": "\u0647", "\u0649": "\u064a",
                              "\u06a9": "\u0643", "\u06cc": "\u064a"})

# Leading articles, after case folding and with the apostrophe of l' already a space.
ARTICLES: dict[str, frozenset[str]] = {
    "en": frozenset({"the", "a", "an"}),
    "fr": frozenset({"le", "la", "les", "l"}),
    "es": frozenset({"el", "la", "los", "las"}),
    "de": frozenset({"der", "die", "das"}),
    "it": frozenset({"il", "lo", "la", "l"}),
    "pt": frozenset({"o", "a", "os", "as"}),
    "nl": frozenset({"de", "het", "een"}),
    "ca": frozenset({"el", "la", "els", "les", "l"}),
}
_ALL_ARTICLES = frozenset().union(*ARTICLES.values())


@lru_cache(maxsize=4096)
def _script(ch: str) -> str:
    """The script word of a character's Unicode name ('LATIN', 'CYRILLIC', 'HIRAGANA')."""
    return unicodedata.name(ch, "").split(" ", 1)[0]


def _drop_marks(text: str) -> str:
    """Drop combining marks that follow a letter of a script in ``_MARKS_DROPPED``."""
    out: list[str] = []
    drop = False
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.category(ch) == "Mn":
            if not drop:
                out.append(ch)
        elif ch != _TATWEEL:
            drop = _script(ch) in _MARKS_DROPPED
            out.append(ch)
    # NFC puts back together what NFD took apart and was kept (Hangul syllables, kana).
    return unicodedata.normalize("NFC", "".join(out))


def _clean(text: str) -> str:
    """Punctuation and symbols to spaces, whitespace collapsed."""
    text = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) else ch
                   for ch in text)
    return _SPACE.sub(" ", text).strip()


@lru_cache(maxsize=65536)
def _light_form(text: str) -> str:
    """NFKC, case folding and punctuation only: accents and articles still count."""
    return _clean(unicodedata.normalize("NFKC", text).casefold())


@lru_cache(maxsize=65536)
def _base_form(text: str) -> str:
    """Everything :func:`normalize` does except dropping the article."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if not text.isascii():
        text = _drop_marks(text).translate(_ARABIC_FOLD)
    return _clean(text)


def _articles(lang: str | None) -> frozenset[str]:
    if lang is None:
        return _ALL_ARTICLES
    return ARTICLES.get(lang.replace("_", "-").split("-", 1)[0].lower(), frozenset())


def _drop_article(form: str, lang: str | None) -> str:
    head, _, rest = form.partition(" ")
    # A lone word is never dropped: 'a' may be the answer (a letter, a blood group).
    return rest if rest and head in _articles(lang) else form


def normalize(text: str, lang: str | None = None) -> str:
    """The comparable form of ``text`` (see the module docstring). ``lang`` (a BCP 47 tag)
    picks the articles to drop; without it, any article in ``ARTICLES`` is dropped."""
    return _drop_article(_base_form(text), lang)


def _tiers(text: str, lang: str | None) -> tuple[str, str, str]:
    """Three forms of ``text``, strictest first: accents and article kept, accents
    dropped, article dropped too (:func:`normalize`). Candidates are mapped at the
    strictest tier that finds one, so accents still tell apart candidates that differ only
    by them (Greek 'Αθήνα', the city, and 'Αθηνά', the goddess, are both in BMLAMA-17),
    and 'A. Paris' still names option 'A'."""
    base = _base_form(text)
    return _light_form(text), base, _drop_article(base, lang)


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]


def _no_space_char(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _NO_SPACE_RANGES)


def _boundary(edge: str, neighbour: str | None) -> bool:
    """Whether a match whose outer character is ``edge`` may touch ``neighbour`` (None:
    the end of the text)."""
    return neighbour is None or neighbour == " " or _no_space_char(edge) \
        or _no_space_char(neighbour)


def _matches_at_start(answer: str, cand: str) -> bool:
    if not cand or not answer.startswith(cand):
        return False
    nxt = answer[len(cand)] if len(answer) > len(cand) else None
    return _boundary(cand[-1], nxt)


def _occurs(answer: str, cand: str) -> bool:
    if not cand:
        return False
    start = answer.find(cand)
    while start >= 0:
        end = start + len(cand)
        before = answer[start - 1] if start > 0 else None
        after = answer[end] if end < len(answer) else None
        if _boundary(cand[0], before) and _boundary(cand[-1], after):
            return True
        start = answer.find(cand, start + 1)
    return False


def map_answer(text: str, candidates: Sequence[str],
               aliases: dict[int, Sequence[str]] | None = None,
               lang: str | None = None) -> int:
    """Index of the candidate ``text`` names, or ``OTHER`` (-1).

    The answer is the first line of ``text``. A candidate that starts the answer wins
    (the longest, if several do); else a candidate named exactly once inside it. This is
    tried with accents and articles counted first, then ignoring accents, then also
    ignoring a leading article. ``aliases`` maps a candidate index to extra spellings (e.g.
    gold answer aliases); ``lang`` picks the articles to drop.
    """
    named: list[tuple[int, str]] = list(enumerate(candidates))
    for j, extra in (aliases or {}).items():
        named.extend((j, a) for a in extra)
    tiered = [(j, _tiers(c, lang)) for j, c in named]
    answers = _tiers(_first_line(text), lang)
    for tier, answer in enumerate(answers):
        if not answer or (tier and answer == answers[tier - 1]
                          and all(t[tier] == t[tier - 1] for _, t in tiered)):
            continue  # nothing to map, or the same comparison as the tier before
        forms = [(j, t[tier]) for j, t in tiered if t[tier]]
        starting = [(len(f), j) for j, f in forms if _matches_at_start(answer, f)]
        if starting:
            return max(starting)[1]
        inside = {j for j, f in forms if _occurs(answer, f)}
        if len(inside) == 1:
            return inside.pop()
    return OTHER


def answer_matches(text: str, aliases: Iterable[str], lang: str | None = None) -> bool:
    """Lenient match: whether a free-text answer names one of the gold ``aliases`` (an
    open item's ``answers``) anywhere: an alias starts the answer's first line or appears
    in it as a word (or, in scripts without spaces, anywhere). Both sides are normalised
    alike, so case, accents, punctuation, a leading article and full-width forms do not
    matter. A list of guesses or a sentence that mentions the gold passes too; see
    :func:`answer_starts_with` for the strict rule that decides correctness.
    """
    answers = _tiers(_first_line(text), lang)
    for alias in aliases:
        for answer, form in zip(answers, _tiers(alias, lang), strict=True):
            if answer and form and (_matches_at_start(answer, form) or _occurs(answer, form)):
                return True
    return False


# Lead-ins an answer may start with before the entity itself (in normalised form: case
# folded, accents and punctuation gone): copulas and "the answer is".
COPULAS: dict[str, tuple[str, ...]] = {
    "en": ("the answer is", "answer", "it is", "it s", "it was", "that is", "this is", "is",
           "was"),
    "fr": ("la reponse est", "reponse", "c est", "ce sont", "il s agit de", "il est",
           "elle est"),
    "es": ("la respuesta es", "respuesta", "es", "era", "son"),
    "de": ("die antwort ist", "antwort", "es ist", "das ist", "ist", "war"),
    "it": ("la risposta e", "risposta", "e", "era"),
    "pt": ("a resposta e", "resposta", "e", "era"),
    "ru": ("ответ", "это"),
    "ar": ("الجواب", "انها", "انه", "هي", "هو"),
    "zh": ("答案是", "答案", "是"),
    "ja": ("答えは", "答え", "それは"),
    "ko": ("정답은", "정답", "답은"),
}
_ALL_COPULAS = tuple(sorted({c for cs in COPULAS.values() for c in cs}, key=len,
                            reverse=True))


def _copulas(lang: str | None) -> tuple[str, ...]:
    if lang is None:
        return _ALL_COPULAS
    base = lang.replace("_", "-").split("-", 1)[0].lower()
    return tuple(sorted(COPULAS.get(base, ()), key=len, reverse=True))


def _drop_lead_in(form: str, lang: str | None) -> str:
    """``form`` without one leading copula or "the answer is" (then without an article)."""
    for lead in _copulas(lang):
        if form.startswith(lead) and len(form) > len(lead):
            nxt = form[len(lead)]
            if nxt == " " or _no_space_char(lead[-1]) or _no_space_char(nxt):
                return _drop_article(form[len(lead):].lstrip(), lang)
    return form


def answer_starts_with(text: str, aliases: Iterable[str], lang: str | None = None) -> bool:
    """Strict match: an alias starts the answer's first line, after an article or a
    copula (``It is London``, ``C'est Londres``, ``Это Лондон``, ``ロンドンです``). An
    alias later in a sentence or in a list of guesses (``Dresden. ... killed in London``)
    does not count. Normalised as in :func:`answer_matches`."""
    answers = _tiers(_first_line(text), lang)
    for alias in aliases:
        for tier, (answer, form) in enumerate(zip(answers, _tiers(alias, lang),
                                                  strict=True)):
            if not answer or not form:
                continue
            if _matches_at_start(answer, form):
                return True
            rest = answer
            for _ in range(3 if tier == 2 else 0):  # "the answer is", then "it is", ...
                rest, before = _drop_lead_in(rest, lang), rest
                if rest == before:
                    break
                if _matches_at_start(rest, form):
                    return True
    return False


def matching_languages(text: str, aliases: dict[str, Sequence[str]], lang: str | None,
                       *, lenient: bool = False) -> list[str]:
    """The languages whose gold aliases ``text`` names (strictly, or leniently), in the
    order of ``aliases``: whether a right answer is in the asked language is reported
    apart from whether it is right."""
    match = answer_matches if lenient else answer_starts_with
    return [code for code, names in aliases.items() if match(text, names, lang)]

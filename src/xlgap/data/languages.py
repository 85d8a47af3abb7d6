"""Language codes: check BCP 47 tags, name them, and find the script they are written in.

Every language code that enters xlgap (a data file's name, a JSONL key, ``--source``,
``--targets``) goes through :func:`validate_language`, so two spellings of one language
(``EN``/``en``, ``en_US``/``en-US``, ``eng``/``en``, ``iw``/``he``, and FLORES-200 names
such as ``eng_Latn``/``en`` or ``arb_Arab``/``ar``) end up as one normalised tag and a typo
fails early with a message that says where it came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import langcodes

from xlgap.errors import LanguageError

_EXAMPLES = "e.g. 'en', 'ceb', 'zh-Hant', 'pt-BR'"


def _where(where: str) -> str:
    return f" in {where}" if where else ""


@lru_cache(maxsize=1024)
def _normalise(code: str) -> str | None:
    """The normalised tag for ``code``, or None when it is not a usable language tag.

    Usable means: syntactically valid BCP 47, with a registered 2- or 3-letter ISO 639
    language subtag (so 'xx' and 'xx1' fail although langcodes parses them) and not the
    empty 'und' (undetermined), which says nothing about the text.
    """
    if not code or code != code.strip() or not langcodes.tag_is_valid(code):
        return None
    try:
        lang = langcodes.Language.get(code)
    except ValueError:  # LanguageTagError is a ValueError
        return None
    sub = lang.language
    if sub is None or not (2 <= len(sub) <= 3 and sub.isalpha()) or sub == "und":
        return None
    if not lang.is_valid():
        return None
    return str(_simplify(lang))


# Twi is folded into Akan by CLDR's macrolanguage table, but FLORES-200 has aka_Latn and
# twi_Latn side by side; folding would make the two files one language.
_KEEP_INDIVIDUAL = frozenset({"tw"})
# ISO 15924 defines Kore as Hangul + Han: 'kor_Hang' (FLORES) is ordinary Korean text.
_SCRIPT_WITHIN = {("ko", "Hang")}


def _simplify(lang: langcodes.Language) -> langcodes.Language:
    """One tag per language as data sets name it: the dominant member of a macrolanguage
    becomes the macrolanguage (``arb`` -> ``ar``, ``cmn`` -> ``zh``, ``swh`` -> ``sw``), and
    a script that is the language's only usual one is dropped (``en-Latn`` -> ``en``). A
    script that tells variants apart stays (``zh-Hans``, ``zh-Hant``, ``sr-Latn``)."""
    if lang.language not in _KEEP_INDIVIDUAL:
        lang = lang.prefer_macrolanguage()
    lang = lang.simplify_script()
    if (lang.language, lang.script) in _SCRIPT_WITHIN:
        lang = lang.update_dict({"script": None})
    return lang


# Something meant as a language code: a 2-3 letter language subtag, then optional subtags
# after '-' or '_' ('en', 'pt-BR', 'eng_Latn', 'zh-Hant'). A name of another shape
# ('README', 'notes', 'english', 'LICENSE') is not data in a {lang}.ext directory.
_CODE_SHAPE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")


def looks_like_code(name: str) -> bool:
    """Whether a file name's stem is shaped like a language code, valid or not.

    Loaders skip files whose stem is not (``notes.txt``) and validate those that are, so a
    typo such as ``jp.tsv`` still fails loudly instead of silently losing a language."""
    return _CODE_SHAPE.fullmatch(name) is not None


def validate_language(code: str, where: str = "") -> str:
    """Return the normalised BCP 47 tag for ``code`` or raise :class:`LanguageError`.

    ``where`` names the origin for the message (``"file data/xx1.tsv"``, ``"--targets"``).
    Surrounding whitespace is forgiven; case, ``_`` for ``-`` and deprecated or 3-letter
    codes that have a 2-letter form are normalised (``EN_us`` -> ``en-US``, ``eng`` -> ``en``),
    and FLORES-200 names map to BCP 47 (``eng_Latn`` -> ``en``, ``zho_Hans`` -> ``zh-Hans``,
    ``arb_Arab`` -> ``ar``).
    """
    if not isinstance(code, str):
        raise LanguageError(f"language code{_where(where)} must be a string, got {code!r}")
    norm = _normalise(code.strip())
    if norm is None:
        raise LanguageError(
            f"invalid language code {code!r}{_where(where)}: expected a BCP 47 tag with a "
            f"2- or 3-letter ISO 639 language code ({_EXAMPLES})")
    return norm


def language_name(code: str) -> str:
    """English display name of a language tag (``ja`` -> ``Japanese``,
    ``zh-Hant`` -> ``Chinese (Traditional)``)."""
    return langcodes.Language.get(validate_language(code)).display_name("en")


def language_script(code: str) -> str:
    """ISO 15924 script the language is usually written in (``ja`` -> ``Jpan``,
    ``zh`` -> ``Hans``, ``ru`` -> ``Cyrl``); an explicit script subtag wins
    (``sr-Latn`` -> ``Latn``). Uses the likely-subtags data behind ``maximize()``."""
    script = langcodes.Language.get(validate_language(code)).maximize().script
    return script or "Zyyy"  # Zyyy: ISO 15924 code for 'undetermined script'


def _maximized(code: str) -> str:
    return str(langcodes.Language.get(code).maximize())


def check_known(codes: Iterable[str], known: Iterable[str], what: str) -> list[str]:
    """Check that every requested language is one of ``known``; return the data set's codes.

    A request matches a known code that normalises to the same tag or, failing that, the one
    known code with the same likely script and region: ``zh`` finds ``zh-Hans`` and ``ak``
    finds ``ak-Latn`` (FLORES-200 names keep such scripts), while ``zh`` never finds
    ``zh-Hant`` and ``en`` never finds ``en-GB``. Use the returned codes to index the data.
    ``what`` names the collection (``"data set builtin"``); the error lists the languages
    it does have, so a user who typed ``--targets xx`` sees what to choose from.
    """
    known_list = list(known)
    by_norm = {_normalise(k) or k: k for k in known_list}
    have = ", ".join(sorted(known_list))
    out: list[str] = []
    for code in codes:
        try:
            norm = validate_language(code, what)
        except LanguageError as exc:
            raise LanguageError(f"{exc}; {what} has: {have}") from None
        if norm in by_norm:
            out.append(by_norm[norm])
            continue
        full = _maximized(norm)
        close = [k for n, k in by_norm.items() if _normalise(n) and _maximized(n) == full]
        if len(close) != 1:
            raise LanguageError(f"language {code!r} is not in {what}; it has: {have}")
        out.append(close[0])
    return out

"""Language codes: check BCP 47 tags, name them, and find the script they are written in.

Every language code that enters xlgap (a data file's name, ``--source``, ``--targets``) goes
through :func:`validate_language`, so two spellings of one language (``EN``/``en``,
``en_US``/``en-US``, ``eng``/``en``, ``iw``/``he``) end up as one normalised tag and a typo
fails early with a message that says where it came from.
"""

from __future__ import annotations

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
    return str(lang)


def validate_language(code: str, where: str = "") -> str:
    """Return the normalised BCP 47 tag for ``code`` or raise :class:`LanguageError`.

    ``where`` names the origin for the message (``"file data/xx1.tsv"``, ``"--targets"``).
    Surrounding whitespace is forgiven; case, ``_`` for ``-`` and deprecated or 3-letter
    codes that have a 2-letter form are normalised (``EN_us`` -> ``en-US``, ``eng`` -> ``en``).
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


def check_known(codes: Iterable[str], known: Iterable[str], what: str) -> list[str]:
    """Check that every requested language is one of ``known``; return them normalised.

    ``what`` names the collection (``"data set builtin"``); the error lists the languages
    it does have, so a user who typed ``--targets xx`` sees what to choose from.
    """
    known_list = list(known)
    known_norm = {_normalise(k) or k for k in known_list}
    have = ", ".join(sorted(known_list))
    out: list[str] = []
    for code in codes:
        try:
            norm = validate_language(code, what)
        except LanguageError as exc:
            raise LanguageError(f"{exc}; {what} has: {have}") from None
        if norm not in known_norm:
            raise LanguageError(f"language {code!r} is not in {what}; it has: {have}")
        out.append(norm)
    return out

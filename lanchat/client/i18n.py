"""Translations: English by default, Norwegian Bokmål when the locale asks for it.

Every string a person reads goes through ``_`` (or ``ngettext`` when it has a count);
English is the source text.  The catalogue for a language lives in
``lanchat/locale/<lang>/LC_MESSAGES/lanchat.po`` and is compiled to ``.mo`` when the
package is built (setup.py); a source checkout without a build compiles the ``.po``
in memory, so the translation is the same either way.

The language is chosen the way gettext does it: the first non-empty variable of
``LANGUAGE`` (a colon-separated list of preferences), ``LC_ALL``, ``LC_MESSAGES``,
``LANG``.  ``no`` (the old code for Norwegian, meaning Bokmål) is read as ``nb``.
"""

from __future__ import annotations

import gettext
import io
import os
from collections.abc import Mapping
from pathlib import Path

from lanchat.client import msgfmt

DOMAIN = "lanchat"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
_ALIASES = {"no": "nb"}

_translation: gettext.NullTranslations = gettext.NullTranslations()
_language = "en"


def requested_languages(environ: Mapping[str, str]) -> list[str]:
    """The languages asked for, most wanted first, as bare codes ("nb_NO", "nb")."""
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(var, "")
        if value:
            break
    else:
        return []
    out: list[str] = []
    for item in value.split(":"):
        code = item.split(".", 1)[0].split("@", 1)[0].strip()
        if not code or code in ("C", "POSIX"):
            if code:
                break  # "C" means untranslated: stop looking
            continue
        base, _, territory = code.partition("_")
        base = _ALIASES.get(base.lower(), base.lower())
        candidates = [f"{base}_{territory.upper()}", base] if territory else [base]
        for candidate in candidates:
            if candidate not in out:
                out.append(candidate)
    return out


def load_catalogue(language: str, locale_dir: Path = LOCALE_DIR) -> gettext.GNUTranslations | None:
    """The compiled catalogue for one language, else its ``.po`` compiled in memory."""
    base = locale_dir / language / "LC_MESSAGES" / DOMAIN
    mo = base.with_suffix(".mo")
    try:
        with open(mo, "rb") as f:
            return gettext.GNUTranslations(f)
    except FileNotFoundError:
        pass
    po = base.with_suffix(".po")
    try:
        text = po.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return gettext.GNUTranslations(io.BytesIO(msgfmt.compile_po(text, str(po))))


def setup(environ: Mapping[str, str] | None = None, locale_dir: Path = LOCALE_DIR) -> str:
    """Choose the translation from ``environ`` (default: the process environment).

    Returns the language in use ("en" when no catalogue matches).
    """
    global _translation, _language
    environ = os.environ if environ is None else environ
    for language in requested_languages(environ):
        if language.split("_", 1)[0] == "en":
            break
        catalogue = load_catalogue(language, locale_dir)
        if catalogue is not None:
            _translation, _language = catalogue, language.split("_", 1)[0]
            return _language
    _translation, _language = gettext.NullTranslations(), "en"
    return _language


def language() -> str:
    """The language in use: "en" or the code of the loaded catalogue ("nb")."""
    return _language


def _(message: str) -> str:
    return _translation.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _translation.ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks a string for translation where it is defined; ``_`` translates it later."""
    return message


setup()

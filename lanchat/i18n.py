"""Translations for the three programs: one gettext catalogue per language.

Every sentence a person reads goes through gettext; English is the source text, and
codes, reasons, field names and ``--json`` output never do.  The catalogue for a
language is ``lanchat/locale/<lang>/LC_MESSAGES/lanchat.po``, one file for the client,
the daemon and the admin tool: they are one package, and they share sentences (the PIN
and name rules the daemon sends are the ones the client shows before it sends), so a
translator keeps one file and a sentence is translated once.  The ``.po`` is compiled
to ``.mo`` when the package is built (setup.py); a source checkout without a build
compiles it in memory, so the translation is the same either way.  Adding a language is
adding one ``.po`` (docs/languages.md).

Two ways to use it:

* A program that speaks one language to one person (the client, ``lanchatctl``) calls
  ``setup`` once with the environment (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``,
  ``LANG``, the way gettext reads them) or an explicit choice (``--lang``, a setting),
  then uses ``_``, ``ngettext`` and ``N_``.
* The daemon speaks each member's language: ``translate(lang, N_("..."), **values)``
  and ``gettext_for(lang)``.  A catalogue is loaded once per language and cached, so
  a lookup costs two dict lookups; a room message has no translated text at all.
"""

from __future__ import annotations

import gettext
import io
import os
from collections.abc import Mapping
from typing import Callable, Union

from lanchat.protocol.vocabulary import DEFAULT_LANGUAGE as DEFAULT_LANGUAGE  # re-exported

DOMAIN = "lanchat"
#: Where the catalogues are (a ``str``: ``pathlib`` is not imported for it, as the daemon's
#: start does not need it otherwise).
LOCALE_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "locale")
#: A directory given as a string or a path object.
PathLike = Union[str, "os.PathLike[str]"]
_ALIASES = {"no": "nb"}

_translation: gettext.NullTranslations = gettext.NullTranslations()
_language = DEFAULT_LANGUAGE
_ENGLISH = gettext.NullTranslations()
_cache: dict[str, gettext.NullTranslations] = {DEFAULT_LANGUAGE: _ENGLISH}


def _available(locale_dir: PathLike) -> tuple[str, ...]:
    found = {DEFAULT_LANGUAGE}
    try:
        names = os.listdir(locale_dir)
    except OSError:
        names = []
    for name in names:
        base = os.path.join(locale_dir, name, "LC_MESSAGES", DOMAIN)
        if any(os.path.exists(base + suffix) for suffix in (".mo", ".po")):
            found.add(name)
    return tuple(sorted(found))


#: Every language there is a catalogue for, and English ("en", "nb").
LANGUAGES: tuple[str, ...] = _available(LOCALE_DIR)


def requested_languages(environ: Mapping[str, str]) -> list[str]:
    """The languages asked for, most wanted first, as bare codes ("nb_NO", "nb")."""
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(var, "")
        if value:
            break
    else:
        return []
    return _codes(value)


def _codes(value: str) -> list[str]:
    out: list[str] = []
    for item in value.split(":"):
        code = item.split(".", 1)[0].split("@", 1)[0].strip().replace("-", "_")
        if not code or code in ("C", "POSIX"):
            if code:
                break  # "C" means untranslated: stop looking
            continue
        base, _sep, territory = code.partition("_")
        base = _ALIASES.get(base.lower(), base.lower())
        candidates = [f"{base}_{territory.upper()}", base] if territory else [base]
        for candidate in candidates:
            if candidate not in out:
                out.append(candidate)
    return out


def supported(code: str) -> str | None:
    """The language of ours that ``code`` names ("nb", "nb_NO", "no", "NB-no"), or None."""
    for candidate in _codes(code[:64]):
        base = candidate.split("_", 1)[0]
        if base in LANGUAGES:
            return base
    return None


def load_catalogue(language: str,
                   locale_dir: PathLike = LOCALE_DIR) -> gettext.GNUTranslations | None:
    """The compiled catalogue for one language, else its ``.po`` compiled in memory."""
    base = os.path.join(locale_dir, language, "LC_MESSAGES", DOMAIN)
    mo = base + ".mo"
    try:
        with open(mo, "rb") as f:
            return gettext.GNUTranslations(f)
    except FileNotFoundError:
        pass
    po = base + ".po"
    try:
        with open(po, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    from lanchat import msgfmt  # a source checkout only: an installed package has the .mo

    return gettext.GNUTranslations(io.BytesIO(msgfmt.compile_po(text, po)))


def catalogue(language: str) -> gettext.NullTranslations:
    """The translations of one of ``LANGUAGES`` (English for anything else), cached."""
    found = _cache.get(language)
    if found is None:
        loaded = load_catalogue(language) if language in LANGUAGES else None
        found = _cache[language] = loaded if loaded is not None else _ENGLISH
    return found


def preload() -> None:
    """Load every catalogue now (the daemon, before its core runs: a translation in the
    core is then a dictionary lookup, never a file read)."""
    for language in LANGUAGES:
        catalogue(language)


def gettext_for(language: str) -> Callable[[str], str]:
    """The ``gettext`` of one language: what the plain-text formatter is given."""
    return catalogue(language).gettext


def translate(language: str, message: str, **values: object) -> str:
    """``message`` (marked with ``N_`` where it is written) in ``language``, filled in."""
    text = catalogue(language).gettext(message) if message else message
    return text.format(**values) if values else text


def translate_plural(language: str, singular: str, plural: str, n: int,
                     **values: object) -> str:
    """``ngettext`` in ``language`` (the catalogue's plural rule), filled in."""
    return catalogue(language).ngettext(singular, plural, n).format(**values)


def setup(environ: Mapping[str, str] | None = None, locale_dir: PathLike = LOCALE_DIR,
          choice: str = "") -> str:
    """Choose this process's language: ``choice`` (a flag or a setting) if given, else
    from ``environ`` (default: the process environment).

    Returns the language in use ("en" when no catalogue matches).
    """
    global _translation, _language
    environ = os.environ if environ is None else environ
    wanted = _codes(choice) if choice else requested_languages(environ)
    for language in wanted:
        if language.split("_", 1)[0] == DEFAULT_LANGUAGE:
            break
        found = load_catalogue(language, locale_dir)
        if found is not None:
            _translation, _language = found, language.split("_", 1)[0]
            return _language
    _translation, _language = gettext.NullTranslations(), DEFAULT_LANGUAGE
    return _language


def language() -> str:
    """The language in use: "en" or the code of the loaded catalogue ("nb")."""
    return _language


def _(message: str) -> str:
    return _translation.gettext(message)


def translated(message: str, **values: object) -> str:
    """A sentence that arrives in English from elsewhere (the daemon's state description,
    a protocol error's template) in this process's language, filled in; as it is when
    the catalogue does not have it."""
    if not message:
        return message  # gettext("") is the catalogue's header
    text = _translation.gettext(message)
    return text.format(**values) if values else text


def ngettext(singular: str, plural: str, n: int) -> str:
    return _translation.ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks a string for translation where it is defined; ``_`` translates it later."""
    return message


#: argparse's own words (its help option, "usage:", the usage errors), which it looks
#: up with gettext: ``translate_argparse`` points it at this catalogue, so --help and a
#: usage error are one language.  (Python 3.9 says "optional arguments", later ones
#: "options".)
ARGPARSE_MESSAGES = (
    N_("usage: "),
    N_("positional arguments"),
    N_("options"),
    N_("optional arguments"),
    N_("show this help message and exit"),
    N_("show program's version number and exit"),
    N_("%(prog)s: error: %(message)s\n"),
    N_("argument %(argument_name)s: %(message)s"),
    N_("the following arguments are required: %s"),
    N_("unrecognized arguments: %s"),
    N_("expected one argument"),
    N_("expected at least one argument"),
    N_("expected at most one argument"),
    N_("invalid choice: %(value)r (choose from %(choices)s)"),
    N_("invalid %(type)s value: %(value)r"),
    N_("ambiguous option: %(option)s could match %(matches)s"),
    N_("not allowed with argument %s"),
    N_("one of the arguments %s is required"),
)


def translate_argparse() -> None:
    """Let argparse's own words follow this process's language (the client and
    lanchatctl; the daemon's command line stays English, as its diagnostics do)."""
    import argparse

    argparse._ = _  # type: ignore[attr-defined]  # argparse's module-level gettext
    argparse.ngettext = ngettext  # type: ignore[attr-defined]


setup()

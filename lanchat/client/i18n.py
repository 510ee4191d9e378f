"""The client's translations: the shared catalogue of ``lanchat.i18n``.

Kept as the client's import point (``from lanchat.client.i18n import _``); the
language choice, the catalogues and the compiler live in ``lanchat.i18n``.
"""

from __future__ import annotations

from lanchat.i18n import (
    DOMAIN,
    LANGUAGES,
    LOCALE_DIR,
    N_,
    _,
    language,
    load_catalogue,
    ngettext,
    requested_languages,
    setup,
    translated,
)

__all__ = ["DOMAIN", "LANGUAGES", "LOCALE_DIR", "N_", "_", "language", "load_catalogue",
           "ngettext", "requested_languages", "setup", "translated"]

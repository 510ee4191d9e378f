"""The two kinds of protocol error.

``RemoteProtocolError`` means the peer sent something we cannot accept: it carries a
stable ``code`` (a short snake_case word documented in docs/protocol.md) and a sentence
for a person.  The daemon turns it into an error reply or a disconnect for that one
peer; it never reaches the event loop.

The sentence is English; it is written as a template marked with ``N_`` and filled in
with ``values``, so whoever shows it to a person can translate the template and fill
it in again (``lanchat.i18n``; this package reads no catalogue itself).

``LocalProtocolError`` means our own code tried to do something the protocol forbids
(encode an invalid event, send before the handshake): a bug on our side.
"""

from __future__ import annotations

from collections.abc import Mapping


def N_(message: str) -> str:
    """Marks a sentence for the translation catalogues where it is written."""
    return message


class ProtocolError(Exception):
    def __init__(self, code: str, template: str, **values: object) -> None:
        message = template.format(**values) if values else template
        super().__init__(message)
        self.code = code
        self.message = message  # in English
        self.template = template
        self.values: Mapping[str, object] = values

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol."""


class LocalProtocolError(ProtocolError):
    """We tried to break the protocol."""

"""The two kinds of protocol error.

``RemoteProtocolError`` means the peer sent something we cannot accept: it carries a
stable ``code`` (a short snake_case word documented in docs/protocol.md) and a sentence
for a person.  The daemon turns it into an error reply or a disconnect for that one
peer; it never reaches the event loop.

``LocalProtocolError`` means our own code tried to do something the protocol forbids
(encode an invalid event, send before the handshake): a bug on our side.
"""

from __future__ import annotations


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol."""


class LocalProtocolError(ProtocolError):
    """We tried to break the protocol."""

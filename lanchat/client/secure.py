"""The client's TLS step: between the socket and the session, and where the pin is checked.

``SecureStep`` sits between ``ChatClient``'s socket and the ``Session``: bytes from the
socket go through ``incoming`` (plaintext comes out), the session's bytes through
``outgoing``.  Once per connection ``begin`` starts it.  It lives as long as the
``ChatClient``, so every reconnect goes the same way.

How it decides between TLS and plain text (``mode``):

* ``"tls"``: the server offers TLS (its discovery answer named a TLS port) or the port
  is the TLS default; the handshake starts at once.
* ``"plain"``: ``--insecure``, or a server whose answer offers no TLS.
* ``"auto"``: ``--server HOST:PORT`` with a port of unknown kind.  A lanchat plain
  port greets first (``LANCHAT/1 ready ...``); a TLS port says nothing until the
  client's hello.  So the step waits up to ``AUTO_WAIT`` seconds for a greeting: one
  that comes means plain text, silence means TLS.

When the pin is checked (``lanchat.client.pinning``): at the end of the handshake when
the server id is known beforehand (from discovery or the last server joined), and in
any case on the ``welcome``, which names the server id, before the session's ``join``
(the PIN and the name) is written: ``ChatClient`` asks ``check_welcome`` first.  Only
when the handshake showed the key already remembered for the expected id (``proven``)
may the join go with the hello, before the welcome.  A
plain-text connection to a server id known to speak TLS is refused the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from lanchat import tls
from lanchat.client import pinning
from lanchat.client.i18n import _
from lanchat.protocol import chat

AUTO_WAIT = 0.3
GREETING_START = b"LANCHAT/"


def closed_at_once() -> str:
    # The daemon refuses a new client (standby, stopped, full) over TLS once the
    # handshake is over, with the same greeting line as over plain text; only under a
    # flood of refused connections does it close one before the handshake, and then
    # this is all the client can say.
    return _("the server closed the connection before the TLS handshake was over: it may "
             "be in standby, stopped or full; try again later")


class SecureStep:
    def __init__(self, mode: str, known: pinning.KnownServers, *,
                 expected_id: str | None = None, name: str = "", insecure: bool = False,
                 say: Callable[[str], None] = lambda text: None) -> None:
        if mode not in ("tls", "plain", "auto"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.known = known
        self.expected_id = expected_id
        self.name = name  # the server's name for people, as discovery gave it
        self.insecure = insecure
        self.say = say
        self._context = tls.client_context() if mode != "plain" else None
        self.engine: tls.TlsEngine | None = None
        self.encrypted = False      # this connection is TLS and its handshake is over
        self.fingerprint: str | None = None
        self.ready = False          # the session may be told the connection is made
        self.verified = False       # the welcome's server id was checked
        self.proven = False         # the handshake's key is the one remembered for the id
        self._auto_until: float | None = None
        self._early = b""           # what a plain server said while we waited

    # ------------------------------------------------------------------ per connection

    def begin(self, now: float) -> None:
        """A TCP connection was made."""
        self.engine = None
        self.encrypted = False
        self.fingerprint = None
        self.verified = False
        self.proven = False
        self._early = b""
        self._auto_until = None
        if self.mode == "plain":
            self.ready = True
        elif self.mode == "auto":
            self.ready = False
            self._auto_until = now + AUTO_WAIT
        else:
            self._start_tls()

    def deadline(self) -> float | None:
        return self._auto_until

    def tick(self, now: float) -> None:
        """Silence after the wait in auto mode: this port speaks TLS."""
        if self._auto_until is not None and now >= self._auto_until:
            self._auto_until = None
            self._start_tls()

    def _start_tls(self) -> None:
        assert self._context is not None
        self.ready = False
        self.engine = tls.TlsEngine(self._context, server_side=False)

    def incoming(self, data: bytes) -> bytes:
        """Bytes from the socket (``b""``: end of file) -> plaintext for the session.

        Raises pinning.Refused (the message says why) or tls.TlsError.
        """
        if self.engine is None:
            if self._auto_until is None:
                return data  # plain text
            self._early += data
            if data and len(self._early) < len(GREETING_START) \
                    and GREETING_START.startswith(self._early):
                return b""  # too little to tell yet
            if not data and not self._early:
                raise tls.TlsError(closed_at_once())
            if not data or self._early.startswith(GREETING_START):
                # A plain lanchat greeting (or the end): this port has no TLS.
                self._auto_until = None
                self.ready = True
                early, self._early = self._early, b""
                return early
            raise tls.TlsError(_("the server spoke neither lanchat nor TLS"))
        was_done = self.engine.handshake_done
        try:
            plain = self.engine.receive_data(data)
        except tls.TlsError:
            if not was_done and data.startswith(GREETING_START):
                raise tls.TlsError(_("this port speaks plain text, not TLS; give the TLS "
                                     "port, or use --insecure")) from None
            if not was_done and not data:
                raise tls.TlsError(closed_at_once()) from None
            raise
        if not was_done and self.engine.handshake_done:
            self.fingerprint = self.engine.peer_fingerprint()
            self.encrypted = True
            self.ready = True
            if self.expected_id is not None:
                # No sentence back: the id was known and this is its key.
                self.proven = self._check(self.expected_id, self.name) is None
        return plain

    def outgoing(self, data: bytes) -> bytes:
        """The session's bytes -> bytes for the socket (with any TLS bytes of our own)."""
        if self.engine is None:
            return data
        if data:
            self.engine.send(data)
        return self.engine.data_to_send()

    def check_welcome(self, welcome: chat.Welcome) -> None:
        """Before the PIN and name go out: is this the server we know?  Raises Refused."""
        if self.verified:
            return
        self._check(welcome.server_id, welcome.name)
        self.verified = True
        if self.expected_id is None:
            self.expected_id = welcome.server_id  # reconnects check at the handshake

    def _check(self, server_id: str, name: str) -> str | None:
        """Raises pinning.Refused; returns the first-contact sentence said, if any."""
        presented = self.fingerprint if self.encrypted else None
        message = pinning.check(self.known, server_id, presented, insecure=self.insecure,
                                name=name)
        if message:
            self.say(message)
        return message

    def close(self) -> bytes:
        """Our goodbye (close_notify) to write before closing, if any."""
        if self.engine is None or not self.engine.handshake_done:
            return b""
        self.engine.close()
        return self.engine.data_to_send()

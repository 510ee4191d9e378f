"""Chat over TLS: a transport adapter (lanchatd/transport.py) with TLS under the lines.

Theory of operation
-------------------
``TlsTransport`` puts a ``lanchat.tls.TlsEngine`` in front of another adapter (the
plain ``LineTransport`` for chat over TLS; any adapter of the same contract, such as a
WebSocket one for HTTPS): bytes from the socket go into the engine, the plaintext that
comes out goes into the inner adapter, and what the inner adapter makes of the core's
chunks is encrypted on its way out.  The loop and the core see one more adapter,
nothing else (STYLE.md 13).

When the core closes the client, the last chunks (a ``bye``) and the inner adapter's
own goodbye are encrypted first, then the TLS close_notify follows.

The core greets a client as soon as it is accepted; that greeting waits in the engine
until the handshake is over (TLS 1.3 sends it right behind the server's first flight).
What an adapter keeps before the handshake is bounded: an unjoined client gets only a
greeting, a ``bye`` or a notice, and past ``MAX_HELD`` bytes the client is closed.

A client refused by the core as it connects (the server in standby, stopped or full)
gets its refusal over TLS like any other output: ``close`` during the handshake keeps
the engine open and the timer running, ``handshaking`` tells the loop to go on feeding
the adapter and not to half-close yet, and once the handshake is over the refusal and
the close_notify go out.  So a TLS client reads the same ``LANCHAT/1 standby ...``
line a plain one does.  What that wait may cost is bounded twice: each one by the
handshake timeout, and all of one listener's together by ``CLOSING_HANDSHAKES``
(a flood of connections to a full server holds at most that many handshakes open;
past it a refused client is closed at once, before its handshake, as it always was,
and the client can only say that the server may be in standby, stopped or full).

A client that does not finish the handshake within ``tls_handshake_timeout`` seconds
is closed by a timer (the core's longer ``handshake_timeout`` would get it too, but
a handshake is a matter of round trips, not of a person typing).  Garbage instead of a
ClientHello is closed at once; when its first byte cannot start TLS at all (someone
typing at the TLS port with ``nc``) it gets one plain-text line saying what the port
is, so the mistake explains itself.  Renegotiation is refused by the context
(``lanchatd.tls.server_context``).

HTTPS for the browser client (not wired yet: the web port was not on main when this
was written).  The web port's adapter factory goes inside this one, with the same
context and so the same key:
``loop.add_listener(sock, factory(context, timeout, inner=web.make_site(...)))``, behind
a configuration switch (``https = true`` in ``[web]``), the page's address then
``https://``.  A browser shows a self-signed certificate as untrusted until each person
accepts it (or the administrator gives ``tls_cert``/``tls_key`` from an authority the
browsers trust); that choice and its warning belong in the web documentation.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from lanchat.tls import NotTlsError, TlsEngine, TlsError
from lanchatd.transport import (
    Input,
    LineTransport,
    Owner,
    TimerHandle,
    Transport,
    TransportFactory,
)

MAX_HELD = 65536  # plaintext an unfinished handshake may hold back (an unjoined client's)
# Connections of one listener that the core closed before their handshake was over and
# that wait for it to send their last words (a refusal) encrypted.  Each is an OpenSSL
# handshake in progress (tens of KiB at most) for at most tls_handshake_timeout.
CLOSING_HANDSHAKES = 64
NOT_TLS_HINT = (b"This is lanchat's TLS port: connect with a TLS client (lanchat, "
                b"openssl s_client, ncat --ssl), or use the plain port.\r\n")


class HandshakeSlots:
    """How many more of one listener's closed connections may wait for their handshake."""

    __slots__ = ("free",)

    def __init__(self, size: int = CLOSING_HANDSHAKES) -> None:
        self.free = size


class TlsTransport:
    __slots__ = ("_closing", "_engine", "_eof_given", "_failed", "_hint", "_inner",
                 "_owner", "_slots", "_timer", "_waiting")

    def __init__(self, owner: Owner, max_line: int, context: ssl.SSLContext,
                 handshake_timeout: float, inner: TransportFactory = LineTransport,
                 slots: HandshakeSlots | None = None) -> None:
        self._owner = owner
        self._slots = slots if slots is not None else HandshakeSlots()
        self._waiting = False  # closed by the core, holding a slot until the handshake ends
        self._inner = inner(owner, max_line)
        self._engine = TlsEngine(context, server_side=True)
        self._failed = False
        self._closing = False
        self._eof_given = False
        self._hint = b""
        self._timer: TimerHandle | None = owner.call_later(handshake_timeout, self._expired)

    @property
    def max_line(self) -> int:
        return self._inner.max_line

    @max_line.setter
    def max_line(self, value: int) -> None:
        self._inner.max_line = value

    @property
    def handshake_done(self) -> bool:
        return self._engine.handshake_done

    @property
    def handshaking(self) -> bool:
        """Closed by the core during the handshake, and waiting for it to end so that
        the last words go out encrypted (the loop feeds it and does not half-close)."""
        return self._waiting

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return
        engine = self._engine
        was_done = engine.handshake_done
        try:
            plain = engine.receive_data(data)
        except NotTlsError:
            self._hint = NOT_TLS_HINT
            self._fail("not a TLS client")
            return
        except TlsError as exc:
            self._fail(str(exc))
            return
        if engine.handshake_done and not was_done:
            self._cancel_timer()
            self._release()
            self._owner.want_write()  # the greeting (or the refusal) held back until now
        if self._closing:
            pass  # a closed client's input is dropped, as the loop drops a plain one's
        elif plain:
            self._inner.data_received(plain)
        if engine.eof and not self._eof_given and not self._closing:
            self._eof_given = True
            self._inner.data_received(b"")
        if engine.data_to_send_pending():
            self._owner.want_write()  # handshake messages or an alert, not core output

    def lines(self, limit: int) -> list[Input]:
        return self._inner.lines(limit)

    @property
    def has_lines(self) -> bool:
        return self._inner.has_lines

    def data_to_send(self, chunks: list[bytes]) -> bytes:
        if self._hint:
            hint, self._hint = self._hint, b""
            return hint
        engine = self._engine
        if self._failed:
            return engine.data_to_send()  # an alert, at most
        try:
            inner = self._inner.data_to_send(chunks)
            if not isinstance(inner, bytes):  # the plain adapter's pieces (sendmsg's)
                inner = b"".join(inner)
            out = engine.encrypt(inner)
        except TlsError as exc:
            # Not from inside the loop's write: close on its next timer run.
            self._failed = True
            reason = str(exc)
            self._owner.call_later(0.0, lambda now: self._owner.close(reason))
            return b""
        if self._closing and not engine.closed and not self._waiting:
            engine.close()  # after the last chunks and the inner goodbye
            out += engine.data_to_send()
        elif not engine.handshake_done and engine.buffered > MAX_HELD:
            self._failed = True
            self._owner.call_later(0.0, lambda now: self._owner.close(
                "too much output waiting for the TLS handshake"))
        return out

    def close(self) -> None:
        """The last chunks come in the next ``data_to_send``; close_notify after them.

        During the handshake (the core refused the client as it connected), the
        handshake goes on, within its timeout, if a slot is free: the last chunks wait
        in the engine and go out encrypted once it is over."""
        if self._closing:
            return
        self._closing = True
        self._inner.close()
        slots = self._slots
        if (not self._engine.handshake_done and not self._failed and self._timer is not None
                and slots.free > 0):
            slots.free -= 1
            self._waiting = True  # the handshake timer stays: it bounds the wait
        else:
            self._cancel_timer()

    def _expired(self, now: float) -> None:
        self._timer = None
        if not self._engine.handshake_done and not self._failed:
            self._fail("TLS handshake timed out")

    def _fail(self, reason: str) -> None:
        self._failed = True
        self._cancel_timer()
        self._release()
        self._owner.close(reason)
        self._owner.want_write()  # a closing connection is half-closed now (and any alert)

    def _release(self) -> None:
        if self._waiting:
            self._waiting = False
            self._slots.free += 1

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def factory(context: ssl.SSLContext, handshake_timeout: Callable[[], float],
            inner: TransportFactory = LineTransport) -> TransportFactory:
    """A listener's factory: TLS in front of ``inner`` adapters (chat lines by default).

    ``handshake_timeout`` is read per connection, so a reload changes it for new ones.
    The listener's connections share one ``HandshakeSlots``.
    """
    slots = HandshakeSlots()

    def make(owner: Owner, max_line: int) -> Transport:
        return TlsTransport(owner, max_line, context, handshake_timeout(), inner, slots)

    return make

"""The socket side of a session: one non-blocking TCP connection in a selectors loop.

``ChatClient`` owns the socket of a ``Session`` and nothing else: it opens the
connection when the session wants one (at once, then after each drop when the
backoff says), feeds received bytes to the session, writes what the session
produces, and closes the socket when the session says so.  The events the session
returns are handed to the interface through the ``emit`` callback.  The interface
(plain mode, curses) owns the loop: it registers its own input on the same selector
and calls ``timeout()`` and ``tick()`` around ``select``.

With a ``SecureStep`` (lanchat/client/secure.py) the bytes go through TLS, and the
server's key is checked against the pinned one before the session's first bytes after
the ``welcome`` (the PIN and the name) are written; without one, plain TCP as before.

Name resolution is the one blocking step (``getaddrinfo``); on a LAN it is a hosts
file or mDNS lookup.  The connect itself is non-blocking, with a timeout.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Callable

from lanchat import tls
from lanchat.client import pinning
from lanchat.client.i18n import _
from lanchat.client.secure import SecureStep
from lanchat.client.session import Session, UiEvent

CONNECT_TIMEOUT = 10.0
RECV_SIZE = 65536


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_server(text: str, default_port: int) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT`` or a bare IPv6 address -> (host, port).

    Raises ValueError with a sentence for a person.
    """
    text = text.strip()
    if not text:
        raise ValueError(_("the server address is empty"))
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(_("{value!r} is not HOST[:PORT] ([IPv6]:PORT for IPv6)").format(
                value=text))
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _sep, port_text = text.partition(":")
    else:
        host = text  # a name, IPv4 address or bare IPv6 address
    if not host:
        raise ValueError(_("{value!r} has no host").format(value=text))
    if port_text == "" and (text.endswith(":")):
        raise ValueError(_("{value!r} has an empty port").format(value=text))
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(_("the port in {value!r} is not a number from 1 to 65535").format(
                value=text))
        port = int(port_text)
    return host, port


class ChatClient:
    def __init__(self, session: Session, host: str, port: int,
                 selector: selectors.BaseSelector, emit: Callable[[list[UiEvent]], None], *,
                 clock: Callable[[], float] = time.monotonic,
                 connect_timeout: float = CONNECT_TIMEOUT,
                 secure: SecureStep | None = None) -> None:
        self.session = session
        self.host = host
        self.port = port
        self.selector = selector
        self.emit = emit
        self.clock = clock
        self.connect_timeout = connect_timeout
        self.sock: socket.socket | None = None
        self._connecting_until: float | None = None
        self._out = bytearray()
        self._registered_mask = 0
        self.secure = secure
        self._old_welcome: object = None  # the last connection's, not to be checked again
        # Connected, but the TLS step is not through (a handshake, or waiting to see
        # which the port speaks): a silent server is given up like a silent connect.
        self._securing_until: float | None = None

    @property
    def encrypted(self) -> bool:
        """This connection is TLS (False also while not connected)."""
        return self.secure is not None and self.secure.encrypted

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    # ------------------------------------------------------------------ loop hooks

    def timeout(self) -> float | None:
        """Seconds until ``tick`` has something to do (None: nothing scheduled)."""
        now = self.clock()
        times = []
        deadline = self.session.next_deadline()
        if deadline is not None:
            times.append(deadline)
        if self._connecting_until is not None:
            times.append(self._connecting_until)
        if self.secure is not None and self.secure.deadline() is not None:
            times.append(self.secure.deadline() or 0.0)
        if self._securing_until is not None:
            times.append(self._securing_until)
        if not times:
            return None
        return max(0.0, min(times) - now)

    def gives_up_at(self) -> float | None:
        """When the connection being opened is given up if the server stays silent."""
        if self._connecting_until is not None:
            return self._connecting_until
        if self._securing_until is not None:
            return self._securing_until
        return self.session.handshake_deadline

    def tick(self) -> None:
        """Run what is due: session timers, a connect timeout, a scheduled reconnect."""
        now = self.clock()
        if self._connecting_until is not None and now >= self._connecting_until:
            self._close()
            self.emit(self.session.connection_failed(
                f"no answer from {self.address} within {self.connect_timeout:g} s", now))
        if self._securing_until is not None and now >= self._securing_until:
            self._close()
            self.emit(self.session.connection_failed(
                f"no answer from {self.address} within {self.connect_timeout:g} s "
                "(TLS handshake)", now))
        if self.secure is not None and self.sock is not None and self.secure.deadline() is not None:
            self.secure.tick(now)
            self._secure_progress([])
        self.emit(self.session.tick(now))
        self.flush()
        if self.session.wants_connect(self.clock()):
            self.connect()

    def flush(self) -> None:
        """Write what the session has produced; close if the session asks."""
        data = self.session.data_to_send()
        if data and self.secure is not None:
            if not self._verify([]):
                return
            data = self.secure.outgoing(data)
        if data:
            self._out += data
        if self.sock is not None and self._connecting_until is None and self._out:
            self._write()
        if self.session.must_close and self.sock is not None:
            # The session knows why (no answer, a finished session); it says so itself.
            self._close()
            self.emit(self.session.connection_lost("closed by the client", self.clock()))

    # ------------------------------------------------------------------ connecting

    def connect(self) -> None:
        now = self.clock()
        self.emit(self.session.connecting(now))
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            self.emit(self.session.connection_failed(
                f"cannot resolve {self.host!r}: {exc.strerror}", self.clock()))
            return
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError:
            pass
        code = sock.connect_ex(sockaddr)
        self.sock = sock
        self._out.clear()
        if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._connecting_until = now + self.connect_timeout
            self._watch(selectors.EVENT_WRITE)
            if code == 0:
                self._connected()
        else:
            self._close()
            self.emit(self.session.connection_failed(os.strerror(code), self.clock()))

    def _connected(self) -> None:
        assert self.sock is not None
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._close()
            self.emit(self.session.connection_failed(
                f"{self.address}: {os.strerror(error)}", self.clock()))
            return
        self._connecting_until = None
        self._watch(selectors.EVENT_READ)
        if self.secure is not None:
            self._old_welcome = self.session.welcome
            self.secure.begin(self.clock())
            if not self.secure.ready:  # a TLS handshake, or waiting to see which
                self._securing_until = self.clock() + self.connect_timeout
                self._secure_progress([])
                return
        self.emit(self.session.connection_made(self.clock(), join_early=self._proven()))
        self.flush()

    # ------------------------------------------------------------------ I/O

    def _watch(self, mask: int) -> None:
        assert self.sock is not None
        if mask == self._registered_mask:
            return
        if self._registered_mask:
            self.selector.modify(self.sock, mask, self._on_ready)
        else:
            self.selector.register(self.sock, mask, self._on_ready)
        self._registered_mask = mask

    def _on_ready(self, mask: int) -> None:
        if self.sock is None:
            return
        if self._connecting_until is not None:
            if mask & selectors.EVENT_WRITE:
                self._connected()
            return
        if mask & selectors.EVENT_READ:
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as exc:
                self._lost(exc.strerror or str(exc))
                return
            if data is not None and self.secure is not None:
                self._secure_receive(data)
            elif data is not None:
                events = self.session.receive_data(data, self.clock())
                if not data and self.sock is not None:
                    self._close()
                self.emit(events)
        if mask & selectors.EVENT_WRITE and self.sock is not None:
            self._write()
        self.flush()

    # ------------------------------------------------------------------ the TLS step

    def _secure_receive(self, data: bytes) -> None:
        assert self.secure is not None
        was_ready = self.secure.ready
        try:
            plain = self.secure.incoming(data)
        except pinning.Refused as exc:
            self._refuse(str(exc))
            return
        except tls.TlsError as exc:
            self._lost(str(exc))
            return
        events: list[UiEvent] = []
        if self.secure.ready and not was_ready:
            self._securing_until = None
            events += self.session.connection_made(self.clock(), join_early=self._proven())
        if plain:
            events += self.session.receive_data(plain, self.clock())
        if not data:
            events += self.session.receive_data(b"", self.clock())
            if self.sock is not None:
                self._close()
        if self._verify(events):
            self._secure_progress(events)

    def _proven(self) -> bool:
        """Whether the PIN and name may go before the welcome's server id is checked."""
        return self.secure is None or (self.secure.encrypted and self.secure.proven)

    def _verify(self, events: list[UiEvent]) -> bool:
        """Check the welcome's server id before anything more is written or shown."""
        assert self.secure is not None
        welcome = self.session.welcome
        if (self.secure.verified or welcome is None or welcome is self._old_welcome
                or not self.secure.ready):
            return True
        try:
            self.secure.check_welcome(welcome)
        except pinning.Refused as exc:
            self._refuse(str(exc))
            return False
        return True

    def _secure_progress(self, events: list[UiEvent]) -> None:
        """Write the TLS step's own bytes (handshake), then show what the session said."""
        assert self.secure is not None
        if self.sock is not None:
            raw = self.secure.outgoing(b"")
            if raw:
                self._out += raw
                self._write()
        self.emit(events)

    def _refuse(self, message: str) -> None:
        """This server must not get the PIN: drop everything and end the session."""
        self.session.data_to_send()  # the join that must not leave
        self._out.clear()
        self._close()
        self.emit(self.session.abandon("key_refused", message, self.clock()))

    def _write(self) -> None:
        assert self.sock is not None
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(exc.strerror or str(exc))
            return
        del self._out[:sent]
        self._watch(selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0))

    def _lost(self, reason: str) -> None:
        self._close()
        self.emit(self.session.connection_lost(reason, self.clock()))

    def _close(self) -> None:
        self._connecting_until = None
        self._securing_until = None
        self._out.clear()
        if self.sock is not None:
            if self._registered_mask:
                self.selector.unregister(self.sock)
            self._registered_mask = 0
            self.sock.close()
            self.sock = None

    def use_session(self, session: Session) -> None:
        """Go on with another session (another room or name): what the old one still
        has to say (its quit) is sent, its connection closed, and the new one connects
        on the next ``tick``."""
        self.flush()
        self.close()
        self.session = session

    def close(self) -> None:
        """Drop the connection without telling the session (the program is ending)."""
        if self.sock is not None and self._out and self._connecting_until is None:
            try:
                self.sock.send(self._out)
            except OSError:
                pass
        self._close()

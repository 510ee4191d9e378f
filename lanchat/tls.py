"""TLS without sockets: the standard library's ``ssl.SSLObject`` over two memory buffers.

Theory of operation
-------------------
``ssl.SSLObject`` is OpenSSL with its I/O unplugged: it reads TLS records from one
``ssl.MemoryBIO`` and writes them to another, and never touches a socket.  ``TlsEngine``
wraps one with the three verbs every protocol layer here has (STYLE.md 1):

* ``receive_data(bytes)`` feeds what came off the wire (``b""`` for end of file) and
  returns the plaintext that became readable, possibly ``b""`` (a handshake message, a
  partial record);
* ``send(plaintext)`` encrypts (before the handshake is over, the plaintext waits);
* ``data_to_send()`` hands back the TLS bytes to write, handshake messages included.

The owner (the daemon's loop, the client's connection) moves bytes between a
non-blocking socket and the engine; "want read" and "want write" are just "the engine
returned nothing yet" and "``data_to_send`` is not empty".  Both the daemon and the
client use it, so a TLS bug has one place to be fixed.

Errors are the peer's (``TlsError``): a handshake that fails, garbage where a TLS
record should be (``NotTlsError`` when the very first byte cannot start one, so the
owner can tell a person who typed at the TLS port), a record that does not decrypt.
The engine never raises anything else for bytes it is fed.

The fingerprint of a peer's key (``certificate_fingerprint``) is that of the
certificate's SubjectPublicKeyInfo; both are defined in ``lanchat.protocol.fingerprint``.
"""

from __future__ import annotations

import ssl

from lanchat.protocol import fingerprint

READ_SIZE = 65536
# OpenSSL's memory BIO grows its buffer to the most it ever held and never shrinks it:
# a member who was once sent a 60 KB pass of output, or pasted a long text, kept 80 KB
# in each MemoryBIO for as long as it stayed (docs/performance.md, "TLS beside plain
# text").  So bytes cross the BIOs a slice at a time, and each holds about a slice at
# most.  Input is fed 4 KiB at a time (a read is rare and the cost per slice small).
# Output goes 16 KiB at a time, a TLS record's most: the records are those one large
# write makes, and smaller slices would make more records, each costing OpenSSL about
# 2.5 us (4 KiB slices made the fan-out of large shares 80 % dearer).
BIO_SLICE_IN = 4096
BIO_SLICE_OUT = 16384
# A TLS record starts with its content type; a connection starts with a handshake
# record (22).  Anything else as the first byte is not a TLS client at all.
HANDSHAKE_RECORD = 0x16


class TlsError(Exception):
    """The peer broke TLS: the connection cannot go on."""


class NotTlsError(TlsError):
    """The first bytes received are not TLS (someone typed, or spoke another protocol)."""


class TlsEngine:
    """One TLS connection, either side, sans I/O."""

    __slots__ = ("_held", "_in", "_obj", "_out", "closed", "eof", "handshake_done",
                 "server_side", "started")

    def __init__(self, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=server_side,
                                     server_hostname=server_hostname)
        self.server_side = server_side
        self.handshake_done = False
        self.eof = False       # the peer closed (close_notify or end of file)
        self.closed = False    # we sent our close_notify
        self.started = False   # any byte received yet
        self._held: list[bytes] = []  # plaintext sent before the handshake was over
        if not server_side:
            self._step()  # the client speaks first: its ClientHello is ready to send

    # ------------------------------------------------------------------ the three verbs

    def receive_data(self, data: bytes) -> bytes:
        """Feed bytes from the wire (``b""``: end of file); return the new plaintext.

        Raises TlsError (NotTlsError for a first byte that cannot start TLS).
        """
        if data:
            if not self.started:
                self.started = True
                if self.server_side and data[0] != HANDSHAKE_RECORD:
                    raise NotTlsError("the client did not start a TLS handshake")
            if len(data) > BIO_SLICE_IN:
                return self._receive_sliced(data)
            self._in.write(data)
        else:
            self._in.write_eof()
            self.eof = True
            if not self.handshake_done:
                raise TlsError("the connection closed during the TLS handshake")
        if not self.handshake_done and not self._step():
            return b""
        return self._read()

    def _receive_sliced(self, data: bytes) -> bytes:
        """``receive_data`` of a large read, a slice at a time (BIO_SLICE_IN)."""
        parts: list[bytes] = []
        view = memoryview(data)
        for start in range(0, len(data), BIO_SLICE_IN):
            self._in.write(view[start:start + BIO_SLICE_IN])
            if not self.handshake_done and not self._step():
                continue
            if self.eof:
                break  # nothing after the close_notify is read
            part = self._read()
            if part:
                parts.append(part)
        return b"".join(parts)

    def send(self, plaintext: bytes) -> None:
        """Encrypt ``plaintext`` (held until the handshake is over)."""
        if self.closed or not plaintext:
            return
        if not self.handshake_done:
            self._held.append(plaintext)
            return
        try:
            self._obj.write(plaintext)
        except ssl.SSLError as exc:  # the session is already broken
            raise TlsError(_describe(exc)) from None

    def encrypt(self, plaintext: bytes) -> bytes:
        """``send`` then ``data_to_send`` in one call: the daemon's path for the core's
        output, taken once per member per pass of the loop."""
        if self.handshake_done and not self.closed:
            if len(plaintext) > BIO_SLICE_OUT:
                return self._encrypt_sliced(plaintext)
            if plaintext:
                try:
                    self._obj.write(plaintext)
                except ssl.SSLError as exc:
                    raise TlsError(_describe(exc)) from None
            out = self._out
            return out.read() if out.pending else b""
        self.send(plaintext)
        return self.data_to_send()

    def _encrypt_sliced(self, plaintext: bytes) -> bytes:
        """``encrypt`` of a large output, a record at a time (BIO_SLICE_OUT)."""
        out = self._out
        parts = [out.read()] if out.pending else []
        view = memoryview(plaintext)
        write = self._obj.write
        try:
            for start in range(0, len(plaintext), BIO_SLICE_OUT):
                write(view[start:start + BIO_SLICE_OUT])
                parts.append(out.read())
        except ssl.SSLError as exc:
            raise TlsError(_describe(exc)) from None
        return b"".join(parts)

    def data_to_send(self) -> bytes:
        """TLS bytes to write to the wire now (handshake messages, records, alerts)."""
        return self._out.read() if self._out.pending else b""

    # ------------------------------------------------------------------ the rest

    def close(self) -> None:
        """Say goodbye (close_notify); what was sent before it still goes first."""
        if self.closed:
            return
        self.closed = True
        if not self.handshake_done:
            return  # nothing was said; the socket's close is the goodbye
        try:
            self._obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # our close_notify is in the outgoing buffer; the peer's is not needed
        except ssl.SSLError:
            pass

    def data_to_send_pending(self) -> bool:
        """True when ``data_to_send`` has bytes for the wire."""
        return self._out.pending > 0

    @property
    def buffered(self) -> int:
        """Plaintext bytes waiting for the handshake, plus TLS bytes not yet taken."""
        return sum(len(chunk) for chunk in self._held) + self._out.pending

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate in DER, once the handshake is over (None without one)."""
        if not self.handshake_done:
            return None
        return self._obj.getpeercert(binary_form=True)

    def peer_fingerprint(self) -> str | None:
        der = self.peer_certificate()
        return certificate_fingerprint(der) if der else None

    def version(self) -> str | None:
        return self._obj.version()

    def _step(self) -> bool:
        """Advance the handshake; True once it is over."""
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as exc:
            raise TlsError(_describe(exc)) from None
        self.handshake_done = True
        held, self._held = self._held, []
        for chunk in held:
            self.send(chunk)
        return True

    def _read(self) -> bytes:
        parts: list[bytes] = []
        while True:
            try:
                chunk = self._obj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.eof = True  # close_notify, or a plain end of file after the handshake
                break
            except ssl.SSLError as exc:
                raise TlsError(_describe(exc)) from None
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
        return b"".join(parts) if len(parts) != 1 else parts[0]


def _describe(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    return "TLS error: " + (str(reason).replace("_", " ").lower() if reason else str(exc))


def client_context() -> ssl.SSLContext:
    """The client's context: TLS 1.2 or later, no certificate authority, no host name.

    lanchat servers have self-signed certificates; the client trusts a server by its
    key's fingerprint instead (``lanchat.client.pinning``), so the chain is not checked.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    return context


def certificate_fingerprint(der: bytes) -> str:
    """The fingerprint of the public key in a DER certificate (raises ValueError)."""
    return fingerprint.of_certificate(der)

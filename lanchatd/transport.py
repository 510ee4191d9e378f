"""The transport seam: how a client's bytes become protocol lines, and lines bytes.

Theory of operation
-------------------
The chat core (lanchatd/core.py) speaks in protocol lines and never learns how a
client came: plain TCP, TLS or WebSocket.  Between it and the socket sits one
*transport adapter* per connection, a sans-I/O object like h11's connection: it never
touches the socket.  The loop (lanchatd/loop.py) owns the socket: it reads, hands the
adapter the bytes, hands the core the adapter's lines, hands the adapter the core's
output and writes what the adapter makes of it.  Adding a transport is writing one
adapter class and giving its listener a factory (``Loop.add_listener``); neither the
core nor the loop's connection code changes.

The contract, in the order things happen:

Creation
    For each accepted socket the loop calls the listener's factory,
    ``factory(owner, max_line)``, and gets a ``Transport``.  ``owner`` is the adapter's
    only way back to the loop (the ``Owner`` protocol below: want-write, close, a
    timer); ``max_line`` is the configured ``max_line_bytes``, which the loop may later
    change by assigning ``transport.max_line`` (a configuration reload).  Adapters import
    nothing from the loop or the core.

Peer address
    The loop takes it from ``accept()`` and tells the core (``ChatCore.connect``)
    before the adapter sees any byte.  An adapter has no say in it: no proxy header is
    trusted.  The core greets the client at once; an adapter that must first complete
    its own handshake (TLS, the WebSocket upgrade) keeps the core's output until it can
    send it.  The core's ``handshake_timeout`` bounds that handshake too: a client that
    never finishes it is closed like one that never joins.

Input: bytes in, lines out
    ``data_received(data)`` gets what ``recv`` returned, ``b""`` once when the peer
    closed its side.  Then the loop calls ``lines(limit)`` and passes the result to
    ``ChatCore.receive``.  An item of that list is one of:

    - ``bytes``: one complete protocol line, *without* its line ending (the adapter's
      framing: for plain TCP ``\\n``, ``\\r\\n``, ``\\r\\0`` or a lone ``\\r``; for
      WebSocket, one text message is one line), at most ``max_line - 1`` bytes, not
      yet decoded (the core checks UTF-8 and reports ``bad_utf8``);
    - ``chat.LINE_TOO_LONG``: a line longer than ``max_line`` was received and dropped
      (the core answers ``line_too_long`` and counts it as a protocol error);
    - ``chat.END_OF_INPUT``: the peer closed its side (or, for WebSocket, sent a close
      frame); always the last item, given once.

    ``lines`` returns at most ``limit`` items; the rest stay in the adapter and
    ``has_lines`` is true.  The loop then does not read the socket again until the
    adapter's lines are all taken (its bytes wait in the kernel, which slows the
    sender), so one client cannot make a pass of the loop long.  ``limit`` is what the
    core allows the connection now (its line budget, ``ChatCore.allowance``) within
    the pass's share: a flooding client is given a few lines at a time, or none, and
    while it has none its socket is not read at all (fakelag).  An adapter should not
    turn more of its buffered bytes into line objects than ``limit`` calls for: what
    it holds for a throttled client is memory held on the attacker's behalf.  An adapter may keep a
    partial line (or frame) between calls, but never more than ``max_line`` bytes of
    one line: a longer one is skipped as it arrives, not buffered.

Output: chunks in, bytes out
    The core's output is a list of *chunks*: each chunk is a ``bytes`` object holding
    one or more complete lines, each ended by ``\\n`` (no ``\\r``), UTF-8.  The same
    chunk object is shared by every member of a room that receives it: never mutate,
    slice into a private copy per member or keep a reference to it past the call.  The
    loop gathers a connection's chunks during a pass and, when it writes, calls
    ``data_to_send(chunks)`` once with all of them (possibly an empty list); the adapter
    returns what to write, in order: anything of its own that is pending (handshake
    replies, TLS records) followed by the chunks framed for the wire, either as one
    ``bytes`` or as a ``list`` of ``bytes`` pieces (written in order with one
    ``sendmsg``; the loop keeps the pieces, never a joined copy, until the kernel took
    them).  For plain TCP that list is the chunks themselves: a room's chunk stays one
    object however many members have it queued.  A WebSocket adapter sends each
    line of a chunk as one text message, without its ``\\n``.  An adapter that cannot
    send yet (handshake not done) keeps the chunks (or a framed copy) and returns them
    later; it must bound what it keeps: the loop's ``output_buffer_bytes`` cap counts
    the chunks queued for the connection and what ``data_to_send`` returned and the
    kernel did not take, and is checked as chunks are queued.  (Returning a list is
    new in issue 11; an adapter that returns ``bytes`` works as before.)

Asking to be flushed: ``owner.want_write()``
    When the adapter has bytes of its own to send outside a core reply (a TLS
    handshake record, the HTTP upgrade response, a WebSocket pong), it calls
    ``owner.want_write()``; at the end of the pass the loop calls ``data_to_send([])``
    and writes the result.  Core output needs no call: the loop knows about it.

Closing
    When the core closes a client (a ``bye``, a kick, shutdown) the loop calls
    ``close()`` after queueing the last chunks; the adapter adds its own goodbye to
    what ``data_to_send`` returns next (a TLS close_notify, a WebSocket close frame),
    and the loop half-closes the socket once all of it is written.  When the *adapter*
    must end the connection (a malformed TLS record, a bad upgrade request, a
    WebSocket protocol error), it queues any last bytes (an HTTP 400) and calls
    ``owner.close(reason)``: the core is told the client is gone (its room hears the
    ``reason``, a short phrase for people such as ``"bad websocket handshake"``), then
    the loop calls ``close()``, flushes and closes as above (an adapter that has
    nothing more to say makes its ``close()`` do nothing the second time).  After
    either, input is read and dropped; ``owner.close`` on a connection already closing
    does nothing.

    One exception: an adapter whose own handshake is still under way when the core
    closes it (TLS: the core refuses a client as soon as it connects, standby, stopped
    or full) may say ``handshaking`` after ``close()``.  While it does, the loop goes on
    handing it what it reads (``b""`` too) and does not half-close the socket, so the
    handshake can end and the core's last words go out in a form the client can read;
    when it ends (done, failed or timed out) the adapter calls ``owner.want_write()``.
    The adapter bounds that wait itself (a timer); the loop's lingering close bounds it
    again.  Every other adapter's ``handshaking`` is always false.

Sessions that open later
    A listener added with ``sessions_open_later`` (the web port, whose clients mostly
    fetch the page's files) has its connections counted by the core at accept, but
    not greeted or logged: its adapter calls ``owner.session_opened()`` when the client
    starts chatting (the WebSocket upgrade), and the core's greeting (or its refusal,
    in standby) comes then.

Timers
    ``owner.call_later(delay, callback)`` runs ``callback(now)`` after ``delay``
    seconds of the monotonic clock, from the loop's one timer heap, and returns a
    handle whose ``cancel()`` stops it.  A callback may call ``want_write`` or
    ``close``.  Nothing in an adapter may block or sleep.

Errors
    An exception escaping an adapter method is a bug: the loop contains it to that one
    connection (closed, logged as ``internal_error``).  A peer's bad input is never an
    exception out of an adapter: it becomes ``LINE_TOO_LONG``, a line the core refuses,
    or ``owner.close(reason)``.

``LineTransport`` below is the first adapter: plain TCP, one line per line end
(and the little Telnet that people's programs speak).
"""

from __future__ import annotations

from typing import Callable, Protocol, Union

from lanchat.protocol.chat import END_OF_INPUT, InputMark, LineReader
from lanchat.protocol.telnet import TelnetFilter

#: One item of input for the core: a line (without its line ending) or a mark.
Input = Union[bytes, InputMark]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Owner(Protocol):
    """What an adapter may ask of the loop that owns its connection."""

    def want_write(self) -> None:
        """The adapter has bytes of its own to send: call ``data_to_send`` this pass."""

    def close(self, reason: str, quiet: bool = False) -> None:
        """End the connection for the adapter's own reason (the core is told).
        ``quiet``: an ordinary end (a page served, an idle page connection), which the
        activity log leaves out for a connection that never opened a session."""

    def call_later(self, delay: float, callback: Callable[[float], None]) -> TimerHandle:
        """Run ``callback(now)`` in ``delay`` seconds (monotonic clock)."""

    def session_opened(self) -> None:
        """The client starts chatting now (for a listener added with
        ``sessions_open_later``: the core greets and logs it only then)."""


class Transport(Protocol):
    """One connection's adapter between its socket's bytes and the core's lines."""

    max_line: int

    def data_received(self, data: bytes) -> None:
        """Bytes from the socket; ``b""`` once when the peer closed its side."""

    def lines(self, limit: int) -> list[Input]:
        """At most ``limit`` input items for the core, in order."""

    @property
    def has_lines(self) -> bool:
        """True while input items wait that the last ``lines`` call did not return."""

    def data_to_send(self, chunks: list[bytes]) -> bytes | list[bytes]:
        """What to write: the adapter's own pending bytes, then ``chunks`` framed (one
        ``bytes``, or a list of pieces written in order without being joined)."""

    def close(self) -> None:
        """The core closes this client: add the transport's goodbye to the output."""

    @property
    def handshaking(self) -> bool:
        """After ``close()``: the adapter still needs the peer's bytes to finish its own
        handshake before its goodbye can go out (see Closing above)."""


#: What a listener gives the loop: makes the adapter for one accepted socket.
TransportFactory = Callable[[Owner, int], Transport]


#: The most bytes of a read a ``LineTransport`` hands its line reader at once.  The
#: reader splits what it is given into one object per line: 64 KiB of ``"x\n"`` would
#: be 32,768 objects (1.5 MB) waiting in a throttled connection.  Fed a slice at a time,
#: sized by the lines the loop asked for, a connection holds its raw bytes and at most
#: one slice split into lines.
FEED_MAX = 4096
FEED_MIN = 256
FEED_PER_LINE = 128


class LineTransport(LineReader):
    """Plain TCP: a line ends at LF, CR LF, CR NUL or a lone CR (``chat.LineReader``);
    the core's chunks are already the wire's bytes, and are returned as they are
    (shared, for ``sendmsg``).

    People come here with ``nc`` and with Telnet programs: the bytes go through a
    ``TelnetFilter`` first, which takes out Telnet commands and answers them (refusals,
    written before the next chunks).  Once a client has sent a Telnet command, the
    lines it is sent end CR LF, as Telnet wants.  A client that never sends one (nc,
    every JSON client) is never sent one, and its bytes, both ways, are unchanged.

    The adapter *is* its line reader (``receive_data``, ``next_line``, ``max_line``
    are the reader's), with the Telnet filter and the paced feeding on top: one object
    per connection instead of two is 48 bytes less for every idle member.
    """

    __slots__ = (
        "_answer",
        "_eof_given",
        "_fed_eof",
        "_has_input",
        "_owner",
        "_peeked",
        "_peer_eof",
        "_telnet",
        "_unfed",
        "_unfed_pos",
    )

    def __init__(self, owner: Owner, max_line: int) -> None:
        super().__init__(max_line, any_line_end=True)
        self._owner = owner  # asked to flush the Telnet answers
        self._telnet: TelnetFilter | None = TelnetFilter()
        self._answer = b""  # Telnet answers not yet sent
        self._has_input = False  # the reader may hold complete lines not yet returned
        self._unfed = b""  # received bytes not yet given to the reader, from _unfed_pos
        self._unfed_pos = 0
        self._peer_eof = False
        self._fed_eof = False
        self._eof_given = False
        self._peeked: Input | None = None  # the item past the last call's limit

    def data_received(self, data: bytes) -> None:
        telnet = self._telnet
        if telnet is not None and data:
            data, answer = telnet.receive(data)
            if telnet.json:  # a program in JSON mode: no Telnet on this connection, ever
                self._telnet = None
            if answer:
                self._answer += answer
                self._owner.want_write()
            if not data:  # only Telnet commands: b"" would mean end of file
                return
        if data:
            if self._unfed_pos < len(self._unfed):
                self._unfed = self._unfed[self._unfed_pos:] + data
            else:
                self._unfed = data
            self._unfed_pos = 0
        else:
            self._peer_eof = True
        self._has_input = True

    def _feed(self, size: int) -> bool:
        """Give the reader the next ``size`` bytes; False when nothing is left to give."""
        unfed, pos = self._unfed, self._unfed_pos
        if pos < len(unfed):
            if pos == 0 and len(unfed) <= size:
                self.receive_data(unfed)
            else:
                self.receive_data(unfed[pos:pos + size])
            pos += size
            if pos >= len(unfed):
                self._unfed, self._unfed_pos = b"", 0
            else:
                self._unfed_pos = pos
            return True
        if self._peer_eof and not self._fed_eof:
            self._fed_eof = True
            self.receive_data(b"")
            return True
        return False

    def lines(self, limit: int) -> list[Input]:
        out: list[Input] = []
        if not self._has_input:
            return out
        peeked = self._peeked
        if peeked is not None:
            self._peeked = None
            out.append(peeked)
        size = min(FEED_MAX, max(FEED_MIN, limit * FEED_PER_LINE))
        # One item past ``limit`` is taken and kept, so that ``has_lines`` is exact:
        # the loop holds back (fakelag) only a connection that has more to say.
        while len(out) <= limit:
            wanted = limit + 1 - len(out)
            got = self.next_lines(wanted)
            out += got
            if len(got) == wanted:
                break
            if self._feed(size):  # (fewer than wanted: the reader has no more lines)
                continue
            self._has_input = False
            if self._peer_eof and self.at_eof and not self._eof_given:
                self._eof_given = True
                out.append(END_OF_INPUT)
            break
        if len(out) > limit:
            self._peeked = out.pop()
            self._has_input = True
        return out

    @property
    def has_lines(self) -> bool:
        return self._has_input

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as lines."""
        return super().buffered + len(self._unfed) - self._unfed_pos

    def data_to_send(self, chunks: list[bytes]) -> bytes | list[bytes]:
        telnet = self._telnet
        if telnet is not None and telnet.spoke_telnet:
            # A Telnet client's lines end CR LF (RFC 854's NVT); a terminal a client
            # keeps in raw mode would otherwise step each line down without returning.
            # The chunks hold text lines with no CR, so each LF is a line end.
            answer, self._answer = self._answer, b""
            return answer + b"".join(chunks).replace(b"\n", b"\r\n")
        # The chunks themselves: the loop writes them with one sendmsg, and a room's
        # chunk stays one object however many members have it queued.
        return chunks

    def close(self) -> None:
        pass

    @property
    def handshaking(self) -> bool:
        return False


class ClosedTransport:
    """What a connection holds once the loop has closed it: no input, no output.

    The loop puts this in place of the real adapter when it closes a socket, so the
    connection and its adapter (which keeps the connection as its owner) do not stay a
    reference cycle; one shared instance serves every closed connection, as it keeps
    nothing.
    """

    __slots__ = ()

    @property
    def max_line(self) -> int:
        return 0

    @max_line.setter
    def max_line(self, value: int) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        pass

    def lines(self, limit: int) -> list[Input]:
        return []

    @property
    def has_lines(self) -> bool:
        return False

    @property
    def buffered(self) -> int:
        return 0

    def data_to_send(self, chunks: list[bytes]) -> bytes:
        return b""

    def close(self) -> None:
        pass

    @property
    def handshaking(self) -> bool:
        return False


CLOSED_TRANSPORT = ClosedTransport()

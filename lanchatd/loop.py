"""The daemon's event loop: one thread, one selector, no blocking.

Theory of operation
-------------------
One ``selectors.DefaultSelector`` (epoll on Linux) watches every file descriptor the
daemon has: the TCP chat listener and its connections, the UDP discovery socket, the
Unix control socket and its connections, and one end of a socket pair that signal
handlers write to (``signal.set_wakeup_fd``), so a signal wakes the selector at once.
Each registered descriptor carries its handler as the selector key's ``data``; a pass
of the loop calls ``on_readable``/``on_writable`` of whatever is ready, then flushes
the output produced during the pass, then runs timers.

All sockets are non-blocking.  Input is paced by the core (fakelag, as InspIRCd and
ngIRCd do): before a connection's lines are handed over, ``ChatCore.allowance`` says how
many its token bucket allows now, every line being charged (a ``who`` or a join more).
A connection with none left is not read at all until its bucket refills (its bytes
wait in the kernel and TCP slows the sender), and one with lines left in its transport
is not read again until they are taken.  A pass hands the core at most ``PASS_LINES``
lines and ``PASS_SENDS`` deliveries in all, and starts no turn after ``PASS_SECONDS``
of work; the connections not served wait in
``Loop.ready`` and go first in the next pass, so a pass costs the same however many
clients flood.  A connection read when the budget is spent waits at the back of that
queue if it is in the middle of a burst, and at its front if it is at rest (it sent
no faster than its rate: ``ChatCore.at_rest``), so a member's one line does not wait
for every flooder's turn; and while there is such a queue, a member at rest whose input
is ready is served before it.

Output is appended to a per-connection list of shared chunks during the pass (the
same ``bytes`` object for every member of a room) and written at its end with one
``sendmsg`` per connection: a burst of room messages reaches each member in one system
call, and nothing is joined into a private copy.  Whatever the kernel does not take
stays queued as those same objects, and only then is the socket watched for writing.
The output cap (``output_buffer_bytes``) is checked as chunks are queued, as Redis
checks its client-output-buffer-limit; a connection past it, once the kernel has taken
what it would, is handed to the core (``ChatCore.overflow``), and all queues together
are held to ``output_total_bytes``.

The loop decides nothing about chat: it hands bytes and events to the ``ChatCore`` and
applies the ``Effects`` it returns.  Timers are heaps (the core's, and the loop's one
heap for everything else), kept on the monotonic clock, so an idle connection costs
nothing per pass and a step of the wall clock moves no deadline.

Signal handlers only record the signal; the loop acts on it after the selector wakes:
SIGTERM/SIGINT shut down gracefully, SIGHUP reloads the configuration and reopens
the activity log.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import heapq
import itertools
import os
import resource
import selectors
import signal
import socket
import ssl
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from lanchat import __version__
from lanchat.protocol.vocabulary import LeaveReason
from lanchatd import systemd, tls_transport
from lanchatd import tls as tls_identity
from lanchatd.activity import ActivityLog
from lanchatd.config import Config, reloadable_changes
from lanchatd.control import ControlServer
from lanchatd.core import AdminError, ChatCore, Effects, format_address
from lanchatd.discovery import DiscoveryResponder
from lanchatd.support import BindError, diag, sock_address
from lanchatd.transport import (
    CLOSED_TRANSPORT,
    LineTransport,
    Transport,
    TransportFactory,
)

if TYPE_CHECKING:
    from lanchatd.web import WebSite

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
# One read per connection per pass, as large as the relay's: 8 KiB reads made a
# lone sender's 64-byte messages cost 51 sends (one per member) per 84 messages.
RECV_SIZE = 65536
# A read is sized by what the core allows the connection (allowance): RECV_PER_LINE
# bytes per allowed line, at least MIN_RECV.  A throttled client reads 4 KiB at a time;
# the rest of what it sends waits in the kernel, and TCP slows it down.
MIN_RECV = 4096
RECV_PER_LINE = 1024
# The work one client can cause in a turn is bounded in lines, not bytes: 64 KiB of
# "x\n" was 32,768 rate-limited lines (~0.2 s) before anyone else ran.
MAX_LINES_PER_PASS = 4096
# The lines all connections together may hand the core in one pass, shared round-robin
# (Loop.serve_input): a pass costs the same however many clients flood, and the ones
# not served wait, unread, for the next pass (which starts with them).
PASS_LINES = 4096
# ... and the deliveries (a chunk queued for one connection) their effects may make:
# 4,096 lines into a room of 300 are 1.2 million, a pass of half a second.  Past it,
# the remaining turns wait for the next pass.
PASS_SENDS = 50000
# ... and the bytes those deliveries come to (a shared chunk counted once per member):
# 1,500 members asking `who` at once were 4,096 answers of 20 KB in one pass, 80 MB
# for the kernel to take, and members waited 130-280 ms for that pass to end.
PASS_BYTES = 8 << 20
# ... and the time a pass has worked: the budgets above count lines and deliveries, but
# a line's cost varies a hundredfold (JSON nested a thousand deep takes 90 us to refuse,
# a say 2 us), and 4,096 such lines were a pass of 0.4 s.  A pass past PASS_SECONDS
# starts no more turns; the rest wait, as above, for the next pass.  (At 10 ms, a
# member's line could wait two such passes: 1,500 members asking `who`, p99 59 ms.)
PASS_SECONDS = 0.005
# What a transport adds to one line at the most (a TLS record's or a WebSocket frame's
# header and padding): a read of max_line + FRAMING bytes or fewer is one line's worth.
FRAMING = 256
#: A connection's output queue (and its chunks of the pass) while it has none (shared).
NO_OUTPUT: tuple[()] = ()
# The kernel's send buffer for a chat connection (see _tcp_tune).
SEND_BUFFER = 65536
# The most pieces one sendmsg takes (Linux's UIO_MAXIOV).
IOV_MAX = 1024
# How often the global output budget is recounted exactly (shared chunks once each).
OUTPUT_CHECK_INTERVAL = 0.25
LINGER_SECONDS = 2.0  # how long a closing connection may take to drain and say goodbye
LINGER_MAX = 30.0  # ... if it keeps reading meanwhile
SHUTDOWN_SECONDS = 1.5  # how long a shutdown waits for goodbyes to be flushed
ACCEPT_BATCH = 256
# Arrivals and departures one pass may serve: accepting a connection, a turn of one not
# yet in a room (its PIN, its name: a join), telling the core a connection is gone.
# Each costs a few tenths of a millisecond (a greeting, a join-rate check, a room's
# presence, log records); 20,000 addresses that connect, join and leave as fast as they
# can made passes of 500 of them, 200-300 ms, and members waited that long.  The rest
# wait: a listener or a newcomer's socket stays ready and is served in a later pass
# (epoll is level-triggered, and puts it back at the end of its ready list), a
# departure waits in Loop.departures (as many departures again a pass, on a budget of
# their own).  Members' lines are not arrivals: PASS_LINES.
PASS_ARRIVALS = 16
# ... and the connections past their output cap that a pass ends (``_overflow``): each
# is a goodbye and its leave for the whole room (300 never-reading members of one room
# cut at once were a pass of 26-45 ms).  The rest wait for the next pass; nothing more
# is queued for them meanwhile, so they hold no more than the cap and one chunk.
PASS_OVERFLOWS = 32
ACCEPT_FLOOR = 4
STATUS_INTERVAL = 2.0


def _tcp_tune(sock: socket.socket) -> None:
    """A chat connection's socket options, set on each listener: Linux copies a
    listener's options into every socket it accepts afterwards (``_Listener.tune``)."""
    try:
        # A fixed kernel send buffer (Linux doubles it) instead of autotuning up to
        # tcp_wmem's 4 MB: a member that does not read holds at most this much in
        # the kernel, and filling it is a bounded copy.  300 such members took 0.4 ms
        # a sendmsg, a 0.6 s stall, with autotuning.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
    except OSError:
        pass


_TCP_OPTIONS = [(socket.SOL_SOCKET, socket.SO_SNDBUF), (socket.IPPROTO_TCP, socket.TCP_NODELAY),
                (socket.SOL_SOCKET, socket.SO_KEEPALIVE)] + [
    (socket.IPPROTO_TCP, getattr(socket, name))
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT") if hasattr(socket, name)]


def _tcp_options(sock: socket.socket) -> list[int] | None:
    """The values of the options ``_tcp_tune`` sets (None if they cannot be read)."""
    try:
        return [sock.getsockopt(level, option) for level, option in _TCP_OPTIONS]
    except OSError:
        return None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind(kind: int, host: str, port: int, what: str, option: str = "") -> socket.socket:
    """One listening socket.  The default host ("" or "::") is dual-stack: one AF_INET6
    socket with IPV6_V6ONLY off takes IPv4 (as ::ffff:a.b.c.d) and IPv6 alike, so the
    UDP socket also hears probes sent to the all-nodes group ff02::1 of every interface
    (the kernel keeps that group joined).  On a host without IPv6 it is 0.0.0.0 instead.
    "0.0.0.0" (or any other IPv4 address) stays IPv4 only.  ``option`` is the flag named
    when the port is taken (--port or --discovery-port by default)."""
    if host in ("", "::"):
        try:
            return _bind_one(kind, "::", port, what, option, dual_stack=True)
        except BindError as exc:
            if host or exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
        host = "0.0.0.0"  # no IPv6 on this host: IPv4 alone, as before
    return _bind_one(kind, host, port, what, option, dual_stack=False)


def _bind_one(kind: int, host: str, port: int, what: str, option: str, *,
              dual_stack: bool) -> socket.socket:
    try:
        sock = socket.socket(_family(host), kind)
    except OSError as exc:
        raise BindError(exc.errno, f"cannot open the {what} socket: {exc.strerror}") from None
    try:
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if kind == socket.SOCK_STREAM:  # on UDP it would let a second daemon share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        option = option or ("--port" if kind == socket.SOCK_STREAM else "--discovery-port")
        raise BindError(exc.errno, f"cannot bind the {what} socket to "
                        f"{format_address((host, port))}: {exc.strerror} "
                        f"(choose another address or {option})") from None
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int, backlog: int, what: str = "TCP chat",
             option: str = "--port") -> socket.socket:
    sock = _bind(socket.SOCK_STREAM, host, port, what, option)
    sock.listen(backlog)
    return sock


def bind_udp(host: str, port: int) -> socket.socket:
    return _bind(socket.SOCK_DGRAM, host, port, "UDP discovery")


def peer_address(addr: tuple[Any, ...]) -> tuple[Any, ...]:
    """A peer as the person knows it: an IPv4 client of the dual-stack socket arrives as
    ::ffff:a.b.c.d, and is logged and counted as a.b.c.d."""
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        return (host[7:], addr[1])
    return addr


FD_MARGIN = 256  # descriptors beyond the chat connections: listeners, control, log files


def raise_fd_limit(max_connections: int) -> None:
    """Raise the soft open-files limit so ``max_connections`` clients fit, if allowed.

    A daemon started from a shell inherits its soft limit, often 1,024; the hard limit
    is usually far higher, and raising the soft one needs no privilege.
    """
    wanted = max_connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < wanted:
        diag(f"max_connections is {max_connections}, but this process may open only "
             f"{soft} files (ulimit -n); past about {max(0, soft - FD_MARGIN)} clients, "
             "new connections wait until others close")


def load_server_id(state_dir: str | None) -> str:
    """The server id, kept in the state directory so it survives restarts."""
    # uuid is imported only where an id is made, at the first start (it imports
    # platform: 2 ms of every later start otherwise).
    if state_dir:
        path = os.path.join(state_dir, "server-id")
        try:
            with open(path, encoding="ascii") as f:
                value = f.read().strip()
            if value and len(value) <= 64:
                return value
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            diag(f"cannot read {path} ({exc}); making a new server id")
        import uuid

        value = uuid.uuid4().hex
        try:
            os.makedirs(state_dir, mode=0o750, exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="ascii") as f:
                f.write(value + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            diag(f"cannot keep the server id in {state_dir} ({exc}); "
                 "it will change at the next start")
        return value
    import uuid

    return uuid.uuid4().hex


class Handler:
    """What the selector calls when a registered descriptor is ready."""

    def on_readable(self, now: float) -> None:  # pragma: no cover - interface
        pass

    def on_writable(self, now: float) -> None:  # pragma: no cover - interface
        pass


class _Timer:
    """A timer of the loop's heap; ``cancel`` makes it do nothing when due."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[float], None] | None) -> None:
        self.callback = callback

    def cancel(self) -> None:
        self.callback = None


class ChatConnection(Handler):
    """One client's socket and buffers, and the ``Owner`` its transport adapter sees.

    Nothing here depends on the transport: the adapter (lanchatd/transport.py) turns
    received bytes into lines and the core's chunks into bytes to write.

    Output is a queue of pieces (``outq``): the core's chunks as they are, shared with
    every other member that gets them, and a ``memoryview`` of the one the kernel took
    part of.  Nothing is joined into a private copy: a room's 8 MB burst queued for a
    hundred members that do not read is 8 MB, not 800.
    """

    __slots__ = ("cid", "closing", "events", "full", "in_ready", "lag_timer", "linger", "loop",
                 "outq", "pending", "pending_bytes", "reading", "recv_size", "sock",
                 "transport", "wr_shut")

    def __init__(self, loop: Loop, cid: int, sock: socket.socket,
                 factory: TransportFactory = LineTransport) -> None:
        self.loop = loop
        self.cid = cid
        self.sock = sock
        # The core's chunks of this pass, shared, unframed; a list only while there are
        # some (Loop.apply makes it).
        self.pending: list[bytes] | tuple[()] = NO_OUTPUT
        # Bytes queued and not yet written: this pass's chunks and ``outq``.  The
        # output cap is checked against it as chunks are queued (Loop.apply).
        self.pending_bytes = 0
        # What the kernel has not taken yet; a deque only while there is some (an empty
        # deque is 760 bytes, most of an idle member's cost): flush makes one.
        self.outq: collections.deque[bytes | memoryview] | tuple[()] = NO_OUTPUT
        self.full = False  # past the output cap: the core is told at the end of the pass
        self.events = READ  # what the selector watches for it
        self.reading = True  # False while it has lines waiting or its budget is spent
        self.in_ready = False  # in Loop.ready: has input for the core
        self.lag_timer: _Timer | None = None
        self.linger: _Timer | None = None  # the lingering close's timer, while closing
        # How much one read takes: set from the core's allowance at the connection's
        # last turn, so a throttled client's bytes stay in the kernel, not in our memory.
        self.recv_size = RECV_SIZE
        self.closing = False
        self.wr_shut = False
        self.transport: Transport = factory(self, loop.config.max_line_bytes)

    @property
    def queued(self) -> int:
        return self.pending_bytes

    # ---- the Owner protocol (what the adapter may ask)

    def want_write(self) -> None:
        if self.loop.conns.get(self.cid) is self:
            self.loop.dirty.add(self)

    def close(self, reason: str, quiet: bool = False) -> None:
        loop = self.loop
        if loop.conns.get(self.cid) is not self or self.closing:
            return
        loop.apply(loop.core.disconnected(self.cid, loop.now, reason, quiet=quiet))
        loop.start_closing(self)

    def call_later(self, delay: float, callback: Callable[[float], None]) -> _Timer:
        return self.loop.call_later(delay, callback)

    def session_opened(self) -> None:
        loop = self.loop
        if loop.conns.get(self.cid) is self and not self.closing:
            loop.apply(loop.core.open_session(self.cid, loop.now))

    # ---- the selector's calls

    def arrival(self) -> bool:
        """Whether reading it now is arrival work (PASS_ARRIVALS): not yet in a room."""
        return not self.closing and not self.loop.core.is_member(self.cid)

    def on_readable(self, now: float) -> None:
        if not self.reading:
            return  # its lines or its budget come first (Loop.serve_input)
        try:
            data = self.sock.recv(self.recv_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.loop.connection_lost(
                self, now, f"{LeaveReason.CONNECTION_ERROR}: {exc.strerror or exc}")
            return
        if self.closing:
            if self.transport.handshaking:
                # Refused during its TLS handshake: the handshake goes on, so that the
                # refusal can be sent encrypted (lanchatd/transport.py, Closing).
                self.transport.data_received(data)
            if not data:
                self.loop.close_now(self)
            return  # a closing connection's input is read and dropped
        self.transport.data_received(data)
        loop = self.loop
        if loop.pass_has_room():
            loop.pass_lines -= self.feed(now, loop.pass_lines)
        else:  # the pass's work is spent: its turn comes first in the next one
            self.set_reading(False)
            if not self.in_ready:
                self.in_ready = True
                if len(data) < self.recv_size \
                        and len(data) <= self.transport.max_line + FRAMING \
                        and loop.core.at_rest(self.cid, now):
                    # Not in the middle of a burst (its bucket is full, and all it has
                    # sent is this read, one line's worth: not a burst's first read):
                    # its turn goes ahead of the bursts' (behind those this pass put
                    # there, in the order they came).  At the back, a member's one line
                    # waited a whole round of them; and 300 bursts that all began at
                    # once, each at rest by its bucket, were 300 turns ahead of it.
                    loop.ready.insert(loop.fresh, self)
                    loop.fresh += 1
                else:
                    loop.ready.append(self)

    def feed(self, now: float, limit: int = 0) -> int:
        """One turn: hand the core as many of the transport's lines as it allows now
        (at most ``limit``, else MAX_LINES_PER_PASS); the number of lines handed."""
        loop = self.loop
        core = loop.core
        allowed, wait = core.allowance(self.cid, now)
        if allowed == 0:
            self.lag(now, wait)
            return 0
        take = min(allowed, limit or MAX_LINES_PER_PASS)
        transport = self.transport
        lines = transport.lines(take)
        if lines:
            loop.apply(core.receive(self.cid, lines, now))
        if self.closing or loop.conns.get(self.cid) is not self:
            return len(lines)
        if transport.has_lines:
            self.set_reading(False)  # until the core has taken these lines
            if not self.in_ready:
                self.in_ready = True
                loop.ready.append(self)
        else:
            left = allowed - len(lines)
            self.recv_size = min(RECV_SIZE, max(MIN_RECV, left * RECV_PER_LINE))
            self.set_reading(True)
        return len(lines)

    def lag(self, now: float, wait: float) -> None:
        """Its budget is spent: leave its socket unread until it refills."""
        loop = self.loop
        loop.apply(loop.core.lagging(self.cid, now))
        if self.closing or loop.conns.get(self.cid) is not self:
            return
        self.set_reading(False)
        if self.lag_timer is None:
            self.lag_timer = loop.call_later(wait, self._lag_over)

    def _lag_over(self, now: float) -> None:
        self.lag_timer = None
        if self.loop.conns.get(self.cid) is self and not self.in_ready:
            self.in_ready = True
            self.loop.ready.append(self)

    def set_reading(self, reading: bool) -> None:
        if reading != self.reading:
            self.reading = reading
            self.update_events()

    def update_events(self) -> None:
        """Watch the socket for what it needs: reading (unless held back) and writing
        (while the kernel refuses output)."""
        want = (READ if self.reading else 0) | (WRITE if self.outq else 0)
        if want != self.events:
            selector = self.loop.selector
            try:
                if not self.events:
                    selector.register(self.sock, want, self)
                elif not want:
                    selector.unregister(self.sock)
                else:
                    selector.modify(self.sock, want, self)
            except (KeyError, ValueError, OSError):
                return  # closed meanwhile
            self.events = want

    def on_writable(self, now: float) -> None:
        self.flush(writable=True)

    def flush(self, writable: bool = False) -> None:
        """Write what the kernel takes now; keep the rest and watch for writability.

        While the kernel is known to be full (the socket is watched for writing and
        the selector has not said it is writable), new chunks are only queued: a
        ``sendmsg`` of a thousand pieces that ends in EAGAIN, for every such reader at
        every pass, was most of a flood's cost."""
        pending = self.pending
        if pending:
            self.pending = NO_OUTPUT
        new = self.transport.data_to_send(pending if pending else [])
        outq = self.outq if type(self.outq) is collections.deque else collections.deque()
        if type(new) is list:
            outq.extend(new)  # the chunks themselves: already counted as queued
        else:
            # An adapter that frames (or holds back) what it is given: what is queued
            # is what it returned, counted anew (its queue is short: one piece a pass).
            if new:
                outq.append(new)  # type: ignore[arg-type]  # bytes from an adapter
            self.pending_bytes = sum(map(len, outq))
        if outq and (writable or not self.events & WRITE):
            try:
                if len(outq) == 1:
                    sent = self.sock.send(outq[0])
                else:
                    sent = self.sock.sendmsg(list(itertools.islice(outq, IOV_MAX)))
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.outq = NO_OUTPUT
                self.pending_bytes = 0
                self.loop.connection_lost(self, self.loop.now,
                                          f"{LeaveReason.CONNECTION_ERROR}: {exc.strerror or exc}")
                return
            if sent:
                self.pending_bytes -= sent
                while sent:
                    head = outq[0]
                    size = len(head)
                    if sent >= size:
                        outq.popleft()
                        sent -= size
                    else:
                        outq[0] = memoryview(head)[sent:]
                        sent = 0
        self.outq = outq if outq else NO_OUTPUT
        if bool(outq) != bool(self.events & WRITE):
            self.update_events()
            if outq:
                self.loop.backlog.add(self)
            else:
                self.loop.backlog.discard(self)
        if self.closing and not outq and not self.wr_shut and not self.transport.handshaking:
            self.wr_shut = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.loop.close_now(self)

    def drop_unstarted(self) -> None:
        """Forget queued output the kernel has not begun: only the rest of a line it
        took part of stays, so the reader never gets a cut line before its goodbye."""
        outq = self.outq
        if outq and isinstance(outq[0], memoryview):
            head = outq[0]
            self.outq = collections.deque((head,))
            self.pending_bytes = len(head)
        else:
            self.outq = NO_OUTPUT
            self.pending_bytes = 0
        self.pending = NO_OUTPUT


class Loop:
    def __init__(self, config: Config, reload: Callable[[], Config], *,
                 environ: dict[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.config = config
        self.reload_config = reload
        self.selector = selectors.DefaultSelector()
        self.notifier = systemd.Notifier(self.environ)
        self.activity = ActivityLog(
            ring_size=config.log_ring_size, path=config.log_file,
            max_bytes=config.log_max_bytes, backups=config.log_backups, stderr=sys.stderr,
        )
        now = time.time()
        self.server_id = load_server_id(config.state_dir)
        self.core = ChatCore(config, host_name=socket.gethostname(),
                             server_id=self.server_id, now=now)
        self.discovery = DiscoveryResponder(config, self.server_id)
        self.conns: dict[int, ChatConnection] = {}
        self.dirty: set[ChatConnection] = set()
        # Connections with input for the core (lines in their transport, or a turn due
        # after their budget refilled), served round-robin by serve_input.
        self.ready: collections.deque[ChatConnection] = collections.deque()
        self.backlog: set[ChatConnection] = set()  # with output the kernel refused
        self.pass_lines = PASS_LINES  # lines the core may still be handed this pass
        self.pass_sends = 0  # deliveries (chunk x connection) queued this pass
        self.pass_bytes = 0  # their bytes
        self.pass_started: float | None = None  # monotonic, at its first turn
        self.pass_arrivals = PASS_ARRIVALS  # arrival work this pass may still do
        # How many turns this pass put at the front of ``ready`` (put off by its spent
        # budget while their connection was at rest, ChatCore.at_rest): the next pass
        # serves them first, in the order they came, then those put there earlier.
        self.fresh = 0
        # Connections closed by the loop (reset, broken pipe) whose end the core has
        # not been told yet: told PASS_ARRIVALS a pass, oldest first.
        self.departures: collections.deque[tuple[int, str]] = collections.deque()
        self._next_output_check = 0.0
        self.now = now  # the time of the current pass, wall clock (for people)
        self.mono = time.monotonic()  # the same moment on the clock of every deadline
        self.core.set_clock(self.mono - now)
        self.listeners: list[_Listener] = []
        self.overflowed: list[int] = []
        self.next_cid = 1
        self.signals: list[int] = []
        self.running = True
        self.accept_paused = False
        self.accept_failing = False  # an accept outage was reported, not yet over
        # The loop's one timer heap (monotonic deadlines): lingering closes, the accept
        # pause, the control server's timers and transports' call_later.
        self.timers: list[tuple[float, int, _Timer]] = []
        self._timer_seq = 0
        self.tcp: socket.socket | None = None  # None with plain = false
        self.tls: socket.socket | None = None  # None with tls = false
        self.tls_fingerprint: str | None = None
        self.tls_context: ssl.SSLContext | None = None  # made once, for chat and HTTPS
        self.udp: socket.socket | None = None
        self.http: socket.socket | None = None  # the browser client's port (lanchatd/web)
        self.web_site: WebSite | None = None  # its connections' shared part
        self.page = ""  # the page's address for people (the readiness line's page=)
        self.control: ControlServer | None = None  # once open_sockets has run
        self._last_status = ""
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # ------------------------------------------------------------------ set-up

    def open_sockets(self) -> None:
        config = self.config
        inherited = {name: sock for name, sock in systemd.listen_fds(self.environ)}
        # The TLS identity first: a key that cannot be made stops the start before any
        # port is taken.
        context = self._open_tls_identity() if config.tls else None
        chat = inherited.pop("chat", None)
        if config.plain:
            self.tcp = chat or bind_tcp(config.host, config.port, config.listen_backlog)
            self.add_listener(self.tcp, LineTransport)
        elif chat is not None:
            chat.close()  # the socket unit offers a plain port the configuration turned off
        tls = inherited.pop("tls", None)
        if context is not None:
            self.tls = tls or bind_tcp(config.host, config.tls_port, config.listen_backlog,
                                       "TLS chat", "--tls-port")
            self.add_listener(self.tls, tls_transport.factory(
                context, lambda: self.config.tls_handshake_timeout))
        elif tls is not None:
            tls.close()
        self.udp = inherited.pop("discovery", None) or bind_udp(
            config.discovery_host, config.discovery_port)
        self.udp.setblocking(False)
        self.selector.register(self.udp, READ, _Discovery(self))
        self._open_web(inherited.pop("http", None))
        self.inherited = inherited
        self.control = ControlServer(self, inherited.pop("control", None))

    def _open_tls_identity(self) -> ssl.SSLContext:
        """The key and certificate (made at the first start) and the server context."""
        config = self.config
        identity = tls_identity.load_or_create(config.state_dir, config.tls_cert,
                                               config.tls_key, name=config.name)
        if identity.created:
            diag(f"made a new TLS key and self-signed certificate; fingerprint "
                 f"{identity.fingerprint}")
        self.tls_fingerprint = identity.fingerprint
        self.discovery.tls_fingerprint = identity.fingerprint
        self.tls_context = tls_identity.server_context(identity)
        return self.tls_context

    def _open_web(self, inherited: socket.socket | None) -> None:
        """The browser client's port: a listener whose connections speak HTTP/WebSocket."""
        config = self.config
        if not config.http:
            if inherited is not None:
                inherited.close()  # handed over by a socket unit, but turned off here
            return
        from lanchatd import web  # h11 and wsproto are imported only when it is on
        from lanchatd.web.address import page_url

        self.http = inherited or bind_tcp(config.host, config.http_port,
                                          config.listen_backlog, "TCP web", "--http-port")
        host, port = self.http.getsockname()[:2]
        self.page = page_url(str(host), int(port), "https" if config.https else "http")
        self.web_site = web.make_site(request_timeout=config.http_request_timeout,
                                      host_names=self._web_host_names(config),
                                      page=self.page)
        site: TransportFactory = self.web_site
        if config.https:
            # HTTPS: the same key as the chat's TLS port, TLS in front of the web adapter.
            context = self.tls_context or self._open_tls_identity()
            site = tls_transport.factory(
                context, lambda: self.config.tls_handshake_timeout, inner=site)
        self.add_listener(self.http, site, sessions_open_later=True)

    def _web_host_names(self, config: Config) -> frozenset[str]:
        from lanchatd.web.site import own_host_names

        return own_host_names(self.core.host_name, config.http_host_names, config.host)

    def add_listener(self, sock: socket.socket, factory: TransportFactory, *,
                     sessions_open_later: bool = False) -> None:
        """Accept chat clients on ``sock``; each gets the adapter ``factory`` makes
        (``sessions_open_later``: ChatCore.connect's ``opened=False``)."""
        sock.setblocking(False)
        listener = _Listener(self, sock, factory, sessions_open_later)
        self.listeners.append(listener)
        self.selector.register(sock, READ, listener)

    def install_signals(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self.selector.register(self._wake_r, READ, _Wakeup(self))

        def record(signum: int, _frame: Any) -> None:
            self.signals.append(signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, record)
        if self.environ.get("LANCHATD_TEST_STALL") == "1":
            signal.signal(signal.SIGUSR2, record)
        # A write past RLIMIT_FSIZE must fail with EFBIG, not kill the daemon.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def readiness_line(self) -> str:
        assert self.udp is not None
        parts = [f"tcp={sock_address(self.tcp)}"] if self.tcp is not None else []
        parts.append(f"udp={sock_address(self.udp)}")
        if self.http is not None:
            parts.append(f"http={sock_address(self.http)}")
            parts.append(f"page={self.page}")  # for people
        if self.tls is not None:
            parts.append(f"tls={sock_address(self.tls)} fingerprint={self.tls_fingerprint}")
        if self.control is not None:  # last: scripts read the path as the line's end
            parts.append(f"control={self.control.path}")
        return "lanchatd ready " + " ".join(parts)

    # ------------------------------------------------------------------ running

    def _read_clocks(self) -> float:
        """The time of a pass: wall clock for people, monotonic for deadlines."""
        now = self.now = time.time()
        self.mono = time.monotonic()
        self.core.set_clock(self.mono - now)
        return now

    def run(self) -> int:
        now = self._read_clocks()
        raise_fd_limit(self.config.max_connections)
        self.open_sockets()
        self.install_signals()
        ready = self.readiness_line()
        self.activity.record(now, "start", version=__version__, state=self.core.state,
                             pid=os.getpid(), addresses=ready[len("lanchatd ready "):])
        # From here on the activity log is written once a pass (_after_pass), before the
        # pass's output: the start entry above is in the file already.
        self.activity.batched = True
        print(ready, flush=True)
        self.notifier.ready(self.core.status_line())
        watchdog = self.notifier.watchdog_interval
        next_watchdog = time.monotonic() + watchdog if watchdog else None
        next_retry = self.mono + 1.0
        next_status = self.mono + STATUS_INTERVAL
        while self.running:
            timeout = self._timeout(next_retry)
            if next_watchdog is not None:
                timeout = max(0.0, min(timeout, next_watchdog - time.monotonic()))
            events = self.selector.select(timeout)
            now = self._read_clocks()
            if self.ready:
                # Members at rest first, then the turns left from earlier passes (the
                # rest of bursts), then everyone else.
                events = self._serve_at_rest(events, now)
                self.serve_input(now)
            # Members first; then arrivals (newcomers' turns, then accepting), from
            # what PASS_ARRIVALS allows, so a crowd arriving cannot hold members up.
            arriving: list[tuple[Handler, int]] = []
            accepting: list[_Listener] = []
            for key, mask in events:
                handler: Handler = key.data
                if isinstance(handler, _Listener):
                    accepting.append(handler)
                elif mask & READ and isinstance(handler, ChatConnection) and handler.arrival():
                    arriving.append((handler, mask))
                else:
                    self._serve(handler, mask, now)
            for handler, mask in arriving:
                if self.pass_arrivals > 0:
                    self.pass_arrivals -= 1
                elif mask & WRITE:
                    mask = WRITE  # its input waits: still ready, served in a later pass
                else:
                    continue
                self._serve(handler, mask, now)
            for listener in accepting:
                self._serve(listener, READ, now)
            if self.departures:
                self.serve_departures(now)
            self._after_pass(now)
            if self.signals:
                self._handle_signals(now)
                self._after_pass(now)
            deadline = self.core.next_deadline()
            if deadline is not None and deadline <= self.mono:
                self.apply(self.core.tick(now))
                self._after_pass(now)
            if self._run_timers(now):
                self._after_pass(now)
            if self.mono >= next_retry:
                next_retry = self.mono + 1.0
                self.activity.retry(now)
            if self.mono >= next_status:
                next_status = self.mono + STATUS_INTERVAL
                self._update_status()
            if next_watchdog is not None and time.monotonic() >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = time.monotonic() + (watchdog or 1.0)
        return self._shutdown()

    def _serve_at_rest(self, events: list[tuple[selectors.SelectorKey, int]],
                       now: float) -> list[tuple[selectors.SelectorKey, int]]:
        """Serve the members whose input is ready and who are at rest (their bucket
        full: they send no faster than their rate, ``ChatCore.at_rest``) ahead of the
        turns left from earlier passes; the other events, for after them.  With a
        backlog of bursts, a member's one line otherwise waited for the pass's budget
        to be spent on the backlog, and then a pass more."""
        rest: list[tuple[selectors.SelectorKey, int]] = []
        core = self.core
        for key, mask in events:
            handler = key.data
            if mask & READ and isinstance(handler, ChatConnection) and handler.reading \
                    and not handler.arrival() and core.at_rest(handler.cid, now):
                self._serve(handler, mask, now)
            else:
                rest.append((key, mask))
        return rest

    def _serve(self, handler: Handler, mask: int, now: float) -> None:
        try:
            if mask & READ:
                handler.on_readable(now)
            if mask & WRITE:
                handler.on_writable(now)
        except Exception as exc:  # one client's fault stays with that client
            self._contain(handler, exc, now)

    def pass_has_room(self) -> bool:
        """Whether this pass may start another turn: PASS_LINES, PASS_SENDS, PASS_BYTES
        and PASS_SECONDS (counted from its first turn) are not yet spent."""
        if self.pass_lines <= 0 or self.pass_sends >= PASS_SENDS \
                or self.pass_bytes >= PASS_BYTES:
            return False
        started = self.pass_started
        if started is None:
            self.pass_started = time.monotonic()
            return True
        return time.monotonic() - started < PASS_SECONDS

    def serve_input(self, now: float) -> None:
        """Give connections with input their turns, round-robin, until the pass's
        PASS_LINES are spent; the rest keep their place at the front for the next pass.
        Each turn hands the core what that connection's budget allows (fakelag)."""
        ready = self.ready
        conns = self.conns
        for _ in range(len(ready)):
            if not ready or not self.pass_has_room():
                break
            conn = ready.popleft()
            conn.in_ready = False
            if conns.get(conn.cid) is not conn or conn.closing:
                continue
            try:
                self.pass_lines -= conn.feed(now, self.pass_lines)
            except Exception as exc:  # one client's fault stays with that client
                self._contain(conn, exc, now)

    def _timeout(self, next_retry: float) -> float:
        if self.ready or self.departures or self.overflowed:
            return 0.0
        mono = self.mono
        timeout = next_retry - mono
        deadline = self.core.next_deadline()
        if deadline is not None:
            timeout = min(timeout, deadline - mono)
        if self.timers:
            timeout = min(timeout, self.timers[0][0] - mono)
        return max(0.0, timeout)

    def _contain(self, handler: Handler, exc: Exception, now: float) -> None:
        detail = f"{type(exc).__name__}: {exc}"
        diag(f"internal error while serving a connection: {detail}")
        if isinstance(handler, ChatConnection):
            self.activity.record(now, "internal_error", cid=handler.cid, detail=detail[:300])
            self.connection_lost(handler, now, LeaveReason.INTERNAL_ERROR)
        elif hasattr(handler, "fail"):
            handler.fail(now, detail)
        else:
            self.activity.record(now, "internal_error", detail=detail[:300])

    def _after_pass(self, now: float) -> None:
        # The pass's activity entries go to the file before its output goes out: a
        # client that got its answer finds the entry in the file.
        self.activity.flush()
        if self.backlog and self.mono >= self._next_output_check:
            self._check_output_total(now)
        overflows = PASS_OVERFLOWS
        while self.dirty or (self.overflowed and overflows > 0):
            dirty, self.dirty = self.dirty, set()
            for conn in dirty:
                if conn.cid in self.conns:
                    conn.flush()
            cids = self.overflowed[:overflows]
            del self.overflowed[:overflows]
            overflows -= len(cids)
            for cid in cids:
                self._overflow(cid, now)
        if self.control is not None:
            self.activity.flush()
            self.control.after_pass(now)
            self.activity.flush()  # what the control server recorded just now
        self.start_pass()

    def start_pass(self) -> None:
        """A new pass: its budgets whole again (the one place they are reset)."""
        self.pass_lines = PASS_LINES
        self.pass_sends = 0
        self.pass_bytes = 0
        self.pass_arrivals = PASS_ARRIVALS
        self.pass_started = None
        self.fresh = 0

    def _overflow(self, cid: int, now: float) -> None:
        """Past its output cap even after a write: drop what the kernel has not begun
        (memory is freed now, and the reader gets whole lines only), then the core
        says goodbye (``slow_reader``) after them."""
        conn = self.conns.get(cid)
        if conn is None or conn.closing:
            return
        conn.drop_unstarted()
        conn.full = False  # under its cap again: its goodbye is queued (apply)
        self.apply(self.core.overflow(cid, now))

    def _check_output_total(self, now: float) -> None:
        """The global output budget: what the kernels refused, over all connections,
        counting a shared chunk once.  Past ``output_total_bytes``, the connections
        furthest behind are ended as slow readers until it fits."""
        self._next_output_check = self.mono + OUTPUT_CHECK_INTERVAL
        limit = self.config.output_total_bytes
        backlog = [c for c in self.backlog if c.cid in self.conns and not c.closing]
        if sum(c.pending_bytes for c in backlog) <= limit:
            return  # even counted once per member it fits
        seen: set[int] = set()
        total = 0
        for conn in backlog:
            for piece in conn.outq:
                base = piece.obj if isinstance(piece, memoryview) else piece
                if id(base) not in seen:
                    seen.add(id(base))
                    total += len(piece)
        if total <= limit:
            return
        for conn in sorted(backlog, key=lambda c: c.pending_bytes, reverse=True):
            if total <= limit:
                break
            total -= conn.pending_bytes  # at most: its pieces may be shared
            self._overflow(conn.cid, now)

    def _update_status(self) -> None:
        line = self.core.status_line()
        if line != self._last_status:
            self._last_status = line
            self.notifier.status(line)

    def add_timer(self, when: float, callback: Callable[[float], None]) -> _Timer:
        """Run ``callback(now)`` at ``when``, a time of the clock handlers are given
        (``now``, wall clock); the timer is kept on the monotonic clock, so a step of
        the wall clock does not move it."""
        return self.call_later(when - self.now, callback)

    def call_later(self, delay: float, callback: Callable[[float], None]) -> _Timer:
        """Run ``callback(now)`` in ``delay`` seconds; ``cancel()`` the handle to stop it."""
        self._timer_seq += 1
        timer = _Timer(callback)
        heapq.heappush(self.timers, (self.mono + delay, self._timer_seq, timer))
        return timer

    def _run_timers(self, now: float) -> bool:
        """Run due timers; True if any callback ran (its output wants flushing)."""
        ran = False
        timers = self.timers
        while timers and timers[0][0] <= self.mono:
            _when, _seq, timer = heapq.heappop(timers)
            if timer.callback is not None:
                timer.callback(now)
                ran = True
        return ran

    # ------------------------------------------------------------------ effects

    def core_call(self, method: Callable[..., Effects], *args: Any) -> None:
        self.apply(method(*args))

    def apply(self, fx: Effects) -> None:
        if fx.log:
            record = self.activity.record
            for when, event, fields in fx.log:
                record(when, event, **fields)
        conns = self.conns
        sends = fx.sends
        cap = self.config.output_buffer_bytes
        i, n = 0, len(sends)
        while i < n:
            targets, data = sends[i]
            i += 1
            if i < n and (sends[i][0] is targets or sends[i][0] == targets):
                # A run of sends to the same connections (the room messages of one read,
                # the very same tuple): join their bytes once and append them once per
                # member, not per message.
                run = [data]
                while i < n and (sends[i][0] is targets or sends[i][0] == targets):
                    run.append(sends[i][1])
                    i += 1
                data = b"".join(run)
            size = len(data)
            self.pass_sends += len(targets)
            self.pass_bytes += size * len(targets)
            for cid in targets:
                conn = conns.get(cid)
                if conn is None or conn.closing or conn.full:
                    continue  # (a full one's unstarted output is dropped: _overflow)
                pending = conn.pending
                if pending:
                    pending.append(data)
                else:
                    conn.pending = [data]
                conn.pending_bytes += size
                self.dirty.add(conn)
                if conn.pending_bytes > cap and not conn.full:
                    self._over_cap(conn)
        for cid in fx.closes:
            conn = conns.get(cid)
            if conn is not None and not conn.closing:
                self.start_closing(conn)

    def _over_cap(self, conn: ChatConnection) -> None:
        """Queued output passed the cap (checked as it is queued, so no connection ever
        holds more than the cap and one chunk): offer it to the kernel now, and if the
        kernel will not take enough, the core decides at the end of the pass."""
        self.activity.flush()  # (its output goes out before the pass's end)
        conn.flush()
        if conn.pending_bytes > self.config.output_buffer_bytes and not conn.closing \
                and conn.cid in self.conns:
            conn.full = True
            self.overflowed.append(conn.cid)

    def start_closing(self, conn: ChatConnection) -> None:
        """Flush what is queued (and the transport's goodbye), then close."""
        conn.closing = True
        conn.set_reading(True)  # a closing connection's input is read and dropped
        conn.transport.close()
        # The timer knows the connection by its id only, and close_now cancels it: under
        # churn, thousands of closed connections must not wait two seconds in the heap.
        conn.linger = self.call_later(
            LINGER_SECONDS, partial(self._linger_expired, conn.cid, conn.pending_bytes, 0))
        self.dirty.add(conn)

    def connection_lost(self, conn: ChatConnection, now: float, reason: str) -> None:
        """The socket failed or the peer reset it: close it now, and tell the core in
        turn (serve_departures): a room's presence and the log records of hundreds of
        connections reset at once are spread over passes, not one long pass."""
        self.close_now(conn)
        self.departures.append((conn.cid, reason))

    def serve_departures(self, now: float) -> None:
        """Tell the core of connections closed by the loop, PASS_ARRIVALS a pass (a
        budget of their own: arrivals must not starve them), oldest first."""
        departures = self.departures
        for _ in range(min(PASS_ARRIVALS, len(departures))):
            cid, reason = departures.popleft()
            self.apply(self.core.disconnected(cid, now, reason))

    def close_now(self, conn: ChatConnection) -> None:
        if self.conns.pop(conn.cid, None) is None:
            return
        if conn.linger is not None:
            conn.linger.cancel()
            conn.linger = None
        self.dirty.discard(conn)
        self.backlog.discard(conn)
        if conn.lag_timer is not None:
            conn.lag_timer.cancel()
            conn.lag_timer = None
        conn.outq = NO_OUTPUT
        conn.pending = NO_OUTPUT
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()
        # An adapter keeps its owner (to ask for a flush or a timer), and the owner its
        # adapter: a cycle that only the garbage collector's rare full passes would free.
        # Under connection churn that was megabytes of dead connections; break it here.
        conn.transport = CLOSED_TRANSPORT

    def _linger_expired(self, cid: int, queued: int, extended: int, now: float) -> None:
        """A closing connection that did not finish in LINGER_SECONDS is closed now,
        unless it is still reading (its queue shrank) or its adapter's handshake is
        still under way (a refusal over TLS; the adapter's timer ends it sooner): then
        it gets LINGER_SECONDS more, up to LINGER_MAX, so a slow reader receives its
        last line whole and its goodbye instead of a line cut where the close fell."""
        conn = self.conns.get(cid)
        if conn is None:
            return
        if ((conn.pending_bytes < queued or conn.transport.handshaking)
                and extended * LINGER_SECONDS < LINGER_MAX):
            conn.linger = self.call_later(LINGER_SECONDS, partial(
                self._linger_expired, cid, conn.pending_bytes, extended + 1))
            return
        self.close_now(conn)

    # ------------------------------------------------------------------ accepting

    def accept(self, listener: _Listener, now: float) -> None:
        # At least ACCEPT_FLOOR a pass, so newcomers that keep talking cannot keep
        # everyone else waiting in the kernel's queue.
        for _ in range(min(ACCEPT_BATCH, max(ACCEPT_FLOOR, self.pass_arrivals))):
            try:
                sock, addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment rather than spin,
                    # and say so once per outage, not at every retry.
                    if not self.accept_failing:
                        self.accept_failing = True
                        diag(f"cannot accept connections: {exc.strerror}; retrying every "
                             "0.5 s, the connections wait in the kernel's queue")
                        self.activity.record(now, "accept_paused", reason=str(exc.strerror))
                    if not self.accept_paused:
                        self.accept_paused = True
                        for paused in self.listeners:
                            with contextlib.suppress(KeyError, ValueError):
                                self.selector.unregister(paused.sock)
                        self.call_later(0.5, self._resume_accepting)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            if self.accept_failing:
                self.accept_failing = False
                diag("accepting connections again")
                self.activity.record(now, "accept_resumed")
            self.pass_arrivals -= 1
            sock.setblocking(False)
            listener.tune(sock)
            cid = self.next_cid
            self.next_cid += 1
            conn = ChatConnection(self, cid, sock, listener.factory)
            self.conns[cid] = conn
            self.selector.register(sock, READ, conn)
            self.apply(self.core.connect(cid, peer_address(addr), now,
                                         opened=not listener.sessions_open_later))
            if conn.closing:  # refused (too fast, full, standby): the core kept nothing
                self._close_refused(conn)

    def _close_refused(self, conn: ChatConnection) -> None:
        """A refused connection gets its one line and is closed at once, not after
        the lingering close a member gets: one address opening thousands a second
        held thousands of descriptors that way.  Its line goes to a fresh socket's
        empty send buffer, so the kernel takes it whole; what the client already sent
        is read first, so the close is a FIN after the line, not a reset.  Only an
        adapter that could not send yet (a TLS handshake) leaves it to linger."""
        self.activity.flush()  # (its line goes out before the pass's end: as _after_pass)
        conn.flush()
        if not conn.wr_shut:
            return
        with contextlib.suppress(OSError):
            conn.sock.recv(RECV_SIZE)
        self.close_now(conn)

    def _resume_accepting(self, now: float) -> None:
        self.accept_paused = False
        for listener in self.listeners:
            self.selector.register(listener.sock, READ, listener)

    def on_datagram(self, now: float) -> None:
        assert self.udp is not None
        for _ in range(64):
            try:
                data, addr = self.udp.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            reply = self.discovery.handle(
                data, addr, now, state=self.core.state, name=self.core.server_name,
                port=self.tcp_port, http_port=self.http_port, tls_port=self.tls_port)
            if reply is not None:
                try:
                    self.udp.sendto(reply, addr)
                except OSError:
                    pass  # an unreachable prober is its own problem

    @property
    def http_port(self) -> int:
        """The web port, or 0 when the browser client is turned off."""
        return 0 if self.http is None else int(self.http.getsockname()[1])

    @property
    def tcp_port(self) -> int:
        """The plain chat port (0 when it is turned off)."""
        return int(self.tcp.getsockname()[1]) if self.tcp is not None else 0

    @property
    def tls_port(self) -> int | None:
        return int(self.tls.getsockname()[1]) if self.tls is not None else None

    # ------------------------------------------------------------------ administration

    def reload(self, actor: str, now: float) -> tuple[bool, str, list[str], list[str]]:
        """Reload the configuration and reopen the log file.

        Returns (ok, message, keys applied, keys changed in the file that need a restart).
        """
        try:
            new = self.reload_config()
        except Exception as exc:
            message = f"reload failed, configuration unchanged: {exc}"
            diag(message)
            self.activity.record(now, "reload_failed", actor=actor, error=str(exc)[:500])
            return False, message, [], []
        self.activity.reopen()
        old = self.config
        changed, ignored = reloadable_changes(old, new)
        config = old.replace(**{key: getattr(new, key) for key in changed})
        if config.max_connections != old.max_connections:
            raise_fd_limit(config.max_connections)
        self.config = config
        self.core.reconfigure(config)
        for conn in self.conns.values():
            conn.transport.max_line = config.max_line_bytes
        self.discovery.reconfigure(config)
        if self.web_site is not None:
            self.web_site.host_names = self._web_host_names(config)
        self.activity.reconfigure(ring_size=config.log_ring_size,
                                  max_bytes=config.log_max_bytes, backups=config.log_backups)
        self.activity.record(now, "reload", actor=actor, changed=changed,
                             needs_restart=ignored)
        message = "configuration reloaded"
        if changed:
            message += "; changed: " + ", ".join(changed)
        if ignored:
            message += "; need a restart: " + ", ".join(ignored)
        return True, message, changed, ignored

    # ------------------------------------------------------------------ signals

    def _handle_signals(self, now: float) -> None:
        signals, self.signals = self.signals, []
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.activity.record(now, "signal", signal=signal.Signals(signum).name)
                self.running = False
            elif signum == signal.SIGHUP:
                self.notifier.reloading(time.monotonic_ns() // 1000)
                _ok, message, _keys, _restart = self.reload("SIGHUP", now)
                diag(message)
                self.notifier.ready(self.core.status_line())
            elif signum == signal.SIGUSR2:
                # Test-only (LANCHATD_TEST_STALL=1): a stalled loop, for watchdog tests.
                diag("stalling the loop on request (LANCHATD_TEST_STALL)")
                time.sleep(3600)

    def _shutdown(self) -> int:
        now = time.time()
        self.notifier.stopping()
        while self.departures:  # every end is told (and logged) before the stop
            self.serve_departures(now)
        self.apply(self.core.shutdown(now))
        if self.control is not None:
            self.control.shutdown(now)
        self._after_pass(now)
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        while any(c.outq or c.pending for c in self.conns.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, mask in self.selector.select(min(left, 0.1)):
                if mask & WRITE and isinstance(key.data, ChatConnection):
                    key.data.flush(writable=True)
                elif mask & READ and isinstance(key.data, ChatConnection):
                    key.data.on_readable(time.time())
        for conn in list(self.conns.values()):
            self.close_now(conn)
        self.apply(self.core.summaries(time.time(), every=True))  # what was only counted
        self.activity.record(time.time(), "stop", counters=self.core.counters)
        self.activity.close()
        for sock in [listener.sock for listener in self.listeners] + [self.udp]:
            if sock is not None:
                sock.close()
        self.selector.close()
        return 0


class _Listener(Handler):
    """A chat listener: its accepted sockets get the transport ``factory`` makes."""

    def __init__(self, loop: Loop, sock: socket.socket, factory: TransportFactory,
                 sessions_open_later: bool) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        # Its adapters call ``session_opened`` when a client starts chatting (the web
        # port: a WebSocket); until then the core neither greets nor logs the client.
        self.sessions_open_later = sessions_open_later
        _tcp_tune(sock)
        self.options = _tcp_options(sock)
        # Whether the sockets it accepts come with the options: a connection the kernel
        # queued before they were set on the listener (by a socket unit, before the
        # daemon started) was copied from the untuned listener.  The queue is first in,
        # first out, so once one accepted socket has them all, every later one has too:
        # six system calls a connection less.
        self.inherits = False

    def tune(self, sock: socket.socket) -> None:
        """Give an accepted socket the chat options, unless it came with them."""
        if not self.inherits:
            self.inherits = self.options is not None and _tcp_options(sock) == self.options
            if not self.inherits:
                _tcp_tune(sock)

    def on_readable(self, now: float) -> None:
        self.loop.accept(self, now)


class _Discovery(Handler):
    def __init__(self, loop: Loop) -> None:
        self.loop = loop

    def on_readable(self, now: float) -> None:
        self.loop.on_datagram(now)


class _Wakeup(Handler):
    def __init__(self, loop: Loop) -> None:
        self.loop = loop

    def on_readable(self, now: float) -> None:
        assert self.loop._wake_r is not None
        try:
            while self.loop._wake_r.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass


def run(config: Config, reload: Callable[[], Config]) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    try:
        loop = Loop(config, reload)
        return loop.run()
    except BindError as exc:
        diag(str(exc.strerror))
        return 1
    except tls_identity.TlsSetupError as exc:
        diag(f"cannot start: {exc}")
        return 1
    except ValueError as exc:  # malformed LISTEN_FDS and the like from the service manager
        diag(f"cannot start: {exc}")
        return 1
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        diag(f"cannot start: {exc.strerror or exc}{where}")
        return 1
    except AdminError as exc:  # pragma: no cover - defensive
        diag(f"cannot start: {exc.message}")
        return 1

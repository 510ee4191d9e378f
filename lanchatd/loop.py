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

All sockets are non-blocking.  Reading is one ``recv`` per ready socket per pass, and
the core is handed at most ``MAX_LINES_PER_PASS`` lines of it per pass (the rest waits,
unread sockets stay in the kernel), so a fast sender cannot starve the others.  Output
is appended to a per-connection list during the pass and written at its end with one
``send`` per connection: a burst of room messages reaches each member in one system
call.  Whatever the kernel does not take stays in that connection's buffer, and only
then is the socket watched for writing.  A buffer past ``output_buffer_bytes`` means a
reader that does not read: the core decides what happens (``ChatCore.overflow``).

The loop decides nothing about chat: it hands bytes and events to the ``ChatCore`` and
applies the ``Effects`` it returns.  Timers are heaps (the core's, and the loop's own
for lingering closes), so an idle connection costs nothing per pass.

Signal handlers only record the signal; the loop acts on it after the selector wakes:
SIGTERM/SIGINT shut down gracefully, SIGHUP reloads the configuration and reopens
the activity log.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import importlib
import os
import resource
import selectors
import signal
import socket
import sys
import time
import uuid
from typing import Any, Callable

from lanchat import __version__
from lanchatd import systemd
from lanchatd.activity import ActivityLog
from lanchatd.config import Config, reloadable_changes
from lanchatd.core import AdminError, ChatCore, Effects, format_address
from lanchatd.discovery import DiscoveryResponder

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
# One read per connection per pass, as large as the relay's: 8 KiB reads made a
# lone sender's 64-byte messages cost 51 sends (one per member) per 84 messages.
RECV_SIZE = 65536
# The work one client can cause in a pass is bounded in lines, not bytes: 64 KiB of
# "x\n" was 32,768 rate-limited lines (~0.2 s) before anyone else ran.  The lines of a
# read past this many wait for the next passes, and the socket is not read meanwhile.
MAX_LINES_PER_PASS = 4096
LINGER_SECONDS = 2.0  # how long a closing connection may take to drain and say goodbye
SHUTDOWN_SECONDS = 1.5  # how long a shutdown waits for goodbyes to be flushed
ACCEPT_BATCH = 256
STATUS_INTERVAL = 2.0


def diag(message: str) -> None:
    """A diagnostic line on stderr (the journal under systemd)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"lanchatd: {message}", file=sys.stderr, flush=True)


def _tcp_tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
    except OSError:
        pass


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class BindError(OSError):
    pass


def _bind(kind: int, host: str, port: int, what: str) -> socket.socket:
    host = host or "0.0.0.0"
    try:
        sock = socket.socket(_family(host), kind)
    except OSError as exc:
        raise BindError(exc.errno, f"cannot open the {what} socket: {exc.strerror}") from None
    try:
        if kind == socket.SOCK_STREAM:  # on UDP it would let a second daemon share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        option = "--port" if kind == socket.SOCK_STREAM else "--discovery-port"
        raise BindError(exc.errno, f"cannot bind the {what} socket to "
                        f"{format_address((host, port))}: {exc.strerror} "
                        f"(choose another address or {option})") from None
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int, backlog: int) -> socket.socket:
    sock = _bind(socket.SOCK_STREAM, host, port, "TCP chat")
    sock.listen(backlog)
    return sock


def bind_udp(host: str, port: int) -> socket.socket:
    return _bind(socket.SOCK_DGRAM, host, port, "UDP discovery")


def sock_address(sock: socket.socket) -> str:
    addr = sock.getsockname()
    if isinstance(addr, tuple):
        return format_address(addr)
    return str(addr)


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
    return uuid.uuid4().hex


class Handler:
    """What the selector calls when a registered descriptor is ready."""

    def on_readable(self, now: float) -> None:  # pragma: no cover - interface
        pass

    def on_writable(self, now: float) -> None:  # pragma: no cover - interface
        pass


class ChatConnection(Handler):
    __slots__ = ("backlog", "cid", "closing", "linger_until", "loop", "outbuf", "pending",
                 "pending_bytes", "sock", "watching_write", "wr_shut")

    def __init__(self, loop: Loop, cid: int, sock: socket.socket) -> None:
        self.loop = loop
        self.cid = cid
        self.sock = sock
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.outbuf = b""
        self.watching_write = False
        self.closing = False
        self.wr_shut = False
        self.linger_until = 0.0
        self.backlog = b""  # received lines past MAX_LINES_PER_PASS, for the next pass

    @property
    def queued(self) -> int:
        return len(self.outbuf) + self.pending_bytes

    def on_readable(self, now: float) -> None:
        if self.backlog:
            return  # the rest of the last read comes first (Loop.run feeds it)
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.loop.connection_lost(self, now, f"connection error: {exc.strerror or exc}")
            return
        if self.closing:
            if not data:
                self.loop.close_now(self)
            return  # a closing connection's input is read and dropped
        self.feed(data, now)

    def feed(self, data: bytes, now: float) -> None:
        """Hand the core at most MAX_LINES_PER_PASS lines of ``data``; keep the rest."""
        if data.count(b"\n") > MAX_LINES_PER_PASS:
            cut = -1
            for _ in range(MAX_LINES_PER_PASS):
                cut = data.find(b"\n", cut + 1)
            data, self.backlog = data[: cut + 1], data[cut + 1:]
            self.loop.backlogged.append(self)
        self.loop.core_call(self.loop.core.receive, self.cid, data, now)

    def on_writable(self, now: float) -> None:
        self.flush()

    def flush(self) -> None:
        """Write what the kernel takes now; keep the rest and watch for writability."""
        if self.pending:
            data = self.outbuf + b"".join(self.pending) if self.outbuf else (
                self.pending[0] if len(self.pending) == 1 else b"".join(self.pending))
            self.pending = []
            self.pending_bytes = 0
        else:
            data = self.outbuf
        if data:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.outbuf = b""
                self.loop.connection_lost(self, time.time(),
                                          f"connection error: {exc.strerror or exc}")
                return
            self.outbuf = data[sent:] if sent < len(data) else b""
        want_write = bool(self.outbuf)
        if want_write != self.watching_write:
            self.watching_write = want_write
            self.loop.selector.modify(self.sock, READ | WRITE if want_write else READ, self)
        if self.closing and not self.outbuf and not self.wr_shut:
            self.wr_shut = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.loop.close_now(self)


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
        self.core = ChatCore(config, self.activity, server_id=self.server_id, now=now)
        self.discovery = DiscoveryResponder(config, self.server_id)
        self.conns: dict[int, ChatConnection] = {}
        self.dirty: set[ChatConnection] = set()
        self.backlogged: list[ChatConnection] = []  # with lines left from a long read
        self.overflowed: list[int] = []
        self.next_cid = 1
        self.linger: list[tuple[float, int]] = []
        self.signals: list[int] = []
        self.running = True
        self.accept_paused_until = 0.0
        self.accept_failing = False  # an accept outage was reported, not yet over
        self.extra_timers: list[tuple[float, int, Callable[[float], None]]] = []
        self._timer_seq = 0
        self.tcp: socket.socket | None = None
        self.udp: socket.socket | None = None
        self.control: Any = None  # the control server, when there is one
        self._last_status = ""
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # ------------------------------------------------------------------ set-up

    def open_sockets(self) -> None:
        config = self.config
        inherited = {name: sock for name, sock in systemd.listen_fds(self.environ)}
        self.tcp = inherited.pop("chat", None) or bind_tcp(
            config.host, config.port, config.listen_backlog)
        self.tcp.setblocking(False)
        self.udp = inherited.pop("discovery", None) or bind_udp(
            config.discovery_host, config.discovery_port)
        self.udp.setblocking(False)
        self.selector.register(self.tcp, READ, _Listener(self))
        self.selector.register(self.udp, READ, _Discovery(self))
        self.inherited = inherited
        self._open_control(inherited.pop("control", None))

    def _open_control(self, inherited: socket.socket | None) -> None:
        """The control socket (lanchatd/control.py), when that module is present."""
        try:
            control: Any = importlib.import_module("lanchatd.control")
        except ModuleNotFoundError:
            return
        self.control = control.ControlServer(self, inherited)

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
        assert self.tcp is not None and self.udp is not None
        parts = [f"tcp={sock_address(self.tcp)}", f"udp={sock_address(self.udp)}"]
        if self.control is not None:
            parts.append(f"control={self.control.path}")
        return "lanchatd ready " + " ".join(parts)

    # ------------------------------------------------------------------ running

    def run(self) -> int:
        now = time.time()
        raise_fd_limit(self.config.max_connections)
        self.open_sockets()
        self.install_signals()
        ready = self.readiness_line()
        self.activity.record(now, "start", version=__version__, state=self.core.state,
                             pid=os.getpid(), addresses=ready[len("lanchatd ready "):])
        print(ready, flush=True)
        self.notifier.ready(self.core.status_line())
        watchdog = self.notifier.watchdog_interval
        next_watchdog = time.monotonic() + watchdog if watchdog else None
        next_retry = now + 1.0
        next_status = now + STATUS_INTERVAL
        while self.running:
            timeout = self._timeout(now, next_retry)
            if next_watchdog is not None:
                timeout = max(0.0, min(timeout, next_watchdog - time.monotonic()))
            events = self.selector.select(timeout)
            now = time.time()
            backlog, self.backlogged = self.backlogged, []  # from earlier passes only
            for key, mask in events:
                handler: Handler = key.data
                try:
                    if mask & READ:
                        handler.on_readable(now)
                    if mask & WRITE:
                        handler.on_writable(now)
                except Exception as exc:  # one client's fault stays with that client
                    self._contain(handler, exc, now)
            if backlog:
                self._feed_backlog(backlog, now)
            self._after_pass(now)
            if self.signals:
                self._handle_signals(now)
                self._after_pass(now)
            deadline = self.core.next_deadline()
            if deadline is not None and deadline <= now:
                self.apply(self.core.tick(now))
                self._after_pass(now)
            if self._run_extra_timers(now):
                self._after_pass(now)
            self._linger_expired(now)
            if now >= next_retry:
                next_retry = now + 1.0
                self.activity.retry(now)
            if now >= next_status:
                next_status = now + STATUS_INTERVAL
                self._update_status()
            if next_watchdog is not None and time.monotonic() >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = time.monotonic() + (watchdog or 1.0)
        return self._shutdown()

    def _feed_backlog(self, todo: list[ChatConnection], now: float) -> None:
        for conn in todo:
            data, conn.backlog = conn.backlog, b""
            if conn.cid in self.conns and not conn.closing:
                try:
                    conn.feed(data, now)
                except Exception as exc:  # one client's fault stays with that client
                    self._contain(conn, exc, now)

    def _timeout(self, now: float, next_retry: float) -> float:
        if self.backlogged:
            return 0.0
        timeout = next_retry - now
        deadline = self.core.next_deadline()
        if deadline is not None:
            timeout = min(timeout, deadline - now)
        if self.linger:
            timeout = min(timeout, self.linger[0][0] - now)
        if self.extra_timers:
            timeout = min(timeout, self.extra_timers[0][0] - now)
        if self.accept_paused_until:
            timeout = min(timeout, self.accept_paused_until - now)
        return max(0.0, timeout)

    def _contain(self, handler: Handler, exc: Exception, now: float) -> None:
        detail = f"{type(exc).__name__}: {exc}"
        diag(f"internal error while serving a connection: {detail}")
        if isinstance(handler, ChatConnection):
            self.activity.record(now, "internal_error", cid=handler.cid, detail=detail[:300])
            self.connection_lost(handler, now, "internal error")
        elif hasattr(handler, "fail"):
            handler.fail(now, detail)
        else:
            self.activity.record(now, "internal_error", detail=detail[:300])

    def _after_pass(self, now: float) -> None:
        cap = self.config.output_buffer_bytes
        while self.dirty or self.overflowed:
            dirty, self.dirty = self.dirty, set()
            for conn in dirty:
                if conn.cid in self.conns:
                    conn.flush()
                    # The cap is on what the kernel would not take, checked after the
                    # write: one busy pass must not count against a reader that reads.
                    if len(conn.outbuf) > cap and not conn.closing:
                        self.overflowed.append(conn.cid)
            cids, self.overflowed = self.overflowed, []
            for cid in cids:
                self.apply(self.core.overflow(cid, now))
        if self.control is not None:
            self.control.after_pass(now)

    def _update_status(self) -> None:
        line = self.core.status_line()
        if line != self._last_status:
            self._last_status = line
            self.notifier.status(line)

    def add_timer(self, when: float, callback: Callable[[float], None]) -> None:
        self._timer_seq += 1
        heapq.heappush(self.extra_timers, (when, self._timer_seq, callback))

    def _run_extra_timers(self, now: float) -> bool:
        """Run due timers; True if any callback ran (its output wants flushing)."""
        ran = False
        while self.extra_timers and self.extra_timers[0][0] <= now:
            _when, _seq, callback = heapq.heappop(self.extra_timers)
            callback(now)
            ran = True
        if self.accept_paused_until and now >= self.accept_paused_until:
            self.accept_paused_until = 0.0
            assert self.tcp is not None
            self.selector.register(self.tcp, READ, _Listener(self))
        return ran

    # ------------------------------------------------------------------ effects

    def core_call(self, method: Callable[..., Effects], *args: Any) -> None:
        self.apply(method(*args))

    def apply(self, fx: Effects) -> None:
        conns = self.conns
        sends = fx.sends
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
            for cid in targets:
                conn = conns.get(cid)
                if conn is None or conn.closing:
                    continue
                conn.pending.append(data)
                conn.pending_bytes += size
                self.dirty.add(conn)
        for cid in fx.closes:
            conn = conns.get(cid)
            if conn is not None and not conn.closing:
                conn.closing = True
                conn.linger_until = time.time() + LINGER_SECONDS
                heapq.heappush(self.linger, (conn.linger_until, cid))
                self.dirty.add(conn)

    def connection_lost(self, conn: ChatConnection, now: float, reason: str) -> None:
        """The socket failed or the peer reset it: forget it and tell the core."""
        self.close_now(conn)
        self.apply(self.core.disconnected(conn.cid, now, reason))

    def close_now(self, conn: ChatConnection) -> None:
        if self.conns.pop(conn.cid, None) is None:
            return
        self.dirty.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()

    def _linger_expired(self, now: float) -> None:
        while self.linger and self.linger[0][0] <= now:
            _when, cid = heapq.heappop(self.linger)
            conn = self.conns.get(cid)
            if conn is not None:
                self.close_now(conn)

    # ------------------------------------------------------------------ accepting

    def accept(self, now: float) -> None:
        assert self.tcp is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.tcp.accept()
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
                    self.selector.unregister(self.tcp)
                    self.accept_paused_until = now + 0.5
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            if self.accept_failing:
                self.accept_failing = False
                diag("accepting connections again")
                self.activity.record(now, "accept_resumed")
            _tcp_tune(sock)
            cid = self.next_cid
            self.next_cid += 1
            conn = ChatConnection(self, cid, sock)
            self.conns[cid] = conn
            self.selector.register(sock, READ, conn)
            self.apply(self.core.connect(cid, addr, now))

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
                port=self.tcp_port)
            if reply is not None:
                try:
                    self.udp.sendto(reply, addr)
                except OSError:
                    pass  # an unreachable prober is its own problem

    @property
    def tcp_port(self) -> int:
        assert self.tcp is not None
        return int(self.tcp.getsockname()[1])

    # ------------------------------------------------------------------ administration

    def admin(self, method: Callable[..., Effects], *args: Any) -> None:
        """Run an administrative core call and apply its effects (raises AdminError)."""
        self.apply(method(*args))
        self._after_pass(time.time())

    def reload(self, actor: str, now: float) -> tuple[bool, str, list[str]]:
        """Reload the configuration and reopen the log file. Returns (ok, message, keys)."""
        try:
            new = self.reload_config()
        except Exception as exc:
            message = f"reload failed, configuration unchanged: {exc}"
            diag(message)
            self.activity.record(now, "reload_failed", actor=actor, error=str(exc)[:500])
            return False, message, []
        self.activity.reopen()
        old = self.config
        changed, ignored = reloadable_changes(old, new)
        config = old.replace(**{key: getattr(new, key) for key in changed})
        if config.max_connections != old.max_connections:
            raise_fd_limit(config.max_connections)
        self.config = config
        self.core.reconfigure(config)
        self.discovery.reconfigure(config)
        self.activity.reconfigure(ring_size=config.log_ring_size,
                                  max_bytes=config.log_max_bytes, backups=config.log_backups)
        self.activity.record(now, "reload", actor=actor, changed=changed,
                             needs_restart=ignored)
        message = "configuration reloaded"
        if changed:
            message += "; changed: " + ", ".join(changed)
        if ignored:
            message += "; need a restart: " + ", ".join(ignored)
        return True, message, changed

    # ------------------------------------------------------------------ signals

    def _handle_signals(self, now: float) -> None:
        signals, self.signals = self.signals, []
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.activity.record(now, "signal", signal=signal.Signals(signum).name)
                self.running = False
            elif signum == signal.SIGHUP:
                self.notifier.reloading(time.monotonic_ns() // 1000)
                _ok, message, _keys = self.reload("SIGHUP", now)
                diag(message)
                self.notifier.ready(self.core.status_line())
            elif signum == signal.SIGUSR2:
                # Test-only (LANCHATD_TEST_STALL=1): a stalled loop, for watchdog tests.
                diag("stalling the loop on request (LANCHATD_TEST_STALL)")
                time.sleep(3600)

    def _shutdown(self) -> int:
        now = time.time()
        self.notifier.stopping()
        self.apply(self.core.shutdown(now))
        if self.control is not None:
            self.control.shutdown(now)
        self._after_pass(now)
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        while any(c.outbuf or c.pending for c in self.conns.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, mask in self.selector.select(min(left, 0.1)):
                if mask & WRITE and isinstance(key.data, ChatConnection):
                    key.data.flush()
                elif mask & READ and isinstance(key.data, ChatConnection):
                    key.data.on_readable(time.time())
        for conn in list(self.conns.values()):
            self.close_now(conn)
        self.activity.record(time.time(), "stop", counters=self.core.counters)
        self.activity.close()
        for sock in (self.tcp, self.udp):
            if sock is not None:
                sock.close()
        self.selector.close()
        return 0


class _Listener(Handler):
    def __init__(self, loop: Loop) -> None:
        self.loop = loop

    def on_readable(self, now: float) -> None:
        self.loop.accept(now)


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

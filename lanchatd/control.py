"""The control socket: how lanchatctl reaches the running daemon.

Theory of operation
-------------------
A Unix stream socket, served by the same selector loop as the chat (lanchatd/loop.py),
speaks the control protocol of lanchat.protocol.control (docs/protocol.md, section 16).
Nothing here may block the loop, so every control connection is non-blocking and
bounded like a chat connection:

* Input: one ``recv`` per ready pass; the codec refuses a line longer than
  ``MAX_REQUEST_BYTES`` with an error reply and the connection is closed.  At most
  ``REQUESTS_PER_PASS`` requests are served per pass; the rest wait in the codec and
  the socket is watched for writing, which is ready at once, so they are served on
  the next pass without starving chat clients.
* Output: replies are appended to the connection's buffer and written at the end of
  the pass (``after_pass``), one ``send`` each.  While the buffer holds more than
  ``OUTPUT_LIMIT`` bytes no further request is read or served (a client that sends
  without reading only stalls itself); a ``log --follow`` reader whose buffer is past
  the limit when a new entry arrives is dropped, since entries cannot wait.
* Time: a connection that has not said hello within ``control_hello_timeout`` seconds,
  or has sent no request for ``control_idle_timeout`` seconds while not following the
  log, is told so and closed (timers from the loop's ``add_timer``; nothing scans
  connections).  At most ``control_max_connections`` are served at once.  When all
  are taken, a newcomer takes the place of the connection that has been silent longest
  (no hello yet first, else no request for the longest; not following the log, nothing
  being answered),
  which is told ``idle_timeout`` and closed: an administrator who runs lanchatctl
  gets in at once, whatever a script left open (128 silent connections used to lock
  them out until their timeouts).  Log followers are not silent, so they may take at
  most half of the places (``follower_limit``); past it a ``log --follow`` is told
  ``busy``.  Only when every place is being answered is a newcomer told ``busy``.
  These three are keys of ``[control]`` in the configuration.
* Faults: a malformed request gets an error reply, and ``MAX_ERRORS`` of them close the
  connection; a bug while serving one request becomes an ``internal_error`` reply for
  that request; a handler exception caught by the loop lands in ``fail``, which closes
  that one connection.

What a request does is decided in lanchatd/admin.py, which touches no socket: this
module decodes, hands each request to ``admin.run`` with the connection's ``Session``,
and carries out the ``Outcome`` (queue the reply, let the loop apply the chat effects,
start or end a log stream).  The loop is reached only through ``Host``, the typed
list of what this module uses of it, so this module does not import the loop.

Loaded late: the control protocol's codec and requests (lanchat.protocol.control) and
the commands (lanchatd/admin.py) are imported by the first control connection, not at
start: their forty-odd dataclasses are about 8 ms of a start that serves no
administrator yet (docs/performance.md, "Start to ready").

Who asked: the kernel tells us the peer's uid and pid (SO_PEERCRED) at accept, and that
becomes the ``actor`` the core writes into the activity log with every admin action.

The socket file: when the daemon runs as root or as a system user, created with mode
0660 and given to the group ``[control] control_group`` (``lanchat``), so that members
of that group can administer without sudo.  An ordinary user's daemon makes it 0600:
the file would otherwise keep that user's primary group (or its directory's), and any
other member of that group could stop the server.  A socket file left by a daemon that died is
replaced; one a live daemon answers on is never taken over (the start fails and says
so).  Under socket activation systemd hands us the listening socket ready-made, with
its own mode and group, and keeps the file when we stop.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import selectors
import socket
import stat
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Protocol

from lanchat import paths
from lanchatd import access
from lanchatd.activity import ActivityLog
from lanchatd.config import Config
from lanchatd.core import Effects
from lanchatd.discovery import DiscoveryResponder
from lanchatd.support import BindError, diag, sock_address

if TYPE_CHECKING:
    from lanchat.protocol.control import Failure, Incoming, Request
    from lanchatd import admin

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
# The time and connection limits are the [control] keys of the configuration
# (control_hello_timeout, control_idle_timeout, control_max_connections).
OUTPUT_LIMIT = 1 << 20
MAX_ERRORS = 10
REQUESTS_PER_PASS = 32
RECV_SIZE = 65536
ACCEPT_BATCH = 32
ACCEPT_PAUSE = 0.5
ABORT_LINGER = 2.0  # how long a closing connection may take to read its last reply
SOCKET_MODE = 0o660  # a system daemon's: its owner and control_group
USER_SOCKET_MODE = 0o600  # an ordinary user's daemon: that user alone
LISTEN_BACKLOG = 64
PROBE_TIMEOUT = 1.0
SYSTEM_UID_MAX = 999  # Debian's SYS_UID_MAX: uids up to this one are system users


class Host(Protocol):
    """What the control server needs from the loop that runs it (lanchatd/loop.py).

    The loop passes itself; mypy checks here that it has all of this, and the control
    server never imports the loop.
    """

    @property
    def config(self) -> Config: ...
    @property
    def environ(self) -> Mapping[str, str]: ...
    @property
    def selector(self) -> selectors.BaseSelector: ...
    @property
    def core(self) -> admin.ChatAdmin: ...
    @property
    def activity(self) -> ActivityLog: ...
    @property
    def discovery(self) -> DiscoveryResponder: ...
    @property
    def tcp(self) -> socket.socket | None: ...
    @property
    def udp(self) -> socket.socket | None: ...
    @property
    def tls(self) -> socket.socket | None: ...
    @property
    def tls_fingerprint(self) -> str | None: ...
    @property
    def http(self) -> socket.socket | None: ...
    def add_timer(self, when: float, callback: Callable[[float], None]) -> object:
        """Call ``callback(now)`` once ``now`` reaches ``when`` (what it returns is unused)."""
    def apply(self, fx: Effects) -> None: ...
    def reload(self, actor: str, now: float) -> tuple[bool, str, list[str], list[str]]: ...


# --------------------------------------------------------------------------- the socket


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end, from the kernel."""
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def describe_peer(creds: tuple[int, int, int] | None) -> str:
    """The actor written to the activity log: ``uid=1000(alice) pid=1234``."""
    if creds is None:
        return "control socket (peer unknown)"
    pid, uid, _gid = creds
    return f"uid={uid}({_user_name(uid)}) pid={pid}"


def _ask_pid(probe: socket.socket) -> str:
    """' (pid N)' of the daemon answering on ``probe``, or '' if it does not say."""
    try:
        probe.sendall(b'{"id":1,"cmd":"hello","versions":[1],"client":"lanchatd"}\n')
        data = b""
        while b"\n" not in data and len(data) < 65536:
            chunk = probe.recv(4096)
            if not chunk:
                break
            data += chunk
        pid = json.loads(data.split(b"\n", 1)[0])["result"]["pid"]
        return f" (pid {int(pid)})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _clear_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse to touch a live or foreign one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(errno.EEXIST, f"cannot create the control socket {path}: the path "
                        "exists and is not a socket; remove it or choose another path "
                        "with --control-socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        # Nobody listens: a daemon died without removing it.  Replace it.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        diag(f"replaced the stale control socket {path} (left by a daemon that is gone)")
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BindError(exc.errno or errno.EIO, f"cannot check whether another lanchatd "
                        f"listens on the control socket {path}: {exc.strerror or exc}; "
                        "remove it or choose another path with --control-socket") from None
    else:
        who = _ask_pid(probe)
        raise BindError(errno.EADDRINUSE, f"another lanchatd{who} is running and listens "
                        f"on the control socket {path}; stop it first (lanchatctl "
                        f"--socket {path} status shows it), or give this one another "
                        "path with --control-socket")
    finally:
        probe.close()


def _give_group(path: str, group: str) -> None:
    """Hand the socket to ``group`` when running as root or as a system user."""
    uid = os.geteuid()
    if not group or uid > SYSTEM_UID_MAX:
        return  # an ordinary user's daemon: the socket stays the user's own
    user = _user_name(uid)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        diag(f"the group {group!r} does not exist, so only {user} can use the control "
             f"socket {path}; create it (groupadd --system {group}, or systemd-sysusers "
             "with the lanchat sysusers file) or set [control] control_group")
        return
    if os.stat(path).st_gid == gid:
        return
    try:
        os.chown(path, -1, gid)
    except OSError as exc:
        diag(f"cannot give the control socket {path} to group {group!r} "
             f"({exc.strerror or exc}); only {user} can use it")


def socket_mode(uid: int) -> int:
    """The control socket's mode for a daemon running as ``uid``: a group's only for
    a system daemon, which hands it to ``control_group`` (``_give_group``)."""
    return SOCKET_MODE if uid <= SYSTEM_UID_MAX else USER_SOCKET_MODE


def open_control_socket(path: str, group: str) -> socket.socket:
    """Bind and listen on ``path`` (``socket_mode``, group ``group`` for a system
    daemon); raise BindError."""
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise BindError(exc.errno or errno.EIO, f"cannot create the directory {directory} "
                        f"for the control socket: {exc.strerror or exc}; choose another path "
                        "with --control-socket") from None
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # nobody else may connect before the chmod below
    try:
        sock.bind(path)
        os.chmod(path, socket_mode(os.geteuid()))
        _give_group(path, group)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno or errno.EIO, f"cannot listen on the control socket "
                        f"{path}: {exc.strerror or exc}; choose another path with "
                        "--control-socket") from None
    finally:
        os.umask(old_umask)
    sock.setblocking(False)
    return sock


# --------------------------------------------------------------------------- connections


class ControlConnection:
    """One lanchatctl (or other client) connected to the control socket."""

    def __init__(self, server: ControlServer, sock: socket.socket, now: float) -> None:
        from lanchat.protocol.control import MAX_REQUEST_BYTES, ServerConnection
        from lanchatd import admin

        self.server = server
        self.sock = sock
        self.codec = ServerConnection(MAX_REQUEST_BYTES)
        self.out = bytearray()
        self.mask = READ
        self.closed = False
        self.closing = False  # close as soon as ``out`` is written
        self.eof = False
        self.backlog = False  # whole requests may be waiting in the codec
        self.errors = 0
        server.accepted += 1
        self.number = server.accepted  # order of arrival, among those of one pass
        self.created = now
        self.last_active = now
        creds = peer_credentials(sock)
        config = server.host.config
        self.session = admin.Session(
            describe_peer(creds),
            role=access.role(creds, access.peer_groups(sock), config.control_group,
                             config.control_watch_group),
            admin_group=config.control_group)

    @property
    def actor(self) -> str:
        return self.session.actor

    # -- selector callbacks ----------------------------------------------------------

    def on_readable(self, now: float) -> None:
        if self.closed or self.closing or self.eof:
            return
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close_now()
            return
        if not data:
            self.eof = True
        self.codec.receive_data(data)
        self.process(now)

    def on_writable(self, now: float) -> None:
        if self.closed:
            return
        self.flush()
        if self.backlog and not self.closed and len(self.out) <= OUTPUT_LIMIT:
            self.process(now)
        else:
            self.update_interest()

    def fail(self, now: float, detail: str) -> None:
        """The loop caught an exception from this connection's handler."""
        if self.closed:
            return
        from lanchat.protocol.control import Code, Failure

        self.server.record(now, "internal_error", self, detail=detail[:300])
        self.abort(now, Failure(None, Code.INTERNAL_ERROR,
                                "lanchatd failed while serving this connection "
                                f"({detail[:200]}); closing it."))

    # -- requests --------------------------------------------------------------------

    def process(self, now: float) -> None:
        """Serve the whole requests the codec holds, within this pass's share."""
        from lanchat.protocol.control import (
            Code,
            ConnectionClosed,
            ControlError,
            Failure,
            ServerConnection,
        )

        served = 0
        self.backlog = False
        while not self.closed and not self.closing:
            if served >= REQUESTS_PER_PASS or len(self.out) > OUTPUT_LIMIT:
                self.backlog = True
                break
            try:
                event = self.codec.next_event()
            except ControlError as exc:
                served += 1
                self.errors += 1
                if exc.fatal:
                    self.server.record(now, "control_closed", self, reason=exc.code,
                                       detail=exc.message[:200])
                    self.abort(now, Failure(exc.request_id, exc.number, exc.message))
                elif self.errors > MAX_ERRORS:
                    self.server.record(now, "control_closed", self, reason="too_many_errors",
                                       detail=exc.message[:200])
                    self.abort(now, Failure(exc.request_id, Code.TOO_MANY_ERRORS,
                                            f"{self.errors} bad requests on this "
                                            f"connection; closing it. Last: {exc.message}"))
                else:
                    self.queue(ServerConnection.error_reply(exc))
                continue
            if event is None:
                break
            if isinstance(event, ConnectionClosed):
                self.server.stop_stream(self)
                self.closing = True
                break
            served += 1
            self.last_active = now
            self.session.version = self.codec.version
            self.server.dispatch(self, event, now)
        self.update_interest()

    def queue(self, data: bytes) -> None:
        if self.closed:
            return
        self.out += data
        self.server.dirty.add(self)

    def abort(self, now: float, failure: Failure) -> None:
        """Say why in one last reply, then close once it is written."""
        from lanchat.protocol.control import encode_reply

        self.server.stop_stream(self)
        self.queue(encode_reply(failure))
        self.closing = True
        self.update_interest()
        self.server.host.add_timer(now + ABORT_LINGER, lambda _now: self.close_now())

    # -- output and the selector -----------------------------------------------------

    def flush(self) -> None:
        if self.closed or not self.out:
            return
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close_now()
            return
        del self.out[:sent]

    def update_interest(self) -> None:
        if self.closed:
            return
        if self.closing and not self.out:
            self.close_now()
            return
        mask = 0
        if not (self.closing or self.eof or self.backlog or len(self.out) > OUTPUT_LIMIT):
            mask |= READ
        if self.out or self.backlog:
            mask |= WRITE
        if not mask:
            self.close_now()  # the client closed its side and has every answer
            return
        if mask != self.mask:
            self.mask = mask
            self.server.host.selector.modify(self.sock, mask, self)

    def close_now(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.forget(self)
        with contextlib.suppress(KeyError, ValueError):
            self.server.host.selector.unregister(self.sock)
        self.sock.close()

    def check_idle(self, now: float) -> None:
        """Timer: close a connection that never said hello, or went quiet."""
        if self.closed or self.closing:
            return
        config = self.server.host.config
        hello_timeout = config.control_hello_timeout
        idle_timeout = config.control_idle_timeout
        if not self.session.hello_done:
            deadline = self.created + hello_timeout
            what = f"no hello within {hello_timeout:g} seconds"
        elif self.session.stream_id is not None:
            deadline = now + idle_timeout  # following the log is not idling
            what = ""
        else:
            deadline = self.last_active + idle_timeout
            what = f"no request for {idle_timeout:g} seconds"
        if now < deadline:
            self.server.host.add_timer(deadline, self.check_idle)
            return
        from lanchat.protocol.control import Code, Failure

        self.server.record(now, "control_closed", self, reason="idle_timeout", detail=what)
        self.abort(now, Failure(None, Code.IDLE_TIMEOUT, f"Closing: {what}."))


class _Listener:
    def __init__(self, server: ControlServer) -> None:
        self.server = server

    def on_readable(self, now: float) -> None:
        self.server.accept(now)

    def on_writable(self, now: float) -> None:  # pragma: no cover - watched for reading
        pass

    def fail(self, now: float, detail: str) -> None:
        self.server.host.activity.record(now, "internal_error", where="control socket",
                                         detail=detail[:300])


# --------------------------------------------------------------------------- the server


class ControlServer:
    """The listening control socket and its connections; the loop's ``control``.

    It is also the ``admin.Daemon`` the commands see: a view of ``host`` narrowed to
    what they may use.
    """

    def __init__(self, host: Host, inherited: socket.socket | None) -> None:
        self.host = host
        self.conns: set[ControlConnection] = set()
        self.dirty: set[ControlConnection] = set()
        self.followers: dict[ControlConnection, int] = {}
        self.to_drop: list[ControlConnection] = []
        self.accept_failing = False  # out of descriptors, said once until it recovers
        self.accepted = 0  # control connections accepted so far
        self._inode: int | None = None  # of the socket file we made (None: systemd's)
        self._commands: dict[type[Request], admin.Command[Any]] | None = None
        if inherited is not None:
            self.sock = inherited
            name = inherited.getsockname()
            self.path = name.decode() if isinstance(name, bytes) else str(name)
        else:
            self.path = host.config.control_socket or paths.daemon_control_socket(
                host.environ)
            self.sock = open_control_socket(self.path, host.config.control_group)
            self._inode = os.stat(self.path).st_ino
        self.sock.setblocking(False)
        access.grant_watchers(self.path, host.config.control_watch_group, diag)
        self._listener = _Listener(self)
        host.selector.register(self.sock, READ, self._listener)
        self._unsubscribe = host.activity.subscribe(self._on_entry)

    @property
    def commands(self) -> dict[type[Request], admin.Command[Any]]:
        """The command table (a test may replace a row), made when first needed."""
        if self._commands is None:
            from lanchatd import admin

            self._commands = dict(admin.COMMANDS)
        return self._commands

    # -- admin.Daemon ----------------------------------------------------------------

    @property
    def chat(self) -> admin.ChatAdmin:
        return self.host.core

    @property
    def log(self) -> admin.LogMemory:
        return self.host.activity

    def surroundings(self) -> admin.Surroundings:
        from lanchatd import admin

        host = self.host
        addresses = {}
        if host.tcp is not None:
            addresses["tcp"] = sock_address(host.tcp)
        if host.udp is not None:
            addresses["udp"] = sock_address(host.udp)
        if host.tls is not None:
            addresses["tls"] = sock_address(host.tls)
        if host.http is not None:
            addresses["http"] = sock_address(host.http)
        addresses["control"] = self.path
        return admin.Surroundings(
            pid=os.getpid(), addresses=addresses, discovery=dict(host.discovery.counters),
            control_connections=len(self.conns), log_file=host.activity.path,
            tls_fingerprint=host.tls_fingerprint)

    def reload(self, actor: str, now: float) -> admin.Reloaded:
        from lanchatd import admin

        ok, message, changed, needs_restart = self.host.reload(actor, now)
        return admin.Reloaded(ok, message, changed, needs_restart)

    # -- the loop's interface --------------------------------------------------------

    def accept(self, now: float) -> None:
        host = self.host
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if not self.accept_failing:  # once per outage, not at every retry
                        self.accept_failing = True
                        diag(f"cannot accept control connections: {exc.strerror}; "
                             f"retrying every {ACCEPT_PAUSE:g} s")
                    host.selector.unregister(self.sock)
                    host.add_timer(now + ACCEPT_PAUSE, self._resume_accept)
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            if self.accept_failing:
                self.accept_failing = False
                diag("accepting control connections again")
            sock.setblocking(False)
            limit = host.config.control_max_connections
            if len(self.conns) >= limit:
                self._make_room(now)
            if len(self.conns) >= limit:
                from lanchat.protocol.control import Code, Failure, encode_reply

                with contextlib.suppress(OSError):
                    sock.send(encode_reply(Failure(
                        None, Code.BUSY, f"lanchatd already serves {limit} "
                        "control connections; try again when some have closed.")))
                sock.close()
                continue
            conn = ControlConnection(self, sock, now)
            self.conns.add(conn)
            host.selector.register(sock, READ, conn)
            host.add_timer(now + host.config.control_hello_timeout, conn.check_idle)

    def _make_room(self, now: float) -> None:
        """Every place is taken: close the connection silent longest, if one is (see
        the module's docstring).  A linear scan, only when all places are taken."""
        silent = [c for c in self.conns
                  if not (c.closing or c.closed or c.out or c.backlog or c in self.followers)]
        if not silent:
            return
        # One that never said hello first (it would meet its hello timeout anyway), then
        # the one whose last request is oldest.
        oldest = min(silent, key=lambda c: (c.session.hello_done, c.last_active, c.number))
        from lanchat.protocol.control import Code, Failure

        what = ("no hello" if not oldest.session.hello_done else
                f"no request for {now - oldest.last_active:.0f} seconds")
        self.record(now, "control_closed", oldest, reason="idle_timeout",
                    detail=f"{what}, and a new connection needed its place")
        oldest.abort(now, Failure(None, Code.IDLE_TIMEOUT, (
            f"Closing: {what}, and all {len(self.conns)} control connections were taken "
            "when another one came; the one silent longest makes room.")))
        oldest.flush()
        oldest.close_now()  # its place now, not once its goodbye is read

    def follower_limit(self) -> int:
        """Log followers served at once: half the places, so others always find one."""
        return max(1, self.host.config.control_max_connections // 2)

    def _resume_accept(self, _now: float) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.host.selector.register(self.sock, READ, self._listener)

    def after_pass(self, now: float) -> None:
        """End of a loop pass: drop followers that stopped reading, write the replies."""
        while self.to_drop:
            conn = self.to_drop.pop()
            if not conn.closed:
                self.record(now, "control_closed", conn, reason="slow_reader",
                            detail=f"more than {OUTPUT_LIMIT} bytes of the log it follows "
                            "were not read")
                conn.close_now()
        if self.dirty:
            dirty, self.dirty = self.dirty, set()
            for conn in dirty:
                conn.flush()
                conn.update_interest()

    def shutdown(self, now: float) -> None:
        """The daemon is stopping: end streams, close everything, remove our socket file."""
        self._unsubscribe()
        for conn in list(self.conns):
            # Loaded already by the connection's start: a dictionary lookup.
            from lanchat.protocol.control import Code, Failure, StreamEnd, encode_reply

            stream_id = self.followers.pop(conn, None)
            if stream_id is not None:
                conn.queue(encode_reply(StreamEnd(stream_id, "shutdown",
                                                  "lanchatd is stopping.")))
            else:
                conn.queue(encode_reply(Failure(None, Code.SHUTTING_DOWN,
                                                "lanchatd is stopping.")))
            conn.flush()
            conn.close_now()
        with contextlib.suppress(KeyError, ValueError):
            self.host.selector.unregister(self.sock)
        self.sock.close()
        if self._inode is not None:
            try:
                if os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
            except OSError:
                pass  # gone already, or replaced by someone else's: leave it

    # -- bookkeeping -----------------------------------------------------------------

    def forget(self, conn: ControlConnection) -> None:
        self.conns.discard(conn)
        self.dirty.discard(conn)
        self.stop_stream(conn)

    def record(self, now: float, event: str, conn: ControlConnection, **fields: Any) -> None:
        self.host.activity.record(now, event, actor=conn.actor, **fields)

    def stop_stream(self, conn: ControlConnection) -> None:
        self.followers.pop(conn, None)
        conn.session.stream_id = None

    def _on_entry(self, entry: dict[str, Any]) -> None:
        """Activity-log subscriber: one JSON encoding, copied to every follower."""
        if not self.followers:
            return
        from lanchat.protocol.control import encode_entry, stream_item

        encoded = encode_entry(entry)
        for conn, stream_id in list(self.followers.items()):
            if len(conn.out) > OUTPUT_LIMIT:
                # Not reading: dropped at the end of the pass (recording it here would
                # hand other followers entries out of order).
                self.stop_stream(conn)
                self.to_drop.append(conn)
                continue
            conn.queue(stream_item(stream_id, encoded))

    def dispatch(self, conn: ControlConnection, incoming: Incoming, now: float) -> None:
        """Serve one request (lanchatd/admin.py decides) and carry out its outcome."""
        from lanchat.protocol.control import Code, Failure, encode_reply
        from lanchatd import admin

        request = incoming.request
        if getattr(request, "follow", False) is True and conn.session.hello_done \
                and conn not in self.followers \
                and len(self.followers) >= self.follower_limit():
            limit = self.follower_limit()
            self.record(now, "control_closed", conn, reason="busy",
                        detail=f"{limit} log followers already")
            conn.abort(now, Failure(incoming.id, Code.BUSY, (
                f"lanchatd already streams the log to {limit} followers (half of "
                "control_max_connections); try again when one has stopped.")))
            return
        try:
            outcome = admin.run(self, conn.session, incoming, now, self.commands)
        except Exception as exc:  # a bug: this request fails, the daemon goes on
            detail = f"{type(exc).__name__}: {exc}"
            diag(f"internal error serving control request {request.CMD}: {detail}")
            self.record(now, "internal_error", conn, cmd=request.CMD, detail=detail[:300])
            conn.queue(encode_reply(Failure(
                incoming.id, Code.INTERNAL_ERROR, f"lanchatd failed while doing "
                f"{request.CMD} ({detail[:200]}); it may be partly done, check status.")))
            return
        if outcome.stream_end is not None:
            self.followers.pop(conn, None)
            conn.queue(encode_reply(outcome.stream_end))
        conn.queue(encode_reply(outcome.reply))
        if outcome.effects is not None:
            self.host.apply(outcome.effects)
        if outcome.follow:
            self.followers[conn] = incoming.id

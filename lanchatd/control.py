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
* Time: a connection that has not said hello within ``HELLO_TIMEOUT`` seconds, or has
  sent nothing for ``IDLE_TIMEOUT`` seconds while not following the log, is told so
  and closed (timers from ``Loop.add_timer``; nothing scans connections).
* Faults: a malformed request gets an error reply, and ``MAX_ERRORS`` of them close the
  connection; a bug while serving one request becomes an ``internal_error`` reply for
  that request; a handler exception caught by the loop lands in ``fail``, which closes
  that one connection.

Who asked: the kernel tells us the peer's uid and pid (SO_PEERCRED) at accept, and that
becomes the ``actor`` the core writes into the activity log with every admin action.

The socket file: created with mode 0660 and, when the daemon runs as root or as a system
user, given to the group ``[control] control_group`` (``lanchat``), so that members of
that group can administer without sudo.  A socket file left by a daemon that died is
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
import socket
import stat
import struct
from collections.abc import Mapping
from typing import Any, Callable

from lanchat import __version__, paths
from lanchat.protocol import rules
from lanchat.protocol.control import (
    MAX_REQUEST_BYTES,
    Announce,
    Cancel,
    CloseRoom,
    Code,
    ConnectionClosed,
    ControlError,
    Failure,
    Hello,
    Incoming,
    Kick,
    Log,
    Ok,
    Reload,
    Request,
    Rooms,
    ServerConnection,
    SetState,
    Status,
    StreamEnd,
    Users,
    encode_entry,
    encode_reply,
    stream_item,
)
from lanchatd.core import AdminError
from lanchatd.loop import READ, WRITE, BindError, Handler, Loop, diag, sock_address
from lanchatd.states import SERVER_STATE_RULES

HELLO_TIMEOUT = 10.0
IDLE_TIMEOUT = 600.0
OUTPUT_LIMIT = 1 << 20
MAX_CONNECTIONS = 128
MAX_ERRORS = 10
REQUESTS_PER_PASS = 32
RECV_SIZE = 65536
ACCEPT_BATCH = 32
ACCEPT_PAUSE = 0.5
SOCKET_MODE = 0o660
LISTEN_BACKLOG = 64
PROBE_TIMEOUT = 1.0
SYSTEM_UID_MAX = 999  # Debian's SYS_UID_MAX: uids up to this one are system users

# The core's AdminError codes, as numbered protocol errors.
ADMIN_CODES: Mapping[str, Code] = {
    "unknown_room": Code.UNKNOWN_ROOM,
    "unknown_user": Code.UNKNOWN_USER,
    "bad_state": Code.BAD_VALUE,
    "bad_value": Code.BAD_VALUE,
}


class Refused(Exception):
    """A request the daemon understood and will not do (becomes a Failure reply)."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


def open_control_socket(path: str, group: str) -> socket.socket:
    """Bind and listen on ``path`` (mode 0660, group ``group``); raise BindError."""
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
        os.chmod(path, SOCKET_MODE)
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


class ControlConnection(Handler):
    """One lanchatctl (or other client) connected to the control socket."""

    def __init__(self, server: ControlServer, sock: socket.socket, now: float) -> None:
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
        self.stream_id: int | None = None
        self.created = now
        self.last_active = now
        self.hello_done = False
        self.actor = describe_peer(peer_credentials(sock))

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
        self.server.record(now, "internal_error", self, detail=detail[:300])
        self.abort(now, Failure(None, Code.INTERNAL_ERROR,
                                "lanchatd failed while serving this connection "
                                f"({detail[:200]}); closing it."))

    # -- requests --------------------------------------------------------------------

    def process(self, now: float) -> None:
        """Serve the whole requests the codec holds, within this pass's share."""
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
            self.server.dispatch(self, event, now)
        self.update_interest()

    def queue(self, data: bytes) -> None:
        if self.closed:
            return
        self.out += data
        self.server.dirty.add(self)

    def abort(self, now: float, failure: Failure) -> None:
        """Say why in one last reply, then close once it is written."""
        self.server.stop_stream(self)
        self.queue(encode_reply(failure))
        self.closing = True
        self.update_interest()
        self.server.loop.add_timer(now + 2.0, lambda _now: self.close_now())

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
            self.server.loop.selector.modify(self.sock, mask, self)

    def close_now(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.forget(self)
        with contextlib.suppress(KeyError, ValueError):
            self.server.loop.selector.unregister(self.sock)
        self.sock.close()

    def check_idle(self, now: float) -> None:
        """Timer: close a connection that never said hello, or went quiet."""
        if self.closed or self.closing:
            return
        if not self.hello_done:
            deadline = self.created + HELLO_TIMEOUT
            what = f"no hello within {HELLO_TIMEOUT:g} seconds"
        elif self.stream_id is not None:
            deadline = now + IDLE_TIMEOUT  # following the log is not idling
            what = ""
        else:
            deadline = self.last_active + IDLE_TIMEOUT
            what = f"no request for {IDLE_TIMEOUT:g} seconds"
        if now < deadline:
            self.server.loop.add_timer(deadline, self.check_idle)
            return
        self.server.record(now, "control_closed", self, reason="idle_timeout", detail=what)
        self.abort(now, Failure(None, Code.IDLE_TIMEOUT, f"Closing: {what}."))


class _Listener(Handler):
    def __init__(self, server: ControlServer) -> None:
        self.server = server

    def on_readable(self, now: float) -> None:
        self.server.accept(now)

    def fail(self, now: float, detail: str) -> None:
        self.server.loop.activity.record(now, "internal_error", where="control socket",
                                         detail=detail[:300])


# --------------------------------------------------------------------------- the server


class ControlServer:
    """The listening control socket and its connections; the loop's ``control``."""

    def __init__(self, loop: Loop, inherited: socket.socket | None) -> None:
        self.loop = loop
        self.conns: set[ControlConnection] = set()
        self.dirty: set[ControlConnection] = set()
        self.followers: dict[ControlConnection, int] = {}
        self.to_drop: list[ControlConnection] = []
        self.accept_failing = False  # out of descriptors, said once until it recovers
        self._inode: int | None = None  # of the socket file we made (None: systemd's)
        if inherited is not None:
            self.sock = inherited
            name = inherited.getsockname()
            self.path = name.decode() if isinstance(name, bytes) else str(name)
        else:
            self.path = loop.config.control_socket or paths.daemon_control_socket(
                loop.environ)
            self.sock = open_control_socket(self.path, loop.config.control_group)
            self._inode = os.stat(self.path).st_ino
        self.sock.setblocking(False)
        self._listener = _Listener(self)
        loop.selector.register(self.sock, READ, self._listener)
        self._unsubscribe = loop.activity.subscribe(self._on_entry)
        self._handlers: dict[type[Request], Callable[[ControlConnection, Any, float],
                                                     dict[str, Any] | None]] = {
            Hello: self._hello, Status: self._status, Rooms: self._rooms,
            Users: self._users, SetState: self._set_state, CloseRoom: self._close,
            Kick: self._kick, Announce: self._announce, Log: self._log,
            Reload: self._reload, Cancel: self._cancel,
        }

    # -- the loop's interface --------------------------------------------------------

    def accept(self, now: float) -> None:
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
                    self.loop.selector.unregister(self.sock)
                    self.loop.add_timer(now + ACCEPT_PAUSE, self._resume_accept)
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            if self.accept_failing:
                self.accept_failing = False
                diag("accepting control connections again")
            sock.setblocking(False)
            if len(self.conns) >= MAX_CONNECTIONS:
                with contextlib.suppress(OSError):
                    sock.send(encode_reply(Failure(
                        None, Code.BUSY, f"lanchatd already serves {MAX_CONNECTIONS} "
                        "control connections; try again when some have closed.")))
                sock.close()
                continue
            conn = ControlConnection(self, sock, now)
            self.conns.add(conn)
            self.loop.selector.register(sock, READ, conn)
            self.loop.add_timer(now + HELLO_TIMEOUT, conn.check_idle)

    def _resume_accept(self, _now: float) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.loop.selector.register(self.sock, READ, self._listener)

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
            self.loop.selector.unregister(self.sock)
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
        self.followers.pop(conn, None)
        conn.stream_id = None

    def record(self, now: float, event: str, conn: ControlConnection, **fields: Any) -> None:
        self.loop.activity.record(now, event, actor=conn.actor, **fields)

    def stop_stream(self, conn: ControlConnection) -> None:
        self.followers.pop(conn, None)
        conn.stream_id = None

    def _on_entry(self, entry: dict[str, Any]) -> None:
        """Activity-log subscriber: one JSON encoding, copied to every follower."""
        if not self.followers:
            return
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
        request = incoming.request
        try:
            result = self._handlers[type(request)](conn, request, now)
        except AdminError as exc:
            code = ADMIN_CODES.get(exc.code, Code.BAD_VALUE)
            conn.queue(encode_reply(Failure(incoming.id, code, exc.message)))
            return
        except Refused as exc:
            conn.queue(encode_reply(Failure(incoming.id, exc.code, exc.message)))
            return
        except Exception as exc:  # a bug: this request fails, the daemon goes on
            detail = f"{type(exc).__name__}: {exc}"
            diag(f"internal error serving control request {request.CMD}: {detail}")
            self.record(now, "internal_error", conn, cmd=request.CMD, detail=detail[:300])
            conn.queue(encode_reply(Failure(
                incoming.id, Code.INTERNAL_ERROR, f"lanchatd failed while doing "
                f"{request.CMD} ({detail[:200]}); it may be partly done, check status.")))
            return
        if result is not None:
            conn.queue(encode_reply(Ok(incoming.id, result)))
        if isinstance(request, Log) and request.follow:
            conn.stream_id = incoming.id
            self.followers[conn] = incoming.id

    # -- the commands ----------------------------------------------------------------

    def _hello(self, conn: ControlConnection, request: Hello, now: float) -> dict[str, Any]:
        conn.hello_done = True
        core = self.loop.core
        return {"version": conn.codec.version, "server": f"lanchatd/{__version__}",
                "server_id": core.server_id, "name": core.server_name, "pid": os.getpid(),
                "actor": conn.actor}

    def _status(self, conn: ControlConnection, request: Status, now: float) -> dict[str, Any]:
        loop = self.loop
        result = loop.core.snapshot(now)
        result["state_description"] = SERVER_STATE_RULES[loop.core.state].description
        result["pid"] = os.getpid()
        addresses = {}
        if loop.tcp is not None:
            addresses["tcp"] = sock_address(loop.tcp)
        if loop.udp is not None:
            addresses["udp"] = sock_address(loop.udp)
        addresses["control"] = self.path
        result["addresses"] = addresses
        result["discovery"] = dict(loop.discovery.counters)
        result["control_connections"] = len(self.conns)
        result["log_file"] = loop.activity.path
        return result

    def _rooms(self, conn: ControlConnection, request: Rooms, now: float) -> dict[str, Any]:
        return {"rooms": self.loop.core.snapshot(now)["rooms"]}

    def _users(self, conn: ControlConnection, request: Users, now: float) -> dict[str, Any]:
        core = self.loop.core
        if request.room is not None:
            infos = [core.room_info(request.room)]
        else:
            infos = core.snapshot(now)["rooms"]
        users = [{"room": info["pin"], **member} for info in infos
                 for member in info["members"]]
        return {"room": request.room, "users": users}

    def _set_state(self, conn: ControlConnection, request: SetState,
                   now: float) -> dict[str, Any]:
        core = self.loop.core
        previous = core.state
        self.loop.admin(core.set_state, request.state, conn.actor, now)
        return {"state": core.state, "previous": previous,
                "changed": core.state != previous,
                "description": SERVER_STATE_RULES[core.state].description}

    def _close(self, conn: ControlConnection, request: CloseRoom,
               now: float) -> dict[str, Any]:
        core = self.loop.core
        members = [m["name"] for m in core.room_info(request.room)["members"]]
        self.loop.admin(core.close_room, request.room, request.reason, conn.actor, now)
        return {"room": request.room, "members": members, "reason": request.reason}

    def _kick(self, conn: ControlConnection, request: Kick, now: float) -> dict[str, Any]:
        core = self.loop.core
        key = rules.name_key(request.name)
        found = [m for m in core.room_info(request.room)["members"]
                 if rules.name_key(m["name"]) == key]
        self.loop.admin(core.kick, request.room, request.name, request.reason, conn.actor,
                        now)
        member = found[0] if found else {"name": request.name, "addr": ""}
        return {"room": request.room, "name": member["name"], "addr": member["addr"],
                "reason": request.reason}

    def _announce(self, conn: ControlConnection, request: Announce,
                  now: float) -> dict[str, Any]:
        core = self.loop.core
        rooms = [request.room] if request.room is not None else [
            info["pin"] for info in core.snapshot(now)["rooms"]]
        self.loop.admin(core.announce, request.text, request.room, conn.actor, now)
        return {"rooms": rooms, "text": request.text}

    def _log(self, conn: ControlConnection, request: Log, now: float) -> dict[str, Any]:
        if request.follow and conn.stream_id is not None:
            raise Refused(Code.BAD_VALUE, f"This connection already follows the log "
                          f"(request {conn.stream_id}); cancel that first.")
        activity = self.loop.activity
        return {"entries": activity.tail(request.n), "last_seq": activity.last_seq,
                "following": request.follow}

    def _reload(self, conn: ControlConnection, request: Reload,
                now: float) -> dict[str, Any]:
        ok, message, changed = self.loop.reload(conn.actor, now)
        if not ok:
            raise Refused(Code.RELOAD_FAILED, message)
        return {"message": message, "changed": changed}

    def _cancel(self, conn: ControlConnection, request: Cancel,
                now: float) -> dict[str, Any]:
        stream_id = conn.stream_id
        if stream_id is not None:
            self.stop_stream(conn)
            conn.queue(encode_reply(StreamEnd(stream_id, "cancelled",
                                              "Stopped following the log.")))
        return {"cancelled": stream_id}


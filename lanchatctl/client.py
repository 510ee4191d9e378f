"""A small blocking client of the control socket, and the errors lanchatctl explains.

Every failure becomes a ``CtlError``: one sentence for a person (what went wrong, the
path involved, what to do next), a short ``name`` for scripts, and the exit status
lanchatctl returns (the table is in ``lanchatctl --help``).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import time
from collections.abc import Iterator, Mapping
from typing import Any

from lanchat import __version__, i18n
from lanchat.i18n import N_, _
from lanchat.paths import SocketChoice
from lanchat.protocol.control import (
    SUPPORTED_VERSIONS,
    ClientConnection,
    Code,
    ConnectionClosed,
    ControlError,
    Failure,
    Hello,
    Log,
    Ok,
    Reply,
    Request,
    StreamEnd,
    StreamItem,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_PERMISSION = 4
EXIT_PROTOCOL = 5
EXIT_NOT_FOUND = 6
EXIT_INTERRUPTED = 130
CONNECT_RETRY = 0.01  # seconds between tries while the daemon's accept queue is full

#: (status, meaning) in the order ``lanchatctl --help`` lists them.
EXIT_STATUSES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, N_("done")),
    (EXIT_REFUSED, N_("lanchatd refused or failed the request (bad value, reload failed)")),
    (EXIT_USAGE, N_("the command line is wrong")),
    (EXIT_UNREACHABLE, N_("lanchatd is not running, its socket is missing, or it did not "
                          "answer")),
    (EXIT_PERMISSION, N_("permission denied on the control socket (see which group "
                         "grants access), or a watcher asked to act")),
    (EXIT_PROTOCOL, N_("version mismatch, or the socket does not speak the lanchat control "
                       "protocol")),
    (EXIT_NOT_FOUND, N_("unknown room or user")),
    (EXIT_INTERRUPTED, N_("interrupted (Ctrl-C) before the command finished")),
)

EXIT_FOR_CODE: Mapping[Code, int] = {
    Code.BAD_REQUEST: EXIT_PROTOCOL,
    Code.REQUEST_TOO_LARGE: EXIT_PROTOCOL,
    Code.UNKNOWN_COMMAND: EXIT_PROTOCOL,
    Code.HELLO_REQUIRED: EXIT_PROTOCOL,
    Code.UNSUPPORTED_VERSION: EXIT_PROTOCOL,
    Code.TOO_MANY_ERRORS: EXIT_PROTOCOL,
    Code.IDLE_TIMEOUT: EXIT_UNREACHABLE,
    Code.UNKNOWN_ROOM: EXIT_NOT_FOUND,
    Code.UNKNOWN_USER: EXIT_NOT_FOUND,
    Code.BAD_VALUE: EXIT_REFUSED,
    Code.RELOAD_FAILED: EXIT_REFUSED,
    Code.WATCH_ONLY: EXIT_PERMISSION,
    Code.BUSY: EXIT_UNREACHABLE,
    Code.SHUTTING_DOWN: EXIT_UNREACHABLE,
    Code.INTERNAL_ERROR: EXIT_REFUSED,
}

# What to do next, after the daemon's own sentence.
_HINTS: Mapping[Code, str] = {
    Code.UNKNOWN_ROOM: N_("`lanchatctl rooms` lists the open rooms."),
    Code.UNKNOWN_USER: N_("`lanchatctl users PIN` lists who is in a room."),
    Code.UNKNOWN_COMMAND: N_("The running lanchatd is older than this lanchatctl; use the "
                             "lanchatctl installed with it."),
    Code.INTERNAL_ERROR: N_("This is a bug in lanchatd; its stderr (journalctl -u lanchatd) "
                            "has the details."),
}


class CtlError(Exception):
    """A failure explained in one sentence, with lanchatctl's exit status for it."""

    def __init__(self, message: str, status: int, name: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.name = name
        self.code = code

    def as_json(self) -> dict[str, Any]:
        return {"error": {"name": self.name, "code": None if self.code is None
                          else int(self.code), "message": self.message},
                "exit_status": self.status}


def failure_error(failure: Failure, request: Request | None = None) -> CtlError:
    """The daemon's error reply, as lanchatctl reports it, in the person's language.

    The daemon's sentence is English; an unknown room or user is said again here from
    the request (its values are ours), any other sentence is looked up as it is.
    """
    room, name = getattr(request, "room", None), getattr(request, "name", None)
    if failure.code == Code.UNKNOWN_ROOM and room:
        message = _("There is no room with PIN {pin}.").format(pin=room)
    elif failure.code == Code.UNKNOWN_USER and room and name:
        message = _("Nobody called {name!r} is in room {pin}.").format(name=name, pin=room)
    else:
        message = i18n.translated(failure.message)
    hint = _HINTS.get(failure.code)
    if hint:
        message = f"{message} {i18n.translated(hint)}"
    return CtlError(message, EXIT_FOR_CODE.get(failure.code, EXIT_REFUSED),
                    failure.code.wire_name, failure.code)


def _owner_and_group(path: str) -> tuple[str, str]:
    """Owner and group of ``path`` or of the nearest parent we may look at."""
    current = path
    while True:
        try:
            st = os.stat(current)
            break
        except OSError:
            parent = os.path.dirname(current)
            if not parent or parent == current:
                return "root", "lanchat"
            current = parent
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return owner, group


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return True  # cannot look: say what connect() said


def connect_error(exc: OSError, choice: SocketChoice, timeout: float) -> CtlError:
    """Why connecting to the control socket failed, and what to do about it."""
    path = choice.path
    if isinstance(exc, FileNotFoundError):
        if len(choice.candidates) > 1:
            where = _("no control socket at {paths}").format(
                paths=_(" or ").join(choice.candidates))
        else:
            where = _("no control socket at {path} (from {source})").format(
                path=path, source=choice.source)
        return CtlError(
            _("{where}: lanchatd is not running, or it listens elsewhere. Start it "
              "(systemctl start lanchatd), or name its socket with --socket PATH or "
              "$LANCHAT_CONTROL_SOCKET.").format(where=where),
            EXIT_UNREACHABLE, "socket_missing")
    if isinstance(exc, ConnectionRefusedError) and not _is_socket(path):
        return CtlError(
            _("{path} is not a socket, so it is not lanchatd's control socket. Name the "
              "right one with --socket PATH.").format(path=path),
            EXIT_UNREACHABLE, "not_a_socket")
    if isinstance(exc, ConnectionRefusedError):
        return CtlError(
            _("lanchatd is not running: nothing listens on {path} (the file was left by a "
              "daemon that stopped). Start it (systemctl start lanchatd), or name the "
              "right socket with --socket PATH.").format(path=path),
            EXIT_UNREACHABLE, "not_running")
    if isinstance(exc, PermissionError):
        owner, group = _owner_and_group(path)
        if group in ("root", "0"):
            # Joining group root would grant far more than lanchatctl: never advise it.
            return CtlError(
                _("permission denied on the control socket {path}: only {owner} may use "
                  "it (there is no lanchat group, or the daemon did not give the socket to "
                  "it). Run lanchatctl with sudo, or let others administer the daemon: "
                  "sudo groupadd --system lanchat, restart lanchatd, then sudo usermod -aG "
                  "lanchat $USER and log in again.").format(path=path, owner=owner),
                EXIT_PERMISSION, "permission_denied")
        return CtlError(
            _("permission denied on the control socket {path}: only {owner} and members "
              "of group {group} may use it. Ask to be added to that group (sudo usermod "
              "-aG {group} $USER, then log in again), or run lanchatctl with sudo.").format(
                path=path, owner=owner, group=group),
            EXIT_PERMISSION, "permission_denied")
    if isinstance(exc, socket.timeout):
        return CtlError(
            _("lanchatd did not accept the connection on {path} within {seconds} s: it "
              "may be overloaded or stuck. Check it with: systemctl status lanchatd").format(
                path=path, seconds=f"{timeout:g}"),
            EXIT_UNREACHABLE, "timeout")
    if exc.errno in (errno.ENOTSOCK, errno.ECONNREFUSED, errno.EPROTOTYPE, errno.ENOTDIR):
        return CtlError(
            _("{path} is not a lanchatd control socket ({error}). Name the right "
              "one with --socket PATH.").format(path=path, error=exc.strerror),
            EXIT_UNREACHABLE, "not_a_socket")
    return CtlError(_("cannot connect to lanchatd at {path}: {error}.").format(
        path=path, error=exc.strerror or exc), EXIT_UNREACHABLE, "connect_failed")


class ControlClient:
    """One connection to lanchatd's control socket.  Use as a context manager."""

    def __init__(self, choice: SocketChoice, timeout: float = 5.0) -> None:
        self.choice = choice
        self.path = choice.path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.codec = ClientConnection()
        self.server: dict[str, Any] = {}

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def connect(self) -> dict[str, Any]:
        """Connect and check the protocol version; returns what the daemon said."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                sock.connect(self.path)
                break
            except BlockingIOError:
                # The daemon's accept queue is full (a burst of clients): it empties
                # within a pass of the daemon's loop, so try again until the timeout.
                if time.monotonic() < deadline:
                    time.sleep(CONNECT_RETRY)
                    continue
                sock.close()
                raise connect_error(socket.timeout(), self.choice, self.timeout) from None
            except OSError as exc:
                sock.close()
                raise connect_error(exc, self.choice, self.timeout) from None
        self.sock = sock
        try:
            self.server = self._call(Hello(SUPPORTED_VERSIONS, f"lanchatctl/{__version__}"))
        except CtlError as exc:
            self.close()
            if exc.code == Code.UNSUPPORTED_VERSION:
                raise self._mismatch(exc.message) from None
            raise
        if self.server.get("version") not in SUPPORTED_VERSIONS:
            self.close()
            raise self._mismatch(_("it chose version {version!r}.").format(
                version=self.server.get("version")))
        return self.server

    def _mismatch(self, detail: str) -> CtlError:
        ours = ", ".join(map(str, SUPPORTED_VERSIONS))
        return CtlError(
            _("version mismatch: lanchatd at {path} and this lanchatctl {version} "
              "(control protocol {ours}) have no protocol in common: {detail} Use the "
              "lanchatctl installed with the running lanchatd, or upgrade both.").format(
                path=self.path, version=__version__, ours=ours, detail=detail),
            EXIT_PROTOCOL, "version_mismatch", Code.UNSUPPORTED_VERSION)

    def call(self, request: Request) -> dict[str, Any]:
        """Send one request and return its result; raise CtlError for a failure."""
        if self.sock is None:
            self.connect()
        return self._call(request)

    def _call(self, request: Request) -> dict[str, Any]:
        request_id, data = self.codec.send(request)
        self._send(data)
        deadline = time.monotonic() + self.timeout
        while True:
            event = self._next(deadline)
            if isinstance(event, Ok) and event.id == request_id:
                return dict(event.result)
            if isinstance(event, Failure) and event.id in (request_id, None):
                raise failure_error(event, request)
            # Anything else (an entry of a stream this connection runs) is not ours.

    def follow(self, n: int | None) -> Iterator[dict[str, Any]]:
        """The last ``n`` log entries, then every new one until the daemon ends it."""
        yield from self.start_following(n)
        yield from self.stream()

    def start_following(self, n: int | None) -> list[dict[str, Any]]:
        """Ask for the last ``n`` entries and the ones to come; return the former.
        ``stream()`` then yields the new ones, none missed in between."""
        return list(self.call(Log(n=n, follow=True)).get("entries", []))

    def stream(self) -> Iterator[dict[str, Any]]:
        """The new log entries after ``start_following``, until the daemon ends them."""
        while True:
            try:
                event = self._next(None)
            except CtlError as exc:
                if exc.name != "connection_closed":
                    raise
                raise CtlError(
                    _("lanchatd closed the log stream on {path}: it stopped, or this "
                      "reader fell too far behind. Follow again to carry on.").format(
                        path=self.path), EXIT_UNREACHABLE, "stream_closed") from None
            if isinstance(event, StreamItem):
                yield dict(event.entry)
            elif isinstance(event, StreamEnd):
                if event.reason == "cancelled":
                    return
                raise CtlError(_("lanchatd ended the log stream: {why}").format(
                    why=i18n.translated(event.message) if event.message else event.reason),
                    EXIT_UNREACHABLE, "stream_ended")
            elif isinstance(event, Failure) and event.id is None:
                raise failure_error(event)

    # -- the socket --------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise self._no_answer() from None
        except (BrokenPipeError, ConnectionResetError):
            pass  # the peer closed: what it said before that is read next, then EOF
        except OSError as exc:
            raise CtlError(_("lost the connection to lanchatd at {path} ({error}); it may "
                             "have stopped.").format(path=self.path, error=exc.strerror or exc),
                           EXIT_UNREACHABLE, "connection_lost") from None

    def _no_answer(self) -> CtlError:
        return CtlError(
            _("lanchatd did not answer within {seconds} s on {path}: it may be "
              "overloaded or stuck. Check it with: systemctl status lanchatd (or try again "
              "with a longer --timeout).").format(seconds=f"{self.timeout:g}", path=self.path),
            EXIT_UNREACHABLE, "timeout")

    def _next(self, deadline: float | None) -> Reply:
        """The next reply or stream line; raise CtlError on EOF, timeout or garbage."""
        assert self.sock is not None
        while True:
            try:
                event = self.codec.next_event()
            except ControlError as exc:
                raise CtlError(
                    _("{path} answered something that is not the lanchat control "
                      "protocol ({error}); is it a lanchatd control socket?").format(
                        path=self.path, error=exc.message),
                    EXIT_PROTOCOL, "protocol_error") from None
            if isinstance(event, ConnectionClosed):
                raise CtlError(
                    _("lanchatd closed the connection on {path} without answering; it "
                      "may be stopping. Try again, or check: systemctl status lanchatd")
                    .format(path=self.path), EXIT_UNREACHABLE, "connection_closed")
            if event is not None:
                return event
            if deadline is None:
                self.sock.settimeout(None)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._no_answer()
                self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise self._no_answer() from None
            except ConnectionResetError:
                data = b""
            except OSError as exc:
                raise CtlError(_("lost the connection to lanchatd at {path} ({error}).").format(
                    path=self.path, error=exc.strerror or exc), EXIT_UNREACHABLE,
                    "connection_lost") from None
            self.codec.receive_data(data)

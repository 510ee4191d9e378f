"""The two halves of the systemd service protocol the daemon speaks, with no dependency.

Theory of operation
-------------------
*Readiness and watchdog* (``sd_notify``): systemd starts a ``Type=notify`` service with
``NOTIFY_SOCKET`` set to an AF_UNIX datagram socket (a path, or ``@name`` for the abstract
namespace).  The service sends newline-separated ``KEY=VALUE`` assignments to it:
``READY=1`` once it serves, ``STATUS=...`` whenever there is something worth showing in
``systemctl status``, ``RELOADING=1`` then ``READY=1`` around a reload, ``STOPPING=1`` on
the way out, and ``WATCHDOG=1`` at least once per ``WATCHDOG_USEC`` while the event loop is
healthy.  The loop must never block on any of this, so the socket is non-blocking and a
datagram systemd cannot take right now is dropped (``notify`` returns False): systemd
only ever wants the latest state, and a missed watchdog ping is followed by the next.

*Socket activation* (``sd_listen_fds``): when a ``.socket`` unit starts the service, the
listening sockets arrive already open as file descriptors 3, 4, ... with ``LISTEN_FDS``
(how many), ``LISTEN_PID`` (the process they are meant for, so a child that inherited the
environment does not take them too) and ``LISTEN_FDNAMES`` (the socket unit's
``FileDescriptorName=`` values, colon-separated).  ``listen_fds`` turns them into socket
objects named by those names, so the daemon can pick "chat", "tls", "discovery", "http"
(the browser client's web port) and "control".

Both follow the reference implementation in systemd's ``sd-daemon.c``.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Mapping

SD_LISTEN_FDS_START = 3
"""The first file descriptor systemd passes to a socket-activated service."""

_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def _notify_address(value: str) -> str | bytes | None:
    """The sendto() address for a NOTIFY_SOCKET value, or None if it is not AF_UNIX."""
    if value.startswith("@") and len(value) > 1:
        # Abstract namespace: the kernel name starts with a NUL byte instead of "@".
        return b"\0" + value[1:].encode("utf-8", "surrogateescape")
    if value.startswith("/"):
        return value
    # Empty, or a kind of address this daemon does not speak (newer systemd also
    # accepts vsock:...); behave as if not under a service manager.
    return None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between pings (half the timeout, as sd_watchdog_enabled advises), or None."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid_text = environ.get("WATCHDOG_PID")
    if pid_text is not None:
        # The watchdog is meant for one process only; a child that inherited the
        # environment must not believe it is watched.
        try:
            pid = int(pid_text)
        except ValueError:
            return None
        if pid != os.getpid():
            return None
    return usec / 2 / 1_000_000


class Notifier:
    """Sends state changes to the service manager; does nothing when there is none.

    Every method is safe to call from the event loop: nothing blocks and nothing raises.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._address = _notify_address(environ.get("NOTIFY_SOCKET", ""))
        self._socket: socket.socket | None = None
        self.enabled: bool = self._address is not None
        self.watchdog_interval: float | None = _watchdog_interval(environ) if self.enabled else None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram; True if it was handed over.

        False when there is no service manager, when the manager's queue is full right
        now, or when an assignment is malformed (no ``=``, or a newline inside it, which
        would be read as a second assignment).
        """
        if self._address is None or not assignments:
            return False
        for assignment in assignments:
            if "=" not in assignment or "\n" in assignment:
                return False
        message = "\n".join(assignments).encode("utf-8", "surrogateescape")
        try:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                self._socket = sock
            self._socket.sendto(message, self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        """Every socket is bound and the loop serves (also sent again after a reload)."""
        self.notify("READY=1", "STATUS=" + _one_line(status))

    def status(self, text: str) -> None:
        """Free-form text shown by ``systemctl status``; newlines become spaces."""
        self.notify("STATUS=" + _one_line(text))

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.notify("STOPPING=1")

    def reloading(self, now_monotonic_usec: int) -> None:
        """A reload has begun; follow with ``ready()`` once it is done.

        ``MONOTONIC_USEC`` (CLOCK_MONOTONIC, microseconds) lets ``Type=notify-reload``
        managers match the reload to the request; older ones ignore it.
        """
        self.notify("RELOADING=1", f"MONOTONIC_USEC={now_monotonic_usec}")

    def watchdog(self) -> None:
        """The loop is alive; call every ``watchdog_interval`` seconds."""
        self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Release the sending socket (a later notify opens a new one)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def listen_fds(
    environ: Mapping[str, str] = os.environ, *, unset: bool = True
) -> list[tuple[str, socket.socket]]:
    """The sockets passed by socket activation, as ``(name, socket)`` in fd order.

    Empty when the environment holds none for this process (no ``LISTEN_PID``, or one
    naming another process).  A socket without a name (no or too few
    ``LISTEN_FDNAMES``) is named ``"unknown"``, as systemd does.  Every returned socket
    has FD_CLOEXEC set.  With ``unset`` the three variables are removed from
    ``os.environ`` so that nothing started later believes the sockets are its own.

    Raises ValueError, naming the variable or file descriptor, when the environment
    claims sockets that are not there: a malformed number, or a descriptor that is
    closed or not a socket.
    """
    try:
        return _listen_fds(environ)
    finally:
        if unset:
            for name in _LISTEN_VARIABLES:
                os.environ.pop(name, None)


def _listen_fds(environ: Mapping[str, str]) -> list[tuple[str, socket.socket]]:
    pid_text = environ.get("LISTEN_PID")
    if pid_text is None:
        return []
    try:
        pid = int(pid_text)
    except ValueError:
        raise ValueError(f"LISTEN_PID is not a process id: {pid_text!r}") from None
    if pid != os.getpid():
        return []
    count_text = environ.get("LISTEN_FDS", "")
    try:
        count = int(count_text)
    except ValueError:
        raise ValueError(f"LISTEN_FDS is not a number: {count_text!r}") from None
    if count < 0:
        raise ValueError(f"LISTEN_FDS is negative: {count}")
    names_text = environ.get("LISTEN_FDNAMES")
    names = names_text.split(":") if names_text else []
    if len(names) != count:
        # sd_listen_fds_with_names gives up on names that do not match the count.
        names = ["unknown"] * count

    # Check every descriptor before wrapping any, so an error leaves nothing half-owned.
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
    for fd, name in zip(fds, names):
        try:
            is_socket = _is_socket(fd)
        except OSError as e:
            raise ValueError(
                f"LISTEN_FDS: file descriptor {fd} ({name}) is not open: {e.strerror}"
            ) from None
        if not is_socket:
            raise ValueError(f"LISTEN_FDS: file descriptor {fd} ({name}) is not a socket")
    result: list[tuple[str, socket.socket]] = []
    for fd, name in zip(fds, names):
        os.set_inheritable(fd, False)
        # With fileno given, Python asks the kernel for family, type and protocol.
        result.append((name, socket.socket(fileno=fd)))
    return result


def _is_socket(fd: int) -> bool:
    return stat.S_ISSOCK(os.fstat(fd).st_mode)

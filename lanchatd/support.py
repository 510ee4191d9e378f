"""Small things the loop and the control server share, so neither imports the other."""

from __future__ import annotations

import contextlib
import socket
import sys

from lanchatd.core import format_address


def diag(message: str) -> None:
    """A diagnostic line on stderr (the journal under systemd)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"lanchatd: {message}", file=sys.stderr, flush=True)


class BindError(OSError):
    """A listening socket could not be opened; ``strerror`` is the whole sentence."""


def sock_address(sock: socket.socket) -> str:
    """The address a socket is bound to, as people write it (``[::1]:5000``)."""
    addr = sock.getsockname()
    if isinstance(addr, tuple):
        return format_address(addr)
    return str(addr)

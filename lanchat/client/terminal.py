"""What the client needs from the system it runs on: a selector that can watch the
terminal, a way to read stdin inside that loop, and whether curses can draw here.

Theory of operation
-------------------
Both interfaces run one ``selectors`` loop over the chat socket, a wake-up socket
for signals and stdin.  Whether stdin can be in that loop depends on the system:

- **Linux**: epoll watches a terminal or a pipe (``DefaultSelector``).
- **macOS and the BSDs**: kqueue, the default there, cannot watch a terminal on older
  macOS; ``select()`` can, so ``SelectSelector`` is chosen on purpose.
- **Windows**: ``select()`` takes only sockets.  A reader thread reads stdin and
  writes what it read into one end of a socket pair; the loop watches the other end
  as if it were stdin (``StdinThread``).  The full-screen interface cannot hand the
  console to a thread (curses reads it), so there it asks curses for keys on every
  turn of the loop, at most ``KEY_POLL`` seconds apart.

``LANCHAT_SELECTOR`` (``default``, ``select``, ``poll``) and ``LANCHAT_STDIN``
(``select``, ``thread``) override the choice: the tests use them to run the macOS and
Windows paths on Linux, and they are a way out on a system that misbehaves.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
import threading
from collections.abc import Mapping

from lanchat.client.i18n import _

KEY_POLL = 0.05  # seconds between key polls where stdin cannot be watched
READ_SIZE = 65536

SELECTORS = ("default", "select", "poll")
STDIN_MODES = ("select", "thread")


def selector_kind(platform: str = sys.platform,
                  environ: Mapping[str, str] = os.environ) -> str:
    """Which selector to use: ``default``, ``select`` or ``poll``."""
    wanted = environ.get("LANCHAT_SELECTOR", "")
    if wanted in SELECTORS:
        return wanted
    if platform == "darwin" or platform.startswith(("freebsd", "openbsd", "netbsd")):
        return "select"  # kqueue cannot watch a terminal (on older macOS)
    if platform == "win32":
        return "select"  # the only one; stdin comes through StdinThread
    return "default"


def make_selector(kind: str | None = None) -> selectors.BaseSelector:
    kind = kind or selector_kind()
    if kind == "select":
        return selectors.SelectSelector()
    if kind == "poll" and hasattr(selectors, "PollSelector"):
        return selectors.PollSelector()
    return selectors.DefaultSelector()


def stdin_mode(platform: str = sys.platform, environ: Mapping[str, str] = os.environ) -> str:
    """``select`` (stdin is watched by the selector) or ``thread`` (a reader thread)."""
    wanted = environ.get("LANCHAT_STDIN", "")
    if wanted in STDIN_MODES:
        return wanted
    return "thread" if platform == "win32" else "select"


class StdinThread:
    """Reads a file descriptor in a thread and passes the bytes on through a socket pair.

    ``sock`` is the end to watch and read; an empty read from it is the end of input.
    The thread only reads and writes bytes; everything else stays in the loop's thread.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sock, self._writer = socket.socketpair()
        self.sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="lanchat-stdin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self.fd, READ_SIZE)
                except OSError:
                    data = b""
                if not data:
                    break
                self._writer.sendall(data)
        except OSError:
            pass  # the loop closed its end: nobody is reading any more
        finally:
            self._writer.close()  # the end of input, seen by the loop as b""

    def read(self) -> bytes | None:
        """What arrived (b"" at the end of input; None if nothing is there yet)."""
        try:
            return self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return None

    def close(self) -> None:
        self.sock.close()


def full_screen_problem(environ: Mapping[str, str] = os.environ, fd: int = 1,
                        platform: str = sys.platform) -> str | None:
    """Why the full-screen interface cannot run in this terminal (None: it can).

    Checked before joining, so an unknown terminal means line mode, not a traceback
    after the room has seen us join.
    """
    term = environ.get("TERM", "")
    if platform != "win32":
        if not term:
            return _("TERM is not set")
        if term == "dumb":
            return _("TERM=dumb cannot show it")
    try:
        import curses
    except ImportError:
        return _("no curses module (on Windows: pip install windows-curses)")
    if platform != "win32":
        try:
            curses.setupterm(term, fd)
        except curses.error:
            return _("the terminal type {term!r} is unknown here").format(term=term)
    return None

"""``lanchatctl top``: the dashboard, redrawn in place with curses until q or Ctrl-C.

Ctrl-L repaints the whole screen (after something else wrote on the terminal).

One connection asks for ``status`` and the recent log every interval.  If the daemon
goes away the screen says why and the next refresh tries again, so top survives a
restart of the daemon.
"""

from __future__ import annotations

import curses
import sys
import textwrap
import time
from typing import Any

from lanchat.i18n import _
from lanchat.paths import find_control_socket
from lanchat.protocol.control import Log, Status
from lanchatctl import render
from lanchatctl.client import EXIT_OK, EXIT_USAGE, ControlClient, CtlError
from lanchatctl.options import Options

LOG_LINES = 50
QUIT_KEYS = (ord("q"), ord("Q"))
REDRAW_KEY = 12  # Ctrl-L


class Dashboard:
    def __init__(self, options: Options, interval: float) -> None:
        self.options = options
        self.interval = interval
        self.client: ControlClient | None = None
        self.path = ""

    def fetch(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str]:
        """(status, recent log entries, error sentence or "")."""
        try:
            if self.client is None:
                choice = find_control_socket(self.options.socket)
                self.path = choice.path
                self.client = ControlClient(choice, self.options.timeout)
                self.client.connect()
            status = self.client.call(Status())
            entries = list(self.client.call(Log(n=LOG_LINES)).get("entries", []))
            return status, entries, ""
        except CtlError as exc:
            if self.client is not None:
                self.client.close()
                self.client = None
            return None, [], exc.message

    def lines(self, status: dict[str, Any] | None, entries: list[dict[str, Any]], error: str,
              height: int, width: int) -> list[str]:
        header = (f"lanchatctl top  {self.path}  {render.clock(time.time(), date=False)}  "
                  + _("every {seconds} s  q quits, Ctrl-L redraws").format(
                      seconds=f"{self.interval:g}"))
        lines = [header, ""]
        if status is None:
            lines += textwrap.wrap(error, max(20, width - 1))
            lines += ["", _("Trying again at the next refresh.")]
            return lines
        lines += render.status_lines(status, width=max(40, width - 1))
        room = height - len(lines) - 2
        if room > 0 and entries:
            lines += ["", _("Recent activity:")]
            lines += [render.log_line(entry) for entry in entries[-room:]]
        return lines

    def draw(self, screen: Any, lines: list[str], *, repaint: bool = False) -> None:
        if repaint:
            screen.clear()  # Ctrl-L: the whole screen is sent again, not only changes
        else:
            screen.erase()
        height, width = screen.getmaxyx()
        for y, line in enumerate(lines[:height]):
            attributes = curses.A_BOLD if y == 0 else curses.A_NORMAL
            try:
                try:
                    screen.addnstr(y, 0, line, max(0, width - 1), attributes)
                except UnicodeEncodeError:  # a terminal whose locale cannot show a name
                    plain = line.encode("ascii", "backslashreplace").decode("ascii")
                    screen.addnstr(y, 0, plain, max(0, width - 1), attributes)
            except curses.error:
                pass  # the last cell of the screen, or a terminal resized under us
        screen.refresh()

    def run(self, screen: Any) -> int:
        try:
            curses.curs_set(0)
        except curses.error:
            pass  # a terminal that cannot hide the cursor
        repaint = False
        try:
            while True:
                status, entries, error = self.fetch()
                deadline = time.monotonic() + self.interval
                while True:
                    height, width = screen.getmaxyx()
                    self.draw(screen, self.lines(status, entries, error, height, width),
                              repaint=repaint)
                    repaint = False
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    screen.timeout(max(1, int(left * 1000)))
                    key = screen.getch()
                    if key in QUIT_KEYS:
                        return EXIT_OK
                    if key == -1:
                        break
                    if key == REDRAW_KEY:
                        repaint = True
                        break  # fresh data, drawn in full
                    # KEY_RESIZE or another key: redraw and keep waiting.
        finally:
            if self.client is not None:
                self.client.close()


def run(options: Options, interval: float) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CtlError(_("top needs a terminal; for scripts use: lanchatctl status --json"),
                       EXIT_USAGE, "not_a_terminal")
    dashboard = Dashboard(options, interval)
    try:
        status: int = curses.wrapper(dashboard.run)
    except curses.error as exc:
        raise CtlError(_("cannot draw on this terminal ({error}); check $TERM, or use "
                         "lanchatctl status").format(error=exc), EXIT_USAGE,
                       "terminal") from None
    return status

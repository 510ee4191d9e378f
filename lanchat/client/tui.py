"""The full-screen interface (standard ``curses``).

Theory of operation
-------------------
The screen has three parts: the message pane (all rows but the last two), a status
line (server, room, number of people, connection state) and the input line.  The
whole screen is redrawn from the model after anything changes: ``view.Transcript``
holds the pane, ``lineedit.LineEditor`` the input line, the session the rest.
curses compares the new screen with the old one and sends only the difference, so
redrawing everything costs nothing visible, and an incoming message can never break
the line being typed: that line is simply drawn again, with the cursor where it was.

One thread and one selector watch the terminal (stdin), the chat socket and a
socket pair that signal handlers write to: SIGWINCH (the terminal was resized),
SIGINT (Ctrl-C) and SIGTERM/SIGHUP only record what happened and wake the selector;
the loop acts on it.  Keys are read with ``get_wch`` until none is left, so pasting
a paragraph costs one pass.

While the connection is down, typing goes on: the half-typed line stays, lines sent
in the meantime are shown below the messages as waiting, and they go out after the
reconnect (or are listed as not sent when the person leaves).
"""

from __future__ import annotations

import curses
import locale
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable

from lanchat.client import messages, view
from lanchat.client import session as s
from lanchat.client.connection import ChatClient
from lanchat.client.i18n import _, ngettext
from lanchat.client.lineedit import LineEditor, char_width, text_width
from lanchat.client.options import Options
from lanchat.protocol import chat, text
from lanchat.protocol.errors import LocalProtocolError

LEAVE_GRACE = 5.0  # how long leaving waits for queued messages to be delivered
PROMPT = "> "
KEYS_PER_PASS = 4096

COLOUR_NUMBERS = {
    "black": curses.COLOR_BLACK, "red": curses.COLOR_RED, "green": curses.COLOR_GREEN,
    "yellow": curses.COLOR_YELLOW, "blue": curses.COLOR_BLUE,
    "magenta": curses.COLOR_MAGENTA, "cyan": curses.COLOR_CYAN, "white": curses.COLOR_WHITE,
}


def help_lines() -> list[str]:
    return [
        _("Commands:"),
        "  /who              " + _("who is in the room"),
        "  /msg NAME TEXT    " + _("a private message to NAME"),
        "  /me TEXT          " + _("an action (\"* you TEXT\")"),
        "  /clear            " + _("empty the message pane"),
        "  /help             " + _("this help"),
        "  /quit             " + _("leave (also Ctrl-C, or Ctrl-D on an empty line)"),
        _("Keys: PageUp/PageDown scroll, Up/Down recall earlier lines, Tab completes a name."),
        _("Start a line with // to send a literal /."),
    ]


def fit(text_: str, width: int) -> str:
    """``text_`` cut to ``width`` terminal cells."""
    out = ""
    used = 0
    for ch in text_:
        w = char_width(ch)
        if used + w > width:
            break
        out += ch
        used += w
    return out


class Styles:
    """Maps the view's segment styles to curses attributes."""

    def __init__(self, colours: bool, palette: tuple[str, ...]) -> None:
        self.palette_size = max(1, len(palette))
        self.colours = False
        self._attrs: dict[str, int] = {
            view.TIME: curses.A_DIM, view.TEXT: curses.A_NORMAL, view.SYSTEM: curses.A_BOLD,
            view.ERROR: curses.A_BOLD, view.PRIVATE: curses.A_BOLD,
            view.HISTORY: curses.A_DIM, view.PENDING: curses.A_DIM,
            view.MENTION: curses.A_REVERSE | curses.A_BOLD,
        }
        self._senders = [curses.A_BOLD] * self.palette_size
        if not colours or not curses.has_colors():
            return
        try:
            curses.start_color()
            try:
                curses.use_default_colors()
                background = -1
            except curses.error:
                background = curses.COLOR_BLACK
            pair = 1
            for i, name in enumerate(palette):
                curses.init_pair(pair, COLOUR_NUMBERS[name], background)
                self._senders[i] = curses.color_pair(pair) | curses.A_BOLD
                pair += 1
            # Notes from the client stay uncoloured (bold), so no name's colour is reused.
            for style, colour in ((view.ERROR, curses.COLOR_RED),
                                  (view.PRIVATE, curses.COLOR_MAGENTA)):
                curses.init_pair(pair, colour, background)
                self._attrs[style] = curses.color_pair(pair) | \
                    (curses.A_BOLD if style == view.ERROR else 0)
                pair += 1
            self.colours = True
        except curses.error:
            pass

    def attr(self, style: str) -> int:
        if style.startswith("sender:"):
            return self._senders[int(style[7:]) % self.palette_size]
        return self._attrs.get(style, curses.A_NORMAL)


class App:
    def __init__(self, screen: curses.window, client: ChatClient, options: Options,
                 server_label: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.screen = screen
        self.client = client
        self.session = client.session
        self.options = options
        self.settings = options.settings
        self.server_label = server_label
        self.clock = clock
        self.selector = client.selector
        self.editor = LineEditor()
        self.transcript = view.Transcript()
        self.styles = Styles(self.settings.colours, self.settings.palette)
        self.formatter = view.Formatter(self.settings.timestamp_format,
                                        self.styles.palette_size, self.session.my_name)
        self.finished: s.Finished | None = None
        self.leaving_since: float | None = None
        self.status_note = ""
        self._signals: set[int] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._dirty = True

    # ------------------------------------------------------------------ events

    def add(self, entry: view.Entry) -> None:
        self.transcript.add(entry)
        self._dirty = True

    def note(self, text_: str, style: str = view.SYSTEM) -> None:
        self.add(self.formatter.note(text_, style))

    def on_events(self, events: list[s.UiEvent]) -> None:
        for event in events:
            self._on_event(event)
        self._dirty = True

    def _on_event(self, event: s.UiEvent) -> None:
        f = self.formatter
        if isinstance(event, chat.Message):
            entry = f.message(event)
            self.add(entry)
            if entry.mention:
                self._ring()
        elif isinstance(event, chat.Private):
            entry = f.private(event)
            self.add(entry)
            if entry.mention:
                self._ring()
        elif isinstance(event, chat.Presence):
            if event.event == "join":
                line = _("{name} joined").format(name=event.name)
            elif event.reason:
                line = _("{name} left ({reason})").format(name=event.name, reason=event.reason)
            else:
                line = _("{name} left").format(name=event.name)
            self.add(f.note("* " + line, view.HISTORY, event.ts))
        elif isinstance(event, chat.Members):
            self.note(_("In room {room}: {members}").format(
                room=event.room, members=", ".join(event.members)))
        elif isinstance(event, chat.StateChanged):
            self.note(_("The server is now {state}.").format(
                state=messages.state_text(event.state)), view.ERROR)
        elif isinstance(event, chat.Notice):
            self.add(f.note(_("Announcement: {text}").format(text=event.text), view.ERROR,
                            event.ts))
        elif isinstance(event, s.RoomJoined):
            joined = event.joined
            f.me = joined.name
            if event.rejoin:
                self.note(_("Back in room {room}.").format(room=joined.room))
            else:
                self.note(_("You are in room {room} as {name}. Here: {members}. Type /help "
                            "for commands.").format(room=joined.room, name=joined.name,
                                                    members=", ".join(joined.members)))
        elif isinstance(event, s.Disconnected):
            if not event.reconnect_failed:  # later attempts show in the status line only
                self.note(messages.disconnected(event), view.ERROR)
        elif isinstance(event, s.Retrying):
            self.note(messages.retrying(event), view.ERROR)
        elif isinstance(event, s.Held):
            if event.reason == "stopped":
                self.note(messages.held(event), view.ERROR)
        elif isinstance(event, s.NotDelivered):
            self.note(messages.not_delivered(event), view.ERROR)
        elif isinstance(event, s.ServerError):
            self.note(event.error.message, view.ERROR)
        elif isinstance(event, s.Finished):
            self.finished = event

    def _ring(self) -> None:
        if self.settings.bell:
            try:
                curses.beep()
            except curses.error:
                pass

    # ------------------------------------------------------------------ input

    def on_keys(self, mask: int) -> None:
        for _count in range(KEYS_PER_PASS):  # bounded, so signals and the socket get a turn
            try:
                key = self.screen.get_wch()
            except curses.error:
                break  # nothing more to read
            self.on_key(key)
            if self.finished is not None:
                break
        self._dirty = True

    def on_key(self, key: str | int) -> None:
        e = self.editor
        pane = self.pane_height()
        if key in ("\n", "\r", curses.KEY_ENTER):
            self.submit(e.submit())
        elif key in (curses.KEY_BACKSPACE, "\x7f", "\x08"):
            e.backspace()
        elif key == curses.KEY_DC:
            e.delete()
        elif key in (curses.KEY_LEFT, "\x02"):
            e.left()
        elif key in (curses.KEY_RIGHT, "\x06"):
            e.right()
        elif key in (curses.KEY_HOME, "\x01"):
            e.home()
        elif key in (curses.KEY_END, "\x05"):
            e.end()
        elif key == "\x15":
            e.kill_to_start()
        elif key == "\x0b":
            e.kill_to_end()
        elif key == "\x17":
            e.delete_word()
        elif key in (curses.KEY_UP, "\x10"):
            e.history_prev()
        elif key in (curses.KEY_DOWN, "\x0e"):
            e.history_next()
        elif key == curses.KEY_PPAGE:
            self.transcript.page_up(pane)
        elif key == curses.KEY_NPAGE:
            self.transcript.page_down(pane)
        elif key == "\t":
            e.complete(self.session.members)
        elif key == "\x04":
            if e.text:
                e.delete()
            else:
                self.leave()
        elif key == "\x03":
            self.leave(at_once=self.leaving_since is not None)
        elif key == "\x0c":
            self.screen.clear()
        elif key == curses.KEY_RESIZE:
            # curses has resized already (and queues this key after resizeterm): redraw.
            self.screen.clear()
        elif isinstance(key, str) and (key.isprintable() or key == " "):
            e.insert(key)

    def submit(self, line: str) -> None:
        if not line.strip():
            return
        now = self.clock()
        word = line.split(" ", 1)[0].lower()
        if word == "/clear":
            self.transcript.clear()
            return
        try:
            command = text.parse_text_command(line)
        except text.UnknownCommand as unknown:
            self.note(_("Unknown command {command}. Type /help for the commands.").format(
                command=unknown.command), view.ERROR)
            return
        except LocalProtocolError as exc:
            if word == "/msg":
                self.note(_("Usage: /msg NAME TEXT"), view.ERROR)
            elif word == "/me":
                self.note(_("Usage: /me TEXT"), view.ERROR)
            else:
                self.note(exc.message, view.ERROR)
            return
        self.transcript.to_bottom()
        if isinstance(command, text.Help):
            for help_line in help_lines():
                self.note(help_line)
        elif isinstance(command, chat.Quit):
            self.leave()
        elif isinstance(command, chat.Who):
            if not self.session.request(command, now):
                self.note(_("Not connected; /who has to wait for the connection."), view.ERROR)
        else:
            self.on_events(self.session.submit(command, now))
        self.client.flush()

    def leave(self, at_once: bool = False) -> None:
        """Leave the room: at once, or once what is queued is delivered (a few seconds)."""
        now = self.clock()
        if at_once or self.session.idle or self.session.phase != s.JOINED:
            self.on_events(self.session.quit(now))
            self.client.flush()
        else:
            self.leaving_since = now
            self.status_note = _("leaving once the queued messages are delivered...")

    # ------------------------------------------------------------------ drawing

    def pane_height(self) -> int:
        height, _width = self.screen.getmaxyx()
        return max(0, height - 2)

    def status_text(self) -> tuple[str, str]:
        session = self.session
        people = len(session.members)
        left = [self.server_label]
        if session.joined is not None:
            left.append(_("room {room}").format(room=session.joined.room))
            left.append(ngettext("{count} person", "{count} people", people).format(
                count=people))
        if session.server_state != "active":
            left.append(messages.state_text(session.server_state))
        phase = session.phase
        if phase == s.JOINED:
            state = _("connected")
        elif phase == s.DISCONNECTED and session.reconnect_at is not None:
            left_s = max(0.0, session.reconnect_at - self.clock())
            state = _("reconnecting in {seconds:.0f} s").format(seconds=left_s)
        elif phase in (s.CONNECTING, s.GREETING, s.HELLO, s.JOINING):
            state = _("connecting...")
        elif phase == s.QUITTING:
            state = _("leaving...")
        else:
            state = _("disconnected")
        right = [state]
        pending = len(session.pending)
        if pending:
            right.insert(0, ngettext("{count} waiting", "{count} waiting", pending).format(
                count=pending))
        if self.transcript.scroll:
            right.insert(0, _("scrolled back: {count} new").format(
                count=self.transcript.unseen) if self.transcript.unseen else _("scrolled back"))
        if self.status_note:
            right.insert(0, self.status_note)
        return " · ".join(left), " · ".join(right)

    def pending_rows(self, width: int) -> list[list[view.Segment]]:
        rows: list[list[view.Segment]] = []
        joined = self.session.phase == s.JOINED
        for item in self.session.pending:
            label = _("sending") if joined else _("waiting for the connection")
            entry = view.Entry([("… " + label + ": ", view.PENDING),
                                (item.text, view.PENDING)])
            rows.extend(entry.rows(width))
        return rows

    def draw(self) -> None:
        scr = self.screen
        height, width = scr.getmaxyx()
        scr.erase()
        if height < 3 or width < 10:
            try:
                scr.addstr(0, 0, fit(_("Window too small"), max(0, width - 1)))
            except curses.error:
                pass
            scr.noutrefresh()
            curses.doupdate()
            return
        pane = height - 2
        rows = self.transcript.visible(width, pane, self.pending_rows(width))
        for y, row in enumerate(rows):
            x = 0
            for segment, style in row:
                segment = fit(segment, width - x)
                if not segment:
                    break
                try:
                    scr.addstr(y, x, segment, self.styles.attr(style))
                except curses.error:
                    pass
                x += text_width(segment)
        left, right = self.status_text()
        right = fit(right, max(0, width - 2))
        left = fit(left, max(0, width - text_width(right) - 3))
        gap = width - text_width(left) - text_width(right) - 2
        status = " " + left + " " * max(1, gap) + right + " "
        try:
            scr.addstr(height - 2, 0, fit(status, width), curses.A_REVERSE)
        except curses.error:
            pass
        shown, cursor = self.editor.view(width - len(PROMPT) - 1)
        try:
            scr.addstr(height - 1, 0, PROMPT, curses.A_BOLD)
            scr.addstr(height - 1, len(PROMPT), shown)
        except curses.error:
            pass
        try:
            scr.move(height - 1, min(width - 1, len(PROMPT) + cursor))
        except curses.error:
            pass
        scr.noutrefresh()
        curses.doupdate()
        self._dirty = False

    def resize(self) -> None:
        """The terminal changed size (SIGWINCH): tell curses the new size, redraw all."""
        try:
            size = os.get_terminal_size(sys.__stdout__.fileno())  # type: ignore[union-attr]
            curses.resizeterm(size.lines, size.columns)
        except (OSError, ValueError, curses.error):
            pass
        self.screen.clear()
        self._dirty = True

    # ------------------------------------------------------------------ the loop

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.add(signum)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _on_wake(self, mask: int) -> None:
        try:
            self._wake_r.recv(256)
        except OSError:
            pass

    def run(self, backlog: list[s.UiEvent]) -> s.Finished | None:
        self.client.emit = self.on_events
        self.on_events(backlog)
        self.screen.nodelay(True)
        self.screen.keypad(True)
        self._wake_r.setblocking(False)
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, self.on_keys)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        handled = (signal.SIGWINCH, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            self._loop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.selector.unregister(sys.stdin.fileno())
            self.selector.unregister(self._wake_r)
            self._wake_r.close()
            self._wake_w.close()
            self.client.close()
        return self.finished

    def _loop(self) -> None:
        while self.finished is None:
            signals, self._signals = self._signals, set()
            if signal.SIGWINCH in signals:
                self.resize()
            if signal.SIGINT in signals:
                self.leave(at_once=self.leaving_since is not None)
            if signals & {signal.SIGTERM, signal.SIGHUP}:
                self.leave(at_once=True)
            if self.leaving_since is not None and self.session.phase not in (
                    s.QUITTING, s.FINISHED):
                if self.session.idle or self.clock() - self.leaving_since >= LEAVE_GRACE:
                    self.leaving_since = None
                    self.leave(at_once=True)
            if self.finished is not None:
                break
            if self._dirty:
                self.draw()
            timeout = self.client.timeout()
            if self.session.phase == s.DISCONNECTED or self.leaving_since is not None:
                timeout = 1.0 if timeout is None else min(timeout, 1.0)  # a live countdown
                self._dirty = True
            for key, mask in self.selector.select(timeout):
                callback: Callable[[int], None] = key.data
                callback(mask)
            self.client.tick()


def _use_locale() -> None:
    """The person's locale, so curses writes their characters; at least UTF-8 text."""
    try:
        locale.setlocale(locale.LC_ALL, "")
        return
    except locale.Error:
        pass  # a locale that is not installed (e.g. LANG=nb_NO.UTF-8 without it)
    for name in ("C.UTF-8", "C.utf8", "en_US.UTF-8"):
        try:
            locale.setlocale(locale.LC_CTYPE, name)
            return
        except locale.Error:
            continue


def run_tui(client: ChatClient, options: Options, backlog: list[s.UiEvent],
            server_label: str) -> int:
    """Run the full-screen chat until the person leaves; returns the exit status."""
    _use_locale()
    os.environ.setdefault("ESCDELAY", "25")
    result: list[s.Finished | None] = [None]
    unsent: list[s.Outgoing] = []

    def main(screen: curses.window) -> None:
        try:
            curses.curs_set(1)
        except curses.error:
            pass
        app = App(screen, client, options, server_label)
        result[0] = app.run(backlog)
        if result[0] is None:
            unsent.extend(client.session.pending)

    curses.wrapper(main)
    finished = result[0]
    pending = finished.unsent if finished is not None else tuple(unsent)
    if finished is not None:
        message = messages.finished(finished)
        if message:
            print(message, file=sys.stderr)
    for line in messages.unsent(pending):
        print(line, file=sys.stderr)
    if pending or (finished is not None and not finished.ok):
        return 1
    return 0

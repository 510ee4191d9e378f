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
a paragraph costs one pass.  Where the selector cannot watch the terminal (Windows,
see ``terminal.py``), keys are polled on every turn of the loop instead.

Being removed from the room does not end the program: the window stays, says why,
and ``/join`` starts a new session on the same ``ChatClient`` (so do ``/join PIN``
and ``/nick NAME``, which leave the room and join again).

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

from lanchat.client import commands, messages, terminal, view
from lanchat.client import session as s
from lanchat.client.connection import ChatClient
from lanchat.client.i18n import _, ngettext, translated
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
        "  /who, /names      " + _("who is in the room"),
        f"  {_('/msg NAME TEXT'):<18}" + _("a private message to NAME"),
        f"  {_('/me TEXT'):<18}" + _("an action (\"* you TEXT\")"),
        f"  {_('/nick NAME'):<18}" + _("go on under another name"),
        "  /join [PIN]       " + _("join another room (without PIN: this one again)"),
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


def layout_status(label: str, rest: list[str], states: list[str], width: int) -> str:
    """The status line in ``width`` cells: the states on the right stay whole; the
    server's name is shortened first, then what follows it."""
    sep = " · "
    right = fit(sep.join(states), max(0, width - 2))
    room = width - 2 - text_width(right) - 1  # cells for the left side (one gap at least)
    tail = sep.join(rest)
    label_room = room - (text_width(tail) + len(sep) if tail else 0)
    if text_width(label) <= label_room:
        left = label + (sep + tail if tail else "")
    elif label_room >= 8:
        left = fit(label, label_room - 1) + "…" + (sep + tail if tail else "")
    else:
        left = fit(tail or label, max(0, room))
    gap = width - 2 - text_width(left) - text_width(right)
    return fit(" " + left + " " * max(1, gap) + right + " ", width)


def error_colour(palette: tuple[str, ...]) -> str | None:
    """The colour of the client's error notes: red, unless a name can be red too (then
    none: errors are underlined instead, so no name ever looks like an error)."""
    return None if "red" in palette else "red"


class Styles:
    """Maps the view's segment styles to curses attributes."""

    def __init__(self, colours: bool, palette: tuple[str, ...]) -> None:
        self.palette_size = max(1, len(palette))
        self.colours = False
        self._attrs: dict[str, int] = {
            view.TIME: curses.A_DIM, view.TEXT: curses.A_NORMAL, view.SYSTEM: curses.A_BOLD,
            # Without a colour of their own: underlined, never a name's colour.
            view.ERROR: curses.A_BOLD | curses.A_UNDERLINE,
            view.PRIVATE: curses.A_BOLD | curses.A_UNDERLINE,
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
            error = error_colour(palette)
            if error is not None:
                curses.init_pair(pair, COLOUR_NUMBERS[error], background)
                self._attrs[view.ERROR] = curses.color_pair(pair) | curses.A_BOLD
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
        self.ended: s.Finished | None = None  # removed from the room; the window stays
        self.leaving_since: float | None = None
        self.status_note = ""
        self._signals: set[int] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._dirty = True
        self._join_note: view.Entry | None = None  # history goes above it
        self._fallback: tuple[str, str] | None = None  # (pin, name) if a /join or /nick fails
        self._shown_trouble: tuple[str, str] | None = None
        # Where the selector cannot watch the terminal (Windows), keys are polled.
        self.poll_keys = terminal.stdin_mode() == "thread"

    @property
    def session(self) -> s.Session:
        return self.client.session  # replaced by /join and /nick

    # ------------------------------------------------------------------ events

    def add(self, entry: view.Entry, history: bool = False) -> None:
        # The room's history, replayed just after the join, goes above "You are in room".
        self.transcript.add(entry, self._join_note if history else None)
        if not history:
            self._join_note = None
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
            self.add(entry, history=event.history)
            if entry.mention:
                self._ring()
        elif isinstance(event, chat.Private):
            entry = f.private(event)
            self.add(entry)
            if entry.mention:
                self._ring()
        elif isinstance(event, chat.Presence):
            # Marked as the server marks them for nc users ("--> ", "<-- "), never "* ",
            # which begins an action: "/me joined" must not read as a join.
            if event.event == "join":
                line = "--> " + _("{name} joined").format(name=event.name)
            elif event.reason:
                line = "<-- " + _("{name} left ({reason})").format(name=event.name,
                                                                   reason=event.reason)
            else:
                line = "<-- " + _("{name} left").format(name=event.name)
            self.add(f.note(line, view.HISTORY, event.ts))
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
            self._fallback = None
            self._shown_trouble = None
            if event.rejoin:
                self.note(_("Back in room {room}.").format(room=joined.room))
            else:
                self.note(_("You are in room {room} as {name}. Here: {members}. Type /help "
                            "for commands.").format(room=joined.room, name=joined.name,
                                                    members=", ".join(joined.members)))
                self._join_note = self.transcript.entries[-1]
        elif isinstance(event, s.Disconnected):
            # Each new reason is said once; the countdown is in the status line.
            why = (event.code, event.reason)
            if not event.reconnect_failed or why != self._shown_trouble:
                self.note(messages.disconnected(event), view.ERROR)
            self._shown_trouble = why
        elif isinstance(event, s.Retrying):
            self.note(messages.retrying(event), view.ERROR)
        elif isinstance(event, s.JoinRefused):
            # Only after /join or /nick (the first join is asked for before the screen).
            self.note(messages.join_refused(event), view.ERROR)
            if self._fallback is not None:
                pin, name = self._fallback
                self._fallback = None
                self.switch(pin, name)
            else:
                self.note(_("Type /join PIN or /nick NAME to try again, or /quit."))
        elif isinstance(event, s.Held):
            if event.reason == "stopped":
                self.note(messages.held(event), view.ERROR)
        elif isinstance(event, s.NotDelivered):
            self.note(messages.not_delivered(event), view.ERROR)
        elif isinstance(event, s.ServerError):
            self.note(event.error.message, view.ERROR)
        elif isinstance(event, s.Finished):
            if event.ok:
                self.finished = event
                return
            # Removed, the room closed, the server gone for good: the conversation
            # stays on the screen, with why, and the person chooses what next.
            self.ended = event
            self.note(messages.finished(event) or event.reason, view.ERROR)
            for line in messages.unsent(event.unsent):
                self.note(line, view.ERROR)
            if self._fallback is not None:
                pin, name = self._fallback
                self._fallback = None
                self.switch(pin, name)
                return
            room = event_room(self.session)
            self.note(_("Type /join to join room {room} again, /join PIN for another room, "
                        "or /quit to leave.").format(room=room) if room else
                      _("Type /join PIN to join a room, or /quit to leave."))

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
            self._dirty = True
            if self.finished is not None:
                break

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
        session = self.session
        try:
            parts = commands.split_long(line, session.fits)
            command = commands.parse(line) if not parts else None
        except text.UnknownCommand as unknown:
            self.note(_("Unknown command {command}. Type /help for the commands.").format(
                command=unknown.command), view.ERROR)
            return
        except LocalProtocolError as exc:
            self.note(translated(exc.template, **exc.values), view.ERROR)
            return
        if isinstance(command, commands.Clear):
            self.transcript.clear()
            self._join_note = None
            return
        self.transcript.to_bottom()
        if parts:
            self.note(ngettext("A long message: sent as {count} message.",
                               "A long message: sent as {count} messages.",
                               len(parts)).format(count=len(parts)))
            for part in parts:
                self.on_events(session.submit(part, now))
        elif isinstance(command, text.Help):
            for help_line in help_lines():
                self.note(help_line)
        elif isinstance(command, chat.Quit):
            self.leave()
        elif isinstance(command, chat.Who):
            if not session.request(command, now):
                self.note(_("Not connected; {command} has to wait for the connection.").format(
                    command=word), view.ERROR)
        elif isinstance(command, (commands.Nick, commands.JoinRoom)):
            self.change_room_or_name(command)
        elif command is not None:
            if self.ended is not None:
                self.note(_("Not in a room: type /join to join again."), view.ERROR)
                self.editor.set_text(line)  # kept, to send after joining again
                return
            self.on_events(session.submit(command, now))
        self.client.flush()

    def change_room_or_name(self, command: commands.Nick | commands.JoinRoom) -> None:
        session = self.session
        if session.pending and self.ended is None:
            self.note(_("Wait until your messages are delivered ({count} waiting).").format(
                count=len(session.pending)), view.ERROR)
            return
        pin = session.joined.room if session.joined else session.pin
        name = session.my_name
        if isinstance(command, commands.Nick):
            name = command.name
        elif command.pin is not None:
            pin = command.pin
        if pin is None or not name:
            self.note(_("Usage: /join PIN (the room's digits)"), view.ERROR)
            return
        if session.phase == s.JOINED and session.joined is not None and \
                session.joined.room == pin and session.joined.name == name:
            self.note(_("You are in room {room} as {name} already.").format(room=pin,
                                                                        name=name))
            return
        if session.phase == s.JOINED and session.joined is not None:
            self._fallback = (session.joined.room, session.joined.name)
        self.switch(pin, name)

    def switch(self, pin: str, name: str) -> None:
        """Leave this room (politely, if in one) and join ``pin`` as ``name``."""
        now = self.clock()
        session = self.session
        if session.phase == s.NEED_CREDENTIALS:
            # Refused on this connection: answer again on it.
            self.on_events(session.set_credentials(pin, name, now))
            self.client.flush()
            return
        if session.finished is None:
            session.quit(now)
        self.ended = None
        self._join_note = None
        self._shown_trouble = None
        new = s.Session(pin=pin, name=name, lang=self.session.lang)
        new.remember_shown(session)  # the history replay shows only what is new here
        self.client.use_session(new)
        self.note(_("Joining room {room} as {name}...").format(room=pin, name=name))

    def leave(self, at_once: bool = False) -> None:
        """Leave the room: at once, or once what is queued is delivered (a few seconds)."""
        now = self.clock()
        if self.ended is not None and self.session.phase in (s.FINISHED, s.DISCONNECTED):
            self.finished = self.ended  # removed earlier and never back in: say so at exit
            return
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

    def status_parts(self) -> tuple[str, list[str], list[str]]:
        """The status line's parts: the server, what is shown after it, and the states
        (which are kept whole when the line is too narrow for everything)."""
        session = self.session
        now = self.clock()
        people = len(session.members)
        rest: list[str] = []
        if session.joined is not None:
            rest.append(_("room {room}").format(room=session.joined.room))
            rest.append(ngettext("{count} person", "{count} people", people).format(
                count=people))
        right: list[str] = []
        if self.status_note:
            right.append(self.status_note)
        if self.transcript.scroll:
            right.append(_("scrolled back: {count} new").format(
                count=self.transcript.unseen) if self.transcript.unseen else _("scrolled back"))
        pending = len(session.pending)
        if pending:
            right.append(ngettext("{count} waiting", "{count} waiting", pending).format(
                count=pending))
        if session.server_state != "active":
            right.append(messages.state_text(session.server_state))
        phase = session.phase
        if phase == s.JOINED:
            state = _("connected")
        elif phase == s.DISCONNECTED and session.reconnect_at is not None:
            left_s = max(0.0, session.reconnect_at - now)
            state = _("reconnecting in {seconds:.0f} s").format(seconds=left_s)
        elif phase in (s.CONNECTING, s.GREETING, s.HELLO, s.JOINING):
            gives_up = self.client.gives_up_at()
            state = _("connecting...") if gives_up is None else \
                _("connecting (gives up in {seconds:.0f} s)").format(
                    seconds=max(0.0, gives_up - now))
        elif phase == s.QUITTING:
            state = _("leaving...")
        elif self.ended is not None:
            state = _("not in the room")
        else:
            state = _("disconnected")
        if phase == s.DISCONNECTED and session.trouble is not None:
            state += ": " + messages.trouble(session.trouble)
        right.append(state)
        if phase == s.JOINED and not self.client.encrypted:
            right.append(_("not encrypted"))  # said where the person always looks
        return self.server_label, rest, right

    def pending_rows(self, width: int) -> list[list[view.Segment]]:
        rows: list[list[view.Segment]] = []
        if self.session.finished is not None:
            return rows  # said as not sent when the session ended
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
        status = layout_status(*self.status_parts(), width)
        try:
            scr.addstr(height - 2, 0, status, curses.A_REVERSE)
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
        if not self.poll_keys:
            self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, self.on_keys)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        # SIGWINCH and SIGHUP do not exist on Windows (a resize arrives as KEY_RESIZE there).
        handled = [getattr(signal, name) for name in ("SIGWINCH", "SIGINT", "SIGTERM", "SIGHUP")
                   if hasattr(signal, name)]
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            self._loop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if not self.poll_keys:
                self.selector.unregister(sys.stdin.fileno())
            self.selector.unregister(self._wake_r)
            self._wake_r.close()
            self._wake_w.close()
            self.client.close()
        return self.finished

    def _loop(self) -> None:
        while self.finished is None:
            signals, self._signals = self._signals, set()
            if getattr(signal, "SIGWINCH", None) in signals:
                self.resize()
            if signal.SIGINT in signals:
                self.leave(at_once=self.leaving_since is not None)
            if signals & {signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)}:
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
            if self.poll_keys:
                timeout = terminal.KEY_POLL if timeout is None else min(timeout,
                                                                        terminal.KEY_POLL)
            for key, mask in self.selector.select(timeout):
                callback: Callable[[int], None] = key.data
                callback(mask)
            if self.poll_keys:
                self.on_keys(0)
            self.client.tick()


def event_room(session: s.Session) -> str:
    """The room the session was in (or was joining), for "join it again"."""
    return session.joined.room if session.joined else (session.pin or "")


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

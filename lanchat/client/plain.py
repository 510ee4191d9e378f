"""Plain line mode: for pipes, scripts and terminals without curses.

Each input line is sent to the room (lines starting with ``/`` are the same commands
as in the full-screen interface; ``//`` sends a literal ``/``), each room event is
printed to stdout as one line, in the server's plain-text format, or with ``--json``
as the protocol event itself, one JSON object per line.  Status and errors go to
stderr, so stdout carries only the room.

When the input ends, the client waits until every line has been delivered (the
server echoes it back as a message from us), then leaves and exits 0.  A line that
cannot be delivered is reported on stderr and the exit status is 1; a line is
never dropped silently.  If the connection drops, the client reconnects and carries
on; lines still undelivered ``--timeout`` seconds after the input ended are reported
as not sent.

One thread, one selector: stdin and the chat socket are both watched by it.  A
regular file as stdin cannot be watched by epoll; it is read as fast as the loop
turns instead (it is always readable).  Where the selector cannot watch stdin at
all (Windows), a reader thread passes it on through a socket pair
(``terminal.StdinThread``) and the loop watches that socket instead.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TextIO

from lanchat.client import commands, messages, terminal
from lanchat.client import session as s
from lanchat.client.connection import ChatClient
from lanchat.client.i18n import _, translated
from lanchat.client.options import Options
from lanchat.protocol import chat, text
from lanchat.protocol.errors import LocalProtocolError

READ_SIZE = 65536
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def help_lines() -> list[str]:
    return [
        _("Commands:"),
        "  /who, /names      " + _("who is in the room"),
        f"  {_('/msg NAME TEXT'):<18}" + _("a private message to NAME"),
        f"  {_('/me TEXT'):<18}" + _("an action (\"* you TEXT\")"),
        "  /help             " + _("this help"),
        "  /quit             " + _("leave (Ctrl-D at the start of a line too)"),
        _("Anything else is sent to the room; start a line with // to send a literal /."),
    ]


class PlainMode:
    def __init__(self, client: ChatClient, options: Options, *, stdin_fd: int = 0,
                 stdout: TextIO | None = None, stderr: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 stdin_mode: str | None = None) -> None:
        self.client = client
        self.session = client.session
        self.options = options
        self.stdin_fd = stdin_fd
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.clock = clock
        self.selector = client.selector
        self._inbuf = b""
        self._line_number = 0
        self._line_of: dict[int, int] = {}  # a queued message's id -> its input line number
        self.input_done = False
        self._input_done_at = 0.0
        self._stdin_is_file = False
        self.stdin_mode = stdin_mode or terminal.stdin_mode()
        self._stdin_thread: terminal.StdinThread | None = None
        self.failures = 0
        self.finished: s.Finished | None = None
        self._quit_sent = False
        self._interrupted = False
        self._wake_r, self._wake_w = socket.socketpair()

    # ------------------------------------------------------------------ output

    def out(self, line: str) -> None:
        """One line on stdout (a JSON line is already safe: json escapes controls)."""
        try:
            self.stdout.write((line if self.options.json else messages.clean(line)) + "\n")
            self.stdout.flush()
        except BrokenPipeError:
            # Whoever read our output has gone; keep delivering, stop printing.
            self.stdout = open(os.devnull, "w")

    def err(self, line: str) -> None:
        try:
            print(messages.clean(line), file=self.stderr, flush=True)
        except (BrokenPipeError, ValueError):
            pass

    def show(self, events: list[s.UiEvent]) -> None:
        for event in events:
            self._show_one(event)

    def _show_one(self, event: s.UiEvent) -> None:
        if isinstance(event, chat.Event):
            if self.options.json:
                if not isinstance(event, (chat.Ping, chat.Pong, chat.Unknown)):
                    self.out(json.dumps(event.to_dict(), ensure_ascii=False))
                return
            if isinstance(event, chat.Bye):
                return  # its message is the reason given when the connection closes
            data = text.format_event(event, _)
            if data is not None:
                self.out(data.decode("utf-8").rstrip("\n"))
        elif isinstance(event, s.RoomJoined):
            if self.options.json:
                self.out(json.dumps(event.joined.to_dict(), ensure_ascii=False))
            joined = event.joined
            if event.rejoin:
                self.err(_("[Client] Back in room {room} as {name}.").format(
                    room=joined.room, name=joined.name))
            else:
                self.err(_("[Client] In room {room} as {name}. Here: {members}.").format(
                    room=joined.room, name=joined.name, members=", ".join(joined.members)))
        elif isinstance(event, s.Disconnected):
            self.err(messages.disconnected(event))
        elif isinstance(event, s.Retrying):
            self.err(messages.retrying(event))
        elif isinstance(event, s.Held):
            self.err(messages.held(event))
        elif isinstance(event, s.NotDelivered):
            self.failures += 1
            number = self._line_of.pop(event.item.id, None)
            if number is None:
                self.err(messages.not_delivered(event))
            else:
                self.err(_("Line {number} not sent: {reason}").format(
                    number=number, reason=event.message))
        elif isinstance(event, s.Delivered):
            self._line_of.pop(event.item.id, None)
        elif isinstance(event, s.ServerError):
            self.err("! " + event.error.message)
        elif isinstance(event, s.Finished):
            self.finished = event
        elif isinstance(event, (s.JoinRefused, s.NeedCredentials)):
            # Only after a reconnect, where the session decides itself; nothing to ask.
            pass

    # ------------------------------------------------------------------ input

    def _on_stdin(self, mask: int) -> None:
        self._read_stdin()

    def _on_stdin_thread(self, mask: int) -> None:
        assert self._stdin_thread is not None
        data = self._stdin_thread.read()
        if data is not None:
            self._feed(data)

    def _read_stdin(self) -> None:
        try:
            data = os.read(self.stdin_fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.err(_("Cannot read the input: {error}").format(error=exc.strerror or exc))
            data = b""
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Bytes of input (b"": the input ended), however they were read."""
        if not data:
            if self._inbuf:
                self._take_line(self._inbuf)
                self._inbuf = b""
            self._end_input()
            return
        self._inbuf += data
        *lines, self._inbuf = self._inbuf.split(b"\n")
        for raw in lines:
            if self.input_done:
                break
            self._take_line(raw)

    def _end_input(self) -> None:
        if self.input_done:
            return
        self.input_done = True
        self._input_done_at = self.clock()
        if not self._stdin_is_file:
            watched = self._stdin_thread.sock if self._stdin_thread else self.stdin_fd
            try:
                self.selector.unregister(watched)
            except (KeyError, ValueError):
                pass

    def _take_line(self, raw: bytes) -> None:
        self._line_number += 1
        number = self._line_number
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            self.failures += 1
            self.err(_("Line {number} not sent: it is not UTF-8 text (byte {byte}).").format(
                number=number, byte=exc.start + 1))
            return
        if not line.strip():
            return
        now = self.clock()
        try:
            command = commands.parse(line)
        except text.UnknownCommand as unknown:
            self.failures += 1
            self.err(_("Line {number} not sent: unknown command {command} (/help lists "
                       "them).").format(number=number, command=unknown.command))
            return
        except LocalProtocolError as exc:
            self.failures += 1
            self.err(_("Line {number} not sent: {reason}").format(
                number=number, reason=translated(exc.template, **exc.values)))
            return
        if isinstance(command, text.Help):
            for help_line in help_lines():
                self.err(help_line)
        elif isinstance(command, chat.Quit):
            self._end_input()
        elif isinstance(command, (commands.Nick, commands.JoinRoom, commands.Clear)):
            self.failures += 1
            self.err(_("Line {number} not sent: {command} works in the full-screen chat; "
                       "here, start lanchat again with --name or --pin.").format(
                number=number, command=line.split(" ", 1)[0]))
        elif isinstance(command, chat.Who):
            if not self.session.request(command, now):
                self.err(_("Not in a room right now; /who is not sent."))
        else:
            events = self.session.submit(command, now)
            for event in events:
                if isinstance(event, s.Queued):
                    self._line_of[event.item.id] = number
            self.show(events)
        self.client.flush()

    # ------------------------------------------------------------------ the loop

    def _on_signal(self, signum: int, frame: object) -> None:
        self._interrupted = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def run(self, backlog: list[s.UiEvent]) -> int:
        self.client.emit = self.show
        if self.options.json and self.session.welcome is not None:
            self.out(json.dumps(self.session.welcome.to_dict(), ensure_ascii=False))
        self.show(backlog)
        if self.stdin_mode == "thread":
            self._stdin_thread = terminal.StdinThread(self.stdin_fd)
            self.selector.register(self._stdin_thread.sock, selectors.EVENT_READ,
                                   self._on_stdin_thread)
        else:
            try:
                self.selector.register(self.stdin_fd, selectors.EVENT_READ, self._on_stdin)
            except PermissionError:
                self._stdin_is_file = True  # a regular file: always readable
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, lambda mask: None)
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        try:
            return self._loop()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            self.selector.unregister(self._wake_r)
            self._wake_r.close()
            self._wake_w.close()
            if self._stdin_thread is not None:
                if not self.input_done:
                    self.selector.unregister(self._stdin_thread.sock)
                self._stdin_thread.close()
            self.client.close()

    def _loop(self) -> int:
        while self.finished is None:
            if self._interrupted:
                return self._interrupt()
            if self._stdin_is_file and not self.input_done:
                self._read_stdin()
                timeout: float | None = 0.0
            else:
                timeout = self.client.timeout()
            if self.input_done:
                if self.session.idle and not self._quit_sent:
                    self._quit_sent = True
                    self.show(self.session.quit(self.clock()))
                    self.client.flush()
                    continue
                left = self._input_done_at + self.options.timeout - self.clock()
                if left <= 0 and not self._quit_sent:
                    self.err(_("Gave up delivering after {seconds:g} s.").format(
                        seconds=self.options.timeout))
                    self._quit_sent = True
                    self.show(self.session.quit(self.clock()))
                    self.client.flush()
                    continue
                if not self._quit_sent:
                    timeout = left if timeout is None else min(timeout, left)
            for key, mask in self.selector.select(timeout):
                if key.fileobj is self._wake_r:
                    try:
                        self._wake_r.recv(64)
                    except OSError:
                        pass
                    continue
                callback: Callable[[int], None] = key.data
                callback(mask)
            self.client.tick()
        return self._result(self.finished)

    def _interrupt(self) -> int:
        # Leave at once; whatever is not delivered is said so.
        self.show(self.session.quit(self.clock()))
        self.client.flush()
        for line in messages.unsent(self.session.pending):
            self.err(line)
        return EXIT_INTERRUPTED

    def _result(self, finished: s.Finished) -> int:
        message = messages.finished(finished)
        if message:
            self.err(message)
        for line in messages.unsent(finished.unsent):
            self.err(line)
        if finished.unsent or self.failures or not finished.ok:
            return EXIT_FAILED
        return EXIT_OK

"""lanchatctl shell and top on a pseudo-terminal, as a person at a keyboard uses them."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from lanchat_testing import Daemon, env_with_repo
from test_lanchatctl import ctl, joined_json, ok

TIMEOUT = 15.0
ROWS, COLUMNS = 40, 120
PROMPT = "Server> "
ESCAPES = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78M]|\][^\x07]*\x07)")


class Pty:
    """``python -m lanchatctl ARGS`` on the child side of a new pseudo-terminal."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.output = b""
        self.seen = 0  # output before this offset has been matched already
        self.status: int | None = None
        pid, fd = pty.fork()
        if pid == 0:  # the child: set the window size, then become lanchatctl
            try:
                winsize = struct.pack("HHHH", ROWS, COLUMNS, 0, 0)
                fcntl.ioctl(0, termios.TIOCSWINSZ, winsize)
                os.execve(sys.executable, [sys.executable, "-m", "lanchatctl", *args], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False at end of output."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError as exc:  # EIO: the child side is closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            return False
        self.output += data
        return True

    def text(self, start: int = 0) -> str:
        return ESCAPES.sub(b"", self.output[start:]).decode("utf-8", "replace")

    def expect(self, wanted: str, timeout: float = TIMEOUT) -> str:
        """Wait until ``wanted`` appears after what was matched before; return the text."""
        deadline = time.monotonic() + timeout
        open_ = True
        while True:
            text = self.text(self.seen)
            at = text.find(wanted)
            if at >= 0:
                self._move_past(wanted)
                return text[:at + len(wanted)]
            left = deadline - time.monotonic()
            if left <= 0 or not open_:
                raise AssertionError(f"never saw {wanted!r}; output after the last match:\n"
                                     f"{text}")
            open_ = self._read(min(left, 0.5))

    def _move_past(self, wanted: str) -> None:
        """Mark the output up to the first ``wanted`` as seen (counted in raw bytes)."""
        raw = self.output[self.seen:]
        for end in range(len(raw) + 1):
            if wanted in ESCAPES.sub(b"", raw[:end]).decode("utf-8", "replace"):
                self.seen += end
                return

    def command(self, line: str) -> str:
        """Type ``line`` and Enter; return what it printed, up to the next prompt."""
        self.send(line + "\r")
        return self.expect(PROMPT)

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode("utf-8"))

    def wait(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status) if hasattr(
                    os, "waitstatus_to_exitcode") else status >> 8
                break
            if time.monotonic() > deadline:
                raise AssertionError("lanchatctl did not exit; output:\n" + self.text())
            self._read(0.1)  # keep draining, so that the child never blocks writing
        return self.status

    def close(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Pty]]:
    started: list[Pty] = []

    def start(*args: str) -> Pty:
        env = env_with_repo({"TERM": "xterm", "HOME": str(tmp_path / "home"),
                             "XDG_STATE_HOME": str(tmp_path / "state"), "LANG": "C.UTF-8",
                             "LC_ALL": "C.UTF-8"})
        term = Pty(list(args), env)
        started.append(term)
        return term

    yield start
    for term in started:
        term.close()


# --------------------------------------------------------------------------- shell


def test_the_shell_speaks_the_original_console_commands(
        daemon: Daemon, terminal: Callable[..., Pty], tmp_path: Path) -> None:
    assert daemon.control
    alice = joined_json(daemon, "1234", "alice")
    bob = joined_json(daemon, "1234", "bob")
    shell = terminal("--socket", daemon.control)  # no command, on a terminal: the shell
    banner = shell.expect("Server> ")
    assert "State:     active" in banner and "Room 1234: 2 members" in banner
    assert "Type /help for commands" in banner

    out = shell.command("/standby")
    assert "lanchatd is now standby: members keep chatting, new clients are refused." in out
    assert ok(daemon, "status", "--json").json()["state"] == "standby"

    out = shell.command("/room 1234 bob too loud")
    assert "Removed bob (127.0.0.1:" in out and "they were told why." in out
    assert bob.recv_type("bye")["message"] == (
        "You were removed from the room by the administrator: too loud")

    out = shell.command("/logg 3")
    assert re.search(r" kick +room=1234 name=bob reason=\"too loud\" addr=\S+  by "
                     r"uid=0\(root\) pid=\d+", out), out
    assert re.search(r" state +old=active new=standby  by uid=0\(root\)", out), out

    out = shell.command("/help")
    for command in ("/start", "/standby", "/stop", "/room PIN ", "/room PIN USER", "/logg",
                    "/help"):
        assert command in out, command

    assert "/room needs a PIN" in shell.command("/room")
    assert "unknown command /bogus; /help lists the commands." in shell.command("/bogus")
    assert "the following arguments are required: NAME" in shell.command("kick 1234")
    assert '"pin": "1234"' in shell.command("rooms --json")

    out = shell.command("stat\t")  # Tab completes the command name
    assert "State:     standby" in out
    out = shell.command("/room 12\tal\t")  # ...and the room PIN, and the name in it
    assert "Removed alice" in out
    assert alice.recv_type("bye")["reason"] == "kicked"

    out = shell.command("\x1b[A")  # Up: the last line again; room 1234 is gone by now
    assert "There is no room with PIN 1234." in out
    assert "lanchatd is now active" in shell.command("/start")
    shell.send("\x03")  # Ctrl-C drops the line being typed
    shell.expect("Server> ")
    shell.send("quit\r")
    assert shell.wait() == 0
    history = (tmp_path / "state" / "lanchat" / "lanchatctl_history").read_text()
    assert "/standby" in history and "/room 1234 bob too loud" in history
    for client in (alice, bob):
        client.close()


def test_the_shell_keeps_going_when_the_daemon_goes(daemon: Daemon,
                                                    terminal: Callable[..., Pty]) -> None:
    assert daemon.control
    shell = terminal("--socket", daemon.control, "shell")
    shell.expect("Server> ")
    daemon.stop()
    assert f"no control socket at {daemon.control}" in shell.command("status")
    shell.send("\x04")  # Ctrl-D
    assert shell.wait() == 0


# --------------------------------------------------------------------------- top


def test_top_refreshes_in_place_until_q(daemon: Daemon, terminal: Callable[..., Pty]) -> None:
    assert daemon.control
    alice = joined_json(daemon, "1234", "alice")
    top = terminal("--socket", daemon.control, "top", "--interval", "0.2")
    top.expect("lanchatctl top")
    first = top.expect("alice")
    assert "active: new clients and messages are allowed" in first
    assert "Room 1234: 1 member" in first
    assert "\x1b[?1049h" in top.output.decode("latin-1") or "\x1b[H" in top.output.decode(
        "latin-1")  # a full-screen program: the screen is redrawn, nothing scrolls

    ok(daemon, "standby")
    top.send("\x0c")  # Ctrl-L: draw the whole screen again
    top.expect("standby: members keep chatting")
    alice.say("hello")
    top.send("\x0c")
    top.expect("messages 1,")
    top.send("q")
    assert top.wait() == 0
    assert "Traceback" not in top.text()
    alice.close()


def test_top_says_when_the_daemon_is_gone_and_ctrl_c_quits(
        daemon: Daemon, terminal: Callable[..., Pty]) -> None:
    assert daemon.control
    top = terminal("--socket", daemon.control, "top", "--interval", "0.2")
    top.expect("No rooms are open.")
    daemon.stop()
    top.expect("Trying again at the next refresh.")
    top.send("\x03")
    assert top.wait() == 0
    assert "Traceback" not in top.text()


def test_top_needs_a_terminal(daemon: Daemon) -> None:
    result = ctl(daemon, "top")
    assert result.status == 2
    assert result.err == ("lanchatctl: top needs a terminal; for scripts use: lanchatctl "
                          "status --json\n")

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
from lanchat_testing import Daemon, as_if_at_a_terminal, env_with_repo
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
                as_if_at_a_terminal()  # Ctrl-C on the terminal must reach lanchatctl
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

    def interrupt(self, timeout: float = TIMEOUT) -> None:
        """Ctrl-C, once lanchatctl waits for a key, as a person's Ctrl-C always comes.

        CPython's readline checks for a signal only when its wait for input is
        interrupted: a SIGINT that lands after the prompt is drawn but before that wait
        begins is noticed only at the next key. A person never types that fast; a test
        does, on a loaded machine, so it waits until the child sleeps in its wait.
        """
        deadline = time.monotonic() + timeout
        while not self._waiting_for_input() and time.monotonic() < deadline:
            self._read(0.01)  # keep draining meanwhile, so that the child never blocks
        self.send("\x03")

    def _waiting_for_input(self) -> bool:
        """True when the child sleeps in select() or poll() (Linux's /proc says so)."""
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                state = stat.read().rpartition(")")[2].split()[0]
            with open(f"/proc/{self.pid}/wchan") as wchan:
                where = wchan.read()
        except (OSError, IndexError):
            return True  # no way to tell here: send at once
        if state != "S":
            return False  # running, or about to: not yet in its wait
        # A kernel that hides wait channels says "0"; sleeping is then the best sign.
        return where == "0" or "poll" in where or "select" in where

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

    def start(*args: str, **locale: str) -> Pty:
        env = env_with_repo({"TERM": "xterm", "HOME": str(tmp_path / "home"),
                             "XDG_STATE_HOME": str(tmp_path / "state"), "LANG": "C.UTF-8",
                             "LC_ALL": "C.UTF-8", **locale})
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
    assert banner.splitlines()[:6] == [  # the original console's dashboard
        "=== SERVER DASHBOARD ===",
        "Server active for new clients: True",
        "Server stopped (messages blocked): False",
        "Room 1234: alice, bob",
        "",
        "Type /help for commands.",
    ]

    out = shell.command("/standby")
    assert "[Server] Server in standby. New clients blocked, messages OK." in out
    assert ok(daemon, "status", "--json").json()["state"] == "standby"

    out = shell.command("/room 1234 bob too loud")
    assert "[Server] bob removed from room 1234." in out
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
    assert "[Server] alice removed from room 1234." in out
    assert alice.recv_type("bye")["reason"] == "kicked"

    out = shell.command("\x1b[A")  # Up: the last line again; room 1234 is gone by now
    assert "There is no room with PIN 1234." in out
    assert "[Server] Server started. New clients and messages OK." in shell.command("/start")
    assert "lanchatd is already active" in shell.command("start")  # the command's own words
    shell.interrupt()  # Ctrl-C drops the line being typed
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


def test_room_pin_name_kicks_the_person_whose_name_has_spaces(
        daemon: Daemon, terminal: Callable[..., Pty]) -> None:
    assert daemon.control
    ola = joined_json(daemon, "4444", "Ola")
    nordmann = joined_json(daemon, "4444", "Ola Nordmann")
    shell = terminal("--socket", daemon.control, "shell")
    shell.expect("Server> ")
    out = shell.command("/room 4444 Ola Nordmann")
    assert "[Server] Ola Nordmann removed from room 4444." in out  # the console's words
    assert nordmann.recv_type("bye")["message"] == (
        "You were removed from the room by the administrator.")
    out = shell.command("/room 4444 Ola talks too much")  # longest name, then the reason
    assert "[Server] Ola removed from room 4444." in out
    assert ola.recv_type("bye")["message"].endswith(": talks too much")
    shell.send("quit\r")
    assert shell.wait() == 0
    for client in (ola, nordmann):
        client.close()


def test_split_name_prefers_the_longest_name_in_the_room() -> None:
    from lanchatctl.shell import translate
    room = {"4444": ["Ola", "Ola Nordmann"]}
    assert translate(["/room", "4444", "Ola", "Nordmann"], room.__getitem__) == [
        "kick", "4444", "Ola Nordmann"]
    assert translate(["/room", "4444", "Ola", "spam"], room.__getitem__) == [
        "kick", "4444", "Ola", "--reason", "spam"]
    assert translate(["/room", "4444", "Ola", "--reason", "Nordmann"], room.__getitem__) == [
        "kick", "4444", "Ola", "--reason", "Nordmann"]
    assert translate(["/room", "4444", "Kari", "bye"], room.__getitem__) == [
        "kick", "4444", "Kari", "--reason", "bye"]


def test_the_shell_fails_when_it_cannot_reach_the_daemon(
        terminal: Callable[..., Pty], tmp_path: Path) -> None:
    shell = terminal("--socket", str(tmp_path / "nothing.sock"), "shell")
    assert shell.wait() == 3
    assert "no control socket at" in shell.text()


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
    top.interrupt()
    assert top.wait() == 0
    assert "Traceback" not in top.text()


def test_top_needs_a_terminal(daemon: Daemon) -> None:
    result = ctl(daemon, "top")
    assert result.status == 2
    assert result.err == ("lanchatctl: top needs a terminal; for scripts use: lanchatctl "
                          "status --json\n")


def test_the_shell_in_norwegian_is_the_original_console(
        daemon: Daemon, terminal: Callable[..., Pty]) -> None:
    """``LANG=nb_NO.UTF-8 lanchatctl shell``: the seed's dashboard and replies, verbatim
    where the seed has them (../shared/seeds/000_cb83369d9f4e1be8.txt)."""
    assert daemon.control
    ok(daemon, "stop")
    shell = terminal("--socket", daemon.control, "shell", LC_ALL="", LANG="nb_NO.UTF-8")
    banner = shell.expect(PROMPT)
    assert banner.splitlines()[:8] == [
        "=== SERVER DASHBOARD ===",
        "Server aktiv for nye klienter: False",
        "Server stoppet (meldinger blokkert): True",
        "Ingen aktive rom.",
        "",
        "Skriv /help for kommandoer.",
        "",
        "Server klar. Bruk /start for å aktivere. /help for kommandoer.",
    ]
    assert banner.endswith("\nServer> ")
    out = shell.command("/start")
    assert "[Server] Serveren startet. Nye klienter og meldinger OK." in out
    ola = joined_json(daemon, "1234", "ola")
    kari = joined_json(daemon, "1234", "kari")
    out = shell.command("/standby")
    assert "[Server] Serveren er i standby. Nye klienter blokkert, meldinger OK." in out
    out = shell.command("/stop")
    assert "[Server] Serveren stoppet. Nye klienter og meldinger blokkert." in out
    assert "[Server] Serveren er allerede stoppet." in shell.command("/stop")
    out = shell.command("/room 1234 kari")
    assert "[Server] kari fjernet fra rom 1234." in out
    out = shell.command("/room 1234")
    assert "[Server] Rom 1234 stengt; ola koblet fra." in out
    assert "Det finnes ikke noe rom med PIN 1234." in shell.command("/room 1234")
    out = shell.command("/logg 5")
    assert "room_closed" in out  # the log's words are data: the same in every language
    out = shell.command("/help")
    assert "De opprinnelige konsollkommandoene:" in out and "/logg [N]" in out
    assert "/room trenger en PIN" in shell.command("/room")
    assert "ukjent kommando /tull; /help viser kommandoene." in shell.command("/tull")
    out = shell.command("status")
    assert "Tilstand:  stoppet: meldinger avvises og nye klienter avvises" in out
    assert "Ingen rom er åpne." in out
    shell.send("quit\r")
    assert shell.wait() == 0
    for client in (ola, kari):
        client.close()

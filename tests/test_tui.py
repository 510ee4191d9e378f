"""The curses interface in a real terminal: the client runs inside a private tmux server
(``tmux -L <unique name>``, no user configuration), keys are typed with ``send-keys``
and the screen is read with ``capture-pane``.  Only that tmux server is ever killed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

import pytest
from lanchat_testing import Daemon
from test_client_support import client_env, run_client

from lanchat.client import view
from lanchat.client.settings import DEFAULT_PALETTE
from lanchat.client.tui import COLOUR_NUMBERS

TIMEOUT = 15.0
_names = count()


class Terminal:
    """One tmux pane running one command, on a tmux server of its own."""

    def __init__(self, tmp: Path, env: dict[str, str], width: int = 80, height: int = 24) -> None:
        self.socket = f"lanchat-test-{os.getpid()}-{next(_names)}"
        self.tmp = tmp
        self.env = env
        self.width = width
        self.height = height
        self.exit_file = tmp / f"exit-{self.socket}"
        self.bell_file = tmp / f"bells-{self.socket}"
        self.started = False

    def tmux(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                                capture_output=True, text=True, env=self.env, timeout=10)
        if check and result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def start(self, args: list[str]) -> Terminal:
        command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "lanchat", *args])
        # The pane's shell records the exit status, then lingers so the screen stays
        # readable.  Its trap keeps it alive through a Ctrl-C meant for the client (a
        # trap, unlike an ignored signal, is not inherited by the client).
        script = f"trap : INT; {command}; echo $? > {shlex.quote(str(self.exit_file))}; " \
                 "sleep 30"
        env_args: list[str] = []
        for key in ("PYTHONPATH", "PYTHONUNBUFFERED", "HOME", "XDG_CONFIG_HOME",
                    "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "LC_ALL", "LANG",
                    "LANGUAGE"):
            if key in self.env:
                env_args += ["-e", f"{key}={self.env[key]}"]
        self.tmux("new-session", "-d", "-x", str(self.width), "-y", str(self.height),
                  *env_args, "sh", "-c", script)
        self.started = True
        for option in (("default-terminal", "tmux-256color"), ("monitor-bell", "on"),
                       ("bell-action", "any")):
            self.tmux("set-option", "-g", *option, check=False)
        self.tmux("set-hook", "-g", "alert-bell",
                  f"run-shell 'echo bell >> {shlex.quote(str(self.bell_file))}'")
        return self

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "0", "-l", text)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "0", *keys)

    def screen(self, escapes: bool = False) -> list[str]:
        args = ["capture-pane", "-p", "-t", "0"] + (["-e"] if escapes else [])
        return self.tmux(*args).split("\n")[: self.height]

    def wait(self, pred: Callable[[list[str]], bool], what: str,
             timeout: float = TIMEOUT) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if pred(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {what}:\n" + "\n".join(lines))
            time.sleep(0.05)  # polling the terminal's screen; bounded by the deadline

    def wait_text(self, text: str, timeout: float = TIMEOUT) -> list[str]:
        return self.wait(lambda lines: any(text in line for line in lines), repr(text), timeout)

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.tmux("resize-window", "-t", "0", "-x", str(width), "-y", str(height))

    def exit_status(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while not self.exit_file.exists() or not self.exit_file.read_text().strip():
            if time.monotonic() > deadline:
                raise AssertionError("the client did not exit:\n" + "\n".join(self.screen()))
            time.sleep(0.05)  # polling for the file the pane's shell writes
        return int(self.exit_file.read_text())

    def stderr(self) -> str:
        """What the client wrote to stderr (it goes to the terminal, like for a person)."""
        return "\n".join(self.screen())

    def bells(self) -> int:
        try:
            return len(self.bell_file.read_text().split())
        except OSError:
            return 0

    def close(self) -> None:
        if self.started:
            self.tmux("kill-server", check=False)
            self.started = False


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    made: list[Terminal] = []

    def make(args: list[str], *, home: str = "home", width: int = 80, height: int = 24,
             **env: str) -> Terminal:
        term = Terminal(tmp_path, client_env(tmp_path / home, **env), width, height)
        made.append(term)
        return term.start(args)

    yield make
    for term in made:
        term.close()


def join_args(daemon: Daemon, name: str, pin: str = "1234") -> list[str]:
    return ["--server", f"127.0.0.1:{daemon.tcp[1]}", "--pin", pin, "--name", name]


def status_line(lines: list[str]) -> str:
    return lines[-2]


def input_line(lines: list[str]) -> str:
    return lines[-1]


def in_room(term: Terminal) -> list[str]:
    return term.wait(lambda lines: "connected" in status_line(lines), "the joined status line")


def test_status_line_and_layout(daemon: Daemon, terminals: Callable[..., Terminal]) -> None:
    term = terminals(join_args(daemon, "ana"))
    lines = in_room(term)
    assert "You are in room 1234 as ana" in lines[0]
    status = status_line(lines)
    assert f"127.0.0.1:{daemon.tcp[1]}" in status and "room 1234" in status
    assert "1 person" in status and status.rstrip().endswith("connected")
    assert input_line(lines).rstrip() == ">"


def test_incoming_message_does_not_break_a_half_typed_line(
        daemon: Daemon, terminals: Callable[..., Terminal]) -> None:
    term = terminals(join_args(daemon, "ana"))
    in_room(term)
    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        term.type("this is half typ")
        term.wait(lambda lines: input_line(lines).startswith("> this is half typ"),
                  "the typed text")
        for i in range(3):
            bob.say(f"interrupting you {i}")
        lines = term.wait_text("bob: interrupting you 2")
        assert input_line(lines).rstrip() == "> this is half typ"
        assert "2 people" in status_line(lines)
        term.type("ed, now done")
        term.keys("Enter")
        got = bob.recv_until(lambda e: e["type"] == "message" and e["from"] == "ana")
        assert got["text"] == "this is half typed, now done"
        lines = term.wait_text("ana: this is half typed, now done")
        assert input_line(lines).rstrip() == ">"


def test_resize_redraws_and_rewraps(daemon: Daemon, terminals: Callable[..., Terminal]) -> None:
    term = terminals(join_args(daemon, "ana"), width=100, height=20)
    in_room(term)
    long_text = "word " * 30 + "END"
    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        bob.say(long_text.strip())
        term.wait_text("END")
        term.type("draft")
        term.resize(50, 12)
        lines = term.wait(lambda lines: len(lines) == 12 and "connected" in lines[-2]
                          and all(len(line.rstrip()) <= 50 for line in lines),
                          "the screen redrawn at 50x12")
        assert input_line(lines).rstrip() == "> draft"
        message_rows = [line for line in lines if "word" in line or "END" in line]
        assert len(message_rows) >= 4  # the long message re-wrapped to the narrow width
        assert any("END" in line for line in lines)
        term.resize(90, 16)
        lines = term.wait(lambda lines: len(lines) == 16 and "connected" in lines[-2],
                          "the screen redrawn at 90x16")
        assert input_line(lines).rstrip() == "> draft"


def test_mention_rings_the_bell_and_highlights(daemon: Daemon,
                                               terminals: Callable[..., Terminal]) -> None:
    term = terminals(join_args(daemon, "ana"))
    in_room(term)
    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        bob.say("no mention of anyone")
        term.wait_text("no mention of anyone")
        assert term.bells() == 0
        bob.say("hey ANA, look")
        term.wait_text("hey ANA, look")
        deadline = time.monotonic() + TIMEOUT
        while term.bells() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the bell hook writes a file; bounded by the deadline
        assert term.bells() == 1
        coloured = next(line for line in term.screen(escapes=True) if "hey ANA" in line)
        plain = next(line for line in term.screen(escapes=True) if "no mention" in line)
        assert "7m" in coloured.split("bob")[-1]  # reverse video on the mentioning text
        assert "7m" not in plain.split("bob")[-1]
        # The name's colour is the one its hash picks from the palette, on every line.
        colour = COLOUR_NUMBERS[DEFAULT_PALETTE[view.sender_colour("bob",
                                                                  len(DEFAULT_PALETTE))]]
        name = re.compile(r"\x1b\[(?:\d+;)*3(\d)(?:;\d+)*m(?:\x1b\[[\d;]*m)*bob")
        assert [int(m) for m in name.findall(coloured + plain)] == [colour, colour]


def test_scrollback_with_page_up_and_page_down(start_daemon: Callable[..., Daemon],
                                               terminals: Callable[..., Terminal]) -> None:
    daemon = start_daemon("[limits]\nmessage_rate = 1000.0\nmessage_burst = 100\n")
    term = terminals(join_args(daemon, "ana"), height=12)
    in_room(term)
    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        for i in range(40):
            bob.say(f"message number {i:02d}")
        term.wait_text("message number 39")
        for _ in range(4):
            term.keys("PageUp")
        lines = term.wait_text("message number 0")
        assert "scrolled back" in status_line(lines)
        assert not any("message number 39" in line for line in lines)
        bob.say("arrived while reading")
        lines = term.wait_text("1 new")
        assert not any("arrived while reading" in line for line in lines)
        for _ in range(6):
            term.keys("PageDown")
        lines = term.wait_text("arrived while reading")
        assert "scrolled back" not in status_line(lines)


def test_commands_history_and_clear(daemon: Daemon, terminals: Callable[..., Terminal]) -> None:
    term = terminals(join_args(daemon, "ana"))
    in_room(term)
    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        term.type("/who")
        term.keys("Enter")
        term.wait_text("In room 1234: ana, bob")
        term.type("/me waves")
        term.keys("Enter")
        assert bob.recv_type("message")["action"] is True
        term.wait_text("* ana waves")
        term.type("/msg bob psst")
        term.keys("Enter")
        assert bob.recv_type("private")["text"] == "psst"
        term.wait_text("ana → bob: psst")
        term.type("/nonsense")
        term.keys("Enter")
        term.wait_text("Unknown command /nonsense")
        term.type("/msg bob")
        term.keys("Enter")
        term.wait_text("Usage: /msg NAME TEXT")
        term.type("/help")
        term.keys("Enter")
        term.wait_text("/clear")
        # History: Up brings back the earlier lines, newest first.
        term.keys("Up")
        term.wait(lambda lines: input_line(lines).rstrip() == "> /help", "/help recalled")
        term.keys("Up", "Up")
        term.wait(lambda lines: input_line(lines).rstrip() == "> /nonsense", "recalled")
        term.keys("C-u")
        term.type("/clear")
        term.keys("Enter")
        lines = term.wait(lambda lines: not any(line.strip() for line in lines[:-2]),
                          "an empty message pane")
        assert "connected" in status_line(lines)
        # Tab completes a name.
        term.type("b")
        term.keys("Tab")
        term.wait(lambda lines: input_line(lines).rstrip() == "> bob:", "bob completed")


def test_ctrl_d_and_ctrl_c_leave_cleanly(daemon: Daemon,
                                         terminals: Callable[..., Terminal]) -> None:
    with daemon.json_client() as watcher:
        watcher.join("1234", "watcher")
        first = terminals(join_args(daemon, "ana"), home="a")
        in_room(first)
        first.keys("C-d")
        assert first.exit_status() == 0
        left = watcher.recv_until(lambda e: e["type"] == "presence" and e["event"] == "leave")
        assert left["name"] == "ana"
        second = terminals(join_args(daemon, "bea"), home="b")
        in_room(second)
        second.type("unsent draft")
        second.keys("C-c")
        assert second.exit_status() == 0
        left = watcher.recv_until(lambda e: e["type"] == "presence" and e["event"] == "leave")
        assert left["name"] == "bea"
        assert "Traceback" not in second.stderr()


def test_daemon_restart_keeps_the_typed_line_and_delivers_what_waited(
        start_daemon: Callable[..., Daemon], terminals: Callable[..., Terminal]) -> None:
    first = start_daemon()
    port = first.tcp[1]
    term = terminals(["--server", f"127.0.0.1:{port}", "--pin", "1234", "--name", "ana"])
    in_room(term)
    term.type("half a thought")
    first.stop()
    lines = term.wait(lambda lines: "reconnecting" in status_line(lines), "reconnecting")
    assert input_line(lines).rstrip() == "> half a thought"
    term.keys("C-u")
    term.type("typed while the server was down")
    term.keys("Enter")
    term.wait_text("waiting for the connection: typed while the server was down")
    term.type("still typing")
    second = start_daemon(args=["--port", str(port)])
    with second.json_client() as bob:
        bob.join("1234", "bob")
        lines = term.wait_text("Back in room 1234", timeout=30)
        got = bob.recv_until(lambda e: e["type"] == "message" and e["from"] == "ana")
        assert got["text"] == "typed while the server was down"
        lines = term.wait(lambda lines: "connected" in status_line(lines)
                          and "reconnecting" not in status_line(lines), "connected again")
        assert input_line(lines).rstrip() == "> still typing"


def test_pin_and_name_are_asked_for_and_refusals_explained(
        daemon: Daemon, terminals: Callable[..., Terminal]) -> None:
    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        term = terminals(["--server", f"127.0.0.1:{daemon.tcp[1]}"])
        term.wait_text("Enter the PIN of the room you want to join:")
        term.type("12")
        term.keys("Enter")
        term.wait_text("A room PIN is 4 to 12 digits (0-9).")
        term.type("1234")
        term.keys("Enter")
        term.wait_text("Enter your name:")
        term.type("Bob")
        term.keys("Enter")
        term.wait_text("The name Bob is already used in this room")
        term.type("ana")
        term.keys("Enter")
        lines = in_room(term)
        assert "2 people" in status_line(lines)


def test_norwegian_prompts(daemon: Daemon, terminals: Callable[..., Terminal]) -> None:
    term = terminals(["--server", f"127.0.0.1:{daemon.tcp[1]}"], LC_ALL="",
                     LANG="nb_NO.UTF-8")
    term.wait_text("[Klient] Koble til server")
    term.wait_text("Skriv inn PIN for rommet du vil bli med i:")
    term.type("1234")
    term.keys("Enter")
    term.wait_text("Skriv inn brukernavn:")
    term.type("åse")
    term.keys("Enter")
    lines = term.wait(lambda lines: "tilkoblet" in status_line(lines), "the status line")
    assert "rom 1234" in status_line(lines) and "1 person" in status_line(lines)
    assert "Du er i rom 1234 som åse" in lines[0]


def test_four_people_see_the_same_messages_in_the_same_order(
        daemon: Daemon, terminals: Callable[..., Terminal], tmp_path: Path) -> None:
    """Two in the curses interface, one with nc (plain text), one through a pipe."""
    ana = terminals(join_args(daemon, "ana"), home="ana")
    bea = terminals(join_args(daemon, "bea"), home="bea")
    in_room(ana)
    in_room(bea)
    with daemon.text_client() as nc:
        nc.join("1234", "cai")
        ana.type("hello from ana")
        ana.keys("Enter")
        bea.wait_text("ana: hello from ana")
        bea.type("hello from bea")
        bea.keys("Enter")
        ana.wait_text("bea: hello from bea")
        nc.send_line("hello from cai")
        piped = run_client(join_args(daemon, "dan"), client_env(tmp_path / "dan"),
                           input="hello from dan\n")
        assert piped.returncode == 0, piped.stderr
        order = ["ana: hello from ana", "bea: hello from bea", "cai: hello from cai",
                 "dan: hello from dan"]
        for term in (ana, bea):
            lines = term.wait_text("dan: hello from dan")
            seen = [o for line in lines for o in order if o in line]
            assert seen == order
        nc_seen = []
        while len(nc_seen) < 4:
            line = nc.read_until(lambda text: any(o in text for o in order))
            nc_seen += [o for o in order if o in line]
        assert nc_seen == order
        # The pipe joined last: it saw the earlier messages as the room's history.
        piped_seen = [o for line in piped.stdout.splitlines() for o in order if o in line]
        assert piped_seen == order



def test_several_servers_are_listed_and_chosen_by_number(
        start_daemon: Callable[..., Daemon], terminals: Callable[..., Terminal]) -> None:
    alpha = start_daemon(args=["--name", "alpha"])
    beta = start_daemon(args=["--name", "beta", "--initial-state", "standby"])
    term = terminals(["--discovery-address", f"127.255.255.255:{alpha.udp[1]}",
                      "--discovery-address", f"127.255.255.255:{beta.udp[1]}",
                      "--pin", "1234", "--name", "ana"])
    lines = term.wait_text("Choose a server (1-2):")
    listing = "\n".join(lines)
    assert f"1. alpha  127.0.0.1:{alpha.tcp[1]}  active" in listing
    assert f"2. beta  127.0.0.1:{beta.tcp[1]}  in standby" in listing
    term.type("2")
    term.keys("Enter")
    term.wait_text("beta is in standby and accepts no new people; choose another.")
    term.type("1")
    term.keys("Enter")
    lines = in_room(term)
    assert "alpha" in status_line(lines)

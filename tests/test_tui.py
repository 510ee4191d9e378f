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
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from lanchat_testing import Daemon, JsonClient
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

    def start(self, args: list[str], term: str | None = None) -> Terminal:
        """Run ``lanchat ARGS``; ``term`` replaces the pane's TERM ("" unsets it)."""
        prefix = [] if term is None else ["env", "-u", "TERM"] if term == "" else \
            ["env", f"TERM={term}"]
        command = " ".join(shlex.quote(a) for a in [*prefix, sys.executable, "-m", "lanchat",
                                                    *args])
        # The pane's shell records the exit status, then lingers so the screen stays
        # readable.  Its trap keeps it alive through a Ctrl-C meant for the client (a
        # trap, unlike an ignored signal, is not inherited by the client).
        script = f"trap : INT; {command}; echo $? > {shlex.quote(str(self.exit_file))}; " \
                 "sleep 30"
        env_args: list[str] = []
        for key in ("PYTHONPATH", "PYTHONUNBUFFERED", "HOME", "XDG_CONFIG_HOME",
                    "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "LC_ALL", "LANG",
                    "LANGUAGE", "LANCHAT_SELECTOR", "LANCHAT_STDIN"):
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
             term_type: str | None = None, **env: str) -> Terminal:
        term = Terminal(tmp_path, client_env(tmp_path / home, **env), width, height)
        made.append(term)
        return term.start(args, term_type)

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


@contextmanager
def ana_and_bob(daemon: Daemon, terminals: Callable[..., Terminal],
                **terminal: Any) -> Iterator[tuple[Terminal, JsonClient]]:
    """ana in the full-screen client (``terminal``: how ``terminals`` starts it), in room
    1234; then bob, a program, joins her there."""
    term = terminals(join_args(daemon, "ana"), **terminal)
    in_room(term)
    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        yield term, bob


def test_status_line_and_layout(daemon: Daemon, terminals: Callable[..., Terminal]) -> None:
    term = terminals(join_args(daemon, "ana"))
    lines = in_room(term)
    assert "You are in room 1234 as ana" in lines[0]
    status = status_line(lines)
    assert f"127.0.0.1:{daemon.tcp[1]}" in status and "room 1234" in status
    # The plain port: the status line says so for as long as it lasts.
    assert "1 person" in status and status.rstrip().endswith("connected · not encrypted")
    assert input_line(lines).rstrip() == ">"


def test_status_line_over_tls_says_nothing_more(daemon: Daemon,
                                               terminals: Callable[..., Terminal]) -> None:
    assert daemon.tls is not None
    term = terminals(["--server", f"127.0.0.1:{daemon.tls[1]}", "--pin", "1234",
                      "--name", "ana"])
    status = status_line(in_room(term))
    assert f"127.0.0.1:{daemon.tls[1]}" in status
    assert status.rstrip().endswith("connected") and "not encrypted" not in status


def test_incoming_message_does_not_break_a_half_typed_line(
        daemon: Daemon, terminals: Callable[..., Terminal]) -> None:
    with ana_and_bob(daemon, terminals) as (term, bob):
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
    long_text = "word " * 30 + "END"
    with ana_and_bob(daemon, terminals, width=100, height=20) as (term, bob):
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
    with ana_and_bob(daemon, terminals) as (term, bob):
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
    with ana_and_bob(daemon, terminals, height=12) as (term, bob):
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
    with ana_and_bob(daemon, terminals) as (term, bob):
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
        term.wait_text("The name 'Bob' is already taken in this room")
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



def test_the_only_active_server_is_joined_and_a_standby_one_shown_as_such(
        start_daemon: Callable[..., Daemon], terminals: Callable[..., Terminal]) -> None:
    alpha = start_daemon(args=["--name", "alpha"])
    beta = start_daemon(args=["--name", "beta", "--initial-state", "standby"])
    term = terminals(["--discovery-address", f"127.255.255.255:{alpha.udp[1]}",
                      "--discovery-address", f"127.255.255.255:{beta.udp[1]}",
                      "--pin", "1234", "--name", "ana"])
    lines = in_room(term)
    assert "alpha" in status_line(lines)
    before = "\n".join(term.tmux("capture-pane", "-p", "-S", "-100", "-t", "0").split("\n"))
    assert "Choose a server" not in before


def test_several_active_servers_are_listed_and_chosen_by_number(
        start_daemon: Callable[..., Daemon], terminals: Callable[..., Terminal]) -> None:
    alpha = start_daemon(args=["--name", "alpha"])
    beta = start_daemon(args=["--name", "beta", "--initial-state", "standby"])
    gamma = start_daemon(args=["--name", "gamma"])
    term = terminals([*(arg for d in (alpha, beta, gamma) for arg in (
        "--discovery-address", f"127.255.255.255:{d.udp[1]}")), "--pin", "1234",
        "--name", "ana"])
    lines = term.wait_text("Choose a server (1-3):")
    listing = "\n".join(lines)
    assert f"1. alpha  127.0.0.1:{alpha.tcp[1]}  active" in listing
    assert f"2. beta  127.0.0.1:{beta.tcp[1]}  in standby" in listing
    term.type("2")
    term.keys("Enter")
    term.wait_text("beta is in standby and accepts no new people; choose another.")
    term.type("3")
    term.keys("Enter")
    lines = in_room(term)
    assert "gamma" in status_line(lines)


@pytest.mark.parametrize(("term_type", "reason"), [
    ("xterm-from-the-future", "Line mode: the terminal type 'xterm-from-the-future' is "
                              "unknown here."),
    ("", "Line mode: TERM is not set."),
    ("dumb", "Line mode: TERM=dumb cannot show it."),
])
def test_a_terminal_curses_cannot_drive_gets_line_mode_before_joining(
        daemon: Daemon, terminals: Callable[..., Terminal], term_type: str,
        reason: str) -> None:
    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        term = terminals(join_args(daemon, "ana"), term_type=term_type)
        term.wait_text(reason)
        assert bob.recv_type("presence")["name"] == "ana"
        term.type("hello in line mode")
        term.keys("Enter")
        got = bob.recv_until(lambda e: e["type"] == "message" and e["from"] == "ana")
        assert got["text"] == "hello in line mode"
        bob.say("and back")
        term.wait_text("bob: and back")
        assert "Traceback" not in term.stderr()
        term.keys("C-d")
        assert term.exit_status() == 0
        left = bob.recv_until(lambda e: e["type"] == "presence")
        assert (left["event"], left["name"]) == ("leave", "ana")


@pytest.mark.parametrize(("selector", "stdin"), [
    ("select", "select"),   # what macOS uses: select() can watch a terminal, kqueue cannot
    ("poll", "select"),
    ("select", "thread"),   # what Windows uses: keys polled, select() on sockets only
])
def test_full_screen_loop_with_each_selector_and_polled_keys(
        daemon: Daemon, terminals: Callable[..., Terminal], selector: str, stdin: str) -> None:
    with ana_and_bob(daemon, terminals, LANCHAT_SELECTOR=selector,
                     LANCHAT_STDIN=stdin) as (term, bob):
        term.type("typed while bob talks")
        term.wait(lambda lines: input_line(lines).startswith("> typed while bob talks"),
                  "the typed text")
        bob.say("bob talks")
        lines = term.wait_text("bob: bob talks")
        assert input_line(lines).rstrip() == "> typed while bob talks"
        term.keys("Enter")
        got = bob.recv_until(lambda e: e["type"] == "message" and e["from"] == "ana")
        assert got["text"] == "typed while bob talks"
        term.resize(60, 14)
        term.wait(lambda lines: len(lines) == 14 and "connected" in lines[-2]
                  and all(len(line.rstrip()) <= 60 for line in lines), "redrawn at 60x14")
        term.keys("C-c")
        assert term.exit_status() == 0
        left = bob.recv_until(lambda e: e["type"] == "presence" and e["event"] == "leave")
        assert left["name"] == "ana"


# ---------------------------------------------------------------------------------------
# Tried as a new user would (issue 18): each step's screen is saved with capture-pane
# under tests/artifacts/tui/<test>/ (ignored by git) so a person can look at them.

ARTIFACTS = Path(__file__).parent / "artifacts" / "tui"


@pytest.fixture
def captures(request: pytest.FixtureRequest) -> Callable[[Terminal, str], list[str]]:
    directory = ARTIFACTS / request.node.name.replace("/", "_")
    if directory.exists():
        for old in directory.iterdir():
            old.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    steps = count(1)

    def save(term: Terminal, step: str) -> list[str]:
        lines = term.screen()
        rule = "+" + "-" * term.width + "+"
        body = [f"|{line.ljust(term.width)}|" for line in lines]
        path = directory / f"{next(steps):02d}-{step}.txt"
        path.write_text("\n".join([rule, *body, rule]) + "\n", encoding="utf-8")
        print(f"capture: {path}")
        return lines

    return save


def test_tryout_long_lines_recall_and_a_pasted_page(
        daemon: Daemon, terminals: Callable[..., Terminal],
        captures: Callable[[Terminal, str], list[str]]) -> None:
    with ana_and_bob(daemon, terminals) as (term, bob):
        bob.say("a long line from bob, " * 12 + "THE END")
        lines = term.wait_text("THE END")
        wrapped = [line for line in lines if "a long line from bob" in line]
        assert len(wrapped) >= 3 and all(line.startswith("      ") for line in wrapped[1:])
        captures(term, "long-line-wrapped")
        term.type("short line")
        term.keys("Enter")
        term.type("x" * 150)
        term.keys("Enter")
        term.wait_text("x" * 74)
        term.keys("Up")
        lines = term.wait(lambda lines: input_line(lines).startswith("> xxx"), "the long line")
        assert input_line(lines).rstrip() == "> " + "x" * 76
        term.keys("Up")
        lines = term.wait(lambda lines: "short line" in input_line(lines), "the short line")
        assert input_line(lines).rstrip() == "> short line"
        captures(term, "short-line-recalled-after-a-long-one")
        term.keys("C-u")
        page = " ".join(f"pasted{i:04d}" for i in range(230))  # 2,529 characters
        term.tmux("set-buffer", "-b", "page", page)
        term.tmux("paste-buffer", "-b", "page", "-t", "0")
        lines = term.wait(lambda lines: input_line(lines).rstrip().endswith("pasted0229"),
                          "the end of the pasted page")
        captures(term, "page-pasted")
        term.keys("Enter")
        got = [bob.recv_until(lambda e: e["type"] == "message" and e["from"] == "ana"
                              and e["text"].startswith("pasted"))["text"] for _ in range(2)]
        assert " ".join(got) == page  # split at a space into two messages, nothing lost
        lines = term.wait(lambda lines: any("pasted0229" in line for line in lines[:-2]),
                          "the second part in the pane")
        assert input_line(lines).rstrip() == ">"
        captures(term, "page-sent-as-two-messages")


def test_tryout_kick_keeps_the_window_and_join_comes_back(
        daemon: Daemon, terminals: Callable[..., Terminal],
        captures: Callable[[Terminal, str], list[str]]) -> None:
    from test_client_plain import admin

    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        bob.say("said before you came")
        term = terminals(join_args(daemon, "ana"))
        lines = in_room(term)
        history = next(i for i, line in enumerate(lines) if "said before you came" in line)
        note = next(i for i, line in enumerate(lines) if "You are in room 1234" in line)
        assert history < note  # the room's history comes before "You are in room"
        captures(term, "joined-after-history")
        bob.say("the conversation so far")
        term.wait_text("bob: the conversation so far")
        admin(daemon, "kick", "1234", "ana", "--reason", "testing kicks")
        lines = term.wait_text("Type /join to join room 1234 again")
        screen = "\n".join(lines)
        assert "bob: the conversation so far" in screen
        assert "The administrator removed you from the room: testing kicks" in screen
        assert "not in the room" in status_line(lines)
        captures(term, "kicked-window-kept")
        term.type("/join")
        term.keys("Enter")
        back = bob.recv_until(lambda e: e["type"] == "presence" and e["event"] == "join")
        assert back["name"] == "ana"
        lines = term.wait(lambda lines: sum("You are in room 1234 as ana" in line
                                            for line in lines) == 2, "the second join")
        screen = "\n".join(lines)
        # The history replay of the same room shows nothing twice.
        assert screen.count("bob: said before you came") == 1
        assert screen.count("bob: the conversation so far") == 1
        captures(term, "joined-again")
        term.type("/names")
        term.keys("Enter")
        term.wait_text("In room 1234: ana, bob")
        term.type("/nick bob")
        term.keys("Enter")
        term.wait_text("The name 'bob' is already taken in this room")
        lines = term.wait(lambda lines: "connected" in status_line(lines)
                          and "Back" not in lines[-3], "back as ana")
        term.type("/nick anna")
        term.keys("Enter")
        joined = bob.recv_until(lambda e: e["type"] == "presence" and e["event"] == "join"
                                and e["name"] == "anna")
        assert joined["name"] == "anna"
        term.wait_text("You are in room 1234 as anna")
        captures(term, "nick-changed")
        term.keys("C-d")
        assert term.exit_status() == 0


def test_tryout_standby_and_a_frozen_server_say_why_and_count_down(
        start_daemon: Callable[..., Daemon], terminals: Callable[..., Terminal],
        captures: Callable[[Terminal, str], list[str]]) -> None:
    import socket

    first = start_daemon()
    port = first.tcp[1]
    term = terminals(["--server", f"127.0.0.1:{port}", "--pin", "1234", "--name",
                      "ana-with-a-long-name"], width=80)
    in_room(term)
    first.stop()
    second = start_daemon(args=["--port", str(port), "--initial-state", "standby"])
    lines = term.wait(lambda lines: "server in standby" in status_line(lines),
                      "the standby reason in the status line", timeout=30)
    assert re.search(r"reconnecting in \d+ s: server in standby", status_line(lines))
    assert "in standby" in "\n".join(lines[:-2])  # said once in the pane as well
    captures(term, "standby-at-80-columns")
    second.stop()
    # A frozen server: the kernel accepts the connection, nothing ever answers.
    with socket.socket() as frozen:
        frozen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        frozen.bind(("127.0.0.1", port))
        frozen.listen(8)
        lines = term.wait(lambda lines: "gives up in" in status_line(lines),
                          "a connect that counts down", timeout=30)
        assert re.search(r"connecting \(gives up in \d+ s\)", status_line(lines))
        captures(term, "frozen-server-counting-down")
    term.keys("C-c")  # not in the room: leaves at once
    assert term.exit_status() == 0


def test_tryout_no_server_asks_for_an_address(
        daemon: Daemon, terminals: Callable[..., Terminal],
        captures: Callable[[Terminal, str], list[str]]) -> None:
    from test_client_support import unused_udp_port

    term = terminals(["--discovery-address", f"127.0.0.1:{unused_udp_port()}",
                      "--discovery-timeout", "0.3", "--pin", "1234", "--name", "ana"])
    term.wait_text("Enter to search again")
    captures(term, "no-server-found")
    term.keys("Enter")
    term.wait(lambda lines: sum("Enter to search again" in line for line in lines) >= 2,
              "a second search")
    term.type(f"127.0.0.1:{daemon.tcp[1]}")
    term.keys("Enter")
    in_room(term)
    captures(term, "joined-by-typed-address")


def test_ctrl_d_at_the_pin_prompt_ends_on_a_line_of_its_own(
        daemon: Daemon, terminals: Callable[..., Terminal]) -> None:
    term = terminals(["--server", f"127.0.0.1:{daemon.tcp[1]}"])
    term.wait_text("Enter the PIN of the room you want to join:")
    term.keys("C-d")
    assert term.exit_status() == 1
    lines = term.wait_text("No room PIN given")
    assert any(line.startswith("lanchat: No room PIN given") for line in lines)


def test_a_closed_room_keeps_the_window_and_another_room_can_be_joined(
        daemon: Daemon, terminals: Callable[..., Terminal],
        captures: Callable[[Terminal, str], list[str]]) -> None:
    from test_client_plain import admin

    term = terminals(join_args(daemon, "ana"))
    in_room(term)
    term.type("before the close")
    term.keys("Enter")
    term.wait_text("ana: before the close")
    admin(daemon, "close", "1234", "--reason", "lesson over")
    lines = term.wait_text("The administrator closed the room: lesson over")
    assert "ana: before the close" in "\n".join(lines)
    term.type("nobody hears this")
    term.keys("Enter")
    lines = term.wait_text("Not in a room: type /join to join again.")
    assert input_line(lines).rstrip() == "> nobody hears this"  # kept, not lost
    captures(term, "room-closed")
    term.keys("C-u")
    with daemon.json_client() as bob:
        bob.join("5678", "bob")
        term.type("/join 5678")
        term.keys("Enter")
        lines = in_room(term)
        assert "room 5678" in status_line(lines)
        term.type("in the other room")
        term.keys("Enter")
        got = bob.recv_until(lambda e: e["type"] == "message" and e["from"] == "ana")
        assert got["text"] == "in the other room"
    captures(term, "joined-another-room")
    term.keys("C-c")
    assert term.exit_status() == 0

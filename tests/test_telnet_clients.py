"""People with real Telnet programs in a terminal, against the real daemon (issue 19).

Each program runs in a pseudo-terminal the test drives like a person at a keyboard:
Debian's ``telnet`` in its default line mode and after ``mode character``, and PuTTY's
``plink -telnet`` (the same Telnet code as PuTTY on Windows).  The person joins by PIN
and name at the first try, corrects a typo with Backspace, chats both ways with a
member using a raw TCP connection (as with ``nc``), and leaves with ``/quit``.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Callable

import pytest
from lanchat_testing import Daemon

TIMEOUT = 10.0
ERASE = b"\x7f"  # what the Backspace key sends in a terminal (stty erase ^?)


class Terminal:
    """A program in a pseudo-terminal: ``type`` keys, ``expect`` what the screen shows."""

    def __init__(self, argv: list[str], home: Path) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
               "TERM": "xterm", "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=str(home),
            start_new_session=True, preexec_fn=_take_terminal, close_fds=True)
        os.close(slave)
        self.screen = b""
        self.seen = 0  # how much of the screen earlier expects consumed

    def type(self, keys: bytes) -> None:
        for key in keys:  # one key at a time, as a person types
            os.write(self.master, bytes([key]))

    def _read(self, until: float) -> bool:
        left = until - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([self.master], [], [], left)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the program closed the terminal
                data = b""
            if not data:
                return False
            self.screen += data
        return True

    def expect(self, pattern: bytes, timeout: float = TIMEOUT) -> bytes:
        """Wait until the screen shows ``pattern`` (a regular expression) after what
        earlier calls matched; returns the screen from there to the match's end."""
        regex = re.compile(pattern)
        until = time.monotonic() + timeout
        while True:
            found = regex.search(self.screen, self.seen)
            if found:
                shown = self.screen[self.seen:found.end()]
                self.seen = found.end()
                return shown
            if not self._read(until):
                raise AssertionError(f"{pattern!r} not shown; the screen:\n"
                                     f"{self.screen.decode('utf-8', 'replace')}")

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        until = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < until:
            self._read(min(until, time.monotonic() + 0.1))
        return self.proc.wait(max(0.1, until - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def _take_terminal() -> None:
    """In the child: make its pseudo-terminal the controlling one (as a login does)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


# Each way a person starts: (program, its argv for host and port, a command typed at
# telnet's prompt after connecting).
def _telnet(host: str, port: int) -> list[str]:
    return ["telnet", host, str(port)]


def _plink(host: str, port: int) -> list[str]:
    return ["plink", "-telnet", "-P", str(port), host]


CLIENTS: dict[str, tuple[str, Callable[[str, int], list[str]], bytes]] = {
    "telnet-line-mode": ("telnet", _telnet, b""),
    "telnet-character-mode": ("telnet", _telnet, b"mode character\r"),
    "plink-telnet": ("plink", _plink, b""),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_a_person_with_a_telnet_program_joins_chats_and_quits(
        client: str, daemon: Daemon, tmp_path: Path) -> None:
    program, argv, setup = CLIENTS[client]
    if shutil.which(program) is None:  # .ci/run installs them (telnet, putty-tools)
        pytest.fail(f"{program} is not installed (apt-get install telnet putty-tools)")
    host, port = daemon.tcp
    with daemon.text_client() as member:
        member.join("4711", "nc-user")
        person = Terminal(argv(host, port), tmp_path)
        try:
            person.expect(rb"Enter the room PIN:")
            if setup:  # at telnet's own prompt, once it is shown
                person.type(b"\x1d")
                person.expect(rb"telnet> ")
                person.type(setup)
            # A typo in the PIN and one in the name, each corrected with Backspace.
            person.type(b"47" + b"9" + ERASE + b"11\r")
            shown = person.expect(rb"Enter your name:")
            person.type(b"bpo" + ERASE + ERASE + b"ob\r")
            shown += person.expect(rb"\* You are in room 4711 as bob\. Here: bob, nc-user\.")
            assert b"! " not in shown  # joined at the first try: no error line

            # Both ways with the nc member.
            member.read_until(lambda line: line.endswith("--> bob joined"))
            person.type(b"hello from " + program.encode() + b"\r")
            line = member.read_until(lambda line: "bob:" in line)
            assert line.endswith(f"bob: hello from {program}")
            member.send_line("hi bob")
            person.expect(rb"nc-user: hi bob")

            person.type(b"/quit\r")
            person.expect(rb"! Goodbye\.")
            person.wait_exit()
            member.read_until(lambda line: line.endswith("<-- bob left"))
        finally:
            person.close()
    entries = daemon.log_entries()
    assert not [e for e in entries if e.get("event") in ("protocol_error", "refused_join")]



def test_ctrl_c_in_telnet_abandons_the_line_and_nothing_else(
        daemon: Daemon, tmp_path: Path) -> None:
    """Linux telnet sends Ctrl-C as IAC IP IAC DO TIMING-MARK and shows nothing more
    until the timing mark is answered: the answer must come, every time."""
    if shutil.which("telnet") is None:
        pytest.fail("telnet is not installed (apt-get install telnet)")
    person = Terminal(_telnet(*daemon.tcp), tmp_path)
    try:
        person.expect(rb"Enter the room PIN:")
        for _ in range(2):
            person.type(b"99\x03")
            person.expect(rb"\^C")
        person.type(b"4711\r")
        shown = person.expect(rb"Enter your name:")
        person.type(b"carol\r")
        shown += person.expect(rb"\* You are in room 4711 as carol\.")
        assert b"! " not in shown
    finally:
        person.close()

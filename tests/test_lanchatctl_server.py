"""The daemon's control server driven pass by pass, with the clock as a parameter.

The loop is built but not run: each test turns the selector by hand and passes ``now``,
so timeouts are checked without waiting for them.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lanchat.protocol.control import Status
from lanchatd import admin, control
from lanchatd.config import Config
from lanchatd.control import REQUESTS_PER_PASS, ControlServer
from lanchatd.loop import READ, WRITE, Loop

HELLO_TIMEOUT = Config().control_hello_timeout
IDLE_TIMEOUT = Config().control_idle_timeout

HELLO = b'{"id":0,"cmd":"hello","versions":[1]}\n'


class Harness:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        config = Config(control_socket=str(tmp_path / "control.sock"), control_group="",
                        **settings)
        self.loop = Loop(config, reload=lambda: config, environ={})
        self.server = ControlServer(self.loop, None)
        self.loop.control = self.server
        self.now = time.time()
        self.clients: list[socket.socket] = []

    def connect(self) -> socket.socket:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(self.server.path)
        client.setblocking(False)
        self.clients.append(client)
        self.turn()
        return client

    def turn(self, passes: int = 1) -> None:
        """Passes of the loop as Loop.run makes them, at ``self.now``."""
        for _ in range(passes):
            # The loop's two clocks, as Loop._read_clocks sets them: here one and the same.
            self.loop.now = self.loop.mono = self.now
            for key, mask in self.loop.selector.select(0):
                if mask & READ:
                    key.data.on_readable(self.now)
                if mask & WRITE:
                    key.data.on_writable(self.now)
            self.server.after_pass(self.now)
            self.loop._run_timers(self.now)

    def at(self, now: float) -> None:
        """The clock moves to ``now``: timers fire, and what they queue is written."""
        self.now = now
        self.turn(2)

    def replies(self, client: socket.socket) -> list[dict[str, Any]]:
        data = b""
        while True:
            try:
                chunk = client.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                data += b"<EOF>\n"
                break
            data += chunk
        return [json.loads(line) if line != b"<EOF>" else {"eof": True}
                for line in data.splitlines()]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.server.shutdown(self.now)
        self.loop.selector.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


def test_a_connection_that_never_says_hello_is_closed(harness: Harness) -> None:
    client = harness.connect()
    start = harness.now
    harness.at(start + HELLO_TIMEOUT - 0.01)
    assert harness.replies(client) == []
    harness.at(start + HELLO_TIMEOUT)
    assert harness.replies(client) == [
        {"id": None, "ok": False, "error": {"code": 106, "name": "idle_timeout", "message":
                                            "Closing: no hello within 10 seconds."}},
        {"eof": True}]
    entry = harness.loop.activity.tail(1)[0]
    assert entry["event"] == "control_closed" and entry["reason"] == "idle_timeout"
    assert entry["actor"].startswith("uid=")
    assert harness.server.conns == set()


def test_the_control_limits_are_the_configured_ones(tmp_path: Path) -> None:
    harness = Harness(tmp_path, control_hello_timeout=0.5, control_idle_timeout=2.0,
                      control_max_connections=2)
    try:
        silent, quiet = harness.connect(), harness.connect()
        quiet.sendall(HELLO)
        harness.turn()
        assert harness.replies(quiet)[0]["result"]["version"] == 1
        # Both places taken: a newcomer takes the place of the one silent longest, the
        # one that never said hello (issue 11: it used to be told busy).
        start = harness.now
        extra = harness.connect()
        assert harness.replies(silent) == [
            {"id": None, "ok": False, "error": {
                "code": 106, "name": "idle_timeout", "message": "Closing: no hello, and all "
                "2 control connections were taken when another one came; the one silent "
                "longest makes room."}}, {"eof": True}]
        harness.at(start + 0.5)
        assert harness.replies(extra)[0]["error"]["message"] == (
            "Closing: no hello within 0.5 seconds.")
        assert harness.replies(quiet) == []
        harness.at(start + 2.0)
        assert harness.replies(quiet)[0]["error"]["message"] == (
            "Closing: no request for 2 seconds.")
    finally:
        harness.close()


def test_a_quiet_connection_is_closed_but_a_log_follower_is_not(harness: Harness) -> None:
    quiet = harness.connect()
    follower = harness.connect()
    quiet.sendall(HELLO)
    follower.sendall(HELLO + b'{"id":1,"cmd":"log","n":0,"follow":true}\n')
    harness.turn()
    assert [r["id"] for r in harness.replies(quiet)] == [0]
    assert [r["id"] for r in harness.replies(follower)] == [0, 1]

    start = harness.now
    harness.at(start + IDLE_TIMEOUT / 2)
    quiet.sendall(b'{"id":2,"cmd":"rooms"}\n')  # activity moves the deadline
    harness.turn()
    assert harness.replies(quiet)[0]["result"] == {"rooms": []}
    harness.at(start + IDLE_TIMEOUT + 1)
    assert harness.replies(quiet) == []
    harness.at(start + IDLE_TIMEOUT * 1.5 + 1)
    assert harness.replies(quiet)[-1] == {"eof": True}
    harness.at(start + IDLE_TIMEOUT * 5)
    harness.loop.activity.record(harness.now, "test_event")
    harness.turn()
    streamed = harness.replies(follower)
    assert [r["entry"]["event"] for r in streamed if "entry" in r][-1] == "test_event"
    assert len(harness.server.conns) == 1


def test_requests_are_served_a_share_per_pass(harness: Harness) -> None:
    client = harness.connect()
    client.sendall(HELLO + b"".join(b'{"id":%d,"cmd":"rooms"}\n' % i for i in range(1, 101)))
    harness.turn()
    first = harness.replies(client)
    assert len(first) == REQUESTS_PER_PASS
    harness.turn(10)
    rest = harness.replies(client)
    assert [r["id"] for r in first + rest] == list(range(101))


def test_a_bug_in_one_command_fails_that_request_only(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> Any:
        raise KeyError("oops")

    monkeypatch.setitem(harness.server.commands, Status,
                        admin.Command(Status, broken))
    client = harness.connect()
    client.sendall(HELLO + b'{"id":1,"cmd":"status"}\n{"id":2,"cmd":"rooms"}\n')
    harness.turn()
    _hello, failed, served = harness.replies(client)
    assert failed["id"] == 1 and failed["error"]["name"] == "internal_error"
    assert "KeyError" in failed["error"]["message"]
    assert served == {"id": 2, "ok": True, "result": {"rooms": []}}
    assert harness.loop.activity.tail(1)[0]["event"] == "internal_error"


def test_a_fault_caught_by_the_loop_closes_that_connection_only(harness: Harness) -> None:
    failing = harness.connect()
    other = harness.connect()
    other.sendall(HELLO)
    harness.turn()
    conn = next(c for c in harness.server.conns if not c.session.hello_done)
    harness.loop._contain(conn, RuntimeError("boom"), harness.now)
    harness.turn()
    replies = harness.replies(failing)
    assert replies[0]["error"]["name"] == "internal_error" and replies[-1] == {"eof": True}
    assert harness.replies(other)[0]["result"]["version"] == 1
    assert len(harness.server.conns) == 1


def test_a_client_that_only_writes_stalls_only_itself(harness: Harness) -> None:
    hog = harness.connect()
    polite = harness.connect()
    for _ in range(5):
        harness.loop.activity.record(harness.now, "padding", text="x" * 1900)
    hog.sendall(HELLO)
    requests = b'{"id":1,"cmd":"log"}\n' * 500
    blocked = 0
    for _ in range(5000):  # send requests and never read the answers
        try:
            hog.send(requests)
            blocked = 0
        except BlockingIOError:
            blocked += 1
            if blocked > 3:
                break  # the daemon has stopped reading from the hog
        harness.turn()
    assert blocked > 3
    harness.turn(50)
    [conn] = [c for c in harness.server.conns if c.session.hello_done]
    assert not conn.mask & READ  # nothing more is read from it...
    assert len(conn.out) < 2 * control.OUTPUT_LIMIT  # ...so what waits for it is bounded
    polite.sendall(HELLO + b'{"id":5,"cmd":"rooms"}\n')
    harness.turn(3)
    assert [r["id"] for r in harness.replies(polite)] == [0, 5]

"""The control socket under attack: garbage, oversized requests, silence, crowds."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

import pytest
from reliability_kit import Scenario, control_call

from lanchat.protocol import control

HELLO = b'{"id":1,"cmd":"hello","versions":[1]}\n'
MB = 1024 * 1024


class ControlPeer:
    """A raw control-socket connection that reads replies in the background."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10.0)
        self.sock.connect(path)
        self.sock.settimeout(60.0)  # the reader's bound; longer than any daemon timeout
        self.replies: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                self.replies += [json.loads(line) for line in lines]
        except OSError:
            pass
        self.closed.set()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_closed(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        assert self.closed.wait(timeout), f"still open; replies so far {self.replies[-3:]}"
        return self.replies

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread
        self.sock.close()


def _error_names(replies: list[dict[str, Any]]) -> list[str]:
    return [r["error"]["name"] for r in replies if r.get("ok") is False]


GARBAGE = [b"\xff\xfe", b"[]", b"null", b"{", b'{"cmd":"status"}', b'{"id":-1,"cmd":"status"}',
           b'{"id":true,"cmd":"status"}', b'{"id":7,"cmd":5}', b'{"id":8,"cmd":"rm -rf"}',
           b'{"id":9,"cmd":"kick","room":"12a4","name":"x"}', b'{"id":10,"cmd":"status","x":1}',
           b'{"id":11,"cmd":"set_state","state":"\\u202estopped"}', b'{"a":' * 5000,
           b'{"id":12,"cmd":"announce","text":"\\u001b[2J"}', b'{"id":13,"cmd":"log","n":-5}']


def test_control_socket_garbage(scenario: Scenario) -> None:
    """Every bad request gets a numbered error; past MAX_ERRORS the connection is told
    and closed; the administrator's next connection works, and nothing was changed."""
    scenario.load = f"20 control connections x 30 bad requests ({len(GARBAGE)} kinds)"
    daemon = scenario.start()
    assert daemon.control is not None
    with scenario.steady_client():
        peers = [ControlPeer(daemon.control) for _ in range(20)]
        for i, peer in enumerate(peers):
            if i % 2:
                peer.send(HELLO)
            peer.send(b"".join(GARBAGE[n % len(GARBAGE)] + b"\n" for n in range(30)))
        for peer in peers:
            replies = peer.wait_closed()
            names = _error_names(replies)
            assert names[-1] == "too_many_errors", names
            assert all(name in {c.wire_name for c in control.Code} for name in names)
            peer.close()
        status = control_call(daemon, "status")
        assert status["state"] == "active"
    scenario.check_memory(growth_mb=16)
    scenario.alive()


def test_control_socket_oversized_requests(scenario: Scenario) -> None:
    """10 MB without a newline: the sender is told request_too_large and closed; memory
    stays flat."""
    scenario.load = "5 control connections send 10 MB with no newline"
    daemon = scenario.start()
    assert daemon.control is not None
    with scenario.steady_client():
        peers = [ControlPeer(daemon.control) for _ in range(5)]

        def flood(peer: ControlPeer) -> None:
            peer.send(HELLO)
            try:
                for _ in range(40):
                    peer.send(b"x" * (256 * 1024))
            except OSError:
                pass  # closed by the daemon once it had said why: expected

        senders = [threading.Thread(target=flood, args=(p,), daemon=True) for p in peers]
        for thread in senders:
            thread.start()
        for peer in peers:
            assert _error_names(peer.wait_closed()) == ["request_too_large"], peer.replies
        for thread in senders:
            thread.join(15)
        for peer in peers:
            peer.close()
        assert control_call(daemon, "status")["state"] == "active"
    scenario.check_memory(growth_mb=16)
    scenario.alive()


@pytest.mark.slow
def test_control_socket_silent_crowd(scenario: Scenario) -> None:
    """Connections that never speak fill the control socket's slots: one more is told
    'busy'; each silent one is told and closed after the hello timeout, and the
    administrator gets in again.  Chat never notices."""
    from lanchatd.control import HELLO_TIMEOUT, MAX_CONNECTIONS

    scenario.load = (f"{MAX_CONNECTIONS} control connections that never speak "
                     f"(hello timeout {HELLO_TIMEOUT:g} s), then one more")
    daemon = scenario.start()
    assert daemon.control is not None
    with scenario.steady_client():
        opened = time.monotonic()
        silent = [ControlPeer(daemon.control) for _ in range(MAX_CONNECTIONS)]
        extra = ControlPeer(daemon.control)
        assert _error_names(extra.wait_closed()) == ["busy"], extra.replies
        extra.close()
        for peer in silent:
            assert _error_names(peer.wait_closed(HELLO_TIMEOUT + 10)) == ["idle_timeout"]
            peer.close()
        held = time.monotonic() - opened
        assert HELLO_TIMEOUT - 1 <= held <= HELLO_TIMEOUT + 10, held
        assert control_call(daemon, "status")["state"] == "active"
    scenario.check_memory(growth_mb=16)
    scenario.alive()


def test_control_socket_many_at_once(scenario: Scenario) -> None:
    """100 administrators asking at the same time are all answered."""
    scenario.load = "100 control connections at once, hello + status + rooms + log each"
    daemon = scenario.start()
    assert daemon.control is not None
    with scenario.steady_client():
        peers = [ControlPeer(daemon.control) for _ in range(100)]
        for peer in peers:
            peer.send(HELLO + b'{"id":2,"cmd":"status"}\n{"id":3,"cmd":"rooms"}\n'
                      b'{"id":4,"cmd":"log","n":50}\n')
            peer.sock.shutdown(socket.SHUT_WR)
        for peer in peers:
            replies = peer.wait_closed()
            assert [r["id"] for r in replies] == [1, 2, 3, 4], replies
            assert all(r["ok"] for r in replies), replies
            peer.close()
    scenario.check_memory(growth_mb=16)
    scenario.alive()
    assert os.path.exists(daemon.control)

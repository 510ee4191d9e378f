"""Discovery over UDP against the real daemon, on loopback only.

Probes go by unicast to 127.0.0.1, or by broadcast to 127.255.255.255 (the loopback
network's broadcast address, which never leaves the machine).  A datagram that must
*not* be answered is followed by one that must, from the same socket: the daemon
handles its socket's datagrams in order, so an answer to the first would arrive first.
"""

from __future__ import annotations

import json
import socket
from typing import Callable

import pytest
from lanchat_testing import Daemon, udp_query

TIMEOUT = 5.0


def probe(nonce: str) -> bytes:
    return json.dumps({"type": "discover", "version": 1, "nonce": nonce}).encode()


def local(daemon: Daemon) -> tuple[str, int]:
    """The discovery port at 127.0.0.1 (the readiness line names 0.0.0.0, all addresses)."""
    return ("127.0.0.1", daemon.udp[1])


class Prober:
    """One UDP socket that sends probes and reads the answers, in order."""

    def __init__(self, source: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(TIMEOUT)

    def send(self, addr: tuple[str, int], data: bytes) -> None:
        self.sock.sendto(data, addr)

    def answer(self, timeout: float = TIMEOUT) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096)
        except socket.timeout:
            return None

    def close(self) -> None:
        self.sock.close()


def test_legacy_probe_is_answered_server_here_exactly(daemon: Daemon) -> None:
    assert udp_query(local(daemon), b"DISCOVER_SERVER") == b"SERVER_HERE"
    assert udp_query(local(daemon), b"DISCOVER_SERVER\n") == b"SERVER_HERE"  # echo | nc -u


def test_printf_discover_server_into_nc_u_prints_server_here(daemon: Daemon) -> None:
    """``printf 'DISCOVER_SERVER' | nc -u -w1 127.0.0.1 PORT`` prints ``SERVER_HERE``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nc:
        nc.settimeout(1.0)  # -w1
        nc.connect(local(daemon))
        nc.send(b"DISCOVER_SERVER")
        assert nc.recv(4096) == b"SERVER_HERE"


def test_json_probe_gets_the_announcement(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(args=["--name", "Lab 3"])
    assert daemon.http is not None  # the browser client's port is announced too
    reply = udp_query(local(daemon), probe("n-123"))
    assert reply is not None
    announce = json.loads(reply)
    welcome = daemon.json_client().welcome or {}
    assert announce == {
        "type": "announce", "version": 1, "nonce": "n-123",
        "server_id": welcome["server_id"], "name": "Lab 3", "port": daemon.tcp[1],
        "state": "active", "server_version": "0.1.0", "http_port": daemon.http[1],
        # The TLS port and the key's fingerprint travel with the announce (issue 13).
        "tls_port": daemon.tls[1] if daemon.tls else None,
        "tls_fingerprint": daemon.fingerprint,
    }
    assert daemon.tls is not None and daemon.fingerprint.startswith("SHA256:")


def test_announcement_carries_the_state(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(args=["--initial-state", "standby"])
    reply = udp_query(local(daemon), probe("s"))
    assert reply is not None and json.loads(reply)["state"] == "standby"


def test_server_id_is_the_same_across_restarts(start_daemon: Callable[..., Daemon],
                                               tmp_path_factory: pytest.TempPathFactory
                                               ) -> None:
    state = tmp_path_factory.mktemp("state")

    def server_id(daemon: Daemon) -> str:
        reply = udp_query(local(daemon), probe("id"))
        assert reply is not None
        return str(json.loads(reply)["server_id"])

    first = start_daemon(args=["--state-dir", str(state)])
    first_id = server_id(first)
    assert first.stop() == 0
    second = start_daemon(args=["--state-dir", str(state)])
    assert server_id(second) == first_id
    assert (state / "server-id").read_text().strip() == first_id
    other = start_daemon()  # its own state directory: another server
    assert server_id(other) != first_id


GARBAGE = [
    b"DISCOVER_SERVER" + b" " * 600,  # oversized
    b'{"type":"discover","version":1,"nonce":"' + b"n" * 600 + b'"}',  # oversized JSON
    b"discover_server", b"\x00\xff\xfe", b"{", b"[]", b'{"type":"discover"}',
    b'{"type":"announce","nonce":"x"}', b"",
]


def test_oversized_or_malformed_probes_are_ignored(daemon: Daemon) -> None:
    prober = Prober()
    for i, garbage in enumerate(GARBAGE):
        prober.send(local(daemon), garbage)
        prober.send(local(daemon), probe(f"after{i}"))
        first = prober.answer()
        assert first is not None and json.loads(first)["nonce"] == f"after{i}", garbage
    prober.close()


def test_replies_are_rate_limited_per_source(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[discovery]\ndiscovery_rate = 0.01\ndiscovery_burst = 3\n")
    noisy = Prober("127.0.0.1")
    for i in range(8):
        noisy.send(local(daemon), probe(f"n{i}"))
    quiet = Prober("127.0.0.2")  # another source is not affected
    quiet.send(local(daemon), probe("quiet"))
    reply = quiet.answer()
    assert reply is not None and json.loads(reply)["nonce"] == "quiet"
    # The daemon read the noisy probes before the quiet one: their answers are sent.
    answers = []
    while (data := noisy.answer(timeout=0.5)) is not None:
        answers.append(json.loads(data)["nonce"])
    assert answers == ["n0", "n1", "n2"]
    noisy.close()
    quiet.close()


def test_a_source_outside_discovery_allow_gets_nothing(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon('[discovery]\ndiscovery_allow = ["10.0.0.0/8"]\n')
    assert udp_query(local(daemon), b"DISCOVER_SERVER", timeout=0.5) is None
    assert udp_query(local(daemon), probe("x"), timeout=0.5) is None
    assert daemon.text_client().greeting.startswith("LANCHAT/1 ready ")  # it is serving


def test_discovery_allow_is_per_source_address(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon('[discovery]\ndiscovery_allow = ["127.0.0.2/32"]\n')
    outsider = Prober("127.0.0.1")
    outsider.send(local(daemon), probe("outsider"))
    insider = Prober("127.0.0.2")
    insider.send(local(daemon), probe("insider"))
    reply = insider.answer()
    assert reply is not None and json.loads(reply)["nonce"] == "insider"
    assert outsider.answer(timeout=0.5) is None
    outsider.close()
    insider.close()


@pytest.mark.parametrize(("payload", "expected"), [
    (probe("bcast"), "bcast"), (b"DISCOVER_SERVER", None)])
def test_a_broadcast_probe_on_the_loopback_network_is_answered(
        daemon: Daemon, payload: bytes, expected: str | None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.bind(("127.0.0.1", 0))
        s.settimeout(TIMEOUT)
        s.sendto(payload, ("127.255.255.255", daemon.udp[1]))
        data, sender = s.recvfrom(4096)
    if expected is None:
        assert data == b"SERVER_HERE"
    else:
        assert json.loads(data)["nonce"] == expected
    assert sender == ("127.0.0.1", daemon.udp[1])  # answered by unicast from the server

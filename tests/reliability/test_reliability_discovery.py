"""Discovery under attack: oversized, malformed and flooding datagrams."""

from __future__ import annotations

import os
import selectors
import socket
import time

import pytest
from reliability_kit import Scenario, loopback_sources

from lanchat.protocol import discovery

RATE, BURST = 5.0, 10  # the defaults of discovery_rate and discovery_burst


def _udp(source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    return sock


def _replies(sock: socket.socket, quiet: float = 0.5) -> list[bytes]:
    """Every datagram that arrives until ``quiet`` seconds pass without one."""
    return _replies_to_many([sock], quiet)[sock]


def _replies_to_many(socks: list[socket.socket], quiet: float,
                     limit: float = 30.0) -> dict[socket.socket, list[bytes]]:
    out: dict[socket.socket, list[bytes]] = {s: [] for s in socks}
    sel = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            ready = sel.select(quiet)
            if not ready:
                break
            for key, _ in ready:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                out[sock].append(sock.recv(4096))
    finally:
        sel.close()
    for sock in socks:
        sock.setblocking(True)
    return out


def _udp_receive_buffer_errors() -> int:
    """Datagrams the kernel dropped for want of receive buffer (/proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def _ask(sock: socket.socket, addr: tuple[str, int], nonce: str, tries: int = 5) -> bool:
    """A polite prober: one probe, asked again (like a client) if no answer in 0.3 s."""
    for _ in range(tries):
        sock.sendto(discovery.encode_probe(nonce), addr)
        sock.settimeout(0.3)
        try:
            while True:
                answer = discovery.parse_announce(sock.recvfrom(4096)[0])
                if answer.nonce == nonce:
                    return True
        except socket.timeout:
            continue
    return False


def test_oversized_and_malformed_datagrams_get_no_answer(scenario: Scenario) -> None:
    """Garbage is never answered (no reflection); a valid probe after it still is."""
    garbage = [os.urandom(n) for n in (1, 7, 100, 511, 513, 2048)]
    garbage += [b"x" * 60000, b"DISCOVER_SERVER" * 40, b"DISCOVER_SERVERX", b"discover_server",
                b"[]", b"null", b'"discover"', b'{"type":"discover"}',
                b'{"type":"discover","nonce":""}', b'{"type":"discover","nonce":5}',
                b'{"type":"discover","nonce":"' + b"n" * 65 + b'"}',
                b'{"type":"discover","nonce":"n","version":0}',
                b'{"type":"discover","nonce":"n","version":"1"}',
                b'{"type":"announce","nonce":"n"}', b'{"type":"discover","nonce":"\xff"}',
                b"[" * 500, b'{"a":' * 100, b"\x00" * 512]
    rounds = 20
    scenario.load = f"{len(garbage) * rounds} bad datagrams ({len(garbage)} kinds), 1-60,000 bytes"
    daemon = scenario.start()
    with scenario.steady_client(), _udp() as sock:
        for _ in range(rounds):
            for datagram in garbage:
                sock.sendto(datagram, daemon.udp)
        assert _replies(sock) == [], "the daemon answered garbage"
        # Valid, if unusual, probes are answered: escapes, a lone surrogate, 64 emoji.
        for nonce in ("\ud800", "\U0001f600" * 64, "\u202e\x00"):
            sock.sendto(discovery.encode_probe(nonce), daemon.udp)
            sock.settimeout(2.0)
            answer = discovery.parse_announce(sock.recvfrom(4096)[0])
            assert answer.nonce == nonce
        sock.sendto(b"DISCOVER_SERVER\n", daemon.udp)
        assert sock.recvfrom(4096)[0] == b"SERVER_HERE"
    scenario.check_memory(growth_mb=8)
    scenario.alive()


@pytest.mark.slow
def test_a_probe_flood_stays_rate_limited_and_others_are_answered(scenario: Scenario) -> None:
    """One source floods: it gets at most burst + rate x time answers; a polite source
    probing at the same time is answered (asking again, as clients do, when the kernel
    dropped its datagram because the flood filled the socket's buffer)."""
    flood = 20000
    scenario.load = f"{flood} valid probes from one source as fast as possible"
    daemon = scenario.start()
    with scenario.steady_client(), _udp() as flooder, _udp("127.0.0.77") as polite:
        flooder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        probe = discovery.encode_probe("flood")
        polite_asked = polite_answered = 0
        started = time.monotonic()
        for i in range(flood):
            flooder.sendto(probe if i % 2 else b"DISCOVER_SERVER", daemon.udp)
            if i % 2000 == 0:
                polite_asked += 1
                polite_answered += _ask(polite, daemon.udp, f"polite{i}")
            if time.monotonic() - started > 20:
                break
        elapsed = time.monotonic() - started
        answers = _replies(flooder)
    allowed = BURST + RATE * (elapsed + 1.0)
    assert 1 <= len(answers) <= allowed, (len(answers), allowed)
    assert polite_answered == polite_asked
    scenario.load += f" ({elapsed:.1f} s); {len(answers)} answered"
    scenario.check_memory(growth_mb=8)
    scenario.alive()


@pytest.mark.slow
def test_probes_from_thousands_of_sources(scenario: Scenario) -> None:
    """More sources than the daemon tracks: each is answered within its own limit, and
    the table of sources stays bounded."""
    count, per_source = 6000, 3
    scenario.load = f"{count} loopback source addresses x {per_source} probes"
    daemon = scenario.start()
    sources = loopback_sources(count, second=20)
    answered = 0
    dropped_before = _udp_receive_buffer_errors()
    with scenario.steady_client():
        for start in range(0, count, 500):
            socks = [_udp(source) for source in sources[start:start + 500]]
            try:
                for n, sock in enumerate(socks):
                    for _ in range(per_source):
                        sock.sendto(b"DISCOVER_SERVER", daemon.udp)
                    if n % 20 == 19:
                        time.sleep(0.005)  # a LAN's pace, not one host's burst
                for got in _replies_to_many(socks, quiet=0.3).values():
                    assert len(got) <= per_source
                    answered += len(got)
            finally:
                for sock in socks:
                    sock.close()
    # Within its burst every source is answered, except for the datagrams the kernel
    # dropped because the daemon's receive buffer was full (that is UDP, not the daemon
    # refusing; the counter is the host's, so it may include drops of other programs).
    dropped = _udp_receive_buffer_errors() - dropped_before
    assert answered >= count * per_source - dropped, (answered, dropped)
    scenario.load += f"; {answered} answered, {dropped} dropped by the kernel"
    scenario.check_memory(growth_mb=8)
    scenario.alive()

"""Discovery: the address list (built without sending anything), the answer
bookkeeping, and real probes on loopback to zero, one and two daemons.

Every probe here goes to 127.255.255.255 (the loopback broadcast) or 127.0.0.1.  Each
test daemon has its own discovery port (two daemons cannot share one: the daemon does
not set SO_REUSEADDR on it), so a probe to two daemons goes to both ports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lanchat_testing import Daemon
from test_client_support import client_env, run_client, unused_udp_port

from lanchat.client import discovery
from lanchat.client.discovery import Interface
from lanchat.protocol import discovery as wire

LOOPBACK_BROADCAST = "127.255.255.255"


def test_targets_are_the_limited_broadcast_and_each_usable_interface() -> None:
    interfaces = [
        Interface("lo", "127.0.0.1", 8),
        Interface("eth0", "192.168.1.20", 24),
        Interface("eth0", "192.168.1.21", 24),  # a second address: the same broadcast
        Interface("tun0", "10.8.0.2", 32),  # point to point: no broadcast
        Interface("ptp", "10.9.0.0", 31),
        Interface("wlan0", "10.1.2.3", 16),
        Interface("link", "169.254.77.3", 24),
    ]
    assert discovery.broadcast_targets(interfaces) == [
        "255.255.255.255", "192.168.1.255", "10.1.255.255", "169.254.77.255"]
    assert discovery.broadcast_targets([]) == ["255.255.255.255"]


def test_interfaces_of_this_host_are_read_and_loopback_is_never_a_target() -> None:
    interfaces = discovery.list_interfaces()  # ifaddr reads them: nothing is sent
    assert any(i.address == "127.0.0.1" for i in interfaces)
    targets = discovery.default_targets()
    assert targets[0] == "255.255.255.255"
    assert not any(t.startswith("127.") for t in targets)
    assert len(targets) == len(set(targets))


def test_a_probe_that_could_not_be_sent_anywhere_does_not_wait() -> None:
    errors: list[str] = []
    started = time.monotonic()
    assert discovery.probe([("127.0.0.1", 0)], timeout=30.0, errors=errors) == []
    assert time.monotonic() - started < 10.0  # not the 30 s timeout
    assert errors and "127.0.0.1:0" in errors[0]


def test_with_no_network_a_local_daemon_is_still_found_without_the_long_wait(
        daemon: Daemon) -> None:
    # The broadcast target fails to send (port 0 is refused before anything leaves);
    # the daemon on this machine answers the probe sent to it in passing.
    found = discovery.probe([("127.0.0.1", 0)], timeout=30.0,
                            local=("127.0.0.1", daemon.udp[1]))
    assert [f.port for f in found] == [daemon.tcp[1]]
    started = time.monotonic()
    assert discovery.probe([("127.0.0.1", 0)], timeout=30.0,
                           local=("127.0.0.1", unused_udp_port())) == []
    assert time.monotonic() - started < 10.0  # the settle time, not the 30 s timeout


def announce(nonce: str, server_id: str, name: str = "lab", state: str = "active") -> bytes:
    return wire.encode_announce(wire.Announce(nonce, server_id, name, 5000, state, "0.1.0"))


def test_collector_keeps_matching_answers_once_and_settles_early() -> None:
    c = discovery.Collector("n1", started=10.0, timeout=2.0, settle=0.3)
    assert c.deadline() == 12.0
    assert c.answer(b"SERVER_HERE", ("192.168.1.5", 5001), 10.1) is None
    assert c.answer(announce("other", "s1"), ("192.168.1.5", 5001), 10.1) is None
    first = c.answer(announce("n1", "s1", "lab"), ("192.168.1.5", 5001), 10.1)
    assert first is not None and first.address == "192.168.1.5:5000"
    assert c.deadline() == 10.1 + 0.3
    # The same server again over another interface: merged.
    assert c.answer(announce("n1", "s1", "lab"), ("10.0.0.5", 5001), 10.2) is None
    assert c.answer(announce("n1", "s2", "annex", "standby"), ("192.168.1.6", 5001),
                    10.3) is not None
    assert c.deadline() == 10.3 + 0.3
    assert [(f.name, f.state) for f in c.results()] == [("annex", "standby"), ("lab", "active")]
    assert c.ignored == 2


def test_probe_with_no_daemon_finds_nothing() -> None:
    start = time.monotonic()
    assert discovery.probe([(LOOPBACK_BROADCAST, unused_udp_port())], 0.4) == []
    assert time.monotonic() - start >= 0.4


def test_probe_finds_one_daemon_and_stops_early(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(args=["--name", "lab"])
    start = time.monotonic()
    found = discovery.probe([(LOOPBACK_BROADCAST, daemon.udp[1])], 5.0)
    assert time.monotonic() - start < 2.0  # the answer set was clear long before 5 s
    assert [(f.name, f.host, f.port, f.state) for f in found] == [
        ("lab", "127.0.0.1", daemon.tcp[1], "active")]


def test_probe_by_unicast_too(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(args=["--name", "lab"])
    found = discovery.probe([("127.0.0.1", daemon.udp[1])], 3.0)
    assert [f.name for f in found] == ["lab"]


def start_pair(start_daemon: Callable[..., Daemon]) -> tuple[Daemon, Daemon, list[str]]:
    """Two daemons, the second in standby, and the client flags that probe both."""
    alpha = start_daemon(args=["--name", "alpha"])
    beta = start_daemon(args=["--name", "beta", "--initial-state", "standby"])
    flags = ["--discovery-address", f"{LOOPBACK_BROADCAST}:{alpha.udp[1]}",
             "--discovery-address", f"{LOOPBACK_BROADCAST}:{beta.udp[1]}"]
    return alpha, beta, flags


def test_probe_finds_two_daemons_one_in_standby(start_daemon: Callable[..., Daemon]) -> None:
    alpha, beta, _flags = start_pair(start_daemon)
    found = discovery.probe([(LOOPBACK_BROADCAST, alpha.udp[1]),
                             (LOOPBACK_BROADCAST, beta.udp[1])], 5.0)
    assert [(f.name, f.port, f.state) for f in found] == [
        ("alpha", alpha.tcp[1], "active"), ("beta", beta.tcp[1], "standby")]
    assert len({f.server_id for f in found}) == 2


def discovery_args(port: int) -> list[str]:
    return ["--discovery-address", LOOPBACK_BROADCAST, "--discovery-port", str(port)]


def test_discover_lists_servers_and_their_state(start_daemon: Callable[..., Daemon],
                                                tmp_path: Path) -> None:
    alpha, beta, flags = start_pair(start_daemon)
    result = run_client(["--discover", *flags], client_env(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("alpha", f"127.0.0.1:{alpha.tcp[1]}", "active"),
        ("beta", f"127.0.0.1:{beta.tcp[1]}", "standby")]


def test_discover_with_nothing_found_explains_the_likely_causes(tmp_path: Path) -> None:
    result = run_client(["--discover", *discovery_args(unused_udp_port()),
                         "--discovery-timeout", "0.3"], client_env(tmp_path))
    assert result.returncode == 1
    assert "Found no server on the LAN" in result.stderr
    assert "firewall" in result.stderr and "client isolation" in result.stderr
    assert "--server HOST[:PORT]" in result.stderr


def test_joining_by_discovery_without_a_terminal_takes_the_only_active_server(
        start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    alpha, beta, flags = start_pair(start_daemon)
    with alpha.json_client() as watcher:
        watcher.join("1234", "watcher")
        result = run_client([*flags, "--pin", "1234", "--name", "ci"],
                            client_env(tmp_path), input="found you\n")
        assert result.returncode == 0, result.stderr
        assert watcher.recv_type("message")["text"] == "found you"
    # Shown at its TLS address, the one the client would connect to.
    assert beta.tls is not None
    assert f"Found server at 127.0.0.1:{beta.tls[1]}: beta (in standby)" in result.stderr


def test_server_name_picks_and_a_standby_server_is_not_joined(
        start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    _alpha, _beta, flags = start_pair(start_daemon)
    refused = run_client([*flags, "--server-name", "BETA", "--pin", "1234",
                          "--name", "ci"], client_env(tmp_path), input="hello\n")
    assert refused.returncode == 1
    assert "beta" in refused.stderr and "in standby and accepts no new people" in \
        refused.stderr
    missing = run_client([*flags, "--server-name", "gamma", "--pin", "1234",
                          "--name", "ci"], client_env(tmp_path), input="hello\n")
    assert missing.returncode == 1
    assert "No server named 'gamma'" in missing.stderr and "alpha" in missing.stderr

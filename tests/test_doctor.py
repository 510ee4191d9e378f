"""``lanchat doctor`` without a LAN: its conclusions from a report, its TCP checks over
loopback, and the daemon's dual-stack sockets the IPv6 path relies on.

The namespace LANs where each conclusion really happens are in ``test_doctor_lan.py``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from lanchat_testing import Daemon, JsonClient, udp_query
from test_client_support import client_env

from lanchat.client import discovery, doctor, i18n, netif
from lanchat.protocol import discovery as wire

LAN = doctor.InterfaceInfo("lan0", True, False, (
    doctor.AddressInfo("192.168.1.10", 24, "global", "192.168.1.255"),
    doctor.AddressInfo("fe80::1", 64, "link", None)))
LOOPBACK = doctor.InterfaceInfo("lo", True, True, (
    doctor.AddressInfo("127.0.0.1", 8, "host", None),))


def report(servers: list[doctor.ServerInfo], *, interfaces: list[doctor.InterfaceInfo]
           | None = None, probes: list[doctor.ProbeInfo] | None = None,
           host_checks: list[doctor.PortCheck] | None = None) -> doctor.Report:
    r = doctor.Report(
        5001, 2.0, [LOOPBACK, LAN] if interfaces is None else interfaces,
        [doctor.ProbeInfo("broadcast", "255.255.255.255:5001", "", None)]
        if probes is None else probes,
        [], doctor.MdnsInfo(False, "not asked for"), servers, host_checks or [])
    r.findings = doctor.diagnose(r)
    return r


def lab(state: str = "active", paths: tuple[str, ...] = ("broadcast",),
        chat: str = "open") -> doctor.ServerInfo:
    server = doctor.ServerInfo("s1", "lab", state, "0.1.0", "192.168.1.5", 5000)
    server.answers = [doctor.Answer(p, "t", "", "192.168.1.5", 1.0) for p in paths]
    server.checks = [doctor.PortCheck("chat", "192.168.1.5", 5000, chat)]
    return server


def codes(r: doctor.Report) -> list[str]:
    return [f.code for f in r.findings]


@pytest.fixture(autouse=True)
def english() -> None:
    i18n.setup({"LANGUAGE": "en"})


def test_a_reachable_active_server_is_ok() -> None:
    r = report([lab()])
    assert codes(r) == ["ok"] and r.ok


def test_standby_and_stopped_say_who_can_change_it() -> None:
    for state in ("standby", "stopped"):
        r = report([lab(state)])
        assert codes(r) == [f"server_{state}"] and not r.ok
        assert "lanchatctl start" in r.findings[0].next_step


def test_a_chat_port_that_refuses_or_times_out_names_the_firewall_rule() -> None:
    refused = report([lab(chat="refused")])
    assert codes(refused) == ["chat_port_blocked"]
    assert "refuses connections" in refused.findings[0].text
    timeout = report([lab(chat="timeout")])
    assert "a firewall drops it" in timeout.findings[0].text
    assert timeout.findings[0].next_step == (
        "On the server, allow it: sudo nft add rule inet filter input tcp dport 5000 accept "
        "(or: sudo ufw allow 5000/tcp).")


def test_a_closed_web_or_tls_port_beside_an_open_chat_port() -> None:
    server = lab()
    server.checks += [doctor.PortCheck("web", "192.168.1.5", 5080, "refused"),
                      doctor.PortCheck("tls", "192.168.1.5", 5443, "timeout")]
    r = report([server])
    assert codes(r) == ["web_port_blocked", "tls_port_blocked", "ok"] and r.ok
    assert r.findings[0].text == ("lab (192.168.1.5:5000): its web port 5080 does not answer "
                                  "(connection refused).")
    assert "tcp dport 5443 accept" in r.findings[1].next_step


def test_found_only_by_unicast_gives_the_address_to_use() -> None:
    r = report([lab(paths=("unicast",))])
    assert codes(r) == ["broadcast_blocked"]
    assert r.findings[0].next_step == "Connect to it by address: lanchat --server 192.168.1.5:5000"
    by_ipv6 = report([lab(paths=("ipv6",))])
    assert by_ipv6.findings[0].next_step == "Nothing to do: lanchat finds it that way too."


def test_nothing_answered() -> None:
    r = report([])
    assert codes(r) == ["no_server"]
    assert "udp dport 5001 accept" in r.findings[0].next_step
    unsent = report([], probes=[doctor.ProbeInfo("broadcast", "255.255.255.255:5001", "",
                                                 "Network is unreachable")])
    assert codes(unsent) == ["probe_not_sent"]
    lonely = report([], interfaces=[LOOPBACK], probes=[doctor.ProbeInfo(
        "broadcast", "255.255.255.255:5001", "", "Network is unreachable")])
    assert codes(lonely) == ["no_network"]


def test_a_chat_port_without_discovery() -> None:
    r = report([], host_checks=[doctor.PortCheck("chat", "192.168.1.5", 5000, "open", 0.3)])
    assert codes(r) == ["discovery_blocked"]
    assert "lanchat --server 192.168.1.5:5000" in r.findings[0].next_step


def test_the_report_reads_in_norwegian() -> None:
    i18n.setup({"LANGUAGE": "nb"})
    text = doctor.render_text(report([lab("standby")]))
    assert "Konklusjon:" in text and "i standby og tar ikke imot nye" in text


def test_json_report_is_complete() -> None:
    data = json.loads(doctor.render_json(report([lab()])))
    assert data["ok"] is True
    assert data["servers"][0]["paths"] == ["broadcast"]
    assert data["findings"][0]["code"] == "ok"


def test_connect_all_over_loopback() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        open_port = listener.getsockname()[1]
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            closed_port = unused.getsockname()[1]
        checks = doctor.connect_all([("chat", "127.0.0.1", open_port),
                                     ("chat", "127.0.0.1", closed_port),
                                     ("web", "not-an-address", 1)])
    assert [c.result for c in checks] == ["open", "refused", "error"]
    assert checks[0].ms is not None


def test_interfaces_show_scopes() -> None:
    loopback = [i for i in netif.interfaces() if i.loopback]  # reading sends nothing
    assert loopback and ("127.0.0.1", "host") in [(a.ip, a.scope) for a in loopback[0].ipv4]
    assert netif.Address("fe80::1", 64, 6).scope == "link"
    assert netif.Address("10.1.2.3", 24, 4).broadcast == "10.1.2.255"
    assert netif.Address("10.1.2.3", 31, 4).broadcast is None


def test_ipv6_targets_name_the_interface() -> None:
    interfaces = [netif.NetInterface("lo", 1, True, True, (netif.Address("::1", 128, 6),)),
                  netif.NetInterface("lan0", 2, True, False, (netif.Address("fe80::1", 64, 6),)),
                  netif.NetInterface("down0", 3, False, False,
                                     (netif.Address("fe80::2", 64, 6),))]
    assert discovery.ipv6_targets(interfaces, 5001) == [
        discovery.ProbeTarget("ff02::1%lan0", 5001, "ipv6", "lan0")]


def test_each_answer_says_which_probe_it_answers() -> None:
    target = discovery.ProbeTarget("192.168.1.255", 5001, "directed", "lan0")
    collector = discovery.Collector("base", 10.0, 2.0, nonces={"base-1": target})
    collector.sent_at[target] = 10.0
    data = wire.encode_announce(wire.Announce("base-1", "s1", "lab", 5000, "active", "0.1"))
    assert collector.answer(data, ("fe80::5", 5001, 0, 0), 10.01) is not None
    # The same server over IPv4 afterwards: IPv4 is the address kept.
    assert collector.answer(data, ("::ffff:192.168.1.5", 5001, 0, 0), 10.02) is None
    assert collector.results()[0].host == "192.168.1.5"
    assert [(s.target.path, round(s.seconds, 2)) for s in collector.sightings] == [
        ("directed", 0.01), ("directed", 0.02)]


# ------------------------------------------------------------------ the daemon's sockets


def test_the_default_host_is_dual_stack(tmp_path: Path) -> None:
    with Daemon(tmp_path, host="") as daemon:
        port = daemon.tcp[1]
        assert daemon.ready_line.split()[2] == f"tcp=[::]:{port}"
        for host in ("127.0.0.1", "::1"):
            client = JsonClient((host, port))
            client.join("1234", f"from-{host.replace(':', '')}")
            client.close()
        joins = [e for e in daemon.log_entries() if e["event"] == "join"]
        # An IPv4 client is logged as IPv4, not as ::ffff:127.0.0.1.
        assert [e["addr"].rsplit(":", 1)[0] for e in joins] == ["127.0.0.1", "[::1]"]
        udp = daemon.udp[1]
        assert udp_query(("127.0.0.1", udp), b"DISCOVER_SERVER") == b"SERVER_HERE"
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(b"DISCOVER_SERVER", ("::1", udp))
            assert s.recvfrom(64)[0] == b"SERVER_HERE"


def test_0_0_0_0_stays_ipv4_only(tmp_path: Path) -> None:
    with Daemon(tmp_path, host="0.0.0.0") as daemon:
        assert daemon.ready_line.split()[2].startswith("tcp=0.0.0.0:")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("::1", daemon.tcp[1]), timeout=2).close()


def test_doctor_command_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lanchat", "doctor", "--host", "[bad"],
                            capture_output=True, text=True, env=client_env(tmp_path),
                            timeout=30)
    assert result.returncode == 2 and "--host" in result.stderr
    helped = subprocess.run([sys.executable, "-m", "lanchat", "doctor", "--help"],
                            capture_output=True, text=True, env=client_env(tmp_path),
                            timeout=30)
    assert helped.returncode == 0 and "--no-mdns" in helped.stdout

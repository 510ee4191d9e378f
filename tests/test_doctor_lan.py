"""``lanchat doctor`` and ``lanchat`` on LANs of network namespaces that go wrong.

Each test builds its own LAN with the helpers of ``test_client_lan`` (a bridge in a
switch namespace, machines on veth pairs made inside their namespaces, so no probe can
reach a real interface) and breaks it one way:

* broadcasts dropped by nftables in the switch (IPv4 broadcast frames; ARP and IPv6
  pass), then IPv6 all-nodes multicast dropped too, with and without an mDNS responder
  on the server's machine;
* the server's chat port (or its discovery port) dropped by nftables on the server;
* the server in standby;
* a LAN with no IPv4 at all (link-local IPv6 only);
* the client's machine on two LANs, the default route on one of them.

The daemons run in their namespaces on the default discovery port and, as packaged,
with the default host (dual-stack).  For each the doctor's conclusion (its ``--json``
finding codes, and the next step in words) is asserted, and that ``lanchat`` finds the
server wherever some path reaches it.  tcpdump on the switch checks that the doctor
sends nothing but its probes, its mDNS query and its connects, and one run without any
capability (``setpriv``) that it needs no root.  The mDNS responder stands in for Avahi: a small
python-zeroconf process announcing ``_lanchat._tcp`` on the server's machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lanchat_testing import Daemon, env_with_repo
from test_client_lan import Lan, in_netns, ip, lanchat, require_root_and_ip, rows, run_in
from test_client_support import TIMEOUT, client_env

from lanchat.client.settings import DEFAULT_DISCOVERY_PORT

A = "169.254.77"
B = "169.254.78"

DROP_BROADCAST = """
table bridge lanchat_test {
    chain forward {
        type filter hook forward priority 0; policy accept;
        ether daddr ff:ff:ff:ff:ff:ff ether type ip drop
    }
}
"""
DROP_ALL_NODES = """
table bridge lanchat_test6 {
    chain forward {
        type filter hook forward priority 0; policy accept;
        ether daddr 33:33:00:00:00:01 drop
    }
}
"""


def nft(ns: str, rules: str) -> None:
    result = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules,
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, f"nft in {ns} failed: {result.stderr}"


def drop_port(ns: str, proto: str, port: int) -> None:
    nft(ns, f"""
table inet lanchat_test {{
    chain input {{
        type filter hook input priority 0; policy accept;
        {proto} dport {port} drop
    }}
}}
""")


class BrokenLan(Lan):
    """Lan with a second switch, machines without IPv4, and a wait for IPv6 addresses."""

    def add_switch_named(self, role: str) -> str:
        ns = self._namespace(role)
        ip("-n", ns, "link", "add", "br0", "type", "bridge")
        ip("-n", ns, "link", "set", "br0", "up")
        return ns

    def plug(self, ns: str, switch: str, link: str, address: str | None) -> None:
        port = f"p-{ns.split('-')[1]}-{link}"
        ip("link", "add", link, "netns", ns, "type", "veth", "peer", "name", port,
           "netns", switch)
        ip("-n", switch, "link", "set", port, "master", "br0", "up")
        if address is not None:
            ip("-n", ns, "addr", "add", f"{address}/24", "broadcast", "+", "dev", link)
        ip("-n", ns, "link", "set", link, "up")

    def bare(self, role: str) -> str:
        ns = self._namespace(role)
        ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def wait_for_ipv6(self) -> None:
        """Until no link-local address is still tentative (duplicate detection, ~1-2 s)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not any(ip("-n", ns, "-6", "addr", "show", "tentative").strip()
                       for ns in self.namespaces):
                return
            time.sleep(0.1)
        raise AssertionError("IPv6 addresses still tentative after 10 s")


@contextmanager
def network(tmp: Path) -> Iterator[tuple[BrokenLan, list[Daemon]]]:
    require_root_and_ip()
    lan = BrokenLan()
    daemons: list[Daemon] = []
    try:
        yield lan, daemons
    finally:
        for daemon in daemons:
            daemon.__exit__(None, None, None)
        problems = lan.delete()
        assert not problems, problems


def start_daemon(daemons: list[Daemon], tmp: Path, ns: str, name: str,
                 *extra: str) -> Daemon:
    daemon = Daemon(tmp / name, host="", preexec_fn=in_netns(ns), args=[
        "--discovery-port", str(DEFAULT_DISCOVERY_PORT), "--name", name, *extra])
    daemons.append(daemon)
    return daemon.start()


def doctor(ns: str, home: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """``lanchat doctor --json`` on machine ``ns``: status, report, and the text report."""
    result = lanchat(ns, ["doctor", "--json", "--wait", "1", *args], home)
    assert result.returncode in (0, 1), result.stderr
    text = lanchat(ns, ["doctor", "--wait", "1", *args], home)
    return result.returncode, json.loads(result.stdout), text.stdout


def codes(report: dict[str, Any]) -> list[str]:
    return [f["code"] for f in report["findings"]]


def checks(seen: dict[str, Any]) -> list[tuple[str, str]]:
    """The port checks of a server: (kind, result).  The harness's daemons serve the
    browser client too, and announce its port, so the doctor checks "web" beside "chat"."""
    return [(c["kind"], c["result"]) for c in seen["checks"]]


def server(report: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [s for s in report["servers"] if s["name"] == name]
    assert len(matches) == 1, report["servers"]
    return matches[0]


def simple_lan(lan: BrokenLan) -> tuple[str, str]:
    """The switch, a server machine at .1 and a client machine at .10."""
    lan.add_switch()
    machines = lan.machine("lab", f"{A}.1"), lan.machine("cli", f"{A}.10")
    lan.wait_for_ipv6()  # so that the IPv6 path is there to be seen, or not
    return machines


RESPONDER = """
import socket, sys, time, zeroconf
zc = zeroconf.Zeroconf()
info = zeroconf.ServiceInfo("_lanchat._tcp.local.", "lab._lanchat._tcp.local.",
    addresses=[socket.inet_aton(sys.argv[1])], port=int(sys.argv[2]),
    properties={"discovery": sys.argv[3]}, server="lab.local.")
zc.register_service(info)
print("registered", flush=True)
sys.stdin.read()
zc.unregister_all_services()
zc.close()
"""


@contextmanager
def mdns_responder(ns: str, address: str, port: int) -> Iterator[None]:
    """python-zeroconf announcing the server as Avahi's service file would."""
    proc = subprocess.Popen([sys.executable, "-c", RESPONDER, address, str(port),
                             str(DEFAULT_DISCOVERY_PORT)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_with_repo(), preexec_fn=in_netns(ns))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "registered", proc.stderr.read() if proc.stderr else ""
        yield
    finally:
        proc.communicate("", timeout=TIMEOUT)


# ------------------------------------------------------------------ the tests


def test_broadcasts_dropped_ipv6_still_finds_the_server(tmp_path: Path) -> None:
    with network(tmp_path) as (lan, daemons):
        lab_ns, cli_ns = simple_lan(lan)
        nft(lan.switch, DROP_BROADCAST)
        lab = start_daemon(daemons, tmp_path, lab_ns, "lab")
        status, report, text = doctor(cli_ns, tmp_path)
        assert status == 0, text
        lab_seen = server(report, "lab")
        assert lab_seen["paths"] == ["ipv6"]
        assert checks(lab_seen) == [("chat", "open"), ("tls", "open"), ("web", "open")]
        assert codes(report) == ["broadcast_blocked"]
        assert "lanchat finds it that way too" in report["findings"][0]["next_step"]
        assert "not to IPv4 broadcasts" in text
        # The probes were sent: the network ate them.
        assert all(p["error"] is None for p in report["probes"])
        found = lanchat(cli_ns, ["--discover"], tmp_path)
        assert found.returncode == 0, found.stderr
        (name, address, state), = rows(found.stdout)
        assert (name, state) == ("lab", "active")
        assert address.startswith("[fe80::") and f"%lan0]:{lab.tcp[1]}" in address


def test_only_unicast_passes_the_doctor_names_the_address(tmp_path: Path) -> None:
    with network(tmp_path) as (lan, daemons):
        lab_ns, cli_ns = simple_lan(lan)
        nft(lan.switch, DROP_BROADCAST)
        nft(lan.switch, DROP_ALL_NODES)
        lab = start_daemon(daemons, tmp_path, lab_ns, "lab")
        status, report, text = doctor(cli_ns, tmp_path, "--no-mdns")
        assert status == 1
        assert codes(report) == ["no_server"]
        assert "lanchat doctor --host ADDRESS" in report["findings"][0]["next_step"]
        # Given the address, the doctor reaches it by unicast and says how to connect.
        status, report, text = doctor(cli_ns, tmp_path, "--no-mdns", "--host", f"{A}.1")
        assert status == 0, text
        assert server(report, "lab")["paths"] == ["unicast"]
        assert codes(report) == ["broadcast_blocked"]
        address = f"{A}.1:{lab.tcp[1]}"
        assert report["findings"][0]["next_step"] == \
            f"Connect to it by address: lanchat --server {address}"
        joined = lanchat(cli_ns, ["--plain", "--server", address, "--pin", "1234",
                                  "--name", "far"], tmp_path, input="hi\n")
        assert joined.returncode == 0, joined.stderr
        # Once joined, plain `lanchat` finds it again: the last server is remembered.
        again = lanchat(cli_ns, ["--plain", "--pin", "1234", "--name", "far",
                                 "--discovery-timeout", "0.5"], tmp_path, input="again\n")
        assert again.returncode == 0, again.stderr


def test_mdns_finds_the_server_when_broadcast_and_all_nodes_are_dropped(
        tmp_path: Path) -> None:
    with network(tmp_path) as (lan, daemons):
        lab_ns, cli_ns = simple_lan(lan)
        nft(lan.switch, DROP_BROADCAST)
        nft(lan.switch, DROP_ALL_NODES)
        lab = start_daemon(daemons, tmp_path, lab_ns, "lab")
        with mdns_responder(lab_ns, f"{A}.1", lab.tcp[1]):
            status, report, text = doctor(cli_ns, tmp_path)
            assert status == 0, text
            assert report["mdns"]["available"]
            assert [s[0] for s in report["mdns"]["services"]] == ["lab._lanchat._tcp.local."]
            assert server(report, "lab")["paths"] == ["mdns"]
            assert codes(report) == ["broadcast_blocked"]
            assert "lanchat finds it that way too" in report["findings"][0]["next_step"]
            found = lanchat(cli_ns, ["--discover", "--discovery-timeout", "3"], tmp_path)
            assert found.returncode == 0, found.stderr
            assert rows(found.stdout) == [("lab", f"{A}.1:{lab.tcp[1]}", "active")]


def test_a_blocked_chat_port_is_named_with_the_rule_to_add(tmp_path: Path) -> None:
    with network(tmp_path) as (lan, daemons):
        lab_ns, cli_ns = simple_lan(lan)
        # Its one chat port (no TLS port beside it, which would still let people in).
        lab = start_daemon(daemons, tmp_path, lab_ns, "lab", "--no-tls")
        drop_port(lab_ns, "tcp", lab.tcp[1])
        status, report, text = doctor(cli_ns, tmp_path)
        assert status == 1
        assert codes(report) == ["chat_port_blocked"]
        assert checks(server(report, "lab")) == [("chat", "timeout"), ("web", "open")]
        step = report["findings"][0]["next_step"]
        assert f"tcp dport {lab.tcp[1]} accept" in step and f"ufw allow {lab.tcp[1]}/tcp" \
            in step
        assert "a firewall drops it" in text


def test_blocked_discovery_with_an_open_chat_port(tmp_path: Path) -> None:
    with network(tmp_path) as (lan, daemons):
        lab_ns, cli_ns = simple_lan(lan)
        lab = start_daemon(daemons, tmp_path, lab_ns, "lab")
        drop_port(lab_ns, "udp", DEFAULT_DISCOVERY_PORT)
        status, report, _text = doctor(cli_ns, tmp_path, "--no-mdns", "--host",
                                      f"{A}.1:{lab.tcp[1]}")
        assert status == 1
        assert codes(report) == ["discovery_blocked"]
        step = report["findings"][0]["next_step"]
        assert f"lanchat --server {A}.1:{lab.tcp[1]}" in step
        assert f"udp dport {DEFAULT_DISCOVERY_PORT} accept" in step


MARKER_PORT = 9  # discard
SEND_MARKER = """
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.sendto(b"marker", (sys.argv[1], int(sys.argv[2])))
"""


@contextmanager
def capture(switch: str, port: str, machine: str, broadcast: str) -> Iterator[list[str]]:
    """tcpdump on the switch's port of ``machine``: the packets that machine sends.

    At the end the machine sends one more datagram, to ``broadcast``'s discard port, and
    the capture ends once tcpdump has shown it: whatever the machine sent before it has
    been shown too, however long the capture buffer held it (no fixed sleep).  That
    marker is left out of the lines."""
    lines: list[str] = []
    proc = subprocess.Popen(["ip", "netns", "exec", switch, "tcpdump", "-i", port, "-n", "-l",
                             "-Q", "in", "-p"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    marker = f"> {broadcast}.{MARKER_PORT}: UDP"
    try:
        assert proc.stderr is not None
        said = [proc.stderr.readline() for _ in range(2)]  # "listening on ..." once it captures
        assert any("listening on" in line for line in said), said
        reader.start()
        yield lines
    finally:
        if reader.is_alive():
            sent = run_in(machine, [sys.executable, "-c", SEND_MARKER, broadcast,
                                    str(MARKER_PORT)], env_with_repo())
            assert sent.returncode == 0, sent.stderr
            deadline = time.monotonic() + TIMEOUT
            while not any(marker in line for line in lines):
                assert time.monotonic() < deadline, f"tcpdump never showed the marker: {lines}"
                time.sleep(0.05)  # the reader thread fills ``lines``; bounded by the deadline
        proc.terminate()
        if reader.is_alive():
            reader.join(timeout=TIMEOUT)  # to the end of tcpdump's output
        proc.communicate(timeout=TIMEOUT)
        lines[:] = [line for line in lines if marker not in line]


FLOW = re.compile(r" IP6? (?P<src>\S+)\.(?P<sport>\d+) > (?P<dst>\S+)\.(?P<dport>\d+): "
                  r"(?P<rest>.*)")


def unexpected_packets(lines: list[str], tcp_ports: set[int]) -> list[str]:
    """What the machine sent besides probes, mDNS, connects to ``tcp_ports`` and the
    kernel's own ARP, neighbour discovery and multicast reports."""
    out = []
    for line in lines:
        if not line.strip() or " ARP," in line or "ICMP6" in line or " igmp " in line:
            continue
        flow = FLOW.search(line)
        if flow is not None:
            udp = "UDP" in flow["rest"] or int(flow["dport"]) == 5353
            if udp and int(flow["dport"]) in (DEFAULT_DISCOVERY_PORT, 5353):
                continue
            if not udp and int(flow["dport"]) in tcp_ports:
                continue
        out.append(line)
    return out


def test_a_standby_server(tmp_path: Path) -> None:
    with network(tmp_path) as (lan, daemons):
        lab_ns, cli_ns = simple_lan(lan)
        lab = start_daemon(daemons, tmp_path, lab_ns, "lab", "--initial-state", "standby")
        with capture(lan.switch, "p-cli", cli_ns, f"{A}.255") as sent:
            status, report, _text = doctor(cli_ns, tmp_path)
        # Nothing but the probes and the connects it reports left the machine.
        assert any(f".{DEFAULT_DISCOVERY_PORT}: UDP" in line for line in sent), sent
        assert any(f".{lab.tcp[1]}: Flags [S]" in line for line in sent), sent
        assert lab.http is not None and lab.tls is not None
        assert unexpected_packets(sent, {lab.tcp[1], lab.http[1], lab.tls[1]}) == []
        assert status == 1
        assert codes(report) == ["server_standby"]
        assert "in standby and accepts no new people" in report["findings"][0]["text"]
        assert "lanchatctl start" in report["findings"][0]["next_step"]
        lab_seen = server(report, "lab")
        assert {"broadcast", "directed", "ipv6"} <= set(lab_seen["paths"])
        assert checks(lab_seen) == [("chat", "open"), ("tls", "open"), ("web", "open")]
        nb = run_in(cli_ns, [sys.executable, "-m", "lanchat", "doctor", "--wait", "1"],
                    {**env_with_repo(), "HOME": str(tmp_path), "LANGUAGE": "nb"})
        assert "lanchatctl start" in nb.stdout and "Konklusjon" in nb.stdout, nb.stdout


def test_an_ipv6_only_lan(tmp_path: Path) -> None:
    with network(tmp_path) as (lan, daemons):
        lan.add_switch()
        lab_ns, cli_ns = lan.bare("lab"), lan.bare("cli")
        lan.plug(lab_ns, lan.switch, "lan0", None)
        lan.plug(cli_ns, lan.switch, "lan0", None)
        lan.wait_for_ipv6()
        lab = start_daemon(daemons, tmp_path, lab_ns, "lab")
        status, report, text = doctor(cli_ns, tmp_path)
        assert status == 0, text
        assert server(report, "lab")["paths"] == ["ipv6"]
        assert codes(report) == ["ipv6_only"]
        lan0 = next(i for i in report["interfaces"] if i["name"] == "lan0")
        assert [(a["scope"], a["address"].startswith("fe80:")) for a in lan0["addresses"]] \
            == [("link", True)]
        assert "scope link" in text
        # No IPv4 route: the broadcasts could not even be sent, and the report says so.
        assert any(p["path"] == "broadcast" and p["error"] for p in report["probes"])
        joined = lanchat(cli_ns, ["--plain", "--pin", "1234", "--name", "six"], tmp_path,
                         input="over ipv6\n")
        assert joined.returncode == 0, joined.stderr
        entry = lab.wait_for_log(lambda e: e["event"] == "join" and e.get("name") == "six")
        assert entry["room"] == "1234"


def test_a_machine_on_two_lans(tmp_path: Path) -> None:
    with network(tmp_path) as (lan, daemons):
        lan.add_switch()  # LAN A; LAN B has a switch of its own
        switch_b = lan.add_switch_named("swb")
        lab_ns = lan.machine("lab", f"{A}.1")
        annex_ns = lan.bare("annex")
        lan.plug(annex_ns, switch_b, "lan0", f"{B}.2")
        cli_ns = lan.machine("cli", f"{A}.10")  # its default route is on LAN A
        lan.plug(cli_ns, switch_b, "lan1", f"{B}.10")
        lan.wait_for_ipv6()
        start_daemon(daemons, tmp_path, lab_ns, "lab")
        annex = start_daemon(daemons, tmp_path, annex_ns, "annex")
        status, report, text = doctor(cli_ns, tmp_path)
        assert status == 0, text
        assert codes(report) == ["ok", "ok"]
        lab_seen, annex_seen = server(report, "lab"), server(report, "annex")
        assert {"broadcast", "directed", "ipv6"} <= set(lab_seen["paths"])
        # 255.255.255.255 leaves by the default route only: LAN B is reached by its own
        # directed broadcast and its own all-nodes group.
        assert annex_seen["paths"] == ["directed", "ipv6"]
        assert {a["interface"] for a in annex_seen["answers"]} == {"lan1"}
        assert annex_seen["host"] == f"{B}.2"
        found = lanchat(cli_ns, ["--discover"], tmp_path)
        assert found.returncode == 0, found.stderr
        assert [(r[0], r[1]) for r in rows(found.stdout)] == [
            ("annex", f"{B}.2:{annex.tcp[1]}"), ("lab", f"{A}.1:{daemons[0].tcp[1]}")]


# Root's powers are its capabilities: without any (bounding set emptied, so exec gives
# none back) a uid-0 process can do only what a user can.  A real user id cannot be
# used: the interpreter lives under /root.
WITHOUT_CAPABILITIES = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


def test_nothing_on_the_lan(tmp_path: Path) -> None:
    with network(tmp_path) as (lan, _daemons):
        _lab_ns, cli_ns = simple_lan(lan)
        # Without root's powers, the report is the same.
        caps = run_in(cli_ns, [*WITHOUT_CAPABILITIES, "grep", "CapEff", "/proc/self/status"],
                      client_env(tmp_path))
        assert caps.stdout.split() == ["CapEff:", "0000000000000000"], caps
        plain = run_in(cli_ns, [*WITHOUT_CAPABILITIES, sys.executable, "-m", "lanchat",
                                "doctor", "--json", "--wait", "1"], client_env(tmp_path))
        assert plain.returncode == 1, plain.stderr
        assert codes(json.loads(plain.stdout)) == ["no_server"]
        status, report, text = doctor(cli_ns, tmp_path)
        assert status == 1
        assert codes(report) == ["no_server"]
        assert "udp dport 5001 accept" in report["findings"][0]["next_step"]
        interfaces = {i["name"]: i for i in report["interfaces"]}
        assert set(interfaces) == {"lo", "lan0"}
        assert interfaces["lan0"]["addresses"][0]["broadcast"] == f"{A}.255"
        assert "No lanchat server answered on any path" in text

"""The client's default discovery on a LAN of network namespaces.

Without ``--discovery-address`` the client broadcasts its probe to 255.255.255.255 and
to the directed broadcast address of every up, non-loopback interface.  From the
host's own network namespace that would leave through a real interface, so these tests
build a small LAN of their own out of network namespaces:

    lanchat-lab-*    server "lab" (active)       169.254.77.1/24  --+
    lanchat-annex-*  server "annex" (standby)    169.254.77.2/24  --+-- bridge in
    lanchat-cli-*    the client's machine        169.254.77.10/24 --+   lanchat-sw-*
    lanchat-bare-*   a machine with no default   169.254.77.11/24 --+
                     route (255.255.255.255 is unreachable there)

Each machine has ``lo`` and one veth whose other end is a port of the bridge in the
switch namespace.  The veth ends are created directly inside these namespaces: the
host's namespace never holds any of them, so no probe can reach a host interface.
The addresses are link-local (169.254.0.0/16), which the daemon's default
``discovery_allow`` accepts.  The real daemons run inside their namespaces on the
default discovery port, and the real client runs with no discovery option at all.

Needs root (creating namespaces) and ``ip`` (iproute2): without them the tests fail
with a message saying so; they are never skipped.  The namespaces are deleted at the
end, also when a test fails.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from lanchat_testing import Daemon, env_with_repo
from test_client_support import TIMEOUT, ClientProcess, client_env

from lanchat.client.settings import DEFAULT_DISCOVERY_PORT

SUBNET = "169.254.77"
PREFIX = 24
DIRECTED_BROADCAST = f"{SUBNET}.255"
GATEWAY = f"{SUBNET}.254"  # a default route as a LAN machine has; no router is needed
CLONE_NEWNET = 0x40000000  # <linux/sched.h>
NETNS_DIR = Path("/run/netns")  # where `ip netns add` keeps its namespaces
TESTS = Path(__file__).resolve().parent


def in_netns(name: str) -> Callable[[], None]:
    """A preexec_fn that moves the child into the named network namespace before exec."""
    path = str(NETNS_DIR / name)
    libc = ctypes.CDLL(None, use_errno=True)

    def enter() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, os.strerror(errno), path)
        finally:
            os.close(fd)

    return enter


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


class Lan:
    """Network namespaces joined by a bridge; ``machine`` adds one, ``delete`` ends all."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.namespaces: list[str] = []
        self.switch = ""

    def add_switch(self) -> None:
        self.switch = self._namespace("sw")
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def _namespace(self, role: str) -> str:
        name = f"lanchat-{role}-{self.tag}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        return name

    def machine(self, role: str, address: str, *, default_route: bool = True) -> str:
        ns = self._namespace(role)
        port = f"p-{role}"
        # Both ends are made inside their namespaces, never in the host's.
        ip("link", "add", "lan0", "netns", ns, "type", "veth", "peer", "name", port,
           "netns", self.switch)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        # "broadcast +" sets the directed broadcast address, as DHCP clients and network
        # managers do; a bare `ip addr add` leaves it 0.0.0.0, and the kernel then treats
        # nothing on the subnet as a broadcast address.
        ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "broadcast", "+", "dev", "lan0")
        ip("-n", ns, "link", "set", "lan0", "up")
        if default_route:
            ip("-n", ns, "route", "add", "default", "via", GATEWAY, "dev", "lan0")
        return ns

    def delete(self) -> list[str]:
        problems = []
        for name in reversed(self.namespaces):
            try:
                ip("netns", "delete", name)
            except AssertionError as exc:
                problems.append(str(exc))
        self.namespaces = []
        return problems


def require_root_and_ip() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/test_client_lan.py needs root: it creates network namespaces "
                    "(run the suite as root, as CI does)")
    if shutil.which("ip") is None:
        pytest.fail("tests/test_client_lan.py needs the ip command (package iproute2)")


class LanSetup:
    def __init__(self, lan: Lan, lab: Daemon, annex: Daemon, client_ns: str,
                 bare_ns: str) -> None:
        self.lan = lan
        self.lab = lab
        self.annex = annex
        self.client_ns = client_ns
        self.bare_ns = bare_ns


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LanSetup]:
    require_root_and_ip()
    tmp = tmp_path_factory.mktemp("lan")
    network = Lan()
    daemons: list[Daemon] = []
    try:
        network.add_switch()
        lab_ns = network.machine("lab", f"{SUBNET}.1")
        annex_ns = network.machine("annex", f"{SUBNET}.2")
        client_ns = network.machine("cli", f"{SUBNET}.10")
        bare_ns = network.machine("bare", f"{SUBNET}.11", default_route=False)
        for name, ns, extra in (("lab", lab_ns, []),
                                ("annex", annex_ns, ["--initial-state", "standby"])):
            daemon = Daemon(tmp / name, host="0.0.0.0", preexec_fn=in_netns(ns), args=[
                "--discovery-port", str(DEFAULT_DISCOVERY_PORT), "--name", name, *extra])
            daemons.append(daemon)
            daemon.start()
        yield LanSetup(network, daemons[0], daemons[1], client_ns, bare_ns)
    finally:
        for daemon in daemons:
            daemon.__exit__(None, None, None)
        problems = network.delete()
        assert not problems, problems


def run_in(ns: str, argv: list[str], env: dict[str, str], input: str = "",
           timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=input, capture_output=True, text=True, env=env,
                          timeout=timeout, preexec_fn=in_netns(ns))


def lanchat(ns: str, args: list[str], home: Path,
            input: str = "") -> subprocess.CompletedProcess[str]:
    """The real client on the machine ``ns``."""
    return run_in(ns, [sys.executable, "-m", "lanchat", *args], client_env(home), input)


def rows(stdout: str) -> list[tuple[str, str, str]]:
    """``lanchat --discover`` output as (name, address, state)."""
    return [(r[0], r[1], r[2]) for r in (line.split("\t") for line in stdout.splitlines())]


def test_the_lan_is_only_ours(lan: LanSetup) -> None:
    for ns in (lan.client_ns, lan.bare_ns):
        links = {line.split()[0].split("@")[0] for line in ip("-n", ns, "-br", "link")
                 .splitlines()}
        assert links == {"lo", "lan0"}
    host_links = ip("-br", "link")
    assert not any(f"p-{role}" in host_links for role in ("lab", "annex", "cli", "bare"))


def test_default_targets_on_a_lan_machine(lan: LanSetup) -> None:
    code = "from lanchat.client import discovery; print(discovery.default_targets())"
    result = run_in(lan.client_ns, [sys.executable, "-c", code], env_with_repo())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(["255.255.255.255", DIRECTED_BROADCAST])


def test_discover_with_default_discovery_lists_both_servers(lan: LanSetup,
                                                            tmp_path: Path) -> None:
    result = lanchat(lan.client_ns, ["--discover"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert rows(result.stdout) == [
        ("annex", f"{SUBNET}.2:{lan.annex.tcp[1]}", "standby"),
        ("lab", f"{SUBNET}.1:{lan.lab.tcp[1]}", "active")]


@pytest.mark.parametrize("target", ["255.255.255.255", DIRECTED_BROADCAST])
def test_each_default_target_alone_reaches_the_servers(lan: LanSetup, tmp_path: Path,
                                                       target: str) -> None:
    # Many networks pass only one of the two broadcasts: each must work by itself.
    result = lanchat(lan.client_ns, ["--discover", "--discovery-address", target], tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r[0] for r in rows(result.stdout)] == ["annex", "lab"]


def test_without_a_default_route_the_directed_broadcast_still_finds_them(
        lan: LanSetup, tmp_path: Path) -> None:
    alone = lanchat(lan.bare_ns, ["--discover", "--discovery-address", "255.255.255.255",
                                  "--discovery-timeout", "0.5"], tmp_path)
    # With no default route the limited broadcast cannot leave this machine at all.
    assert alone.returncode == 1
    assert "Found no server on the LAN" in alone.stderr
    # ...and the person is told why, once, though the probe was sent twice.
    assert alone.stderr.count(
        "Could not send the discovery probe: 255.255.255.255:5001: Network is unreachable") == 1
    result = lanchat(lan.bare_ns, ["--discover"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r[0] for r in rows(result.stdout)] == ["annex", "lab"]


WATCHER = """
import json, sys
from lanchat_testing import JsonClient
watcher = JsonClient((sys.argv[1], int(sys.argv[2])))
print(json.dumps(watcher.join(sys.argv[3], sys.argv[4])), flush=True)
print(json.dumps(watcher.recv_type("message", timeout=float(sys.argv[5]))), flush=True)
"""


class Watcher(ClientProcess):
    """A JSON-protocol member on another LAN machine, printing its events as JSON lines."""

    def __init__(self, ns: str, server: tuple[str, int], pin: str, name: str) -> None:
        env = env_with_repo({"PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WATCHER, server[0], str(server[1]), pin, name,
             str(TIMEOUT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            preexec_fn=in_netns(ns))
        self.out = b""
        self.err = b""


def test_plain_chat_through_default_discovery(lan: LanSetup, tmp_path: Path) -> None:
    lab_address = (f"{SUBNET}.1", lan.lab.tcp[1])
    with Watcher(lan.bare_ns, lab_address, "1234", "near") as watcher:
        watcher.wait_for('"joined"', stream="out")
        result = lanchat(lan.client_ns, ["--plain", "--pin", "1234", "--name", "far"],
                         tmp_path, input="hi\n")
        assert result.returncode == 0, result.stderr
        code, out, err = watcher.finish()
    assert code == 0, err
    message = json.loads(out.splitlines()[-1])
    assert (message["from"], message["room"], message["text"]) == ("far", "1234", "hi")
    # Two servers answered: the standby one was shown as such, the active one joined.
    # (Each is shown at its TLS address, the one the client connects to.)
    assert lan.annex.tls is not None
    assert f"Found server at {SUBNET}.2:{lan.annex.tls[1]}: annex (in standby)" \
        in result.stderr
    joined = lan.lab.wait_for_log(lambda e: e["event"] == "join" and e.get("name") == "far")
    assert joined["room"] == "1234"


def test_a_standby_server_is_shown_and_not_joined(lan: LanSetup, tmp_path: Path) -> None:
    refused = lanchat(lan.client_ns, ["--plain", "--server-name", "annex", "--pin", "1234",
                                      "--name", "far"], tmp_path, input="hello\n")
    assert refused.returncode == 1
    assert "annex" in refused.stderr and "in standby and accepts no new people" \
        in refused.stderr
    assert not any(e["event"] == "join" for e in lan.annex.log_entries())

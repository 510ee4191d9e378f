"""TLS and pinning on a LAN of network namespaces, with a rogue server on it.

    lanchat-real-*   the real server "lab"           169.254.77.1/24   --+
    lanchat-rogue-*  a rogue: same server id and      169.254.77.66/24  --+-- bridge br0
                     name, its own key and port                          |   in lanchat-sw-*
    lanchat-cli-*    a client that knew the real one 169.254.77.10/24  --+   (tcpdump listens
    lanchat-new-*    a client that never met either  169.254.77.11/24  --+    here)

The network is built as in tests/test_client_lan.py (whose helpers and subnet it uses;
the two LANs never meet, each lives in its own namespaces): every
interface lives in a namespace of its own making, none in the host's, so nothing
reaches a real network.  The daemons run on the default ports (5000, 5001, 5443); the
rogue copies the real server's id, as anyone who heard one announce could.

What a user would check: the client that met the real server refuses the rogue and
says why before sending a PIN or name (the rogue's log has no join), and with both
answering it joins the real one; a client that met neither lists both with their
keys; and a passive capture on the bridge of a TLS chat holds neither the PIN, the
name nor the text (while the same capture of an --insecure chat holds all three, so
the capture is known to see the traffic).

Needs root, ``ip`` and ``tcpdump``: without them the tests fail, never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lanchat_testing import Daemon
from test_client_lan import SUBNET, Lan, in_netns, lanchat, require_root_and_ip
from test_client_support import TIMEOUT, ClientProcess

from lanchat.client.settings import DEFAULT_DISCOVERY_PORT
from lanchat.protocol import chat

REAL = f"{SUBNET}.1"
ROGUE = f"{SUBNET}.66"


class TlsLan:
    def __init__(self, lan: Lan, real: Daemon, rogue: Daemon, real_ns: str, client_ns: str,
                 new_ns: str, home: Path) -> None:
        self.lan = lan
        self.real = real
        self.rogue = rogue
        self.real_ns = real_ns
        self.client_ns = client_ns
        self.new_ns = new_ns
        self.home = home  # the user directories of the client that knew the real server


def _daemon(tmp: Path, ns: str) -> Daemon:
    return Daemon(tmp, host="0.0.0.0", preexec_fn=in_netns(ns), args=[
        "--discovery-port", str(DEFAULT_DISCOVERY_PORT), "--port", str(chat.DEFAULT_PORT),
        "--tls-port", str(chat.DEFAULT_TLS_PORT), "--name", "lab"])


@pytest.fixture(scope="module")
def tls_lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLan]:
    require_root_and_ip()
    if shutil.which("tcpdump") is None:
        pytest.fail("tests/test_tls_lan.py needs tcpdump (package tcpdump)")
    tmp = tmp_path_factory.mktemp("tlslan")
    network = Lan()
    daemons: list[Daemon] = []
    try:
        network.add_switch()
        real_ns = network.machine("real", REAL)
        rogue_ns = network.machine("rogue", ROGUE)
        client_ns = network.machine("cli", f"{SUBNET}.10")
        new_ns = network.machine("new", f"{SUBNET}.11")
        real = _daemon(tmp / "real", real_ns)
        daemons.append(real)
        real.start()
        # The client meets the real server first, while it is alone on the LAN.
        home = tmp / "home"
        first = lanchat(client_ns, ["--plain", "--pin", "2468", "--name", "ann"], home,
                        input="first visit\n")
        assert first.returncode == 0, first.stderr
        assert f"its key fingerprint is {real.fingerprint}" in first.stderr
        # Then the rogue arrives, with the real server's id (heard in any announce).
        rogue_dir = tmp / "rogue"
        (rogue_dir / "state").mkdir(parents=True)
        (rogue_dir / "state" / "server-id").write_text(
            (real.state_dir / "server-id").read_text())
        rogue = _daemon(rogue_dir, rogue_ns)
        daemons.append(rogue)
        rogue.start()
        assert rogue.fingerprint != real.fingerprint
        yield TlsLan(network, real, rogue, real_ns, client_ns, new_ns, home)
    finally:
        for daemon in daemons:
            daemon.__exit__(None, None, None)
        problems = network.delete()
        assert not problems, problems


def _server_id(setup: TlsLan) -> str:
    return (setup.real.state_dir / "server-id").read_text().strip()


def test_the_client_that_knew_the_server_refuses_the_rogue_and_says_why(
        tls_lan: TlsLan) -> None:
    server_id = _server_id(tls_lan)
    # Only the rogue answers (its probe goes to the rogue alone): refused, nothing joined.
    alone = lanchat(tls_lan.client_ns, ["--discovery-address", ROGUE, "--plain", "--pin",
                                        "2468", "--name", "ann"], tls_lan.home,
                    input="for the rogue\n")
    assert alone.returncode == 1
    assert f"THE KEY OF lab ({server_id}) HAS CHANGED" in alone.stderr
    assert str(tls_lan.real.fingerprint) in alone.stderr
    assert str(tls_lan.rogue.fingerprint) in alone.stderr
    assert f"lanchat --forget {server_id}" in alone.stderr
    # Even asked directly, by address, it gets no PIN and no name.
    direct = lanchat(tls_lan.client_ns, ["--server", ROGUE, "--plain", "--pin", "2468",
                                         "--name", "ann"], tls_lan.home, input="direct\n")
    assert direct.returncode == 1 and "HAS CHANGED" in direct.stderr
    # Both answer the default broadcast discovery: the real one is joined, the rogue named.
    both = lanchat(tls_lan.client_ns, ["--plain", "--pin", "2468", "--name", "ann"],
                   tls_lan.home, input="to the real one\n")
    assert both.returncode == 0, both.stderr
    assert f"Refusing the server answering at {ROGUE}:{chat.DEFAULT_TLS_PORT} as lab" \
        in both.stderr
    assert f"Connecting to server {REAL}:{chat.DEFAULT_TLS_PORT}" in both.stderr
    events = tls_lan.rogue.log_entries()
    assert not [e for e in events if e["event"] in ("join", "refused_join")], events
    assert [e for e in tls_lan.real.log_entries() if e["event"] == "join"]


def test_a_client_seeing_both_lists_both_with_their_keys(tls_lan: TlsLan,
                                                         tmp_path: Path) -> None:
    result = lanchat(tls_lan.new_ns, ["--discover"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = sorted(line.split("\t") for line in result.stdout.splitlines())
    server_id = _server_id(tls_lan)
    assert rows == sorted([
        ["lab", f"{REAL}:5000", "active", server_id, f"{REAL}:5443",
         str(tls_lan.real.fingerprint), "new"],
        ["lab", f"{ROGUE}:5000", "active", server_id, f"{ROGUE}:5443",
         str(tls_lan.rogue.fingerprint), "new"],
    ])


class Capture:
    """tcpdump on the bridge, in the switch's namespace, writing a pcap file."""

    def __init__(self, switch_ns: str, path: Path) -> None:
        self.path = path
        # --immediate-mode and -U: each packet handed over and written as it comes, so
        # stopping loses nothing; -Z root: keep the right to write the file.
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "br0", "-n", "-U", "--immediate-mode", "-Z", "root",
             "-w", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=in_netns(switch_ns))
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on br0, ..." once it captures
        assert "listening on br0" in line, line

    def stop(self) -> bytes:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        return self.path.read_bytes()


LISTENER = """
import json, sys
from lanchat_testing import JsonClient
me = JsonClient(("127.0.0.1", 5000))
print(json.dumps(me.join(sys.argv[1], "listener")), flush=True)
print(json.dumps(me.recv_type("message", timeout=float(sys.argv[2]))), flush=True)
"""


class Listener(ClientProcess):
    """A member on the server's own machine (its traffic never crosses the bridge)."""

    def __init__(self, ns: str, pin: str) -> None:
        tests = Path(__file__).resolve().parent
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tests.parent), str(tests)]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LISTENER, pin, str(TIMEOUT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            preexec_fn=in_netns(ns))
        self.out = b""
        self.err = b""


def _chat_captured(tls_lan: TlsLan, tmp_path: Path, pin: str, name: str, text: str,
                   extra: list[str]) -> bytes:
    capture = Capture(tls_lan.lan.switch, tmp_path / f"{name}.pcap")
    try:
        with Listener(tls_lan.real_ns, pin) as listener:
            listener.wait_for('"joined"', stream="out")
            result = lanchat(tls_lan.new_ns, ["--server-name", "lab", "--discovery-address",
                                              REAL, "--plain", "--pin", pin, "--name", name,
                                              *extra], tmp_path / name, input=text + "\n")
            assert result.returncode == 0, result.stderr
            code, out, err = listener.finish()
            assert code == 0, err
            assert f'"text": "{text}"' in out
    finally:
        data = capture.stop()
    return data


def test_a_passive_capture_of_a_tls_chat_holds_no_pin_name_or_text(
        tls_lan: TlsLan, tmp_path: Path) -> None:
    secret = ("97531864", "zebrafish", "the-meeting-moved-to-four")
    captured = _chat_captured(tls_lan, tmp_path, *secret, extra=[])
    assert len(captured) > 2000  # the handshake and the chat were seen
    for word in secret:
        assert word.encode() not in captured, f"{word!r} is readable on the wire"
    # The same capture sees everything of a chat the person chose not to encrypt.
    open_ = ("86420975", "walrus", "this-one-is-readable")
    captured = _chat_captured(tls_lan, tmp_path, *open_, extra=["--insecure"])
    for word in open_:
        assert word.encode() in captured, f"{word!r} was not captured: the capture is blind"

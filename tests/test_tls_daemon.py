"""TLS in the real daemon and the real client, over loopback: members on both ports in
one room, handshake abuse that disturbs nobody, the plain port turned off, and the
client's pinning (first contact, a changed key refused before the PIN, --forget)."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import IO, Callable

import pytest
from lanchat_testing import Daemon, JsonClient, TextClient, udp_query
from test_client_support import ClientProcess, client_env, run_client

from lanchat import tls
from lanchat.protocol import fingerprint
from lanchatd.tls_transport import CLOSING_HANDSHAKES

FAST = "[tls]\ntls_handshake_timeout = 0.5\n"


def test_members_on_the_tls_and_the_plain_port_share_a_room(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    assert daemon.tls is not None and fingerprint.is_fingerprint(daemon.fingerprint)
    with TextClient(daemon.tls, tls=True) as alice, daemon.json_client() as bob:
        assert alice.greeting is not None and alice.greeting.startswith("LANCHAT/1 ready")
        assert alice.sock.getpeercert(binary_form=True) is not None  # type: ignore[attr-defined]
        der = alice.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert tls.certificate_fingerprint(der) == daemon.fingerprint
        alice.join("1234", "alice")
        bob.join("1234", "bob")
        alice.read_until(lambda line: "bob joined" in line)
        alice.send_line("hello from TLS")
        assert bob.recv_type("message")["text"] == "hello from TLS"
        bob.say("hello from plain text")
        alice.read_until(lambda line: line.endswith("bob: hello from plain text"))
    joins = [e for e in daemon.log_entries() if e["event"] == "join"]
    assert sorted(e["name"] for e in joins) == ["alice", "bob"]


def test_the_goodbye_comes_before_the_tls_close(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    assert daemon.tls is not None
    with JsonClient(daemon.tls, tls=True) as alice:
        alice.join("1234", "alice")
        alice.send({"type": "quit"})
        bye = alice.recv_type("bye")
        assert bye["reason"] == "quit"
        assert alice.recv() is None  # then the end, after the TLS close_notify
    with JsonClient(daemon.tls, tls=True) as bob:
        bob.join("1234", "bob")
        daemon.signal(signal.SIGTERM)
        assert bob.recv_type("bye")["reason"] == "shutdown"


def _chatting_pair(daemon: Daemon) -> tuple[TextClient, JsonClient]:
    assert daemon.tls is not None
    alice = TextClient(daemon.tls, tls=True)
    alice.join("5555", "alice")
    bob = daemon.json_client()
    bob.join("5555", "bob")
    alice.read_until(lambda line: "bob joined" in line)
    return alice, bob


def _exchange(alice: TextClient, bob: JsonClient, text: str) -> None:
    alice.send_line(text)
    assert bob.recv_type("message", timeout=5)["text"] == text


def test_a_handshake_never_finished_is_timed_out_and_disturbs_nobody(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(FAST)
    assert daemon.tls is not None
    alice, bob = _chatting_pair(daemon)
    with alice, bob:
        silent = socket.create_connection(daemon.tls, timeout=5)
        # Half a ClientHello, then nothing: the server waits for the rest, not forever.
        half = socket.create_connection(daemon.tls, timeout=5)
        hello = tls.TlsEngine(tls.client_context(), server_side=False).data_to_send()
        half.sendall(hello[:30])
        started = time.monotonic()
        _exchange(alice, bob, "still here")
        for sock in (silent, half):
            with sock:
                assert sock.recv(4096) == b""  # closed by the server, without a word
        waited = time.monotonic() - started
        assert 0.3 < waited < 5.0
        _exchange(alice, bob, "and still here")
    assert "TLS handshake timed out" in json.dumps(daemon.log_entries())


def test_garbage_instead_of_a_client_hello_is_closed_and_disturbs_nobody(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(FAST)
    assert daemon.tls is not None
    alice, bob = _chatting_pair(daemon)
    with alice, bob:
        # A person typing at the TLS port gets one line saying what the port is.
        with socket.create_connection(daemon.tls, timeout=5) as typed:
            typed.sendall(b"1234\n")
            answer = b""
            while chunk := typed.recv(4096):
                answer += chunk
        assert answer.startswith(b"This is lanchat's TLS port")
        # A record that claims to be a handshake and is not: closed, with an alert at most.
        with socket.create_connection(daemon.tls, timeout=5) as fake:
            fake.sendall(b"\x16\x03\x01\x00\x30" + b"\x01" * 48)
            while fake.recv(4096):
                pass
        _exchange(alice, bob, "unbothered")
        # A real TLS client still gets in afterwards.
        with TextClient(daemon.tls, tls=True) as carol:
            carol.join("5555", "carol")
            bob.recv_until(lambda o: o.get("type") == "presence" and o.get("name") == "carol")


def test_with_the_plain_port_off_only_tls_is_served_and_announced(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[server]\nplain = false\n")
    assert daemon.tcp == ("", 0) and daemon.tls is not None
    assert " tcp=" not in daemon.ready_line
    announce = json.loads(udp_query(daemon.udp, b'{"type":"discover","nonce":"x"}') or b"{}")
    assert announce["port"] == 0 and announce["tls_port"] == daemon.tls[1]
    assert announce["tls_fingerprint"] == daemon.fingerprint
    with TextClient(daemon.tls, tls=True) as alice:
        assert "joined" not in alice.join("4242", "alice")


def test_openssl_s_client_is_the_nc_of_tls(start_daemon: Callable[..., Daemon]) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed (package openssl)")
    daemon = start_daemon()
    assert daemon.tls is not None
    with daemon.json_client() as bob:
        bob.join("7777", "bob")
        # -quiet alone would ignore the end of input; -no_ign_eof makes it leave then.
        sam = subprocess.Popen(
            ["openssl", "s_client", "-quiet", "-no_ign_eof", "-connect",
             f"{daemon.tls[0]}:{daemon.tls[1]}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        try:
            assert sam.stdin is not None and sam.stdout is not None
            sam.stdin.write("7777\nsam\nhi from openssl\n")
            sam.stdin.flush()
            assert bob.recv_type("message")["text"] == "hi from openssl"
            out = _read_until(sam.stdout, "sam: hi from openssl")
            sam.stdin.close()
            assert sam.wait(timeout=10) == 0
        finally:
            if sam.poll() is None:
                sam.kill()
    assert "* You are in room 7777 as sam" in out


def _read_until(stream: IO[str], wanted: str, timeout: float = 10.0) -> str:
    """What ``stream`` (a pipe) gives up to ``wanted``, read from its descriptor (a
    buffered readline would hide what it has read ahead from the selector)."""
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while wanted.encode() not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"{wanted!r} not seen; got {seen!r}")
            data = os.read(stream.fileno(), 65536)
            if not data:
                raise AssertionError(f"{wanted!r} not seen before the end; got {seen!r}")
            seen += data
    return seen.decode()


# ------------------------------------------------------------------ the client


def _discover_args(daemon: Daemon) -> list[str]:
    return ["--discovery-address", f"127.0.0.1:{daemon.udp[1]}", "--discovery-timeout", "2"]


def test_the_client_pins_at_first_contact_and_refuses_a_changed_key_before_the_pin(
        start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    real = start_daemon(args=["--name", "lab"])
    assert real.tls is not None
    env = client_env(tmp_path / "home")
    first = run_client([*_discover_args(real), "--plain", "--pin", "1234", "--name", "ann"],
                       env, input="hello\n")
    assert first.returncode == 0, first.stderr
    assert f"its key fingerprint is {real.fingerprint}" in first.stderr
    assert "not encrypted" not in first.stderr
    known = (tmp_path / "home" / "data" / "lanchat" / "known_servers").read_text()
    server_id = (real.state_dir / "server-id").read_text().strip()
    assert f"{server_id} {real.fingerprint} lab" in known.splitlines()
    again = run_client([*_discover_args(real), "--plain", "--pin", "1234", "--name", "ann"],
                       env, input="again\n")
    assert again.returncode == 0 and "First contact" not in again.stderr

    # The same server id with another key (a rogue that copied the id): refused, by
    # --server as well as by discovery, and it never sees a join.
    rogue_dir = tmp_path / "rogue"
    (rogue_dir / "state").mkdir(parents=True)
    (rogue_dir / "state" / "server-id").write_text(server_id + "\n")
    rogue = Daemon(rogue_dir, args=["--name", "lab"]).start()
    try:
        assert rogue.tls is not None and rogue.fingerprint != real.fingerprint
        for where in (["--server", f"127.0.0.1:{rogue.tls[1]}"], _discover_args(rogue)):
            refused = run_client([*where, "--plain", "--pin", "1234", "--name", "ann"],
                                 env, input="secret\n")
            assert refused.returncode == 1
            assert f"THE KEY OF lab ({server_id}) HAS CHANGED" in refused.stderr
            assert real.fingerprint in refused.stderr and rogue.fingerprint in refused.stderr
            assert f"lanchat --forget {server_id}" in refused.stderr
        # Over plain text the known server is refused too: it is known to speak TLS.
        plain = run_client(["--server", f"127.0.0.1:{rogue.tcp[1]}", "--plain", "--pin",
                            "1234", "--name", "ann"], env, input="secret\n")
        assert plain.returncode == 1 and "is known to speak TLS" in plain.stderr
        events = rogue.log_entries()
        assert not [e for e in events if e["event"] in ("join", "join_refused")], events
        # Seeing both, --discover lists both, with their keys and which one is known.
        both = run_client(["--discover", *_discover_args(real), *_discover_args(rogue)], env)
        rows = sorted(line.split("\t")[4:] for line in both.stdout.splitlines())
        assert rows == sorted([[f"127.0.0.1:{real.tls[1]}", str(real.fingerprint), "known"],
                               [f"127.0.0.1:{rogue.tls[1]}", str(rogue.fingerprint),
                                "KEY-CHANGED"]])
        # Discovery that hears both joins the real one and says why not the other.
        chose = run_client([*_discover_args(rogue), *_discover_args(real), "--plain",
                            "--pin", "1234", "--name", "ann"], env, input="right one\n")
        assert chose.returncode == 0, chose.stderr
        assert f"Refusing the server answering at 127.0.0.1:{rogue.tls[1]}" in chose.stderr
        # The administrator confirms a new key: forget the old one, and it is pinned anew.
        forgot = run_client(["--forget", server_id], env)
        assert forgot.returncode == 0, forgot.stderr
        assert server_id not in (tmp_path / "home" / "data" / "lanchat" / "known_servers") \
            .read_text()
        assert run_client(["--forget", server_id], env).returncode == 1
        taken = run_client(["--server", f"127.0.0.1:{rogue.tls[1]}", "--plain", "--pin",
                            "1234", "--name", "ann"], env, input="now trusted\n")
        assert taken.returncode == 0 and "First contact" in taken.stderr
    finally:
        rogue.__exit__(None, None, None)


def test_insecure_and_servers_without_tls_are_the_only_plain_text(
        start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    daemon = start_daemon(args=["--no-tls"])
    assert daemon.tls is None and "fingerprint=" not in daemon.ready_line
    env = client_env(tmp_path / "home")
    found = run_client(["--discover", *_discover_args(daemon)], env)
    assert found.stdout.split("\t")[4:] == ["-", "-", "no-tls\n"]
    old = run_client([*_discover_args(daemon), "--plain", "--pin", "1111", "--name", "o"], env,
                     input="plain\n")
    assert old.returncode == 0 and "not encrypted" in old.stderr
    both = start_daemon()
    assert both.tls is not None
    chose = run_client([*_discover_args(both), "--insecure", "--plain", "--pin", "1111",
                        "--name", "i"], env, input="by choice\n")
    assert chose.returncode == 0 and "not encrypted" in chose.stderr


def test_a_restarted_server_is_rejoined_over_tls_and_an_impostor_is_not(
        start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    first = start_daemon()
    assert first.tls is not None
    port = first.tls[1]
    state = first.state_dir
    args = ["--server", f"127.0.0.1:{port}", "--pin", "1234", "--name", "ci"]
    with ClientProcess(args, client_env(tmp_path / "home")) as client:
        client.wait_for("In room 1234 as ci")
        first.stop()
        client.wait_for("Connection lost")
        # The same daemon again (its key is kept in its state directory): rejoined.
        again = start_daemon(args=["--tls-port", str(port), "--state-dir", str(state)])
        assert again.fingerprint == first.fingerprint
        client.wait_for("Back in room 1234 as ci")
        with again.json_client() as watcher:
            watcher.join("1234", "watcher")
            client.write("after the restart\n")
            assert watcher.recv_until(lambda e: e.get("type") == "message")["text"] == \
                "after the restart"
        again.stop()
        client.wait_for("Connection lost")
        # Another machine takes the address with the same id and its own key: the
        # reconnect stops there, before the PIN, and the session ends saying why.
        rogue_state = tmp_path / "rogue-state"
        rogue_state.mkdir()
        (rogue_state / "server-id").write_text((state / "server-id").read_text())
        rogue = start_daemon(args=["--tls-port", str(port), "--state-dir", str(rogue_state)])
        client.wait_for("HAS CHANGED")
        code, _out, err = client.finish()
    assert code == 1 and "lanchat --forget" in err
    assert not [e for e in rogue.log_entries() if e["event"] in ("join", "refused_join")]


def test_the_doctor_says_whether_the_key_is_the_one_remembered(
        start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    daemon = start_daemon(args=["--name", "lab"])
    env = client_env(tmp_path / "home")
    doctor = ["doctor", "--host", "127.0.0.1", "--discovery-port", str(daemon.udp[1]),
              "--no-mdns", "--wait", "1"]
    before = run_client(doctor, env)
    assert f"TLS fingerprint {daemon.fingerprint}" in before.stdout, before.stdout
    assert "not met before" in before.stdout
    joined = run_client([*_discover_args(daemon), "--plain", "--pin", "1234", "--name", "a"],
                        env, input="hi\n")
    assert joined.returncode == 0, joined.stderr
    after = run_client(doctor, env)
    assert "the key this client remembers for this server" in after.stdout, after.stdout


def test_https_for_the_browser_client_uses_the_same_key(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[web]\nhttps = true\n")
    assert daemon.http is not None and daemon.page is not None
    assert daemon.page.startswith("https://")
    context = tls.client_context()
    with socket.create_connection(daemon.http, timeout=10) as raw, \
            context.wrap_socket(raw) as page:
        der = page.getpeercert(binary_form=True)
        assert der is not None and tls.certificate_fingerprint(der) == daemon.fingerprint
        host, port = daemon.http
        page.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
                     .encode())
        answer = b""
        while chunk := page.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")


# ------------------------------------------------------------------ refused over TLS

REFUSED = {
    "standby": ({"args": ["--initial-state", "standby"]},
                "The server is in standby and accepts no new people."),
    "stopped": ({"args": ["--initial-state", "stopped"]},
                "The server is stopped and accepts no new people."),
    "full": ({"config": "[limits]\nmax_connections = 1\n"},
             "The server has too many connections."),
}


@pytest.mark.parametrize("state", sorted(REFUSED))
def test_a_refused_tls_client_reads_the_same_refusal_as_a_plain_one(
        start_daemon: Callable[..., Daemon], tmp_path: Path, state: str) -> None:
    how, said = REFUSED[state]
    daemon = start_daemon(**how)
    assert daemon.tls is not None
    holder = daemon.json_client() if state == "full" else None  # the one connection
    try:
        with TextClient(daemon.tcp) as plain:
            assert plain.greeting is not None and plain.greeting.startswith(
                f"LANCHAT/1 {state} ")
            assert plain.read_all() == []
        # Over TLS: the handshake is finished, then the very same line, then the end.
        with TextClient(daemon.tls, tls=True) as secure:
            assert secure.greeting == plain.greeting
            assert secure.read_all() == []
        # And the user of the client reads why, as over plain text.
        result = run_client(["--server", f"127.0.0.1:{daemon.tls[1]}", "--pin", "1234",
                             "--name", "ci"], client_env(tmp_path / "home"), input="hello\n")
        assert result.returncode == 1
        assert said in result.stderr and "Nothing was sent" in result.stderr, result.stderr
        assert "before the TLS handshake" not in result.stderr
    finally:
        if holder is not None:
            holder.close()
    refusals = [e["reason"] for e in daemon.log_entries() if e["event"] == "refused_connection"]
    assert refusals == [state] * 3


def test_a_refusal_over_https_is_the_page_of_the_503(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[web]\nhttps = true\n[limits]\nmax_connections = 1\n")
    assert daemon.http is not None
    with daemon.json_client(), socket.create_connection(daemon.http, timeout=10) as raw, \
            tls.client_context().wrap_socket(raw) as page:
        page.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := page.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert body.startswith(b"The server has too many connections.")


def _closed_within(socks: list[socket.socket], seconds: float) -> list[socket.socket]:
    """Those of ``socks`` the server closed (end of file) within ``seconds``."""
    closed: list[socket.socket] = []
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        while len(closed) < len(socks):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _mask in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                assert sock.recv(4096) == b"", "a refused client got bytes before its hello"
                sel.unregister(sock)
                closed.append(sock)
    return closed


def test_a_flood_of_refused_handshakes_is_bounded_in_number_and_time(
        start_daemon: Callable[..., Daemon]) -> None:
    timeout = 3.0
    # (The flood comes from one address: its connection rate is not what is tested.)
    daemon = start_daemon(f"[tls]\ntls_handshake_timeout = {timeout}\n"
                          "[limits]\nmax_connections = 1\nconnection_rate = 10000.0\n"
                          "connection_burst = 10000\n")
    assert daemon.tls is not None
    extra = 20
    with daemon.json_client() as holder:  # the one connection: everyone else is refused
        holder.join("1234", "holder")
        # Connections that never send a ClientHello.  CLOSING_HANDSHAKES of them wait for
        # one (so that the refusal could be sent encrypted); the rest are closed at once.
        started = time.monotonic()
        stalled = [socket.create_connection(daemon.tls, timeout=10)
                   for _ in range(CLOSING_HANDSHAKES + extra)]
        try:
            at_once = _closed_within(stalled, timeout * 0.6)
            assert time.monotonic() - started < timeout, "too slow to tell the two apart"
            assert len(at_once) == extra
            # The waiting ones end with the handshake timeout, not later.
            waiting = [s for s in stalled if s not in at_once]
            assert len(_closed_within(waiting, timeout + 5.0)) == CLOSING_HANDSHAKES
        finally:
            for sock in stalled:
                sock.close()
        # Their places are free again: a real client reads its refusal.
        with TextClient(daemon.tls, tls=True) as late:
            assert late.greeting is not None and late.greeting.startswith("LANCHAT/1 full ")
        # Clients that hang up free their place at once, not at the timeout.
        started = time.monotonic()
        for _ in range(CLOSING_HANDSHAKES + extra):
            socket.create_connection(daemon.tls, timeout=10).close()
        # (A client accepted in the same pass as the hang-ups, before the server read
        # their end, may find no place yet and be closed at once: it tries again.)
        while True:
            assert time.monotonic() - started < timeout, "the places were not freed"
            try:
                with TextClient(daemon.tls, tls=True) as again:
                    assert again.greeting is not None
                    assert again.greeting.startswith("LANCHAT/1 full ")
                    break
            except ssl.SSLEOFError:
                continue
        # The member was never disturbed.
        holder.say("still here")
        assert holder.recv_type("message")["text"] == "still here"

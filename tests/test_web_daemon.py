"""The web port of a real daemon over loopback: WebSocket members among TCP ones, the
page, and hostile HTTP/WebSocket clients that must get a clear refusal and disturb
nobody."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import pytest
from lanchat_testing import Daemon, JsonClient, env_with_repo, socket_activated, udp_query
from web_testing import WsClient, WsRefused, http_exchange, read_response
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request, TextMessage

FAST = "[web]\nhttp_request_timeout = 1.0\n"


def web(daemon: Daemon) -> tuple[str, int]:
    assert daemon.http is not None, daemon.ready_line
    return daemon.http


@contextmanager
def tcp_pair(daemon: Daemon, pin: str = "4242") -> Iterator[Callable[[str], None]]:
    """Two TCP members chatting; ``check(word)`` says and sees it arrive, in order."""
    alice = daemon.json_client()
    bob = daemon.json_client()
    assert alice.join(pin, "alice")["type"] == "joined"
    assert bob.join(pin, "bob")["type"] == "joined"
    alice.recv_type("presence")

    def check(word: str) -> None:
        alice.say(word)
        for member in (alice, bob):
            event = member.recv()
            assert event is not None and (event["type"], event["text"]) == ("message", word), \
                event

    try:
        yield check
    finally:
        alice.close()
        bob.close()


def test_websocket_tcp_and_text_members_share_a_room(start_daemon: Callable[..., Daemon]
                                                      ) -> None:
    daemon = start_daemon()
    with WsClient(web(daemon), hello=True) as carol:
        assert carol.greeting.startswith("LANCHAT/1 ready Welcome to ")
        assert carol.welcome is not None and carol.welcome["type"] == "welcome"
        assert carol.join("1234", "carol")["type"] == "joined"
        alice = daemon.json_client()
        assert alice.join("1234", "alice")["type"] == "joined"
        dave = daemon.text_client()
        dave.join("1234", "dave")
        assert carol.recv_type("presence")["name"] == "alice"
        assert carol.recv_type("presence")["name"] == "dave"
        for i in range(5):
            carol.say(f"from carol {i}")
            alice.say(f"from alice {i}")
        dave.send_line("from dave")
        got = [carol.recv_type("message")["text"] for _ in range(11)]
        assert [t for t in got if "carol" in t] == [f"from carol {i}" for i in range(5)]
        assert [t for t in got if "alice" in t] == [f"from alice {i}" for i in range(5)]
        assert "from dave" in got
        seen = [alice.recv_type("message")["text"] for _ in range(11)]
        assert seen == got  # one room, one order
        assert dave.read_until(lambda line: "from carol 4" in line)
        # Private messages, who, /me, ping: the same protocol.
        carol.send({"type": "msg", "to": "ALICE", "text": "psst"})
        assert alice.recv_type("private") == carol.recv_type("private")
        carol.send({"type": "who"})
        assert carol.recv_type("members")["members"] == ["alice", "carol", "dave"]
        carol.send({"type": "say", "text": "waves", "action": True})
        assert alice.recv_type("message")["action"] is True
        carol.send({"type": "ping", "token": "t1"})
        assert carol.recv_type("pong")["token"] == "t1"
        carol.send({"type": "quit"})
        assert carol.recv_type("bye")["reason"] == "quit"
        assert carol.wait_closed().code == 1000
        leave = alice.recv_type("presence")
        assert (leave["name"], leave["event"]) == ("carol", "leave")


def test_a_websocket_member_gets_history_and_errors_like_any_member(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(config="[limits]\nmax_line_bytes = 100\n")
    alice = daemon.json_client()
    alice.join("5555", "alice")
    alice.say("before you came")
    assert alice.recv_type("message")["text"] == "before you came"
    with WsClient(web(daemon), hello=True) as carol:
        carol.join("5555", "carol")
        past = carol.recv_type("message")
        assert (past["text"], past.get("history")) == ("before you came", True)
        carol.send_text("x" * 100)
        error = carol.recv_type("error")
        assert error["code"] == "line_too_long"
        carol.send_text("{not json")
        assert carol.recv_type("error")["code"] == "bad_json"
        carol.say("still here")
        assert alice.recv_type("message")["text"] == "still here"


def test_the_per_address_limit_counts_web_and_chat_connections_together(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(config="[limits]\nmax_connections_per_address = 2\n")
    first = daemon.json_client()
    with WsClient(web(daemon), hello=True) as second:
        with pytest.raises(WsRefused) as refused:
            WsClient(web(daemon))
        assert refused.value.status == 503
        assert refused.value.body.decode().startswith("The server has too many connections")
        status, _headers, body = http_exchange(
            web(daemon), b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 503 and body.startswith(b"The server has too many connections")
        assert daemon.text_client().greeting.startswith("LANCHAT/1 full ")
        second.join("1234", "web")
        first.join("1234", "tcp")
        second.say("both still served")
        assert first.recv_type("message")["text"] == "both still served"


def test_standby_serves_the_page_and_refuses_its_websocket_with_the_reason(
        start_daemon: Callable[..., Daemon]) -> None:
    """The page is no chat: it loads in standby, and its WebSocket's first message is
    the refusing greeting, which the page shows in its own words."""
    daemon = start_daemon(args=["--initial-state", "standby"])
    status, _headers, body = http_exchange(
        web(daemon), b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status == 200 and body.startswith(b"<!doctype html>")
    with WsClient(web(daemon)) as late:
        assert late.greeting == ("LANCHAT/1 standby The server is in standby and accepts "
                                 "no new clients. Try again later.")
        assert late.wait_closed().code == 1000
    refused = daemon.wait_for_log(lambda e: e["event"] == "refused_connection")
    assert refused["reason"] == "standby"
    assert not [e for e in daemon.log_entries() if e["event"] in ("connect", "disconnect")]


def test_page_loads_stay_out_of_the_activity_log_and_members_do_not(
        start_daemon: Callable[..., Daemon]) -> None:
    """The administrator reads people joining and leaving, not every page fetch: a
    page load is counted (lanchatctl status), a browser member is logged like any."""
    daemon = start_daemon()
    host, port = web(daemon)
    for _load in range(3):
        with socket.create_connection((host, port), timeout=10) as sock:
            for path in ("/", "/app.css", "/app.js", "/lang/en.json", "/favicon.ico"):
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
                assert read_response(sock)[0] == 200, path
    status, _h, _b = http_exchange((host, port), f"GET / HTTP/1.1\r\nHost: {host}\r\n"
                                   "Connection: close\r\n\r\n".encode())
    assert status == 200
    with WsClient((host, port), hello=True) as carol:
        carol.join("1234", "carol")
        carol.send({"type": "quit"})
        carol.wait_closed()
    daemon.wait_for_log(lambda e: e["event"] == "room_empty")
    seen = [(e["event"], e.get("name")) for e in daemon.log_entries()
            if e["event"] in ("connect", "disconnect", "join", "leave")]
    assert seen == [("connect", None), ("join", "carol"), ("leave", "carol")]
    result = subprocess.run(
        [sys.executable, "-m", "lanchatctl", "--socket", str(daemon.control_path), "status",
         "--json"], capture_output=True, text=True, env=env_with_repo(), timeout=20)
    assert result.returncode == 0, result.stderr
    status_doc = json.loads(result.stdout)
    assert status_doc["counters"]["page_connections"] == 4
    assert status_doc["counters"]["connections"] == 1 and status_doc["clients"] == 0


def test_a_request_under_another_name_is_refused_unless_configured(
        start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    """DNS rebinding: a page at evil.example whose name now resolves here has its
    browser send Host and Origin evil.example; neither the page nor the WebSocket."""
    import signal

    daemon = start_daemon(config='[web]\nhttp_host_names = ["chat.school.lan"]\n')
    addr = web(daemon)
    status, headers, body = http_exchange(addr, b"GET / HTTP/1.1\r\nHost: evil.example:5080"
                                          b"\r\n\r\n")
    assert status == 421 and headers["content-type"] == "text/plain; charset=utf-8"
    assert body.startswith(b"This server does not answer to the name 'evil.example'")
    assert f"open the chat page at {daemon.page}".encode() in body
    with pytest.raises(WsRefused) as refused:
        WsClient(addr, origin="http://evil.example:5080", host="evil.example:5080")
    assert refused.value.status == 421
    assert http_exchange(addr, b"GET / HTTP/1.1\r\nHost: chat.school.lan\r\n"
                         b"Connection: close\r\n\r\n")[0] == 200
    hostname = socket.gethostname()
    assert http_exchange(addr, f"GET / HTTP/1.1\r\nHost: {hostname}.local\r\n"
                         "Connection: close\r\n\r\n".encode())[0] == 200
    with WsClient(addr, origin="http://chat.school.lan", host="chat.school.lan",
                  hello=True) as ok:
        assert ok.welcome is not None and ok.welcome["type"] == "welcome"
    reasons = [e["reason"] for e in daemon.log_entries() if e["event"] == "disconnect"]
    assert reasons.count("web request refused: unknown host name") == 2
    # A reload takes a new list (here: every name).
    config = daemon.config_path
    config.write_text('[web]\nhttp_host_names = ["*"]\n')
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log(lambda e: e["event"] == "reload")
    assert http_exchange(addr, b"GET / HTTP/1.1\r\nHost: proxy.example\r\n"
                         b"Connection: close\r\n\r\n")[0] == 200


def test_responses_carry_a_date(start_daemon: Callable[..., Daemon]) -> None:
    from email.utils import parsedate_to_datetime

    daemon = start_daemon()
    before = time.time()
    _s, headers, _b = http_exchange(web(daemon), b"GET /nothing HTTP/1.1\r\n"
                                    b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    date = parsedate_to_datetime(headers["date"]).timestamp()
    assert before - 1 <= date <= time.time() + 1


def test_the_page_and_its_files_are_served(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    host, port = web(daemon)
    assert daemon.page == f"http://{host}:{port}/"
    with socket.create_connection((host, port), timeout=10) as sock:
        for path, kind in (("/", "text/html"), ("/app.js", "text/javascript"),
                           ("/app.css", "text/css"), ("/lang/nb.json", "application/json")):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            status, headers, body = read_response(sock)
            assert status == 200 and headers["content-type"].startswith(kind), path
            assert "'unsafe-inline'" not in headers["content-security-policy"]
            assert len(body) == int(headers["content-length"]) > 0


def test_hostile_clients_get_clear_refusals_and_disturb_nobody(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(config=FAST)
    addr = web(daemon)
    with tcp_pair(daemon) as check:
        check("before")
        status, _h, body = http_exchange(addr, b"GET /" + b"a" * 20000)  # and more to come
        assert (status, body) == (431, b"The request line and header fields are too long "
                                       b"(at most 8192 bytes in all).\n")
        check("after a long request line")
        status, _h, body = http_exchange(
            addr, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (status, body) == (414, b"The address is too long (at most 2048 bytes).\n")
        check("after a long address")
        headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 100) for i in range(100))
        status, _h, body = http_exchange(addr, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers
                                         + b"\r\n")
        assert status == 431 and b"too long" in body
        check("after big headers")
        status, _h, body = http_exchange(addr, b"BREW /pot HTCPCP/1.0\r\n\r\n")
        assert status == 400 and body.startswith(b"Not a valid HTTP/1.1 request")
        check("after big headers")
        with pytest.raises(WsRefused) as refused:
            WsClient(addr, origin="http://evil.example")
        assert refused.value.status == 403
        assert b"not pages from http://evil.example" in refused.value.body
        check("after a foreign origin")
        with WsClient(addr, hello=True) as big:
            frame = big.ws.send(TextMessage(data="x" * (2 << 20)))
            with contextlib.suppress(OSError):  # the daemon may close while we send
                big.send_raw(frame)
            assert big.wait_closed().code == 1009
        check("after an oversized frame")
        with socket.create_connection(addr, timeout=10) as half_open:
            half_open.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
            status, _h, body = read_response(half_open, timeout=5)
            assert (status, body) == (408, b"The request did not arrive within 1 seconds.\n")
        with socket.create_connection(addr, timeout=10) as silent:
            assert silent.recv(100) == b""  # closed after 1 s, no answer to nothing
        check("after slow clients")
    refused = [e for e in daemon.log_entries() if e.get("event") == "disconnect"]
    reasons = {e["reason"] for e in refused}
    assert {"web request refused: malformed HTTP", "web request refused: foreign origin",
            "web request refused: address too long", "web request refused: head too long",
            "websocket: message too big", "web request timed out"} <= reasons
    # A connection that just stays open is what browsers do after a page load (their
    # spare keep-alive sockets): it is closed, and not logged.
    assert "web connection idle" not in reasons


def test_a_websocket_client_that_pipelines_its_first_frames(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    host, port = web(daemon)
    client = WSConnection(ConnectionType.CLIENT)
    data = client.send(Request(host=f"{host}:{port}", target="/ws"))
    with socket.create_connection((host, port), timeout=10) as sock:
        # The upgrade request and a hello in one write: the hello must not be lost.
        hello = '{"type":"hello","versions":[1]}'
        # Frames can only be made once wsproto's client is open; build them by hand
        # with a second, already-open client connection of wsproto.
        from wsproto.connection import Connection
        framer = Connection(ConnectionType.CLIENT)
        sock.sendall(data + framer.send(TextMessage(data=hello)))
        buf = b""
        while b"welcome" not in buf:
            chunk = sock.recv(65536)
            assert chunk, buf
            buf += chunk
        assert buf.startswith(b"HTTP/1.1 101 ")


def test_no_http_turns_the_web_port_off(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(args=["--no-http"])
    assert " http=" not in daemon.ready_line and " page=" not in daemon.ready_line
    assert daemon.http is None
    reply = udp_query(("127.0.0.1", daemon.udp[1]),
                      b'{"type":"discover","version":1,"nonce":"n"}')
    assert reply is not None and "http_port" not in json.loads(reply)


def test_lanchatctl_status_shows_the_web_port(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    host, port = web(daemon)
    result = subprocess.run(
        [sys.executable, "-m", "lanchatctl", "--socket", str(daemon.control_path), "status"],
        capture_output=True, text=True, env=env_with_repo(), timeout=20)
    assert result.returncode == 0, result.stderr
    assert f"http {host}:{port}" in result.stdout


def test_a_reload_does_not_disturb_web_members(start_daemon: Callable[..., Daemon]) -> None:
    import signal
    daemon = start_daemon()
    with WsClient(web(daemon), hello=True) as carol:
        carol.join("1234", "carol")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log(lambda e: e["event"].startswith("reload"))
        other = JsonClient(daemon.tcp)
        other.join("1234", "x")
        carol.say("after reload")
        assert other.recv_type("message")["text"] == "after reload"


def test_the_web_socket_comes_from_the_service_manager(tmp_path: Path) -> None:
    chat = socket.create_server(("127.0.0.1", 0))
    http = socket.create_server(("127.0.0.1", 0))
    args = ["--discovery-port", "0", "--log-file", str(tmp_path / "activity.log"),
            "--state-dir", str(tmp_path / "state"),
            "--control-socket", str(tmp_path / "control.sock"),
            "--config", str(tmp_path / "none.toml")]
    (tmp_path / "none.toml").write_text("")
    child = socket_activated((chat, http), ("chat", "http"), ["-m", "lanchatd", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None
        ready = child.stdout.readline()
        port = http.getsockname()[1]
        assert f" http=127.0.0.1:{port} page=http://127.0.0.1:{port}/ " in ready, ready
        with WsClient(("127.0.0.1", port), hello=True) as member:
            assert member.join("123456", "activated")["type"] == "joined"
    finally:
        child.terminate()
        child.wait(10)
        chat.close()
        http.close()

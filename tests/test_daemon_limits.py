"""Every configurable limit of the daemon, over loopback against the real daemon.

Limits are configured small (a 0.3 s handshake timeout, a 64 kB output cap) so each
test is quick; every wait is for something the daemon does, bounded by a timeout.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Callable

from lanchat_testing import Daemon, JsonClient

TIMEOUT = 10.0


class Raw:
    """A JSON client connecting from a chosen loopback address (127.0.0.2 is another host)."""

    def __init__(self, daemon: Daemon, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(daemon.tcp, timeout=TIMEOUT,
                                             source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> str | None:
        raw = self.file.readline()
        return raw.decode("utf-8").rstrip("\n") if raw else None

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self) -> dict[str, Any]:
        line = self.line()
        assert line is not None, "the daemon closed the connection"
        return json.loads(line)

    def join(self, pin: str, name: str) -> dict[str, Any]:
        self.send({"type": "hello", "versions": [1]})
        assert self.recv()["type"] == "welcome"
        self.send({"type": "join", "pin": pin, "name": name})
        return self.recv()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def closed_after(client: JsonClient) -> list[dict[str, Any]]:
    """Every event until the daemon closes the connection."""
    return [json.loads(line) for line in client.read_all()]


# --------------------------------------------------------------------- input


def test_a_line_over_the_limit_gets_an_error_and_the_session_goes_on(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[limits]\nmax_line_bytes = 200\n")
    client = daemon.json_client()
    assert (client.welcome or {})["max_line"] == 200
    client.join("1234", "alice")
    client.say("x" * 500)
    error = client.recv_type("error")
    assert (error["code"], error["message"]) == ("line_too_long",
                                                 "A line may be at most 200 bytes.")
    client.send_raw(b"y" * 300_000)  # a huge line, no newline yet: never buffered whole
    assert client.recv_type("error")["code"] == "line_too_long"
    client.send_raw(b"\n")
    client.say("short again")
    assert client.recv_type("message")["text"] == "short again"
    nc = daemon.text_client()
    nc.join("1234", "bob")
    nc.send_line("z" * 300)
    assert nc.read_until(lambda line: line.startswith("!")) == (
        "! A line may be at most 200 bytes.")


def test_invalid_utf8_and_json_get_error_replies_then_a_disconnect(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[limits]\nmax_errors = 2\n")
    watcher = daemon.json_client()
    watcher.join("1234", "watcher")
    client = daemon.json_client()
    client.join("1234", "alice")
    client.send_raw(b'{"type":"say","text":"caf\xe9"}\n')
    error = client.recv_type("error")
    assert (error["code"], error["message"]) == ("bad_utf8",
                                                 "The line is not valid UTF-8 (byte 25).")
    client.send_raw(b'{"type":"say",\n')
    assert client.recv_type("error")["code"] == "bad_json"
    client.say("errors so far are forgiven one by one")
    assert client.recv_type("message")["seq"] == 1
    client.send_raw(b"[]\n")
    events = closed_after(client)
    assert [e["type"] for e in events] == ["bye"]
    assert events[0]["reason"] == "too_many_errors"
    assert events[0]["message"] == ("Disconnected after 3 protocol errors; last: Each JSON "
                                    "line must be an object.")
    presence = watcher.recv_type("presence", timeout=TIMEOUT)
    while presence["event"] != "leave":
        presence = watcher.recv_type("presence")
    assert presence["name"] == "alice"
    codes = [e["code"] for e in daemon.log_entries() if e["event"] == "protocol_error"]
    assert codes == ["bad_utf8", "bad_json", "bad_request"]


def test_plain_text_invalid_utf8_is_answered_too(daemon: Daemon) -> None:
    nc = daemon.text_client()
    nc.join("1234", "alice")
    nc.send_raw(b"gr\xfc\xdfe\n")
    assert nc.read_line() == "! The line is not valid UTF-8 (byte 2)."
    nc.send_line("grüße")
    assert nc.read_line().endswith(" alice: grüße")


# --------------------------------------------------------------------- time limits


def test_handshake_timeout_closes_connections_that_never_join(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[limits]\nhandshake_timeout = 0.3\n")
    silent = daemon.text_client()
    program = daemon.json_client()
    asked_pin = daemon.text_client()
    asked_pin.send_line("1234")
    assert asked_pin.read_line() == "Enter your name:"
    member = daemon.json_client()
    member.join("1234", "member")
    start = time.monotonic()
    bye = {"type": "bye", "reason": "handshake_timeout",
           "message": "Disconnected: no room joined within 0.3 seconds."}
    # Silent so far, so most likely a person at nc: told in plain text.
    assert silent.read_all() == ["! Disconnected: no room joined within 0.3 seconds."]
    assert closed_after(program) == [bye]
    assert asked_pin.read_all() == ["! Disconnected: no room joined within 0.3 seconds."]
    assert time.monotonic() - start < 5
    member.send({"type": "who"})  # joined in time: not affected
    assert member.recv_type("members")["members"] == ["member"]
    entries = [e for e in daemon.log_entries() if e["event"] == "disconnect"]
    assert [e["reason"] for e in entries] == ["handshake_timeout"] * 3


def test_keepalive_ping_then_disconnect_when_unanswered(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[limits]\nkeepalive_interval = 0.3\nkeepalive_timeout = 0.3\n")
    silent = daemon.json_client()
    silent.join("1234", "silent")
    lively = daemon.json_client()
    lively.join("1234", "lively")
    nc = daemon.text_client()  # a person at a prompt is never pinged
    nc.join("1234", "person")
    assert silent.recv_type("ping") == {"type": "ping", "token": "keepalive"}
    # lively answers every ping until the silent one is gone
    pings = 0
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        event = lively.recv_until(lambda e: e["type"] in ("ping", "presence"))
        if event["type"] == "ping":
            pings += 1
            lively.send({"type": "pong", "token": event["token"]})
        elif event["event"] == "leave":
            assert (event["name"], event["reason"]) == ("silent", "timed out")
            break
    events = closed_after(silent)
    assert events[-1] == {"type": "bye", "reason": "idle_timeout",
                          "message": "Disconnected: no answer to the keep-alive ping."}
    assert pings >= 1
    lively.send({"type": "who"})
    assert lively.recv_type("members")["members"] == ["lively", "person"]
    nc.send_line("/who")
    assert nc.read_until(lambda line: line.startswith("* In room")) == (
        "* In room 1234: lively, person")


# --------------------------------------------------------------------- output


def test_flood_control_reads_a_fast_sender_more_slowly_and_tells_it_once(
        start_daemon: Callable[..., Daemon]) -> None:
    """Past its burst a sender's lines are read at the rate (fakelag): none is refused
    or lost, they arrive in order, and the sender is told once, not once a line."""
    daemon = start_daemon("[limits]\nmessage_rate = 4.0\nmessage_burst = 2\n")
    listener = daemon.json_client()
    listener.join("1234", "listener")
    sender = daemon.json_client()
    sender.join("1234", "sender")
    started = time.monotonic()
    for i in range(6):
        sender.say(f"m{i}")
    events = [sender.recv_until(lambda e: e["type"] in ("message", "error"))
              for _ in range(7)]
    elapsed = time.monotonic() - started
    errors = [e for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["throttled"], errors
    assert errors[0]["message"].startswith("You are sending faster than 4 lines a second")
    assert [e["text"] for e in events if e["type"] == "message"] == [f"m{i}" for i in range(6)]
    assert elapsed >= (6 - 2) / 4.0 * 0.8  # paced at the rate, not all at once
    assert [listener.recv_type("message")["text"] for _ in range(6)] == [
        f"m{i}" for i in range(6)]
    nc = daemon.text_client()
    nc.join("1234", "typist")
    nc.send_line("one\ntwo\nthree\nfour")
    assert nc.read_until(lambda line: line.startswith("!")).startswith(
        "! You are sending faster than 4 lines a second")
    listener_texts = [listener.recv_type("message")["text"] for _ in range(4)]
    assert listener_texts == ["one", "two", "three", "four"]


def test_a_reader_that_never_reads_is_disconnected_and_others_are_not(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[limits]\noutput_buffer_bytes = 65536\nmessage_rate = 100000.0\n"
                          "message_burst = 100000\n")
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.settimeout(TIMEOUT)
    stuck.connect(daemon.tcp)
    stuck.sendall(b'{"type":"hello","versions":[1]}\n'
                  b'{"type":"join","pin":"1234","name":"stuck"}\n')
    sender = daemon.json_client()
    assert sender.join("1234", "sender")["members"] == ["sender", "stuck"]
    reader = daemon.json_client()
    reader.join("1234", "reader")
    text = "x" * 1900
    sent = 0
    left: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while not left and sent < 20_000 and time.monotonic() < deadline:
        sender.say(text)
        sent += 1
        while True:  # the reader reads everything, as fast as it comes
            event = reader.recv_until(lambda e: e["type"] in ("message", "presence"))
            if event["type"] == "presence":
                left = event
                break
            if event["seq"] == sent:
                break
        sender.recv_until(lambda e, n=sent: e.get("seq") == n)
    assert (left["name"], left["event"], left["reason"]) == ("stuck", "leave", "not reading")
    # The others go on as if nothing happened.
    sender.say("still fine")
    for member in (reader, sender):
        member.recv_until(lambda e: e.get("text") == "still fine")
    entry = daemon.wait_for_log(lambda e: e["event"] == "leave" and e["name"] == "stuck")
    assert entry["reason"] == "not reading"
    assert not any(e["event"] == "leave" and e["name"] != "stuck"
                   for e in daemon.log_entries())
    # What the stuck reader finds when it finally reads: the reason, then the end.
    data = b""
    while True:
        chunk = stuck.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    stuck.close()
    last = json.loads(data.splitlines()[-1])
    assert last["type"] == "bye" and last["reason"] == "slow_reader"
    assert "more than 65536 bytes queued" in last["message"]


# --------------------------------------------------------------------- per address


def test_max_connections_in_total(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[limits]\nmax_connections = 3\n")
    first = Raw(daemon)
    kept = [Raw(daemon), Raw(daemon, "127.0.0.2")]
    refused = Raw(daemon, "127.0.0.3")
    assert refused.greeting == ("LANCHAT/1 full The server has too many connections. "
                                "Try again later.")
    assert refused.line() is None
    first.close()
    daemon.wait_for_log(lambda e: e["event"] == "disconnect")
    again = Raw(daemon, "127.0.0.3")
    assert again.greeting is not None and again.greeting.startswith("LANCHAT/1 ready ")
    for client in (*kept, refused, again):
        client.close()
    refusals = [e for e in daemon.log_entries() if e["event"] == "refused_connection"]
    assert [(e["addr"].split(":")[0], e["reason"]) for e in refusals] == [("127.0.0.3", "full")]


def test_max_connections_per_address(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[limits]\nmax_connections_per_address = 2\n")
    mine = [Raw(daemon), Raw(daemon)]
    third = Raw(daemon)
    assert third.greeting is not None and third.greeting.startswith("LANCHAT/1 full ")
    assert third.line() is None
    neighbour = Raw(daemon, "127.0.0.2")
    assert neighbour.greeting is not None and neighbour.greeting.startswith("LANCHAT/1 ready ")
    assert neighbour.join("1234", "neighbour")["type"] == "joined"
    for client in (*mine, third, neighbour):
        client.close()


def test_join_attempts_are_rate_limited_per_address(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[limits]\njoin_burst = 2\njoin_rate = 0.01\n")
    guesser = Raw(daemon)
    assert guesser.join("1111", "guesser")["type"] == "joined"
    second = Raw(daemon)
    assert second.join("1111", "GUESSER")["code"] == "name_taken"  # a refused try counts
    second.send({"type": "join", "pin": "2222", "name": "guesser"})
    error = second.recv()
    assert (error["code"], error["ref"]) == ("join_rate_limited", "join")
    assert error["message"] == ("Too many join attempts from your address; try again in "
                                "100 seconds.")
    nc = daemon.text_client()
    nc.send_line("3333")
    nc.read_until(lambda line: line == "Enter your name:")
    nc.send_line("mallory")
    assert nc.read_line() == ("! Too many join attempts from your address; try again in "
                              "100 seconds.")
    other = Raw(daemon, "127.0.0.2")
    assert other.join("2222", "other")["type"] == "joined"
    refusals = [e["reason"] for e in daemon.log_entries() if e["event"] == "refused_join"]
    assert refusals == ["name_taken", "join_rate_limited", "join_rate_limited"]
    for client in (guesser, second, other):
        client.close()

"""Chat over loopback against the real daemon: what people with nc and programs see.

Every test starts ``python -m lanchatd`` on port 0 with temporary paths and waits for
its readiness line (tests/lanchat_testing.py); every wait below is bounded.
"""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any, Callable

from lanchat_testing import Daemon, JsonClient, TextClient

CLOCK = r"\[\d\d:\d\d:\d\d\]"
TIMEOUT = 10.0
# All test clients come from 127.0.0.1, which the default join rate (a burst of 10)
# would soon refuse; tests that join more often than that raise it.
MANY_JOINS = "[limits]\njoin_burst = 1000\n"


class Nc:
    """What ``nc 127.0.0.1 PORT`` is: a raw TCP socket, lines in and out."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.sock = socket.create_connection(addr, timeout=TIMEOUT)
        self.buf = b""

    def type(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\n")

    def line(self) -> str | None:
        """The next line the server sends, or None once it has closed the connection."""
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                return None
            self.buf += data
        raw, _, self.buf = self.buf.partition(b"\n")
        return raw.decode("utf-8")

    def until(self, pattern: str) -> str:
        seen = []
        while True:
            line = self.line()
            assert line is not None, f"closed before a line matching {pattern!r}; saw {seen}"
            if re.fullmatch(pattern, line):
                return line
            seen.append(line)

    def close(self) -> None:
        self.sock.close()


def closed_events(client: JsonClient) -> list[dict[str, Any]]:
    """Every event until the daemon closes the connection."""
    return [json.loads(line) for line in client.read_all()]


def settle(clients: list[Any], pin: str, daemon: Daemon) -> list[list[Any]]:
    """Everything each client received up to a marker sent to room ``pin`` after now.

    The marker comes from a new member who joins after the earlier lines were sent, so
    the daemon has read them all by then: whatever they caused is in each list.
    """
    marker = JsonClient(daemon.tcp)
    joined = marker.join(pin, f"sync{time.monotonic_ns() % 10**9}")
    assert joined["type"] == "joined", joined
    marker.say("--sync--")
    received: list[list[Any]] = []
    for client in clients:
        seen: list[Any] = []
        if isinstance(client, JsonClient):
            client.recv_until(lambda e, seen=seen: e.get("text") == "--sync--"
                              or bool(seen.append(e)))
        else:
            client.read_until(lambda line, seen=seen: line.endswith(": --sync--")
                              or bool(seen.append(line)))
        received.append(seen)
    marker.close()
    return received


# --------------------------------------------------------------------- plain-text mode


def test_plain_text_session_through_a_raw_socket(daemon: Daemon) -> None:
    nc = Nc(daemon.tcp)
    greeting = nc.line()
    assert greeting is not None
    assert re.fullmatch(r"LANCHAT/1 ready Welcome to .+ \(lanchatd 0\.1\.0\)\. "
                        r"Enter the room PIN:", greeting)
    nc.type("12")
    assert nc.line() == "! A room PIN is 4 to 12 digits (0-9)."
    assert nc.line() == "Enter the PIN of the room you want to join:"
    nc.type("2468")
    assert nc.line() == "Enter your name:"
    nc.type("alice")
    assert nc.line() == "* You are in room 2468 as alice. Here: alice. Type /help for commands."
    nc.type("hello, is anyone here?")
    assert re.fullmatch(CLOCK + r" alice: hello, is anyone here\?", nc.line() or "")
    nc.type("/who")
    assert nc.line() == "* In room 2468: alice"
    nc.type("/quit")
    assert nc.line() == "! Goodbye."
    assert nc.line() is None
    nc.close()
    daemon.wait_for_log(lambda e: e["event"] == "leave" and e["reason"] == "quit")


def test_two_nc_users_chat_in_the_same_room(daemon: Daemon) -> None:
    alice, bob = Nc(daemon.tcp), Nc(daemon.tcp)
    for nc, name in ((alice, "alice"), (bob, "bob")):
        nc.until("LANCHAT/1 ready .*")
        nc.type("5000")
        nc.until("Enter your name:")
        nc.type(name)
        nc.until(rf"\* You are in room 5000 as {name}\..*")
    assert re.fullmatch(CLOCK + r" --> bob joined", alice.line() or "")
    alice.type("hi bob")
    assert re.fullmatch(CLOCK + " alice: hi bob", bob.line() or "")
    bob.type("hi alice, nice weather")
    alice.until(CLOCK + " alice: hi bob")  # her own line comes back first
    assert re.fullmatch(CLOCK + " bob: hi alice, nice weather", alice.line() or "")
    bob.type("/me waves")
    assert re.fullmatch(CLOCK + r" \* bob waves", alice.until(CLOCK + r" \* bob .*"))
    bob.close()
    alice.until(CLOCK + r" <-- bob left.*")
    alice.close()


def test_text_and_json_users_in_one_room(daemon: Daemon) -> None:
    person = daemon.text_client()
    person.join("7777", "alice")
    program = daemon.json_client()
    joined = program.join("7777", "bob")
    assert joined == {"type": "joined", "room": "7777", "name": "bob",
                      "members": ["alice", "bob"], "state": "active"}
    person.read_until(lambda line: line.endswith("--> bob joined"))
    person.send_line("from nc")
    message = program.recv_type("message")
    assert set(message) == {"type", "room", "seq", "ts", "from", "text"}
    assert (message["room"], message["seq"], message["from"], message["text"]) == (
        "7777", 1, "alice", "from nc")
    assert abs(message["ts"] - time.time()) < 30
    program.say("from a program")
    line = person.read_until(lambda line: "from a program" in line)
    assert re.fullmatch(CLOCK + " bob: from a program", line)
    assert program.recv_type("message")["seq"] == 2


def test_rooms_are_isolated_with_several_clients_in_several_rooms(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(MANY_JOINS)
    rooms: dict[str, list[Any]] = {"1111": [], "2222": [], "3333": []}
    for pin, members in rooms.items():
        for i in range(2):
            client = daemon.json_client()
            assert client.join(pin, f"j{pin}{i}")["type"] == "joined"
            members.append(client)
        text = daemon.text_client()
        text.join(pin, f"t{pin}")
        members.append(text)
    for pin, members in rooms.items():
        for i, member in enumerate(members):
            if isinstance(member, JsonClient):
                member.say(f"room {pin} line {i}")
            else:
                member.send_line(f"room {pin} line {i}")
    for pin, members in rooms.items():
        expected = {f"room {pin} line {i}" for i in range(3)}
        for member, seen in zip(members, settle(members, pin, daemon)):
            if isinstance(member, JsonClient):
                said = [e for e in seen if e["type"] == "message"]
                assert {e["room"] for e in said} == {pin}
                assert {e["text"] for e in said} == expected
                assert sorted(e["seq"] for e in said) == [1, 2, 3]
            else:
                said = [line for line in seen if " line " in line]
                assert {line.split(": ", 1)[1] for line in said} == expected, seen


def test_join_and_leave_are_announced_to_the_room_and_logged(daemon: Daemon) -> None:
    watcher = daemon.json_client()
    watcher.join("4321", "watcher")
    other_room = daemon.json_client()
    other_room.join("9999", "elsewhere")
    person = daemon.text_client()
    person.join("4321", "alice")
    presence = watcher.recv_type("presence")
    assert (presence["room"], presence["name"], presence["event"]) == ("4321", "alice", "join")
    program = daemon.json_client()
    program.join("4321", "bob")
    assert watcher.recv_type("presence")["name"] == "bob"
    line = person.read_until(lambda line: "bob" in line)
    assert re.fullmatch(CLOCK + r" --> bob joined", line)
    person.close()
    presence = watcher.recv_type("presence")
    assert (presence["name"], presence["event"]) == ("alice", "leave")
    program.send({"type": "quit"})
    assert program.recv_type("bye")["reason"] == "quit"
    assert program.read_line() is None
    presence = watcher.recv_type("presence")
    assert (presence["name"], presence["event"]) == ("bob", "leave")
    other_room.send({"type": "who"})
    assert other_room.recv_type("members")["members"] == ["elsewhere"]  # saw none of it
    joins = {(e["room"], e["name"]) for e in daemon.log_entries() if e["event"] == "join"}
    assert {("4321", "alice"), ("4321", "bob"), ("9999", "elsewhere")} <= joins
    daemon.wait_for_log(lambda e: e["event"] == "leave" and e["name"] == "bob")


def test_who_and_private_messages_across_modes(daemon: Daemon) -> None:
    alice = daemon.text_client()
    alice.join("1357", "alice")
    bob = daemon.json_client()
    bob.join("1357", "Bob")
    carol = daemon.json_client()
    carol.join("1357", "carol")
    alice.send_line("/who")
    assert alice.read_until(lambda line: line.startswith("* In room")) == (
        "* In room 1357: alice, Bob, carol")
    alice.send_line("/msg bob just between us")
    private = bob.recv_type("private")
    assert (private["from"], private["to"], private["text"]) == ("alice", "Bob",
                                                                 "just between us")
    mine = alice.read_until(lambda line: "(private)" in line)
    assert re.fullmatch(CLOCK + r" \(private\) alice -> Bob: just between us", mine)
    bob.send({"type": "msg", "to": "ALICE", "text": "got it"})
    line = alice.read_until(lambda line: "got it" in line)
    assert re.fullmatch(CLOCK + r" \(private\) Bob -> alice: got it", line)
    bob.send({"type": "msg", "to": "nobody", "text": "?"})
    error = bob.recv_type("error")
    assert (error["code"], error["ref"]) == ("no_such_member", "msg")
    (carol_saw,) = settle([carol], "1357", daemon)
    assert [e["type"] for e in carol_saw if e["type"] not in ("presence", "members")] == []


def test_a_newcomer_gets_the_last_n_messages(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[rooms]\nhistory = 3\n")
    talker = daemon.json_client()
    talker.join("2020", "talker")
    for i in range(5):
        talker.say(f"message {i}")
        talker.recv_type("message")
    late = daemon.json_client()
    assert late.join("2020", "late")["type"] == "joined"
    history = [late.recv_type("message") for _ in range(3)]
    assert [(m["seq"], m["text"], m["history"]) for m in history] == [
        (3, "message 2", True), (4, "message 3", True), (5, "message 4", True)]
    nc = daemon.text_client()
    nc.join("2020", "nc")
    lines = [nc.read_line() for _ in range(3)]
    assert [line.split(" ", 1)[1] for line in lines if line] == [
        "talker: message 2", "talker: message 3", "talker: message 4"]
    talker.say("live")
    assert "history" not in late.recv_type("message")


def test_history_zero_disables_it(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[rooms]\nhistory = 0\n")
    talker = daemon.json_client()
    talker.join("2020", "talker")
    talker.say("before you came")
    talker.recv_type("message")
    late = daemon.json_client()
    late.join("2020", "late")
    talker.say("after")
    assert late.recv_type("message")["text"] == "after"


def test_a_join_sent_with_the_hello_is_answered_after_the_welcome(
        start_daemon: Callable[..., Daemon]) -> None:
    """The lanchat client sends its join right after its hello, without waiting for the
    welcome: the answers come in order, welcome, joined, the history, and the room hears
    the newcomer once."""
    daemon = start_daemon(MANY_JOINS)
    alice = JsonClient(daemon.tcp)
    alice.join("2468", "alice")
    alice.say("before you came")
    nc = Nc(daemon.tcp)
    assert (nc.line() or "").startswith("LANCHAT/1 ready")
    nc.sock.sendall(b'{"type":"hello","versions":[1]}\n'
                    b'{"type":"join","pin":"2468","name":"bob"}\n')
    events = [json.loads(nc.line() or "null") for _ in range(3)]
    assert [e["type"] for e in events] == ["welcome", "joined", "message"], events
    assert events[1]["members"] == ["alice", "bob"]
    assert events[2]["text"] == "before you came" and events[2]["history"] is True
    presence = alice.recv_until(lambda e: e["type"] == "presence")
    assert (presence["name"], presence["event"]) == ("bob", "join")
    nc.close()


def test_a_join_sent_with_a_refused_hello_is_not_served(daemon: Daemon) -> None:
    """No version in common: the error and the goodbye, then the close; the join that
    came with the hello never reaches the room."""
    alice = JsonClient(daemon.tcp)
    alice.join("2468", "alice")
    nc = Nc(daemon.tcp)
    assert (nc.line() or "").startswith("LANCHAT/1 ready")
    nc.sock.sendall(b'{"type":"hello","versions":[2]}\n'
                    b'{"type":"join","pin":"2468","name":"bob"}\n')
    error = json.loads(nc.line() or "null")
    assert (error["type"], error["code"], error["ref"]) == ("error", "unsupported_version",
                                                            "hello")
    bye = json.loads(nc.line() or "null")
    assert (bye["type"], bye["reason"]) == ("bye", "unsupported_version")
    assert nc.line() is None
    nc.close()
    alice.say("anyone?")
    seen: list[dict[str, Any]] = []
    alice.recv_until(lambda e: e.get("text") == "anyone?" or bool(seen.append(e)))
    assert not [e for e in seen if e["type"] == "presence"], seen


# --------------------------------------------------------------------- names and PINs


def test_names_are_unique_ignoring_case_and_nfc(daemon: Daemon) -> None:
    first = daemon.json_client()
    assert first.join("1234", "Zoe\u0301")["name"] == "Zo\u00e9"  # stored in NFC
    second = daemon.json_client()
    error = second.join("1234", "ZO\u00c9")
    assert (error["type"], error["code"]) == ("error", "name_taken")
    assert "already taken" in error["message"]
    assert second.join("1234", "zoe")["type"] == "joined"  # a different name
    nc = daemon.text_client()
    nc.send_line("1234")
    nc.read_until(lambda line: line == "Enter your name:")
    nc.send_line("zo\u00e9")
    assert nc.read_line() == "! The name 'zoé' is already taken in this room."
    assert nc.read_line() == "Enter your name:"
    nc.send_line("x" * 33)
    assert nc.read_line().startswith("! A name is 1 to 32 printable characters")
    assert nc.read_line() == "Enter your name:"
    nc.send_line("Zoë2")
    assert nc.read_line().startswith("* You are in room 1234 as Zoë2.")
    daemon.wait_for_log(lambda e: e["event"] == "refused_join" and e["reason"] == "name_taken")


def test_pin_length_comes_from_the_configuration(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[rooms]\npin_min_length = 6\npin_max_length = 8\n")
    program = daemon.json_client()
    assert (program.welcome or {})["pin_min"] == 6
    error = program.join("12345", "alice")
    assert (error["code"], error["message"]) == ("invalid_pin",
                                                 "A room PIN is 6 to 8 digits (0-9).")
    assert program.join("12a456", "alice")["message"] == "A room PIN is 6 to 8 digits (0-9)."
    assert program.join("123456789", "alice")["code"] == "invalid_pin"
    assert program.join("123456", "alice")["type"] == "joined"
    nc = daemon.text_client()
    nc.send_line("1234")
    assert nc.read_line() == "! A room PIN is 6 to 8 digits (0-9)."
    assert nc.read_line() == "Enter the PIN of the room you want to join:"
    nc.send_line("12345678")
    assert nc.read_line() == "Enter your name:"


# --------------------------------------------------------------------- server states


def test_standby_at_start_refuses_new_connections_with_a_reason(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(args=["--initial-state", "standby"])
    nc = Nc(daemon.tcp)
    assert nc.line() == ("LANCHAT/1 standby The server is in standby and accepts no new "
                         "clients. Try again later.")
    assert nc.line() is None
    daemon.wait_for_log(lambda e: e["event"] == "refused_connection"
                        and e["reason"] == "standby")


def test_stopped_at_start_refuses_new_connections_with_a_reason(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[server]\ninitial_state = \"stopped\"\n")
    client = TextClient(daemon.tcp)
    assert client.greeting == ("LANCHAT/1 stopped The server is stopped and accepts no new "
                               "clients. Try again later.")
    assert client.read_line() is None


# --------------------------------------------------------------------- activity log


def test_activity_log_file_records_the_session_without_message_text(daemon: Daemon) -> None:
    alice = daemon.json_client()
    alice.join("8642", "alice")
    bob = daemon.text_client()
    bob.join("8642", "bob")
    alice.say("the secret plan")
    alice.send({"type": "msg", "to": "bob", "text": "the private plan"})
    alice.send_line("{broken")
    assert alice.recv_type("error")["code"] == "bad_json"
    bob.close()
    daemon.wait_for_log(lambda e: e["event"] == "leave" and e["name"] == "bob")
    entries = daemon.log_entries()
    kinds = [e["event"] for e in entries]
    for kind in ("start", "connect", "room_created", "join", "protocol_error", "leave"):
        assert kind in kinds, kind
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert "plan" not in daemon.log_file.read_text()


def test_log_messages_on_records_the_text(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[log]\nlog_messages = true\nlog_private_messages = true\n")
    alice = daemon.json_client()
    alice.join("8642", "alice")
    bob = daemon.json_client()
    bob.join("8642", "bob")
    alice.say("the open plan")
    assert bob.recv_type("message")["text"] == "the open plan"
    alice.send({"type": "msg", "to": "bob", "text": "the private plan"})
    assert bob.recv_type("private")["text"] == "the private plan"
    message = daemon.wait_for_log(lambda e: e["event"] == "message")
    assert (message["room"], message["name"], message["text"]) == (
        "8642", "alice", "the open plan")
    private = daemon.wait_for_log(lambda e: e["event"] == "private_message")
    assert (private["name"], private["to"], private["text"]) == (
        "alice", "bob", "the private plan")


# --------------------------------------------------------------------- states at run time


def admin(daemon: Daemon, cmd: str, **args: Any) -> dict[str, Any]:
    """One request over the control socket, as ``socat - UNIX-CONNECT:...`` would send it."""
    assert daemon.control is not None, "the daemon has no control socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(daemon.control)
        lines = sock.makefile("rb")
        sock.sendall(b'{"id":1,"cmd":"hello","versions":[1]}\n')
        assert json.loads(lines.readline())["ok"] is True
        sock.sendall(json.dumps({"id": 2, "cmd": cmd, **args}).encode() + b"\n")
        reply = json.loads(lines.readline())
        lines.close()
    assert reply["ok"] is True, reply
    return dict(reply["result"])


def test_standby_members_keep_chatting_and_newcomers_are_refused(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(MANY_JOINS)
    program = daemon.json_client()
    program.join("1234", "program")
    person = daemon.text_client()
    person.join("1234", "person")
    waiting = daemon.json_client()  # said hello, not in a room yet
    admin(daemon, "set_state", state="standby")
    state = program.recv_type("state")
    assert (state["state"], state["text"]) == (
        "standby", "members keep chatting, new clients are refused")
    assert waiting.recv_type("state")["state"] == "standby"
    line = person.read_until(lambda line: "standby" in line)
    assert re.fullmatch(CLOCK + " ! Server is now standby: members keep chatting, new "
                        "clients are refused", line)
    person.send_line("still talking")
    assert program.recv_type("message")["text"] == "still talking"
    program.say("me too")
    assert person.read_until(lambda line: "me too" in line).endswith("program: me too")
    newcomer = Nc(daemon.tcp)
    assert newcomer.line() == ("LANCHAT/1 standby The server is in standby and accepts no "
                               "new clients. Try again later.")
    assert newcomer.line() is None
    error = waiting.join("1234", "late")
    assert (error["type"], error["code"]) == ("error", "standby")
    assert closed_events(waiting)[-1]["reason"] == "standby"
    admin(daemon, "set_state", state="active")
    assert program.recv_type("state")["state"] == "active"
    assert daemon.json_client().join("1234", "welcome back")["type"] == "joined"
    changes = [(e["old"], e["new"]) for e in daemon.log_entries() if e["event"] == "state"]
    assert changes == [("active", "standby"), ("standby", "active")]


def test_stopped_senders_get_an_explicit_error_and_nothing_is_delivered(
        daemon: Daemon) -> None:
    program = daemon.json_client()
    program.join("1234", "program")
    person = daemon.text_client()
    person.join("1234", "person")
    admin(daemon, "set_state", state="stopped")
    assert program.recv_type("state")["state"] == "stopped"
    person.read_until(lambda line: "Server is now stopped" in line)
    program.say("hello?")
    error = program.recv_type("error")
    assert (error["code"], error["ref"], error["message"]) == (
        "stopped", "say", "The server is stopped: your message was not delivered.")
    person.send_line("anyone?")
    assert person.read_line() == "! The server is stopped: your message was not delivered."
    program.send({"type": "msg", "to": "person", "text": "psst"})
    assert program.recv_type("error")["ref"] == "msg"
    refused = Nc(daemon.tcp)
    assert (refused.line() or "").startswith("LANCHAT/1 stopped ")
    admin(daemon, "set_state", state="active")
    program.say("back")
    # The first message the person sees after the restart is this one: nothing was queued.
    line = person.read_until(lambda line: "program:" in line)
    assert line.endswith("program: back")
    assert program.recv_type("message")["seq"] == 1

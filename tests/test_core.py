"""The chat core and the discovery policy, driven by plain calls: no sockets, no sleeping.

A ``Sim`` plays the event loop: it feeds bytes through each connection's plain-TCP
transport (``LineTransport``) to ``ChatCore`` with an explicit ``now``,
collects what the core asks to send to each connection and which connections it closes,
and reads the activity log from the ring (and, in one test, the file).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from lanchat_testing import TEST_PIN_MIN, PlainOwner

from lanchat.protocol import discovery as disc
from lanchat.protocol.chat import END_OF_INPUT
from lanchatd.activity import ActivityLog
from lanchatd.config import Config
from lanchatd.core import AdminError, ChatCore, Effects
from lanchatd.discovery import DiscoveryResponder
from lanchatd.transport import LineTransport

T0 = 1_700_000_000.0
CLOCK = r"\[\d\d:\d\d:\d\d\]"


class Sim:
    """The loop's side of the core: connections, their output, the clock."""

    def __init__(self, log_path: Path | None = None, **settings: Any) -> None:
        # Four-digit PINs in these tests (the shipped default is six: TEST_PIN_MIN).
        self.config = Config(name="lab", **{"pin_min_length": TEST_PIN_MIN, **settings})
        self.log = ActivityLog(path=None if log_path is None else str(log_path))
        self.now = T0
        self.core = ChatCore(self.config, host_name="testhost", server_id="sid-1", now=self.now)
        self.out: dict[int, list[bytes]] = defaultdict(list)
        self.closed: set[int] = set()
        self.next_cid = 1
        self.transports: dict[int, LineTransport] = {}

    # -- driving the core

    def apply(self, fx: Effects) -> Effects:
        for when, event, fields in fx.log:  # the loop's part: the core writes no file
            self.log.record(when, event, **fields)
        for targets, data in fx.sends:
            for cid in targets:
                assert cid not in self.closed, f"bytes queued for closed connection {cid}"
                self.out[cid].append(data)
        self.closed.update(fx.closes)
        return fx

    def advance(self, seconds: float) -> Effects:
        self.now += seconds
        return self.apply(self.core.tick(self.now))

    def connect(self, host: str = "192.168.1.10") -> int:
        cid = self.next_cid
        self.next_cid += 1
        self.apply(self.core.connect(cid, (host, 40000 + cid), self.now))
        return cid

    def feed(self, cid: int, data: bytes) -> Effects:
        transport = self.transports.get(cid)
        if transport is None:
            transport = self.transports[cid] = LineTransport(PlainOwner(),
                                                             self.config.max_line_bytes)
        transport.data_received(data)
        return self.apply(self.core.receive(cid, transport.lines(1 << 30), self.now))

    def line(self, cid: int, text: str) -> Effects:
        return self.feed(cid, text.encode("utf-8") + b"\n")

    def send(self, cid: int, obj: dict[str, Any]) -> Effects:
        return self.line(cid, json.dumps(obj))

    # -- reading what the core sent

    def raw(self, cid: int) -> list[str]:
        """Every line sent to ``cid`` since the last read (and forget them)."""
        data = b"".join(self.out.pop(cid, []))
        assert data == b"" or data.endswith(b"\n")
        return data.decode("utf-8").splitlines()

    def forget(self, *cids: int) -> None:
        """Drop what was sent to ``cids`` so far (greetings, joins, presences): the test
        reads what comes after."""
        for cid in cids:
            self.raw(cid)

    def events(self, cid: int) -> list[dict[str, Any]]:
        """JSON events sent to ``cid`` since the last read (the greeting line skipped)."""
        return [json.loads(line) for line in self.raw(cid) if not line.startswith("LANCHAT/")]

    def types(self, cid: int) -> list[str]:
        return [e["type"] for e in self.events(cid)]

    def entries(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.log.tail() if e["event"] == event]

    # -- people

    def json_member(self, pin: str, name: str, host: str = "192.168.1.10") -> int:
        cid = self.connect(host)
        self.send(cid, {"type": "hello", "versions": [1]})
        self.send(cid, {"type": "join", "pin": pin, "name": name})
        events = self.events(cid)
        assert events[0]["type"] == "welcome"
        assert events[1]["type"] == "joined", events
        return cid

    def text_member(self, pin: str, name: str, host: str = "192.168.1.10") -> int:
        cid = self.connect(host)
        self.line(cid, pin)
        self.line(cid, name)
        lines = self.raw(cid)
        assert any(line.startswith(f"* You are in room {pin} as {name}.") for line in lines), lines
        return cid


# --------------------------------------------------------------------- the handshake


def test_greeting_names_the_protocol_and_asks_for_the_pin() -> None:
    sim = Sim()
    cid = sim.connect()
    assert sim.raw(cid) == [
        "LANCHAT/1 ready Welcome to lab (lanchatd 0.1.0). Enter the room PIN:"]


def test_json_hello_is_welcomed_with_the_server_rules() -> None:
    sim = Sim(pin_min_length=5, pin_max_length=8, max_line_bytes=1000, message_rate=2.0,
              message_burst=3)
    cid = sim.connect()
    sim.send(cid, {"type": "hello", "versions": [1, 7], "client": "test"})
    (welcome,) = sim.events(cid)
    assert welcome == {
        "type": "welcome", "version": 1, "server": "lanchatd/0.1.0", "server_id": "sid-1",
        "name": "lab", "state": "active", "pin_min": 5, "pin_max": 8, "max_line": 1000,
        "rate": 2.0, "burst": 3,
    }


def test_the_greeting_and_the_welcome_follow_the_state_and_a_reload() -> None:
    """Every client gets the same two lines while nothing they say changes (they are
    made once), and the new ones as soon as something does."""
    sim = Sim(message_rate=2.0)

    def greeting(cid: int) -> str:
        (line,) = sim.raw(cid)
        return line

    def welcome(cid: int) -> dict[str, Any]:
        sim.send(cid, {"type": "hello", "versions": [1]})
        (event,) = sim.events(cid)
        return event

    first = sim.connect()
    first_greeting, first_welcome = greeting(first), welcome(first)
    again = sim.connect()
    assert (greeting(again), welcome(again)) == (first_greeting, first_welcome)
    waiting = sim.connect()  # greeted while active, says hello in standby
    assert greeting(waiting) == first_greeting
    sim.apply(sim.core.set_state("standby", "admin", sim.now))
    assert welcome(waiting) == {**first_welcome, "state": "standby"}
    sim.apply(sim.core.set_state("active", "admin", sim.now))
    back = sim.connect()
    assert (greeting(back), welcome(back)) == (first_greeting, first_welcome)
    sim.core.reconfigure(sim.config.replace(name="lab2", message_rate=5.0))
    renamed = sim.connect()
    assert greeting(renamed) == (
        "LANCHAT/1 ready Welcome to lab2 (lanchatd 0.1.0). Enter the room PIN:")
    assert welcome(renamed) == {**first_welcome, "name": "lab2", "rate": 5.0}


def test_hello_without_a_common_version_is_refused_and_closed() -> None:
    sim = Sim()
    cid = sim.connect()
    sim.send(cid, {"type": "hello", "versions": [2, 3]})
    # The error answers the hello; the bye, like every close by the server, says why
    # the connection ends (the client shows it and does not reconnect).
    error, bye = sim.events(cid)
    assert error["type"] == "error" and error["code"] == "unsupported_version"
    assert error["ref"] == "hello"
    assert bye["type"] == "bye" and bye["reason"] == "unsupported_version"
    assert "this server speaks 1" in bye["message"]
    assert cid in sim.closed


def test_json_request_before_hello_is_a_bad_state_error() -> None:
    sim = Sim()
    cid = sim.connect()
    sim.send(cid, {"type": "join", "pin": "1234", "name": "x"})
    (error,) = sim.events(cid)
    assert (error["code"], error["message"]) == (
        "bad_state", "The first JSON message must be a hello.")
    assert cid not in sim.closed


# --------------------------------------------------------------------- plain-text mode


def test_plain_text_dialogue_pin_then_name_then_lines_are_messages() -> None:
    sim = Sim()
    cid = sim.connect()
    sim.forget(cid)
    sim.line(cid, "12ab")
    assert sim.raw(cid) == ["! A room PIN is 4 to 12 digits (0-9).",
                            "Enter the PIN of the room you want to join:"]
    sim.line(cid, "4321")
    assert sim.raw(cid) == ["Enter your name:"]
    sim.line(cid, " ")  # blank lines are skipped, not refused
    assert sim.raw(cid) == []
    sim.line(cid, "bad\x07name")
    lines = sim.raw(cid)
    assert lines[0].startswith("! A name is 1 to 32 printable characters")
    assert lines[1] == "Enter your name:"
    sim.line(cid, "alice")
    assert sim.raw(cid) == [
        "* You are in room 4321 as alice. Here: alice. Type /help for commands."]
    sim.line(cid, "hello, room")
    (line,) = sim.raw(cid)
    assert re.fullmatch(CLOCK + " alice: hello, room", line)
    sim.line(cid, "/me waves")
    assert re.fullmatch(CLOCK + r" \* alice waves", sim.raw(cid)[0])
    sim.line(cid, "//slash stays")
    assert re.fullmatch(CLOCK + " alice: /slash stays", sim.raw(cid)[0])
    sim.line(cid, "/frobnicate")
    assert sim.raw(cid) == ["! Unknown command /frobnicate. Type /help for commands."]
    sim.line(cid, "/help")
    assert sim.raw(cid)[0].startswith("* Commands: /who")
    sim.line(cid, "/quit")
    assert sim.raw(cid) == ["! Goodbye."]
    assert cid in sim.closed


def test_text_prompts_in_norwegian() -> None:
    sim = Sim(text_language="nb")
    cid = sim.connect()
    assert sim.raw(cid)[0].endswith("Skriv inn PIN for rommet:")
    sim.line(cid, "1234")
    assert sim.raw(cid) == ["Skriv inn brukernavn:"]


def test_text_and_json_members_share_a_room() -> None:
    sim = Sim()
    nc = sim.text_member("1234", "alice")
    prog = sim.json_member("1234", "bob")
    assert re.fullmatch(CLOCK + r" --> bob joined", sim.raw(nc)[0])
    sim.line(nc, "hi bob")
    (msg,) = sim.events(prog)
    assert msg == {"type": "message", "room": "1234", "seq": 1, "ts": T0, "from": "alice",
                   "text": "hi bob"}
    assert re.fullmatch(CLOCK + " alice: hi bob", sim.raw(nc)[0])
    sim.now += 1.5
    sim.send(prog, {"type": "say", "text": "hi alice", "action": True})
    assert re.fullmatch(CLOCK + r" \* bob hi alice", sim.raw(nc)[0])
    (msg,) = sim.events(prog)
    assert (msg["seq"], msg["ts"], msg["action"]) == (2, T0 + 1.5, True)


def test_a_room_message_is_encoded_once_per_mode_for_all_members() -> None:
    sim = Sim()
    json_members = [sim.json_member("1234", f"j{i}") for i in range(3)]
    text_members = [sim.text_member("1234", f"t{i}") for i in range(3)]
    fx = sim.send(json_members[0], {"type": "say", "text": "fan-out"})
    assert len(fx.sends) == 2
    (json_targets, json_bytes), (text_targets, text_bytes) = fx.sends
    assert sorted(json_targets) == json_members and sorted(text_targets) == text_members
    assert json.loads(json_bytes)["text"] == "fan-out"
    assert text_bytes.decode().endswith(" j0: fan-out\n")


# --------------------------------------------------------------------- rooms


def test_rooms_are_isolated_and_numbered_separately() -> None:
    sim = Sim()
    a1, a2 = sim.json_member("1111", "ann"), sim.json_member("1111", "al")
    b1, b2 = sim.json_member("2222", "ben"), sim.text_member("2222", "bo")
    sim.forget(a1, a2, b1, b2)
    sim.send(a1, {"type": "say", "text": "in room 1111"})
    sim.send(b1, {"type": "say", "text": "in room 2222"})
    sim.send(b1, {"type": "say", "text": "again 2222"})
    assert [(e["room"], e["seq"], e["text"]) for e in sim.events(a2)] == [
        ("1111", 1, "in room 1111")]
    assert [(e["room"], e["seq"]) for e in sim.events(b1)] == [("2222", 1), ("2222", 2)]
    assert [line.split(" ", 1)[1] for line in sim.raw(b2)] == [
        "ben: in room 2222", "ben: again 2222"]


def test_join_and_leave_are_announced_and_the_last_leave_ends_the_room() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    b = sim.text_member("1234", "bob")
    (presence,) = sim.events(a)
    assert presence == {"type": "presence", "room": "1234", "ts": T0, "name": "bob",
                        "event": "join"}
    sim.feed(b, b"")  # bob's nc ends
    assert b in sim.closed
    (presence,) = sim.events(a)
    assert (presence["name"], presence["event"], presence.get("reason", "")) == (
        "bob", "leave", "")
    c = sim.text_member("1234", "carol")
    sim.forget(a)
    sim.apply(sim.core.disconnected(a, sim.now, "connection error: reset"))
    assert re.fullmatch(CLOCK + r" <-- alice left \(connection error: reset\)", sim.raw(c)[0])
    sim.apply(sim.core.disconnected(c, sim.now, "closed by client"))
    assert sim.core.rooms == {}
    assert sim.entries("room_empty") == [
        {"seq": sim.entries("room_empty")[0]["seq"], "ts": T0,
         "time": "2023-11-14T22:13:20.000Z", "event": "room_empty", "room": "1234"}]


def test_who_lists_the_room_sorted_ignoring_case() -> None:
    sim = Sim()
    a = sim.json_member("1234", "bob")
    t = sim.text_member("1234", "Alice")
    sim.json_member("5678", "zed")
    sim.forget(a)
    sim.send(a, {"type": "who"})
    assert sim.events(a) == [{"type": "members", "room": "1234", "members": ["Alice", "bob"]}]
    sim.line(t, "/who")
    assert sim.raw(t) == ["* In room 1234: Alice, bob"]


def test_private_message_reaches_only_the_two_people() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    b = sim.text_member("1234", "bob")
    c = sim.json_member("1234", "carol")
    sim.forget(a, b, c)
    sim.send(a, {"type": "msg", "to": "BOB", "text": "psst"})
    assert re.fullmatch(CLOCK + r" \(private\) alice -> bob: psst", sim.raw(b)[0])
    assert sim.events(a) == [{"type": "private", "ts": T0, "from": "alice", "to": "bob",
                              "text": "psst"}]
    assert sim.raw(c) == []
    sim.line(b, "/msg carol back at you")
    assert sim.events(c)[0]["text"] == "back at you"
    sim.send(a, {"type": "msg", "to": "zed", "text": "hello?"})
    (error,) = sim.events(a)
    assert (error["code"], error["ref"]) == ("no_such_member", "msg")
    outsider = sim.json_member("9999", "dave")
    sim.send(outsider, {"type": "msg", "to": "alice", "text": "across rooms"})
    assert sim.events(outsider)[0]["code"] == "no_such_member"
    assert sim.raw(a) == []


def test_newcomer_gets_the_last_n_messages_marked_as_history() -> None:
    sim = Sim(history=3)
    a = sim.json_member("1234", "alice")
    for i in range(5):
        sim.send(a, {"type": "say", "text": f"m{i}"})
    sim.json_member("5678", "elsewhere")
    cid = sim.connect()
    sim.send(cid, {"type": "hello", "versions": [1]})
    sim.send(cid, {"type": "join", "pin": "1234", "name": "late"})
    events = sim.events(cid)
    assert [e["type"] for e in events] == ["welcome", "joined", "message", "message", "message"]
    assert [(e["seq"], e["text"], e["history"]) for e in events[2:]] == [
        (3, "m2", True), (4, "m3", True), (5, "m4", True)]
    t = sim.connect()
    sim.line(t, "1234")
    sim.line(t, "later")
    lines = sim.raw(t)
    assert [line.split(" ", 1)[1] for line in lines[-3:]] == [
        "alice: m2", "alice: m3", "alice: m4"]


def test_history_zero_sends_no_past_messages() -> None:
    sim = Sim(history=0)
    a = sim.json_member("1234", "alice")
    sim.send(a, {"type": "say", "text": "before"})
    cid = sim.connect()
    sim.send(cid, {"type": "hello", "versions": [1]})
    sim.send(cid, {"type": "join", "pin": "1234", "name": "late"})
    assert sim.types(cid) == ["welcome", "joined"]


def test_history_of_an_emptied_room_is_gone() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    sim.send(a, {"type": "say", "text": "secret"})
    sim.feed(a, b"")
    cid = sim.connect()
    sim.send(cid, {"type": "hello", "versions": [1]})
    sim.send(cid, {"type": "join", "pin": "1234", "name": "next"})
    assert sim.types(cid) == ["welcome", "joined"]


# --------------------------------------------------------------------- name and PIN rules


def join_result(sim: Sim, pin: str, name: str, host: str = "192.168.1.10") -> dict[str, Any]:
    cid = sim.connect(host)
    sim.send(cid, {"type": "hello", "versions": [1]})
    sim.send(cid, {"type": "join", "pin": pin, "name": name})
    return sim.events(cid)[-1]


def test_names_are_unique_in_a_room_ignoring_case() -> None:
    sim = Sim()
    sim.json_member("1234", "Alice")
    refused = join_result(sim, "1234", "aLICE")
    assert (refused["type"], refused["code"], refused["ref"]) == ("error", "name_taken", "join")
    assert "'aLICE' is already taken" in refused["message"]
    assert join_result(sim, "5678", "alice")["type"] == "joined"  # another room: fine
    assert sim.entries("refused_join")[-1]["reason"] == "name_taken"


def test_names_are_nfc_normalised_before_comparing() -> None:
    sim = Sim()
    decomposed = "Zoe\u0301"  # e + combining acute
    joined = join_result(sim, "1234", decomposed)
    assert joined["name"] == "Zo\u00e9" and joined["members"] == ["Zo\u00e9"]
    assert join_result(sim, "1234", "ZO\u00c9")["code"] == "name_taken"
    t = sim.connect()
    sim.line(t, "1234")
    sim.line(t, "zo\u00e9")
    assert sim.raw(t)[-2].startswith("! The name 'zoé' is already taken")


@pytest.mark.parametrize("name", ["", " padded", "x" * 33, "tab\there", "rtl\u202eoverride"])
def test_bad_names_are_refused_with_the_rule(name: str) -> None:
    sim = Sim()
    cid = sim.connect()
    sim.send(cid, {"type": "hello", "versions": [1]})
    sim.send(cid, {"type": "join", "pin": "1234", "name": name})
    error = sim.events(cid)[-1]
    assert error["code"] == "invalid_name"
    assert error["message"].startswith("A name is 1 to 32 printable characters")
    assert sim.core.rooms == {}


def test_name_of_32_characters_is_accepted() -> None:
    sim = Sim()
    assert join_result(sim, "1234", "n" * 32)["type"] == "joined"


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", "\u0661\u0662\u0663\u0664",
                                 "12 34"])
def test_bad_pins_are_refused_with_the_default_rule(pin: str) -> None:
    sim = Sim()
    error = join_result(sim, pin, "alice")
    assert (error["code"], error["message"]) == (
        "invalid_pin", "A room PIN is 4 to 12 digits (0-9).")


def test_pin_length_is_configurable() -> None:
    sim = Sim(pin_min_length=6, pin_max_length=6)
    assert join_result(sim, "12345", "a")["message"] == "A room PIN is exactly 6 digits (0-9)."
    assert join_result(sim, "1234567", "b")["code"] == "invalid_pin"
    assert join_result(sim, "123456", "c")["type"] == "joined"
    t = sim.connect()
    sim.line(t, "1234")
    assert sim.raw(t)[1:] == ["! A room PIN is exactly 6 digits (0-9).",
                              "Enter the PIN of the room you want to join:"]


# --------------------------------------------------------------------- server states


def test_standby_members_keep_chatting_newcomers_are_refused() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    t = sim.text_member("1234", "bob")
    waiting = sim.connect()  # connected, not joined yet
    sim.send(waiting, {"type": "hello", "versions": [1]})
    sim.forget(a, t, waiting)
    sim.apply(sim.core.set_state("standby", "admin:root", sim.now))
    # Every connected client is told.
    (state,) = sim.events(a)
    assert state == {"type": "state", "state": "standby", "ts": T0,
                     "text": "members keep chatting, new clients are refused"}
    assert re.fullmatch(CLOCK + " ! Server is now standby: members keep chatting, new "
                        "clients are refused", sim.raw(t)[0])
    assert sim.events(waiting)[0]["state"] == "standby"
    # Members keep chatting.
    sim.line(t, "still here")
    assert sim.events(a)[0]["text"] == "still here"
    # A new connection is refused at once, with the reason in its greeting.
    refused = sim.connect()
    assert sim.raw(refused) == ["LANCHAT/1 standby The server is in standby and accepts no "
                                "new clients. Try again later."]
    assert refused in sim.closed
    # A connection that was waiting to join is refused with the reason and closed.
    sim.send(waiting, {"type": "join", "pin": "1234", "name": "carol"})
    error, bye = sim.events(waiting)
    assert (error["code"], error["ref"]) == ("standby", "join")
    assert bye["type"] == "bye" and bye["reason"] == "standby"
    assert "standby" in bye["message"]
    assert waiting in sim.closed
    assert "carol" not in str(sim.core.room_info("1234"))


def test_a_connection_that_opens_its_session_later_is_logged_only_if_it_does() -> None:
    """The web port's clients: a browser fetching the page's files is no chat member
    (no greeting, no connect/disconnect lines, not one of the clients), but it counts
    against the connection limits; one that opens a WebSocket is logged like anyone."""
    sim = Sim(max_connections_per_address=2)
    page = 101
    sim.apply(sim.core.connect(page, ("192.168.1.10", 40101), sim.now, opened=False))
    assert sim.raw(page) == [] and sim.core.snapshot(sim.now)["clients"] == 0
    member = 102
    sim.apply(sim.core.connect(member, ("192.168.1.10", 40102), sim.now, opened=False))
    full = sim.connect()  # the two above count: the address is at its limit
    assert sim.raw(full)[0].startswith("LANCHAT/1 full ")
    sim.apply(sim.core.receive(page, [END_OF_INPUT], sim.now))
    assert page in sim.closed
    sim.apply(sim.core.open_session(member, sim.now))
    assert sim.raw(member)[0].startswith("LANCHAT/1 ready ")
    snapshot = sim.core.snapshot(sim.now)
    assert snapshot["clients"] == 1 and snapshot["counters"]["page_connections"] == 1
    assert snapshot["counters"]["connections"] == 1
    sim.send(member, {"type": "hello", "versions": [1]})
    sim.send(member, {"type": "join", "pin": "1234", "name": "ann"})
    sim.apply(sim.core.receive(member, [END_OF_INPUT], sim.now))
    assert [(e["event"], e.get("addr")) for e in sim.log.tail()
            if e["event"] in ("connect", "disconnect", "join", "leave",
                              "refused_connection")] == [
        ("refused_connection", "192.168.1.10:40001"), ("connect", "192.168.1.10:40102"),
        ("join", "192.168.1.10:40102"), ("leave", "192.168.1.10:40102")]


def test_a_session_opened_in_standby_is_refused_but_its_page_was_served() -> None:
    sim = Sim()
    sim.apply(sim.core.set_state("standby", "admin:root", sim.now))
    cid = 1
    sim.apply(sim.core.connect(cid, ("192.168.1.10", 40001), sim.now, opened=False))
    assert cid not in sim.closed  # the page's files are not chat: they are served
    sim.apply(sim.core.open_session(cid, sim.now))
    assert sim.raw(cid) == ["LANCHAT/1 standby The server is in standby and accepts no "
                            "new clients. Try again later."]
    assert cid in sim.closed and sim.core.snapshot(sim.now)["clients"] == 0
    assert [e["reason"] for e in sim.entries("refused_connection")] == ["standby"]
    assert sim.entries("connect") == [] and sim.entries("disconnect") == []
    assert sim.core.per_host == {}


def test_a_page_connection_refused_by_its_transport_is_logged_with_the_reason() -> None:
    sim = Sim()
    sim.apply(sim.core.connect(101, ("192.168.1.10", 40101), sim.now, opened=False))
    sim.apply(sim.core.connect(102, ("192.168.1.10", 40102), sim.now, opened=False))
    sim.apply(sim.core.disconnected(101, sim.now, "web page served", quiet=True))
    sim.apply(sim.core.disconnected(102, sim.now, "web request refused: foreign origin"))
    assert [(e["addr"], e["reason"]) for e in sim.entries("disconnect")] == [
        ("192.168.1.10:40102", "web request refused: foreign origin")]
    assert sim.core.counters["page_connections"] == 2 and sim.entries("connect") == []


def test_page_connections_leave_no_line_at_shutdown() -> None:
    sim = Sim()
    sim.apply(sim.core.connect(101, ("192.168.1.10", 40101), sim.now, opened=False))
    member = sim.json_member("1234", "ann")
    sim.apply(sim.core.shutdown(sim.now))
    assert {101, member} <= sim.closed
    assert sim.entries("disconnect") == [] and len(sim.entries("leave")) == 1


def test_a_page_connection_past_the_handshake_timeout_is_closed_quietly() -> None:
    sim = Sim(handshake_timeout=5.0)
    sim.apply(sim.core.connect(1, ("192.168.1.10", 40001), sim.now, opened=False))
    sim.advance(6.0)
    assert 1 in sim.closed and sim.raw(1) == []
    assert sim.core.counters["page_connections"] == 1 and sim.core.conns == {}


def test_stopped_refuses_messages_with_an_explicit_error() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    t = sim.text_member("1234", "bob")
    sim.forget(a, t)
    sim.apply(sim.core.set_state("stopped", "admin:root", sim.now))
    assert sim.events(a)[0]["state"] == "stopped"
    assert "Server is now stopped" in sim.raw(t)[0]
    sim.send(a, {"type": "say", "text": "anyone?"})
    assert sim.events(a) == [{"type": "error", "code": "stopped", "ref": "say",
                              "message": "The server is stopped: your message was not "
                              "delivered."}]
    sim.line(t, "/msg alice psst")
    assert sim.raw(t) == ["! The server is stopped: your message was not delivered."]
    sim.line(t, "plain line")
    assert sim.raw(t) == ["! The server is stopped: your message was not delivered."]
    assert sim.raw(a) == []
    assert sim.core.counters["messages"] == 0
    sim.send(a, {"type": "who"})  # the room can still be seen
    assert sim.types(a) == ["members"]
    refused = sim.connect()
    assert sim.raw(refused)[0].startswith("LANCHAT/1 stopped ")
    # Back to active: messages flow again.
    sim.apply(sim.core.set_state("active", "admin:root", sim.now))
    sim.forget(t)
    assert sim.events(a)[0]["state"] == "active"
    sim.line(t, "back")
    assert sim.events(a)[0]["text"] == "back"


def test_state_changes_are_logged_with_the_actor_and_bad_states_refused() -> None:
    sim = Sim(initial_state="standby")
    assert sim.raw(sim.connect())[0].startswith("LANCHAT/1 standby")
    sim.apply(sim.core.set_state("active", "admin:ops", sim.now))
    assert sim.entries("state")[-1]["old"] == "standby"
    assert sim.entries("state")[-1]["actor"] == "admin:ops"
    fx = sim.core.set_state("active", "admin:ops", sim.now)
    assert fx.sends == [] and len(sim.entries("state")) == 1
    with pytest.raises(AdminError) as info:
        sim.core.set_state("paused", "admin:ops", sim.now)
    assert info.value.code == "bad_state"
    assert sim.core.state == "active"


# --------------------------------------------------------------------- administration


def test_close_room_tells_members_why_and_removes_them() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    t = sim.text_member("1234", "bob")
    other = sim.json_member("5678", "carol")
    sim.forget(a, t, other)
    sim.apply(sim.core.close_room("1234", "lesson over", "admin:teacher", sim.now))
    assert sim.events(a)[-1] == {"type": "bye", "reason": "room_closed",
                                 "message": "The room was closed by the administrator: "
                                 "lesson over", "detail": "lesson over"}
    assert sim.raw(t)[-1] == "! The room was closed by the administrator: lesson over"
    assert {a, t} <= sim.closed and other not in sim.closed
    assert sim.raw(other) == []
    assert "1234" not in sim.core.rooms
    (entry,) = sim.entries("room_closed")
    assert (entry["room"], entry["reason"], entry["actor"], entry["members"]) == (
        "1234", "lesson over", "admin:teacher", 2)
    with pytest.raises(AdminError) as info:
        sim.core.close_room("1234", "", "admin", sim.now)
    assert info.value.code == "unknown_room"


def test_kick_tells_the_member_why_and_the_room_sees_the_leave() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    b = sim.json_member("1234", "Bob")
    sim.forget(a, b)
    sim.apply(sim.core.kick("1234", "bob", "spam", "admin:root", sim.now))
    assert sim.events(b) == [{"type": "bye", "reason": "kicked", "message":
                              "You were removed from the room by the administrator: spam",
                              "detail": "spam"}]
    assert b in sim.closed
    (presence,) = sim.events(a)
    assert (presence["event"], presence["name"], presence["reason"]) == (
        "leave", "Bob", "kicked: spam")
    (entry,) = sim.entries("kick")
    assert (entry["name"], entry["reason"], entry["actor"]) == ("Bob", "spam", "admin:root")
    assert sim.core.counters["kicks"] == 1
    with pytest.raises(AdminError) as info:
        sim.core.kick("1234", "nobody", "", "admin", sim.now)
    assert info.value.code == "unknown_user"


def test_announce_to_one_room_or_to_all() -> None:
    sim = Sim()
    a = sim.json_member("1111", "alice")
    t = sim.text_member("2222", "bob")
    sim.forget(a, t)
    sim.apply(sim.core.announce("pizza in 5", "1111", "admin:root", sim.now))
    assert sim.events(a) == [{"type": "notice", "ts": T0, "text": "pizza in 5",
                              "room": "1111"}]
    assert sim.raw(t) == []
    sim.apply(sim.core.announce("closing at 6", None, "admin:root", sim.now))
    assert sim.events(a)[0]["text"] == "closing at 6"
    assert re.fullmatch(CLOCK + " ! Announcement: closing at 6", sim.raw(t)[0])
    assert [(e["room"], e["actor"]) for e in sim.entries("announce")] == [
        ("1111", "admin:root"), (None, "admin:root")]
    with pytest.raises(AdminError) as info:
        sim.core.announce("   ", None, "admin", sim.now)
    assert info.value.code == "bad_value"
    with pytest.raises(AdminError):
        sim.core.announce("x", "4444", "admin", sim.now)


def test_shutdown_says_goodbye_to_everyone() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    t = sim.text_member("1234", "bob")
    fresh = sim.connect()
    sim.forget(a, t, fresh)
    sim.apply(sim.core.shutdown(sim.now))
    assert sim.events(a)[-1] == {"type": "bye", "reason": "shutdown",
                                 "message": "The server is shutting down."}
    assert sim.raw(t)[-1] == "! The server is shutting down."
    # A connection that has said nothing yet is spoken to in plain text (a person at nc).
    assert sim.raw(fresh)[-1] == "! The server is shutting down."
    assert sim.closed >= {a, t, fresh}
    assert sim.core.conns == {} and sim.core.rooms == {}


def test_reconfigure_applies_history_and_language() -> None:
    sim = Sim(history=5)
    a = sim.json_member("1234", "alice")
    for i in range(4):
        sim.send(a, {"type": "say", "text": f"m{i}"})
    sim.core.reconfigure(sim.config.replace(history=1, text_language="nb"))
    t = sim.connect()
    assert sim.raw(t)[0].endswith("Skriv inn PIN for rommet:")
    sim.line(t, "1234")
    sim.line(t, "bob")
    lines = sim.raw(t)
    assert lines[0] == "Skriv inn brukernavn:"
    assert lines[1].startswith("* Du er i rom 1234 som bob.")
    assert [line.split(" ", 1)[1] for line in lines[2:]] == ["alice: m3"]


# --------------------------------------------------------------------- activity log


def test_every_event_kind_is_recorded_in_ring_and_file(tmp_path: Path) -> None:
    path = tmp_path / "log" / "activity.log"
    sim = Sim(log_path=path, max_connections_per_address=3)
    a = sim.json_member("1234", "alice", host="10.1.1.1")
    b = sim.json_member("1234", "bob", host="10.1.1.1")
    sim.json_member("1234", "x", host="10.1.1.1")
    sim.connect("10.1.1.1")  # fourth from one address: refused
    join_result(sim, "1234", "ALICE", host="10.2.2.2")  # refused join
    sim.line(a, "{not json")  # protocol error
    sim.apply(sim.core.kick("1234", "bob", "rude", "admin:root", sim.now))
    sim.apply(sim.core.announce("hello all", None, "admin:root", sim.now))
    lonely = sim.connect("10.3.3.3")
    sim.feed(lonely, b"")
    sim.apply(sim.core.set_state("standby", "admin:root", sim.now))
    sim.apply(sim.core.close_room("1234", "", "admin:root", sim.now))
    kinds = [e["event"] for e in sim.log.tail()]
    for kind in ("connect", "refused_connection", "room_created", "join", "refused_join",
                 "protocol_error", "kick", "leave", "announce", "state", "room_closed",
                 "room_empty", "disconnect"):
        assert kind in kinds, kind
    assert sim.entries("refused_connection")[0]["reason"] == "full"
    assert sim.entries("protocol_error")[0]["code"] == "bad_json"
    leaves = {(e["name"], e["reason"]) for e in sim.entries("leave")}
    assert ("bob", "kicked: rude") in leaves and ("alice", "room closed") in leaves
    assert sim.entries("disconnect")[0]["reason"] == "closed by client"
    assert b in sim.closed
    sim.log.close()
    on_disk = [json.loads(line) for line in path.read_text().splitlines()]
    assert on_disk == sim.log.tail()


def test_private_message_text_has_a_switch_of_its_own() -> None:
    rooms_only = Sim(log_messages=True)
    a = rooms_only.json_member("1234", "alice")
    rooms_only.json_member("1234", "bob")
    rooms_only.send(a, {"type": "say", "text": "for the room"})
    rooms_only.send(a, {"type": "msg", "to": "bob", "text": "between us"})
    assert rooms_only.entries("message")[0]["text"] == "for the room"
    assert "between us" not in json.dumps(rooms_only.log.tail())
    private_too = Sim(log_private_messages=True)
    a = private_too.json_member("1234", "alice")
    private_too.json_member("1234", "bob")
    private_too.send(a, {"type": "say", "text": "for the room"})
    private_too.send(a, {"type": "msg", "to": "bob", "text": "between us"})
    assert private_too.entries("message") == []
    (private,) = private_too.entries("private_message")
    assert (private["name"], private["to"], private["text"]) == ("alice", "bob", "between us")


def test_message_text_is_not_logged_unless_log_messages() -> None:
    quiet = Sim()
    a = quiet.json_member("1234", "alice")
    quiet.json_member("1234", "bob")
    quiet.send(a, {"type": "say", "text": "top secret"})
    quiet.send(a, {"type": "msg", "to": "bob", "text": "private secret"})
    assert "secret" not in json.dumps(quiet.log.tail())
    loud = Sim(log_messages=True, log_private_messages=True)
    a = loud.json_member("1234", "alice")
    loud.json_member("1234", "bob")
    loud.send(a, {"type": "say", "text": "top secret"})
    loud.send(a, {"type": "msg", "to": "bob", "text": "private secret"})
    (message,) = loud.entries("message")
    assert (message["room"], message["name"], message["room_seq"], message["text"]) == (
        "1234", "alice", 1, "top secret")
    (private,) = loud.entries("private_message")
    assert (private["name"], private["to"], private["text"]) == (
        "alice", "bob", "private secret")


# --------------------------------------------------------------------- limits


def test_a_line_too_long_is_an_error_and_the_connection_goes_on() -> None:
    sim = Sim(max_line_bytes=64)
    a = sim.json_member("1234", "alice")
    b = sim.json_member("1234", "bob")
    sim.forget(a)
    sim.feed(a, b'{"type":"say","text":"' + b"x" * 200 + b'"}\n')
    (error,) = sim.events(a)
    assert (error["code"], error["message"]) == (
        "line_too_long", "A line may be at most 64 bytes.")
    assert sim.raw(b) == []
    sim.send(a, {"type": "say", "text": "short"})
    assert sim.events(b)[0]["text"] == "short"


def test_a_line_too_long_without_newline_is_not_buffered() -> None:
    sim = Sim(max_line_bytes=64)
    t = sim.text_member("1234", "alice")
    sim.feed(t, b"y" * 1000)
    assert sim.raw(t) == ["! A line may be at most 64 bytes."]
    sim.feed(t, b"y" * 1000 + b"\nok\n")
    assert sim.raw(t)[0].endswith("alice: ok")
    assert sim.transports[t].buffered == 0  # the transport holds the bytes, not the core


def test_bad_utf8_and_bad_json_get_errors_then_a_disconnect() -> None:
    sim = Sim(max_errors=3)
    a = sim.json_member("1234", "alice")
    b = sim.json_member("1234", "bob")
    sim.forget(a, b)
    sim.feed(a, b'{"type":"say","text":"\xff\xfe"}\n')
    assert sim.events(a)[0]["code"] == "bad_utf8"
    sim.feed(a, b"{nope\n")
    assert sim.events(a)[0]["code"] == "bad_json"
    sim.send(a, {"type": "dance"})
    assert sim.events(a)[0]["code"] == "unknown_type"
    assert a not in sim.closed
    sim.feed(a, b"[1]\n")
    (bye,) = sim.events(a)
    assert bye["type"] == "bye" and bye["reason"] == "too_many_errors"
    assert bye["message"].startswith("Disconnected after 4 protocol errors")
    assert a in sim.closed
    (leave,) = sim.events(b)
    assert (leave["event"], leave["name"]) == ("leave", "alice")
    assert len(sim.entries("protocol_error")) == 4


def test_text_mode_bad_utf8_is_an_error_too() -> None:
    sim = Sim()
    t = sim.text_member("1234", "alice")
    sim.feed(t, b"caf\xe9\n")
    assert sim.raw(t) == ["! The line is not valid UTF-8 (byte 3)."]


def test_endless_refused_joins_end_in_a_disconnect_not_an_endless_log() -> None:
    sim = Sim(max_errors=3, join_burst=1000)
    t = sim.connect()
    sim.forget(t)
    for _ in range(3):
        sim.line(t, "no pin")
        assert sim.raw(t)[-1] == "Enter the PIN of the room you want to join:"
    sim.line(t, "still no pin")
    assert sim.raw(t) == ["! A room PIN is 4 to 12 digits (0-9).",
                          "! Disconnected after 4 refused attempts; last: A room PIN is 4 to "
                          "12 digits (0-9)."]
    assert t in sim.closed
    sim.json_member("1234", "taken")
    j = sim.connect()
    sim.send(j, {"type": "hello", "versions": [1]})
    for _ in range(10):
        sim.send(j, {"type": "join", "pin": "1234", "name": "TAKEN"})
    events = sim.events(j)
    assert [e["type"] for e in events] == ["welcome"] + ["error"] * 4 + ["bye"]
    assert events[-1]["reason"] == "too_many_errors"
    assert len(sim.entries("refused_join")) == 8


def test_handshake_timeout_closes_a_connection_that_never_joins() -> None:
    sim = Sim(handshake_timeout=5.0)
    idle = sim.connect()
    chatty = sim.connect()
    sim.send(chatty, {"type": "hello", "versions": [1]})
    joins = sim.connect()
    sim.forget(idle, chatty)
    assert sim.core.next_deadline() == T0 + 5.0
    sim.advance(4.9)
    sim.line(joins, "1234")
    sim.line(joins, "alice")
    assert sim.closed == set()
    sim.advance(0.1)
    # Silent so far, so most likely a person at nc: told in plain text.
    assert sim.raw(idle)[-1] == "! Disconnected: no room joined within 5 seconds."
    assert sim.events(chatty)[-1]["reason"] == "handshake_timeout"
    assert sim.closed == {idle, chatty}
    assert joins not in sim.closed
    sim.advance(1000)
    assert joins not in sim.closed


def test_keepalive_ping_then_disconnect_when_unanswered() -> None:
    sim = Sim(keepalive_interval=30.0, keepalive_timeout=10.0)
    a = sim.json_member("1234", "alice")
    b = sim.json_member("1234", "bob")
    sim.forget(a)
    sim.advance(20)
    sim.send(a, {"type": "who"})  # alice is active; bob is silent
    sim.forget(a)
    sim.advance(10)  # 30 s: bob is pinged, alice is not (she spoke 10 s ago)
    assert sim.events(b) == [{"type": "ping", "token": "keepalive"}]
    assert sim.raw(a) == []
    sim.advance(10)  # 40 s: bob never answered
    assert sim.events(b) == [{"type": "bye", "reason": "idle_timeout",
                              "message": "Disconnected: no answer to the keep-alive ping."}]
    assert b in sim.closed
    (leave,) = sim.events(a)
    assert (leave["name"], leave["event"], leave["reason"]) == ("bob", "leave", "timed out")
    sim.advance(10)  # 50 s: alice has been silent for 30 s
    assert sim.events(a) == [{"type": "ping", "token": "keepalive"}]
    sim.now += 5
    sim.send(a, {"type": "pong", "token": "keepalive"})
    sim.advance(100)  # answered: pinged again after 30 s of silence, not dropped
    assert a not in sim.closed
    assert sim.types(a) == ["ping"]


def test_flood_control_says_rate_limited() -> None:
    sim = Sim(message_rate=2.0, message_burst=3)
    a = sim.json_member("1234", "alice")
    b = sim.json_member("1234", "bob")
    sim.forget(a, b)
    for i in range(5):
        sim.send(a, {"type": "say", "text": f"m{i}"})
    events = sim.events(a)
    assert [e["type"] for e in events] == ["message"] * 3 + ["error"] * 2
    assert events[3]["code"] == "rate_limited" and events[3]["ref"] == "say"
    assert events[3]["message"].startswith("Rate limited: not delivered; you may send 2 "
                                           "messages a second")
    assert [e["text"] for e in sim.events(b)] == ["m0", "m1", "m2"]
    sim.now += 0.5  # one token back
    sim.send(a, {"type": "say", "text": "later"})
    assert sim.events(b)[0]["text"] == "later"
    t = sim.text_member("1234", "carol")
    for _ in range(4):
        sim.line(t, "flood")
    assert sim.raw(t)[-1].startswith("! Rate limited: not delivered;")
    assert sim.core.counters["rate_limited"] == 3


def test_refused_lines_are_logged_together_not_one_entry_each() -> None:
    sim = Sim(message_rate=1.0, message_burst=1)
    a = sim.json_member("1234", "alice")
    for i in range(101):
        sim.send(a, {"type": "say", "text": f"flood {i}"})  # 1 delivered, 100 refused
    first, = sim.entries("refused_messages")  # the first at once, the rest counted
    assert (first["reason"], first["count"], first["room"], first["name"]) == (
        "rate_limited", 1, "1234", "alice")
    assert first["addr"].startswith("192.168.1.10:")
    sim.now += 61
    sim.send(a, {"type": "say", "text": "ok again"})  # a token back: delivered
    for _ in range(2):
        sim.send(a, {"type": "say", "text": "flood"})  # a minute on: the count is written
    assert [(e["count"], e["since"]) for e in sim.entries("refused_messages")] == [
        (1, T0), (100, T0)]
    sim.send(a, {"type": "say", "text": "flood"})
    sim.send(a, {"type": "quit"})  # leaving writes what is left
    last = sim.entries("refused_messages")[-1]
    assert (last["reason"], last["count"], last["since"]) == ("rate_limited", 2, T0 + 61)
    assert sim.core.counters["rate_limited"] == 103


def test_messages_refused_while_stopped_are_counted_and_logged() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    t = sim.text_member("1234", "bob")
    sim.apply(sim.core.set_state("stopped", "admin:root", sim.now))
    for _ in range(3):
        sim.send(a, {"type": "say", "text": "hello?"})
    sim.send(a, {"type": "msg", "to": "bob", "text": "psst"})
    sim.line(t, "anyone?")
    assert sim.core.counters["refused_while_stopped"] == 5
    entries = sim.entries("refused_messages")
    assert [(e["name"], e["reason"], e["count"]) for e in entries] == [
        ("alice", "stopped", 1), ("bob", "stopped", 1)]
    sim.apply(sim.core.shutdown(sim.now))  # the daemon's stop writes the rest
    assert [(e["name"], e["count"]) for e in sim.entries("refused_messages")][2:] == [
        ("alice", 3)]


def test_overflow_disconnects_the_slow_reader_with_a_reason() -> None:
    sim = Sim(output_buffer_bytes=1000)
    a = sim.json_member("1234", "alice")
    slow = sim.json_member("1234", "slow")
    sim.forget(a, slow)
    sim.apply(sim.core.overflow(slow, sim.now))
    (bye,) = sim.events(slow)
    assert bye["reason"] == "slow_reader"
    assert "more than 1000 bytes queued" in bye["message"]
    assert slow in sim.closed
    (presence,) = sim.events(a)
    assert (presence["name"], presence["reason"]) == ("slow", "not reading")
    assert sim.core.counters["disconnects_for_limits"] == 1


def test_max_connections_in_total_and_per_address() -> None:
    sim = Sim(max_connections=3, max_connections_per_address=2)
    first = sim.connect("10.0.0.1")
    sim.connect("10.0.0.1")
    third = sim.connect("10.0.0.1")
    assert sim.raw(third) == ["LANCHAT/1 full The server has too many connections. "
                              "Try again later."]
    assert third in sim.closed
    sim.connect("10.0.0.2")
    fifth = sim.connect("10.0.0.3")
    assert sim.raw(fifth)[0].startswith("LANCHAT/1 full ")
    sim.feed(first, b"")  # a place is free again
    sixth = sim.connect("10.0.0.3")
    assert sim.raw(sixth)[0].startswith("LANCHAT/1 ready ")
    assert len(sim.entries("refused_connection")) == 2


def test_join_attempts_are_rate_limited_per_address() -> None:
    sim = Sim(join_rate=0.1, join_burst=2)
    assert join_result(sim, "1111", "a", host="10.0.0.1")["type"] == "joined"
    assert join_result(sim, "1111", "a", host="10.0.0.1")["code"] == "name_taken"
    error = join_result(sim, "2222", "b", host="10.0.0.1")
    assert error["code"] == "join_rate_limited"
    assert error["message"] == ("Too many join attempts from your address; try again in "
                                "10 seconds.")
    assert join_result(sim, "2222", "b", host="10.0.0.2")["type"] == "joined"
    sim.now += 10
    assert join_result(sim, "2222", "c", host="10.0.0.1")["type"] == "joined"


def test_the_wait_is_never_said_as_0_seconds() -> None:
    sim = Sim(join_rate=2.0, join_burst=1)  # a token every half second
    assert join_result(sim, "1111", "a", host="10.0.0.1")["type"] == "joined"
    error = join_result(sim, "2222", "b", host="10.0.0.1")
    assert error["message"] == ("Too many join attempts from your address; try again in "
                                "1 second.")
    sim = Sim(join_rate=1 / 1.5, join_burst=1)
    assert join_result(sim, "1111", "a", host="10.0.0.1")["type"] == "joined"
    assert join_result(sim, "2222", "b", host="10.0.0.1")["message"].endswith(
        "try again in 2 seconds.")


def test_a_pin_guessing_text_client_is_rate_limited_too() -> None:
    sim = Sim(join_rate=0.1, join_burst=2)
    t = sim.connect("10.0.0.7")
    sim.line(t, "1234")
    sim.line(t, "mallory")
    sim.line(t, "/quit")
    t = sim.connect("10.0.0.7")
    sim.line(t, "1235")
    sim.line(t, "mallory")
    sim.line(t, "/quit")
    t = sim.connect("10.0.0.7")
    sim.line(t, "1236")
    sim.line(t, "mallory")
    lines = sim.raw(t)
    assert "! Too many join attempts from your address; try again in 10 seconds." in lines
    assert "1236" not in sim.core.rooms


# --------------------------------------------------------------------- discovery


def responder(**settings: Any) -> DiscoveryResponder:
    return DiscoveryResponder(Config(**settings), "sid-1")


def ask(r: DiscoveryResponder, data: bytes, host: str = "192.168.1.20",
        now: float = T0) -> bytes | None:
    return r.handle(data, (host, 5555), now, state="standby", name="lab", port=5000)


def test_legacy_probe_gets_server_here_byte_for_byte() -> None:
    r = responder()
    assert ask(r, b"DISCOVER_SERVER") == b"SERVER_HERE"
    assert ask(r, b"DISCOVER_SERVER\n") == b"SERVER_HERE"


def test_json_probe_gets_an_announce_with_the_nonce() -> None:
    r = responder()
    reply = ask(r, disc.encode_probe("n-42"))
    assert reply is not None
    assert json.loads(reply) == {
        "type": "announce", "version": 1, "nonce": "n-42", "server_id": "sid-1",
        "name": "lab", "port": 5000, "state": "standby", "server_version": "0.1.0",
    }


@pytest.mark.parametrize("data", [
    b"", b"DISCOVER", b"discover_server", b"\xff\xfe", b"[]", b'{"type":"announce"}',
    b'{"type":"discover"}', b'{"type":"discover","nonce":""}',
    b'{"type":"discover","nonce":"' + b"n" * 65 + b'"}',
    b'{"type":"discover","nonce":"x","pad":"' + b"p" * 600 + b'"}',
    b"DISCOVER_SERVER" + b" " * 600,
])
def test_malformed_or_oversized_probes_are_ignored(data: bytes) -> None:
    r = responder()
    assert ask(r, data) is None
    assert r.counters["malformed"] == 1


def test_replies_are_rate_limited_per_source() -> None:
    r = responder(discovery_rate=1.0, discovery_burst=3)
    answers = [ask(r, b"DISCOVER_SERVER") for _ in range(5)]
    assert answers == [b"SERVER_HERE"] * 3 + [None, None]
    assert ask(r, b"DISCOVER_SERVER", host="192.168.1.21") == b"SERVER_HERE"
    assert ask(r, b"DISCOVER_SERVER", now=T0 + 1.0) == b"SERVER_HERE"
    assert ask(r, b"DISCOVER_SERVER", now=T0 + 1.0) is None
    assert r.counters["rate_limited"] == 3


@pytest.mark.parametrize(("host", "answered"), [
    ("127.0.0.1", True), ("10.9.8.7", True), ("172.20.0.1", True), ("192.168.0.1", True),
    ("169.254.3.3", True), ("fe80::1%eth0", True), ("::1", True), ("::ffff:192.168.1.5", True),
    ("8.8.8.8", False), ("172.32.0.1", False), ("2001:db8::1", False),
    ("::ffff:8.8.8.8", False), ("not-an-address", False),
])
def test_only_sources_in_the_allowed_networks_are_answered(host: str, answered: bool) -> None:
    r = responder()
    assert (ask(r, b"DISCOVER_SERVER", host=host) is not None) is answered


def test_allowed_networks_are_configurable_and_reloadable() -> None:
    r = responder(discovery_allow=("10.0.0.0/8",))
    assert ask(r, b"DISCOVER_SERVER", host="127.0.0.1") is None
    assert r.counters["not_allowed"] == 1
    assert ask(r, b"DISCOVER_SERVER", host="10.1.2.3") == b"SERVER_HERE"
    r.reconfigure(Config(discovery_allow=("127.0.0.0/8",)))
    assert ask(r, b"DISCOVER_SERVER", host="127.0.0.1") == b"SERVER_HERE"
    assert ask(r, b"DISCOVER_SERVER", host="10.1.2.3") is None


def test_many_sources_do_not_grow_the_rate_table_without_bound() -> None:
    r = responder(discovery_rate=0.001, discovery_burst=1)
    for i in range(5000):
        ask(r, b"DISCOVER_SERVER", host=f"10.{i // 256}.{i % 256}.1")
    assert len(r._buckets) <= 4096


def test_a_step_of_the_wall_clock_moves_no_deadline_and_times_stay_wall_clock() -> None:
    """Deadlines are on the monotonic clock (set_clock), times people read on the wall
    clock: an hour's step forward fires nothing early, a step back delays nothing."""
    sim = Sim(handshake_timeout=5.0, keepalive_interval=60.0)
    mono = 500.0  # the monotonic clock has its own origin
    sim.core.set_clock(mono - sim.now)
    slow = sim.connect()
    member = sim.connect()
    sim.send(member, {"type": "hello", "versions": [1]})
    sim.send(member, {"type": "join", "pin": "1234", "name": "ann"})
    sim.forget(slow, member)
    assert sim.core.next_deadline() == mono + 5.0

    def at(wall: float, monotonic: float) -> None:
        sim.now = wall
        sim.core.set_clock(monotonic - wall)
        sim.apply(sim.core.tick(wall))

    at(T0 + 3600.0, mono + 1.0)  # the wall clock jumps an hour ahead
    assert sim.closed == set()
    sim.send(member, {"type": "say", "text": "still here"})
    (message,) = sim.events(member)
    assert message["ts"] == round(T0 + 3600.0, 3)  # the time people read
    at(T0 - 3600.0, mono + 5.0)  # and back, past the real 5 s
    assert sim.closed == {slow}
    assert "no room joined within 5 seconds" in sim.raw(slow)[-1]

"""Issue 11 in the pure core: every line charged, fakelag's allowance, the one notice,
the flooding bye, join limits per network and in total, shared ``who`` and history
encodings, and names that cannot impersonate.  Time is passed, never waited for."""

from __future__ import annotations

import pytest
from test_core import Sim

from lanchat.protocol import rules
from lanchat.protocol.errors import RemoteProtocolError
from lanchatd.core import MAX_COST
from lanchatd.limits import network_of


def test_every_line_is_charged_before_a_join_too() -> None:
    sim = Sim(message_rate=1.0, message_burst=20)
    cid = sim.connect()
    sim.send(cid, {"type": "hello", "versions": [1]})
    for _ in range(9):
        sim.send(cid, {"type": "ping", "token": "p"})
    sim.line(cid, "")  # a blank line costs as much
    allowed, _wait = sim.core.allowance(cid, sim.now)
    assert allowed == max(1, int(10 // MAX_COST))  # 20 - 11 lines = 9 tokens left


def test_a_spent_bucket_means_no_lines_and_a_wait_not_an_error() -> None:
    sim = Sim(message_rate=2.0, message_burst=4)
    a = sim.json_member("1234", "alice")
    for i in range(4):
        sim.send(a, {"type": "say", "text": f"m{i}"})
    assert sim.core.allowance(a, sim.now) == (0, pytest.approx(0.5))
    sim.forget(a)
    told = sim.apply(sim.core.lagging(a, sim.now))
    assert [e["code"] for e in sim.events(a) if e["type"] == "error"] == ["throttled"]
    assert not told.closes
    sim.apply(sim.core.lagging(a, sim.now + 0.1))  # told once, not once a pass
    assert sim.raw(a) == []
    sim.now += 0.5
    assert sim.core.allowance(a, sim.now) == (1, 0.0)


def test_a_persistent_flooder_is_disconnected_with_a_reason() -> None:
    sim = Sim(message_rate=1.0, message_burst=2, flood_timeout=5.0)
    a = sim.json_member("1234", "alice")
    sim.forget(a)
    for step in range(7):  # a token a second, always spent at once: never refilled
        sim.send(a, {"type": "say", "text": f"x{step}"})
        sim.send(a, {"type": "say", "text": f"y{step}"})
        sim.apply(sim.core.lagging(a, sim.now))
        sim.now += 1.0
    events = sim.events(a)
    assert events[-1]["type"] == "bye" and events[-1]["reason"] == "flooding"
    assert a in sim.closed


def test_a_burst_then_a_pause_is_not_flooding() -> None:
    sim = Sim(message_rate=1.0, message_burst=4, flood_timeout=3.0)
    a = sim.json_member("1234", "alice")
    for _round in range(4):
        for i in range(4):
            sim.send(a, {"type": "say", "text": f"m{i}"})
        sim.apply(sim.core.lagging(a, sim.now))
        sim.now += 10.0  # the bucket refills: each burst is forgiven
        assert sim.core.allowance(a, sim.now)[0] >= 1
    assert a not in sim.closed


def test_a_member_at_its_rate_is_at_rest_and_one_in_a_burst_is_not() -> None:
    """The loop puts a turn that a spent pass budget put off ahead of the bursts'
    only while its connection is at rest: one line every 0.2 s at 5 a second stays at
    rest, the rest of a burst of 20 does not until its bucket has refilled."""
    sim = Sim(message_rate=5.0, message_burst=20)
    steady = sim.json_member("1234", "steady")
    flooder = sim.json_member("1234", "flooder")
    for step in range(10):
        sim.send(steady, {"type": "say", "text": f"s{step}"})
        sim.now += 0.2
        assert sim.core.at_rest(steady, sim.now)
    for step in range(8):
        sim.send(flooder, {"type": "say", "text": f"f{step}"})
    assert not sim.core.at_rest(flooder, sim.now)
    sim.now += 8 / 5.0  # refilled
    assert sim.core.at_rest(flooder, sim.now)
    assert not sim.core.at_rest(10_000, sim.now)  # gone: nothing to put ahead


def test_join_attempts_are_limited_per_network_and_in_total() -> None:
    sim = Sim(join_rate=0.5, join_burst=2)
    joined = 0
    messages = set()
    for i in range(20):  # 20 addresses of one /24, two attempts each
        cid = sim.connect(f"10.1.2.{i + 1}")
        sim.send(cid, {"type": "hello", "versions": [1]})
        sim.send(cid, {"type": "join", "pin": f"{5000 + i}", "name": "g"})
        for event in sim.events(cid):
            if event["type"] == "joined":
                joined += 1
            elif event["type"] == "error":
                messages.add(event["message"].split(";")[0])
    assert joined == 4 * 2  # the network's burst: 4 x one address's
    assert messages == {"Too many join attempts from your network"}
    other = sim.connect("10.9.9.9")
    sim.send(other, {"type": "hello", "versions": [1]})
    sim.send(other, {"type": "join", "pin": "7777", "name": "h"})
    assert sim.types(other)[-1] == "joined"  # another network is not held back


def test_networks_are_slash_24_and_slash_64() -> None:
    assert network_of("192.168.1.77") == "192.168.1.0/24"
    assert network_of("::ffff:192.168.1.77") == "192.168.1.0/24"
    assert network_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert network_of("fe80::1%eth0") == "fe80::/64"


def test_who_is_encoded_once_per_membership() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    b = sim.json_member("1234", "bob")
    sim.forget(a, b)
    first = sim.core.receive(a, [b'{"type":"who"}'], sim.now).sends[0][1]
    second = sim.core.receive(b, [b'{"type":"who"}'], sim.now).sends[0][1]
    assert first is second  # one shared bytes object
    sim.json_member("1234", "carol")
    third = sim.core.receive(a, [b'{"type":"who"}'], sim.now).sends[0][1]
    assert b"carol" in third and third is not first


def test_history_is_encoded_once_per_change() -> None:
    sim = Sim()
    a = sim.json_member("1234", "alice")
    sim.send(a, {"type": "say", "text": "hello"})
    room = sim.core.rooms["1234"]
    sim.json_member("1234", "bob")
    cached = room.history_cache[(False, "en")]
    assert cached.count(b'"history":true') == 1 and b'"text":"hello"' in cached
    cid = sim.connect("192.168.1.30")
    sim.send(cid, {"type": "hello", "versions": [1]})
    fx = sim.core.receive(cid, [b'{"type":"join","pin":"1234","name":"carol"}'], sim.now)
    assert any(data is cached for _targets, data in fx.sends)  # the same object again
    sim.send(a, {"type": "say", "text": "again"})
    assert not room.history_cache  # a new message: the replay is made anew when needed


@pytest.mark.parametrize("name", [
    "! Announcement", "(private) admin -> bob", "* alice joined", "[12:00] bob",
    "a\u034fb", "\u115fx", "x\u17b4", "a\u180bb", "\u2800", "\u3164", "x\ufe0f",
])
def test_names_that_impersonate_or_hide_are_refused(name: str) -> None:
    with pytest.raises(RemoteProtocolError):
        rules.normalize_name(name)


@pytest.mark.parametrize("lookalike", [
    "\u0430lice",  # Cyrillic а
    "\uff41lice",  # fullwidth ａ
    "ALICE", "al\u0456ce",  # Cyrillic і
])
def test_look_alikes_share_a_name(lookalike: str) -> None:
    assert rules.name_key(rules.normalize_name(lookalike)) == rules.name_key("alice")


def test_a_lookalike_cannot_join_beside_the_original() -> None:
    sim = Sim()
    sim.json_member("1234", "alice")
    cid = sim.connect("192.168.1.20")
    sim.send(cid, {"type": "hello", "versions": [1]})
    sim.send(cid, {"type": "join", "pin": "1234", "name": "\u0430lice"})
    assert sim.events(cid)[-1]["code"] == "name_taken"


# Each refusal of a name says which rule it broke: (name typed, code, the sentence in
# English, the same in Norwegian), with "alice" already in room 1234.
REFUSALS = [
    ("a\u3164b", "invalid_name",
     "A name may not contain an invisible or blank character (found U+3164): it would make "
     "a second name that looks like the first.",
     "Et navn kan ikke inneholde usynlige eller blanke tegn (fant U+3164): det ville gi et "
     "nytt navn som ser likt ut som det første."),
    ("\u2800", "invalid_name",
     "A name may not contain an invisible or blank character (found U+2800)",
     "Et navn kan ikke inneholde usynlige eller blanke tegn (fant U+2800)"),
    ("! Announcement", "invalid_name",
     "A name may not begin with !: lines from the server begin so, and a name must not "
     "make a member's line look like one of them.",
     "Et navn kan ikke begynne med !: linjer fra serveren begynner slik"),
    ("(private) admin -> bob", "invalid_name", "A name may not begin with (:",
     "Et navn kan ikke begynne med (:"),
    ("\u0430lice", "name_taken",
     "The name '\u0430lice' looks like 'alice', who is already in this room (names are "
     "compared ignoring case and look-alike letters).",
     "Navnet '\u0430lice' ligner 'alice', som allerede er i dette rommet"),
    ("a1ice", "name_taken", "The name 'a1ice' looks like 'alice', who is already",
     "Navnet 'a1ice' ligner 'alice'"),
    ("ALICE", "name_taken", "The name 'ALICE' is already taken in this room.",
     "Navnet 'ALICE' er allerede tatt i dette rommet."),
    ("x" * 33, "invalid_name",
     "A name is 1 to 32 printable characters, with no control, formatting, invisible or "
     "blank characters and no space at either end, does not begin with ! * ( [ - < or >, and "
     "is unique in the room (ignoring case and look-alike letters).",
     "Et navn er 1 til 32 synlige tegn"),
]


@pytest.mark.parametrize("lang", ["en", "nb"])
@pytest.mark.parametrize("name,code,english,norwegian", REFUSALS,
                         ids=[r[2][:24] for r in REFUSALS])
def test_a_refused_name_is_told_the_rule_it_broke_in_json(
        name: str, code: str, english: str, norwegian: str, lang: str) -> None:
    sim = Sim()
    sim.json_member("1234", "alice")
    cid = sim.connect("192.168.1.20")
    sim.send(cid, {"type": "hello", "versions": [1], "lang": lang})
    sim.send(cid, {"type": "join", "pin": "1234", "name": name})
    error = sim.events(cid)[-1]
    assert (error["type"], error["code"]) == ("error", code)
    assert error["message"].startswith(english if lang == "en" else norwegian)


@pytest.mark.parametrize("lang", ["en", "nb"])
@pytest.mark.parametrize("name,code,english,norwegian", REFUSALS,
                         ids=[r[2][:24] for r in REFUSALS])
def test_a_refused_name_is_told_the_rule_it_broke_in_plain_text(
        name: str, code: str, english: str, norwegian: str, lang: str) -> None:
    sim = Sim(text_language=lang)
    sim.json_member("1234", "alice")
    cid = sim.connect("192.168.1.20")
    sim.line(cid, "1234")
    sim.forget(cid)
    sim.line(cid, name)
    refusal, again = sim.raw(cid)
    assert refusal.startswith("! " + (english if lang == "en" else norwegian)), refusal
    assert again == ("Enter your name:" if lang == "en" else "Skriv inn brukernavn:")
    assert sim.entries("refused_join")[-1]["reason"] == code


def test_the_client_names_the_broken_rule_before_sending() -> None:
    from lanchat.client import commands
    from lanchat.protocol.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError) as hidden:
        commands.parse("/nick a\u3164b")
    assert "invisible or blank character (found U+3164)" in hidden.value.message
    with pytest.raises(LocalProtocolError) as marked:
        commands.parse("/nick * alice joined")
    assert marked.value.message.startswith("A name may not begin with *")


def test_no_member_line_has_the_shape_of_a_server_line() -> None:
    """A plain-text reader tells the server's lines (after the time stamp: "!", "*" of
    its own, "-->", "<--") from a member's: "/me joined" is an action, not a join."""
    import re

    sim = Sim()
    alice = sim.text_member("1234", "alice")
    bob = sim.text_member("1234", "bob")
    sim.forget(alice)
    sim.line(bob, "/me joined")
    sim.line(bob, "/me left (kicked: spam)")
    sim.line(bob, "--> carol joined")
    sim.text_member("1234", "carol")
    stamp = r"\[\d\d:\d\d:\d\d\] "
    lines = sim.raw(alice)
    assert [re.sub(stamp, "", line) for line in lines] == [
        "* bob joined", "* bob left (kicked: spam)", "bob: --> carol joined",
        "--> carol joined"]
    for name in ("<-- alice left (kicked", "--> carol joined", "> quote"):
        with pytest.raises(RemoteProtocolError):
            rules.normalize_name(name)


# --- issue 11, item 5: a connection rate, and records a flood cannot flush away -------


def test_connections_are_rate_limited_per_address_network_and_in_total() -> None:
    sim = Sim(connection_rate=1.0, connection_burst=3, max_connections_per_address=1000)
    greetings = [sim.raw(sim.connect("10.0.0.1"))[0] for _ in range(4)]
    assert [g.split()[1] for g in greetings] == ["ready"] * 3 + ["busy"]
    assert greetings[-1] == ("LANCHAT/1 busy Too many connections from your address; "
                             "try again in 1 second.")
    assert sim.next_cid - 1 in sim.closed and sim.next_cid - 2 not in sim.closed
    for host in ("10.0.0.2", "10.0.0.3", "10.0.0.4"):  # the /24's 12, 3 taken already
        assert all(sim.raw(sim.connect(host))[0].split()[1] == "ready" for _ in range(3))
    assert "from your network" in sim.raw(sim.connect("10.0.0.5"))[0]
    for net in range(1, 13):  # the server's 48: 12 from one /24, 3 from each of 12 more
        for _ in range(3):
            sim.raw(sim.connect(f"10.{net}.0.1"))
    assert "from all addresses" in sim.raw(sim.connect("10.20.0.1"))[0]
    sim.now += 1.0  # the server's bucket refills 16 a second
    assert sim.raw(sim.connect("10.20.0.1"))[0].split()[1] == "ready"
    assert sim.core.counters["refused_connections"] == 3


def test_a_connection_told_busy_costs_no_token() -> None:
    sim = Sim(connection_rate=1.0, connection_burst=2)
    for _ in range(2):
        sim.connect("10.0.0.1")
    for _ in range(50):  # hammering while refused does not push the wait further
        sim.now += 0.01
        assert sim.raw(sim.connect("10.0.0.1"))[0].split()[1] == "busy"
    sim.now += 0.51  # a second since the burst was spent: one token
    assert sim.raw(sim.connect("10.0.0.1"))[0].split()[1] == "ready"


def test_a_connection_flood_cannot_flush_the_attackers_join_record() -> None:
    sim = Sim(log_ring_size=1000)
    member = sim.json_member("1234", "mallory", host="10.0.0.66")
    join, = sim.entries("join")
    accepted = refused = 0
    for _ in range(39_000):  # 3,900 connections a second for 10 s, closed at once
        sim.now += 1 / 3900
        cid = sim.connect("10.0.0.66")
        if cid in sim.closed:
            refused += 1
        else:
            accepted += 1
            sim.feed(cid, b"")
        sim.out.pop(cid, None)
    assert accepted == pytest.approx(100 + 5 * 10, abs=2)  # burst + rate x time
    ring = sim.log.tail()
    assert join in ring and len(ring) < 40  # 20 one by one, the rest counted
    assert not sim.entries("connection_summary")
    sim.advance(5.0)  # the address is quiet: what was counted is written
    summary, = sim.entries("connection_summary")
    assert summary["addr"] == "10.0.0.66" and summary["reasons"] == {"busy": summary["refused"]}
    assert summary["refused"] + len(sim.entries("refused_connection")) == refused \
        == sim.core.counters["refused_connections"]
    assert summary["counts"]["connect"] + len(sim.entries("connect")) == accepted + 1
    assert summary["seconds"] == pytest.approx(10.0, abs=0.1)
    assert member not in sim.closed


def test_a_long_flood_is_summarized_every_minute() -> None:
    sim = Sim()
    for second in range(150):
        for _ in range(20):  # 20 a second: past the record budget from the first second
            sim.feed(sim.connect("10.0.0.66"), b"")
        sim.advance(1.0)
        assert len(sim.entries("connection_summary")) == (second + 1) // 60
    sim.advance(5.0)
    summaries = sim.entries("connection_summary")
    assert len(summaries) == 3
    counters = sim.core.counters
    assert counters["connections"] + counters["refused_connections"] == 150 * 20
    written = sum(len(sim.entries(e)) for e in ("connect", "disconnect", "refused_connection"))
    assert written == 20  # the address's record budget: the rest is in the summaries
    assert written + sum(sum(e["counts"].values()) for e in summaries) \
        == 2 * counters["connections"] + counters["refused_connections"]


def test_an_ordinary_address_is_logged_one_by_one() -> None:
    sim = Sim()
    for _ in range(5):  # a person trying nc a few times
        sim.feed(sim.connect("10.0.0.7"), b"")
    sim.advance(10.0)
    assert len(sim.entries("connect")) == len(sim.entries("disconnect")) == 5
    assert not sim.entries("connection_summary")


def test_many_addresses_at_once_are_counted_together() -> None:
    sim = Sim(max_connections=100_000)
    for i in range(600):  # one connection from each: no address is over its own budget
        sim.feed(sim.connect(f"10.{i // 200}.{i % 200}.1"), b"")
    sim.advance(6.0)
    summaries = sim.entries("connection_summary")
    assert [e["addr"] for e in summaries] == ["*"]
    written = len(sim.entries("connect")) + len(sim.entries("disconnect"))
    assert written + sum(summaries[0]["counts"].values()) == 1200
    assert written <= 240  # the server's record budget


def test_refused_messages_and_flooding_records_are_on_the_address_budget() -> None:
    """Members of one address each refused while stopped, then each cut for flooding:
    past the address's record budget their records are counted, and the summary says
    how many messages and disconnections it stands for."""
    sim = Sim(message_rate=1.0, message_burst=2, flood_timeout=5.0, join_burst=1000,
              join_rate=1000.0, max_connections_per_address=1000, connection_burst=1000)
    members = [sim.json_member("1234", f"m{i}", host="10.0.0.66") for i in range(40)]
    bystander = sim.json_member("5678", "ola", host="10.0.0.7")
    sim.advance(60.0)  # the address's budget refilled after the joins' records
    sim.apply(sim.core.set_state("stopped", "admin:root", sim.now))
    for cid in members:
        sim.send(cid, {"type": "say", "text": "hello?"})
    sim.send(bystander, {"type": "say", "text": "hello?"})
    sim.apply(sim.core.set_state("active", "admin:root", sim.now))
    for step in range(7):  # a token a second, always spent at once: never refilled
        for cid in members:
            sim.send(cid, {"type": "say", "text": f"x{step}"})
            sim.send(cid, {"type": "say", "text": f"y{step}"})
            sim.apply(sim.core.lagging(cid, sim.now))
        sim.now += 1.0
    assert all(cid in sim.closed for cid in members) and bystander not in sim.closed
    sim.apply(sim.core.shutdown(sim.now))
    sim.apply(sim.core.summaries(sim.now, every=True))  # as the daemon's stop does
    ours = [e for e in sim.entries("refused_messages") if e["name"] != "ola"]
    assert len(ours) < 40
    assert [e["name"] for e in sim.entries("refused_messages") if e["name"] == "ola"] == ["ola"]
    summaries = [e for e in sim.entries("connection_summary") if e["addr"] == "10.0.0.66"]
    counted = {event: sum(s["counts"].get(event, 0) for s in summaries)
               for event in ("refused_messages", "flooding")}
    told = [e["code"] for cid in members for e in sim.events(cid)
            if e["type"] == "error" and e["code"] in ("stopped", "rate_limited")]
    assert told.count("stopped") == 40
    # Every refusal a member was told of is in the log: one by one, or counted.
    assert sum(e["count"] for e in ours) + counted["refused_messages"] == len(told)
    assert len(sim.entries("flooding")) + counted["flooding"] == 40
    assert counted["flooding"] > 0 and len(sim.entries("flooding")) < 40

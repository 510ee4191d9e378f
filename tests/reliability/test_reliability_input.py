"""Hostile bytes: huge lines, invalid UTF-8, JSON of the wrong shape or depth, bad names."""

from __future__ import annotations

import json
import threading
import unicodedata
from typing import Any

from reliability_kit import BYE_TEXT, Peer, Scenario, goodbye

MB = 1024 * 1024

#: Scenarios that check the answer to each of many bad lines are not about the rate:
#: past message_burst lines, fakelag would read them at 5 a second (and say so once).
UNPACED = {"message_rate": 100000.0, "message_burst": 100000}


def _send_in_background(peer: Peer, data: bytes, chunk: int = 256 * 1024) -> threading.Thread:
    def run() -> None:
        view = memoryview(data)
        for start in range(0, len(view), chunk):
            peer.sock.sendall(view[start:start + chunk])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_ten_megabyte_line_with_no_newline(scenario: Scenario) -> None:
    """Four 10 MB lines at once: each sender is told once, nothing is buffered or relayed."""
    scenario.load = "4 clients each send a 10 MB line with no newline (2 joined, 2 not)"
    daemon = scenario.start()
    witness = Peer(daemon.tcp)
    witness.join("5151", "witness")
    with scenario.steady_client():
        peers = [Peer(daemon.tcp) for _ in range(4)]
        for i, peer in enumerate(peers[:2]):
            peer.join("5151", f"big{i}")
            peer.send(b'{"type":"say","text":"')
        senders = [_send_in_background(p, b"x" * (10 * MB)) for p in peers]
        for thread in senders:
            thread.join(60)
            assert not thread.is_alive(), "the daemon stopped reading a 10 MB line"
        for i, peer in enumerate(peers):
            # The rest of the long line, then a good one: the session goes on.
            if i < 2:
                peer.send(b'"}\n{"type":"say","text":"after the long line"}\n')
                error = peer.until(lambda e: e["type"] == "error")
                assert error["code"] == "line_too_long", error
                echo = peer.until(lambda e: e["type"] == "message")
                assert echo["text"] == "after the long line"
            else:
                peer.send(b'\n{"type":"hello","versions":[1]}\n')
                first = peer.line()
                assert first is not None and "at most 4096 bytes" in first, first
                assert peer.until(lambda e: e["type"] == "welcome")
        seen = [witness.until(lambda e: e["type"] == "message") for _ in range(2)]
        assert sorted(e["from"] for e in seen) == ["big0", "big1"]
        assert all(e["text"] == "after the long line" for e in seen)
        for peer in peers:
            peer.close()
    scenario.check_memory(growth_mb=16)
    witness.close()
    scenario.alive()


def test_invalid_utf8_gets_errors_then_a_goodbye(scenario: Scenario) -> None:
    """Undecodable lines: one error each, then a goodbye naming why, then the close."""
    scenario.load = "20 clients (10 JSON, 10 text) send 30 lines of invalid UTF-8 each"
    daemon = scenario.start({"limits": {"max_errors": 10, "join_burst": 100}})
    witness = Peer(daemon.tcp)
    witness.join("5252", "witness")
    garbage = [b"\xff\xfe\xfd", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
               b'{"type":"say","text":"\xe2\x82"}', b"\xc0\xaf", b"ok \x80 ok"]
    with scenario.steady_client():
        peers = []
        for i in range(20):
            peer = Peer(daemon.tcp)
            if i % 2:
                peer.join_text("5252", f"bytes{i}")
            else:
                peer.join("5252", f"bytes{i}")
            peers.append(peer)
        for peer in peers:
            peer.send(b"".join(garbage[n % len(garbage)] + b"\n" for n in range(30)))
        for i, peer in enumerate(peers):
            lines = peer.lines_to_eof(timeout=10.0)
            if i % 2:
                errors = [x for x in lines if x.startswith("! The line is not valid UTF-8")]
                assert lines[-1].startswith(BYE_TEXT["too_many_errors"]), lines[-3:]
            else:
                events = [json.loads(x) for x in lines]
                errors = [e for e in events if e["type"] == "error"]
                assert all(e["code"] == "bad_utf8" for e in errors), errors
                assert events[-1]["type"] == "bye", events[-3:]
            assert len(errors) == 10, lines
            assert goodbye("\n".join(lines).encode()) == "too_many_errors"
            peer.close()
        left = set()
        while len(left) < 20:
            event = witness.until(lambda e: e["type"] == "presence" and e["event"] == "leave")
            left.add(event["name"])
    witness.close()
    scenario.check_memory(growth_mb=16)
    scenario.alive()


# Each line, sent by a joined JSON member, and the reply it must get: an error code, or
# the type of a normal reply.
WRONG_SHAPES: list[tuple[bytes, str]] = [
    (b"[]", "bad_request"),
    (b'"hello"', "bad_request"),
    (b"null", "bad_request"),
    (b"12", "bad_request"),
    (b'{"type":5}', "unknown_type"),
    (b'{"type":null}', "unknown_type"),
    (b'{"type":["say"]}', "unknown_type"),
    (b'{"type":{"x":1}}', "unknown_type"),
    (b'{"type":"shout","text":"x"}', "unknown_type"),
    (b'{"text":"no type"}', "unknown_type"),
    (b'{"type":"say"}', "bad_request"),
    (b'{"type":"say","text":["a"]}', "bad_request"),
    (b'{"type":"say","text":{"a":"b"}}', "bad_request"),
    (b'{"type":"say","text":1e999}', "bad_request"),
    (b'{"type":"say","text":NaN}', "bad_request"),
    (b'{"type":"say","text":"hi","action":"yes"}', "bad_request"),
    (b'{"type":"say","text":""}', "invalid_text"),
    (b'{"type":"say","text":"   "}', "invalid_text"),
    (b'{"type":"msg","to":null,"text":"x"}', "bad_request"),
    (b'{"type":"msg","to":"nobody","text":"x"}', "no_such_member"),
    (b'{"type":"msg","to":"shape","text":7}', "bad_request"),
    (b'{"type":"join","pin":1234,"name":"x"}', "bad_request"),
    (b'{"type":"join","pin":"1234","name":"again"}', "bad_state"),
    (b'{"type":"hello","versions":"1"}', "bad_request"),
    (b'{"type":"hello","versions":[true]}', "bad_request"),
    (b'{"type":"hello","versions":[1]}', "bad_state"),
    (b'{"type":"ping","token":{"a":1}}', "bad_request"),
    (b'{"type":"ping","token":"' + b"t" * 100 + b'"}', "bad_request"),
    (b'{"type":"say","text":"' + b"1" * 3000 + b'"}', "invalid_text"),
    (b'{"type":"say","text":1' + b"0" * 4000 + b"}", "bad_request"),
    (b'{"type":"who","extra":[1,2,3]}', "members"),
    (b'{"type":"ping","token":"\\ud800"}', "pong"),
    (b'{"type":"ping","token":"\\u0000\\u001b[2J"}', "pong"),
    (b'{"type":"say","text":"\\ud83d"}', "invalid_text"),
    (b'{"type":"say","text":"fine","type":"who"}', "members"),
    (b"{", "bad_json"),
    (b'{"type":"say","text":"x"', "bad_json"),
    (b"{}", "unknown_type"),
]


def test_valid_json_of_the_wrong_shape(scenario: Scenario) -> None:
    """Every wrong shape gets one reply naming the problem, and the member stays."""
    scenario.load = f"{len(WRONG_SHAPES)} kinds of malformed request, from 10 members at once"
    daemon = scenario.start({"limits": {"max_errors": 1000, "join_burst": 100, **UNPACED}})
    with scenario.steady_client():
        peers = []
        for i in range(10):
            peer = Peer(daemon.tcp)
            peer.join("5353", "shape" if i == 0 else f"shape{i}")
            peers.append(peer)
        for peer in peers:
            peer.send(b"".join(line + b"\n" for line, _ in WRONG_SHAPES))
        for peer in peers:
            for line, expected in WRONG_SHAPES:
                reply = peer.until(lambda e: e["type"] in ("error", "members", "pong"))
                got = reply["code"] if reply["type"] == "error" else reply["type"]
                assert got == expected, (line[:80], reply)
                if expected == "pong" and b"ud800" in line:
                    assert reply["token"] == "\ud800"
            peer.say("still here")
            assert peer.until(lambda e: e["type"] == "message" and e["text"] == "still here")
            peer.close()
    scenario.check_memory(growth_mb=16)
    scenario.alive()


def test_deeply_nested_json(scenario: Scenario) -> None:
    """JSON nested thousands deep is refused as such, without a crash or a stall."""
    scenario.load = "10 clients x 50 lines nested up to 4,000 deep"
    daemon = scenario.start({"limits": {"max_errors": 1000, **UNPACED}})
    shapes = [b'{"a":' + b"[" * 4000, b'{"type":"say","text":' + b'{"a":' * 800,
              b'{"a":' + b"[" * 900 + b"]" * 900 + b"}", b'{"type":"who","x":' + b"[[" * 1000]
    with scenario.steady_client():
        peers = []
        for _ in range(10):
            peer = Peer(daemon.tcp)
            peer.hello()
            peers.append(peer)
        for peer in peers:
            peer.send(b"".join(shapes[n % len(shapes)] + b"\n" for n in range(50)))
        for peer in peers:
            for n in range(50):
                reply = peer.until(lambda e: e["type"] in ("error", "members"))
                if n % len(shapes) == 2:
                    assert reply["code"] == "unknown_type", reply  # valid, merely deep
                else:
                    assert reply["code"] == "bad_json", reply
            peer.close()
    scenario.check_memory(growth_mb=16)
    scenario.alive()


BAD_PINS = ["12\x1b[2J34", "1234\u202e", "\u0661\u0662\u0663\u0664", "１２３４", "1234\x00",
            "1" * 10_000, "12 34", "-1234", "+1234", "1234\u200b"]
BAD_NAMES = ["\u202egnp.exe", "bob\x07", "\x1b[31mred", "a" * 10_000, " bob", "bob ",
             "zero\u200bwidth", "new\u2028line", "tab\there", "\u2066iso\u2069", "\ud800x",
             "\U000f0000private", "\x85next", "", "\u0301" * 50]
BAD_TEXTS = ["\u202eevil", "bell\x07", "\x1b[2Jclear", "x" * 10_000, "\u2066isolate",
             "line\u2028sep", "nul\x00", "\ud800"]


def _control_or_format(value: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") and c != "\t"
               for c in value)


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def test_names_pins_and_texts_with_control_characters(scenario: Scenario) -> None:
    """Control characters, bidi overrides and 10,000-character values are refused with
    the rule; none reaches another member or breaks a line of the activity log."""
    scenario.load = (f"{len(BAD_PINS)} PINs, {len(BAD_NAMES)} names, {len(BAD_TEXTS)} texts,"
                     " by text and JSON clients")
    daemon = scenario.start({"limits": {**UNPACED, "max_line_bytes": 65536, "max_errors": 1000,
                                        "join_burst": 1000}, "log": {"log_messages": True}})
    witness = Peer(daemon.tcp)
    witness.join("5454", "witness")
    with scenario.steady_client():
        # A person at nc: each refusal states the rule and asks again.
        person = Peer(daemon.tcp)
        for pin in BAD_PINS:
            person.send(pin.encode("utf-8", "surrogatepass") + b"\n")
            assert person.line() == "! A room PIN is 4 to 12 digits (0-9)."
            assert person.line() == "Enter the PIN of the room you want to join:"
        person.send(b"5454\n")
        assert person.line() == "Enter your name:"
        for name in BAD_NAMES:
            if not name or name != name.strip():
                continue  # plain-text mode trims a typed line and skips empty ones
            person.send(name.encode("utf-8", "surrogatepass") + b"\n")
            reply = person.line()
            if "\ud800" in name:
                assert reply is not None and reply.startswith("! The line is not valid UTF-8")
                continue
            assert reply is not None and reply.startswith("! A name is 1 to 32 printable"), \
                (name[:20], reply)
            assert person.line() == "Enter your name:"
        person.send(b"person\n")
        joined = person.line()
        assert joined is not None and joined.startswith("* You are in room 5454 as person.")
        for body in BAD_TEXTS:
            person.send(body.encode("utf-8", "surrogatepass") + b"\n")
            reply = person.line()
            assert reply is not None and reply.startswith("! "), reply
        # A program: the same values as JSON (escapes included).
        program = Peer(daemon.tcp)
        program.hello()
        for pin in BAD_PINS:
            program.send_json({"type": "join", "pin": pin, "name": "program"})
            assert program.until(lambda e: e["type"] == "error")["code"] in (
                "invalid_pin", "bad_request")
        for name in BAD_NAMES:
            program.send_json({"type": "join", "pin": "5454", "name": name})
            assert program.until(lambda e: e["type"] == "error")["code"] == "invalid_name"
        program.send_json({"type": "join", "pin": "5454", "name": "program"})
        assert program.until(lambda e: e["type"] == "joined")
        for body in BAD_TEXTS:
            program.say(body)
            assert program.until(lambda e: e["type"] == "error")["code"] == "invalid_text"
            program.send_json({"type": "msg", "to": "witness", "text": body})
            assert program.until(lambda e: e["type"] == "error")["code"] == "invalid_text"
        program.say("the only message")
        person.send(b"and mine\n")
        seen = []
        while len([e for e in seen if e["type"] == "message"]) < 2:
            event = witness.event()
            assert event is not None
            seen.append(event)
        person.close()
        program.close()
    texts = sorted(e["text"] for e in seen if e["type"] == "message")
    assert texts == ["and mine", "the only message"]
    for event in seen:
        for value in _strings(event):
            assert not _control_or_format(value) and len(value) < 100, event
    witness.close()
    scenario.alive()
    scenario.check_memory(growth_mb=16)
    daemon.stop()
    raw = daemon.log_file.read_bytes()
    for line in raw.split(b"\n")[:-1]:
        record = json.loads(line)
        assert isinstance(record, dict)
    assert not any(c < 0x20 and c != 0x0A for c in raw), "a raw control byte in the log"

"""A short form of the benchmarks (tests/bench), so that the suite never rots.

Small sizes and no speed thresholds: what is checked is what the full benchmark checks
for correctness.  Every receiver gets every message exactly once and in order (the
room's seq and each sender's own counter), every client joins and sees every other
member of its room, and both references still work: the bare relay and ngIRCd (Debian's
``ngircd``, which CI installs; without it these tests fail and say so).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench import load, measures, servers
from hypothesis import given, settings
from hypothesis import strategies as st

from lanchat.protocol import chat


@pytest.fixture(autouse=True)
def _nofile() -> None:
    servers.raise_nofile(4096)


def _serve(kind: str, tmp_path: Path) -> Iterator[servers.Server]:
    started = servers.start_server(kind, tmp_path / kind)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(params=["lanchatd", "relay", "ngircd"])
def server(request: Any, tmp_path: Path) -> Iterator[servers.Server]:
    yield from _serve(request.param, tmp_path)


@pytest.fixture(params=["lanchatd", "relay"])
def udp_server(request: Any, tmp_path: Path) -> Iterator[servers.Server]:
    """A server with discovery (an IRC server has none)."""
    yield from _serve(request.param, tmp_path)


def assert_clean(figures: dict[str, Any]) -> None:
    assert measures.check_clean("short", figures) == []


def test_fanout_every_receiver_gets_every_message_once_in_order(
        server: servers.Server) -> None:
    figures = measures.fanout(server, receivers=6, senders=3, messages=150, procs=2,
                              store_all=True, timeout=60)
    assert_clean(figures)
    assert figures["complete"]
    assert figures["deliveries"] == figures["expected_deliveries"] == 6 * 3 * 150
    assert figures["receivers_checked_line_by_line"] == 6


def test_fanout_checks_streams_it_did_not_store(server: servers.Server) -> None:
    figures = measures.fanout(server, receivers=8, senders=2, messages=100, procs=2,
                              timeout=60)
    assert_clean(figures)
    assert figures["deliveries"] == 8 * 2 * 100
    assert figures["receivers_checked_line_by_line"] == 2  # one per process


@pytest.mark.parametrize("kind", ["lanchatd", "ngircd"])
def test_small_rooms_each_room_gets_only_its_own_messages(tmp_path: Path, kind: str) -> None:
    # The relay has no rooms: everyone gets every line.
    server = servers.start_server(kind, tmp_path / kind)
    try:
        figures = measures.small_rooms(server, rooms=5, messages=100, senders=4,
                                       receivers=2, procs=2, timeout=60)
    finally:
        server.stop()
    assert_clean(figures)
    assert figures["deliveries"] == 5 * 2 * 4 * 100


def test_connections_every_client_joins_and_sees_its_room(server: servers.Server) -> None:
    figures = measures.connections(server, clients=300, room_size=10, procs=2, window=32,
                                   timeout=60)
    assert_clean(figures)
    assert figures["joined"] == figures["settled"] == figures["still_connected"] == 300
    # (CPU time comes in 10 ms ticks: 300 of the relay's joins may not fill one)
    assert figures["server_cpu_us_per_join"] >= 0 and figures["load_cpu_us_per_join"] >= 0


def test_latency_counts_every_paced_message(server: servers.Server) -> None:
    figures = measures.latency(server, receivers=4, rate=100, seconds=0.5, procs=1,
                               timeout=30)
    assert_clean(figures)
    assert figures["samples"] == 4 * 50
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]


def test_discovery_answers_both_probes(udp_server: servers.Server) -> None:
    figures = measures.discovery(udp_server, probes=20, warmup=2)
    for kind in ("json", "legacy"):
        assert figures[kind]["lost"] == figures[kind]["wrong"] == 0
        assert figures[kind]["median_ms"] > 0


# ----------------------------------------------------------------------------- the checker

def _stream(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)


def _messages(order: list[tuple]) -> list[dict[str, Any]]:
    """lanchatd message events for (sender, counter) pairs, seq in arrival order."""
    return [{"type": "message", "room": "1234", "seq": seq, "ts": 1.0, "from": f"s{s}",
             "text": load.payload_text(s, c, 40)}
            for seq, (s, c) in enumerate(order, 1)]


def test_the_checker_passes_a_good_stream() -> None:
    good = _messages([(0, 0), (1, 0), (0, 1), (1, 1)])
    assert load.verify_stream(_stream(good), "1234", ["s0", "s1"], 2, "lanchat") == {
        "received": 4, "lost": 0, "duplicated": 0, "order_errors": 0, "malformed": 0}


def test_the_checker_finds_a_lost_message() -> None:
    stream = _messages([(0, 0), (1, 0), (0, 1), (1, 1)])
    del stream[2]
    result = load.verify_stream(_stream(stream), "1234", ["s0", "s1"], 2, "lanchat")
    assert result["lost"] == 1
    assert result["order_errors"] >= 1  # the room's seq skips one


def test_the_checker_finds_a_duplicate() -> None:
    stream = _messages([(0, 0), (0, 1)])
    stream.append(dict(stream[1], seq=3))
    result = load.verify_stream(_stream(stream), "1234", ["s0"], 2, "lanchat")
    assert result["duplicated"] == 1
    assert result["lost"] == 0


def test_the_checker_finds_messages_out_of_order() -> None:
    stream = _messages([(0, 0), (0, 1), (0, 2)])
    stream[1], stream[2] = stream[2], stream[1]
    result = load.verify_stream(_stream(stream), "1234", ["s0"], 3, "lanchat")
    assert result["order_errors"] >= 2
    assert result["lost"] == result["duplicated"] == 0


def test_the_checker_refuses_a_message_without_its_sender() -> None:
    stream = _messages([(0, 0)])
    del stream[0]["from"]
    result = load.verify_stream(_stream(stream), "1234", ["s0"], 1, "lanchat")
    assert result["malformed"] == 1
    assert result["lost"] == 1


# ----------------------------------------------------------------------------- tuning

_text = st.text(st.characters(codec="utf-8") | st.characters(min_codepoint=0xD800,
                                                              max_codepoint=0xDFFF))


@settings(max_examples=300, deadline=None)
@given(room=_text, seq=st.integers(), ts=st.floats(allow_nan=True, allow_infinity=True),
       sender=_text, body=_text, action=st.booleans(), history=st.booleans())
def test_the_fast_message_encoder_writes_what_the_generic_one_does(
        room: str, seq: int, ts: float, sender: str, body: str, action: bool,
        history: bool) -> None:
    # chat.encode_json has a fast path for room messages (see docs/performance.md): its
    # bytes must be exactly those of the generic encoder, for any field values.
    message = chat.Message(room, seq, ts, sender, body, action, history)
    generic = (chat._dumps(message.to_dict()) + "\n").encode("utf-8", "backslashreplace")
    assert chat.encode_json(message) == generic


@settings(max_examples=300, deadline=None)
@given(room=_text, ts=st.floats(allow_nan=True, allow_infinity=True), sender=_text,
       seq=st.integers(), messages=st.lists(st.tuples(_text, st.booleans()), max_size=5))
def test_the_message_run_encoder_writes_what_encode_json_does(
        room: str, ts: float, sender: str, seq: int, messages: list[tuple[str, bool]]
        ) -> None:
    # chat.message_lines formats the fields a read's messages share once (see
    # docs/performance.md): its run must be exactly encode_json's lines, one per message.
    encode = chat.message_lines(room, ts, sender)
    says = [chat.trusted(chat.Say, text=body, action=action) for body, action in messages]
    assert encode(seq, says) == b"".join(
        chat.encode_json(chat.Message(room, seq + i, ts, sender, body, action))
        for i, (body, action) in enumerate(messages))

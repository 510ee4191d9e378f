"""Load from members: floods, a crowd just under the rate limit, a reader that never reads,
and the order and completeness of a busy room."""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import threading
import time

import pytest
from lanchat_testing import env_with_repo
from reliability_kit import (
    FLOODER,
    HARD_DEADLINE,
    PAIR_SECONDS,
    Peer,
    Scenario,
    goodbye,
    loopback_sources,
    open_many,
)

RATE = 5.0  # the default message_rate
BURST = 20  # the default message_burst


@pytest.mark.slow
def test_clients_flooding_as_fast_as_tcp_allows(scenario: Scenario) -> None:
    """Clients sending as fast as TCP allows for 3 s: each is read at its rate (fakelag)
    and stays connected (3 s is less than flood_timeout), the room gets no more than the
    rate allows, so the steady client and memory are not hurt."""
    seconds = 3.0
    scenario.load = (f"2 plain-text members send 'x' lines, 1 JSON member sends say, 1 "
                     f"unjoined client pings, as fast as TCP allows, {seconds:g} s")
    daemon = scenario.start({"limits": {"join_burst": 100}})
    witness = Peer(daemon.tcp)
    witness.join("6060", "witness")
    modes = ["text", "text", "json", "ping"]
    with scenario.steady_client():
        procs = [subprocess.Popen(
            [sys.executable, "-c", FLOODER, str(daemon.tcp[1]), "6060", f"flood{i}", mode,
             str(seconds)], stdout=subprocess.PIPE, text=True, env=env_with_repo())
            for i, mode in enumerate(modes)]
        started = time.monotonic()
        outputs = []
        for proc in procs:
            out, _ = proc.communicate(timeout=30)
            outputs.append(out.split())
        elapsed = time.monotonic() - started
    for i, (sent, received, state) in enumerate(outputs):
        assert int(sent) > 100_000, f"flooder {i} hardly sent anything: {outputs[i]}"
        assert int(received) > 0
        assert state == "open", f"flooder {i} was disconnected, but rate limits only refuse"
    delivered: dict[str, int] = {}
    witness.say("end of flood")
    while True:
        event = witness.until(lambda e: e["type"] == "message")
        if event["from"] == "witness":
            break
        delivered[event["from"]] = delivered.get(event["from"], 0) + 1
    allowed = BURST + RATE * (elapsed + 1.0)
    for name, count in delivered.items():
        assert count <= allowed, f"{name} got {count} messages through (at most {allowed})"
    witness.close()
    scenario.check_memory(growth_mb=8)
    scenario.alive()


@pytest.mark.slow
def test_many_members_just_under_the_rate_limit(scenario: Scenario) -> None:
    """40 members each at 4 messages a second: nobody is refused, everyone gets all."""
    members, per_second, seconds = 40, 4.0, 3.0
    per_member = int(per_second * seconds)
    total = members * per_member
    scenario.load = (f"{members} members x {per_second:g} msg/s (limit {RATE:g}) for "
                     f"{seconds:g} s = {total} messages, {total * members} deliveries")
    daemon = scenario.start({"limits": {"join_burst": 100}})
    peers = []
    for i in range(members):
        peer = Peer(daemon.tcp)
        peer.join("6161", f"m{i}")
        peers.append(peer)
    seqs: dict[int, list[int]] = {i: [] for i in range(members)}
    errors: list[dict[str, object]] = []
    with scenario.steady_client():
        sel = selectors.DefaultSelector()
        for i, peer in enumerate(peers):
            peer.sock.setblocking(False)
            sel.register(peer.sock, selectors.EVENT_READ, i)
        start = time.monotonic()
        next_send = [start + i * (1.0 / per_second) / members for i in range(members)]
        sent = [0] * members
        deadline = start + seconds + 15.0
        while min(len(s) for s in seqs.values()) < total:
            now = time.monotonic()
            assert now < deadline, f"deliveries missing: {min(len(s) for s in seqs.values())}"
            for i, peer in enumerate(peers):
                if sent[i] < per_member and now >= next_send[i]:
                    sent[i] += 1
                    next_send[i] += 1.0 / per_second
                    peer.sock.sendall(json.dumps(
                        {"type": "say", "text": f"m{i} #{sent[i]}"}).encode() + b"\n")
            for key, _ in sel.select(0.01):
                i = key.data
                peer = peers[i]
                data = peer.sock.recv(65536)
                assert data, f"m{i} was disconnected"
                peer.buf += data
                *lines, peer.buf = peer.buf.split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    if event["type"] == "message":
                        seqs[i].append(event["seq"])
                    elif event["type"] == "error":
                        errors.append(event)
        sel.close()
    assert not errors, errors[:3]
    for i in range(members):
        assert seqs[i] == list(range(1, total + 1)), f"m{i} saw gaps or repeats"
    for peer in peers:
        peer.close()
    scenario.check_memory(growth_mb=16)
    scenario.alive()


def test_a_reader_that_never_reads(scenario: Scenario) -> None:
    """Its output cap disconnects it with the reason; the room and others are unaffected."""
    cap = 65536
    scenario.load = f"1 member never reads while its room talks (output cap {cap} bytes)"
    daemon = scenario.start({"limits": {"output_buffer_bytes": cap, "message_rate": 10000.0,
                                        "message_burst": 10000}})
    stuck = Peer(daemon.tcp, rcvbuf=4096)
    stuck.join("6262", "stuck")
    talker = Peer(daemon.tcp)
    talker.join("6262", "talker")
    listener = Peer(daemon.tcp)
    listener.join("6262", "listener")
    body = "y" * 1500
    with scenario.steady_client():
        sent = 0
        heard = 0
        left = None
        deadline = time.monotonic() + 20.0
        while left is None:
            assert time.monotonic() < deadline and sent < 5000, \
                f"the reader that never reads was not disconnected after {sent} messages"
            for _ in range(20):
                sent += 1
                talker.say(f"{sent} {body}")
            while heard < sent:
                event = listener.until(lambda e: e["type"] in ("message", "presence"))
                if event["type"] == "message":
                    heard += 1
                    assert event["text"] == f"{heard} {body}", "the listener missed a message"
                elif event["name"] == "stuck" and event["event"] == "leave":
                    left = event
        assert left.get("reason") == "not reading", left
        # Told why: reading now, it finds everything queued, then the goodbye, then EOF.
        rest = b"\n".join(line.encode() for line in stuck.lines_to_eof(timeout=10.0))
        assert goodbye(rest) == "slow_reader", rest[-200:]
        talker.say("after")
        assert listener.until(lambda e: e["type"] == "message" and e["text"] == "after")
    for peer in (stuck, talker, listener):
        peer.close()
    scenario.check_memory(growth_mb=16)
    scenario.alive()


@pytest.mark.slow
def test_busy_room_every_receiver_sees_every_message_once_in_order(scenario: Scenario) -> None:
    """Several senders at full speed: each receiver gets every message exactly once,
    all in the same order (per-room seq), each sender's messages in the order sent."""
    senders, per_sender, listeners = 5, 300, 3
    total = senders * per_sender
    scenario.load = (f"{senders} senders x {per_sender} messages at full speed, "
                     f"{senders + listeners} receivers in one room")
    daemon = scenario.start({"limits": {"message_rate": 100000.0, "message_burst": 100000,
                                        "join_burst": 100}})
    talkers = []
    for i in range(senders):
        peer = Peer(daemon.tcp)
        peer.join("6363", f"s{i}")
        talkers.append(peer)
    quiet = []
    for i in range(listeners):
        peer = Peer(daemon.tcp)
        peer.join("6363", f"r{i}")
        quiet.append(peer)
    everyone = talkers + quiet
    logs: list[list[tuple[int, str, str]]] = [[] for _ in everyone]

    def receive(index: int) -> None:
        peer = everyone[index]
        while len(logs[index]) < total:
            event = peer.event(timeout=20.0)
            if event is None:
                return
            if event["type"] == "message":
                logs[index].append((event["seq"], event["from"], event["text"]))

    def send(index: int) -> None:
        lines = b"".join(json.dumps({"type": "say", "text": f"s{index}:{k}"}).encode() + b"\n"
                         for k in range(per_sender))
        talkers[index].sock.sendall(lines)

    with scenario.steady_client():
        readers = [threading.Thread(target=receive, args=(i,), daemon=True)
                   for i in range(len(everyone))]
        for thread in readers:
            thread.start()
        writers = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(senders)]
        for thread in writers:
            thread.start()
        for thread in writers + readers:
            thread.join(60)
            assert not thread.is_alive(), "a sender or receiver got stuck"
    first = logs[0]
    assert [seq for seq, _, _ in first] == list(range(1, total + 1))
    for index, log in enumerate(logs):
        assert log == first, f"receiver {index} saw a different sequence"
    for i in range(senders):
        mine = [text for _, sender, text in first if sender == f"s{i}"]
        assert mine == [f"s{i}:{k}" for k in range(per_sender)]
    for peer in everyone:
        peer.close()
    scenario.check_memory(growth_mb=16)
    scenario.alive()


@pytest.mark.slow
def test_a_thousand_joins_into_a_room_with_200_kb_of_history(scenario: Scenario) -> None:
    """1,000 members join a room whose history holds 100 messages of 1,900 characters
    (about 200 KB), a hundred at a time, each reading its history and leaving: every one
    receives the whole history, in order, and the replay is encoded once and shared (the
    daemon's memory does not grow with the joiners), so the pair's room is not held up.
    The waves go on past the thousand until the pair has timed its round trips through
    them (a thousand take under a second here)."""
    joiners, at_once, kept, length = 1000, 100, 100, 1900
    scenario.load = (f"{joiners} members join a room with {kept} past messages of "
                     f"{length} characters, {at_once} at a time, each reading the history")
    daemon = scenario.start({"rooms": {"history": kept},
                             "limits": {"message_burst": kept, "join_burst": 2 * joiners,
                                        "connection_burst": 2 * joiners}})
    talker = Peer(daemon.tcp, source="127.0.0.2")
    talker.join("7070", "talker")
    texts = [f"{k:03d} " + "h" * (length - 4) for k in range(1, kept + 1)]
    for text in texts:
        talker.say(text)
    talker.until(lambda e: e["type"] == "message" and e["seq"] == kept)
    sources = loopback_sources(joiners, second=31)
    histories: list[bytes] = []
    with scenario.steady_client():
        started = time.monotonic()
        wave = 0
        while wave < joiners or time.monotonic() - started < PAIR_SECONDS:
            assert wave < 20 * joiners, "the waves of joiners did not end"
            socks = open_many(daemon.tcp, at_once,
                              sources[wave % joiners:wave % joiners + at_once])
            sel = selectors.DefaultSelector()
            got: dict[socket.socket, bytearray] = {}
            for i, sock in enumerate(socks):
                sock.sendall(b'{"type":"hello","versions":[1]}\n' + json.dumps(
                    {"type": "join", "pin": "7070", "name": f"j{wave + i}"}).encode() + b"\n")
                got[sock] = bytearray()
                sel.register(sock, selectors.EVENT_READ)
            waiting = len(socks)
            while waiting:
                assert time.monotonic() - started < HARD_DEADLINE, (
                    f"{waiting} of wave {wave // at_once} still without their history")
                for key, _ in sel.select(1.0):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(1 << 18)
                    assert data, f"a joiner was disconnected: {bytes(got[sock][-200:])!r}"
                    buf = got[sock]
                    buf += data
                    # The greeting, welcome, joined, then the history: done at its
                    # kept-th line.
                    if buf.count(b"\n") >= kept + 3:
                        sel.unregister(sock)
                        waiting -= 1
                        lines = bytes(buf).split(b"\n")
                        assert json.loads(lines[2])["type"] == "joined", lines[2][:200]
                        histories.append(b"\n".join(lines[3:kept + 3]))
            sel.close()
            for sock in socks:
                sock.close()
            wave += at_once
        scenario.load += f" ({wave} joins in {time.monotonic() - started:.1f} s)"
    assert len(histories) == wave
    # Every joiner got the same bytes (one shared replay), and they are the room's past.
    first = [json.loads(line) for line in histories[0].split(b"\n")]
    assert [e["seq"] for e in first] == list(range(1, kept + 1))
    assert [e["text"] for e in first] == texts
    assert all(e["type"] == "message" and e["history"] is True for e in first)
    different = [i for i, h in enumerate(histories) if h != histories[0]]
    assert not different, f"{len(different)} joiners got another history, e.g. {different[:5]}"
    # The talker, still in the room, saw every joiner come and go.
    talker.say("after")
    talker.until(lambda e: e["type"] == "message" and e["text"] == "after", timeout=30)
    talker.close()
    scenario.check_memory(growth_mb=16)
    scenario.alive()

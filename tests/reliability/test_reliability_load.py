"""Load from members: floods, a crowd just under the rate limit, a reader that never reads,
and the order and completeness of a busy room."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import threading
import time

import pytest
from lanchat_testing import env_with_repo
from reliability_kit import FLOODER, Peer, Scenario, goodbye

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

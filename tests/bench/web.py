"""WebSocket members beside TCP members: what a browser member costs the server.

Theory of operation
-------------------
One room, one TCP sender (load.py's ``send`` role, flat out) and R receivers that are
either all TCP JSON clients or all WebSocket clients (the web port, ``/ws``).  The
latency measure is the same with the sender paced (200 messages a second, each
stamped with its send time) and the delays read from the stamps on arrival.  The
receivers live in one worker process of their own (``web_receive``): each does its
handshake and ``join`` with blocking calls, then, on ``go``, all are read through one
selector and the receiver counts the messages of the stream in the raw bytes: a
server's WebSocket frames are not masked, so the JSON text of each message is in the
stream as is, between frame headers, and ``MARK`` counts it exactly as on TCP.  Every
receiver must count every message: a missing or extra one is a failure, not a figure.

The figure is the server's CPU time (user + system, from /proc) over the measured
stream divided by the deliveries (messages x receivers): the cost of one delivery to
one member.  TCP and WebSocket runs alternate and each keeps its best round, as the
other measures do; the report gives both and their ratio (the target: a WebSocket
delivery costs at most 1.5 times a TCP one).
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from . import load
from .load import (
    _BENCH_TEXT,
    MARK,
    RECV_SIZE,
    SO_TIMESTAMPNS,
    Job,
    _arrival_ns,
    _cpu,
    _wait_go,
)
from .measures import RECEIVER_NICE, BenchError, _all_ready, next_pin, percentile, workers
from .servers import Lanchatd, cpu_seconds, wait_quiet

_TAIL = len(MARK) - 1


class _Member:
    """A receiver: its socket, and what it has counted."""

    def __init__(self, sock: socket.socket, carry: bytes) -> None:
        self.sock = sock
        self.carry = carry  # bytes read with the handshake, already part of the stream
        self.count = 0
        self.done_at = 0.0
        self.latencies_ns: list[int] = []


def _read_until(sock: socket.socket, pred: Any, deadline: float, buf: bytes = b"") -> bytes:
    while not pred(buf):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(RECV_SIZE)
        if not data:
            raise ConnectionError(f"closed during the handshake; had {buf[:200]!r}")
        buf += data
    return buf


def _join_tcp(addr: tuple[str, int], pin: str, name: str, deadline: float) -> _Member:
    sock = socket.create_connection(addr, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = _read_until(sock, lambda b: b"\n" in b, deadline)
    sock.sendall(b'{"type":"hello","versions":[1]}\n'
                 + json.dumps({"type": "join", "pin": pin, "name": name}).encode() + b"\n")
    buf = _read_until(sock, lambda b: b'"type":"joined"' in b and b.endswith(b"\n"),
                      deadline, buf)
    return _Member(sock, b"")


def _join_ws(addr: tuple[str, int], pin: str, name: str, deadline: float) -> _Member:
    sock = socket.create_connection(addr, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ws = WSConnection(ConnectionType.CLIENT)
    host = f"{addr[0]}:{addr[1]}"
    sock.sendall(ws.send(Request(host=host, target="/ws",
                                 extra_headers=[(b"origin", f"http://{host}".encode())])))
    texts: list[str] = []
    sent = False
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(RECV_SIZE)
        if not data:
            raise ConnectionError("closed during the WebSocket handshake")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, TextMessage):
                texts.append(event.data)
            elif not isinstance(event, AcceptConnection):
                raise ConnectionError(f"WebSocket handshake: {event}")
        if texts and not sent:  # the greeting came: hello and join
            sock.sendall(ws.send(TextMessage(data='{"type":"hello","versions":[1]}'))
                         + ws.send(TextMessage(data=json.dumps(
                             {"type": "join", "pin": pin, "name": name}))))
            sent = True
        if any('"type":"joined"' in t for t in texts):
            return _Member(sock, b"")


def _role_web_receive(pipe: Any, job: Job) -> None:
    """Receivers over ``transport`` (tcp or ws); params: transport, expected, latency
    (read the send time stamped in each message and keep the delays)."""
    deadline = time.monotonic() + job.timeout
    expected: int = job.params["expected"]
    latency: bool = job.params.get("latency", False)
    join = _join_ws if job.params["transport"] == "ws" else _join_tcp
    members = [join(job.addr, pin, name, deadline) for pin, name, _total in job.specs]
    sel = selectors.DefaultSelector()
    for member in members:
        member.sock.setblocking(False)
        if latency:  # the kernel stamps each segment's arrival, as in load.py
            member.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sel.register(member.sock, selectors.EVENT_READ, member)
    pipe.send(("ready", {"failures": []}))
    _wait_go(pipe, deadline)
    left = len(members)
    while left and time.monotonic() < deadline:
        for key, _mask in sel.select(max(0.0, min(1.0, deadline - time.monotonic()))):
            member = key.data
            try:
                if latency:
                    data, ancillary, _flags, _addr = member.sock.recvmsg(RECV_SIZE, 64)
                else:
                    data = member.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                sel.unregister(member.sock)
                left -= 1
                continue
            if latency:
                # Paced messages come one at a time, so a read is one message and the
                # kernel's stamp is its arrival.  A message cut between two reads is
                # matched once it is whole (the carry).
                now_ns = _arrival_ns(ancillary)
                chunk = member.carry + data
                end = 0
                for match in _BENCH_TEXT.finditer(chunk):
                    if match.group(3) is not None:
                        member.latencies_ns.append(now_ns - int(match.group(3)))
                        member.count += 1
                    end = match.end()
                member.carry = chunk[end:][-4096:]
            else:
                # A MARK cut between two reads is found in the kept tail plus the new
                # bytes; the tail cannot hold a whole one, and MARK does not overlap itself.
                chunk = member.carry + data
                member.count += chunk.count(MARK)
                member.carry = chunk[-_TAIL:]
            if member.count >= expected and not member.done_at:
                member.done_at = time.monotonic()
                sel.unregister(member.sock)
                left -= 1
    for member in members:
        member.sock.close()
    pipe.send(("done", {"counts": [m.count for m in members],
                        "done_at": [m.done_at for m in members], "cpu": _cpu(),
                        "latencies_ns": [ns for m in members for ns in m.latencies_ns]}))


load._ROLES["web_receive"] = _role_web_receive


def fanout(server: Lanchatd, *, transport: str, receivers: int = 50, messages: int = 10000,
           size: int = 64, timeout: float = 120.0) -> dict[str, Any]:
    """One TCP sender, R receivers over ``transport``; server CPU per delivery."""
    web = server.daemon.http
    if web is None:
        raise BenchError("the daemon serves no web port")
    pin = next_pin()
    total = receivers + 1
    addr = web if transport == "ws" else server.tcp
    rjob = Job("web_receive", addr, "lanchat", [(pin, f"r{i}", total) for i in range(receivers)],
               timeout=timeout, expected=messages, transport=transport, nice=RECEIVER_NICE)
    sjob = Job("send", server.tcp, "lanchat", [(pin, "s0", total)], timeout=timeout,
               messages=messages, size=size, numbers=[0])
    with workers([rjob]) as [rworker]:
        _all_ready([rworker], timeout)
        with workers([sjob]) as [sender]:
            _all_ready([sender], timeout)
            wait_quiet(server.pid)
            cpu0 = cpu_seconds(server.pid)
            t0 = time.monotonic()
            rworker.send("go", t0)
            sender.send("go", t0)
            done = rworker.expect("done", timeout)
            cpu1 = cpu_seconds(server.pid)
            sender.send("stop")
            sender.expect("done", 30)
    counts = done["counts"]
    deliveries = sum(counts)
    wrong = [c for c in counts if c != messages]
    elapsed = max(done["done_at"]) - t0 if all(done["done_at"]) else float("nan")
    cpu = cpu1 - cpu0
    return {
        "transport": transport, "receivers": receivers, "messages": messages, "size": size,
        "deliveries": deliveries, "wrong_counts": len(wrong),
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(deliveries / elapsed) if elapsed > 0 else 0,
        "server_cpu_s": round(cpu, 3),
        "cpu_us_per_delivery": round(cpu / deliveries * 1e6, 3) if deliveries else 0,
    }


def latency(server: Lanchatd, *, transport: str, receivers: int = 50, rate: float = 200.0,
            seconds: float = 5.0, size: int = 64, timeout: float = 60.0) -> dict[str, Any]:
    """One TCP sender paced at ``rate``, R receivers over ``transport``: the delays."""
    web = server.daemon.http
    if web is None:
        raise BenchError("the daemon serves no web port")
    pin = next_pin()
    total = receivers + 1
    count = int(rate * seconds)
    addr = web if transport == "ws" else server.tcp
    rjob = Job("web_receive", addr, "lanchat", [(pin, f"r{i}", total) for i in range(receivers)],
               timeout=timeout, expected=count, transport=transport, latency=True)
    pjob = Job("pace", server.tcp, "lanchat", [(pin, "s0", total)], timeout=timeout,
               rate=rate, count=count, size=size)
    with workers([rjob]) as [rworker]:
        _all_ready([rworker], timeout)
        with workers([pjob]) as [pacer]:
            _all_ready([pacer], timeout)
            wait_quiet(server.pid)
            t0 = time.monotonic() + 0.05
            rworker.send("go", t0)
            pacer.send("go", t0)
            done = rworker.expect("done", timeout)
            pacer.send("stop")
            pacer.expect("done", 30)
    lat_ms = [ns / 1e6 for ns in done["latencies_ns"]]
    return {
        "transport": transport, "receivers": receivers, "rate": rate, "messages": count,
        "samples": len(lat_ms), "wrong_counts": sum(1 for c in done["counts"] if c != count),
        "p50_ms": round(percentile(lat_ms, 50), 3),
        "p99_ms": round(percentile(lat_ms, 99), 3),
        "max_ms": round(max(lat_ms, default=float("nan")), 3),
    }


def compare(server: Lanchatd, *, receivers: int = 50, messages: int = 10000, rounds: int = 3,
            latency_seconds: float = 5.0, say: Any = print) -> dict[str, Any]:
    """TCP and WebSocket fan-out alternately, then latency: the best round of each."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for transport in ("tcp", "ws"):
            got = fanout(server, transport=transport, receivers=receivers, messages=messages)
            if got["wrong_counts"]:
                raise BenchError(f"{transport}: {got['wrong_counts']} receivers did not get "
                                 f"every message exactly once: {got}")
            say(f"  {transport}: {got['cpu_us_per_delivery']} us of server CPU per delivery, "
                f"{got['deliveries_per_s']} deliveries/s")
            if (transport not in best or got["cpu_us_per_delivery"]
                    < best[transport]["cpu_us_per_delivery"]):
                best[transport] = got
    tcp_cost = best["tcp"]["cpu_us_per_delivery"]
    # A run too short for the kernel's CPU accounting (10 ms ticks) has no ratio.
    ratio = best["ws"]["cpu_us_per_delivery"] / tcp_cost if tcp_cost else float("nan")
    delays: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for transport in ("tcp", "ws"):
            got = latency(server, transport=transport, receivers=receivers,
                          seconds=latency_seconds)
            if got["wrong_counts"]:
                raise BenchError(f"{transport} latency: {got['wrong_counts']} receivers did "
                                 f"not get every message: {got}")
            say(f"  {transport}: latency p50 {got['p50_ms']} ms, p99 {got['p99_ms']} ms")
            if transport not in delays or got["p99_ms"] < delays[transport]["p99_ms"]:
                delays[transport] = got
    return {"tcp": best["tcp"], "ws": best["ws"], "ws_over_tcp": round(ratio, 3),
            "latency_tcp": delays["tcp"], "latency_ws": delays["ws"]}


def main() -> int:
    import argparse
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m tests.bench.web",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Lanchatd(Path(tmp)).start()
        try:
            result = compare(server, receivers=args.receivers, messages=args.messages,
                             rounds=args.rounds, latency_seconds=args.latency_seconds)
        finally:
            server.stop()
    print(json.dumps(result, indent=2))
    return 0 if result["ws_over_tcp"] <= 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())

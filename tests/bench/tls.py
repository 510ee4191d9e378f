"""TLS beside plain text in one lanchatd: fan-out, handshakes and idle memory.

``python -m tests.bench.tls [--quick] [--rounds N] [--json FILE]``

Every figure is measured for both kinds of member against the same daemon build in the
same run, alternating plain and TLS round by round, and printed as TLS / plain:

* **fan-out**: one room, ``receivers`` members in two worker processes and one sender,
  all of one kind; the sender pipelines ``messages`` room messages.  Two figures:
  deliveries a second (messages x receivers / time from the first send to the last
  delivery), and the daemon's *capacity*, deliveries per second of its CPU (from
  /proc).  On a small machine the TLS receivers, which decrypt everything the daemon
  encrypts, are the bottleneck of the first, not the daemon; the target is on the
  capacity: TLS >= 0.5 x plain.
* **handshakes**: ``connects`` connections one after another, each connected, greeted
  (after the TLS handshake, for TLS) and closed; connections a second and the daemon's
  CPU per connection.
* **idle memory**: ``idle`` members joined and left idle, on a fresh daemon per kind;
  the daemon's RSS growth per member.  Target: TLS <= 2 x plain.  Measured twice: in
  new rooms, and in rooms that have a history (``HISTORY`` messages of about 120
  bytes, said beforehand by a plain member of each room), which every member is sent
  as it joins: what a TLS connection keeps after a large pass of output shows there.

The clients are written for this measure (tests/bench/load.py speaks plain TCP only):
blocking sockets while joining, then non-blocking ones read until ``SSLWantReadError``
so no record waits unseen inside OpenSSL.  Every wait is bounded by a deadline.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import selectors
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
    __package__ = "tests.bench"

from .servers import Lanchatd, cpu_seconds, raise_nofile, rss_kib, wait_quiet

MARK = b'"text":"bench '
DEADLINE = 120.0
FULL = {"receivers": 50, "messages": 20000, "connects": 2000, "idle": 2000, "rounds": 3}
QUICK = {"receivers": 20, "messages": 2000, "connects": 200, "idle": 200, "rounds": 1}
KINDS = ("plain", "tls")


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the key is the daemon's own, just made
    return context


def connect(server: Lanchatd, kind: str) -> socket.socket:
    addr = server.daemon.tls if kind == "tls" else server.tcp
    assert addr is not None
    sock = socket.create_connection(addr, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind == "tls":
        sock = _context().wrap_socket(sock)
    return sock


def read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError(f"closed by the server; got {bytes(buf[-200:])!r}")
        buf += data
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def join(sock: socket.socket, pin: str, name: str) -> bytearray:
    """Greeting, hello, welcome, join, joined (JSON mode); returns what came after."""
    buf = bytearray()
    if not read_line(sock, buf).startswith(b"LANCHAT/1 ready"):
        raise RuntimeError("no greeting")
    sock.sendall(b'{"type":"hello","versions":[1],"client":"bench"}\n')
    read_line(sock, buf)
    sock.sendall(json.dumps({"type": "join", "pin": pin, "name": name}).encode() + b"\n")
    while True:
        obj = json.loads(read_line(sock, buf))
        if obj.get("type") == "joined":
            return buf
        if obj.get("type") in ("error", "bye"):
            raise RuntimeError(f"join refused: {obj}")


# ------------------------------------------------------------------ fan-out


def _receive(server: Lanchatd, kind: str, pin: str, first: int, count: int, messages: int,
             pipe: Any) -> None:
    """A worker: ``count`` receivers; says ready, then the time the last got everything."""
    socks = []
    counts: dict[socket.socket, int] = {}
    tails: dict[socket.socket, bytes] = {}
    for i in range(count):
        sock = connect(server, kind)
        rest = join(sock, pin, f"r{first + i}")
        sock.setblocking(False)
        socks.append(sock)
        counts[sock] = bytes(rest).count(MARK)
        tails[sock] = bytes(rest[-(len(MARK) - 1):])
    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ)
    pipe.send("ready")
    left = {sock for sock in socks if counts[sock] < messages}
    deadline = time.monotonic() + DEADLINE
    while left and time.monotonic() < deadline:
        for key, _mask in sel.select(1.0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            while True:  # until the socket, and OpenSSL's buffer, are empty
                try:
                    data = sock.recv(262144)
                except (BlockingIOError, ssl.SSLWantReadError):
                    break
                if not data:
                    raise RuntimeError("a receiver was closed by the server")
                joined = tails[sock] + data
                counts[sock] += joined.count(MARK)
                tails[sock] = joined[-(len(MARK) - 1):]
            if counts[sock] >= messages and sock in left:
                left.discard(sock)
    pipe.send(time.monotonic() if not left else None)
    for sock in socks:
        sock.close()


def fanout(server: Lanchatd, kind: str, pin: str, receivers: int, messages: int
           ) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    half = receivers // 2
    parts = [(0, half), (half, receivers - half)]
    pipes, procs = [], []
    for first, count in parts:
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_receive, args=(server, kind, pin, first, count,
                                                  messages, theirs))
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    try:
        for pipe in pipes:
            if not pipe.poll(DEADLINE) or pipe.recv() != "ready":
                raise RuntimeError("receivers not ready")
        sender = connect(server, kind)
        join(sender, pin, "sender")
        text = "x" * 48
        lines = b"".join(
            b'{"type":"say","text":"bench %07d %s"}\n' % (i, text.encode())
            for i in range(messages))
        wait_quiet(server.pid)
        cpu0 = cpu_seconds(server.pid)
        start = time.monotonic()
        sender.sendall(lines)  # the daemon reads as fast as it fans out
        ends = []
        for pipe in pipes:
            if not pipe.poll(DEADLINE):
                raise RuntimeError("receivers did not finish")
            end = pipe.recv()
            if end is None:
                raise RuntimeError("a receiver missed messages")
            ends.append(end)
        elapsed = max(ends) - start
        cpu = cpu_seconds(server.pid) - cpu0
        sender.close()
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    deliveries = messages * receivers
    return {"deliveries_per_s": deliveries / elapsed, "seconds": elapsed,
            "cpu_us_per_delivery": cpu / deliveries * 1e6,
            "capacity_per_cpu_s": deliveries / cpu if cpu else float("inf"),
            "daemon_cpu_share": cpu / elapsed}


# ------------------------------------------------------------------ handshakes


def handshakes(server: Lanchatd, kind: str, connects: int) -> dict[str, Any]:
    wait_quiet(server.pid)
    cpu0 = cpu_seconds(server.pid)
    start = time.monotonic()
    for _ in range(connects):
        sock = connect(server, kind)
        buf = bytearray()
        read_line(sock, buf)  # the greeting: the connection is served
        sock.close()
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(server.pid) - cpu0
    return {"connections_per_s": connects / elapsed,
            "cpu_us_per_connection": cpu / connects * 1e6}


# ------------------------------------------------------------------ idle memory


HISTORY = 50  # the daemon's default history: what a member joining a busy room is sent


def idle_memory(tmp: Path, kind: str, idle: int, history: bool = False) -> dict[str, Any]:
    server = Lanchatd(tmp).start()
    socks = []
    try:
        # A few members first, so one-time costs (the room, the code paths' first run,
        # the first TLS objects) are not counted per member.
        for i in range(20):
            sock = connect(server, kind)
            join(sock, f"{1000 + i % 100}", f"w{i}")
            socks.append(sock)
        if history:  # a plain member per room says HISTORY lines, and stays
            for room in range((idle + 9) // 10):
                sock = connect(server, "plain")
                buf = join(sock, f"{2000 + room}", f"h{room}")
                sock.sendall(b"".join(
                    json.dumps({"type": "say", "text": f"history {n} " + "h" * 80}).encode()
                    + b"\n" for n in range(HISTORY)))
                while not read_line(sock, buf).count(f"history {HISTORY - 1} ".encode()):
                    pass
                socks.append(sock)
        wait_quiet(server.pid)
        before = rss_kib(server.pid)
        for i in range(idle):
            sock = connect(server, kind)
            join(sock, f"{2000 + i // 10}", f"m{i}")  # rooms of 10, as load.py holds them
            socks.append(sock)
        wait_quiet(server.pid)
        after = rss_kib(server.pid)
    finally:
        for sock in socks:
            sock.close()
        server.stop()
    return {"kib_per_member": (after - before) / idle}


# ------------------------------------------------------------------ the run


def run(size: dict[str, int], tmp: Path, say: Any) -> dict[str, Any]:
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        "fanout": {k: [] for k in KINDS}, "handshakes": {k: [] for k in KINDS},
        "idle": {k: [] for k in KINDS}, "idle_history": {k: [] for k in KINDS}}
    for r in range(size["rounds"]):
        order = KINDS if r % 2 == 0 else KINDS[::-1]
        server = Lanchatd(tmp / f"round{r}").start()
        try:
            for kind in order:
                figures = fanout(server, kind, f"{3000 + r * 10 + KINDS.index(kind)}",
                                 size["receivers"], size["messages"])
                results["fanout"][kind].append(figures)
                say(f"  fan-out {kind} round {r + 1}: {figures['deliveries_per_s']:,.0f}/s, "
                    f"{figures['cpu_us_per_delivery']:.2f} us CPU per delivery, daemon "
                    f"busy {figures['daemon_cpu_share']:.0%}")
            for kind in order:
                figures = handshakes(server, kind, size["connects"])
                results["handshakes"][kind].append(figures)
                say(f"  connections {kind} round {r + 1}: "
                    f"{figures['connections_per_s']:,.0f}/s, "
                    f"{figures['cpu_us_per_connection']:.0f} us CPU each")
        finally:
            server.stop()
        for kind in order:
            figures = idle_memory(tmp / f"idle{r}-{kind}", kind, size["idle"])
            results["idle"][kind].append(figures)
            say(f"  idle {kind} round {r + 1}: {figures['kib_per_member']:.2f} KiB per member")
            figures = idle_memory(tmp / f"idleh{r}-{kind}", kind, size["idle"], history=True)
            results["idle_history"][kind].append(figures)
            say(f"  idle {kind} after a history of {HISTORY}, round {r + 1}: "
                f"{figures['kib_per_member']:.2f} KiB per member")
    return results


def best(rounds: Sequence[dict[str, Any]], key: str, higher: bool) -> float:
    values = [r[key] for r in rounds]
    return max(values) if higher else min(values)


def table(results: dict[str, Any]) -> str:
    rows = [
        ("fan-out, deliveries/s", "fanout", "deliveries_per_s", True, "{:,.0f}"),
        ("fan-out, per daemon CPU s", "fanout", "capacity_per_cpu_s", True, "{:,.0f}"),
        ("fan-out, CPU us/delivery", "fanout", "cpu_us_per_delivery", False, "{:.2f}"),
        ("connections/s", "handshakes", "connections_per_s", True, "{:,.0f}"),
        ("CPU us/connection", "handshakes", "cpu_us_per_connection", False, "{:.0f}"),
        ("idle member, KiB", "idle", "kib_per_member", False, "{:.2f}"),
        ("idle, after history, KiB", "idle_history", "kib_per_member", False, "{:.2f}"),
    ]
    out = [f"{'measure':<28}{'plain':>14}{'TLS':>14}{'TLS/plain':>11}"]
    for label, group, key, higher, fmt in rows:
        plain = best(results[group]["plain"], key, higher)
        tls = best(results[group]["tls"], key, higher)
        # A tiny run may use no measurable CPU (the clock ticks in 10 ms).
        ratio = f"{tls / plain:.2f}" if plain and tls != float("inf") else "-"
        out.append(f"{label:<28}{fmt.format(plain):>14}{fmt.format(tls):>14}{ratio:>11}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.tls",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds per measure (default 3, quick 1)")
    parser.add_argument("--json", metavar="FILE", help="write every round's figures here")
    args = parser.parse_args(argv)
    size = dict(QUICK if args.quick else FULL)
    if args.rounds:
        size["rounds"] = args.rounds
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="lanchat-bench-tls-") as tmp:
        results = run(size, Path(tmp), lambda text: print(text, file=sys.stderr, flush=True))
    print(table(results))
    fan = results["fanout"]
    idle = results["idle"]
    plain_capacity = best(fan["plain"], "capacity_per_cpu_s", True)
    tls_capacity = best(fan["tls"], "capacity_per_cpu_s", True)
    if float("inf") in (plain_capacity, tls_capacity):
        print("fan-out too short to measure the daemon's CPU: use more --messages")
        return 1
    fan_ratio = tls_capacity / plain_capacity
    idle_ratio = (best(idle["tls"], "kib_per_member", False)
                  / max(best(idle["plain"], "kib_per_member", False), 1e-9))
    print(f"targets: fan-out capacity TLS/plain {fan_ratio:.2f} (>= 0.5), "
          f"idle memory TLS/plain {idle_ratio:.2f} (<= 2.0)")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": size, "results": results}, indent=1))
    return 0 if fan_ratio >= 0.5 and idle_ratio <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())

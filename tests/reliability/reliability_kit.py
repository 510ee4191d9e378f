"""What the reliability scenarios share: the well-behaved pair, memory readings, crowds.

Every scenario starts a real daemon (tests/lanchat_testing.py) on loopback, attacks it,
and meanwhile lets a *well-behaved pair* chat in a room of their own (PAIR_MEMBERS
members: the issue's two and four more, for enough round trips in a few seconds): each
says something five times a second at most (the default rate limit) and times how long
each message takes to come back to it, for at least PAIR_SAMPLES round trips together.
The scenario then checks the 99th percentile and worst delay (issue 11's 50 ms and
250 ms), that each member got all of the others' messages once and in order, and
the daemon's memory as the kernel reports it (/proc/PID/status: VmHWM is the peak
resident size since the daemon started, VmRSS the size now).  What each scenario
applied and saw is kept in a ``Scenario`` record, which tests/reliability/conftest.py
prints at the end.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pair
from lanchat_testing import Daemon, DaemonError

STEADY_PIN = "8080"
#: A source address for clients that must not share 127.0.0.1's per-address limits
#: (the pair's members: it and the PAIR_MEMBERS - 1 addresses below it).
STEADY_SOURCE = "127.0.0.254"

HARD_DEADLINE = 60.0  # no load loop in a scenario may run longer than this


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted``; return the new limit.

    Daemons started afterwards inherit it, so the daemon can hold as many connections
    as the scenario opens.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def toml(sections: dict[str, dict[str, Any]]) -> str:
    """A lanchatd.toml text from ``{"limits": {"max_errors": 3}, ...}``."""
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        for key, value in keys.items():
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@dataclass
class Memory:
    rss_kb: int
    hwm_kb: int


def memory(pid: int) -> Memory:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return Memory(values["VmRSS"], values["VmHWM"])


# ---------------------------------------------------------------------- clients


def connect(addr: tuple[str, int], source: str | None = None,
            timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(addr, timeout=timeout,
                                    source_address=(source, 0) if source else None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Peer:
    """A blocking line client on its own socket (JSON or plain text), with deadlines."""

    def __init__(self, addr: tuple[str, int], source: str | None = None,
                 timeout: float = 10.0, rcvbuf: int = 0) -> None:
        if rcvbuf:
            family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source:
                self.sock.bind((source, 0))
            self.sock.settimeout(timeout)
            self.sock.connect(addr)
        else:
            self.sock = connect(addr, source, timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_json(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def line(self, timeout: float | None = None) -> str | None:
        """The next line (without its ending), or None at end of file."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self.buf:
            if self.eof:
                rest, self.buf = self.buf, b""
                return rest.decode("utf-8", "replace") if rest else None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line in time; buffered {self.buf[:120]!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
            self.buf += data
        raw, _, self.buf = self.buf.partition(b"\n")
        return raw.decode("utf-8").rstrip("\r")

    def event(self, timeout: float | None = None) -> dict[str, Any] | None:
        text = self.line(timeout)
        return None if text is None else json.loads(text)

    def until(self, pred: Callable[[dict[str, Any]], bool],
              timeout: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        seen = []
        while True:
            event = self.event(max(0.01, deadline - time.monotonic()))
            if event is None:
                raise AssertionError(f"closed while waiting; saw {seen[-5:]}")
            if pred(event):
                return event
            seen.append(event)

    def lines_to_eof(self, timeout: float | None = None) -> list[str]:
        """Every line until the daemon closes the connection."""
        out = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            text = self.line(max(0.01, deadline - time.monotonic()))
            if text is None:
                return out
            out.append(text)

    def hello(self) -> dict[str, Any]:
        self.send_json({"type": "hello", "versions": [1], "client": "reliability"})
        return self.until(lambda e: e["type"] == "welcome")

    def join(self, pin: str, name: str) -> dict[str, Any]:
        self.hello()
        self.send_json({"type": "join", "pin": pin, "name": name})
        event = self.until(lambda e: e["type"] in ("joined", "error"))
        assert event["type"] == "joined", event
        return event

    def join_text(self, pin: str, name: str) -> str:
        self.send(f"{pin}\n{name}\n".encode())
        while True:
            text = self.line()
            assert text is not None, "closed while joining"
            if text.startswith("* You are in room"):
                return text

    def say(self, text: str) -> None:
        self.send_json({"type": "say", "text": text})

    def reset(self) -> None:
        """Close with an RST instead of a FIN (SO_LINGER 0), as a crashed host would."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


@dataclass
class SteadyReport:
    round_trips: int = 0
    worst: float = 0.0
    problems: list[str] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)

    def add(self, delay: float) -> None:
        self.delays.append(delay)  # list.append is atomic: both members add here
        self.round_trips = len(self.delays)
        self.worst = max(self.worst, delay)

    @property
    def p99(self) -> float:
        """The 99th percentile by nearest rank: the smallest delay that at least 99 %
        of the round trips did not exceed (the worst one under 100 round trips)."""
        if not self.delays:
            return 0.0
        ordered = sorted(self.delays)
        return ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)]


#: The issue-11 bounds for the well-behaved pair (docs/reliability.md), in every
#: scenario, over at least PAIR_SAMPLES round trips (tests/reliability/pair.py).
PAIR_P99 = 0.050
PAIR_MAX = 0.250
PAIR_SAMPLES = pair.SAMPLES
PAIR_MEMBERS = pair.MEMBERS  # connections the pair holds
#: How long the pair takes for its PAIR_SAMPLES round trips: an attack that should be
#: timed throughout lasts at least this long.
PAIR_SECONDS = PAIR_SAMPLES / PAIR_MEMBERS * pair.INTERVAL


class SteadyClient:
    """The well-behaved pair (tests/reliability/pair.py), run in a process of its own
    so that what it measures is the daemon's delay, not the attack's hold on this
    process's interpreter lock.  All its members have joined when the constructor
    returns; ``stop()`` ends it and returns what it measured."""

    def __init__(self, daemon: Daemon, pin: str = STEADY_PIN,
                 source: str = STEADY_SOURCE) -> None:
        host, port = daemon.tcp
        self.proc = subprocess.Popen(
            [sys.executable, pair.__file__, host, str(port), pin, source],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.report = SteadyReport()
        ready = self.proc.stdout.readline()
        if ready.strip() != "ready":
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the well-behaved pair did not start: {ready!r}")

    def stop(self) -> SteadyReport:
        if self.proc.returncode is not None:
            return self.report
        try:
            out, _ = self.proc.communicate("stop\n", timeout=pair.HARD_DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.report.problems.append("the well-behaved pair did not finish")
            return self.report
        try:
            result = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            self.report.problems.append(f"the well-behaved pair said {out[-300:]!r}")
            return self.report
        for delay in result["delays"]:
            self.report.add(delay)
        self.report.problems.extend(result["problems"])
        return self.report


# ---------------------------------------------------------------------- crowds


def open_many(addr: tuple[str, int], count: int, sources: list[str] | None = None,
              deadline: float = 30.0) -> list[socket.socket]:
    """``count`` connected sockets that say nothing (non-blocking once connected)."""
    socks = []
    end = time.monotonic() + deadline
    try:
        for i in range(count):
            if time.monotonic() > end:
                raise AssertionError(f"only {i} of {count} connections opened in time")
            source = sources[i % len(sources)] if sources else None
            sock = connect(addr, source)
            sock.setblocking(False)
            socks.append(sock)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def read_all_until_closed(socks: list[socket.socket], timeout: float,
                          ) -> dict[socket.socket, bytes]:
    """Read every socket until the daemon closes it; what each received.

    Raises AssertionError naming how many were still open at the deadline.
    """
    got: dict[socket.socket, bytearray] = {s: bytearray() for s in socks}
    sel = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    open_count = len(socks)
    deadline = time.monotonic() + timeout
    try:
        while open_count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{open_count} of {len(socks)} connections still open "
                                     f"after {timeout} s")
            for key, _ in sel.select(min(left, 0.5)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    data = b""
                if data:
                    got[sock] += data
                else:
                    sel.unregister(sock)
                    open_count -= 1
    finally:
        sel.close()
    return {s: bytes(b) for s, b in got.items()}


#: How each goodbye for a limit reads in plain text (a connection that has not spoken yet
#: is addressed in plain text: it is most likely a person at nc).
BYE_TEXT = {
    "handshake_timeout": "! Disconnected: no room joined within",
    "too_many_errors": "! Disconnected after",
    "slow_reader": "! Disconnected: you are not reading",
    "idle_timeout": "! Disconnected: no answer to the keep-alive ping",
}


def goodbye(data: bytes) -> str:
    """The reason named by the last line a connection received: a JSON bye's reason, or
    the BYE_TEXT key of a plain-text goodbye (else the line itself)."""
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode("utf-8", "replace").rstrip("\r")
    if last.startswith("{"):
        event = json.loads(last)
        return str(event.get("reason")) if event.get("type") == "bye" else last
    for reason, text in BYE_TEXT.items():
        if last.startswith(text):
            return reason
    return last


def loopback_sources(count: int, second: int = 9) -> list[str]:
    """``count`` distinct loopback addresses (127.9.0.1, ...), each a host of its own."""
    assert count <= 254 * 256
    return [f"127.{second}.{i // 254}.{i % 254 + 1}" for i in range(count)]


# ---------------------------------------------------------------------- scenarios


class Scenario:
    """One attack on one daemon: what was applied, what the steady client saw, memory."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.tmp = tmp
        self.load = ""
        self.result = "not run"
        self.daemon: Daemon | None = None
        self.steady: SteadyClient | None = None
        self.report: SteadyReport | None = None
        self.baseline: Memory | None = None
        self.peak: Memory | None = None
        self.notes: list[str] = []
        self._daemons: list[Daemon] = []

    def start(self, sections: dict[str, dict[str, Any]] | None = None, *,
              preexec_fn: Callable[[], None] | None = None, **kw: Any) -> Daemon:
        daemon = Daemon(self.tmp / f"d{len(self._daemons)}", config=toml(sections or {}),
                               preexec_fn=preexec_fn, **kw)
        self._daemons.append(daemon)
        daemon.start()
        self.daemon = daemon
        self.baseline = memory(daemon.pid)
        return daemon

    @contextlib.contextmanager
    def steady_client(self, pair: bool = True) -> Iterator[SteadyClient]:
        """The well-behaved pair, chatting for as long as the block runs (and on until
        it has PAIR_SAMPLES round trips), held to the issue-11 bounds in every scenario:
        p99 at most PAIR_P99, the worst at most PAIR_MAX, every message seen once in
        order by both.  (``pair`` is kept for callers that name it; there is no other
        kind of steady client.)"""
        assert self.daemon is not None and pair
        steady = SteadyClient(self.daemon)
        self.steady = steady
        try:
            yield steady
        finally:
            self.report = steady.stop()
        report = self.report
        assert not report.problems, f"the well-behaved pair had problems: {report.problems}"
        assert report.round_trips >= PAIR_SAMPLES, (
            f"the pair made {report.round_trips} round trips, not {PAIR_SAMPLES}")
        assert report.p99 <= PAIR_P99 and report.worst <= PAIR_MAX, (
            f"the pair's delays: p99 {report.p99 * 1000:.1f} ms (bound "
            f"{PAIR_P99 * 1000:.0f}), worst {report.worst * 1000:.1f} ms (bound "
            f"{PAIR_MAX * 1000:.0f}); slowest "
            f"{[round(d * 1000, 1) for d in sorted(report.delays)[-5:]]} ms of "
            f"{len(report.delays)}")

    def check_memory(self, growth_mb: float) -> Memory:
        """The daemon's peak resident size grew by at most ``growth_mb`` since its start."""
        assert self.daemon is not None and self.baseline is not None
        self.peak = memory(self.daemon.pid)
        growth = (self.peak.hwm_kb - self.baseline.rss_kb) / 1024
        assert growth <= growth_mb, (
            f"daemon memory grew by {growth:.1f} MB (peak {self.peak.hwm_kb / 1024:.1f} MB, "
            f"bound +{growth_mb} MB)")
        return self.peak

    def alive(self) -> None:
        """The daemon process is still running and said nothing about internal errors."""
        assert self.daemon is not None and self.daemon.proc is not None
        assert self.daemon.proc.poll() is None, "the daemon exited:\n" + self.daemon.stderr()
        assert "internal error" not in self.daemon.stderr(), self.daemon.stderr()

    def close(self) -> None:
        if self.steady is not None and self.report is None:
            self.report = self.steady.stop()
        for daemon in self._daemons:
            if self.peak is None and daemon is self.daemon and daemon.proc is not None \
                    and daemon.proc.poll() is None:
                with contextlib.suppress(OSError, KeyError):
                    self.peak = memory(daemon.pid)
            with contextlib.suppress(DaemonError):
                daemon.__exit__(None, None, None)

    # the summary row
    def row(self) -> list[str]:
        report = self.report
        worst = (f"{report.p99 * 1000:.1f} / {report.worst * 1000:.1f} ms "
                 f"({report.round_trips})" if report else "-")
        peak = (f"{self.peak.hwm_kb / 1024:.1f} / {self.peak.rss_kb / 1024:.1f} MB"
                if self.peak else "-")
        return [self.name, self.load or "-", worst, peak, self.result]


SUMMARY_HEADER = ["scenario", "load applied", "pair's p99 / worst (round trips)",
                  "daemon peak / now (VmHWM / VmRSS)", "result"]


def format_table(rows: list[list[str]]) -> str:
    """A Markdown table (readable as plain text too)."""
    table = [SUMMARY_HEADER, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(SUMMARY_HEADER))]

    def fmt(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    lines = [fmt(SUMMARY_HEADER), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` (a fact about the running daemon) until true; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def control_call(daemon: Daemon, cmd: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
    """One request on the control socket (after its hello); the reply's result."""
    assert daemon.control is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(daemon.control)
        sock.sendall(json.dumps({"id": 1, "cmd": "hello", "versions": [1]}).encode() + b"\n"
                     + json.dumps({"id": 2, "cmd": cmd, **args}).encode() + b"\n")
        buf = b""
        replies: dict[int, dict[str, Any]] = {}
        while 2 not in replies:
            data = sock.recv(65536)
            assert data, f"the control socket closed before answering; got {buf[:200]!r}"
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                reply = json.loads(line)
                replies[reply["id"]] = reply
    reply = replies[2]
    assert reply["ok"], reply
    return dict(reply["result"])


#: A client in its own process (run with ``python -c``): joins a room and floods it.
#: argv: port, pin, name, mode, seconds.  Modes: "text", lines "x" after joining in plain
#: text; "json", say requests after joining; "ping", pings after hello, never joining.
#: It reads everything the daemon sends, and prints: bytes sent, bytes received, and
#: "open" or "closed" (whether the daemon was still talking to it at the end).
FLOODER = r'''
import json, socket, sys, threading, time
port, pin, name, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
seconds = float(sys.argv[5])
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
f.readline()
if mode == "text":
    s.sendall(f"{pin}\n{name}\n".encode())
    while not f.readline().startswith(b"* You are in room"):
        pass
    payload = b"x\n" * 4096
elif mode == "ping":
    s.sendall(b'{"type":"hello","versions":[1]}\n')
    f.readline()
    payload = b'{"type":"ping","token":"p"}\n' * 1024
else:
    s.sendall(b'{"type":"hello","versions":[1]}\n' + json.dumps(
        {"type": "join", "pin": pin, "name": name}).encode() + b"\n")
    while json.loads(f.readline())["type"] != "joined":
        pass
    payload = b'{"type":"say","text":"flood"}\n' * 1024
received = [0]
closed = [False]
def reader():
    while True:
        data = f.read1(1 << 20)
        if not data:
            closed[0] = True
            return
        received[0] += len(data)
threading.Thread(target=reader, daemon=True).start()
sent = 0
end = time.monotonic() + seconds
s.settimeout(0.1)  # a throttled sender blocks: the daemon reads it at its rate
while time.monotonic() < end and not closed[0]:
    try:
        sent += s.send(payload)
    except socket.timeout:
        pass
    except OSError:
        break
time.sleep(0.5)
print(sent, received[0], "closed" if closed[0] else "open", flush=True)
'''


def memory_bound_mb(connections: int, config: dict[str, Any]) -> float:
    """The daemon's growth bound for ``connections`` clients under the ``[limits]``
    ``config`` (defaults for the rest), as docs/reliability.md ("The memory bound")
    computes it: per connection, its objects and what it may hold of input; all
    connections' unsent output, at most ``output_total_bytes`` (a shared chunk counts
    once) and at most each one's cap plus a chunk; one pass's fresh output."""
    from lanchatd import loop, transport
    from lanchatd.config import Config
    from lanchatd.core import MAX_COST

    limits = Config(**config)
    burst = limits.message_burst
    lines_at_once = max(1, int(burst // min(MAX_COST, burst)))
    read = min(loop.RECV_SIZE, max(loop.MIN_RECV, lines_at_once * loop.RECV_PER_LINE))
    feed = min(transport.FEED_MAX, max(transport.FEED_MIN,
                                       lines_at_once * transport.FEED_PER_LINE))
    # A slice split into lines: at worst "x\n" lines, ~42 bytes of object per 2 bytes.
    per_connection = PER_CONNECTION_OBJECTS + read + limits.max_line_bytes + 21 * feed
    output = min(limits.output_total_bytes,
                 connections * (limits.output_buffer_bytes + 2 * limits.max_line_bytes))
    one_pass = loop.PASS_LINES * 2 * limits.max_line_bytes
    return (connections * per_connection + output + one_pass) / (1 << 20)


#: What one connection costs in objects (its socket, adapter, core record, selector
#: entry, queue), measured: 2,000 idle connections grew the daemon by 2.4 MB.
PER_CONNECTION_OBJECTS = 16384

"""What the reliability scenarios share: a steady client, memory readings, crowds of sockets.

Every scenario starts a real daemon (tests/lanchat_testing.py) on loopback, attacks it,
and meanwhile lets a *steady client* chat in a room of its own: it says something four
times a second (under the default rate limit) and times how long each message takes to
come back to it.  The scenario then checks the worst of those delays, and the daemon's
memory as the kernel reports it (/proc/PID/status: VmHWM is the peak resident size
since the daemon started, VmRSS the size now).  What each scenario applied and saw is
kept in a ``Scenario`` record, which tests/reliability/conftest.py prints at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lanchat_testing import Daemon, DaemonError

#: Worst round trip the steady client may see while the daemon is under attack.  Its
#: messages normally come back within a few milliseconds; the margin is for a loaded CI
#: machine (two cores shared with the attack itself, which runs in the test process).
MAX_DELAY = 1.5
#: How often the steady client speaks (the default rate limit is 5 a second).
STEADY_INTERVAL = 0.25
STEADY_PIN = "8080"
#: A source address for clients that must not share 127.0.0.1's per-address limits.
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


class SteadyClient:
    """A well-behaved member of a room of its own, timing its own messages' round trips.

    It speaks every STEADY_INTERVAL seconds from start until ``stop()``, and ``stop()``
    waits for one more round trip begun after it was called: the client must still be
    served once the attack is over.
    """

    def __init__(self, daemon: Daemon, pin: str = STEADY_PIN, name: str = "steady",
                 source: str = STEADY_SOURCE) -> None:
        self.peer = Peer(daemon.tcp, source=source)
        self.peer.join(pin, name)
        self.name = name
        self.report = SteadyReport()
        self._finish_at: int | None = None
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        report = self.report
        started = time.monotonic()
        try:
            while time.monotonic() - started < HARD_DEADLINE:
                if self._finish_at is not None and report.round_trips >= self._finish_at:
                    return
                if not self._round_trip(report.round_trips + 1):
                    return
                self._wake.wait(STEADY_INTERVAL)
            report.problems.append(f"still running after {HARD_DEADLINE} s")
        except Exception as exc:  # the report names it; the scenario fails on it
            report.problems.append(f"{type(exc).__name__}: {exc}")

    def _round_trip(self, n: int) -> bool:
        report = self.report
        text = f"steady {n}"
        sent = time.monotonic()
        self.peer.say(text)
        while True:
            event = self.peer.event(timeout=10.0)
            if event is None:
                report.problems.append(f"the daemon closed the connection at message {n}")
                return False
            if event["type"] == "ping":
                self.peer.send_json({"type": "pong", "token": event.get("token", "")})
            elif event["type"] == "error":
                report.problems.append(f"error for message {n}: {event}")
            elif (event["type"] == "message" and event["from"] == self.name
                  and event["text"] == text):
                break
        report.round_trips += 1
        report.worst = max(report.worst, time.monotonic() - sent)
        return True

    def stop(self) -> SteadyReport:
        self._finish_at = self.report.round_trips + 2
        self._wake.set()
        self._thread.join(25.0)
        if self._thread.is_alive():
            self.report.problems.append("the steady client's last message never came back")
        self.peer.close()
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
    def steady_client(self) -> Iterator[SteadyClient]:
        """The well-behaved client, chatting for as long as the block runs."""
        assert self.daemon is not None
        steady = SteadyClient(self.daemon)
        self.steady = steady
        try:
            yield steady
        finally:
            self.report = steady.stop()
        report = self.report
        assert not report.problems, f"the steady client had problems: {report.problems}"
        assert report.round_trips >= 2, "the steady client hardly got to speak"
        assert report.worst <= MAX_DELAY, (
            f"the steady client waited {report.worst:.3f} s for its own message "
            f"(bound {MAX_DELAY} s)")

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
        worst = f"{report.worst * 1000:.1f} ms ({report.round_trips} msgs)" if report else "-"
        peak = (f"{self.peak.hwm_kb / 1024:.1f} / {self.peak.rss_kb / 1024:.1f} MB"
                if self.peak else "-")
        return [self.name, self.load or "-", worst, peak, self.result]


SUMMARY_HEADER = ["scenario", "load applied", "worst steady delay",
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
while time.monotonic() < end and not closed[0]:
    s.sendall(payload)
    sent += len(payload)
time.sleep(0.5)
print(sent, received[0], "closed" if closed[0] else "open", flush=True)
'''

"""The well-behaved pair, in a process of its own: ``python pair.py HOST PORT PIN SOURCE``.

MEMBERS members of a room of their own (the issue's pair, and four more so that a
scenario's few seconds hold enough round trips), each from an address of its own
(SOURCE and the ones just below it), each say "NAME n" every INTERVAL
seconds (with the time a message takes to come back, never faster than the default rate
limit of 5 a second), their turns spread evenly over the interval; each times its
messages until they come back, and checks that it received every one of the others'
messages once, in order.

It runs apart from the test process on purpose: a scenario's attack runs in the test
process, and a thread there would measure the attack's hold on the interpreter lock
as well as the daemon's delay.  The protocol (stdin/stdout, one line each):

* it prints ``ready`` once both members have joined;
* ``stop`` on stdin (or stdin closed): each member makes one more round trip, and both
  go on until they have SAMPLES round trips together; then it prints one JSON object,
  ``{"delays": [seconds...], "problems": [...]}``, and exits.

Standard library only: it imports nothing of lanchat, so it times the daemon from the
outside, as any client would.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
import time
from typing import Any

INTERVAL = 0.2
SAMPLES = 100
NAMES = ("steady", "partner", "third", "fourth", "fifth", "sixth")
MEMBERS = len(NAMES)
HARD_DEADLINE = 150.0  # seconds from the start: no scenario runs this long


class Member:
    def __init__(self, addr: tuple[str, int], source: str, pin: str, name: str) -> None:
        self.sock = socket.create_connection(addr, timeout=10.0, source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.name = name
        self.said = 0
        self.heard: list[str] = []  # the other member's texts, in arrival order
        self.target: int | None = None
        self.event()  # the greeting line (not JSON: read as a line, then dropped)
        self.send({"type": "hello", "versions": [1], "client": "reliability-pair"})
        self.send({"type": "join", "pin": pin, "name": name})
        while True:
            event = self.event()
            if event is None or event.get("type") == "error":
                raise RuntimeError(f"{name} could not join: {event}")
            if event.get("type") == "joined":
                break

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def event(self, timeout: float = 10.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no line in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return None
            self.buf += data
        raw, _, self.buf = self.buf.partition(b"\n")
        if not raw.startswith(b"{"):
            return {"type": "greeting"}
        event: dict[str, Any] = json.loads(raw)
        return event

    def handle(self, event: dict[str, Any], problems: list[str], n: int = 0) -> bool:
        """Take one event; False when it is our own message ``n`` come back."""
        kind = event.get("type")
        if kind == "ping":
            self.send({"type": "pong", "token": event.get("token", "")})
        elif kind == "error":
            problems.append(f"error for {self.name}'s message {n}: {event}")
        elif kind == "message":
            if event.get("from") == self.name:
                if n and event.get("text") == f"{self.name} {n}":
                    return False
                problems.append(f"{self.name} got its own {event.get('text')!r} while "
                                f"waiting for message {n}")
            else:
                self.heard.append(str(event.get("text")))
        return True


class Pair:
    def __init__(self, addr: tuple[str, int], pin: str, source: str) -> None:
        # Each from an address of its own (SOURCE, the one before it, ...): a scenario's
        # per-address limits are for its attackers, not for the pair.
        first = ipaddress.ip_address(source)
        self.members = [Member(addr, str(first - i), pin, name)
                        for i, name in enumerate(NAMES)]
        self.delays: list[float] = []
        self.problems: list[str] = []
        self.stopping = threading.Event()
        self.started = time.monotonic()

    def done(self, member: Member) -> bool:
        return (member.target is not None and member.said >= member.target
                and len(self.delays) >= SAMPLES)

    def run(self, member: Member, index: int) -> None:
        # Each member starts a share of the interval after the one before: the
        # messages are spread evenly over time, not sent together.
        time.sleep(INTERVAL / MEMBERS * index)
        try:
            while time.monotonic() - self.started < HARD_DEADLINE:
                if self.stopping.is_set() and member.target is None:
                    member.target = member.said + 1
                if self.done(member):
                    return
                n = member.said + 1
                sent = time.monotonic()
                member.send({"type": "say", "text": f"{member.name} {n}"})
                while True:
                    event = member.event()
                    if event is None:
                        self.problems.append(f"the daemon closed {member.name}'s "
                                             f"connection at message {n}")
                        return
                    if not member.handle(event, self.problems, n):
                        break
                self.delays.append(time.monotonic() - sent)
                member.said = n
                time.sleep(INTERVAL)
            self.problems.append(f"{member.name} still running after {HARD_DEADLINE} s")
        except Exception as exc:  # reported; the scenario fails on it
            self.problems.append(f"{member.name}: {type(exc).__name__}: {exc}")

    def check_order(self) -> None:
        for member in self.members:
            others = [other for other in self.members if other is not member]
            total = sum(other.said for other in others)
            deadline = time.monotonic() + 5.0
            try:
                while len(member.heard) < total and time.monotonic() < deadline:
                    event = member.event(max(0.01, deadline - time.monotonic()))
                    if event is None:
                        break
                    member.handle(event, self.problems)
            except (OSError, ValueError) as exc:
                self.problems.append(f"{member.name} stopped reading: {exc}")
            for other in others:
                expected = [f"{other.name} {n}" for n in range(1, other.said + 1)]
                got = [text for text in member.heard if text.split(" ")[0] == other.name]
                if got != expected:
                    self.problems.append(
                        f"{member.name} saw {len(got)} of {other.name}'s {len(expected)} "
                        f"messages, not all once in order: {got[:3]}...{got[-3:]}")


def main() -> None:
    host, port, pin, source = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    pair = Pair((host, port), pin, source)
    threads = [threading.Thread(target=pair.run, args=(m, i), daemon=True)
               for i, m in enumerate(pair.members)]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    sys.stdin.readline()  # "stop", or end of file
    pair.stopping.set()
    for thread in threads:
        thread.join(HARD_DEADLINE)
        if thread.is_alive():
            pair.problems.append(f"{thread.name}: the last message never came back")
    pair.check_order()
    for member in pair.members:
        member.sock.close()
    print(json.dumps({"delays": pair.delays, "problems": pair.problems}), flush=True)


if __name__ == "__main__":
    main()

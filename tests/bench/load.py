"""The load generator: clients speaking lanchat's protocol, run in worker processes.

Theory of operation
-------------------
The coordinator (measures.py) starts a few worker processes, each with a *job*: a role
and the clients it plays.  A worker and the coordinator talk over a pipe:

1. the worker connects its clients and brings each to the point the job needs (for
   lanchatd: greeting, ``hello`` with the ``join`` right after it, as the lanchat
   client and the browser send them, ``welcome``, ``joined``, and, when the
   client must *settle*, the presence of every other member of its room, so that
   nothing but the measured traffic is in flight when the measure starts; for ngIRCd
   (mode ``irc``): ``NICK`` and ``USER``, the welcome numeric 001, ``JOIN #PIN``, the end
   of the channel's names (366) and, to settle, the ``JOIN`` of every other member; for
   the relay: its one greeting line), then says ``ready``;
2. on ``go`` it does its role: *send* (as fast as TCP flow control allows), *pace*
   (one message every 1/rate seconds, a timestamp in each), *receive* (count, check and
   time what arrives) or *hold* (idle clients that answer keep-alive pings; with
   ``connect_on_go`` the connecting itself is what is measured);
3. it answers ``done`` with its figures and exits.

Every loop is bounded by a deadline and every client count is fixed in the job.  All
sockets are non-blocking and one selector per worker drives them, the pipe included.

Payload: each message's text starts ``bench SSS CCCCCCC`` (sender number, the sender's
own counter from 0) and is padded to the message size.  To ngIRCd it is sent as
``PRIVMSG #PIN :text``; a room is the channel ``#PIN`` and a name ``NAME_PIN`` (IRC nicks
are unique on the server, lanchat names only in their room).

Checking a throughput stream: a receiver counts occurrences of its mode's mark
(``MARKS``) in its complete lines (a C-speed ``bytes.count``) and folds them into a
CRC-32.  The receiver that *stores* its stream (one per room and process, or all with
``store_all``) parses every line afterwards and checks that the room's ``seq`` runs 1, 2,
3... (lanchatd) and every sender's counter 0, 1, 2..., with nothing missing or twice.
Every other receiver of the room must then show the same count and the same CRC: it got
the very same lines in the same order.

Latency: paced messages add ``tNNN`` (``time.time_ns()`` when sent), and the receiver
takes the kernel's arrival stamp of the line's last segment (``SO_TIMESTAMPNS``, the
same clock), so that what is measured is the server's delay, not the receiving
process's own turn on a busy CPU.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import selectors
import socket
import struct
import time
import traceback
import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any

from .servers import raise_nofile

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
# Linux's SO_TIMESTAMPNS (asm-generic value; the socket module does not name it): the
# kernel stamps each received segment, so a latency excludes the receiving client's own
# scheduling delay on this shared machine.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")
MARK = b'"text":"bench '
# Where a message's text starts, per mode: the JSON field, or an IRC line's trailing
# parameter (``:nick!user@host PRIVMSG #PIN :bench ...``).
MARKS = {"lanchat": MARK, "relay": MARK, "irc": b" :bench "}
RECV_SIZE = 262144
# A client's hello, encoded once (what ``Client.send_line`` makes of it).
HELLO_LINE = b'{"type":"hello","versions":[1],"client":"bench"}\n'
SEND_SLICE = 262144

# client states
CONNECTING, GREETING, WELCOME, JOINING, SETTLING, READY, FAILED = range(7)

Spec = tuple[str, str, int]  # (room PIN, name, members to wait for; 0: do not settle)


class Client:
    """One simulated person: a non-blocking socket and where it is in the handshake."""

    __slots__ = ("buf", "carry", "count", "crc", "done_at", "error", "finishing",
                 "joined_at", "lat", "mark", "members", "mode", "name", "nbytes",
                 "next_counter", "nick", "oper", "order_errors", "parts", "pin", "presence",
                 "sock", "state", "store", "total")

    def __init__(self, spec: Spec, mode: str, oper: bool = False) -> None:
        self.pin, self.name, self.total = spec
        self.mode = mode
        self.oper = oper
        self.mark = MARKS[mode]
        self.nick = irc_nick(self.name, self.pin)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state = CONNECTING
        self.buf = b""
        self.error = ""
        self.joined_at = 0.0
        self.members = 0
        self.presence = 0
        # run-phase figures
        self.count = 0
        self.carry = b""
        self.finishing = False
        self.crc = 0
        self.nbytes = 0
        self.done_at = 0.0
        self.store = False
        self.parts: list[bytes] = []
        self.lat: list[int] = []
        self.next_counter: dict[int, int] = {}
        self.order_errors = 0

    def start(self, addr: tuple[str, int]) -> None:
        err = self.sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            self.fail(f"connect: {errno.errorcode.get(err, err)}")

    def fail(self, why: str) -> None:
        self.state = FAILED
        self.error = why[:300]

    def send_line(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        try:
            sent = self.sock.send(data)
        except OSError as exc:
            self.fail(f"send: {exc}")
            return
        if sent != len(data):
            self.fail("send: short write during the handshake")

    def send_raw(self, data: bytes) -> None:
        try:
            sent = self.sock.send(data)
        except OSError as exc:
            self.fail(f"send: {exc}")
            return
        if sent != len(data):
            self.fail("send: short write during the handshake")

    def on_connected(self) -> None:
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(f"connect: {errno.errorcode.get(err, err)}")
        elif self.mode == "irc":  # an IRC server greets only once it knows who we are
            self.state = WELCOME
            self.send_raw(f"NICK {self.nick}\r\nUSER {self.nick} 0 * :bench\r\n".encode())
        else:
            self.state = GREETING

    def on_data(self, data: bytes) -> None:
        """Bytes received during the handshake; what follows it stays in ``buf``."""
        if not data:
            self.fail(f"closed by the server; last bytes {self.buf[-200:]!r}")
            return
        self.buf += data
        while self.state < READY:
            nl = self.buf.find(b"\n")
            if nl < 0:
                return
            line, self.buf = self.buf[:nl], self.buf[nl + 1:]
            self.on_line(line.rstrip(b"\r"))

    def on_line(self, line: bytes) -> None:
        if self.mode == "irc":
            self.on_irc_line(line)
            return
        if self.state == GREETING:
            if self.mode == "relay":
                self.state = READY if line == b"relay" else FAILED
                self.joined_at = time.monotonic()
            elif line.startswith(b"LANCHAT/1 ready"):
                # The join goes with the hello, as the lanchat client sends it.
                self.state = WELCOME
                self.send_raw(HELLO_LINE + json.dumps(
                    {"type": "join", "pin": self.pin, "name": self.name},
                    separators=(",", ":")).encode() + b"\n")
            else:
                self.fail(f"greeting: {line[:200]!r}")
            return
        if not line:
            return
        if (self.state == SETTLING and line.startswith(b'{"type":"presence"')
                and line.endswith(b'"event":"join"}')):
            # The lines a settling client waits for, most of a join's lines: counted
            # without a JSON parse (the generator shares the CPUs with the server).
            self.presence += 1
            self.settled()
            return
        obj = json.loads(line)
        kind = obj.get("type")
        if kind == "error" or kind == "bye":
            self.fail(f"{kind}: {obj.get('code', obj.get('reason'))}: {obj.get('message')}")
        elif self.state == WELCOME and kind == "welcome":
            self.state = JOINING
        elif self.state == JOINING and kind == "joined":
            self.joined_at = time.monotonic()
            self.members = len(obj["members"])
            self.state = SETTLING if self.total else READY
            self.settled()
        elif self.state == SETTLING and kind == "presence" and obj.get("event") == "join":
            self.presence += 1
            self.settled()

    def on_irc_line(self, line: bytes) -> None:
        """One line from ngIRCd during the handshake: ``:prefix COMMAND params``."""
        parts = line.split(b" ", 3)
        if line.startswith(b"PING "):
            self.send_raw(b"PONG " + line[5:] + b"\r\n")
            return
        if len(parts) < 2:
            return
        command = parts[1]
        error_numeric = command[:1] in (b"4", b"5") and command.isdigit()
        if error_numeric or line.startswith(b"ERROR "):
            self.fail(f"irc: {line[:200]!r}")
        elif self.state == WELCOME and command == b"001":
            if self.oper:  # a sender: an IRC operator, so that it can set user mode F
                self.send_raw(f"OPER {NGIRCD_OPER} {NGIRCD_OPER}\r\n".encode())
            else:
                self.state = JOINING
                self.send_raw(f"JOIN #{self.pin}\r\n".encode())
        elif self.state == WELCOME and command == b"381":  # "you are now an operator"
            # User mode F lifts ngIRCd's flood protection for this client: 10 commands
            # per pass of its loop instead of 3, and no throttling when more are waiting.
            self.state = JOINING
            self.send_raw(f"MODE {self.nick} +F\r\nJOIN #{self.pin}\r\n".encode())
        elif self.state == JOINING and command == b"353":  # the channel's names
            self.members += len(line.rpartition(b" :")[2].split())
        elif self.state == JOINING and command == b"366":  # end of the names
            self.joined_at = time.monotonic()
            self.state = SETTLING if self.total else READY
            self.settled()
        elif self.state == SETTLING and command == b"JOIN":
            self.presence += 1
            self.settled()

    def settled(self) -> None:
        if self.state == SETTLING and self.members + self.presence >= self.total:
            self.state = READY

    def close(self) -> None:
        self.sock.close()


def establish(sel: selectors.BaseSelector, specs: Sequence[Spec], addr: tuple[str, int],
              mode: str, window: int, deadline: float, oper: bool = False) -> list[Client]:
    """Connect a client per spec, at most ``window`` of them connecting or joining at
    once (one that has joined and waits for the rest of its room leaves the window);
    for an IRC server, as operators with ``oper``.

    Returns the clients (READY, or FAILED with a reason), registered for reading.
    """
    todo: deque[Spec] = deque(specs)
    clients: list[Client] = []
    joining: set[Client] = set()  # in the window
    unready = 0
    while (todo or unready) and time.monotonic() < deadline:
        while todo and len(joining) < window:
            client = Client(todo.popleft(), mode, oper)
            clients.append(client)
            client.start(addr)
            if client.state == FAILED:
                client.close()
                continue
            sel.register(client.sock, WRITE, client)
            joining.add(client)
            unready += 1
        for key, _mask in sel.select(max(0.0, min(1.0, deadline - time.monotonic()))):
            client = key.data
            if client is None:
                continue  # the pipe: nothing is said to a worker while it connects
            if client.state >= READY:
                _keep(client)
                continue
            if client.state == CONNECTING:
                client.on_connected()
                if client.state != FAILED:
                    sel.modify(client.sock, READ, client)
            else:
                try:
                    data = client.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    client.fail(f"recv: {exc}")
                else:
                    client.on_data(data)
            if client.state >= SETTLING:
                joining.discard(client)
            if client.state >= READY:
                unready -= 1
                if client.state == FAILED:
                    sel.unregister(client.sock)
                    client.close()
    for client in clients:
        if client.state < READY:
            client.fail(f"handshake not finished in time (state {client.state})")
            sel.unregister(client.sock)
            client.close()
    return clients


def _drain(client: Client) -> None:
    """Read and drop what arrived (a sender's copies of the room's messages)."""
    try:
        while client.sock.recv(RECV_SIZE):
            pass
    except OSError:
        pass


def _keep(client: Client) -> None:
    """Read what arrived for a client that is ready, and keep it for the next phase."""
    try:
        data = client.sock.recv(RECV_SIZE)
    except OSError:
        return
    if data:
        client.buf += data


# ----------------------------------------------------------------------------- payloads

def payload_text(sender: int, counter: int, size: int, stamp: int | None = None) -> str:
    head = f"bench {sender:03d} {counter:07d} " + (f"t{stamp} " if stamp is not None else "")
    return head + "x" * max(0, size - len(head))


# The IRC operator account (name and password) of the benchmark's ngIRCd configuration.
NGIRCD_OPER = "bench"


def irc_nick(name: str, pin: str) -> str:
    """A member's IRC nick: unique on the server, as lanchat names are in their room."""
    return f"{name}_{pin}"


def say_line(text: str) -> bytes:
    return b'{"type":"say","text":"' + text.encode() + b'"}\n'


def wire_line(mode: str, client: Client, text: str, counter: int) -> bytes:
    """What a sender writes: a ``say`` to lanchatd.  The relay forwards lines as they
    come, so it is sent the line a lanchatd member would receive for the same say (a
    ``message`` with room, seq, ts and from): both servers then deliver the same bytes.
    To an IRC server it is a ``PRIVMSG`` to the room's channel."""
    if mode == "irc":
        return f"PRIVMSG #{client.pin} :{text}\r\n".encode()
    if mode != "relay":
        return say_line(text)
    return (f'{{"type":"message","room":"{client.pin}","seq":{counter + 1},'
            f'"ts":{time.time():.3f},"from":"{client.name}","text":"{text}"}}\n').encode()


_BENCH_TEXT = re.compile(rb'(?:"text":"| :)bench (\d+) (\d+) (?:t(\d+) )?')


# ----------------------------------------------------------------------------- roles

class Job:
    """What a worker does; built by the coordinator, read by ``worker_main``."""

    def __init__(self, role: str, addr: tuple[str, int], mode: str, specs: Sequence[Spec],
                 *, timeout: float = 120.0, window: int = 64, **params: Any) -> None:
        self.role = role
        self.addr = addr
        self.mode = mode
        self.specs = list(specs)
        self.timeout = timeout
        self.window = window
        self.params = params


def worker_main(pipe: Any, job: Job) -> None:
    """Entry point of a worker process."""
    raise_nofile()
    try:
        _ROLES[job.role](pipe, job)
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


def _cpu() -> float:
    """CPU seconds this worker has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 3)


def _setup(pipe: Any, job: Job, deadline: float
           ) -> tuple[selectors.BaseSelector, list[Client]]:
    sel = selectors.DefaultSelector()
    clients = establish(sel, job.specs, job.addr, job.mode, job.window, deadline,
                        oper=job.role in ("send", "pace"))
    sel.register(pipe.fileno(), READ, None)
    return sel, clients


def _failures(clients: Sequence[Client]) -> list[str]:
    return [f"{c.name}@{c.pin}: {c.error}" for c in clients if c.state == FAILED]


def _wait_go(pipe: Any, deadline: float) -> float:
    if not pipe.poll(max(0.0, deadline - time.monotonic())):
        raise TimeoutError("no go from the coordinator")
    msg = pipe.recv()
    if msg[0] != "go":
        raise RuntimeError(f"expected go, got {msg[0]}")
    return float(msg[1])


def _role_receive(pipe: Any, job: Job) -> None:
    """Receive the measured stream; params: expected (messages per client), latency,
    store_all."""
    deadline = time.monotonic() + job.timeout
    sel, clients = _setup(pipe, job, deadline)
    expected: int = job.params["expected"]
    latency: bool = job.params.get("latency", False)
    if latency and hasattr(os, "SCHED_IDLE"):
        # Arrival times come from the kernel, so a latency receiver need not run
        # promptly: SCHED_IDLE keeps its wake-ups from preempting the server mid-send.
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass
    if job.params.get("nice"):
        os.nice(job.params["nice"])
    stored_rooms = set()
    for client in clients:
        if job.params.get("store_all") or client.pin not in stored_rooms:
            client.store = True
            stored_rooms.add(client.pin)
    if latency:
        for client in clients:
            if client.state == READY:
                client.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    pipe.send(("ready", {"failures": _failures(clients)}))
    _wait_go(pipe, deadline)
    live = [c for c in clients if c.state == READY]
    left = len(live)
    if not latency:
        for client in live:  # what arrived while it settled belongs to the stream
            early, client.buf = client.buf, b""
            _take(client, early, expected)
    monotonic = time.monotonic
    while left and monotonic() < deadline:
        for key, _mask in sel.select(max(0.0, min(1.0, deadline - monotonic()))):
            client = key.data
            if client is None:
                continue
            try:
                data = _read_stamped(client) if latency else client.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                data = b""
                client.error = f"recv: {exc}"
            if not data:
                client.fail(client.error or "closed by the server during the measure")
                sel.unregister(client.sock)
                left -= 1
                continue
            if not latency and not _take(client, data, expected):
                continue
            if client.count >= expected and not client.finishing and not client.done_at:
                client.done_at = monotonic()
                sel.unregister(client.sock)
                left -= 1
    results = []
    for client in clients:
        result: dict[str, Any] = {
            "name": client.name, "pin": client.pin, "count": client.count,
            "crc": client.crc, "bytes": client.nbytes, "done_at": client.done_at,
            "error": client.error, "stored": client.store and not latency,
        }
        if latency:
            result["latencies_ns"] = client.lat
            result["order_errors"] = client.order_errors
        elif client.store:
            result.update(verify_stream(b"".join(client.parts), client.pin,
                                        job.params["senders"], job.params["messages"],
                                        job.mode))
        results.append(result)
        client.close()
    pipe.send(("done", {"clients": results, "failures": _failures(clients),
                        "cpu": _cpu()}))


def _take(client: Client, data: bytes, expected: int) -> bool:
    """Count, fingerprint and (if storing) keep one read of a throughput stream, without
    copying it; False while the stream's last expected line is still to come.

    The stream ends with the line of its last expected message: what follows (the leave
    of a receiver that finished first) is not part of it.
    """
    end = len(data)
    if client.finishing:  # the last message's line ends in this read
        nl = data.find(b"\n")
        if nl >= 0:
            end = nl + 1
            client.finishing = False
    else:
        mark = client.mark
        tail = len(mark) - 1  # bytes of a read kept to find a mark cut across two reads
        client.count += (client.carry + data[:tail]).count(mark) + data.count(mark)
        if client.count >= expected:
            last = data.rfind(mark)
            nl = data.find(b"\n", max(last, 0))
            if nl >= 0:
                end = nl + 1
            else:
                client.finishing = True
    if end < len(data):
        data = data[:end]
    tail = len(client.mark) - 1
    client.carry = (client.carry + data)[-tail:] if len(data) < tail else data[-tail:]
    client.nbytes += end
    client.crc = zlib.crc32(data, client.crc)
    if client.store:
        client.parts.append(data)
    return client.count >= expected and not client.finishing


def _read_stamped(client: Client) -> bytes:
    """Read the complete lines waiting for ``client``, each by its own ``recvmsg`` so that
    the kernel's stamp is the arrival of that line's last byte; record their latencies.

    Returns what was read (``b""``: end of file).
    """
    sock = client.sock
    got = b""
    while True:
        try:
            peek = sock.recv(RECV_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return got or b"-"
        if not peek:
            return got
        nl = peek.find(b"\n")
        data, ancillary, _flags, _addr = sock.recvmsg(len(peek) if nl < 0 else nl + 1, 64)
        got += data
        client.nbytes += len(data)
        if nl < 0:
            client.buf += data  # the line's end has not arrived yet
            continue
        line, client.buf = client.buf + data, b""
        _latencies(client, line, _arrival_ns(ancillary))


def _arrival_ns(ancillary: list[tuple[int, int, bytes]]) -> int:
    """When the kernel received the data (SO_TIMESTAMPNS), else now; CLOCK_REALTIME."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec * 1_000_000_000 + nsec)
    return time.time_ns()


def _latencies(client: Client, whole: bytes, now_ns: int) -> None:
    for match in _BENCH_TEXT.finditer(whole):
        sender, counter, stamp = match.groups()
        client.count += 1
        s, c = int(sender), int(counter)
        if client.next_counter.get(s, 0) != c:
            client.order_errors += 1
        client.next_counter[s] = c + 1
        if stamp is not None:
            client.lat.append(now_ns - int(stamp))


def verify_stream(stream: bytes, pin: str, senders: Sequence[str], messages: int,
                  mode: str) -> dict[str, int]:
    """Check one receiver's whole stream: every message exactly once, in order.

    ``senders`` are the names of the room's senders (sender number i is ``senders[i]``);
    each sent ``messages`` messages numbered from 0.  For lanchatd, the room's ``seq``
    must also run 1, 2, 3... and each message carry its room, ``ts`` and ``from``; for an
    IRC server each must be a ``PRIVMSG`` to the room's channel from the sender's nick
    (IRC has no sequence number).
    """
    mark = MARKS[mode]
    seen = set()
    received = 0
    order_errors = 0
    malformed = 0
    next_counter = [0] * len(senders)
    last_seq = 0
    for line in stream.splitlines():
        if mark not in line:
            continue
        if mode == "irc":
            prefix, _, rest = line.partition(b" PRIVMSG ")
            target, _, body = rest.partition(b" :")
            text = body.decode("utf-8", "replace")
            nick = prefix[1:].partition(b"!")[0].decode("utf-8", "replace")
            obj = {"type": "message", "room": target[1:].decode("utf-8", "replace"),
                   "from": nick.rpartition("_")[0] if nick.endswith(f"_{pin}") else nick}
        else:
            obj = json.loads(line)
            text = obj.get("text", "")
        parts = text.split(" ")
        try:
            sender, counter = int(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            malformed += 1
            continue
        if mode == "irc" and (obj["room"] != pin or not 0 <= sender < len(senders)
                              or obj["from"] != senders[sender]):
            malformed += 1
            continue
        if mode == "lanchat":
            if (obj.get("type") != "message" or obj.get("room") != pin
                    or not isinstance(obj.get("ts"), (int, float))
                    or not 0 <= sender < len(senders) or obj.get("from") != senders[sender]):
                malformed += 1
                continue
            if obj.get("seq") != last_seq + 1:
                order_errors += 1
            last_seq = obj.get("seq", last_seq)
        if not 0 <= sender < len(senders) or not 0 <= counter < messages:
            malformed += 1
            continue
        received += 1
        if counter != next_counter[sender]:
            order_errors += 1
        next_counter[sender] = counter + 1
        seen.add((sender, counter))
    return {
        "received": received,
        "lost": len(senders) * messages - len(seen),
        "duplicated": received - len(seen),
        "order_errors": order_errors,
        "malformed": malformed,
    }


def _role_send(pipe: Any, job: Job) -> None:
    """Send ``messages`` messages per client as fast as TCP takes them; params:
    messages, size, numbers (each client's sender number in its room)."""
    deadline = time.monotonic() + job.timeout
    messages: int = job.params["messages"]
    size: int = job.params["size"]
    numbers: list[int] = job.params["numbers"]
    sel, clients = _setup(pipe, job, deadline)
    payloads = {
        client: memoryview(b"".join(wire_line(job.mode, client, payload_text(number, n, size),
                                              n) for n in range(messages)))
        for number, client in zip(numbers, clients)
    }
    pipe.send(("ready", {"failures": _failures(clients)}))
    _wait_go(pipe, deadline)
    pos = {client: 0 for client in clients}
    live = [c for c in clients if c.state == READY]
    for client in live:
        sel.modify(client.sock, READ | WRITE, client)
    unsent = len(live)
    sent_at = 0.0
    stop = False
    while not stop and time.monotonic() < deadline:
        for key, mask in sel.select(max(0.0, min(1.0, deadline - time.monotonic()))):
            client = key.data
            if client is None:
                msg = pipe.recv()
                stop = msg[0] == "stop"
                continue
            if mask & READ:
                try:
                    if not client.sock.recv(RECV_SIZE):
                        client.fail("closed by the server during the measure")
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as exc:
                    client.fail(f"recv: {exc}")
                if client.state == FAILED:
                    sel.unregister(client.sock)
                    if pos[client] < len(payloads[client]):
                        unsent -= 1
                    continue
            if mask & WRITE:
                data = payloads[client]
                try:
                    n = client.sock.send(data[pos[client]:pos[client] + SEND_SLICE])
                except (BlockingIOError, InterruptedError):
                    n = 0
                pos[client] += n
                if pos[client] >= len(data):
                    sel.modify(client.sock, READ, client)
                    unsent -= 1
                    if not unsent:
                        sent_at = time.monotonic()
                        pipe.send(("sent", sent_at))
    for client in clients:
        client.close()
    pipe.send(("done", {"sent_at": sent_at, "failures": _failures(clients), "cpu": _cpu()}))


def _role_pace(pipe: Any, job: Job) -> None:
    """One message per client every 1/rate seconds, timestamped; params: rate, count,
    size."""
    deadline = time.monotonic() + job.timeout
    rate: float = job.params["rate"]
    count: int = job.params["count"]
    size: int = job.params["size"]
    sel, clients = _setup(pipe, job, deadline)
    pipe.send(("ready", {"failures": _failures(clients)}))
    start = _wait_go(pipe, deadline)
    live = [c for c in clients if c.state == READY]
    # The copies of its own messages that lanchatd sends back are read in bulk between
    # two messages, not as they come: a sender woken by each copy would preempt the
    # server in the middle of its fan-out.
    for client in live:
        sel.unregister(client.sock)
    n = 0
    late = 0.0
    stop = False
    while not stop and time.monotonic() < deadline:
        due = start + n / rate if n < count else deadline
        now = time.monotonic()
        if now >= due:
            late = max(late, now - due)
            for i, client in enumerate(live):
                line = wire_line(job.mode, client, payload_text(i, n, size, time.time_ns()), n)
                try:
                    sent = client.sock.send(line)
                except OSError as exc:
                    client.fail(f"send: {exc}")
                    continue
                if sent != len(line):
                    client.fail("short write while pacing")
            n += 1
            if n == count:
                pipe.send(("sent", time.monotonic()))
            continue
        for client in live:
            _drain(client)
        if sel.select(max(0.0, due - time.monotonic())):
            stop = pipe.recv()[0] == "stop"
    for client in clients:
        client.close()
    pipe.send(("done", {"sent": n, "late_max": late, "failures": _failures(clients)}))


def _role_hold(pipe: Any, job: Job) -> None:
    """Idle clients that answer keep-alive pings until told to stop.  With param
    ``connect_on_go`` they connect after go, and the connecting is what is timed."""
    deadline = time.monotonic() + job.timeout
    sel: selectors.BaseSelector
    if job.params.get("connect_on_go"):
        pipe.send(("ready", {}))
        _wait_go(pipe, deadline)
        cpu0 = _cpu()
        sel = selectors.DefaultSelector()
        clients = establish(sel, job.specs, job.addr, job.mode, job.window, deadline)
        sel.register(pipe.fileno(), READ, None)
        joined = [c.joined_at for c in clients if c.joined_at]
        pipe.send(("joined", {
            "first": min(joined, default=0.0), "last": max(joined, default=0.0),
            "joined": len(joined), "ready": sum(c.state == READY for c in clients),
            "failures": _failures(clients), "cpu": _cpu() - cpu0,
        }))
    else:
        sel, clients = _setup(pipe, job, deadline)
        pipe.send(("ready", {"failures": _failures(clients)}))
    stop = False
    extra_presence = 0
    while not stop and time.monotonic() < deadline:
        for key, _mask in sel.select(max(0.0, min(1.0, deadline - time.monotonic()))):
            client = key.data
            if client is None:
                stop = pipe.recv()[0] == "stop"
                continue
            try:
                data = client.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                client.fail("closed by the server while idle")
                sel.unregister(client.sock)
                continue
            data = client.buf + data
            cut = data.rfind(b"\n") + 1
            client.buf = data[cut:]
            for line in data[:cut].splitlines():
                if line.startswith(b"PING "):
                    client.send_raw(b"PONG " + line[5:] + b"\r\n")
                elif b'"type":"ping"' in line:
                    token = json.loads(line).get("token", "")
                    client.send_line({"type": "pong", "token": token})
                elif ((b'"type":"presence"' in line and b'"event":"join"' in line)
                      or (client.mode == "irc" and b" JOIN " in line)):
                    extra_presence += 1  # after settling, no more joins are expected
    for client in clients:
        client.close()
    pipe.send(("done", {"failures": _failures(clients), "extra_presence": extra_presence,
                        "ready": sum(c.state == READY for c in clients)}))


_ROLES = {"receive": _role_receive, "send": _role_send, "pace": _role_pace,
          "hold": _role_hold}

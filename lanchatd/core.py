"""The chat core: every rule of the daemon, and no I/O.

Theory of operation
-------------------
The event loop (lanchatd/loop.py) owns sockets, buffers and signals.  It tells the
core what happened with plain method calls that take ``now`` (a ``time.time()``
value): a connection arrived (``connect``), bytes arrived (``receive``, ``b""`` for
end of file), a connection died (``disconnected``), a connection's output buffer
overflowed (``overflow``), time passed (``tick``), or the administrator asked for
something (``set_state``, ``close_room``, ``kick``, ``announce``).  Each call returns
``Effects``: the bytes to append to which connections' output buffers, and the
connections to close once their buffered bytes are flushed.  The core records what
happened in the activity log as it goes.

A room message is encoded once per mode (JSON and plain text), and the same bytes
object is handed out for every member, so fan-out costs one append per member.

Timeouts (handshake, keep-alive) live in one heap of ``(deadline, cid, generation,
kind)``; ``tick`` pops only what is due, and an entry whose connection has moved on is
dropped when popped.  Nothing here scans every connection per pass, so ten thousand
idle clients cost nothing while they are idle.

A client's bad input raises ``RemoteProtocolError`` inside the codec; it is turned
into an error reply (and, when repeated, a disconnect) in ``_on_bad_input``, the one
place where that conversion happens.
"""

from __future__ import annotations

import heapq
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lanchat import __version__
from lanchat.protocol import chat, rules, text
from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError
from lanchatd import states
from lanchatd.config import Config
from lanchatd.states import SERVER_STATE_RULES

Address = tuple[Any, ...]
#: Addresses whose join attempts are tracked at most; past it the oldest are forgotten.
MAX_JOIN_SOURCES = 4096


class ActivitySink(Protocol):
    def record(self, now: float, event: str, **fields: Any) -> Any: ...


class AdminError(Exception):
    """An administrator's request that cannot be done (unknown room, bad value...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Effects:
    """What the loop must do after a core call, in order: sends, then closes."""

    sends: list[tuple[Sequence[int], bytes]] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)

    def send(self, cid: int, data: bytes) -> None:
        self.sends.append(((cid,), data))


class Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("last", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = float(burst)
        self.last = now

    def take(self, rate: float, burst: float, now: float) -> bool:
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(float(burst), self.tokens + elapsed * rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self, rate: float) -> float:
        """Seconds until one token is available."""
        return 0.0 if self.tokens >= 1.0 or rate <= 0 else (1.0 - self.tokens) / rate

    def full(self, rate: float, burst: float, now: float) -> bool:
        return self.tokens + (now - self.last) * rate >= burst


class Conn:
    __slots__ = (
        "addr", "bucket", "cid", "codec", "connected_at", "errors", "gen", "host",
        "key", "lang", "last_seen", "name", "pending_pin", "ping_at", "room", "state",
    )

    def __init__(self, cid: int, addr: Address, host: str, now: float, config: Config) -> None:
        self.cid = cid
        self.addr = addr
        self.host = host
        self.codec = chat.ServerCodec(config.max_line_bytes)
        self.state = states.NEW
        self.room: Room | None = None
        self.name = ""
        self.key = ""
        self.pending_pin = ""
        self.errors = 0
        self.connected_at = now
        self.last_seen = now
        self.ping_at = 0.0  # when an unanswered keep-alive ping was sent, else 0
        self.bucket = Bucket(config.message_burst, now)
        self.lang = config.text_language
        self.gen = 0  # bumped whenever this connection's timers are replaced

    @property
    def is_text(self) -> bool:
        # A connection that has not said anything yet is most likely a person at nc:
        # programs send their hello at once.  So it is spoken to in plain text.
        return self.codec.mode != "json"


class Room:
    __slots__ = ("created", "history", "json_members", "json_targets", "members", "names",
                 "pin", "seq", "text_members", "text_targets")

    def __init__(self, pin: str, history: int, now: float) -> None:
        self.pin = pin
        self.members: dict[int, Conn] = {}
        self.json_members: dict[int, None] = {}  # ordered sets of member cids by mode
        self.text_members: dict[int, None] = {}
        # The same cids as tuples, made when first needed after a change of membership:
        # copying 50 cids for every room message was 0.5 us of it.
        self.json_targets: tuple[int, ...] | None = None
        self.text_targets: tuple[int, ...] | None = None
        self.names: dict[str, int] = {}  # casefolded name -> cid
        self.seq = 0
        self.history: deque[chat.Message] = deque(maxlen=history)
        self.created = now


def format_address(addr: Address) -> str:
    host = str(addr[0]) if addr else "?"
    port = addr[1] if len(addr) > 1 else 0
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ChatCore:
    def __init__(self, config: Config, log: ActivitySink, *, server_id: str = "",
                 now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.config = config
        self.log = log
        self.server_id = server_id
        self.server_name = config.name or socket.gethostname()
        self.state = config.initial_state
        self.started = now
        self.conns: dict[int, Conn] = {}
        self.rooms: dict[str, Room] = {}
        self.per_host: dict[str, int] = {}
        self.join_buckets: dict[str, Bucket] = {}
        self._timers: list[tuple[float, int, int, str]] = []
        self._next_prune = now + 60.0
        self.counters: dict[str, int] = {
            "connections": 0, "joins": 0, "messages": 0, "private_messages": 0,
            "refused_connections": 0, "refused_joins": 0, "protocol_errors": 0,
            "rate_limited": 0, "disconnects_for_limits": 0, "kicks": 0,
        }

    # ------------------------------------------------------------------ helpers

    @property
    def rules(self) -> states.StateRules:
        return SERVER_STATE_RULES[self.state]

    def _set_conn_state(self, conn: Conn, new: str) -> None:
        states.check_transition(conn.state, new)
        conn.state = new

    def _reply(self, fx: Effects, conn: Conn, event: chat.Event) -> None:
        if conn.is_text:
            data = text.format_event(event, conn.lang)
            if data is not None:
                fx.send(conn.cid, data)
        else:
            fx.send(conn.cid, chat.encode_json(event))

    def _reply_line(self, fx: Effects, conn: Conn, line: str) -> None:
        fx.send(conn.cid, text.line(line))

    def _error(self, fx: Effects, conn: Conn, code: str, message: str, ref: str = "") -> None:
        self._reply(fx, conn, chat.Error(code, message, ref))

    def _broadcast(self, fx: Effects, room: Room, event: chat.Event,
                   exclude: int = -1) -> None:
        """Encode ``event`` once per mode and queue the bytes for every member."""
        if room.json_members:
            targets = room.json_targets
            if targets is None:
                targets = room.json_targets = tuple(room.json_members)
            if exclude in room.json_members:
                targets = tuple(c for c in targets if c != exclude)
            if targets:
                fx.sends.append((targets, chat.encode_json(event)))
        if room.text_members:
            targets = room.text_targets
            if targets is None:
                targets = room.text_targets = tuple(room.text_members)
            if exclude in room.text_members:
                targets = tuple(c for c in targets if c != exclude)
            if targets:
                data = text.format_event(event, self.config.text_language)
                if data is not None:
                    fx.sends.append((targets, data))

    def _bye(self, fx: Effects, conn: Conn, reason: str, message: str, now: float,
             *, leave_reason: str = "", detail: str = "") -> None:
        """Tell ``conn`` why, then close it once that line is flushed."""
        self._reply(fx, conn, chat.Bye(reason, message, detail))
        self._drop(fx, conn, now, leave_reason or reason)
        fx.closes.append(conn.cid)

    def _drop(self, fx: Effects, conn: Conn, now: float, reason: str) -> None:
        """Forget ``conn``: leave its room (telling the others), free its counts."""
        if conn.cid not in self.conns:
            return
        del self.conns[conn.cid]
        count = self.per_host.get(conn.host, 1) - 1
        if count > 0:
            self.per_host[conn.host] = count
        else:
            self.per_host.pop(conn.host, None)
        room = conn.room
        if room is not None:
            del room.members[conn.cid]
            room.json_members.pop(conn.cid, None)
            room.text_members.pop(conn.cid, None)
            room.json_targets = room.text_targets = None
            room.names.pop(conn.key, None)
            conn.room = None
            self.log.record(now, "leave", room=room.pin, name=conn.name,
                            addr=format_address(conn.addr), reason=reason)
            if room.members:
                self._broadcast(fx, room, chat.Presence(room.pin, round(now, 3), conn.name, "leave",
                                                        _leave_text(reason)))
            else:
                del self.rooms[room.pin]
                self.log.record(now, "room_empty", room=room.pin)
        else:
            self.log.record(now, "disconnect", addr=format_address(conn.addr), reason=reason)
        self._set_conn_state(conn, states.CLOSED)

    def _schedule(self, conn: Conn, deadline: float, kind: str) -> None:
        timers = self._timers
        if len(timers) > 2 * len(self.conns) + 1024:
            # Entries of gone connections wait for their deadline; under connection churn
            # they would pile up for handshake_timeout, so drop them (amortized O(1)).
            conns = self.conns
            timers[:] = [t for t in timers if t[1] in conns and conns[t[1]].gen == t[2]]
            heapq.heapify(timers)
        heapq.heappush(timers, (deadline, conn.cid, conn.gen, kind))

    # ------------------------------------------------------------------ loop API

    def connect(self, cid: int, addr: Address, now: float) -> Effects:
        """A TCP connection was accepted.  Greets it, or refuses it with a reason."""
        fx = Effects()
        host = str(addr[0]) if addr else "?"
        config = self.config
        status = ""
        if not self.rules.accepts_connections:
            status = self.state
        elif (len(self.conns) >= config.max_connections
              or self.per_host.get(host, 0) >= config.max_connections_per_address):
            status = "full"
        if status:
            self.counters["refused_connections"] += 1
            message = text.say(config.text_language, status)
            greeting = chat.Greeting(chat.PROTOCOL_VERSION, status, message)
            fx.send(cid, text.line(greeting.line()))
            fx.closes.append(cid)
            self.log.record(now, "refused_connection", addr=format_address(addr),
                            reason=status)
            return fx
        conn = Conn(cid, addr, host, now, config)
        self.conns[cid] = conn
        self.per_host[host] = self.per_host.get(host, 0) + 1
        self.counters["connections"] += 1
        greeting = chat.Greeting(
            chat.PROTOCOL_VERSION, "ready",
            text.say(config.text_language, "greeting", name=self.server_name,
                     version=__version__),
        )
        fx.send(cid, text.line(greeting.line()))
        self._schedule(conn, now + config.handshake_timeout, "handshake")
        self.log.record(now, "connect", addr=format_address(addr))
        return fx

    def receive(self, cid: int, data: bytes, now: float) -> Effects:
        """Bytes arrived on a connection (``b""``: the peer closed its side)."""
        fx = Effects()
        conn = self.conns.get(cid)
        if conn is None:
            return fx
        conn.last_seen = now
        conn.ping_at = 0.0
        conn.codec.receive_data(data)
        while conn.state != states.CLOSED:
            try:
                event = conn.codec.next_event()
            except RemoteProtocolError as exc:
                self._on_bad_input(fx, conn, exc, now)
                continue
            if event is None:
                break
            if isinstance(event, chat.ConnectionClosed):
                self._drop(fx, conn, now, "closed by client")
                fx.closes.append(cid)
                break
            if type(event) is chat.Say and conn.state == states.JOINED:
                # A room message, nearly every event: _on_request's steps for it, inline.
                if conn.bucket.take(self.config.message_rate, self.config.message_burst, now):
                    self._say(fx, conn, event, now)
                else:
                    self._rate_limited(fx, conn, "say", now)
            elif isinstance(event, chat.TextLine):
                self._on_text(fx, conn, event.text, now)
            else:
                self._on_request(fx, conn, event, now)
        return fx

    def disconnected(self, cid: int, now: float, reason: str) -> Effects:
        """The connection died under us (reset, error).  Tells its room."""
        fx = Effects()
        conn = self.conns.get(cid)
        if conn is not None:
            self._drop(fx, conn, now, reason)
        return fx

    def overflow(self, cid: int, now: float) -> Effects:
        """The connection's unsent output passed the cap: it is not reading."""
        fx = Effects()
        conn = self.conns.get(cid)
        if conn is not None:
            self.counters["disconnects_for_limits"] += 1
            self._bye(fx, conn, "slow_reader",
                      "Disconnected: you are not reading your messages fast enough "
                      f"(more than {self.config.output_buffer_bytes} bytes queued).", now,
                      leave_reason="not reading")
        return fx

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def tick(self, now: float) -> Effects:
        """Time passed: fire due timeouts."""
        fx = Effects()
        timers = self._timers
        config = self.config
        while timers and timers[0][0] <= now:
            _deadline, cid, gen, kind = heapq.heappop(timers)
            conn = self.conns.get(cid)
            if conn is None or conn.gen != gen:
                continue
            if kind == "handshake":
                if conn.state != states.JOINED:
                    self.counters["disconnects_for_limits"] += 1
                    self._bye(fx, conn, "handshake_timeout",
                              f"Disconnected: no room joined within "
                              f"{config.handshake_timeout:g} seconds.", now)
            elif kind == "keepalive":
                self._keepalive(fx, conn, now)
        if now >= self._next_prune:
            self._prune(now)
        return fx

    def _keepalive(self, fx: Effects, conn: Conn, now: float) -> None:
        config = self.config
        if conn.ping_at:
            if conn.last_seen < conn.ping_at and now >= conn.ping_at + config.keepalive_timeout:
                self.counters["disconnects_for_limits"] += 1
                self._bye(fx, conn, "idle_timeout",
                          "Disconnected: no answer to the keep-alive ping.", now,
                          leave_reason="timed out")
                return
        idle_until = conn.last_seen + config.keepalive_interval
        if now < idle_until:
            self._schedule(conn, idle_until, "keepalive")
            return
        conn.ping_at = now
        self._reply(fx, conn, chat.Ping("keepalive"))
        self._schedule(conn, now + config.keepalive_timeout, "keepalive")

    def _prune(self, now: float) -> None:
        """Forget join-rate buckets that have refilled (once a minute, not per pass)."""
        self._next_prune = now + 60.0
        config = self.config
        for host in [h for h, b in self.join_buckets.items()
                     if b.full(config.join_rate, config.join_burst, now)]:
            del self.join_buckets[host]
        if len(self.join_buckets) >= MAX_JOIN_SOURCES:
            # Every tracked address is still limited: forget the oldest half.
            oldest = sorted(self.join_buckets, key=lambda h: self.join_buckets[h].last)
            for host in oldest[: len(oldest) // 2]:
                del self.join_buckets[host]

    # ------------------------------------------------------------------ input

    def _on_bad_input(self, fx: Effects, conn: Conn, exc: RemoteProtocolError,
                      now: float) -> None:
        """The one place where a client's bad input becomes a reply or a disconnect."""
        if exc.code == "invalid_pin":  # the codec knows only the protocol's 1-64 digits
            exc = RemoteProtocolError(exc.code, rules.pin_rule(self.config.pin_min_length,
                                                                self.config.pin_max_length))
        conn.errors += 1
        self.counters["protocol_errors"] += 1
        self.log.record(now, "protocol_error", addr=format_address(conn.addr),
                        code=exc.code, detail=exc.message[:200])
        if conn.errors > self.config.max_errors:
            self.counters["disconnects_for_limits"] += 1
            self._bye(fx, conn, "too_many_errors",
                      f"Disconnected after {conn.errors} protocol errors; last: {exc.message}",
                      now)
            return
        self._error(fx, conn, exc.code, exc.message)

    def _on_request(self, fx: Effects, conn: Conn, event: chat.Event, now: float) -> None:
        kind = event.TYPE
        if kind not in states.CONN_ALLOWS[conn.state]:
            if conn.state == states.NEW:
                exc = RemoteProtocolError(
                    "bad_state", "The first JSON message must be a hello.")
            else:
                exc = RemoteProtocolError(
                    "bad_state", f"A {kind!r} request is not allowed now "
                    f"({'join a room first' if conn.state == states.HELLO else conn.state}).")
            self._on_bad_input(fx, conn, exc, now)
            return
        if conn.state == states.JOINED and kind not in ("pong", "quit"):
            if not conn.bucket.take(self.config.message_rate, self.config.message_burst, now):
                self._rate_limited(fx, conn, kind, now)
                return
        if isinstance(event, chat.Say):
            self._say(fx, conn, event, now)
        elif isinstance(event, chat.PrivateSay):
            self._private(fx, conn, event, now)
        elif isinstance(event, chat.Who):
            self._who(fx, conn)
        elif isinstance(event, chat.Ping):
            self._reply(fx, conn, chat.Pong(event.token))
        elif isinstance(event, chat.Pong):
            pass
        elif isinstance(event, chat.Quit):
            self._bye(fx, conn, "quit", "Goodbye.", now, leave_reason="quit")
        elif isinstance(event, chat.Hello):
            self._hello(fx, conn, event, now)
        elif isinstance(event, chat.Join):
            self._join(fx, conn, event.pin, event.name, now)

    def _rate_limited(self, fx: Effects, conn: Conn, kind: str, now: float) -> None:
        self.counters["rate_limited"] += 1
        wait = conn.bucket.wait(self.config.message_rate)
        self._error(fx, conn, "rate_limited",
                    f"Rate limited: not delivered; you may send {self.config.message_rate:g} "
                    f"messages a second (wait {wait:.1f} s).", kind)

    def _hello(self, fx: Effects, conn: Conn, event: chat.Hello, now: float) -> None:
        common = set(event.versions) & set(chat.SUPPORTED_VERSIONS)
        if not common:
            self._error(fx, conn, "unsupported_version",
                        "No common protocol version: this server speaks "
                        f"{', '.join(map(str, chat.SUPPORTED_VERSIONS))}.", "hello")
            self._drop(fx, conn, now, "unsupported version")
            fx.closes.append(conn.cid)
            return
        self._set_conn_state(conn, states.HELLO)
        config = self.config
        self._reply(fx, conn, chat.Welcome(
            version=max(common), server=f"lanchatd/{__version__}", server_id=self.server_id,
            name=self.server_name, state=self.state, pin_min=config.pin_min_length,
            pin_max=config.pin_max_length, max_line=config.max_line_bytes,
            rate=config.message_rate, burst=config.message_burst,
        ))

    def _on_text(self, fx: Effects, conn: Conn, line: str, now: float) -> None:
        """One line from a plain-text client, read according to its dialogue step."""
        lang = conn.lang
        config = self.config
        if conn.state in (states.NEW, states.AWAIT_PIN):
            if not self._may_join(fx, conn, now):
                return
            try:
                conn.pending_pin = rules.check_pin(line, config.pin_min_length,
                                                   config.pin_max_length)
            except RemoteProtocolError as exc:
                if conn.state == states.NEW:
                    self._set_conn_state(conn, states.AWAIT_PIN)
                self._refuse_join(fx, conn, exc.code, exc.message, now, "join")
                if conn.state != states.CLOSED:
                    self._reply_line(fx, conn, text.say(lang, "ask_pin"))
                return
            self._set_conn_state(conn, states.AWAIT_NAME)
            self._reply_line(fx, conn, text.say(lang, "ask_name"))
        elif conn.state == states.AWAIT_NAME:
            try:
                name = rules.normalize_name(line)
            except RemoteProtocolError as exc:
                self._refuse_join(fx, conn, exc.code, exc.message, now, "join")
                if conn.state != states.CLOSED:
                    self._reply_line(fx, conn, text.say(lang, "ask_name"))
                return
            if not self._join(fx, conn, conn.pending_pin, name, now):
                if conn.state == states.AWAIT_NAME:
                    self._reply_line(fx, conn, text.say(lang, "ask_name"))
        elif conn.state == states.JOINED:
            try:
                command = text.parse_text_command(line)
            except text.UnknownCommand as unknown:
                self._reply_line(fx, conn, text.say(lang, "unknown_command",
                                                    command=unknown.command))
                return
            except LocalProtocolError as exc:
                self._error(fx, conn, exc.code, exc.message)
                return
            if isinstance(command, text.Help):
                self._reply_line(fx, conn, text.say(lang, "help"))
            else:
                self._on_request(fx, conn, command, now)

    # ------------------------------------------------------------------ requests

    def _may_join(self, fx: Effects, conn: Conn, now: float) -> bool:
        """Refuse a join while the server state forbids it (and close: no point waiting)."""
        if self.rules.allows_joins:
            return True
        self.counters["refused_joins"] += 1
        message = text.say(conn.lang if conn.is_text else "en", self.state)
        self.log.record(now, "refused_join", addr=format_address(conn.addr), reason=self.state)
        if not conn.is_text:  # a person reads the bye line; a program also gets the code
            self._error(fx, conn, self.state, message, "join")
        self._bye(fx, conn, self.state, message, now)
        return False

    def _refuse_join(self, fx: Effects, conn: Conn, code: str, message: str, now: float,
                     ref: str, **fields: Any) -> None:
        self.counters["refused_joins"] += 1
        self.log.record(now, "refused_join", addr=format_address(conn.addr), reason=code,
                        **fields)
        self._error(fx, conn, code, message, ref)
        conn.errors += 1  # else endless refused tries would each cost a log record
        if conn.errors > self.config.max_errors:
            self.counters["disconnects_for_limits"] += 1
            self._bye(fx, conn, "too_many_errors",
                      f"Disconnected after {conn.errors} refused attempts; last: {message}", now)

    def _join(self, fx: Effects, conn: Conn, pin: str, name: str, now: float) -> bool:
        config = self.config
        if not self._may_join(fx, conn, now):
            return False
        bucket = self.join_buckets.get(conn.host)
        if bucket is None:
            if len(self.join_buckets) >= MAX_JOIN_SOURCES:
                self._prune(now)
            bucket = self.join_buckets[conn.host] = Bucket(config.join_burst, now)
        if not bucket.take(config.join_rate, config.join_burst, now):
            self._refuse_join(
                fx, conn, "join_rate_limited",
                f"Too many join attempts from your address; try again in "
                f"{bucket.wait(config.join_rate):.0f} seconds.", now, "join")
            return False
        try:
            rules.check_pin(pin, config.pin_min_length, config.pin_max_length)
        except RemoteProtocolError as exc:
            self._refuse_join(fx, conn, exc.code, exc.message, now, "join")
            return False
        key = rules.name_key(name)
        room = self.rooms.get(pin)
        if room is not None and key in room.names:
            self._refuse_join(fx, conn, "name_taken",
                              f"The name {name!r} is already taken in this room. "
                              + rules.NAME_RULE, now, "join", room=pin, name=name)
            return False
        if room is None:
            room = self.rooms[pin] = Room(pin, config.history, now)
            self.log.record(now, "room_created", room=pin)
        self._set_conn_state(conn, states.JOINED)
        conn.gen += 1  # cancels the handshake timer
        conn.room = room
        conn.name = name
        conn.key = key
        room.members[conn.cid] = conn
        (room.text_members if conn.is_text else room.json_members)[conn.cid] = None
        room.json_targets = room.text_targets = None
        room.names[key] = conn.cid
        self.counters["joins"] += 1
        self.log.record(now, "join", room=pin, name=name, addr=format_address(conn.addr))
        self._reply(fx, conn, chat.Joined(pin, name, self._member_names(room), self.state))
        for past in room.history:
            self._reply(fx, conn, chat.Message(past.room, past.seq, past.ts, past.sender,
                                               past.text, past.action, history=True))
        self._broadcast(fx, room, chat.Presence(pin, round(now, 3), name, "join"), exclude=conn.cid)
        if not conn.is_text:
            self._schedule(conn, now + config.keepalive_interval, "keepalive")
        return True

    def _member_names(self, room: Room) -> tuple[str, ...]:
        return tuple(sorted((m.name for m in room.members.values()), key=rules.name_key))

    def _say(self, fx: Effects, conn: Conn, event: chat.Say, now: float) -> None:
        room = conn.room
        assert room is not None
        if not self.rules.allows_messages:
            self._error(fx, conn, "stopped",
                        "The server is stopped: your message was not delivered.", "say")
            return
        room.seq += 1
        message = chat.room_message(room.pin, room.seq, round(now, 3), conn.name, event.text,
                                    event.action)
        if room.history.maxlen:
            room.history.append(message)
        self.counters["messages"] += 1
        if self.config.log_messages:
            self.log.record(now, "message", room=room.pin, name=conn.name, room_seq=room.seq,
                            text=event.text)
        self._broadcast(fx, room, message)

    def _private(self, fx: Effects, conn: Conn, event: chat.PrivateSay, now: float) -> None:
        room = conn.room
        assert room is not None
        if not self.rules.allows_messages:
            self._error(fx, conn, "stopped",
                        "The server is stopped: your message was not delivered.", "msg")
            return
        target_cid = room.names.get(rules.name_key(event.to))
        if target_cid is None:
            self._error(fx, conn, "no_such_member",
                        f"Nobody called {event.to!r} is in this room.", "msg")
            return
        target = room.members[target_cid]
        message = chat.Private(round(now, 3), conn.name, target.name, event.text)
        self.counters["private_messages"] += 1
        if self.config.log_messages:
            self.log.record(now, "private_message", room=room.pin, name=conn.name,
                            to=target.name, text=event.text)
        self._reply(fx, target, message)
        if target is not conn:
            self._reply(fx, conn, message)

    def _who(self, fx: Effects, conn: Conn) -> None:
        room = conn.room
        assert room is not None
        self._reply(fx, conn, chat.Members(room.pin, self._member_names(room)))

    # ------------------------------------------------------------------ administration

    def set_state(self, new_state: str, actor: str, now: float) -> Effects:
        if new_state not in SERVER_STATE_RULES:
            raise AdminError("bad_state",
                             f"Unknown state {new_state!r}; use active, standby or stopped.")
        fx = Effects()
        old = self.state
        if new_state == old:
            return fx
        self.state = new_state
        self.log.record(now, "state", old=old, new=new_state, actor=actor)
        event = chat.StateChanged(new_state, round(now, 3),
                                  SERVER_STATE_RULES[new_state].description)
        json_targets = tuple(c.cid for c in self.conns.values() if not c.is_text)
        text_targets = tuple(c.cid for c in self.conns.values()
                             if c.is_text and c.state == states.JOINED)
        if json_targets:
            fx.sends.append((json_targets, chat.encode_json(event)))
        data = text.format_event(event, self.config.text_language)
        if text_targets and data:
            fx.sends.append((text_targets, data))
        return fx

    def _room(self, pin: str) -> Room:
        room = self.rooms.get(pin)
        if room is None:
            raise AdminError("unknown_room", f"There is no room with PIN {pin}.")
        return room

    def close_room(self, pin: str, reason: str, actor: str, now: float) -> Effects:
        room = self._room(pin)
        fx = Effects()
        message = "The room was closed by the administrator" + (f": {reason}" if reason else ".")
        self.log.record(now, "room_closed", room=pin, reason=reason, actor=actor,
                        members=len(room.members))
        for conn in list(room.members.values()):
            self._bye(fx, conn, "room_closed", message, now, leave_reason="room closed",
                      detail=reason)
        return fx

    def kick(self, pin: str, name: str, reason: str, actor: str, now: float) -> Effects:
        room = self._room(pin)
        cid = room.names.get(rules.name_key(name))
        if cid is None:
            raise AdminError("unknown_user", f"Nobody called {name!r} is in room {pin}.")
        conn = room.members[cid]
        fx = Effects()
        self.counters["kicks"] += 1
        self.log.record(now, "kick", room=pin, name=conn.name, reason=reason, actor=actor,
                        addr=format_address(conn.addr))
        message = ("You were removed from the room by the administrator"
                   + (f": {reason}" if reason else "."))
        self._bye(fx, conn, "kicked", message, now,
                  leave_reason=f"kicked: {reason}" if reason else "kicked", detail=reason)
        return fx

    def announce(self, text_: str, room_pin: str | None, actor: str, now: float) -> Effects:
        try:
            body = rules.check_text(text_)
        except RemoteProtocolError as exc:
            raise AdminError("bad_value", exc.message) from None
        fx = Effects()
        rooms = [self._room(room_pin)] if room_pin is not None else list(self.rooms.values())
        self.log.record(now, "announce", room=room_pin, text=body, actor=actor)
        for room in rooms:
            self._broadcast(fx, room, chat.Notice(round(now, 3), body, room.pin))
        return fx

    def shutdown(self, now: float) -> Effects:
        """Tell every connection the server is going down, and close them all."""
        fx = Effects()
        for conn in list(self.conns.values()):
            self._bye(fx, conn, "shutdown", "The server is shutting down.", now,
                      leave_reason="server shutdown")
        return fx

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration (the keys that can change at run time)."""
        self.config = config
        self.server_name = config.name or socket.gethostname()
        for conn in self.conns.values():
            conn.codec.max_line = config.max_line_bytes
            conn.lang = config.text_language
        for room in self.rooms.values():
            if room.history.maxlen != config.history:
                room.history = deque(room.history, maxlen=config.history)

    # ------------------------------------------------------------------ queries

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything the administrator's dashboard shows."""
        return {
            "state": self.state,
            "server_id": self.server_id,
            "name": self.server_name,
            "version": __version__,
            "uptime": round(now - self.started, 3),
            "started": self.started,
            "clients": len(self.conns),
            "members": sum(len(r.members) for r in self.rooms.values()),
            "rooms": [self.room_info(r.pin) for r in self._sorted_rooms()],
            "counters": dict(self.counters),
        }

    def _sorted_rooms(self) -> list[Room]:
        return [self.rooms[p] for p in sorted(self.rooms, key=lambda p: (len(p), p))]

    def room_info(self, pin: str) -> dict[str, Any]:
        room = self._room(pin)
        return {
            "pin": pin,
            "members": [
                {"name": m.name, "addr": format_address(m.addr),
                 "mode": m.codec.mode or "", "since": m.connected_at}
                for m in sorted(room.members.values(), key=lambda m: rules.name_key(m.name))
            ],
            "messages": room.seq,
            "created": room.created,
        }

    def status_line(self) -> str:
        return (f"{self.state}: {len(self.conns)} clients, {len(self.rooms)} rooms, "
                f"{self.counters['messages']} messages")


def _leave_text(reason: str) -> str:
    return "" if reason in ("closed by client", "quit") else reason

"""The chat core: every rule of the daemon, and no I/O.

Theory of operation
-------------------
The event loop (lanchatd/loop.py) owns sockets, buffers, files and signals.  It tells
the core what happened with plain method calls that take ``now`` (a ``time.time()``
value): a connection arrived (``connect``), a connection's transport gave lines
(``receive``: lines without their endings, ``LINE_TOO_LONG``, ``END_OF_INPUT``; see
lanchatd/transport.py), a connection died (``disconnected``), a connection's output
buffer overflowed (``overflow``), time passed (``tick``), or the administrator asked
for something (``set_state``, ``close_room``, ``kick``, ``announce``).  Each call
returns ``Effects``: the bytes to append to which connections' output buffers, the
connections to close once their buffered bytes are flushed, and the activity-log
entries to write.  The core does no I/O and reads no clock: the loop gives it the
time, the machine's host name and (``set_clock``) the offset of the monotonic clock,
on which every deadline is kept.

A room message is encoded once per mode (JSON and plain text), and the same bytes
object is handed out for every member, so fan-out costs one append per member.

Every sentence a member reads is in its language (``Conn.lang``: the daemon's
``text_language`` for a plain-text member until it types ``/lang``, the ``lang`` of a
JSON member's ``hello``, else English).  The sentences are written here in English,
marked with ``N_``, and translated with ``i18n.translate``: the catalogues are loaded
once, before the core runs (``i18n.preload`` in lanchatd/cli.py), so a translation is
a dictionary lookup.  A room message has no sentence; an event that has one (a presence line,
a state change) is encoded once per language present, not once per member.

Timeouts live in two heaps of ``(deadline, cid)`` on the monotonic clock: handshake
deadlines, and keep-alive checks (at most one per JSON member).  ``tick`` pops only
what is due, and an entry whose connection has gone (or joined, for a handshake) is
dropped when popped, or before, when such entries pile up.  Nothing here scans every
connection per pass, so ten thousand idle clients cost nothing while they are idle.

A client's bad input raises ``RemoteProtocolError`` inside the decoder; it is turned
into an error reply (and, when repeated, a disconnect) in ``_on_bad_input``, the one
place where that conversion happens.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from lanchat import __version__, i18n
from lanchat.i18n import N_
from lanchat.protocol import chat, rules, text
from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError
from lanchat.protocol.vocabulary import (
    SILENT_LEAVE_REASONS,
    ByeReason,
    ErrorCode,
    GreetingStatus,
    LeaveReason,
)
from lanchatd import limits, states
from lanchatd.config import Config
from lanchatd.limits import TokenBucket
from lanchatd.states import CONN_ALLOWS, JOINED, SERVER_STATE_RULES, UNMETERED
from lanchatd.transport import Input

Address = tuple[Any, ...]
#: What each line costs from its connection's bucket (``message_rate`` tokens a second,
#: ``message_burst`` at most), whatever it is: a blank line, a ping, bad JSON, a PIN.
LINE_COST = 1.0
#: What some requests cost on top, because they cost the server more: a ``who`` list
#: (a line per member for the asker) and a join attempt (a PIN guess).
EXTRA_COST: dict[str, float] = {"who": 3.0, "join": 3.0}
#: The most a line can cost: past its first line, the loop is allowed one line per this
#: many tokens, so the bucket is overdrawn by at most one costly line.
MAX_COST = LINE_COST + max(EXTRA_COST.values())
#: What ``allowance`` says for a connection the core no longer knows (one closing).
MAX_LINES_UNKNOWN = 4096
#: Handshake entries kept at least before the stale ones (joined, gone) are dropped.
HANDSHAKES_KEPT = 1024
SERVER_SOFTWARE = f"lanchatd/{__version__}"  # a welcome's ``server``


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
    #: Activity-log entries, (time, event, fields), for the loop to write.
    log: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def send(self, cid: int, data: bytes) -> None:
        self.sends.append(((cid,), data))

    def record(self, now: float, event: str, **fields: Any) -> None:
        self.log.append((now, event, fields))


def _whole_seconds(lang: str, wait: float) -> str:
    """A wait as a person reads it, in ``lang``: rounded up, so never "0 seconds" while
    it lasts."""
    seconds = max(1, math.ceil(wait - 1e-9))
    return i18n.translate_plural(lang, "{count} second", "{count} seconds", seconds,
                                 count=seconds)


#: Refused lines of one connection go to the activity log as one entry at most this often.
REFUSALS_LOG_INTERVAL = 60.0


class Refusals:
    """A connection's refused lines (rate limit, server stopped) not yet in the activity
    log: one entry per line would let a flood write the log for its sender, so they are
    counted and written together (``Core._refused``)."""

    __slots__ = ("counts", "first", "logged_at")

    def __init__(self, now: float) -> None:
        self.counts: dict[str, int] = {}
        self.first = now  # when the first counted line was refused
        self.logged_at = now


class Conn(chat.LineDecoder, TokenBucket):
    """One client as the core knows it.

    Ten thousand idle members are ten thousand of these, so a connection is kept in as
    few objects as its facts allow: it is its own line decoder (``line_event``, its
    ``mode``) and its own token bucket (every line is charged to it, from the first:
    LINE_COST, EXTRA_COST; it is full again once the connection has joined), and its
    address is kept as host and port, not as a tuple.
    """

    __slots__ = (
        "cid",
        "connected_at",
        "errors",
        "host",
        "key",
        "lag_since",
        "lang",
        "last",
        "last_seen",
        "name",
        "own_lang",
        "pending_pin",
        "ping_at",
        "port",
        "refused",
        "room",
        "state",
        "tokens",
        "told_lag",
    )

    def __init__(self, cid: int, addr: Address, host: str, now: float, mono: float,
                 config: Config) -> None:
        super().__init__()
        self.tokens = float(config.message_burst)
        self.last = mono
        self.cid = cid
        self.host = host
        self.port: int = addr[1] if len(addr) > 1 else 0
        self.state = states.NEW
        self.room: Room | None = None
        self.name = ""
        self.key = ""
        self.pending_pin = ""
        self.errors = 0
        self.connected_at = now  # wall clock: shown to the administrator
        self.last_seen = mono  # deadlines and rates: the monotonic clock
        self.ping_at = 0.0  # when an unanswered keep-alive ping was sent, else 0
        self.lag_since = 0.0  # monotonic: since when its input has waited for the bucket
        self.told_lag = False  # told once that its lines are read more slowly
        self.lang = config.text_language
        self.own_lang = False  # chosen by the member (hello, /lang): kept over a reload
        self.refused: Refusals | None = None  # lines refused and not yet in the log

    @property
    def addr(self) -> Address:
        return (self.host, self.port)

    @property
    def is_text(self) -> bool:
        # A connection that has not said anything yet is most likely a person at nc:
        # programs send their hello at once.  So it is spoken to in plain text.
        return self.mode != "json"


#: A room's history before its first message (shared: empty).
NO_HISTORY: tuple[()] = ()


class Room:
    __slots__ = ("created", "history", "history_cache", "json_members", "json_targets",
                 "members", "names", "pin", "seq", "sorted_names", "text_members",
                 "text_targets", "who_cache")

    def __init__(self, pin: str, now: float) -> None:
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
        # The last messages, made at the room's first message (an empty deque is 760
        # bytes: most rooms of idle members would hold one for nothing).
        self.history: deque[chat.Message] | tuple[()] = NO_HISTORY
        self.created = now
        # Encodings shared by every asker, made when first needed after a change:
        # the sorted member names, the ``who`` answer per (plain text, language) and
        # the history replay per (plain text, language).
        self.sorted_names: tuple[str, ...] | None = None
        self.who_cache: dict[tuple[bool, str], bytes] = {}
        self.history_cache: dict[tuple[bool, str], bytes] = {}

    def membership_changed(self) -> None:
        self.sorted_names = None
        if self.who_cache:
            self.who_cache = {}


JOIN_REFUSED_ADDRESS = N_("Too many join attempts from your address; try again in {wait}.")
JOIN_REFUSED_NETWORK = N_("Too many join attempts from your network; try again in {wait}.")
JOIN_REFUSED_ALL = N_("Too many join attempts from all addresses; try again in {wait}.")
JOIN_REFUSED = {limits.ADDRESS: JOIN_REFUSED_ADDRESS, limits.NETWORK: JOIN_REFUSED_NETWORK,
                limits.SERVER: JOIN_REFUSED_ALL}
CONNECT_REFUSED = {
    limits.ADDRESS: N_("Too many connections from your address; try again in {wait}."),
    limits.NETWORK: N_("Too many connections from your network; try again in {wait}."),
    limits.SERVER: N_("Too many connections from all addresses; try again in {wait}."),
}


def _by_key(conn: Conn) -> str:
    return conn.key


def format_address(addr: Address) -> str:
    host = str(addr[0]) if addr else "?"
    port = addr[1] if len(addr) > 1 else 0
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: Most timeouts one ``tick`` fires (a goodbye and a close each, ~50 us): the loop ticks
#: once a pass, so a pass spends at most ~10 ms on them (docs/reliability.md).
TICK_LIMIT = 200


class ChatCore:
    def __init__(self, config: Config, *, host_name: str, server_id: str = "",
                 now: float) -> None:
        self.config = config
        self.host_name = host_name  # the machine's name: the server's unless configured
        self.server_id = server_id
        self.server_name = config.name or host_name
        self.state = config.initial_state
        self.started = now
        # The greeting and the welcome are the same line for every client while what
        # they say is unchanged: each is kept encoded with what it was made from.
        self._greeting: tuple[tuple[str, str], bytes] = (("", ""), b"")
        self._welcome: tuple[tuple[Any, ...], bytes] = ((), b"")
        # time.monotonic() - time.time() as the loop last read both (set_clock).
        self.mono_offset = 0.0
        self.conns: dict[int, Conn] = {}
        self.rooms: dict[str, Room] = {}
        self.per_host: dict[str, int] = {}
        self.join_limit = limits.SourceLimit()  # join attempts per address, network, all
        self.connect_limit = limits.SourceLimit()  # connections per address, network, all
        # The records a source may cause at will (connections, refusals, protocol
        # errors): one by one while its budget lasts, then counted and summarized.
        self.source_records = limits.SourceRecords(now)
        self._handshakes: list[tuple[float, int]] = []  # (deadline, cid)
        self._handshakes_limit = HANDSHAKES_KEPT  # its size that makes it drop the stale
        self._keepalives: list[tuple[float, int]] = []  # (deadline, cid)
        self._next_prune = now + 60.0  # monotonic (offset 0 until set_clock)
        self.counters: dict[str, int] = {
            "connections": 0, "joins": 0, "messages": 0, "private_messages": 0,
            "refused_connections": 0, "refused_joins": 0, "protocol_errors": 0,
            "rate_limited": 0, "refused_while_stopped": 0, "disconnects_for_limits": 0,
            "kicks": 0, "page_connections": 0,
        }
        # The connections not (yet) a chat session (``connect(opened=False)``): a set here,
        # not a flag in every Conn, whose size is what ten thousand members cost.
        self.unopened: set[int] = set()
        # The encoder of the last say's room messages, and for which (room, now, sender).
        self._say_key: tuple[str, float, str] | None = None
        self._say_ts = 0.0
        self._say_lines: Callable[[int, Sequence[chat.Say]], bytes] = chat.message_lines(
            "", 0.0, "")
        # What each request type does once the state table allowed it (_on_request).
        self._handlers: dict[str, Callable[[Effects, Conn, Any, float], None]] = {
            chat.Hello.TYPE: self._hello, chat.Join.TYPE: self._on_join,
            chat.Say.TYPE: self._say, chat.PrivateSay.TYPE: self._private,
            chat.Who.TYPE: self._who, chat.Ping.TYPE: self._on_ping,
            chat.Pong.TYPE: self._on_pong, chat.Quit.TYPE: self._on_quit,
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
            data = text.format_event(event, i18n.gettext_for(conn.lang))
            if data is not None:
                fx.send(conn.cid, data)
        else:
            fx.send(conn.cid, chat.encode_json(event))

    def _reply_line(self, fx: Effects, conn: Conn, line: str) -> None:
        fx.send(conn.cid, text.line(line))

    def _error(self, fx: Effects, conn: Conn, code: str, message: str, ref: str = "") -> None:
        self._reply(fx, conn, chat.Error(code, message, ref))

    @staticmethod
    def _tr(conn: Conn, message: str, **values: object) -> str:
        """A sentence (marked with ``N_``) in ``conn``'s language, filled in."""
        return i18n.translate(conn.lang, message, **values)

    @staticmethod
    def _exc_text(conn: Conn, exc: RemoteProtocolError) -> str:
        """A protocol error's sentence in ``conn``'s language."""
        return i18n.translate(conn.lang, exc.template, **exc.values)

    def _send_by_language(self, fx: Effects, conns: Sequence[Conn],
                          event_in: Callable[[str], chat.Event]) -> None:
        """Queue an event that carries sentences: built and encoded once per (mode,
        language) present among ``conns``, the bytes shared by each group."""
        groups: dict[tuple[bool, str], list[int]] = {}
        for conn in conns:
            groups.setdefault((conn.is_text, conn.lang), []).append(conn.cid)
        for (is_text, lang), cids in groups.items():
            event = event_in(lang)
            data = (text.format_event(event, i18n.gettext_for(lang)) if is_text
                    else chat.encode_json(event))
            if data is not None:
                fx.sends.append((tuple(cids), data))

    def _broadcast(self, fx: Effects, room: Room, event: chat.Event | None,
                   exclude: int = -1, json_line: bytes | None = None,
                   text_line: bytes | None = None) -> None:
        """Queue ``event`` for every member, encoded once per mode (and per language
        for a plain-text member, when it has a sentence); ``json_line`` and
        ``text_line``: its bytes for each mode, when the caller has them (room
        messages, which have no sentence: ``event`` is then None)."""
        if room.json_members:
            targets = room.json_targets
            if targets is None:
                targets = room.json_targets = tuple(room.json_members)
            if exclude in room.json_members:
                targets = tuple(c for c in targets if c != exclude)
            if targets:
                if json_line is None:
                    assert event is not None
                    json_line = chat.encode_json(event)
                fx.sends.append((targets, json_line))
        if room.text_members:
            targets = room.text_targets
            if targets is None:
                targets = room.text_targets = tuple(room.text_members)
            if exclude in room.text_members:
                targets = tuple(c for c in targets if c != exclude)
            if targets:
                if text_line is not None:
                    fx.sends.append((targets, text_line))
                else:
                    assert event is not None
                    said = event
                    members = room.members
                    self._send_by_language(fx, [members[c] for c in targets],
                                           lambda _lang: said)

    def _bye(self, fx: Effects, conn: Conn, reason: str, message: str, now: float,
             *, leave_reason: str = "", detail: str = "") -> None:
        """Tell ``conn`` why, then close it once that line is flushed."""
        self._reply(fx, conn, chat.Bye(reason, message, detail))
        self._drop(fx, conn, now, leave_reason or reason)
        fx.closes.append(conn.cid)

    def _drop(self, fx: Effects, conn: Conn, now: float, reason: str, *,
              log_unopened: bool = False) -> None:
        """Forget ``conn``: leave its room (telling the others), free its counts.
        A connection that never opened a session is logged only with
        ``log_unopened`` (its transport refused it: the reason is worth reading)."""
        if conn.cid not in self.conns:
            return
        self._log_refusals(fx, conn, now)
        self._forget(conn)
        room = conn.room
        if room is not None:
            del room.members[conn.cid]
            room.json_members.pop(conn.cid, None)
            room.text_members.pop(conn.cid, None)
            room.json_targets = room.text_targets = None
            room.membership_changed()
            room.names.pop(conn.key, None)
            conn.room = None
            fx.record(now, "leave", room=room.pin, name=conn.name,
                            addr=format_address(conn.addr), reason=reason)
            if room.members:
                self._broadcast(fx, room, chat.Presence(room.pin, round(now, 3), conn.name, "leave",
                                                        _leave_text(reason)))
            else:
                del self.rooms[room.pin]
                fx.record(now, "room_empty", room=room.pin)
        elif conn.cid not in self.unopened:  # never joined: a record its address may make
            self._source_record(fx, now, conn.host, "disconnect",
                                addr=format_address(conn.addr), reason=reason)
        else:
            # It only fetched the page's files: counted, not logged (an administrator
            # reading the log wants people coming and going, not every page load),
            # unless it ended for a reason worth reading (a refused request).
            self.unopened.discard(conn.cid)
            self.counters["page_connections"] += 1
            if log_unopened:
                self._source_record(fx, now, conn.host, "disconnect",
                                    addr=format_address(conn.addr), reason=reason)
        self._set_conn_state(conn, states.CLOSED)

    def _forget(self, conn: Conn) -> None:
        """Free what ``conn`` holds of the connection limits."""
        del self.conns[conn.cid]
        count = self.per_host.get(conn.host, 1) - 1
        if count > 0:
            self.per_host[conn.host] = count
        else:
            self.per_host.pop(conn.host, None)

    def _schedule_handshake(self, conn: Conn, deadline: float) -> None:
        """``conn`` must have joined by ``deadline``."""
        timers = self._handshakes
        if len(timers) >= self._handshakes_limit:
            # The entries of connections that joined or went wait for their deadline:
            # ten thousand members who joined in the last handshake_timeout would each
            # keep one.  Drop them once the heap has doubled since the last time
            # (amortized O(1) a connection).
            conns = self.conns
            timers[:] = [t for t in timers if t[1] in conns and conns[t[1]].state != JOINED]
            heapq.heapify(timers)
            self._handshakes_limit = max(HANDSHAKES_KEPT, 2 * len(timers))
        heapq.heappush(timers, (deadline, conn.cid))

    def _schedule_keepalive(self, conn: Conn, deadline: float) -> None:
        """Check ``conn`` (a JSON member) for silence at ``deadline``; it has at most one
        such entry at a time."""
        timers = self._keepalives
        if len(timers) > 2 * len(self.conns) + 1024:
            # Entries of gone connections wait for their deadline; under churn, drop them.
            conns = self.conns
            timers[:] = [t for t in timers if t[1] in conns]
            heapq.heapify(timers)
        heapq.heappush(timers, (deadline, conn.cid))

    # ------------------------------------------------------------------ loop API

    def connect(self, cid: int, addr: Address, now: float, *, opened: bool = True) -> Effects:
        """A TCP connection was accepted.  Greets it, or refuses it with a reason.

        ``opened=False`` is for a client that may never chat (a browser fetching the
        page's files on the web port): it counts against the connection limits at once,
        but it is checked against the server state, greeted and logged only when its
        transport opens a chat session on it (``open_session``, the WebSocket upgrade).
        Until then it is not one of the ``clients``, and if it ends without one it is
        only counted (``page_connections``).
        """
        fx = Effects()
        host = str(addr[0]) if addr else "?"
        config = self.config
        mono = now + self.mono_offset
        status = message = ""
        if opened and not self.rules.accepts_connections:
            status = self.state
        else:
            # Every attempt takes a token, one then refused as full too (it cost an
            # accept); one refused as too fast takes none, so hammering while refused
            # does not push the wait further (lanchatd/limits.py).
            limited = self.connect_limit.take(host, config.connection_rate,
                                              config.connection_burst, mono)
            if limited is not None:
                whose, wait = limited
                status = GreetingStatus.BUSY
                message = i18n.translate(
                    config.text_language, CONNECT_REFUSED[whose],
                    wait=_whole_seconds(config.text_language, wait))
            elif (len(self.conns) >= config.max_connections
                  or self.per_host.get(host, 0) >= config.max_connections_per_address):
                status = GreetingStatus.FULL
        if status:
            self._refuse_connection(fx, cid, addr, status, now, message)
            return fx
        conn = Conn(cid, addr, host, now, mono, config)
        self.conns[cid] = conn
        self.per_host[host] = self.per_host.get(host, 0) + 1
        self._schedule_handshake(conn, mono + config.handshake_timeout)
        if opened:
            self._greet(fx, conn, now)
        else:
            self.unopened.add(cid)
        return fx

    def open_session(self, cid: int, now: float) -> Effects:
        """A connection accepted with ``opened=False`` starts chatting: it is checked
        against the server state, then greeted and logged like any new connection."""
        fx = Effects()
        conn = self.conns.get(cid)
        if conn is None or cid not in self.unopened:
            return fx
        self.unopened.discard(cid)
        if not self.rules.accepts_connections:
            self._forget(conn)
            self._set_conn_state(conn, states.CLOSED)
            self._refuse_connection(fx, cid, conn.addr, self.state, now)
            return fx
        self._greet(fx, conn, now)
        return fx

    def _refuse_connection(self, fx: Effects, cid: int, addr: Address, status: str,
                           now: float, message: str = "") -> None:
        """One greeting line with the refusal (``message``, else the status's own
        sentence), then the close: the loop closes a connection refused at accept at
        once, so it holds no descriptor while the attacker makes the next."""
        config = self.config
        self.counters["refused_connections"] += 1
        message = message or i18n.translate(config.text_language, text.REFUSALS[status])
        greeting = chat.Greeting(chat.PROTOCOL_VERSION, status, message)
        fx.send(cid, text.line(greeting.line()))
        fx.closes.append(cid)
        self._source_record(fx, now, str(addr[0]) if addr else "?", "refused_connection",
                            addr=format_address(addr), reason=status)

    def _greet(self, fx: Effects, conn: Conn, now: float) -> None:
        self.counters["connections"] += 1
        made_from = (self.config.text_language, self.server_name)
        if self._greeting[0] != made_from:
            language, name = made_from
            greeting = chat.Greeting(
                chat.PROTOCOL_VERSION, GreetingStatus.READY,
                i18n.translate(language, text.GREETING, name=name, version=__version__),
            )
            self._greeting = (made_from, text.line(greeting.line()))
        fx.send(conn.cid, self._greeting[1])
        self._source_record(fx, now, conn.host, "connect", addr=format_address(conn.addr))

    def receive(self, cid: int, lines: Sequence[Input], now: float) -> Effects:
        """Input arrived on a connection: its transport's lines, in order, each one a
        line without its ending, ``LINE_TOO_LONG`` or ``END_OF_INPUT``
        (lanchatd/transport.py).  The lines of one read come as one batch.

        Consecutive ``say`` lines of a JSON member are one *run*: they pass the state
        table, the rate bucket and the say handler together (``_on_request``), so what
        a message costs beyond its own text is paid once per read, not per line.  Every
        other request is a run of one, on the same path."""
        fx = Effects()
        conn = self.conns.get(cid)
        if conn is None:
            return fx
        mono = conn.last_seen = now + self.mono_offset
        conn.ping_at = 0.0
        config = self.config
        conn.refill(config.message_rate, config.message_burst, mono)
        line_event = conn.line_event
        on_request = self._on_request
        text_line = chat.TextLine
        say, closed, cost = chat.Say, states.CLOSED, LINE_COST
        says: list[chat.Event] = []  # the say lines of the run not yet handled
        event: chat.ClientEvent | chat.TextLine | RemoteProtocolError | None
        for item in lines:
            if conn.state == closed:
                break
            if type(item) is bytes:
                try:
                    event = line_event(item)
                except RemoteProtocolError as exc:
                    event = exc.with_traceback(None)  # a value now: no frame kept alive
                if type(event) is say and conn.tokens >= cost:
                    # Every line costs, whatever it turns out to be (the loop hands over
                    # only as many as the bucket allows: ``allowance``).  A run holds
                    # only lines the bucket covers; a say it does not is one request.
                    conn.tokens -= cost
                    says.append(event)
                    continue
            else:
                event = None
            if says:  # the run ends here: it is handled before this line
                on_request(fx, conn, says, now)
                says = []
            conn.tokens -= LINE_COST
            if type(item) is not bytes:
                if item is chat.END_OF_INPUT:
                    self._drop(fx, conn, now, LeaveReason.CLOSED)
                    fx.closes.append(cid)
                    break
                self._on_bad_input(fx, conn, RemoteProtocolError(
                    ErrorCode.LINE_TOO_LONG, chat.LINE_TOO_LONG_TEXT,
                    max=self.config.max_line_bytes), now)
            elif event is None:
                continue
            elif isinstance(event, RemoteProtocolError):
                self._on_bad_input(fx, conn, event, now)
            elif isinstance(event, text_line):
                self._on_text(fx, conn, event.text, now)
            else:
                on_request(fx, conn, [event], now)
        if says:
            on_request(fx, conn, says, now)
        return fx

    def disconnected(self, cid: int, now: float, reason: str, *, quiet: bool = False
                     ) -> Effects:
        """The connection died under us (reset, error), or its transport ended it.
        Tells its room.  ``quiet``: an ordinary end, not logged for a connection that
        never opened a session (``connect(opened=False)``)."""
        fx = Effects()
        conn = self.conns.get(cid)
        if conn is not None:
            self._drop(fx, conn, now, reason, log_unopened=not quiet)
        return fx

    def overflow(self, cid: int, now: float) -> Effects:
        """The connection's unsent output passed the cap: it is not reading."""
        fx = Effects()
        conn = self.conns.get(cid)
        if conn is not None:
            self.counters["disconnects_for_limits"] += 1
            self._bye(fx, conn, ByeReason.SLOW_READER, self._tr(
                      conn, N_("Disconnected: you are not reading your messages fast "
                               "enough (more than {bytes} bytes queued)."),
                      bytes=self.config.output_buffer_bytes), now,
                      leave_reason=LeaveReason.NOT_READING)
        return fx

    def is_member(self, cid: int) -> bool:
        """Whether ``cid`` has joined a room (the loop serves newcomers' turns from a
        budget of their own, so that arrivals cannot hold up members)."""
        conn = self.conns.get(cid)
        return conn is not None and conn.state == states.JOINED

    def allowance(self, cid: int, now: float) -> tuple[int, float]:
        """How many lines the connection may hand over now, and if none, in how many
        seconds it may again.

        The loop asks before it reads a connection or takes lines from its transport:
        a connection whose bucket is spent is simply not read (fakelag: its bytes wait
        in the kernel and TCP slows the sender), instead of being answered with an
        error per line.  One line is allowed once a token is there, and more only as
        many as ``MAX_COST`` tokens each cover: a costly line overdraws the bucket by
        at most ``MAX_COST - 1``, never a ``say`` into a refusal.
        """
        conn = self.conns.get(cid)
        if conn is None:
            return MAX_LINES_UNKNOWN, 0.0  # closing: its input is read and dropped
        config = self.config
        burst = config.message_burst
        tokens = conn.refill(config.message_rate, burst, now + self.mono_offset)
        if tokens >= burst - min(MAX_COST, float(burst)):
            conn.lag_since = 0.0  # its bucket refilled: whatever it sent was a burst
        if tokens >= 1.0:
            # One line whenever a token is there (a costly one may overdraw the bucket
            # by MAX_COST - 1, which the next wait pays back), more only as many as
            # are covered at the highest cost.
            return max(1, int(tokens // MAX_COST)), 0.0
        return 0, (1.0 - tokens) / config.message_rate

    def at_rest(self, cid: int, now: float) -> bool:
        """Whether the connection's bucket is full but for one costly line: it has sent
        no faster than its rate, so what it sent now is not the rest of a burst.  The
        loop gives such a turn, when a pass's budget is spent, a place ahead of the
        turns of bursts (Loop.fresh)."""
        conn = self.conns.get(cid)
        if conn is None:
            return False
        config = self.config
        burst = config.message_burst
        tokens = conn.refill(config.message_rate, burst, now + self.mono_offset)
        return tokens >= burst - min(MAX_COST, float(burst))

    def lagging(self, cid: int, now: float) -> Effects:
        """The connection's input waits for its bucket (``allowance`` said 0).  It is
        told once what limits it, and one that keeps it up for ``flood_timeout``
        seconds is disconnected."""
        fx = Effects()
        conn = self.conns.get(cid)
        if conn is None:
            return fx
        mono = now + self.mono_offset
        config = self.config
        if not conn.lag_since:
            conn.lag_since = mono
            self.counters["rate_limited"] += 1
        elif mono - conn.lag_since >= config.flood_timeout:
            self.counters["disconnects_for_limits"] += 1
            self._source_record(fx, now, conn.host, "flooding",
                                addr=format_address(conn.addr),
                                seconds=round(mono - conn.lag_since, 1))
            self._bye(fx, conn, ByeReason.FLOODING, self._tr(
                      conn, N_("Disconnected: you sent faster than {rate} lines a second "
                               "for {seconds} seconds."),
                      rate=f"{config.message_rate:g}", seconds=f"{config.flood_timeout:g}"),
                      now, leave_reason=LeaveReason.FLOODING)
            return fx
        if not conn.told_lag:
            conn.told_lag = True
            self._error(fx, conn, ErrorCode.THROTTLED, self._tr(
                conn, N_("You are sending faster than {rate} lines a second: your lines are "
                         "now read at that pace (none is lost). Keep it up for {seconds} "
                         "seconds and you are disconnected."),
                rate=f"{config.message_rate:g}", seconds=f"{config.flood_timeout:g}"))
        return fx

    def set_clock(self, mono_offset: float) -> None:
        """The loop's reading of ``time.monotonic() - time.time()``, each pass.

        Every ``now`` the core is given is wall-clock time, and so is every time it
        shows (a message's ``ts``, a log entry): that is what people read.  Deadlines,
        idle times and rates are kept on the monotonic clock (``now + mono_offset``),
        so a step of the wall clock neither fires nor delays a timeout.
        """
        self.mono_offset = mono_offset

    def next_deadline(self) -> float | None:
        """The earliest timeout, or the next ``connection_summary`` due, on the
        monotonic clock (``time.monotonic()``)."""
        handshakes, keepalives = self._handshakes, self._keepalives
        deadline = handshakes[0][0] if handshakes else None
        if keepalives and (deadline is None or keepalives[0][0] < deadline):
            deadline = keepalives[0][0]
        due = self.source_records.next_due()
        if due is not None and (deadline is None or due < deadline):
            return due
        return deadline

    def tick(self, now: float, limit: int = TICK_LIMIT) -> Effects:
        """Time passed: fire due timeouts, at most ``limit`` of them, and write the
        connection summaries due.  The timeouts left stay due (``next_deadline`` says
        so) for the next call: 2,000 connections that reach their handshake timeout
        together are said goodbye to over several passes of the loop, with others'
        messages served between them, not in one long pass."""
        fx = Effects()
        config = self.config
        conns = self.conns
        mono = now + self.mono_offset
        handshakes = self._handshakes
        while handshakes and handshakes[0][0] <= mono and limit > 0:
            _deadline, cid = heapq.heappop(handshakes)
            limit -= 1
            conn = conns.get(cid)
            if conn is None or conn.state == JOINED:
                continue
            if cid in self.unopened:
                # Still fetching pages after all this time: no chat client to tell.
                self._drop(fx, conn, now, LeaveReason.CLOSED)
                fx.closes.append(cid)
            else:
                self.counters["disconnects_for_limits"] += 1
                self._bye(fx, conn, ByeReason.HANDSHAKE_TIMEOUT, self._tr(
                          conn, N_("Disconnected: no room joined within {seconds} "
                                   "seconds."),
                          seconds=f"{config.handshake_timeout:g}"), now)
        keepalives = self._keepalives
        while keepalives and keepalives[0][0] <= mono and limit > 0:
            _deadline, cid = heapq.heappop(keepalives)
            limit -= 1
            conn = conns.get(cid)
            if conn is not None:
                self._keepalive(fx, conn, now, mono)
        if mono >= self._next_prune:
            self._prune(mono)
        due = self.source_records.next_due()
        if due is not None and due <= mono:
            fx.log.extend(self.summaries(now).log)
        return fx

    def _keepalive(self, fx: Effects, conn: Conn, now: float, mono: float) -> None:
        config = self.config
        if conn.ping_at:
            if conn.last_seen < conn.ping_at and mono >= conn.ping_at + config.keepalive_timeout:
                self.counters["disconnects_for_limits"] += 1
                self._bye(fx, conn, ByeReason.IDLE_TIMEOUT,
                          self._tr(conn, N_("Disconnected: no answer to the keep-alive "
                                            "ping.")), now,
                          leave_reason=LeaveReason.TIMED_OUT)
                return
        idle_until = conn.last_seen + config.keepalive_interval
        if mono < idle_until:
            self._schedule_keepalive(conn, idle_until)
            return
        conn.ping_at = mono
        self._reply(fx, conn, chat.Ping("keepalive"))
        self._schedule_keepalive(conn, mono + config.keepalive_timeout)

    def _prune(self, mono: float) -> None:
        """Forget rate buckets that have refilled (once a minute, not per pass)."""
        self._next_prune = mono + 60.0
        config = self.config
        self.join_limit.prune(config.join_rate, config.join_burst, mono)
        self.connect_limit.prune(config.connection_rate, config.connection_burst, mono)
        self.source_records.prune(mono)

    def _source_record(self, fx: Effects, now: float, host: str, event: str,
                       **fields: Any) -> None:
        """A record ``host`` can cause at will (see lanchatd/limits.py): written while
        its record budget lasts, else counted for its ``connection_summary``."""
        mono = now + self.mono_offset
        records = self.source_records
        if records.admit(host, mono):
            fx.record(now, event, **fields)
        else:
            reason = fields["reason"] if event == "refused_connection" else None
            weight = fields["count"] if event == "refused_messages" else 1
            records.count(host, event, reason, now, mono, weight)

    def summaries(self, now: float, *, every: bool = False) -> Effects:
        """The ``connection_summary`` records due (all of them with ``every``, when the
        daemon stops)."""
        fx = Effects()
        for event, fields in self.source_records.summaries(
                now, now + self.mono_offset, every=every):
            fx.record(now, event, **fields)
        return fx

    # ------------------------------------------------------------------ input

    def _on_bad_input(self, fx: Effects, conn: Conn, exc: RemoteProtocolError,
                      now: float) -> None:
        """The one place where a client's bad input becomes a reply or a disconnect."""
        if conn.state == states.NEW and not conn.is_text:
            conn.lang = i18n.DEFAULT_LANGUAGE  # a program before its hello: English
        if exc.code == "invalid_pin":  # the codec knows only the protocol's 1-64 digits
            low, high = self.config.pin_min_length, self.config.pin_max_length
            exc = RemoteProtocolError(exc.code, rules.pin_template(low, high), min=low,
                                      max=high)
        conn.errors += 1
        self.counters["protocol_errors"] += 1
        self._source_record(fx, now, conn.host, "protocol_error",
                            addr=format_address(conn.addr), code=exc.code,
                            detail=exc.message[:200])
        if conn.errors > self.config.max_errors:
            self.counters["disconnects_for_limits"] += 1
            self._bye(fx, conn, ByeReason.TOO_MANY_ERRORS, self._tr(
                      conn, N_("Disconnected after {count} protocol errors; last: {last}"),
                      count=conn.errors, last=self._exc_text(conn, exc)), now)
            return
        self._error(fx, conn, exc.code, self._exc_text(conn, exc))

    def _on_request(self, fx: Effects, conn: Conn, run: list[chat.Event], now: float) -> None:
        """The one path of every request, JSON or plain text: the state table decides
        whether it is allowed, the rate limit whether it is carried out now.

        ``run`` is requests of one kind, every line of it already charged to the
        bucket: one request, or a read's consecutive ``say`` lines that the bucket
        covered (``receive``); a say changes no state, so the table's answer holds for
        the whole run."""
        kind = run[0].TYPE
        state = conn.state
        if kind not in CONN_ALLOWS[state]:
            for _event in run:
                if conn.state == states.CLOSED:
                    break
                self._on_bad_input(fx, conn, self._not_allowed(conn, kind), now)
            return
        if state == JOINED and kind not in UNMETERED and conn.tokens < 0:
            # The line was already charged: the bucket had less than one token.  The
            # loop never lets this happen (it reads a connection no faster than its
            # bucket refills); a caller that hands over lines regardless is refused.
            # (Such a line is a run of one: ``receive`` runs only lines it covers.)
            conn.tokens += LINE_COST
            self._rate_limited(fx, conn, kind, now)
            return
        self._handlers[kind](fx, conn, run, now)

    def _not_allowed(self, conn: Conn, kind: str) -> RemoteProtocolError:
        """A request the state table refuses in ``conn``'s state, as the error it gets."""
        if conn.state == states.NEW:
            return RemoteProtocolError(
                ErrorCode.BAD_STATE, N_("The first JSON message must be a hello."))
        if conn.state == states.HELLO:
            return RemoteProtocolError(
                ErrorCode.BAD_STATE,
                N_("A {kind!r} request is not allowed now (join a room first)."), kind=kind)
        return RemoteProtocolError(
            ErrorCode.BAD_STATE, N_("A {kind!r} request is not allowed now ({state})."),
            kind=kind, state=conn.state)

    # Each handler takes a run (``_on_request``); only ``say`` comes in runs longer
    # than one (``receive``), the others are one request each.

    def _on_ping(self, fx: Effects, conn: Conn, run: list[chat.Ping], now: float) -> None:
        (event,) = run
        self._reply(fx, conn, chat.Pong(event.token))

    def _on_pong(self, fx: Effects, conn: Conn, run: list[chat.Pong], now: float) -> None:
        pass  # receive() already noted that the connection is alive

    def _on_quit(self, fx: Effects, conn: Conn, run: list[chat.Quit], now: float) -> None:
        self._bye(fx, conn, ByeReason.QUIT, self._tr(conn, N_("Goodbye.")), now,
                  leave_reason=LeaveReason.QUIT)

    def _on_join(self, fx: Effects, conn: Conn, run: list[chat.Join], now: float) -> None:
        (event,) = run
        self._join(fx, conn, event.pin, event.name, now)

    def _refused(self, fx: Effects, conn: Conn, reason: str, now: float) -> None:
        """Count a line of ``conn`` refused for ``reason`` (rate_limited, stopped) for the
        activity log: the first of a connection is written at once, the ones after it
        together, at most once every REFUSALS_LOG_INTERVAL and when it goes."""
        tally = conn.refused
        if tally is None:
            conn.refused = Refusals(now)
            self._write_refusals(fx, conn, {reason: 1}, now, now)
            return
        if not tally.counts:
            tally.first = now
        tally.counts[reason] = tally.counts.get(reason, 0) + 1
        if now - tally.logged_at >= REFUSALS_LOG_INTERVAL:
            self._log_refusals(fx, conn, now)

    def _log_refusals(self, fx: Effects, conn: Conn, now: float) -> None:
        tally = conn.refused
        if tally is not None and tally.counts:
            self._write_refusals(fx, conn, tally.counts, tally.first, now)
            tally.counts = {}
            tally.logged_at = now

    def _write_refusals(self, fx: Effects, conn: Conn, counts: dict[str, int],
                        first: float, now: float) -> None:
        for reason, count in sorted(counts.items()):
            self._source_record(fx, now, conn.host, "refused_messages", reason=reason,
                                count=count, since=first,
                                room=conn.room.pin if conn.room else None,
                                name=conn.name or None, addr=format_address(conn.addr))

    def _rate_limited(self, fx: Effects, conn: Conn, kind: str, now: float) -> None:
        self.counters["rate_limited"] += 1
        self._refused(fx, conn, "rate_limited", now)
        wait = conn.wait(self.config.message_rate)
        self._error(fx, conn, ErrorCode.RATE_LIMITED, self._tr(
                    conn, N_("Rate limited: not delivered; you may send {rate} messages a "
                             "second (wait {wait} s)."),
                    rate=f"{self.config.message_rate:g}", wait=f"{wait:.1f}"), kind)

    def _hello(self, fx: Effects, conn: Conn, run: list[chat.Hello], now: float) -> None:
        (event,) = run
        conn.lang = i18n.supported(event.lang) or i18n.DEFAULT_LANGUAGE
        conn.own_lang = bool(event.lang)
        common = set(event.versions) & set(chat.SUPPORTED_VERSIONS)
        if not common:
            # The error answers the hello (for a program); the bye says why the
            # connection ends, as every server-side close does (for a person: the
            # client shows a bye's message, and does not reconnect after this one).
            message = self._tr(conn, N_("No common protocol version: this server speaks "
                                        "{versions}."),
                               versions=", ".join(map(str, chat.SUPPORTED_VERSIONS)))
            self._error(fx, conn, ErrorCode.UNSUPPORTED_VERSION, message, "hello")
            self._bye(fx, conn, ByeReason.UNSUPPORTED_VERSION, message, now,
                      leave_reason=LeaveReason.UNSUPPORTED_VERSION)
            return
        self._set_conn_state(conn, states.HELLO)
        config = self.config
        # Welcome's fields in order.  A hello is a JSON line, so its client is a JSON one.
        fields = (max(common), SERVER_SOFTWARE, self.server_id, self.server_name, self.state,
                  config.pin_min_length, config.pin_max_length, config.max_line_bytes,
                  config.message_rate, config.message_burst)
        if self._welcome[0] != fields:
            self._welcome = (fields, chat.encode_json(chat.Welcome(*fields)))
        fx.send(conn.cid, self._welcome[1])

    def _on_text(self, fx: Effects, conn: Conn, line: str, now: float) -> None:
        """One line from a plain-text client, read according to its dialogue step."""
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
                self._refuse_join(fx, conn, exc.code, self._exc_text(conn, exc), now, "join")
                if conn.state != states.CLOSED:
                    self._reply_line(fx, conn, self._tr(conn, text.ASK_PIN))
                return
            self._set_conn_state(conn, states.AWAIT_NAME)
            self._reply_line(fx, conn, self._tr(conn, text.ASK_NAME))
        elif conn.state == states.AWAIT_NAME:
            try:
                name = rules.normalize_name(line)
            except RemoteProtocolError as exc:
                self._refuse_join(fx, conn, exc.code, self._exc_text(conn, exc), now, "join")
                if conn.state != states.CLOSED:
                    self._reply_line(fx, conn, self._tr(conn, text.ASK_NAME))
                return
            if not self._join(fx, conn, conn.pending_pin, name, now):
                if conn.state == states.AWAIT_NAME:
                    self._reply_line(fx, conn, self._tr(conn, text.ASK_NAME))
        elif conn.state == states.JOINED:
            try:
                command = text.parse_text_command(line)
            except text.UnknownCommand as unknown:
                self._reply_line(fx, conn, self._tr(conn, text.UNKNOWN_COMMAND,
                                                    command=unknown.command))
                return
            except LocalProtocolError as exc:
                self._error(fx, conn, exc.code, self._tr(conn, exc.template, **exc.values))
                return
            if isinstance(command, text.Help):
                self._reply_line(fx, conn, self._tr(conn, text.HELP))
            elif isinstance(command, text.Lang):
                self._set_language(fx, conn, command.code)
            else:
                self._on_request(fx, conn, [command], now)

    # ------------------------------------------------------------------ requests

    def _may_join(self, fx: Effects, conn: Conn, now: float) -> bool:
        """Refuse a join while the server state forbids it (and close: no point waiting)."""
        if self.rules.allows_joins:
            return True
        self.counters["refused_joins"] += 1
        message = self._tr(conn, text.REFUSALS[self.state])
        fx.record(now, "refused_join", addr=format_address(conn.addr), reason=self.state)
        if not conn.is_text:  # a person reads the bye line; a program also gets the code
            self._error(fx, conn, self.state, message, "join")
        self._bye(fx, conn, self.state, message, now)
        return False

    def _refuse_join(self, fx: Effects, conn: Conn, code: str, message: str, now: float,
                     ref: str, **fields: Any) -> None:
        self.counters["refused_joins"] += 1
        self._source_record(fx, now, conn.host, "refused_join",
                            addr=format_address(conn.addr), reason=code, **fields)
        self._error(fx, conn, code, message, ref)
        conn.errors += 1  # else endless refused tries would each cost a log record
        if conn.errors > self.config.max_errors:
            self.counters["disconnects_for_limits"] += 1
            self._bye(fx, conn, ByeReason.TOO_MANY_ERRORS, self._tr(
                      conn, N_("Disconnected after {count} refused attempts; last: {last}"),
                      count=conn.errors, last=message), now)

    def _join(self, fx: Effects, conn: Conn, pin: str, name: str, now: float) -> bool:
        config = self.config
        if not self._may_join(fx, conn, now):
            return False
        mono = now + self.mono_offset
        conn.tokens -= EXTRA_COST["join"]
        refused = self._join_limit(conn.host, mono)
        if refused is not None:
            template, wait = refused
            self._refuse_join(
                fx, conn, ErrorCode.JOIN_RATE_LIMITED, self._tr(
                    conn, template, wait=_whole_seconds(conn.lang, wait)), now, "join")
            return False
        try:
            rules.check_pin(pin, config.pin_min_length, config.pin_max_length)
        except RemoteProtocolError as exc:
            self._refuse_join(fx, conn, exc.code, self._exc_text(conn, exc), now, "join")
            return False
        key = rules.name_key(name)
        room = self.rooms.get(pin)
        if room is not None and key in room.names:
            taken = rules.name_taken(name, room.members[room.names[key]].name)
            self._refuse_join(fx, conn, taken.code, self._exc_text(conn, taken),
                              now, "join", room=pin, name=name)
            return False
        if room is None:
            room = self.rooms[pin] = Room(pin, now)
            fx.record(now, "room_created", room=pin)
        self._set_conn_state(conn, states.JOINED)
        # What the handshake cost is forgotten: a member starts with a full bucket.
        conn.tokens = config.message_burst  # the config's number: no float per member
        conn.last = mono
        conn.lag_since = 0.0
        conn.told_lag = False
        conn.room = room
        conn.name = name
        conn.key = key
        room.members[conn.cid] = conn
        (room.text_members if conn.is_text else room.json_members)[conn.cid] = None
        room.json_targets = room.text_targets = None
        room.membership_changed()
        room.names[key] = conn.cid
        self.counters["joins"] += 1
        fx.record(now, "join", room=pin, name=name, addr=format_address(conn.addr))
        # The welcome and the presence are built from values checked above or the core's
        # own (chat.trusted: without the frozen dataclass's __init__, a twentieth of the
        # Python work of a join).
        trusted = chat.trusted
        self._reply(fx, conn, trusted(chat.Joined, room=pin, name=name,
                                      members=self._member_names(room), state=self.state))
        if room.history:
            fx.send(conn.cid, self._history(room, conn))
        self._broadcast(fx, room, trusted(chat.Presence, room=pin, ts=round(now, 3), name=name,
                                          event="join", reason=""), exclude=conn.cid)
        if not conn.is_text:
            self._schedule_keepalive(conn, mono + config.keepalive_interval)
        return True

    def _history(self, room: Room, conn: Conn) -> bytes:
        """The room's history replay for ``conn``'s mode: one chunk, encoded once per
        change of the history and shared by everyone who joins meanwhile."""
        key = (conn.is_text, conn.lang)
        data = room.history_cache.get(key)
        if data is None:
            parts = []
            for past in room.history:
                event = chat.Message(past.room, past.seq, past.ts, past.sender, past.text,
                                     past.action, history=True)
                part = (text.format_event(event, i18n.gettext_for(conn.lang)) if conn.is_text
                        else chat.encode_json(event))
                if part is not None:
                    parts.append(part)
            data = room.history_cache[key] = b"".join(parts)
        return data

    def _join_limit(self, host: str, mono: float) -> tuple[str, float] | None:
        """Take a join attempt from the address's bucket, its network's (/24, /64) and
        the server's; if one of them is empty, the refusal's sentence (``wait`` to fill
        in) and the wait, else None."""
        config = self.config
        refused = self.join_limit.take(host, config.join_rate, config.join_burst, mono)
        if refused is None:
            return None
        whose, wait = refused
        return JOIN_REFUSED[whose], wait

    def _member_names(self, room: Room) -> tuple[str, ...]:
        names = room.sorted_names
        if names is None:
            # Sorted by each member's name key (``rules.name_key``), kept since it joined.
            names = room.sorted_names = tuple(
                m.name for m in sorted(room.members.values(), key=_by_key))
        return names

    def _say(self, fx: Effects, conn: Conn, says: list[chat.Say], now: float) -> None:
        """A run of ``conn``'s messages to its room (one or a read's consecutive says):
        numbered, kept in the history and delivered as one chunk per mode."""
        room = conn.room
        assert room is not None
        if not self.rules.allows_messages:
            for _event in says:
                self.counters["refused_while_stopped"] += 1
                self._refused(fx, conn, "stopped", now)
                self._error(fx, conn, ErrorCode.STOPPED,
                            self._tr(conn, STOPPED_NOT_DELIVERED), "say")
            return
        # The messages of one read share the room, the time and the sender: their JSON
        # lines are written by one encoder made for those (chat.message_lines).
        key = (room.pin, now, conn.name)
        if key != self._say_key:
            self._say_key = key
            self._say_ts = round(now, 3)
            self._say_lines = chat.message_lines(room.pin, self._say_ts, conn.name)
        first = room.seq + 1
        room.seq += len(says)
        self.counters["messages"] += len(says)
        keep = self.config.history
        text_line = None
        if keep or room.text_members:
            # Message events only where they are needed: the history keeps the last
            # ``keep`` (a read of 700 lines makes 50, not 700), a plain-text member's
            # line is formatted from each.  Every field is the core's own or was checked
            # by the parser: no checks to redo.
            skip = 0 if room.text_members else max(0, len(says) - keep)
            pin, ts, sender, trusted, message = (room.pin, self._say_ts, conn.name,
                                                 chat.trusted, chat.Message)
            messages = [trusted(message, room=pin, seq=first + i, ts=ts, sender=sender,
                                text=say.text, action=say.action, history=False)
                        for i, say in enumerate(says[skip:], skip)]
            if keep:
                if room.history:
                    room.history.extend(messages[-keep:])
                else:  # the room's first messages: its history is made now
                    room.history = deque(messages[-keep:], maxlen=keep)
                if room.history_cache:
                    room.history_cache = {}
            if room.text_members:  # no sentence: one line for every language
                text_line = b"".join([text.format_event(m) or b"" for m in messages])
        if self.config.log_messages:
            for seq, say in enumerate(says, first):
                fx.record(now, "message", room=room.pin, name=conn.name, room_seq=seq,
                          text=say.text)
        self._broadcast(fx, room, None, json_line=self._say_lines(first, says)
                        if room.json_members else None, text_line=text_line)

    def _private(self, fx: Effects, conn: Conn, run: list[chat.PrivateSay],
                 now: float) -> None:
        (event,) = run
        room = conn.room
        assert room is not None
        if not self.rules.allows_messages:
            self.counters["refused_while_stopped"] += 1
            self._refused(fx, conn, "stopped", now)
            self._error(fx, conn, ErrorCode.STOPPED, self._tr(conn, STOPPED_NOT_DELIVERED),
                        "msg")
            return
        target_cid = room.names.get(rules.name_key(event.to))
        if target_cid is None:
            self._error(fx, conn, ErrorCode.NO_SUCH_MEMBER, self._tr(
                        conn, N_("Nobody called {name!r} is in this room."), name=event.to),
                        "msg")
            return
        target = room.members[target_cid]
        message = chat.Private(round(now, 3), conn.name, target.name, event.text)
        self.counters["private_messages"] += 1
        if self.config.log_private_messages:
            fx.record(now, "private_message", room=room.pin, name=conn.name,
                            to=target.name, text=event.text)
        self._reply(fx, target, message)
        if target is not conn:
            self._reply(fx, conn, message)

    def _who(self, fx: Effects, conn: Conn, run: list[chat.Who], now: float) -> None:
        room = conn.room
        assert room is not None
        conn.tokens -= EXTRA_COST["who"]
        key = (conn.is_text, conn.lang)
        data = room.who_cache.get(key)
        if data is None:
            # One encoding per membership and mode, shared by every asker: a crowd
            # asking ``who`` in a room of 1,500 costs one list, not 1,500.
            members = chat.Members(room.pin, self._member_names(room))
            data = (text.format_event(members, i18n.gettext_for(conn.lang)) if conn.is_text
                    else chat.encode_json(members))
            if data is None:
                return
            room.who_cache[key] = data
        fx.send(conn.cid, data)

    def _set_language(self, fx: Effects, conn: Conn, code: str) -> None:
        """``/lang CODE``: a plain-text member's sentences from now on in that language."""
        languages = ", ".join(i18n.LANGUAGES)
        if not code:
            self._reply_line(fx, conn, self._tr(conn, text.LANGUAGE_SET))
            self._reply_line(fx, conn, self._tr(conn, text.LANGUAGES_AVAILABLE,
                                                languages=languages))
            return
        lang = i18n.supported(code)
        if lang is None:
            self._reply_line(fx, conn, self._tr(conn, text.LANGUAGE_UNKNOWN, code=code,
                                                languages=languages))
            return
        conn.lang = lang
        conn.own_lang = True
        self._reply_line(fx, conn, self._tr(conn, text.LANGUAGE_SET))

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
        fx.record(now, "state", old=old, new=new_state, actor=actor)
        ts = round(now, 3)
        description = SERVER_STATE_RULES[new_state].description
        self._send_by_language(
            fx, [c for c in self.conns.values() if not c.is_text or c.state == states.JOINED],
            lambda lang: chat.StateChanged(new_state, ts, i18n.translate(lang, description)))
        return fx

    def _room(self, pin: str) -> Room:
        room = self.rooms.get(pin)
        if room is None:
            raise AdminError("unknown_room", f"There is no room with PIN {pin}.")
        return room

    def close_room(self, pin: str, reason: str, actor: str, now: float) -> Effects:
        room = self._room(pin)
        fx = Effects()
        fx.record(now, "room_closed", room=pin, reason=reason, actor=actor,
                        members=len(room.members))
        for conn in list(room.members.values()):
            message = (self._tr(conn, N_("The room was closed by the administrator: {reason}"),
                                reason=reason) if reason
                       else self._tr(conn, N_("The room was closed by the administrator.")))
            self._bye(fx, conn, ByeReason.ROOM_CLOSED, message, now,
                      leave_reason=LeaveReason.ROOM_CLOSED, detail=reason)
        return fx

    def kick(self, pin: str, name: str, reason: str, actor: str, now: float) -> Effects:
        room = self._room(pin)
        cid = room.names.get(rules.name_key(name))
        if cid is None:
            raise AdminError("unknown_user", f"Nobody called {name!r} is in room {pin}.")
        conn = room.members[cid]
        fx = Effects()
        self.counters["kicks"] += 1
        fx.record(now, "kick", room=pin, name=conn.name, reason=reason, actor=actor,
                        addr=format_address(conn.addr))
        message = (self._tr(conn, N_("You were removed from the room by the administrator: "
                                     "{reason}"), reason=reason) if reason
                   else self._tr(conn, N_("You were removed from the room by the "
                                          "administrator.")))
        self._bye(fx, conn, ByeReason.KICKED, message, now,
                  leave_reason=f"{LeaveReason.KICKED}: {reason}" if reason else LeaveReason.KICKED,
                  detail=reason)
        return fx

    def announce(self, text_: str, room_pin: str | None, actor: str, now: float) -> Effects:
        try:
            body = rules.check_text(text_)
        except RemoteProtocolError as exc:
            raise AdminError("bad_value", exc.message) from None
        fx = Effects()
        rooms = [self._room(room_pin)] if room_pin is not None else list(self.rooms.values())
        fx.record(now, "announce", room=room_pin, text=body, actor=actor)
        for room in rooms:
            self._broadcast(fx, room, chat.Notice(round(now, 3), body, room.pin))
        return fx

    def shutdown(self, now: float) -> Effects:
        """Tell every connection the server is going down, and close them all."""
        fx = Effects()
        for conn in list(self.conns.values()):
            self._bye(fx, conn, ByeReason.SHUTDOWN,
                      self._tr(conn, N_("The server is shutting down.")), now,
                      leave_reason=LeaveReason.SERVER_SHUTDOWN)
        return fx

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration (the keys that can change at run time)."""
        self.config = config
        self.server_name = config.name or self.host_name
        for conn in self.conns.values():
            if not conn.own_lang and conn.is_text:
                conn.lang = config.text_language
        for room in self.rooms.values():
            if room.history and room.history.maxlen != config.history:
                room.history = (deque(room.history, maxlen=config.history) if config.history
                                else NO_HISTORY)
                room.history_cache = {}

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
            "clients": len(self.conns) - len(self.unopened),
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
                 "mode": m.mode or "", "since": m.connected_at}
                for m in sorted(room.members.values(), key=lambda m: rules.name_key(m.name))
            ],
            "messages": room.seq,
            "created": room.created,
        }

    def status_line(self) -> str:
        clients = len(self.conns) - len(self.unopened)
        return (f"{self.state}: {clients} clients, {len(self.rooms)} rooms, "
                f"{self.counters['messages']} messages")


STOPPED_NOT_DELIVERED = N_("The server is stopped: your message was not delivered.")


def _leave_text(reason: str) -> str:
    return "" if reason in SILENT_LEAVE_REASONS else reason

"""The client's side of a chat session, sans-I/O.

Theory of operation
-------------------
``Session`` holds everything the client knows about its one session with a server,
and no socket.  The driver (``lanchat.client.connection``) tells it what happened,
always with ``now`` (a ``time.monotonic()`` value): a connection was made
(``connection_made``), bytes arrived (``receive_data``), the connection failed or
dropped (``connection_failed``, ``connection_lost``), time passed (``tick``).  The
person's side calls ``submit`` (a message to send), ``set_credentials`` (a PIN and
name after being asked) and ``quit``.  Every call returns a list of events for the
user interface: the server's own events (``chat.Message``, ``chat.Presence``...) and
the client's (``Delivered``, ``Disconnected``...).  Bytes to write are taken with
``data_to_send``; ``wants_connect(now)`` says when to open a new connection and
``must_close`` when to drop the current one.

The handshake per connection: the server's greeting, our ``hello``, its ``welcome``
(which carries the PIN length rule, the line limit and the rate limit), our ``join``,
its ``joined``.  When the PIN and name are known and well-formed and the driver says
the server is already proven to be the one meant (``connection_made(now,
join_early=True)``: no TLS step, or a key matching the remembered one at the end of
the handshake), the ``join`` goes with the ``hello`` (the protocol allows a command
right after the hello): one round trip fewer, and the server answers both at once.
Otherwise the PIN and name wait for the ``welcome``, whose server id the driver checks
first.  Without a PIN or name the session
stops at ``NEED_CREDENTIALS`` after the welcome and the interface asks the person.

Messages are never dropped.  ``submit`` appends to a queue; one message at a time is
on the wire (``inflight``), so the server's answer to it is unambiguous and order is
kept: our own message echoed back by the server means delivered, an error with
``ref`` "say"/"msg" means not.  ``rate_limited`` puts the message back to be resent
after a pause, ``stopped`` holds the queue until the server allows messages again,
any other refusal is reported as not delivered.  The queue is paced by a local copy
of the server's token bucket (rate and burst from ``welcome``), so the limit is
rarely hit at all.

When the connection drops, the session says so and schedules a reconnect with
exponential backoff and jitter; after it, the same PIN and name rejoin the same room
and the queue goes on.  A message that was on the wire when the connection dropped
may or may not have been delivered: after rejoining the same server (same server id)
the room's history replay tells, so the session first sends a ``ping`` and waits for
its ``pong`` (which the server answers after the replay) before it resends anything.

What ends a session for good (``Finished``): our own quit, being kicked or the room
being closed, a server that is not lanchat or shares no protocol version, or, before
the first join, a server that cannot be reached or refuses new clients.  Anything else
is a drop, followed by a reconnect.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

from lanchat import __version__
from lanchat.protocol import chat
from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError

# Phases of a session.
DISCONNECTED = "disconnected"          # no connection; maybe a reconnect is scheduled
CONNECTING = "connecting"              # the driver is opening a connection
GREETING = "greeting"                  # connected, waiting for the server's greeting
HELLO = "hello"                        # hello sent, waiting for welcome
NEED_CREDENTIALS = "need_credentials"  # welcomed, waiting for a PIN or name from the person
JOINING = "joining"                    # join sent, waiting for joined
JOINED = "joined"                      # a member of the room
QUITTING = "quitting"                  # quit sent, waiting for the server's goodbye
FINISHED = "finished"                  # over for good

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 15.0
HANDSHAKE_TIMEOUT = 15.0     # greeting to joined, per connection (without waiting on a person)
KEEPALIVE_IDLE = 45.0        # silence after which we ping the server
KEEPALIVE_TIMEOUT = 20.0     # how long the server has to answer
QUIT_TIMEOUT = 3.0           # how long we wait for the goodbye after quit
RATE_LIMIT_PAUSE = 0.25      # minimum pause before resending a rate-limited message
JOIN_RETRY_FIRST = 2.0       # a rejoin refused because the name is still held
SYNC_TOKEN = "lanchat-sync"
SEEN_MAX = 2000              # room messages remembered to skip in a history replay
KEEPALIVE_TOKEN = "lanchat-keepalive"

# Bye reasons after which reconnecting would be wrong.
FINAL_BYE_REASONS = frozenset({"quit", "kicked", "room_closed", "too_many_errors", "flooding",
                               "unsupported_version"})

Sendable = Union[chat.Say, chat.PrivateSay]


@dataclass(frozen=True)
class Outgoing:
    """A message the person typed, from the queue to its delivery."""

    id: int
    event: Sendable

    @property
    def text(self) -> str:
        return self.event.text


# ------------------------------------------------------------------ events for the interface


@dataclass(frozen=True)
class Connecting:
    attempt: int  # 0 for the first connection


@dataclass(frozen=True)
class Connected:
    greeting: chat.Greeting


@dataclass(frozen=True)
class NeedCredentials:
    """Ask the person for what is missing (pin and/or name), then ``set_credentials``."""

    welcome: chat.Welcome
    pin: bool
    name: bool


@dataclass(frozen=True)
class JoinRefused:
    """The server refused the PIN or name; ``field`` says which one to ask for again."""

    code: str
    message: str
    field: str  # "pin" or "name"
    welcome: chat.Welcome | None
    value: str = ""  # the refused PIN or name


@dataclass(frozen=True)
class RoomJoined:
    joined: chat.Joined
    rejoin: bool


@dataclass(frozen=True)
class Queued:
    """Accepted by ``submit``; ``waiting`` when it cannot go out now (not connected)."""

    item: Outgoing
    waiting: bool


@dataclass(frozen=True)
class Delivered:
    item: Outgoing


@dataclass(frozen=True)
class NotDelivered:
    """The server (or a local check) refused this message for good."""

    item: Outgoing
    code: str
    message: str


@dataclass(frozen=True)
class Held:
    """The message waits: ``reason`` is "rate_limited" or "stopped"."""

    item: Outgoing
    reason: str
    message: str


@dataclass(frozen=True)
class Disconnected:
    reason: str
    retry_in: float | None  # None: no retry scheduled (waiting for the person)
    queued: int
    reconnect_failed: bool = False  # a reconnect attempt failed (not a new drop)
    code: str = ""  # why, when known: a greeting status, a bye reason, "timeout", ...


@dataclass(frozen=True)
class Retrying:
    """The server refused us for a reason that may pass (standby, name still held)."""

    code: str
    message: str
    retry_in: float


@dataclass(frozen=True)
class Finished:
    ok: bool
    reason: str
    message: str
    unsent: tuple[Outgoing, ...]
    detail: str = ""  # the administrator's words, for a kick or a closed room


@dataclass(frozen=True)
class ServerError:
    """An error from the server that is not about a queued message or the join."""

    error: chat.Error


UiEvent = Union[
    Connecting, Connected, NeedCredentials, JoinRefused, RoomJoined, Queued, Delivered,
    NotDelivered, Held, Disconnected, Retrying, Finished, ServerError, chat.Event,
]


class _Bucket:
    """A local copy of the server's token bucket, to pace what we send."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.tokens = self.burst
        self.last = now

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = max(self.last, now)

    def wait(self, now: float) -> float:
        """Seconds until one message may be sent (0: now)."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        if self.rate > 0:
            self._refill(now)
            self.tokens = max(0.0, self.tokens - 1.0)

    def empty(self, now: float) -> None:
        self._refill(now)
        self.tokens = 0.0


class Session:
    def __init__(self, *, pin: str | None = None, name: str | None = None,
                 client: str = f"lanchat/{__version__}", lang: str = "",
                 rng: Callable[[], float] = random.random) -> None:
        self.pin = pin
        self.name = name
        self.client = client
        self.lang = lang  # asked for in the hello: the server's sentences in it
        self._rng = rng
        self.phase = DISCONNECTED
        self.codec = chat.ClientCodec()
        self._out = bytearray()
        self.greeting: chat.Greeting | None = None
        self.welcome: chat.Welcome | None = None
        self.joined: chat.Joined | None = None
        self.members: list[str] = []
        self.server_state = "active"
        self.ever_welcomed = False
        self.ever_joined = False
        self.finished: Finished | None = None
        # reconnecting
        self.attempt = 0
        self.reconnect_at: float | None = 0.0  # connect at once when started
        self._bye: chat.Bye | None = None
        self._refusal: tuple[str, str] | None = None  # (code, message) ending this connection
        self.must_close = False
        self._phase_deadline: float | None = None
        # the queue
        self._next_id = 1
        self.queue: deque[Outgoing] = deque()
        self.inflight: Outgoing | None = None
        self._uncertain: Outgoing | None = None  # was on the wire when the connection dropped
        self._syncing = False
        self._send_at = 0.0
        self._held_stopped = False
        self._bucket: _Bucket | None = None
        self._join_retry_at: float | None = None
        self._join_early = False  # this connection's server is proven: join with the hello
        self._join_retries = 0
        # Why the session is not in the room right now (the last drop or refusal), for
        # the interface to say while it waits; None once joined.
        self.trouble: Disconnected | Retrying | None = None
        # The room messages already shown, so a history replay after a reconnect shows
        # only what was missed.  (seq alone is not enough: a restarted server counts anew.)
        self._seen: deque[tuple[str, int, float, str]] = deque()
        self._seen_set: set[tuple[str, int, float, str]] = set()
        # keep-alive
        self._last_rx = 0.0
        self._ping_sent: float | None = None

    # ------------------------------------------------------------------ state queries

    @property
    def connected(self) -> bool:
        return self.phase in (GREETING, HELLO, NEED_CREDENTIALS, JOINING, JOINED, QUITTING)

    @property
    def idle(self) -> bool:
        """Nothing left to deliver."""
        return self.inflight is None and not self.queue

    @property
    def pending(self) -> tuple[Outgoing, ...]:
        return ((self.inflight,) if self.inflight else ()) + tuple(self.queue)

    @property
    def my_name(self) -> str:
        return self.joined.name if self.joined else (self.name or "")

    def wants_connect(self, now: float) -> bool:
        return (self.phase == DISCONNECTED and self.reconnect_at is not None
                and now >= self.reconnect_at)

    def next_deadline(self) -> float | None:
        """The earliest time ``tick`` has something to do (or a reconnect is due)."""
        times: list[float] = []
        if self.phase == DISCONNECTED and self.reconnect_at is not None:
            times.append(self.reconnect_at)
        if self._phase_deadline is not None:
            times.append(self._phase_deadline)
        if self.phase == JOINED:
            if self.queue and self.inflight is None and not self._syncing \
                    and not self._held_stopped:
                times.append(self._send_at)
            if self._ping_sent is not None:
                times.append(self._ping_sent + KEEPALIVE_TIMEOUT)
            else:
                times.append(self._last_rx + KEEPALIVE_IDLE)
        if self._join_retry_at is not None and self.phase == HELLO:
            times.append(self._join_retry_at)
        return min(times) if times else None

    @property
    def handshake_deadline(self) -> float | None:
        """When the server must have answered the handshake on this connection."""
        if self.phase in (GREETING, HELLO, JOINING):
            return self._phase_deadline
        return None

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    # ------------------------------------------------------------------ driver calls

    def connecting(self, now: float) -> list[UiEvent]:
        """The driver starts opening a connection."""
        self.phase = CONNECTING
        self.reconnect_at = None
        self.must_close = False
        self._phase_deadline = None
        return [Connecting(self.attempt)]

    def connection_made(self, now: float, *, join_early: bool = False) -> list[UiEvent]:
        """A connection is open.  ``join_early``: the driver knows this is the server
        meant, so the PIN and name may go with the hello, before the welcome."""
        self.phase = GREETING
        self._join_early = join_early
        self.codec = chat.ClientCodec()
        self._out.clear()
        self._bye = None
        self._refusal = None
        self._last_rx = now
        self._ping_sent = None
        self._phase_deadline = now + HANDSHAKE_TIMEOUT
        self._join_retry_at = None
        return []

    def connection_failed(self, reason: str, now: float) -> list[UiEvent]:
        """Opening the connection failed (refused, unreachable, timed out)."""
        return self._lost(reason, now, connect_failed=True)

    def connection_lost(self, reason: str, now: float) -> list[UiEvent]:
        """The connection dropped or was closed (by either side)."""
        return self._lost(reason, now)

    def abandon(self, reason: str, message: str, now: float) -> list[UiEvent]:
        """The driver refuses this server for good (a changed key): nothing more is sent,
        nothing is retried.  ``message`` is said to the person as it is."""
        self._out.clear()
        return self._finish(False, reason, message)

    def receive_data(self, data: bytes, now: float) -> list[UiEvent]:
        events: list[UiEvent] = []
        if not self.connected:
            return events
        self._last_rx = now
        self._ping_sent = None
        self.codec.receive_data(data)
        while self.connected:
            try:
                event = self.codec.next_event()
            except RemoteProtocolError as exc:
                if self.phase == GREETING or exc.code == "not_lanchat":
                    return events + self._finish(False, exc.code, exc.message)
                continue  # one bad line from the server: skip it
            if event is None:
                break
            if isinstance(event, chat.ConnectionClosed):
                events += self._lost(self._drop_reason(), now)
                break
            events += self._on_event(event, now)
        return events

    def tick(self, now: float) -> list[UiEvent]:
        events: list[UiEvent] = []
        if self._phase_deadline is not None and now >= self._phase_deadline:
            self._phase_deadline = None
            if self.phase == QUITTING:
                return self._finish(True, "quit", "")
            if self.phase in (GREETING, HELLO, JOINING):
                self.must_close = True
                self._refusal = ("timeout", "The server did not answer the handshake.")
                return events
        if self.phase == HELLO and self._join_retry_at is not None and now >= self._join_retry_at:
            self._join_retry_at = None
            events += self._send_join(now)
        if self.phase == JOINED:
            if self._ping_sent is not None:
                if now >= self._ping_sent + KEEPALIVE_TIMEOUT:
                    self.must_close = True
                    self._refusal = ("keepalive", "The server stopped answering.")
                    return events
            elif now >= self._last_rx + KEEPALIVE_IDLE:
                self._send(chat.Ping(KEEPALIVE_TOKEN))
                self._ping_sent = now
            events += self._pump(now)
        return events

    # ------------------------------------------------------------------ the person's calls

    def set_credentials(self, pin: str, name: str, now: float) -> list[UiEvent]:
        """A PIN and name from the person (after ``NeedCredentials`` or ``JoinRefused``)."""
        self.pin, self.name = pin, name
        if self.phase == NEED_CREDENTIALS:
            return self._send_join(now)
        if self.phase == DISCONNECTED and self.reconnect_at is None and not self.finished:
            self.reconnect_at = now
        return []

    def submit(self, event: Sendable, now: float) -> list[UiEvent]:
        """Queue a message (``chat.Say`` or ``chat.PrivateSay``) for delivery."""
        item = Outgoing(self._next_id, event)
        self._next_id += 1
        if self.finished:
            return [NotDelivered(item, "finished", "The session is over.")]
        too_long = self._too_long(item)
        if too_long:
            return [NotDelivered(item, "too_long", too_long)]
        self.queue.append(item)
        waiting = self.phase != JOINED or self._held_stopped
        return [Queued(item, waiting), *self._pump(now)]

    def remember_shown(self, other: Session) -> None:
        """Take over which room messages ``other`` has shown (a new session after
        /join or /nick), so its history replay does not show them again."""
        self._seen = deque(other._seen)
        self._seen_set = set(other._seen_set)

    def fits(self, event: Sendable) -> bool:
        """Whether ``event`` fits in one line of this server (always, before a welcome)."""
        return not self._too_long(Outgoing(0, event))

    def request(self, event: chat.Who, now: float) -> bool:
        """Send a request whose answer is simply shown (``who``); False if not joined."""
        if self.phase != JOINED:
            return False
        if self._bucket is not None:
            self._bucket.take(now)
        self._send(event)
        return True

    def quit(self, now: float) -> list[UiEvent]:
        """Leave: say goodbye if connected; whatever is still queued is reported unsent."""
        if self.finished:
            return []
        if self.phase in (HELLO, NEED_CREDENTIALS, JOINING, JOINED):
            self._send(chat.Quit())
            self.phase = QUITTING
            self._phase_deadline = now + QUIT_TIMEOUT
            return []
        return self._finish(True, "quit", "")

    # ------------------------------------------------------------------ internals

    def _send(self, event: chat.Event) -> None:
        self._out += self.codec.send(event)

    def _too_long(self, item: Outgoing) -> str:
        if self.welcome is None:
            return ""
        size = len(self.codec.send(item.event))
        if size > self.welcome.max_line:
            return (f"The message is too long for this server ({size} bytes encoded; "
                    f"at most {self.welcome.max_line}).")
        return ""

    def _send_join(self, now: float) -> list[UiEvent]:
        assert self.pin is not None and self.name is not None
        try:
            join = chat.Join(self.pin, self.name)
        except LocalProtocolError as exc:
            # Not even well-formed: ask again without bothering the server.
            field = "pin" if exc.code == "invalid_pin" else "name"
            return self._ask_again(field, exc.code, exc.message)
        self._send(join)
        self.phase = JOINING
        self._phase_deadline = now + HANDSHAKE_TIMEOUT
        return []

    def _ask_again(self, field: str, code: str, message: str) -> list[UiEvent]:
        self.phase = NEED_CREDENTIALS
        self._phase_deadline = None
        if field == "pin":
            value, self.pin = self.pin or "", None
        else:
            value, self.name = self.name or "", None
        return [JoinRefused(code, message, field, self.welcome, value)]

    def _on_event(self, event: chat.Event, now: float) -> list[UiEvent]:
        if isinstance(event, chat.Greeting):
            return self._on_greeting(event, now)
        if isinstance(event, chat.Welcome):
            return self._on_welcome(event, now)
        if isinstance(event, chat.Joined):
            return self._on_joined(event, now)
        if isinstance(event, chat.Message):
            return self._on_message(event, now)
        if isinstance(event, chat.Private):
            if (event.sender == self.my_name and self.inflight is not None
                    and isinstance(self.inflight.event, chat.PrivateSay)):
                return [*self._ack(now), event]
            return [event]
        if isinstance(event, chat.Presence):
            if event.event == "join" and event.name not in self.members:
                self.members.append(event.name)
            elif event.event == "leave" and event.name in self.members:
                self.members.remove(event.name)
            return [event]
        if isinstance(event, chat.Members):
            self.members = list(event.members)
            return [event]
        if isinstance(event, chat.StateChanged):
            return self._on_state(event, now)
        if isinstance(event, chat.Error):
            return self._on_error(event, now)
        if isinstance(event, chat.Bye):
            self._bye = event
            return [event]
        if isinstance(event, chat.Ping):
            self._send(chat.Pong(event.token))
            return []
        if isinstance(event, chat.Pong):
            if event.token == SYNC_TOKEN and self._syncing:
                self._syncing = False
                self._uncertain = None
                return self._pump(now)
            return []
        if isinstance(event, chat.Unknown):
            return []
        return [event]

    def _on_greeting(self, greeting: chat.Greeting, now: float) -> list[UiEvent]:
        self.greeting = greeting
        if greeting.status != "ready":
            # The server refuses new connections and closes; the text says why.
            self._refusal = (greeting.status, greeting.text)
            return []
        self.phase = HELLO
        self._send(chat.Hello(chat.SUPPORTED_VERSIONS, self.client, self.lang))
        if self._can_pipeline_join():
            self._send_join(now)
        return [Connected(greeting)]

    def _can_pipeline_join(self) -> bool:
        """Whether the join may go right after the hello: a PIN and name that are
        well-formed (else the person is asked after the welcome, which carries the
        server's rules), a server already proven (else its welcome is checked first),
        and no wait before a retry of the join."""
        if not self._join_early or self.pin is None or self.name is None \
                or self._join_retry_at is not None:
            return False
        try:
            chat.Join(self.pin, self.name)
        except LocalProtocolError:
            return False
        return True

    def _on_welcome(self, welcome: chat.Welcome, now: float) -> list[UiEvent]:
        self.welcome = welcome
        self.ever_welcomed = True
        self.server_state = welcome.state
        self._bucket = _Bucket(welcome.rate, welcome.burst, now)
        if self.phase == JOINING:
            return []  # the join went with the hello
        if self.pin is None or self.name is None:
            self.phase = NEED_CREDENTIALS
            self._phase_deadline = None  # the person may take their time
            return [NeedCredentials(welcome, self.pin is None, self.name is None)]
        return self._send_join(now)

    def _on_joined(self, joined: chat.Joined, now: float) -> list[UiEvent]:
        rejoin = self.ever_joined
        self.joined = joined
        self.members = list(joined.members)
        self.server_state = joined.state
        self._held_stopped = False
        self.phase = JOINED
        self._phase_deadline = None
        self.ever_joined = True
        self.attempt = 0
        self._join_retries = 0
        self._send_at = now
        self.trouble = None
        events: list[UiEvent] = [RoomJoined(joined, rejoin)]
        if self._uncertain is not None:
            # Learn from the history replay whether it got through before resending.
            self._syncing = True
            self._send(chat.Ping(SYNC_TOKEN))
            if self._bucket is not None:
                self._bucket.take(now)
        return events + self._pump(now)

    def _on_message(self, message: chat.Message, now: float) -> list[UiEvent]:
        key = (message.room, message.seq, message.ts, message.sender)
        if key in self._seen_set:
            return []  # a history replay of what was shown before the reconnect
        self._seen.append(key)
        self._seen_set.add(key)
        if len(self._seen) > SEEN_MAX:
            self._seen_set.discard(self._seen.popleft())
        if message.history:
            uncertain = self._uncertain
            if (self._syncing and uncertain is not None and message.sender == self.my_name
                    and isinstance(uncertain.event, chat.Say)
                    and uncertain.event.text == message.text
                    and uncertain.event.action == message.action):
                self._uncertain = None
                if self.queue and self.queue[0] is uncertain:
                    self.queue.popleft()
                return [message, Delivered(uncertain)]
            return [message]
        if (message.sender == self.my_name and self.inflight is not None
                and isinstance(self.inflight.event, chat.Say)):
            return [*self._ack(now), message]
        return [message]

    def _ack(self, now: float) -> list[UiEvent]:
        item = self.inflight
        assert item is not None
        self.inflight = None
        return [Delivered(item), *self._pump(now)]

    def _on_state(self, event: chat.StateChanged, now: float) -> list[UiEvent]:
        self.server_state = event.state
        events: list[UiEvent] = [event]
        if event.state != "stopped" and self._held_stopped:
            self._held_stopped = False
            events += self._pump(now)
        return events

    def _on_error(self, error: chat.Error, now: float) -> list[UiEvent]:
        if error.code == "throttled":
            # Answers no request: the server now reads us more slowly, nothing is lost.
            return [ServerError(error)]
        if self.phase == JOINING and error.ref in ("join", ""):
            return self._on_join_refused(error, now)
        if error.ref == "ping" and self._syncing:
            # Refused (rate limit), but answered after the history replay all the same.
            self._syncing = False
            self._uncertain = None
            return self._pump(now)
        item = self.inflight
        if item is not None and (error.ref in ("say", "msg") or not error.ref):
            if error.code == "rate_limited":
                self.queue.appendleft(item)
                self.inflight = None
                if self._bucket is not None:
                    self._bucket.empty(now)
                pause = RATE_LIMIT_PAUSE
                if self.welcome is not None and self.welcome.rate > 0:
                    pause = max(pause, 1.0 / self.welcome.rate)
                self._send_at = now + pause
                return [Held(item, "rate_limited", error.message)]
            if error.code == "stopped":
                self.queue.appendleft(item)
                self.inflight = None
                self._held_stopped = True
                self.server_state = "stopped"
                return [Held(item, "stopped", error.message)]
            self.inflight = None
            return [NotDelivered(item, error.code, error.message), *self._pump(now)]
        return [ServerError(error)]

    def _on_join_refused(self, error: chat.Error, now: float) -> list[UiEvent]:
        self._phase_deadline = None
        self.phase = HELLO
        if error.code in ("standby", "stopped"):
            # A Bye and the close follow; whether to retry is decided when it closes.
            self._refusal = (error.code, error.message)
            return []
        if error.code == "join_rate_limited" or (error.code == "name_taken" and self.ever_joined):
            # Passes with time: the join rate refills, an old connection of ours times out.
            delay = min(BACKOFF_MAX, JOIN_RETRY_FIRST * (2 ** self._join_retries))
            self._join_retries += 1
            self._join_retry_at = now + delay
            self.trouble = Retrying(error.code, error.message, delay)
            return [self.trouble]
        if self.ever_joined:
            return self._finish(False, error.code, error.message)
        return self._ask_again("pin" if error.code == "invalid_pin" else "name",
                               error.code, error.message)

    def _pump(self, now: float) -> list[UiEvent]:
        """Put the next queued message on the wire if nothing is in flight and pacing allows."""
        if (self.phase != JOINED or self.inflight is not None or not self.queue
                or self._syncing or self._held_stopped):
            return []
        if self.server_state == "stopped":
            self._held_stopped = True
            item = self.queue[0]
            return [Held(item, "stopped", "The server is stopped: messages wait until it "
                                          "allows them again.")]
        if now < self._send_at:
            return []
        if self._bucket is not None:
            wait = self._bucket.wait(now)
            if wait > 0:
                self._send_at = now + wait
                return []
            self._bucket.take(now)
        item = self.queue.popleft()
        too_long = self._too_long(item)
        if too_long:
            return [NotDelivered(item, "too_long", too_long), *self._pump(now)]
        self.inflight = item
        self._send(item.event)
        return []

    def _drop_reason(self) -> str:
        if self._bye is not None:
            return self._bye.message
        if self._refusal is not None:
            return self._refusal[1]
        return "The server closed the connection."

    def _lost(self, reason: str, now: float, *, connect_failed: bool = False) -> list[UiEvent]:
        if self.finished:
            return []
        was_quitting = self.phase == QUITTING
        self.phase = DISCONNECTED
        self.must_close = False
        self._phase_deadline = None
        self._syncing = False
        self._ping_sent = None
        self._join_retry_at = None
        if self.inflight is not None:
            self._uncertain = self.inflight
            self.queue.appendleft(self.inflight)
            self.inflight = None
        bye, refusal = self._bye, self._refusal
        self._bye = self._refusal = None
        if was_quitting:
            return self._finish(True, "quit", "")
        if bye is not None and bye.reason in FINAL_BYE_REASONS:
            return self._finish(False, bye.reason, bye.message, bye.detail)
        if refusal is not None and refusal[0] == "not_lanchat":
            return self._finish(False, refusal[0], refusal[1])
        if not self.ever_joined:
            if refusal is not None and refusal[0] in chat.GREETING_STATUSES + chat.STATES:
                return self._finish(False, refusal[0], refusal[1])
            if bye is not None and not self.ever_welcomed:
                return self._finish(False, bye.reason, bye.message)
            if not self.ever_welcomed:
                # Never got as far as a welcome: a wrong address, not a pause to wait out.
                return self._finish(False, "connect_failed",
                                    refusal[1] if refusal is not None else reason)
        code = ""
        if refusal is not None:
            code, reason = refusal
        elif bye is not None:
            code, reason = bye.reason, bye.message
        failed = connect_failed or self.attempt > 0
        if self.pin is None or self.name is None:
            # Waiting for the person: reconnect when they answer.
            self.reconnect_at = None
            self.trouble = Disconnected(reason, None, len(self.queue), failed, code)
            return [self.trouble]
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * (2 ** self.attempt)) * (0.8 + 0.4 * self._rng())
        self.attempt += 1
        self.reconnect_at = now + delay
        self.trouble = Disconnected(reason, delay, len(self.queue), failed, code)
        return [self.trouble]

    def _finish(self, ok: bool, reason: str, message: str,
                detail: str = "") -> list[UiEvent]:
        if self.inflight is not None:
            self.queue.appendleft(self.inflight)
            self.inflight = None
        self.phase = FINISHED
        self.must_close = True
        self.reconnect_at = None
        self._phase_deadline = None
        self.finished = Finished(ok, reason, message, tuple(self.queue), detail)
        return [self.finished]

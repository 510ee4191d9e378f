"""The chat protocol (TCP, port 5000), sans-I/O.

Theory of operation
-------------------
Framing is one UTF-8 line per message, ended by ``\\n`` (a ``\\r`` before it is
ignored).  On connect the server sends one greeting line::

    LANCHAT/1 ready Welcome to lab (lanchatd 0.1.0). Enter the room PIN:

It is readable by a person with ``nc`` and names the protocol and its highest version
for a program, the way SMTP's 220 line does.  The client's first line decides the mode
of the whole connection: a line starting with ``{`` is JSON mode (it must be a
``hello``), anything else is plain-text mode, where that first line is the room PIN.

The codecs here never touch a socket.  Each has the three verbs of h11:
``receive_data(bytes)`` feeds received bytes (``b""`` means end of file),
``next_event()`` hands back the next typed event (``None`` when more bytes are
needed, ``ConnectionClosed`` after end of file) and ``send(event)`` returns the bytes
to write.  Bad input raises ``RemoteProtocolError`` for that line only; the codec stays
usable for the next line.

Every event is a small frozen dataclass that validates itself, so a ``Join`` with an
empty name or a 10 kB PIN cannot exist.  docs/protocol.md is the reference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Union

from lanchat.protocol import rules
from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError

DEFAULT_PORT = 5000  # the TCP chat port
PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
GREETING_MAGIC = "LANCHAT/"
DEFAULT_MAX_LINE = 4096
PIN_MAX_DIGITS = 64  # the hard ceiling; the server's configured length applies within it
GREETING_STATUSES = ("ready", "standby", "stopped", "full", "busy")
STATES = ("active", "standby", "stopped")


def _validated(check: Callable[[], Any]) -> Any:
    """Run a rule check while constructing an event: our own bad values are local errors."""
    try:
        return check()
    except RemoteProtocolError as exc:
        raise LocalProtocolError(exc.code, exc.message) from None


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise LocalProtocolError("bad_request", what)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    TYPE: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        for name, key, omit_if_false in _wire_fields(type(self)):
            value = getattr(self, name)
            if value is None or (omit_if_false and not value):
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


_OMIT_IF_FALSE = frozenset({"action", "history", "reason", "ref", "token", "client", "id",
                            "detail"})
_WIRE_FIELDS: dict[type, tuple[tuple[str, str, bool], ...]] = {}


def _wire_fields(cls: type) -> tuple[tuple[str, str, bool], ...]:
    """(attribute, JSON key, left out when false) for each field of ``cls``, worked out
    once per class: ``dataclasses.fields`` on every encode was a third of its cost."""
    found = _WIRE_FIELDS.get(cls)
    if found is None:
        found = _WIRE_FIELDS[cls] = tuple(
            (f.name, "from" if f.name == "sender" else f.name, f.name in _OMIT_IF_FALSE)
            for f in fields(cls))
    return found


# ---- client to server


@dataclass(frozen=True)
class Hello(Event):
    TYPE: ClassVar[str] = "hello"
    versions: tuple[int, ...] = SUPPORTED_VERSIONS
    client: str = ""

    def __post_init__(self) -> None:
        _need(
            isinstance(self.versions, tuple)
            and 0 < len(self.versions) <= 16
            and all(type(v) is int and 0 < v < 1000 for v in self.versions),
            "hello.versions must be a list of 1 to 16 protocol version numbers.",
        )
        _need(isinstance(self.client, str) and len(self.client) <= 100,
              "hello.client must be a string of at most 100 characters.")


@dataclass(frozen=True)
class Join(Event):
    TYPE: ClassVar[str] = "join"
    pin: str
    name: str

    def __post_init__(self) -> None:
        _validated(lambda: rules.check_pin(self.pin, 1, PIN_MAX_DIGITS))
        object.__setattr__(self, "name", _validated(lambda: rules.normalize_name(self.name)))


@dataclass(frozen=True)
class Say(Event):
    TYPE: ClassVar[str] = "say"
    text: str
    action: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", _validated(lambda: rules.check_text(self.text)))
        _need(isinstance(self.action, bool), "say.action must be true or false.")


@dataclass(frozen=True)
class PrivateSay(Event):
    TYPE: ClassVar[str] = "msg"
    to: str
    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "to", _validated(lambda: rules.normalize_name(self.to)))
        object.__setattr__(self, "text", _validated(lambda: rules.check_text(self.text)))


@dataclass(frozen=True)
class Who(Event):
    TYPE: ClassVar[str] = "who"


@dataclass(frozen=True)
class Quit(Event):
    TYPE: ClassVar[str] = "quit"


# ---- both directions


@dataclass(frozen=True)
class Ping(Event):
    TYPE: ClassVar[str] = "ping"
    token: str = ""

    def __post_init__(self) -> None:
        _need(isinstance(self.token, str) and len(self.token) <= 64,
              "ping.token must be a string of at most 64 characters.")


@dataclass(frozen=True)
class Pong(Event):
    TYPE: ClassVar[str] = "pong"
    token: str = ""

    def __post_init__(self) -> None:
        _need(isinstance(self.token, str) and len(self.token) <= 64,
              "pong.token must be a string of at most 64 characters.")


# ---- client side only (plain-text mode)


@dataclass(frozen=True)
class TextLine(Event):
    """One line from a plain-text client (its mode has no typed requests)."""

    TYPE: ClassVar[str] = "text"
    text: str


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """The peer closed its side (end of file)."""

    TYPE: ClassVar[str] = "closed"


# ---- server to client


@dataclass(frozen=True)
class Greeting(Event):
    TYPE: ClassVar[str] = "greeting"
    version: int
    status: str
    text: str

    def line(self) -> str:
        return f"{GREETING_MAGIC}{self.version} {self.status} {self.text}"


@dataclass(frozen=True)
class Welcome(Event):
    TYPE: ClassVar[str] = "welcome"
    version: int
    server: str
    server_id: str
    name: str
    state: str
    pin_min: int = rules.DEFAULT_PIN_MIN
    pin_max: int = rules.DEFAULT_PIN_MAX
    max_line: int = DEFAULT_MAX_LINE
    rate: float = 0.0  # messages a second a member may send (sustained); 0: no limit
    burst: int = 0  # messages a member may send at once before the rate applies


@dataclass(frozen=True)
class Joined(Event):
    TYPE: ClassVar[str] = "joined"
    room: str
    name: str
    members: tuple[str, ...]
    state: str = "active"


@dataclass(frozen=True)
class Message(Event):
    TYPE: ClassVar[str] = "message"
    room: str
    seq: int
    ts: float
    sender: str
    text: str
    action: bool = False
    history: bool = False


@dataclass(frozen=True)
class Private(Event):
    TYPE: ClassVar[str] = "private"
    ts: float
    sender: str
    to: str
    text: str


@dataclass(frozen=True)
class Presence(Event):
    TYPE: ClassVar[str] = "presence"
    room: str
    ts: float
    name: str
    event: str  # "join" or "leave"
    reason: str = ""


@dataclass(frozen=True)
class Members(Event):
    TYPE: ClassVar[str] = "members"
    room: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class StateChanged(Event):
    TYPE: ClassVar[str] = "state"
    state: str
    ts: float
    text: str = ""


@dataclass(frozen=True)
class Notice(Event):
    TYPE: ClassVar[str] = "notice"
    ts: float
    text: str
    room: str | None = None


@dataclass(frozen=True)
class Error(Event):
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    ref: str = ""  # the type of the request that failed, when known


@dataclass(frozen=True)
class Bye(Event):
    TYPE: ClassVar[str] = "bye"
    reason: str
    message: str
    detail: str = ""  # the administrator's own words for a kick or a closed room


@dataclass(frozen=True)
class Unknown(Event):
    """A server event of a type this client does not know (newer server): ignore it."""

    TYPE: ClassVar[str] = "unknown"
    data: Mapping[str, Any] = field(default_factory=dict)


_new_object = object.__new__


def _checked_say(text: str, action: bool) -> Say:
    """``Say(text, action)`` for a text already through ``rules.check_text``: the frozen
    dataclass's ``__init__`` and ``__post_init__`` were 1.1 us of a room message's 6.4."""
    event = _new_object(Say)
    event.__dict__.update(text=text, action=action)
    return event


def room_message(room: str, seq: int, ts: float, sender: str, text: str,
                 action: bool = False) -> Message:
    """The same event as ``Message(room, seq, ts, sender, text, action)``, built in a
    third of the time (the daemon builds one per room message; ``Message`` checks
    nothing, so nothing is skipped)."""
    event = _new_object(Message)
    event.__dict__.update(room=room, seq=seq, ts=ts, sender=sender, text=text,
                          action=action, history=False)
    return event


ClientEvent = Union[Hello, Join, Say, PrivateSay, Who, Quit, Ping, Pong]
ServerEvent = Union[
    Greeting, Welcome, Joined, Message, Private, Presence, Members, StateChanged,
    Notice, Error, Bye, Ping, Pong, Unknown,
]


# --------------------------------------------------------------------------- encoding

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_json(event: Event) -> bytes:
    """One JSON line for ``event``."""
    if type(event) is Message:
        line = _message_json(event)
        if line is not None:
            return line
    # A lone surrogate (a peer's "\ud800" escape, echoed back in a pong) has no UTF-8
    # form; backslashreplace writes it as that same JSON escape, so the line stays valid.
    return (_dumps(event.to_dict()) + "\n").encode("utf-8", "backslashreplace")


_json_str = json.encoder.encode_basestring  # the encoder's own escaper (ensure_ascii=False)


def _message_json(m: Message) -> bytes | None:
    """A room message's line, byte for byte what the generic path writes, in a quarter
    of its time (the daemon writes one per message; JSONEncoder.encode builds a new C
    encoder on every call).  None for field types the generic path must handle."""
    if not (type(m.room) is str and type(m.seq) is int and type(m.ts) is float
            and math.isfinite(m.ts) and type(m.sender) is str and type(m.text) is str
            and type(m.action) is bool and type(m.history) is bool):
        return None
    return (f'{{"type":"message","room":{_json_str(m.room)},"seq":{m.seq!r},"ts":{m.ts!r},'
            f'"from":{_json_str(m.sender)},"text":{_json_str(m.text)}'
            + (',"action":true' if m.action else "") + (',"history":true' if m.history else "")
            + '}\n').encode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------- decoding


def _str(d: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if not isinstance(value, str):
        raise LocalProtocolError("bad_request", f"Field {key!r} must be a string.")
    return value


def _bool(d: Mapping[str, Any], key: str) -> bool:
    value = d.get(key, False)
    if not isinstance(value, bool):
        raise LocalProtocolError("bad_request", f"Field {key!r} must be true or false.")
    return value


def _versions(d: Mapping[str, Any]) -> tuple[int, ...]:
    value = d.get("versions")
    if not isinstance(value, list):
        raise LocalProtocolError(
            "bad_request", "hello needs 'versions', a list of protocol versions, e.g. [1]."
        )
    return tuple(value)


def _parse_say(d: Mapping[str, Any]) -> Say:
    text = d.get("text")
    action = d.get("action", False)
    if type(text) is str and type(action) is bool:  # the usual say: the same checks, fewer steps
        return _checked_say(rules.check_text(text), action)  # its error is the peer's
    return Say(_str(d, "text"), _bool(d, "action"))  # the wrong types, named by the checks


_CLIENT_PARSERS: dict[str, Callable[[Mapping[str, Any]], ClientEvent]] = {
    "hello": lambda d: Hello(_versions(d), _str(d, "client", "")),
    "join": lambda d: Join(_str(d, "pin"), _str(d, "name")),
    "say": _parse_say,
    "msg": lambda d: PrivateSay(_str(d, "to"), _str(d, "text")),
    "who": lambda d: Who(),
    "quit": lambda d: Quit(),
    "ping": lambda d: Ping(_str(d, "token", "")),
    "pong": lambda d: Pong(_str(d, "token", "")),
}


# json.loads's own C scanner, called directly: loads wraps it in two regular-expression
# scans for the whitespace around the value, 1.4 of its 1.7 us on a say line.
_scan_json: Callable[[str, int], tuple[Any, int]] = (
    json.JSONDecoder().scan_once)  # type: ignore[attr-defined]  # set in its __init__


def _load_object(line: str) -> dict[str, Any]:
    if line[:1] == "{":  # the usual line: an object, no whitespace around it
        try:
            obj, end = _scan_json(line, 0)
        except (StopIteration, ValueError, RecursionError):  # json.loads says what is wrong
            pass
        else:
            if end == len(line) and type(obj) is dict:
                return obj
    try:
        obj = json.loads(line)
    except RecursionError:
        raise RemoteProtocolError("bad_json", "The JSON is nested too deeply.") from None
    except ValueError as exc:
        raise RemoteProtocolError("bad_json", f"The line is not valid JSON ({exc}).") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("bad_request", "Each JSON line must be an object.")
    return obj


def parse_client_message(line: str) -> ClientEvent:
    """Decode one JSON line from a client into a request event."""
    obj = _load_object(line)
    kind = obj.get("type")
    parser = _CLIENT_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise RemoteProtocolError(
            "unknown_type",
            f"Unknown message type {str(kind)[:40]!r}; "
            f"known: {', '.join(sorted(_CLIENT_PARSERS))}.",
        )
    try:
        return parser(obj)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.code, exc.message) from None


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LocalProtocolError("bad_event", "Expected a list of strings.")
    return tuple(value)


# The JSON type each annotated field of a server event must have.
_FIELD_TYPES: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) in (int, float),
    "bool": lambda v: type(v) is bool,
    "str | None": lambda v: v is None or isinstance(v, str),
}

_SERVER_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (Welcome, Joined, Message, Private, Presence, Members, StateChanged,
                Notice, Error, Bye, Ping, Pong)
}


def parse_server_message(line: str) -> ServerEvent:
    """Decode one JSON line from the server into an event (unknown types pass as Unknown)."""
    obj = _load_object(line)
    kind = obj.get("type")
    cls = _SERVER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return Unknown(obj)
    kwargs: dict[str, Any] = {}
    try:
        for f in fields(cls):
            key = "from" if f.name == "sender" else f.name
            if key in obj:
                value = obj[key]
                if f.name == "members":
                    value = _tuple_of_str(value)
                elif not _FIELD_TYPES.get(str(f.type), lambda v: True)(value):
                    raise LocalProtocolError("bad_event", f"Field {key!r} has the wrong type.")
                kwargs[f.name] = value
        return cls(**kwargs)  # type: ignore[return-value]
    except (TypeError, LocalProtocolError) as exc:
        raise RemoteProtocolError("bad_event", f"Malformed {kind!r} event: {exc}") from None


def parse_greeting(line: str) -> Greeting:
    if not line.startswith(GREETING_MAGIC):
        raise RemoteProtocolError("not_lanchat", "The server did not greet as a lanchat server.")
    head, _, rest = line[len(GREETING_MAGIC):].partition(" ")
    status, _, text = rest.partition(" ")
    if not (head.isascii() and head.isdigit() and len(head) <= 6) or not status:
        raise RemoteProtocolError("not_lanchat", f"Malformed greeting line: {line[:80]!r}")
    return Greeting(int(head), status, text)


# --------------------------------------------------------------------------- framing


class LineReader:
    """Splits a byte stream into lines of at most ``max_line`` bytes (newline included).

    A longer line raises ``line_too_long`` once and is then skipped up to its newline,
    without being buffered: a 10 MB line costs no more memory than a short one.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._scan = 0  # bytes of _buf already known to hold no newline
        self._discarding = False
        self._eof = False
        self._closed_reported = False
        # Complete lines split off _buf in one step (last line first), not yet returned:
        # finding, copying and cutting one line at a time was most of the framing's cost.
        self._ready: list[bytes] = []

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            if data:
                raise LocalProtocolError("closed", "Data received after end of file.")
            return
        if not data:
            self._eof = True
            return
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) + sum(len(line) + 1 for line in self._ready)

    def next_line(self) -> bytes | None:
        """The next complete line without its line ending, or None if none is complete.

        At end of file a last unterminated line is returned as if it had a newline;
        then ``at_eof`` becomes true.
        """
        ready = self._ready
        if ready:
            line = ready.pop()
            if len(line) >= self.max_line:  # with its newline, longer than max_line
                raise RemoteProtocolError(
                    "line_too_long", f"A line may be at most {self.max_line} bytes."
                )
            return line[:-1] if line.endswith(b"\r") else line
        buf = self._buf
        while True:
            nl = buf.find(b"\n", self._scan)
            if nl < 0:
                if self._discarding:
                    buf.clear()
                    self._scan = 0
                    if self._eof:
                        self._discarding = False
                    return None
                if len(buf) >= self.max_line:
                    buf.clear()
                    self._scan = 0
                    self._discarding = not self._eof
                    raise RemoteProtocolError(
                        "line_too_long", f"A line may be at most {self.max_line} bytes."
                    )
                self._scan = len(buf)
                if self._eof and buf:
                    line = bytes(buf)
                    buf.clear()
                    self._scan = 0
                    return line.rstrip(b"\r")
                return None
            self._scan = 0
            if self._discarding:
                del buf[: nl + 1]
                self._discarding = False
                continue
            last = buf.rfind(b"\n")
            ready += bytes(buf[:last]).split(b"\n")
            del buf[: last + 1]
            ready.reverse()
            return self.next_line()

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buf and not self._ready


def _decode_utf8(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(
            "bad_utf8", f"The line is not valid UTF-8 (byte {exc.start})."
        ) from None


# --------------------------------------------------------------------------- codecs


class ServerCodec:
    """The server's side of one chat connection.

    ``mode`` is None until the first non-empty line, then "json" or "text".  In JSON
    mode ``next_event`` returns request events; in text mode it returns ``TextLine``
    for every non-empty line (the daemon's core knows what a line means at each step
    of the plain-text dialogue).
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._reader = LineReader(max_line)
        self.mode: str | None = None
        self._closed_sent = False

    @property
    def max_line(self) -> int:
        return self._reader.max_line

    @max_line.setter
    def max_line(self, value: int) -> None:
        self._reader.max_line = value

    @property
    def buffered(self) -> int:
        return self._reader.buffered

    def receive_data(self, data: bytes) -> None:
        self._reader.receive_data(data)

    def next_event(self) -> ClientEvent | TextLine | ConnectionClosed | None:
        while True:
            raw = self._reader.next_line()
            if raw is None:
                if self._reader.at_eof and not self._closed_sent:
                    self._closed_sent = True
                    return ConnectionClosed()
                return None
            line = _decode_utf8(raw)
            if not line.strip():
                continue
            if self.mode is None:
                self.mode = "json" if line.lstrip().startswith("{") else "text"
            if self.mode == "text":
                return TextLine(line.strip())
            return parse_client_message(line)

    def send(self, event: Event) -> bytes:
        if self.mode == "text":
            raise LocalProtocolError("wrong_mode", "Use lanchat.protocol.text for text mode.")
        return encode_json(event)


class ClientCodec:
    """The client's side of a chat connection (JSON mode).

    The first event is always the server's ``Greeting``; after that, server events.
    """

    def __init__(self, max_line: int = 1 << 20) -> None:
        self._reader = LineReader(max_line)
        self._greeted = False
        self._closed_sent = False

    def receive_data(self, data: bytes) -> None:
        self._reader.receive_data(data)

    def next_event(self) -> ServerEvent | ConnectionClosed | None:
        while True:
            raw = self._reader.next_line()
            if raw is None:
                if self._reader.at_eof and not self._closed_sent:
                    self._closed_sent = True
                    return ConnectionClosed()
                return None
            line = _decode_utf8(raw)
            if not line.strip():
                continue
            if not self._greeted:
                self._greeted = True
                return parse_greeting(line)
            return parse_server_message(line)

    def send(self, event: Event) -> bytes:
        return encode_json(event)

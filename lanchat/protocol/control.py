"""The control protocol (the Unix socket between lanchatctl and lanchatd), sans-I/O.

Theory of operation
-------------------
Framing is one JSON object per line, UTF-8, ended by ``\\n``, in both directions; a
line of the client may be at most ``MAX_REQUEST_BYTES`` long.  The client speaks
first.  Its first request must be ``hello``, which names the protocol versions it
speaks; the daemon answers with the version it picked, or with the error
``unsupported_version`` and closes.  That is the version check: nothing else is
served before it.  docs/protocol.md (section 16) is the reference for people writing
another client.

Every request carries an ``id`` (an integer the client picks) and a ``cmd``; its
arguments are the other keys of the same object::

    {"id": 2, "cmd": "kick", "room": "1234", "name": "bob", "reason": "spam"}

Every request gets exactly one reply with the same ``id``: ``{"id": 2, "ok": true,
"result": {...}}`` or ``{"id": 2, "ok": false, "error": {"code": 201, "name":
"unknown_user", "message": "..."}}``.  Error codes are numbered (``Code``); the number
is stable, the name is for people, the message is one sentence for the administrator.

One request streams: ``log`` with ``follow: true``.  Its reply (the backlog) is
followed by one line ``{"id": N, "entry": {...}}`` per new activity-log entry, until
the client sends ``cancel`` or closes, and the daemon ends it with ``{"id": N, "end":
REASON, "message": ...}``.  Replies to other requests may come between entries; the
``id`` tells them apart.

The codecs here never touch a socket.  As in lanchat.protocol.chat they have the three
verbs ``receive_data(bytes)`` (``b""`` is end of file), ``next_event()`` and ``send``.
Each request is a small frozen dataclass that validates itself, so a ``Kick`` with an
empty name or a 10 kB PIN cannot exist.  A peer's bad line raises ``ControlError``,
which carries the numbered code and the request's id when it could be read; the daemon
turns it into an error reply (``ServerConnection.error_reply``), and closes the
connection when the error is ``fatal``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import field, fields
from typing import Any, Callable, ClassVar, Union

from lanchat.protocol import rules
from lanchat.protocol.chat import PIN_MAX_DIGITS, LineReader
from lanchat.protocol.errors import N_, LocalProtocolError, RemoteProtocolError
from lanchat.protocol.record import Record, record
from lanchat.protocol.vocabulary import SERVER_STATES

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
#: The longest line a client may send, newline included.
MAX_REQUEST_BYTES = 65536
#: The longest line a client accepts from the daemon (a status of a very busy server).
MAX_REPLY_BYTES = 64 * 1024 * 1024
REASON_MAX_CHARS = 500
MAX_ID = 2**53  # ids stay exact in every JSON implementation
#: The server states set_state accepts: the chat protocol's (section 8).
STATES: tuple[str, ...] = SERVER_STATES


class Code(enum.IntEnum):
    """Numbered error codes.  ``code.name.lower()`` is the name sent on the wire.

    1xx: the request itself is wrong (the client's fault, or a version skew).
    2xx: the request is understood but the daemon refuses it.
    3xx: the daemon cannot serve the request right now.
    """

    BAD_REQUEST = 100          # not JSON, not an object, a missing or ill-typed field
    REQUEST_TOO_LARGE = 101    # a line longer than MAX_REQUEST_BYTES (fatal)
    UNKNOWN_COMMAND = 102      # cmd names no command this daemon knows
    HELLO_REQUIRED = 103       # a request before a successful hello
    UNSUPPORTED_VERSION = 104  # no version in common (fatal)
    TOO_MANY_ERRORS = 105      # the connection made too many bad requests (fatal)
    IDLE_TIMEOUT = 106         # no request for too long (fatal)
    UNKNOWN_ROOM = 200         # no room has that PIN
    UNKNOWN_USER = 201         # nobody has that name in the room
    BAD_VALUE = 202            # a value the daemon does not accept (empty text...)
    RELOAD_FAILED = 203        # the new configuration was refused; the old one stays
    WATCH_ONLY = 204           # this connection may watch (status, rooms, users, log) only
    BUSY = 300                 # too many control connections at once (fatal)
    SHUTTING_DOWN = 301        # the daemon is stopping (fatal)
    INTERNAL_ERROR = 302       # a bug in the daemon; the request may not have been done

    @property
    def wire_name(self) -> str:
        return self.name.lower()

    @classmethod
    def from_wire(cls, number: object) -> Code | None:
        if type(number) is int:
            try:
                return cls(number)
            except ValueError:
                return None
        return None


#: Codes after which the daemon closes the connection.
FATAL_CODES = frozenset({Code.REQUEST_TOO_LARGE, Code.UNSUPPORTED_VERSION,
                         Code.TOO_MANY_ERRORS, Code.IDLE_TIMEOUT, Code.BUSY,
                         Code.SHUTTING_DOWN})


class ControlError(RemoteProtocolError):
    """The peer sent something we cannot accept.

    ``number`` is the ``Code``; ``request_id`` the id of the request when it could be
    read (else None); ``fatal`` says the connection cannot go on.
    """

    def __init__(self, number: Code, message: str, request_id: int | None = None) -> None:
        super().__init__(number.wire_name, message)
        self.number = number
        self.request_id = request_id

    @property
    def fatal(self) -> bool:
        return self.number in FATAL_CODES


def _need(cond: bool, what: str, **values: object) -> None:
    """``what``: a sentence marked with N_, filled in with ``values`` (translatable)."""
    if not cond:
        raise LocalProtocolError("bad_request", what, **values)


def _validated(check: Callable[[], Any]) -> Any:
    """Run a rule check while constructing a request: bad values are local errors."""
    try:
        return check()
    except RemoteProtocolError as exc:
        raise LocalProtocolError(exc.code, exc.template, **exc.values) from None


def _check_pin(pin: object) -> None:
    _need(isinstance(pin, str) and 0 < len(pin) <= PIN_MAX_DIGITS and pin.isascii()
          and pin.isdigit(),
          N_("A room PIN is 1 to {max} digits (0-9), not {value!r}."), max=PIN_MAX_DIGITS,
          value=str(pin)[:20])


def _check_reason(reason: object) -> str:
    _need(isinstance(reason, str), N_("The reason must be a string."))
    assert isinstance(reason, str)
    if not reason.strip():
        return ""
    _need(len(reason) <= REASON_MAX_CHARS,
          N_("A reason is at most {max} characters."), max=REASON_MAX_CHARS)
    text = _validated(lambda: rules.check_text(reason))
    assert isinstance(text, str)
    return text.strip()


# --------------------------------------------------------------------------- requests


@record
class Request(Record):
    """A request from the client.  Subclasses name their ``CMD`` and validate fields."""

    CMD: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cmd": self.CMD}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == f.default:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@record
class Hello(Request):
    """The version check; must be the first request of a connection."""

    CMD: ClassVar[str] = "hello"
    versions: tuple[int, ...] = SUPPORTED_VERSIONS
    client: str = ""

    def __post_init__(self) -> None:
        _need(isinstance(self.versions, tuple) and 0 < len(self.versions) <= 16
              and all(type(v) is int and 0 < v < 1000 for v in self.versions),
              "hello.versions must be a list of 1 to 16 protocol version numbers, e.g. [1].")
        _need(isinstance(self.client, str) and len(self.client) <= 100,
              "hello.client must be a string of at most 100 characters.")

    def to_dict(self) -> dict[str, Any]:
        out = {"cmd": self.CMD, "versions": list(self.versions)}
        if self.client:
            out["client"] = self.client
        return out


@record
class Status(Request):
    """Everything the dashboard shows."""

    CMD: ClassVar[str] = "status"


@record
class Rooms(Request):
    CMD: ClassVar[str] = "rooms"


@record
class Users(Request):
    """The members of one room, or of every room when ``room`` is None."""

    CMD: ClassVar[str] = "users"
    room: str | None = None

    def __post_init__(self) -> None:
        if self.room is not None:
            _check_pin(self.room)


@record
class SetState(Request):
    CMD: ClassVar[str] = "set_state"
    state: str = ""

    def __post_init__(self) -> None:
        _need(self.state in STATES, N_("The state must be one of {states}, not {value!r}."),
              states=", ".join(STATES), value=self.state)


@record
class CloseRoom(Request):
    CMD: ClassVar[str] = "close"
    room: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        _check_pin(self.room)
        object.__setattr__(self, "reason", _check_reason(self.reason))


@record
class Kick(Request):
    CMD: ClassVar[str] = "kick"
    room: str = ""
    name: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        _check_pin(self.room)
        object.__setattr__(self, "name", _validated(lambda: rules.normalize_name(self.name)))
        object.__setattr__(self, "reason", _check_reason(self.reason))


@record
class Announce(Request):
    """A notice to every room, or to one room."""

    CMD: ClassVar[str] = "announce"
    text: str = ""
    room: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", _validated(lambda: rules.check_text(self.text)))
        if self.room is not None:
            _check_pin(self.room)


@record
class Log(Request):
    """The last ``n`` activity-log entries (all kept, when None); ``follow`` streams."""

    CMD: ClassVar[str] = "log"
    n: int | None = None
    follow: bool = False

    def __post_init__(self) -> None:
        _need(self.n is None or (type(self.n) is int and 0 <= self.n <= 10**9),
              N_("log.n must be a whole number of entries (0 or more)."))
        _need(isinstance(self.follow, bool), N_("log.follow must be true or false."))


@record
class Reload(Request):
    """Re-read the configuration file, as SIGHUP does."""

    CMD: ClassVar[str] = "reload"


@record
class Cancel(Request):
    """End this connection's stream (log follow)."""

    CMD: ClassVar[str] = "cancel"


REQUEST_TYPES: dict[str, type[Request]] = {
    cls.CMD: cls for cls in (Hello, Status, Rooms, Users, SetState, CloseRoom, Kick,
                             Announce, Log, Reload, Cancel)
}
COMMANDS: tuple[str, ...] = tuple(REQUEST_TYPES)


# --------------------------------------------------------------------------- replies


@record
class Ok(Record):
    id: int | None
    result: Mapping[str, Any] = field(default_factory=dict)


@record
class Failure(Record):
    id: int | None
    code: Code
    message: str

    def __post_init__(self) -> None:
        _need(isinstance(self.code, Code), "Failure.code must be a Code.")


@record
class StreamItem(Record):
    """One activity-log entry of a running stream."""

    id: int | None
    entry: Mapping[str, Any]


@record
class StreamEnd(Record):
    """The daemon ended the stream (``reason``: cancelled or shutdown)."""

    id: int | None
    reason: str
    message: str = ""


@record
class Incoming(Record):
    """A request received by the daemon, with the id to answer it with."""

    id: int
    request: Request


@record
class ConnectionClosed(Record):
    """The peer closed its side (end of file)."""


Reply = Union[Ok, Failure, StreamItem, StreamEnd]


# --------------------------------------------------------------------------- encoding

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def dumps(obj: Any) -> bytes:
    """One JSON line.  UTF-8, except that a lone surrogate is sent as its \\u escape."""
    try:
        return (_compact(obj) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (_ascii(obj) + "\n").encode("ascii")


def encode_request(request_id: int, request: Request) -> bytes:
    return dumps({"id": request_id, **request.to_dict()})


def reply_dict(reply: Reply) -> dict[str, Any]:
    if isinstance(reply, Ok):
        return {"id": reply.id, "ok": True, "result": dict(reply.result)}
    if isinstance(reply, Failure):
        return {"id": reply.id, "ok": False, "error": {
            "code": int(reply.code), "name": reply.code.wire_name, "message": reply.message}}
    if isinstance(reply, StreamItem):
        return {"id": reply.id, "entry": dict(reply.entry)}
    return {"id": reply.id, "end": reply.reason, "message": reply.message}


def encode_reply(reply: Reply) -> bytes:
    return dumps(reply_dict(reply))


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """An entry's JSON, encoded once and shared by every follower (see stream_item)."""
    return dumps(dict(entry))[:-1]


def stream_item(request_id: int, encoded_entry: bytes) -> bytes:
    """The line ``{"id": N, "entry": ...}`` around an entry from ``encode_entry``."""
    return b'{"id":%d,"entry":%s}\n' % (request_id, encoded_entry)


# --------------------------------------------------------------------------- decoding


def _load_object(line: bytes, error: Callable[[str], ControlError]) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"The line is not valid UTF-8 (byte {exc.start}).") from None
    try:
        obj = json.loads(text)
    except RecursionError:
        raise error("The JSON is nested too deeply.") from None
    except ValueError as exc:
        raise error(f"The line is not valid JSON ({exc}).") from None
    if not isinstance(obj, dict):
        raise error("Each line must be a JSON object.")
    return obj


def _request_id(obj: Mapping[str, Any]) -> int | None:
    value = obj.get("id")
    if type(value) is int and 0 <= value <= MAX_ID:
        return value
    return None


# The wire type of each request field, named as it is said in an error message.
_FIELD_TYPES: dict[str, tuple[str, Callable[[Any], bool], Callable[[Any], Any]]] = {
    "versions": ("a list of numbers", lambda v: isinstance(v, list), tuple),
    "client": ("a string", lambda v: isinstance(v, str), str),
    "room": ("a string of digits", lambda v: isinstance(v, str), str),
    "name": ("a string", lambda v: isinstance(v, str), str),
    "reason": ("a string", lambda v: isinstance(v, str), str),
    "text": ("a string", lambda v: isinstance(v, str), str),
    "state": ("a string", lambda v: isinstance(v, str), str),
    "n": ("a whole number", lambda v: type(v) is int, int),
    "follow": ("true or false", lambda v: isinstance(v, bool), bool),
}
# Fields a request cannot do without.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "hello": ("versions",), "set_state": ("state",), "close": ("room",),
    "kick": ("room", "name"), "announce": ("text",),
}


def parse_request(line: bytes) -> Incoming:
    """Decode one request line (without its newline).  Raises ControlError."""
    obj = _load_object(line, lambda m: ControlError(Code.BAD_REQUEST, m))
    request_id = _request_id(obj)

    def bad(message: str, code: Code = Code.BAD_REQUEST) -> ControlError:
        return ControlError(code, message, request_id)

    if request_id is None:
        raise bad(f"Each request needs an 'id', a whole number from 0 to {MAX_ID}.")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise bad("Each request needs a 'cmd' naming the command, e.g. \"status\".")
    cls = REQUEST_TYPES.get(cmd)
    if cls is None:
        raise bad(f"Unknown command {cmd[:40]!r}; this daemon knows: "
                  f"{', '.join(COMMANDS)}.", Code.UNKNOWN_COMMAND)
    names = {f.name for f in fields(cls)}
    unknown = sorted(k for k in obj if k not in names and k not in ("id", "cmd"))
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise bad(f"{cmd} does not take {shown}"
                  + (f"; it takes {', '.join(sorted(names))}." if names else "; it takes "
                     "no arguments."))
    missing = [k for k in _REQUIRED.get(cmd, ()) if k not in obj]
    if missing:
        raise bad(f"{cmd} needs {', '.join(repr(k) for k in missing)}.")
    values: dict[str, Any] = {}
    for name in names:
        if name not in obj or obj[name] is None:
            continue
        what, accepts, convert = _FIELD_TYPES[name]
        if not accepts(obj[name]):
            raise bad(f"{cmd}.{name} must be {what}.")
        values[name] = convert(obj[name])
    try:
        request = cls(**values)
    except LocalProtocolError as exc:
        raise bad(exc.message, Code.BAD_VALUE if cmd != "hello" else Code.BAD_REQUEST) \
            from None
    return Incoming(request_id, request)


def parse_reply(line: bytes) -> Reply:
    """Decode one line from the daemon.  Raises ControlError (code BAD_REQUEST)."""

    def bad(message: str) -> ControlError:
        return ControlError(Code.BAD_REQUEST, message)

    obj = _load_object(line, bad)
    request_id = _request_id(obj)
    if "id" not in obj or (obj["id"] is not None and request_id is None):
        raise bad("A reply has no valid 'id'.")
    if "entry" in obj:
        if not isinstance(obj["entry"], dict):
            raise bad("A stream entry must be an object.")
        return StreamItem(request_id, obj["entry"])
    if "end" in obj:
        return StreamEnd(request_id, str(obj["end"]), str(obj.get("message", "")))
    ok = obj.get("ok")
    if ok is True:
        result = obj.get("result", {})
        if not isinstance(result, dict):
            raise bad("A reply's 'result' must be an object.")
        return Ok(request_id, result)
    if ok is False:
        error = obj.get("error")
        if not isinstance(error, dict):
            raise bad("A failed reply needs an 'error' object.")
        code = Code.from_wire(error.get("code"))
        message = error.get("message")
        if code is None or not isinstance(message, str):
            raise bad(f"Unknown error {error.get('code')!r} ({error.get('name')!r}): "
                      f"{str(message)[:200]}")
        return Failure(request_id, code, message)
    raise bad("A reply needs 'ok', 'entry' or 'end'.")


# --------------------------------------------------------------------------- codecs


class ServerConnection:
    """The daemon's side of one control connection.

    ``next_event`` returns ``Incoming`` requests, ``ConnectionClosed`` once after end of
    file, or None when a whole line has not arrived yet; it raises ``ControlError`` for
    a bad line (the connection goes on unless the error is fatal).  Until a hello
    succeeds every other request is refused with ``hello_required``; after it, another
    hello is refused with ``bad_request``.
    """

    def __init__(self, max_request: int = MAX_REQUEST_BYTES) -> None:
        self._reader = LineReader(max_request)
        self.version: int | None = None  # set by a successful hello
        self.broken = False  # a fatal error happened: nothing more is read
        self._closed_sent = False

    @property
    def buffered(self) -> int:
        return self._reader.buffered

    def receive_data(self, data: bytes) -> None:
        if not self.broken:
            self._reader.receive_data(data)

    def next_event(self) -> Incoming | ConnectionClosed | None:
        while not self.broken:
            try:
                raw = self._reader.next_line()
            except RemoteProtocolError:
                self.broken = True
                raise ControlError(
                    Code.REQUEST_TOO_LARGE,
                    f"A request may be at most {self._reader.max_line} bytes; closing.") \
                    from None
            if raw is None:
                if self._reader.at_eof and not self._closed_sent:
                    self._closed_sent = True
                    return ConnectionClosed()
                return None
            if not raw.strip():
                continue
            incoming = parse_request(raw)
            request = incoming.request
            if isinstance(request, Hello) and self.version is not None:
                # The version was agreed once; a second hello cannot change it, and
                # answering it as the first would suggest it did.
                raise ControlError(
                    Code.BAD_REQUEST,
                    f"hello was already answered on this connection (protocol version "
                    f"{self.version}); send it once, as the first request.", incoming.id)
            if isinstance(request, Hello):
                common = set(request.versions) & set(SUPPORTED_VERSIONS)
                if not common:
                    self.broken = True
                    raise ControlError(
                        Code.UNSUPPORTED_VERSION,
                        "No control protocol version in common: this daemon speaks "
                        f"{', '.join(map(str, SUPPORTED_VERSIONS))}, the client "
                        f"{', '.join(map(str, request.versions))}.", incoming.id)
                self.version = max(common)
            elif self.version is None:
                raise ControlError(
                    Code.HELLO_REQUIRED,
                    'The first request must be hello, e.g. {"id":1,"cmd":"hello",'
                    '"versions":[1]}.', incoming.id)
            return incoming
        return None

    def send(self, reply: Reply) -> bytes:
        return encode_reply(reply)

    @staticmethod
    def error_reply(exc: ControlError) -> bytes:
        return encode_reply(Failure(exc.request_id, exc.number, exc.message))


class ClientConnection:
    """The client's side of one control connection.

    ``send(request)`` returns the id it gave the request and the bytes to write; the
    first request must be a ``Hello``.  ``next_event`` returns replies, stream items
    and stream ends, ``ConnectionClosed`` after end of file, or None.
    """

    def __init__(self, max_reply: int = MAX_REPLY_BYTES) -> None:
        self._reader = LineReader(max_reply)
        self._next_id = 1
        self._hello_sent = False
        self._closed_sent = False

    def send(self, request: Request) -> tuple[int, bytes]:
        if not self._hello_sent and not isinstance(request, Hello):
            raise LocalProtocolError("hello_required", "Send hello before anything else.")
        self._hello_sent = True
        request_id = self._next_id
        self._next_id += 1
        return request_id, encode_request(request_id, request)

    def receive_data(self, data: bytes) -> None:
        self._reader.receive_data(data)

    def next_event(self) -> Reply | ConnectionClosed | None:
        while True:
            try:
                raw = self._reader.next_line()
            except RemoteProtocolError:
                raise ControlError(Code.BAD_REQUEST,
                                   f"A reply longer than {self._reader.max_line} bytes.") \
                    from None
            if raw is None:
                if self._reader.at_eof and not self._closed_sent:
                    self._closed_sent = True
                    return ConnectionClosed()
                return None
            if raw.strip():
                return parse_reply(raw)

"""The chat protocol (TCP, port 5000), sans-I/O.

Theory of operation
-------------------
Framing is one UTF-8 line per message, ended by ``\\n`` (``\\r\\n``, ``\\r\\0`` and a
lone ``\\r`` end a line too, for telnet).  On connect the server sends one greeting line::

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

import enum
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import field, fields
from typing import Any, Callable, ClassVar, TypeVar, Union

from lanchat.protocol import rules, vocabulary
from lanchat.protocol.errors import N_, LocalProtocolError, RemoteProtocolError
from lanchat.protocol.record import Record, record
from lanchat.protocol.telnet import edit_line
from lanchat.protocol.vocabulary import ErrorCode, LocalCode

# The protocol's numbers and words live in lanchat.protocol.vocabulary; these names
# are kept for the modules that import them from here.
DEFAULT_PORT = vocabulary.CHAT_PORT
DEFAULT_TLS_PORT = vocabulary.TLS_PORT
PROTOCOL_VERSION = vocabulary.PROTOCOL_VERSION
SUPPORTED_VERSIONS = vocabulary.SUPPORTED_VERSIONS
DEFAULT_MAX_LINE = vocabulary.DEFAULT_MAX_LINE
PIN_MAX_DIGITS = vocabulary.PIN_MAX_DIGITS
GREETING_STATUSES = vocabulary.GREETING_STATUSES
STATES = vocabulary.SERVER_STATES
GREETING_MAGIC = "LANCHAT/"
LINE_TOO_LONG_TEXT = N_("A line may be at most {max} bytes.")


def _validated(check: Callable[[], Any]) -> Any:
    """Run a rule check while constructing an event: our own bad values are local errors."""
    try:
        return check()
    except RemoteProtocolError as exc:
        raise LocalProtocolError(exc.code, exc.template, **exc.values) from None


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise LocalProtocolError(ErrorCode.BAD_REQUEST, what)


# --------------------------------------------------------------------------- events


@record
class Event(Record):
    """The base of every event (a frozen ``@record``: ``lanchat.protocol.record``)."""

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
                            "detail", "lang"})
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


@record
class Hello(Event):
    TYPE: ClassVar[str] = "hello"
    versions: tuple[int, ...] = SUPPORTED_VERSIONS
    client: str = ""
    #: The language the person behind the client reads ("nb", "nb-NO"); optional.
    lang: str = ""

    def __post_init__(self) -> None:
        _need(
            isinstance(self.versions, tuple)
            and 0 < len(self.versions) <= 16
            and all(type(v) is int and 0 < v < 1000 for v in self.versions),
            N_("hello.versions must be a list of 1 to 16 protocol version numbers."),
        )
        _need(isinstance(self.client, str) and len(self.client) <= 100,
              N_("hello.client must be a string of at most 100 characters."))
        _need(isinstance(self.lang, str) and len(self.lang) <= vocabulary.LANGUAGE_MAX_CHARS,
              N_("hello.lang must be a language code of at most 35 characters."))


@record
class Join(Event):
    TYPE: ClassVar[str] = "join"
    pin: str
    name: str

    def __post_init__(self) -> None:
        _validated(lambda: rules.check_pin(self.pin, 1, PIN_MAX_DIGITS))
        object.__setattr__(self, "name", _validated(lambda: rules.normalize_name(self.name)))


@record
class Say(Event):
    TYPE: ClassVar[str] = "say"
    text: str
    action: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", _validated(lambda: rules.check_text(self.text)))
        _need(isinstance(self.action, bool), N_("say.action must be true or false."))


@record
class PrivateSay(Event):
    TYPE: ClassVar[str] = "msg"
    to: str
    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "to", _validated(lambda: rules.normalize_name(self.to)))
        object.__setattr__(self, "text", _validated(lambda: rules.check_text(self.text)))


@record
class Who(Event):
    TYPE: ClassVar[str] = "who"


@record
class Quit(Event):
    TYPE: ClassVar[str] = "quit"


# ---- both directions


@record
class Ping(Event):
    TYPE: ClassVar[str] = "ping"
    token: str = ""

    def __post_init__(self) -> None:
        _need(isinstance(self.token, str) and len(self.token) <= 64,
              N_("ping.token must be a string of at most 64 characters."))


@record
class Pong(Event):
    TYPE: ClassVar[str] = "pong"
    token: str = ""

    def __post_init__(self) -> None:
        _need(isinstance(self.token, str) and len(self.token) <= 64,
              N_("pong.token must be a string of at most 64 characters."))


# ---- client side only (plain-text mode)


@record
class TextLine(Event):
    """One line from a plain-text client (its mode has no typed requests)."""

    TYPE: ClassVar[str] = "text"
    text: str


@record
class ConnectionClosed(Event):
    """The peer closed its side (end of file)."""

    TYPE: ClassVar[str] = "closed"


# ---- server to client


@record
class Greeting(Event):
    TYPE: ClassVar[str] = "greeting"
    version: int
    status: str
    text: str

    def line(self) -> str:
        return f"{GREETING_MAGIC}{self.version} {self.status} {self.text}"


@record
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


@record
class Joined(Event):
    TYPE: ClassVar[str] = "joined"
    room: str
    name: str
    members: tuple[str, ...]
    state: str = "active"


@record
class Message(Event):
    TYPE: ClassVar[str] = "message"
    room: str
    seq: int
    ts: float
    sender: str
    text: str
    action: bool = False
    history: bool = False


@record
class Private(Event):
    TYPE: ClassVar[str] = "private"
    ts: float
    sender: str
    to: str
    text: str


@record
class Presence(Event):
    TYPE: ClassVar[str] = "presence"
    room: str
    ts: float
    name: str
    event: str  # "join" or "leave"
    reason: str = ""


@record
class Members(Event):
    TYPE: ClassVar[str] = "members"
    room: str
    members: tuple[str, ...]


@record
class StateChanged(Event):
    TYPE: ClassVar[str] = "state"
    state: str
    ts: float
    text: str = ""


@record
class Notice(Event):
    TYPE: ClassVar[str] = "notice"
    ts: float
    text: str
    room: str | None = None


@record
class Error(Event):
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    ref: str = ""  # the type of the request that failed, when known


@record
class Bye(Event):
    TYPE: ClassVar[str] = "bye"
    reason: str
    message: str
    detail: str = ""  # the administrator's own words for a kick or a closed room


@record
class Unknown(Event):
    """A server event of a type this client does not know (newer server): ignore it."""

    TYPE: ClassVar[str] = "unknown"
    data: Mapping[str, Any] = field(default_factory=dict)


_new_object = object.__new__
E = TypeVar("E", bound=Event)


def trusted(cls: type[E], **fields: Any) -> E:
    """``cls(**fields)`` for values already checked, as h11 builds the events of what it
    parsed: without the frozen dataclass's ``__init__`` and ``__post_init__`` (for a
    room message they were a fifth of the daemon's cost).  Every field must be given;
    nothing is checked, so only a parser or the daemon's core, which did the checks,
    may call it."""
    event = _new_object(cls)
    event.__dict__.update(fields)
    return event


ClientEvent = Union[Hello, Join, Say, PrivateSay, Who, Quit, Ping, Pong]
ServerEvent = Union[
    Greeting, Welcome, Joined, Message, Private, Presence, Members, StateChanged,
    Notice, Error, Bye, Ping, Pong, Unknown,
]


# --------------------------------------------------------------------------- encoding

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_json(event: Event) -> bytes:
    """One JSON line for ``event``: for fields of their declared types, the same bytes as
    ``json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))`` and a
    newline."""
    try:
        encoder = _ENCODERS[type(event)]
    except KeyError:
        encoder = _ENCODERS[type(event)] = _make_encoder(type(event))
    # A lone surrogate (a peer's "\ud800" escape, echoed back in a pong) has no UTF-8
    # form; backslashreplace writes it as that same JSON escape, so the line stays valid.
    return encoder(event).encode("utf-8", "backslashreplace")


_json_str = json.encoder.encode_basestring  # the encoder's own escaper (ensure_ascii=False)


def _json_value(value: Any) -> str:
    """One JSON value, as json.dumps writes it; the types events hold come first."""
    kind = type(value)
    if kind is str:
        return _json_str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if kind is tuple:
        try:  # a member list: strings only, escaped by one C call each
            return "[" + ",".join(map(_json_str, value)) + "]"
        except TypeError:  # a value that is not a string: each by its own rules
            return "[" + ",".join(map(_json_value, value)) + "]"
    return _dumps(value)  # NaN, a mapping, a str subclass: json's own rules


def _make_encoder(cls: type) -> Callable[[Any], str]:
    """An encoder for one event class, written out field by field once (as dataclasses
    writes ``__init__``): JSONEncoder.encode builds a new C encoder on every call, and
    going through ``to_dict`` and a dict was three quarters of a room message's
    encoding.  Strings, the most common value, are escaped without a call to
    ``_json_value``; a field left out when false or None is left out the same way."""
    head = '{"type":' + json.dumps(getattr(cls, "TYPE", ""))
    types = {f.name: str(f.type) for f in fields(cls)}
    lines = ["def encode(e):", "    out = ''"]
    run = [head.replace("{", "{{")]  # an f-string of the fields always written
    for name, key, omit_if_false in _wire_fields(cls):
        prefix = "," + json.dumps(key) + ":"
        # The declared type's common case inline, anything else (a NaN, a subclass, a
        # wrong type a caller passed) through _json_value.
        inline = {"str": "s(x) if (x := e.{0}).__class__ is str",
                  "int": "r(x) if (x := e.{0}).__class__ is int",
                  "float": "fr(x) if (x := e.{0}).__class__ is float and fin(x)",
                  "bool": "T if (x := e.{0}) is True else F if x is False",
                  }.get(types[name], "").format(name)
        if not omit_if_false and inline:  # a field of these types is never None
            run.append(f"{prefix}{{({inline} else v(x))}}")
            continue
        if run:
            lines.append(f"    out += f{''.join(run)!r}")
            run = []
        part = f"({inline} else v(x))" if inline else f"v(e.{name})"
        test = f"e.{name}" if omit_if_false else f"e.{name} is not None"
        lines += [f"    if {test}:", f"        out += {prefix!r} + {part}"]
    run.append("}}\n")
    lines.append(f"    return out + f{''.join(run)!r}")
    source = "\n".join(lines) + "\n"
    namespace: dict[str, Any] = {"s": _json_str, "v": _json_value, "r": int.__repr__,
                                 "fr": float.__repr__, "fin": math.isfinite,
                                 "T": "true", "F": "false"}
    exec(source, namespace)  # the source is built above from the class's own fields
    encoder: Callable[[Any], str] = namespace["encode"]
    return encoder


_ENCODERS: dict[type, Callable[[Any], str]] = {}


def message_lines(room: str, ts: float, sender: str) -> Callable[[int, Sequence[Say]], bytes]:
    """``encode(seq, says)``: the JSON lines of the room messages a run of ``says`` from
    one member becomes, numbered from ``seq``, that is ``b"".join(encode_json(Message(
    room, seq + i, ts, sender, say.text, say.action)) for i, say in enumerate(says))``.
    The messages of one read share the room, the time and the sender: what they share
    is formatted once, by the class's own encoder (a sample message, cut where seq and
    text go), so the bytes are the same by construction; per message only seq and text
    are written, and the run is encoded to UTF-8 in one call (a room message's
    encoding was a third of the daemon's cost per message, most of it the shared
    fields)."""
    encoder = _ENCODERS.get(Message) or _ENCODERS.setdefault(Message, _make_encoder(Message))

    def sample(action: bool) -> str:
        return encoder(trusted(Message, room=room, seq=0, ts=ts, sender=sender, text="",
                               action=action, history=False))

    plain, acted = sample(False), sample(True)
    head, cut, rest = plain.partition(',"seq":0,')  # no string holds an unescaped quote
    text_key = '"text":""'
    if not cut or not rest.endswith(text_key + "}\n") or text_key not in acted:
        def encode_each(seq: int, says: Sequence[Say]) -> bytes:  # fields reordered
            return b"".join(encode_json(trusted(
                Message, room=room, seq=seq + i, ts=ts, sender=sender, text=say.text,
                action=say.action, history=False)) for i, say in enumerate(says))
        return encode_each
    head += ',"seq":'
    mid = "," + rest[: -len('""}\n')]
    tails = ("}\n", acted[acted.index(text_key) + len(text_key):])
    escape, value = _json_str, _json_value

    def encode(seq: int, says: Sequence[Say]) -> bytes:
        return "".join([
            f"{head}{seq + i}{mid}"
            f"{escape(text) if (text := say.text).__class__ is str else value(text)}"
            f"{tails[say.action is True]}"
            for i, say in enumerate(says)]).encode("utf-8", "backslashreplace")

    return encode


# --------------------------------------------------------------------------- decoding


def _str(d: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if not isinstance(value, str):
        raise LocalProtocolError(ErrorCode.BAD_REQUEST, N_("Field {key!r} must be a string."),
                                 key=key)
    return value


def _bool(d: Mapping[str, Any], key: str) -> bool:
    value = d.get(key, False)
    if not isinstance(value, bool):
        raise LocalProtocolError(ErrorCode.BAD_REQUEST,
                                 N_("Field {key!r} must be true or false."), key=key)
    return value


def _versions(d: Mapping[str, Any]) -> tuple[int, ...]:
    value = d.get("versions")
    if not isinstance(value, list):
        raise LocalProtocolError(
            ErrorCode.BAD_REQUEST,
            N_("hello needs 'versions', a list of protocol versions, e.g. [1].")
        )
    return tuple(value)


def _parse_say(d: Mapping[str, Any]) -> Say:
    text = d.get("text")
    action = d.get("action", False)
    if type(text) is str and type(action) is bool:  # Say's own checks, done here
        # What trusted() does, without its call and keywords: a say line's event.
        say = _new_object(Say)
        fields = say.__dict__
        fields["text"] = rules.check_text(text)
        fields["action"] = action
        return say
    return Say(_str(d, "text"), _bool(d, "action"))  # the wrong types, named by the checks


_CLIENT_PARSERS: dict[str, Callable[[Mapping[str, Any]], ClientEvent]] = {
    "hello": lambda d: Hello(_versions(d), _str(d, "client", ""), _str(d, "lang", "")),
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


def _too_deep() -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.BAD_JSON, N_("The JSON is nested too deeply."))


def _load_object(line: str) -> dict[str, Any]:
    if line[:1] == "{":  # the usual line: an object, no whitespace around it
        try:
            obj, end = _scan_json(line, 0)
        except RecursionError:
            # Not scanned again by json.loads: each scan of a line nested a thousand
            # deep costs about 100 us, and such a line is refused either way.
            raise _too_deep() from None
        except (StopIteration, ValueError):  # json.loads says what is wrong
            pass
        else:
            if end == len(line) and type(obj) is dict:
                return obj
    try:
        obj = json.loads(line)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise RemoteProtocolError(ErrorCode.BAD_JSON,
                                  N_("The line is not valid JSON ({detail})."),
                                  detail=str(exc)) from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(ErrorCode.BAD_REQUEST,
                                  N_("Each JSON line must be an object."))
    return obj


def parse_client_message(line: str) -> ClientEvent:
    """Decode one JSON line from a client into a request event."""
    obj = _load_object(line)
    kind = obj.get("type")
    parser = _CLIENT_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise RemoteProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            N_("Unknown message type {kind!r}; known: {known}."),
            kind=str(kind)[:40], known=", ".join(sorted(_CLIENT_PARSERS)),
        )
    try:
        return parser(obj)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.code, exc.template, **exc.values) from None


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LocalProtocolError(LocalCode.BAD_EVENT, "Expected a list of strings.")
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
                    raise LocalProtocolError(LocalCode.BAD_EVENT,
                                             f"Field {key!r} has the wrong type.")
                kwargs[f.name] = value
        return cls(**kwargs)  # type: ignore[return-value]
    except (TypeError, LocalProtocolError) as exc:
        raise RemoteProtocolError(LocalCode.BAD_EVENT, f"Malformed {kind!r} event: {exc}") from None


def parse_greeting(line: str) -> Greeting:
    if not line.startswith(GREETING_MAGIC):
        raise RemoteProtocolError(LocalCode.NOT_LANCHAT,
                                  "The server did not greet as a lanchat server.")
    head, _, rest = line[len(GREETING_MAGIC):].partition(" ")
    status, _, text = rest.partition(" ")
    if not (head.isascii() and head.isdigit() and len(head) <= 6) or not status:
        raise RemoteProtocolError(LocalCode.NOT_LANCHAT, f"Malformed greeting line: {line[:80]!r}")
    return Greeting(int(head), status, text)


# --------------------------------------------------------------------------- framing


#: A ``LineReader``'s list of complete lines while it has none (shared: empty).
NO_LINES: tuple[()] = ()


class LineReader:
    """Splits a byte stream into lines of at most ``max_line`` bytes (line end included).

    A line ends at LF; a CR just before it is dropped.  With ``any_line_end`` (what a
    chat server reads from people: docs/protocol.md section 2), CR NUL and a lone CR end
    a line too, each one line end (never an empty line in between): ``nc`` sends LF,
    telnet CR LF, a character-mode telnet CR NUL or a lone CR.  A line ending in a CR
    counts it and one more byte toward ``max_line``, as CR LF always did.  A CR at the
    end of what was received ends its line at once (a person waits for the answer); an
    LF or NUL arriving next belongs to it and is dropped, so the result is the same
    wherever the stream was cut.  Without it (the control socket, the server's lines
    to a client), a CR elsewhere is part of the line, as it always was.

    A longer line raises ``line_too_long`` once and is then skipped up to its line end,
    without being buffered: a 10 MB line costs no more memory than a short one.
    """

    # One per connection: without a __dict__ an idle connection's reader is 100 bytes
    # smaller, and its buffer and list of lines exist only while they hold something
    # (112 bytes more for every idle connection otherwise).
    __slots__ = ("_any_line_end", "_buf", "_cr", "_discarding", "_eof", "_ready", "_scan",
                 "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, *, any_line_end: bool = False) -> None:
        self.max_line = max_line
        self._any_line_end = any_line_end
        self._buf: bytearray | None = None  # a partial line (or more), else None
        self._scan = 0  # bytes of _buf already known to hold no newline
        self._discarding = False
        self._eof = False
        self._cr = False  # the last byte received was a CR: an LF or NUL next is its own
        # Complete lines split off _buf in one step (last line first), not yet returned:
        # finding, copying and cutting one line at a time was most of the framing's cost.
        self._ready: list[bytes] | tuple[()] = NO_LINES

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            if data:
                raise LocalProtocolError(LocalCode.CLOSED, "Data received after end of file.")
            return
        if not data:
            self._eof = True
            return
        # (an int's "in" is a memchr: six times faster than b"\r" in data)
        if self._any_line_end and (self._cr or 0x0D in data):
            data = self._line_ends(data)
        if self._buf is None:
            self._buf = bytearray(data)
        else:
            self._buf += data

    def _line_ends(self, data: bytes) -> bytes:
        """``data`` with every line end that has a CR as CR LF (what the splitter knows)."""
        if self._cr and data[:1] in (b"\n", b"\0"):  # the rest of a line end already taken
            data = data[1:]
        self._cr = data.endswith(b"\r")
        if data.count(b"\r") == data.count(b"\r\n"):  # telnet's usual CR LF: nothing to do
            return data
        return _LONE_CR.sub(b"\r\n", data.replace(b"\r\0", b"\r\n"))

    @property
    def buffered(self) -> int:
        return len(self._buf or b"") + sum(len(line) + 1 for line in self._ready)

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
                    ErrorCode.LINE_TOO_LONG, LINE_TOO_LONG_TEXT, max=self.max_line
                )
            return line[:-1] if line.endswith(b"\r") else line
        buf = self._buf
        if buf is None:
            self._ready = NO_LINES  # the list the calls before emptied
            if self._eof:
                self._discarding = False
            return None
        while True:
            nl = buf.find(b"\n", self._scan)
            if nl < 0:
                self._ready = NO_LINES
                if self._discarding:
                    self._buf = None
                    self._scan = 0
                    if self._eof:
                        self._discarding = False
                    return None
                if len(buf) >= self.max_line:
                    self._buf = None
                    self._scan = 0
                    self._discarding = not self._eof
                    raise RemoteProtocolError(
                        ErrorCode.LINE_TOO_LONG, LINE_TOO_LONG_TEXT, max=self.max_line
                    )
                if buf and not self._eof:
                    self._scan = len(buf)  # a partial line: kept for the next bytes
                    return None
                self._buf = None
                self._scan = 0
                return bytes(buf).rstrip(b"\r") if buf else None
            self._scan = 0
            if self._discarding:
                del buf[: nl + 1]
                self._discarding = False
                continue
            last = buf.rfind(b"\n")
            lines = bytes(buf[:last]).split(b"\n")
            del buf[: last + 1]
            lines.reverse()
            self._ready = lines
            return self.next_line()

    def next_lines(self, limit: int) -> list[bytes | InputMark]:
        """Up to ``limit`` complete lines, each as ``next_line`` returns it, with
        ``LINE_TOO_LONG`` in place of a line it refuses; fewer when no more are complete.

        The lines already split off the buffer are handed over in bulk when none of
        them is too long or ends in a CR (a program's lines); otherwise, and to split
        the buffer, one at a time by ``next_line``.  Per line, that was a third of what
        framing cost."""
        out: list[bytes | InputMark] = []
        while len(out) < limit:
            ready = self._ready
            if ready:
                take = ready[len(ready) - min(len(ready), limit - len(out)):]
                if max(map(len, take)) < self.max_line and 0x0D not in b"".join(take):
                    del ready[len(ready) - len(take):]
                    take.reverse()
                    out += take
                    continue
                count = len(take)
            else:
                count = 1
            for _ in range(count):
                try:
                    line: bytes | InputMark | None = self.next_line()
                except RemoteProtocolError:  # the only one it raises: line_too_long
                    line = LINE_TOO_LONG
                if line is None:
                    return out
                out.append(line)
        return out

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buf and not self._ready


_LONE_CR = re.compile(rb"\r(?!\n)")


def _decode_utf8(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_utf8(exc) from None


def _bad_utf8(exc: UnicodeDecodeError) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.BAD_UTF8,
                               N_("The line is not valid UTF-8 (byte {byte})."), byte=exc.start)


class InputMark(enum.Enum):
    """What a transport hands the daemon's core besides a line (lanchatd/transport.py)."""

    LINE_TOO_LONG = "line_too_long"  # a line past max_line was dropped, up to its end
    END_OF_INPUT = "end_of_input"  # the peer closed its side; nothing follows


LINE_TOO_LONG = InputMark.LINE_TOO_LONG
END_OF_INPUT = InputMark.END_OF_INPUT


# --------------------------------------------------------------------------- codecs


class LineDecoder:
    """The server's reading of one chat connection's lines (the daemon's entry: its
    transports split the stream into lines, lanchatd/transport.py).

    ``mode`` is None until the first non-empty line, then "json" or "text".  In JSON
    mode a line is a request event; in text mode every non-empty line is a
    ``TextLine`` (the daemon's core knows what a line means at each step of the
    plain-text dialogue).
    """

    __slots__ = ("mode",)

    def __init__(self) -> None:
        self.mode: str | None = None

    def line_event(self, raw: bytes) -> ClientEvent | TextLine | None:
        """The event of one line (without its line ending); None for a blank line.
        Bad input raises ``RemoteProtocolError``."""
        try:  # (_decode_utf8, inline: this runs for every line a member sends)
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad_utf8(exc) from None
        if self.mode == "json":  # a program's every line after its first
            return parse_client_message(line) if line and not line.isspace() else None
        is_text = self.mode == "text" or (
            self.mode is None and not line.lstrip().startswith("{"))
        if is_text:  # a person's line: apply the corrections their terminal sent
            line = edit_line(line)
        if not line.strip():
            return None
        if self.mode is None:
            self.mode = "text" if is_text else "json"
        if self.mode == "text":
            return TextLine(line.strip())
        return parse_client_message(line)


class ServerCodec(LineDecoder):
    """The server's side of one chat connection, from bytes: a ``LineReader`` and the
    ``LineDecoder``, with h11's verbs (``receive_data``, ``next_event``, ``send``)."""

    __slots__ = ("_closed_sent", "_reader")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        super().__init__()
        self._reader = LineReader(max_line, any_line_end=True)
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
            event = self.line_event(raw)
            if event is not None:
                return event

    def send(self, event: Event) -> bytes:
        if self.mode == "text":
            raise LocalProtocolError(LocalCode.WRONG_MODE,
                                     "Use lanchat.protocol.text for text mode.")
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

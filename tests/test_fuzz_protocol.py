"""Property tests of every decoder in lanchat.protocol, and of the daemon's core fed bytes.

Chat (ServerCodec, ClientCodec, LineReader, greetings), plain-text commands, the Telnet
filter of plain-text mode, discovery probes and announces, and control-socket requests
and replies.

For any bytes, cut at any points, a decoder returns events or raises a
``RemoteProtocolError`` (a typed error with a code), never another exception; what it
returns does not depend on where the stream was cut; and what it keeps buffered stays
below its line limit.  Encoding an event and decoding the bytes gives the event back.

A coverage-guided run of the same decoders (atheris) lives in tests/fuzz/, outside the
default suite.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import fields
from typing import Any, Callable

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lanchat_testing import PlainOwner

from lanchat import i18n
from lanchat.protocol import chat, control, discovery, rules, telnet, text
from lanchat.protocol.errors import RemoteProtocolError
from lanchatd import states
from lanchatd.config import Config
from lanchatd.core import ChatCore
from lanchatd.transport import LineTransport

# The default suite runs a quick pass; LANCHAT_FUZZ_EXAMPLES=5000 runs a long one.
EXAMPLES = int(os.environ.get("LANCHAT_FUZZ_EXAMPLES", "100"))
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=_HEALTH)

# ---------------------------------------------------------------------- strategies

REQUEST_TYPES = ["hello", "join", "say", "msg", "who", "quit", "ping", "pong"]
EVENT_TYPES = ["welcome", "joined", "message", "private", "presence", "members", "state",
               "notice", "error", "bye", "ping", "pong", "unknown"]
FIELD_NAMES = ["type", "versions", "client", "pin", "name", "text", "action", "to", "token",
               "version", "server", "server_id", "state", "room", "seq", "ts", "from",
               "members", "event", "reason", "code", "message", "ref", "history",
               "pin_min", "pin_max", "max_line", "rate", "burst", "nonce", "port",
               "server_version"]

# Any text, lone surrogates included: JSON's \\ud800 escapes decode to them.
any_char = st.characters(exclude_categories=())
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats() | st.text(any_char, max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
# Objects shaped like requests and events, with fields of any JSON type.
json_objects = st.builds(
    lambda kind, extra: {**extra, "type": kind} if kind is not None else extra,
    st.sampled_from([*REQUEST_TYPES, *EVENT_TYPES, "discover", "announce"]) | json_values,
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=8),
)

names = st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
                min_size=1, max_size=rules.NAME_MAX_CHARS).filter(
    lambda s: _checks(rules.normalize_name, s) and rules.normalize_name(s) == s)
message_texts = st.text(min_size=1, max_size=200).filter(
    lambda s: _checks(rules.check_text, s))
pins = st.text(string.digits, min_size=1, max_size=chat.PIN_MAX_DIGITS)
tokens = st.text(any_char, max_size=64)
anytext = st.text(any_char, max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False)


def _checks(check: Callable[[Any], Any], value: Any) -> bool:
    try:
        check(value)
    except RemoteProtocolError:
        return False
    return True


client_events = st.one_of(
    st.builds(chat.Hello, st.lists(st.integers(1, 999), min_size=1, max_size=16).map(tuple),
              st.text(max_size=100)),
    st.builds(chat.Join, pins, names),
    st.builds(chat.Say, message_texts, st.booleans()),
    st.builds(chat.PrivateSay, names, message_texts),
    st.just(chat.Who()),
    st.just(chat.Quit()),
    st.builds(chat.Ping, tokens),
    st.builds(chat.Pong, tokens),
)
server_events = st.one_of(
    st.builds(chat.Welcome, st.integers(1, 999), anytext, anytext, anytext,
              st.sampled_from(chat.STATES), st.integers(0, 64), st.integers(0, 64),
              st.integers(1, 2**20), finite, st.integers(0, 1000)),
    st.builds(chat.Joined, anytext, anytext, st.lists(anytext).map(tuple),
              st.sampled_from(chat.STATES)),
    st.builds(chat.Message, anytext, st.integers(0, 2**53), finite, anytext, anytext,
              st.booleans(), st.booleans()),
    st.builds(chat.Private, finite, anytext, anytext, anytext),
    st.builds(chat.Presence, anytext, finite, anytext, st.sampled_from(["join", "leave"]),
              anytext),
    st.builds(chat.Members, anytext, st.lists(anytext).map(tuple)),
    st.builds(chat.StateChanged, st.sampled_from(chat.STATES), finite, anytext),
    st.builds(chat.Notice, finite, anytext, st.none() | anytext),
    st.builds(chat.Error, anytext, anytext, anytext),
    # A goodbye always names its reason (the daemon never sends an empty one).
    st.builds(chat.Bye, st.text(any_char, min_size=1), anytext),
    st.builds(chat.Ping, tokens),
    st.builds(chat.Pong, tokens),
)


def _json_bytes(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """JSON as a peer may send it: ASCII with \\u escapes, or raw (even invalid) UTF-8."""
    return st.one_of(
        values.map(lambda v: json.dumps(v).encode()),
        values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    )


# One line's worth of bytes, without its line ending: random bytes, JSON of any shape,
# real encoded events, deep nesting, plain-text commands.
line_bodies = st.one_of(
    st.binary(max_size=120),
    _json_bytes(json_objects),
    _json_bytes(json_values),
    client_events.map(lambda e: chat.encode_json(e)[:-1]),
    server_events.map(lambda e: chat.encode_json(e)[:-1]),
    st.integers(1, 3000).map(lambda n: b"{" + b'"a":[' * n),
    st.text(max_size=80).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"/who", b"/quit", b"/help", b"/me waves", b"/msg bob hi", b"//x",
                     b"/msg", b"/me", b"/nope", b"1234", b"DISCOVER_SERVER", b"\xff\xfe",
                     b"LANCHAT/1 ready hi", b"LANCHAT/x", b"\xc3", b"\r", b"/lang",
                     b"/lang nb"]),
).map(lambda b: b.replace(b"\n", b""))

# Every line end a client may send (issue 19: CR NUL and a lone CR from telnet too).
separators = st.sampled_from([b"\n", b"\r\n", b"\r\r\n", b"\n\n", b"\r\0", b"\r"])


@st.composite
def streams(draw: Any, first: bytes | None = None) -> bytes:
    """Lines joined by line endings; the last one may lack its ending."""
    bodies = draw(st.lists(line_bodies, max_size=10))
    if first is not None:
        bodies.insert(0, first)
    out = b"".join(body + draw(separators) for body in bodies)
    if draw(st.booleans()):
        out += draw(line_bodies)
    return out


@st.composite
def cuts(draw: Any, data: bytes) -> list[bytes]:
    """``data`` cut into chunks at arbitrary points."""
    points = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:]) if b > a]


# ---------------------------------------------------------------------- helpers


def drain(next_event: Callable[[], Any]) -> list[str]:
    """Every outcome the decoder has ready: events (by repr) and error codes."""
    out: list[str] = []
    for _ in range(100_000):
        try:
            event = next_event()
        except RemoteProtocolError as exc:
            assert exc.code and exc.message, exc
            out.append(f"error:{exc.code}")
            continue
        if event is None:
            return out
        out.append(repr(event))
    raise AssertionError("decoder never ran out of events")


def feed(codec: Any, chunks: list[bytes], limit: int) -> list[str]:
    """Feed chunks, draining after each; then end of file.  Checks the buffer bound."""
    out: list[str] = []
    for chunk in chunks:
        codec.receive_data(chunk)
        out += drain(codec.next_event)
        # The codecs' line reader: what a decoder keeps between two reads.
        assert codec._reader.buffered < limit, "a decoder kept a line past its limit"
    codec.receive_data(b"")
    out += drain(codec.next_event)
    assert out and out[-1] == "ConnectionClosed()", out[-3:]
    assert out.count("ConnectionClosed()") == 1
    assert codec.next_event() is None
    return out


# ---------------------------------------------------------------------- framing


@FUZZ
@given(st.data(), st.integers(2, 300))
def test_line_reader_gives_the_same_lines_however_the_stream_is_cut(
        data: st.DataObject, max_line: int) -> None:
    stream = data.draw(streams())
    whole = chat.LineReader(max_line)
    cut = chat.LineReader(max_line)

    def lines(reader: chat.LineReader, chunks: list[bytes]) -> list[Any]:
        out: list[Any] = []
        for chunk in [*chunks, b""]:
            reader.receive_data(chunk)
            out += drain(reader.next_line)
            assert reader.buffered < max_line
        return out

    expected = lines(whole, [stream])
    assert lines(cut, data.draw(cuts(stream))) == expected
    assert whole.at_eof and cut.at_eof
    # What was kept is what a person would call the lines: short ones whole, without
    # their line ending, and one line_too_long error for each line past the limit.
    for item in expected:
        if isinstance(item, bytes):
            assert b"\n" not in item and len(item) < max_line


@FUZZ
@given(st.data(), st.integers(2, 300), st.booleans())
def test_line_reader_gives_in_bulk_what_it_gives_line_by_line(
        data: st.DataObject, max_line: int, any_line_end: bool) -> None:
    # next_lines hands over lines already split off in bulk (docs/performance.md): the
    # same lines, in the same order, with line_too_long where next_line raises it.
    chunks = data.draw(cuts(data.draw(streams())))
    limits = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=5))
    one = chat.LineReader(max_line, any_line_end=any_line_end)
    bulk = chat.LineReader(max_line, any_line_end=any_line_end)
    expected: list[Any] = []
    got: list[Any] = []
    for i, chunk in enumerate([*chunks, b""]):
        one.receive_data(chunk)
        expected += drain(one.next_line)
        bulk.receive_data(chunk)
        while True:
            lines = bulk.next_lines(limits[i % len(limits)])
            assert len(lines) <= limits[i % len(limits)]
            got += ["error:line_too_long" if line is chat.LINE_TOO_LONG else repr(line)
                    for line in lines]
            if not lines:
                break
        assert got == expected
    assert one.at_eof and bulk.at_eof


def test_line_reader_skips_a_ten_megabyte_line_without_keeping_it() -> None:
    reader = chat.LineReader(4096)
    errors = 0
    chunk = b"x" * 65536
    for _ in range(160):  # 10 MB, no newline, fed as the loop would (64 KiB reads)
        reader.receive_data(chunk)
        try:
            assert reader.next_line() is None
        except RemoteProtocolError as exc:
            assert exc.code == "line_too_long"
            errors += 1
        assert reader.buffered < 4096
    reader.receive_data(b"tail of the long line\nnext\n")
    assert reader.next_line() == b"next"
    assert errors == 1


# ---------------------------------------------------------------------- chat codecs


@FUZZ
@given(st.data(), st.integers(16, 4096))
def test_server_codec_any_bytes_any_cuts(data: st.DataObject, max_line: int) -> None:
    first = data.draw(st.sampled_from([None, b'{"type":"hello","versions":[1]}']))
    stream = data.draw(streams(first))
    expected = feed(chat.ServerCodec(max_line), [stream], max_line)
    assert feed(chat.ServerCodec(max_line), data.draw(cuts(stream)), max_line) == expected


@FUZZ
@given(st.data())
def test_client_codec_any_bytes_any_cuts(data: st.DataObject) -> None:
    first = data.draw(st.sampled_from([None, b"LANCHAT/1 ready Welcome"]))
    stream = data.draw(streams(first))
    limit = 1 << 20
    expected = feed(chat.ClientCodec(), [stream], limit)
    assert feed(chat.ClientCodec(), data.draw(cuts(stream)), limit) == expected


@FUZZ
@given(st.lists(client_events, min_size=1, max_size=8), st.data())
def test_client_events_encode_then_decode_to_themselves(
        events: list[chat.Event], data: st.DataObject) -> None:
    codec = chat.ServerCodec(1 << 20)
    stream = chat.encode_json(chat.Hello()) + b"".join(chat.encode_json(e) for e in events)
    decoded = []
    for chunk in data.draw(cuts(stream)):
        codec.receive_data(chunk)
        while (event := codec.next_event()) is not None:
            decoded.append(event)
    assert codec.mode == "json"
    assert decoded == [chat.Hello(), *events]


@FUZZ
@given(st.lists(server_events, min_size=1, max_size=8), st.data())
def test_server_events_encode_then_decode_to_themselves(
        events: list[chat.Event], data: st.DataObject) -> None:
    greeting = chat.Greeting(1, "ready", "Welcome to lab (lanchatd 0.1.0). Enter the room PIN:")
    stream = text.line(greeting.line()) + b"".join(chat.encode_json(e) for e in events)
    codec = chat.ClientCodec()
    decoded = []
    for chunk in data.draw(cuts(stream)):
        codec.receive_data(chunk)
        while (event := codec.next_event()) is not None:
            decoded.append(event)
    assert decoded == [greeting, *events]


@FUZZ
@given(st.builds(chat.Message, anytext, st.integers(0, 2**53), st.floats(), anytext, anytext,
                 st.booleans(), st.booleans()))
def test_the_fast_message_encoder_writes_what_the_generic_one_does(
        message: chat.Message) -> None:
    generic = (chat._dumps(message.to_dict()) + "\n").encode("utf-8", "backslashreplace")
    assert chat.encode_json(message) == generic


@FUZZ
@given(json_objects)
def test_any_json_object_is_a_request_or_a_typed_error(obj: dict[str, Any]) -> None:
    line = json.dumps(obj)
    try:
        event = chat.parse_client_message(line)
    except RemoteProtocolError as exc:
        assert exc.code in ("bad_request", "unknown_type", "invalid_pin", "invalid_name",
                            "invalid_text", "bad_json"), exc
        return
    assert obj["type"] == event.TYPE
    assert chat.parse_client_message(chat.encode_json(event).decode()) == event


WIRE_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
    "str | None": (str, type(None)), "tuple[str, ...]": (tuple,),
}


@FUZZ
@given(json_objects, st.sampled_from(i18n.LANGUAGES))
def test_any_json_object_is_a_server_event_or_a_typed_error(obj: dict[str, Any],
                                                            lang: str) -> None:
    """What a hostile server sends is a well-typed event or refused; and it can be shown."""
    try:
        event = chat.parse_server_message(json.dumps(obj))
    except RemoteProtocolError as exc:
        assert exc.code in ("bad_event", "bad_request", "bad_json"), exc
        return
    assert isinstance(event, chat.Event)
    for f in fields(event):
        want = WIRE_TYPES.get(str(f.type))
        value = getattr(event, f.name)
        if want is not None:
            assert isinstance(value, want), (f.name, value)
            assert bool in want or not isinstance(value, bool), (f.name, value)
    text.format_event(event, i18n.gettext_for(lang))


@FUZZ
@given(st.text(max_size=200))
def test_greeting_lines_decode_or_are_refused(line: str) -> None:
    try:
        greeting = chat.parse_greeting(line)
    except RemoteProtocolError as exc:
        assert exc.code == "not_lanchat"
        return
    assert chat.parse_greeting(greeting.line()) == greeting


# ---------------------------------------------------------------------- text mode


@FUZZ
@given(st.text(max_size=300))
def test_any_typed_line_is_a_command_or_a_clear_refusal(line: str) -> None:
    try:
        command = text.parse_text_command(line)
    except text.UnknownCommand as unknown:
        assert unknown.command.startswith("/")
        assert len(unknown.command) <= rules.NAME_MAX_CHARS
        return
    except chat.LocalProtocolError as exc:  # the event refused its own values
        assert exc.code in ("invalid_text", "invalid_name", "bad_request"), exc
        return
    assert isinstance(command, (chat.Say, chat.PrivateSay, chat.Who, chat.Quit, text.Help,
                                text.Lang))


@FUZZ
@given(message_texts, names, st.sampled_from(["plain", "me", "msg", "slash"]))
def test_text_commands_round_trip(body: str, name: str, form: str) -> None:
    assume(not body.startswith("/"))
    if form == "plain":
        line, expected = body, chat.Say(body)
    elif form == "me":
        line, expected = f"/me {body}", chat.Say(body, action=True)
    elif form == "slash":
        line, expected = f"//{body}", chat.Say("/" + body)
    else:
        assume(" " not in name and body == body.strip())
        line, expected = f"/msg {name} {body}", chat.PrivateSay(name, body)
    assert text.parse_text_command(line) == expected


@FUZZ
@given(server_events, st.sampled_from(i18n.LANGUAGES))
def test_every_server_event_formats_without_raising(event: chat.Event, lang: str) -> None:
    """A client shows whatever a server sends, even a timestamp out of range."""
    data = text.format_event(event, i18n.gettext_for(lang))
    if data is not None:
        assert data.endswith(b"\n")
        data.decode("utf-8")


# ---------------------------------------------------------------------- discovery


@FUZZ
@given(st.one_of(st.binary(max_size=700), _json_bytes(json_objects), _json_bytes(json_values)))
def test_any_datagram_is_a_probe_or_a_typed_error(data: bytes) -> None:
    try:
        probe = discovery.parse_probe(data)
    except RemoteProtocolError as exc:
        assert exc.code in ("too_large", "bad_probe"), exc
        return
    if isinstance(probe, discovery.Probe):
        # The daemon answers it: the answer must encode and decode back.
        announce = discovery.Announce(probe.nonce, "id", "lab", 5000, "active", "0.1.0")
        assert discovery.parse_announce(discovery.encode_announce(announce)) == announce


@FUZZ
@given(st.one_of(st.binary(max_size=3000), _json_bytes(json_objects)))
def test_any_answer_is_an_announce_or_a_typed_error(data: bytes) -> None:
    try:
        discovery.parse_announce(data)
    except RemoteProtocolError as exc:
        assert exc.code in ("too_large", "bad_announce"), exc


@FUZZ
@given(st.text(min_size=1, max_size=discovery.MAX_NONCE))
def test_probe_encode_then_decode(nonce: str) -> None:
    datagram = discovery.encode_probe(nonce)
    assert len(datagram) <= discovery.MAX_DATAGRAM
    assert discovery.parse_probe(datagram) == discovery.Probe(nonce)


@FUZZ
@given(st.builds(discovery.Announce, st.text(max_size=discovery.MAX_NONCE),
                 st.text(min_size=1, max_size=64), st.text(max_size=64),
                 st.integers(1, 65535), st.sampled_from(chat.STATES), st.text(max_size=32)))
def test_announce_encode_then_decode(announce: discovery.Announce) -> None:
    assert discovery.parse_announce(discovery.encode_announce(announce)) == announce


# ---------------------------------------------------------------------- control socket

CONTROL_FIELDS = ["id", "cmd", "versions", "client", "room", "name", "reason", "text",
                  "state", "n", "follow", "ok", "result", "error", "entry", "end", "message",
                  "code"]
control_objects = st.builds(
    lambda cmd, extra: {**extra, "cmd": cmd} if cmd is not None else extra,
    st.sampled_from([*control.COMMANDS, "shutdown"]) | json_values,
    st.dictionaries(st.sampled_from(CONTROL_FIELDS), json_values | st.integers(-1, 2**60),
                    max_size=6),
)
control_lines = st.one_of(
    st.binary(max_size=120),
    _json_bytes(control_objects),
    st.sampled_from([b'{"id":1,"cmd":"hello","versions":[1]}', b'{"id":2,"cmd":"status"}',
                     b'{"id":3,"cmd":"hello","versions":[9]}', b'{"id":4}', b"{", b"[]"]),
).map(lambda b: b.replace(b"\n", b""))
pin_values = st.text(string.digits, min_size=1, max_size=chat.PIN_MAX_DIGITS)
reasons = st.text(min_size=1, max_size=control.REASON_MAX_CHARS).filter(
    lambda r: _checks(rules.check_text, r) and r == r.strip())
requests = st.one_of(
    st.builds(control.Hello, st.lists(st.integers(1, 999), min_size=1, max_size=16).map(tuple),
              st.text(max_size=100)),
    st.just(control.Status()), st.just(control.Rooms()), st.just(control.Reload()),
    st.just(control.Cancel()),
    st.builds(control.Users, st.none() | pin_values),
    st.builds(control.SetState, st.sampled_from(control.STATES)),
    st.builds(control.CloseRoom, pin_values, st.just("") | reasons),
    st.builds(control.Kick, pin_values, names, st.just("") | reasons),
    st.builds(control.Announce, message_texts, st.none() | pin_values),
    st.builds(control.Log, st.none() | st.integers(0, 10**9), st.booleans()),
)
ids = st.integers(0, control.MAX_ID)
json_no_nan = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | finite | anytext,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(anytext, inner, max_size=4),
    max_leaves=10,
)
replies = st.one_of(
    st.builds(control.Ok, st.none() | ids, st.dictionaries(anytext, json_no_nan, max_size=5)),
    st.builds(control.Failure, st.none() | ids, st.sampled_from(list(control.Code)), anytext),
    st.builds(control.StreamItem, st.none() | ids,
              st.dictionaries(anytext, json_no_nan, max_size=5)),
    st.builds(control.StreamEnd, st.none() | ids, anytext, anytext),
)


@st.composite
def control_streams(draw: Any, hello: bool) -> bytes:
    bodies = draw(st.lists(control_lines, max_size=10))
    if hello:
        bodies.insert(0, b'{"id":1,"cmd":"hello","versions":[1]}')
    out = b"".join(body + draw(separators) for body in bodies)
    if draw(st.booleans()):
        out += draw(control_lines)
    return out


def _control_outcomes(codec: Any, chunks: list[bytes], limit: int) -> list[str]:
    out: list[str] = []
    for chunk in [*chunks, b""]:
        codec.receive_data(chunk)
        for _ in range(100_000):
            try:
                event = codec.next_event()
            except control.ControlError as exc:
                assert isinstance(exc.number, control.Code) and exc.message
                out.append(f"error:{int(exc.number)}:{exc.request_id}")
                continue
            if event is None:
                break
            out.append(repr(event))
        # A broken connection (after a fatal error) takes no more bytes; it is closed.
        assert codec._reader.buffered < limit or getattr(codec, "broken", False)
    return out


@FUZZ
@given(st.data(), st.booleans(), st.sampled_from([64, 512, control.MAX_REQUEST_BYTES]))
def test_control_server_any_bytes_any_cuts(data: st.DataObject, hello: bool,
                                           limit: int) -> None:
    """Requests, numbered errors, and nothing more once a fatal error broke the line."""
    stream = data.draw(control_streams(hello))
    expected = _control_outcomes(control.ServerConnection(limit), [stream], limit)
    cut = _control_outcomes(control.ServerConnection(limit), data.draw(cuts(stream)), limit)
    assert cut == expected
    fatal = {f"error:{int(code)}" for code in control.FATAL_CODES}
    for i, item in enumerate(expected):
        if item.rsplit(":", 1)[0] in fatal:
            assert expected[i + 1:] == [], "the codec went on after a fatal error"


@FUZZ
@given(st.data())
def test_control_client_any_bytes_any_cuts(data: st.DataObject) -> None:
    stream = data.draw(control_streams(False))
    limit = control.MAX_REPLY_BYTES
    expected = _control_outcomes(control.ClientConnection(), [stream], limit)
    assert _control_outcomes(control.ClientConnection(), data.draw(cuts(stream)),
                             limit) == expected


@FUZZ
@given(ids, requests)
def test_control_requests_encode_then_decode(request_id: int,
                                             request: control.Request) -> None:
    line = control.encode_request(request_id, request)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert control.parse_request(line[:-1]) == control.Incoming(request_id, request)


@FUZZ
@given(replies)
def test_control_replies_encode_then_decode(reply: Any) -> None:
    line = control.encode_reply(reply)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert control.parse_reply(line[:-1]) == reply


# ---------------------------------------------------------------------- the daemon's core


TEXT_DIALOGUE = b"123456\nalice\n"
JSON_DIALOGUE = (b'{"type":"hello","versions":[1]}\n'
                 b'{"type":"join","pin":"123456","name":"alice"}\n')


@FUZZ
@given(st.data())
def test_the_core_answers_any_bytes_without_raising(data: st.DataObject) -> None:
    """Whatever a client sends, the core replies with UTF-8 lines and never raises."""
    config = Config(name="lab", max_line_bytes=data.draw(st.sampled_from([64, 4096])),
                    max_errors=1000, message_burst=1000)
    core = ChatCore(config, host_name="fuzzhost", server_id="fuzz", now=0.0)
    core.connect(1, ("127.0.0.1", 40000), 0.0)  # a witness in the same room
    core.receive(1, JSON_DIALOGUE.replace(b"alice", b"witness").splitlines(), 0.0)
    core.connect(2, ("127.0.0.1", 40001), 0.0)
    start = data.draw(st.sampled_from([None, TEXT_DIALOGUE, JSON_DIALOGUE]))
    stream = data.draw(streams(start))
    now = 0.0
    transport = LineTransport(PlainOwner(), config.max_line_bytes)
    for chunk in [*data.draw(cuts(stream)), b""]:
        now += 0.25
        transport.data_received(chunk)
        lines = transport.lines(1 << 30)
        for fx in (core.receive(2, lines, now), core.tick(now)):
            for _when, _event, entry in fx.log:  # activity entries the loop can write
                json.dumps(entry, default=str)
            for _targets, out in fx.sends:
                assert out.endswith(b"\n")
                out.decode("utf-8")
                for line in out.splitlines():
                    if line.startswith(b"{"):
                        json.loads(line)
        assert transport.buffered < config.max_line_bytes
    assert 2 not in core.conns  # end of file always ends the connection
    witness = core.conns[1]
    assert witness.state == states.JOINED and list(core.rooms) == ["123456"]


# ---------------------------------------------------------------------- Telnet

# Bytes rich in Telnet: commands of every kind, options, subnegotiations, 0xFF, text.
telnet_pieces = st.one_of(
    st.binary(max_size=20),
    st.builds(lambda verb, opt: bytes((telnet.IAC, verb, opt)),
              st.sampled_from([telnet.WILL, telnet.WONT, telnet.DO, telnet.DONT]),
              st.integers(0, 255)),
    st.integers(240, 255).map(lambda c: bytes((telnet.IAC, c))),
    st.builds(lambda opt, body, end: bytes((telnet.IAC, telnet.SB, opt)) + body + end,
              st.integers(0, 255), st.binary(max_size=40),
              st.sampled_from([bytes((telnet.IAC, telnet.SE)), b"", b"\xff"])),
    st.integers(1, 3000).map(lambda n: b"\xff\xfa\x18" + b"x" * n),
    st.sampled_from([b"\xff", b"\xff\xff", b"\r\0", b"\r", b"\x7f", b"\x08", b"\x15"]),
)


def _filtered(chunks: list[bytes]) -> tuple[bytes, bytes, telnet.TelnetFilter]:
    f = telnet.TelnetFilter()
    clean = answer = b""
    for chunk in chunks:
        c, a = f.receive(chunk)
        clean += c
        answer += a
        # Bounded state: a count below the cap, at most one refusal per (verb, option).
        assert f._skipped <= telnet.MAX_SUBNEGOTIATION
        assert f._refused is None or len(f._refused) <= 512
    return clean, answer, f


@FUZZ
@given(st.data())
def test_telnet_filter_any_bytes_cut_anywhere(data: Any) -> None:
    stream = b"".join(data.draw(st.lists(telnet_pieces, max_size=30)))
    clean, answer, _ = _filtered([stream])
    cut_clean, cut_answer, f = _filtered(data.draw(cuts(stream)))
    assert (cut_clean, cut_answer) == (clean, answer)
    # Answers are whole refusals only: IAC WONT x or IAC DONT x, never a request.
    assert len(answer) % 3 == 0
    for i in range(0, len(answer), 3):
        assert answer[i] == telnet.IAC and answer[i + 1] in (telnet.WONT, telnet.DONT)
    # No option loop: the same stream again is answered with timing marks at most
    # (unless the first ended inside a command, which the second then completes).
    if f._state == telnet._DATA:
        _c, again = f.receive(stream)
        assert set(again[i + 2] for i in range(0, len(again), 3)) <= {telnet.TIMING_MARK}
    # Nothing but Telnet is taken out: a stream without 0xFF passes unchanged.
    plain = stream.replace(b"\xff", b"")
    assert _filtered([plain])[:2] == (plain, b"")


@FUZZ
@given(st.data())
def test_telnet_answers_fed_back_never_start_a_loop(data: Any) -> None:
    """The server's answers are refusals; a peer that follows RFC 1143 answers a
    refusal with nothing, and the server answers the peer's own refusals with nothing."""
    stream = b"".join(data.draw(st.lists(telnet_pieces, max_size=30)))
    _clean, answer, f = _filtered([stream])
    peer = telnet.TelnetFilter()
    _peer_clean, peer_answer = peer.receive(answer)
    assert peer_answer == b""  # WONT and DONT need no answer
    if f._state == telnet._DATA:  # (a stream cut inside a command would go on with it)
        assert f.receive(answer) == (b"", b"")  # nor do they from the server's side


@FUZZ
@given(st.data())
def test_telnet_leaves_a_json_stream_alone(data: Any) -> None:
    stream = data.draw(streams(first=b'{"type":"hello","versions":[1]}')) + data.draw(
        st.binary(max_size=40))
    clean, answer, f = _filtered(data.draw(cuts(stream)))
    assert (clean, answer) == (stream, b"") and not f.spoke_telnet


@FUZZ
@given(st.data())
def test_telnet_then_codec_gives_the_same_events_however_cut(data: Any) -> None:
    """A person's whole input path: filter, line reader, editing, plain-text lines."""
    body = st.one_of(st.lists(telnet_pieces, max_size=4).map(b"".join), line_bodies)
    parts = data.draw(st.lists(st.tuples(body, separators), max_size=12))
    stream = b"".join(b + sep for b, sep in parts)

    def run(chunks: list[bytes]) -> list[str]:
        f = telnet.TelnetFilter()
        codec = chat.ServerCodec(256)
        out: list[str] = []
        for chunk in chunks:
            clean, _ = f.receive(chunk)
            if clean:
                codec.receive_data(clean)
                out += drain(codec.next_event)
        codec.receive_data(b"")
        return out + drain(codec.next_event)

    whole = run([stream])
    assert run(data.draw(cuts(stream))) == whole
    for item in whole:  # an edited line holds no editing key (JSON lines are not edited)
        if item.startswith("TextLine("):
            assert not any(key in item for key in ("\\x7f", "\\x08", "\\x15")), item

"""The control protocol codecs (lanchat.protocol.control), without sockets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanchat.protocol import control
from lanchat.protocol.control import (
    MAX_REQUEST_BYTES,
    Announce,
    Cancel,
    ClientConnection,
    CloseRoom,
    Code,
    ConnectionClosed,
    ControlError,
    Failure,
    Hello,
    Incoming,
    Kick,
    Log,
    Ok,
    Reload,
    Rooms,
    ServerConnection,
    SetState,
    Status,
    StreamEnd,
    StreamItem,
    Users,
    encode_entry,
    encode_reply,
    encode_request,
    parse_reply,
    parse_request,
    stream_item,
)
from lanchat.protocol.errors import LocalProtocolError

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

EVERY_REQUEST = [
    Hello((1,), "tests"), Status(), Rooms(), Users(), Users("1234"), SetState("standby"),
    CloseRoom("1234"), CloseRoom("1234", "closing time"), Kick("1234", "bob"),
    Kick("1234", "Bøb", "spam"), Announce("hello all"), Announce("hi", "5678"), Log(),
    Log(5), Log(0, True), Reload(), Cancel(),
]


def served(*lines: bytes) -> ServerConnection:
    """A server codec that has accepted a hello, then been fed ``lines``."""
    conn = ServerConnection()
    conn.receive_data(b'{"id":0,"cmd":"hello","versions":[1]}\n')
    assert isinstance(conn.next_event(), Incoming)
    for line in lines:
        conn.receive_data(line)
    return conn


def error_of(line: bytes) -> ControlError:
    conn = served(line)
    with pytest.raises(ControlError) as info:
        conn.next_event()
    return info.value


@pytest.mark.parametrize("request_", EVERY_REQUEST, ids=lambda r: type(r).__name__)
def test_every_request_survives_the_wire(request_: control.Request) -> None:
    line = encode_request(7, request_)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_request(line[:-1]) == Incoming(7, request_)


def test_requests_validate_themselves() -> None:
    with pytest.raises(LocalProtocolError, match="PIN"):
        Kick("12a4", "bob")
    with pytest.raises(LocalProtocolError, match="PIN"):
        Users("1" * 65)
    with pytest.raises(LocalProtocolError):
        Kick("1234", "")
    with pytest.raises(LocalProtocolError):
        Announce("   ")
    with pytest.raises(LocalProtocolError, match="state"):
        SetState("paused")
    with pytest.raises(LocalProtocolError, match="reason"):
        CloseRoom("1234", "x" * 501)
    with pytest.raises(LocalProtocolError):
        Log(-1)
    assert Kick("1234", "bob", "  ").reason == ""


def test_the_first_request_must_be_hello_and_the_version_is_checked() -> None:
    conn = ServerConnection()
    conn.receive_data(b'{"id":1,"cmd":"status"}\n')
    with pytest.raises(ControlError) as info:
        conn.next_event()
    assert info.value.number == Code.HELLO_REQUIRED and not info.value.fatal
    assert info.value.request_id == 1
    conn.receive_data(b'{"id":2,"cmd":"hello","versions":[1,7]}\n{"id":3,"cmd":"status"}\n')
    assert conn.next_event() == Incoming(2, Hello((1, 7)))
    assert conn.version == 1
    assert conn.next_event() == Incoming(3, Status())


def test_a_second_hello_is_refused_and_the_connection_goes_on() -> None:
    conn = served(b'{"id":1,"cmd":"hello","versions":[1]}\n{"id":2,"cmd":"status"}\n')
    with pytest.raises(ControlError) as info:
        conn.next_event()
    assert info.value.number == Code.BAD_REQUEST and not info.value.fatal
    assert info.value.request_id == 1
    assert info.value.message == ("hello was already answered on this connection (protocol "
                                  "version 1); send it once, as the first request.")
    assert conn.version == 1
    assert conn.next_event() == Incoming(2, Status())


def test_no_common_version_is_fatal() -> None:
    conn = ServerConnection()
    conn.receive_data(b'{"id":1,"cmd":"hello","versions":[2,3]}\n{"id":2,"cmd":"status"}\n')
    with pytest.raises(ControlError) as info:
        conn.next_event()
    assert info.value.number == Code.UNSUPPORTED_VERSION and info.value.fatal
    assert "speaks 1" in info.value.message
    assert conn.next_event() is None  # nothing more is read from a broken connection


@pytest.mark.parametrize(("line", "code", "words"), [
    (b"garbage", Code.BAD_REQUEST, "not valid JSON"),
    (b"\xff\xfe", Code.BAD_REQUEST, "UTF-8"),
    (b"[1, 2]", Code.BAD_REQUEST, "JSON object"),
    (b"[" * 60000, Code.BAD_REQUEST, "nested too deeply"),
    (b'{"cmd":"status"}', Code.BAD_REQUEST, "'id'"),
    (b'{"id":-1,"cmd":"status"}', Code.BAD_REQUEST, "'id'"),
    (b'{"id":1}', Code.BAD_REQUEST, "'cmd'"),
    (b'{"id":1,"cmd":"shutdown"}', Code.UNKNOWN_COMMAND, "knows: hello, status"),
    (b'{"id":1,"cmd":"kick","room":"1234"}', Code.BAD_REQUEST, "needs 'name'"),
    (b'{"id":1,"cmd":"kick","room":"1234","nmae":"bob"}', Code.BAD_REQUEST, "'nmae'"),
    (b'{"id":1,"cmd":"status","verbose":true}', Code.BAD_REQUEST, "no arguments"),
    (b'{"id":1,"cmd":"log","n":"5"}', Code.BAD_REQUEST, "log.n must be a whole number"),
    (b'{"id":1,"cmd":"log","follow":1}', Code.BAD_REQUEST, "true or false"),
    (b'{"id":1,"cmd":"kick","room":"12x4","name":"bob"}', Code.BAD_VALUE, "PIN"),
    (b'{"id":1,"cmd":"announce","text":""}', Code.BAD_VALUE, "empty"),
    (b'{"id":1,"cmd":"set_state","state":"paused"}', Code.BAD_VALUE, "active, standby"),
], ids=lambda value: value[:30].decode("ascii", "replace") if isinstance(value, bytes)
    else None)
def test_bad_requests_get_a_numbered_error_and_the_connection_goes_on(
        line: bytes, code: Code, words: str) -> None:
    conn = served(line + b"\n", b'{"id":9,"cmd":"rooms"}\n')
    with pytest.raises(ControlError) as info:
        conn.next_event()
    assert info.value.number == code and words in info.value.message
    assert not info.value.fatal
    assert conn.next_event() == Incoming(9, Rooms())
    reply = json.loads(ServerConnection.error_reply(info.value))
    assert reply["ok"] is False and reply["error"]["code"] == int(code)
    assert reply["error"]["name"] == code.name.lower()


def test_the_request_id_is_kept_in_the_error_when_it_could_be_read() -> None:
    assert error_of(b'{"id":41,"cmd":"nope"}\n').request_id == 41
    assert error_of(b"nope\n").request_id is None


def test_an_oversized_request_is_fatal_even_without_a_newline() -> None:
    conn = served(b"x" * MAX_REQUEST_BYTES)
    with pytest.raises(ControlError) as info:
        conn.next_event()
    assert info.value.number == Code.REQUEST_TOO_LARGE and info.value.fatal
    conn.receive_data(b'{"id":2,"cmd":"status"}\n')
    assert conn.next_event() is None


def test_a_request_just_under_the_limit_is_served() -> None:
    text = "a" * 1990
    line = b'{"id":1,"cmd":"announce","text":"%s"}' % text.encode()
    line += b" " * (MAX_REQUEST_BYTES - len(line) - 1) + b"\n"
    assert len(line) == MAX_REQUEST_BYTES
    assert served(line).next_event() == Incoming(1, Announce(text))


def test_bytes_may_arrive_one_at_a_time_and_eof_is_reported_once() -> None:
    conn = served()
    for byte in encode_request(5, Kick("1234", "bob", "spam")):
        assert conn.next_event() is None
        conn.receive_data(bytes([byte]))
    assert conn.next_event() == Incoming(5, Kick("1234", "bob", "spam"))
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert conn.next_event() is None


def test_blank_lines_are_ignored() -> None:
    assert served(b"\n  \r\n" + encode_request(3, Rooms())).next_event() == Incoming(3, Rooms())


def test_replies_survive_the_wire() -> None:
    replies = [
        Ok(1, {"state": "active", "rooms": []}),
        Failure(2, Code.UNKNOWN_ROOM, "There is no room with PIN 1234."),
        Failure(None, Code.IDLE_TIMEOUT, "Closing."),
        StreamItem(3, {"seq": 4, "ts": 1.5, "event": "join", "name": "Bøb"}),
        StreamEnd(3, "cancelled", "Stopped following the log."),
    ]
    for reply in replies:
        line = encode_reply(reply)
        assert line.endswith(b"\n")
        assert parse_reply(line[:-1]) == reply


def test_a_stream_item_is_built_around_an_entry_encoded_once() -> None:
    entry = {"seq": 12, "ts": 3.25, "event": "kick", "name": "Åse", "actor": "uid=0(root)"}
    encoded = encode_entry(entry)
    for request_id in (1, 99):
        line = stream_item(request_id, encoded)
        assert parse_reply(line[:-1]) == StreamItem(request_id, entry)


def test_a_lone_surrogate_is_escaped_rather_than_lost() -> None:
    line = encode_reply(Ok(1, {"name": "bad\udcff"}))
    assert line.isascii()
    assert json.loads(line)["result"]["name"] == "bad\udcff"


def test_the_client_says_hello_first_and_numbers_its_requests() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.send(Status())
    first, data = client.send(Hello())
    assert json.loads(data) == {"id": first, "cmd": "hello", "versions": [1]}
    second, data = client.send(Kick("1234", "bob"))
    assert second == first + 1
    assert json.loads(data) == {"id": second, "cmd": "kick", "room": "1234", "name": "bob"}


def test_the_client_reads_replies_in_pieces_and_refuses_garbage() -> None:
    client = ClientConnection()
    client.send(Hello())
    data = encode_reply(Ok(1, {"version": 1})) + encode_reply(StreamEnd(2, "shutdown"))
    client.receive_data(data[:5])
    assert client.next_event() is None
    client.receive_data(data[5:])
    assert client.next_event() == Ok(1, {"version": 1})
    assert client.next_event() == StreamEnd(2, "shutdown", "")
    client.receive_data(b"HTTP/1.0 400 Bad Request\n")
    with pytest.raises(ControlError, match="not valid JSON"):
        client.next_event()
    client.receive_data(b'{"id":1,"ok":false,"error":{"code":999,"message":"?"}}\n')
    with pytest.raises(ControlError, match="Unknown error 999"):
        client.next_event()
    client.receive_data(b"")
    assert isinstance(client.next_event(), ConnectionClosed)


def test_error_codes_are_stable_and_documented() -> None:
    # The numbers are the contract with every client ever written: never renumber.
    assert {code.name: int(code) for code in Code} == {
        "BAD_REQUEST": 100, "REQUEST_TOO_LARGE": 101, "UNKNOWN_COMMAND": 102,
        "HELLO_REQUIRED": 103, "UNSUPPORTED_VERSION": 104, "TOO_MANY_ERRORS": 105,
        "IDLE_TIMEOUT": 106, "UNKNOWN_ROOM": 200, "UNKNOWN_USER": 201, "BAD_VALUE": 202,
        "RELOAD_FAILED": 203, "WATCH_ONLY": 204, "BUSY": 300, "SHUTTING_DOWN": 301,
        "INTERNAL_ERROR": 302,
    }
    doc = DOC.read_text(encoding="utf-8")
    for code in Code:
        assert re.search(rf"\|\s*{int(code)}\s*\|\s*`{code.wire_name}`", doc), code
    for command in control.COMMANDS:
        assert f"`{command}`" in doc, command


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8))
def test_any_bytes_give_requests_or_control_errors_and_nothing_else(
        chunks: list[bytes]) -> None:
    conn = ServerConnection(max_request=512)
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        for _ in range(100):
            try:
                event = conn.next_event()
            except ControlError:
                continue
            if event is None or isinstance(event, ConnectionClosed):
                break
            assert isinstance(event, Incoming)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "cmd", "room", "name", "text", "n", "follow",
                                        "versions", "state", "reason", "client"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                                 st.lists(st.integers(), max_size=3)), max_size=6))
def test_any_json_object_gives_a_request_or_a_control_error(obj: dict[str, object]) -> None:
    try:
        incoming = parse_request(json.dumps(obj).encode())
    except ControlError as exc:
        assert isinstance(exc.number, Code)
        return
    assert isinstance(incoming, Incoming)

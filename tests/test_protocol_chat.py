"""The chat protocol's codecs, events and rules, with no socket (lanchat.protocol.chat, .rules).

Bytes go in with ``receive_data``, events come out of ``next_event``; what a client or
server would see on the wire is asserted byte for byte where it matters.
"""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from typing import Any, Union

import pytest

from lanchat.protocol import chat, rules
from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError

Codec = Union[chat.ServerCodec, chat.ClientCodec]


def drain(codec: Codec) -> list[Any]:
    """Every event the codec has ready, with each refused line as ('error', code)."""
    out: list[Any] = []
    while True:
        try:
            event = codec.next_event()
        except RemoteProtocolError as exc:
            out.append(("error", exc.code))
            continue
        if event is None:
            return out
        out.append(event)


def server_events(*chunks: bytes, max_line: int = chat.DEFAULT_MAX_LINE) -> list[Any]:
    """What a server codec makes of ``chunks`` received in turn (``b""`` is end of file)."""
    codec = chat.ServerCodec(max_line)
    out: list[Any] = []
    for chunk in chunks:
        codec.receive_data(chunk)
        out += drain(codec)
    return out


def request(line: str) -> chat.ClientEvent:
    return chat.parse_client_message(line)


def refused(line: str) -> str:
    """The error code a client's JSON line is refused with (it must be refused)."""
    with pytest.raises(RemoteProtocolError) as info:
        chat.parse_client_message(line)
    return info.value.code


# ============================================================================ framing

STREAM = (
    b'{"type":"hello","versions":[1]}\r\n'
    b"\n"
    b'{"type":"join","pin":"4711","name":"Zo\xc3\xab"}\n'
    b'{"type":"say","text":"h\xc3\xa9 \xf0\x9f\x99\x82"}\r\n'
    b'{"type":"who"}\n'
)
STREAM_EVENTS = [
    chat.Hello((1,)),
    chat.Join("4711", "Zoë"),
    chat.Say("hé 🙂"),
    chat.Who(),
]


def test_a_stream_decodes_to_its_requests() -> None:
    assert server_events(STREAM) == STREAM_EVENTS


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_the_stream_cut_at_any_byte_gives_the_same_requests(cut: int) -> None:
    pieces = [piece for piece in (STREAM[:cut], STREAM[cut:]) if piece]  # b"" would be EOF
    assert server_events(*pieces) == STREAM_EVENTS


def test_the_stream_fed_one_byte_at_a_time_gives_the_same_requests() -> None:
    chunks = [STREAM[i:i + 1] for i in range(len(STREAM))]
    assert server_events(*chunks) == STREAM_EVENTS


def test_only_a_carriage_return_before_the_newline_is_dropped() -> None:
    reader = chat.LineReader()
    reader.receive_data(b"a\r\nb\rc\n\r\n")
    assert [reader.next_line(), reader.next_line(), reader.next_line()] == [b"a", b"b\rc", b""]
    assert reader.next_line() is None


def test_end_of_file_delivers_a_last_unterminated_line_then_closed_once() -> None:
    codec = chat.ServerCodec()
    codec.receive_data(b'{"type":"hello","versions":[1]}\n{"type":"quit"}')
    assert drain(codec) == [chat.Hello((1,))]  # the last line is not complete yet
    codec.receive_data(b"")
    assert drain(codec) == [chat.Quit(), chat.ConnectionClosed()]
    assert codec.next_event() is None
    assert codec.next_event() is None


def test_end_of_file_on_an_empty_buffer_is_just_closed() -> None:
    assert server_events(b"") == [chat.ConnectionClosed()]


def test_data_after_end_of_file_is_our_own_mistake() -> None:
    reader = chat.LineReader()
    reader.receive_data(b"")
    reader.receive_data(b"")  # a second EOF is harmless
    with pytest.raises(LocalProtocolError) as info:
        reader.receive_data(b"late")
    assert info.value.code == "closed"


def test_a_line_of_exactly_max_line_bytes_newline_included_is_accepted() -> None:
    line = b'{"type":"say","text":"' + b"x" * 40 + b'"}\n'
    assert server_events(b'{"type":"hello","versions":[1]}\n', line,
                         max_line=len(line))[-1] == chat.Say("x" * 40)
    assert server_events(b'{"type":"hello","versions":[1]}\n', line,
                         max_line=len(line) - 1)[-1] == ("error", "line_too_long")


def test_the_carriage_return_counts_toward_max_line() -> None:
    reader = chat.LineReader(4)
    reader.receive_data(b"abc\n")
    assert reader.next_line() == b"abc"
    reader.receive_data(b"abc\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_line()
    assert info.value.code == "line_too_long"
    assert info.value.message == "A line may be at most 4 bytes."


def test_a_long_line_in_one_piece_is_refused_once_and_the_next_line_works() -> None:
    events = server_events(b'{"type":"hello","versions":[1]}\n'
                           + b"y" * 100 + b"\n" + b'{"type":"who"}\n', max_line=64)
    assert events == [chat.Hello((1,)), ("error", "line_too_long"), chat.Who()]


def test_a_long_line_arriving_in_pieces_is_refused_once_then_skipped_to_its_newline() -> None:
    codec = chat.ServerCodec(64)
    codec.receive_data(b'{"type":"hello","versions":[1]}\n')
    assert drain(codec) == [chat.Hello((1,))]
    codec.receive_data(b"z" * 70)  # no newline yet, but already too long
    assert drain(codec) == [("error", "line_too_long")]
    for _ in range(5):
        codec.receive_data(b"z" * 70)  # still the same line: skipped, no more errors
        assert drain(codec) == []
    codec.receive_data(b'zzz\n{"type":"who"}\n')
    assert drain(codec) == [chat.Who()]


def test_a_long_line_cut_by_end_of_file_is_refused_then_closed() -> None:
    events = server_events(b"w" * 100, b"", max_line=64)
    assert events == [("error", "line_too_long"), chat.ConnectionClosed()]


def test_a_ten_megabyte_line_without_newline_costs_bounded_memory() -> None:
    max_line = 4096
    codec = chat.ServerCodec(max_line)
    chunk = b"a" * 65536
    errors = []
    most_buffered = 0
    tracemalloc.start()
    try:
        for _ in range(160):  # 10 MiB
            codec.receive_data(chunk)
            most_buffered = max(most_buffered, codec.buffered)
            errors += drain(codec)
            most_buffered = max(most_buffered, codec.buffered)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert errors == [("error", "line_too_long")]
    assert most_buffered <= max_line + len(chunk)
    assert peak < 1_000_000, f"peak {peak} bytes while skipping a 10 MiB line"
    codec.receive_data(b'a\n{"type":"hello","versions":[1]}\n')
    assert drain(codec) == [chat.Hello((1,))]


def test_max_line_can_change_on_a_live_codec() -> None:
    codec = chat.ServerCodec(64)
    codec.max_line = 16
    assert codec.max_line == 16
    codec.receive_data(b"12345678901234567890\n")
    assert drain(codec) == [("error", "line_too_long")]


# ============================================================================ mode

def test_a_first_line_starting_with_a_brace_selects_json_mode() -> None:
    codec = chat.ServerCodec()
    assert codec.mode is None
    codec.receive_data(b'  {"type":"hello","versions":[1]}\n')
    assert drain(codec) == [chat.Hello((1,))]
    assert codec.mode == "json"


def test_any_other_first_line_selects_text_mode_and_stays_there() -> None:
    codec = chat.ServerCodec()
    codec.receive_data(b"  4711 \r\n")
    assert drain(codec) == [chat.TextLine("4711")]
    assert codec.mode == "text"
    codec.receive_data(b'{"type":"hello","versions":[1]}\n\n   \nbob\n')
    assert drain(codec) == [chat.TextLine('{"type":"hello","versions":[1]}'),
                            chat.TextLine("bob")]
    assert codec.mode == "text"


def test_blank_lines_and_refused_lines_do_not_choose_the_mode() -> None:
    codec = chat.ServerCodec()
    codec.receive_data(b"\n \r\n\xff\xfe\n")
    assert drain(codec) == [("error", "bad_utf8")]
    assert codec.mode is None
    codec.receive_data(b'{"type":"hello","versions":[1]}\n')
    assert drain(codec) == [chat.Hello((1,))]
    assert codec.mode == "json"


def test_the_server_codec_does_not_encode_for_text_mode() -> None:
    codec = chat.ServerCodec()
    codec.receive_data(b"4711\n")
    drain(codec)
    with pytest.raises(LocalProtocolError) as info:
        codec.send(chat.Pong("x"))
    assert info.value.code == "wrong_mode"


def test_the_server_codec_encodes_json_lines() -> None:
    codec = chat.ServerCodec()
    codec.receive_data(b'{"type":"hello","versions":[1]}\n')
    drain(codec)
    assert codec.send(chat.Pong("t1")) == b'{"type":"pong","token":"t1"}\n'


# ============================================================================ bad input

def test_invalid_utf8_is_refused_with_the_byte_offset_and_the_codec_goes_on() -> None:
    codec = chat.ServerCodec()
    bad = b'{"type":"say","text":"\xc3("}'
    codec.receive_data(b'{"type":"hello","versions":[1]}\n' + bad + b"\n")
    assert codec.next_event() == chat.Hello((1,))
    with pytest.raises(RemoteProtocolError) as info:
        codec.next_event()
    assert info.value.code == "bad_utf8"
    assert info.value.message == f"The line is not valid UTF-8 (byte {bad.index(0xC3)})."
    codec.receive_data(b'{"type":"who"}\n')
    assert codec.next_event() == chat.Who()


@pytest.mark.parametrize("line", [
    "not json",
    "{",
    '{"type":"say","text":"x"',
    '{"type":"say","text":"x"} trailing',
    "{'type': 'who'}",
])
def test_a_line_that_is_not_json_is_bad_json(line: str) -> None:
    assert refused(line) == "bad_json"


@pytest.mark.parametrize("line", ["[1, 2]", '"who"', "17", "null", "true"])
def test_json_that_is_not_an_object_is_a_bad_request(line: str) -> None:
    assert refused(line) == "bad_request"


def test_deeply_nested_json_is_bad_json_not_a_crash() -> None:
    depth = 100_000  # past any Python's recursion limit
    nested = "[" * depth + "]" * depth
    assert refused('{"type":"say","text":"x","x":' + nested + "}") == "bad_json"
    assert refused(nested) == "bad_json"
    assert refused('{"a":' * depth + "1" + "}" * depth) == "bad_json"


@pytest.mark.parametrize("depth", [50, 999, 2000])
def test_nesting_that_fits_in_a_line_is_ignored_or_bad_json(depth: int) -> None:
    # Python 3.13 parses a few thousand levels where older versions stop near 1000;
    # either way the line is a request (the nested field is unknown) or bad_json.
    line = '{"type":"who","x":' + "[" * depth + "]" * depth + "}"
    try:
        assert request(line) == chat.Who()
    except RemoteProtocolError as exc:
        assert exc.code == "bad_json"
        assert exc.message == "The JSON is nested too deeply."


def test_deep_nesting_through_the_codec_is_one_error_reply() -> None:
    line = b"{" + b'"a":[' * 50_000 + b"\n"
    events = server_events(line + b'{"type":"hello","versions":[1]}\n', max_line=len(line) + 1)
    assert events == [("error", "bad_json"), chat.Hello((1,))]


@pytest.mark.parametrize("line", [
    "{}",
    '{"type":null}',
    '{"type":5}',
    '{"type":["say"]}',
    '{"type":"SAY","text":"x"}',
    '{"type":"shout","text":"x"}',
    '{"type":"welcome","version":1}',
])
def test_an_unknown_or_missing_type_is_unknown_type(line: str) -> None:
    assert refused(line) == "unknown_type"


def test_unknown_type_names_the_known_types() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        request('{"type":"shout"}')
    assert info.value.message == (
        "Unknown message type 'shout'; known: hello, join, msg, ping, pong, quit, say, who.")


def test_a_huge_unknown_type_name_is_cut_in_the_reply() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        request(json.dumps({"type": "x" * 3000}))
    assert len(info.value.message) < 200


@pytest.mark.parametrize(("line", "code"), [
    ('{"type":"hello"}', "bad_request"),
    ('{"type":"hello","versions":1}', "bad_request"),
    ('{"type":"hello","versions":"1"}', "bad_request"),
    ('{"type":"hello","versions":[]}', "bad_request"),
    ('{"type":"hello","versions":[0]}', "bad_request"),
    ('{"type":"hello","versions":[-1]}', "bad_request"),
    ('{"type":"hello","versions":[1.0]}', "bad_request"),
    ('{"type":"hello","versions":[true]}', "bad_request"),
    ('{"type":"hello","versions":["1"]}', "bad_request"),
    ('{"type":"hello","versions":[1000]}', "bad_request"),
    ('{"type":"hello","versions":' + json.dumps(list(range(1, 18))) + "}", "bad_request"),
    ('{"type":"hello","versions":[1],"client":5}', "bad_request"),
    ('{"type":"hello","versions":[1],"client":"' + "c" * 101 + '"}', "bad_request"),
    ('{"type":"join","name":"bob"}', "bad_request"),
    ('{"type":"join","pin":4711,"name":"bob"}', "bad_request"),
    ('{"type":"join","pin":"4711"}', "bad_request"),
    ('{"type":"join","pin":"4711","name":null}', "bad_request"),
    ('{"type":"join","pin":"47a1","name":"bob"}', "invalid_pin"),
    ('{"type":"join","pin":"","name":"bob"}', "invalid_pin"),
    ('{"type":"join","pin":"' + "1" * 65 + '","name":"bob"}', "invalid_pin"),
    ('{"type":"join","pin":"4711","name":""}', "invalid_name"),
    ('{"type":"join","pin":"4711","name":" bob"}', "invalid_name"),
    ('{"type":"join","pin":"4711","name":"\\ud800"}', "invalid_name"),
    ('{"type":"say"}', "bad_request"),
    ('{"type":"say","text":["hi"]}', "bad_request"),
    ('{"type":"say","text":"hi","action":"yes"}', "bad_request"),
    ('{"type":"say","text":"hi","action":1}', "bad_request"),
    ('{"type":"say","text":""}', "invalid_text"),
    ('{"type":"say","text":"   "}', "invalid_text"),
    ('{"type":"say","text":"\\u001b[2J"}', "invalid_text"),
    ('{"type":"say","text":"\\ud83d"}', "invalid_text"),
    ('{"type":"msg","text":"hi"}', "bad_request"),
    ('{"type":"msg","to":"bob"}', "bad_request"),
    ('{"type":"msg","to":"","text":"hi"}', "invalid_name"),
    ('{"type":"msg","to":"bob","text":""}', "invalid_text"),
    ('{"type":"ping","token":5}', "bad_request"),
    ('{"type":"ping","token":"' + "t" * 65 + '"}', "bad_request"),
    ('{"type":"pong","token":null}', "bad_request"),
])
def test_a_request_of_the_wrong_shape_is_refused_with_its_code(line: str, code: str) -> None:
    assert refused(line) == code


def test_a_refusal_names_the_field() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        request('{"type":"join","pin":4711,"name":"bob"}')
    assert "'pin'" in info.value.message


def test_unknown_fields_are_ignored_and_escapes_decoded() -> None:
    assert request('{"type":"who","extra":[1,{"x":2}]}') == chat.Who()
    assert request('{"type":"say","text":"caf\\u00e9 \\ud83d\\ude42"}') == chat.Say("café 🙂")
    assert request('{"type":"ping"}') == chat.Ping("")
    assert request('{"type":"hello","versions":[2,1]}') == chat.Hello((2, 1))


def test_a_refused_request_leaves_the_codec_usable() -> None:
    events = server_events(b'{"type":"hello","versions":[1]}\n'
                           b'{"type":"shout"}\n'
                           b'[]\n'
                           b'{"type":"join","pin":"4711","name":""}\n'
                           b'{"type":"join","pin":"4711","name":"bob"}\n')
    assert events == [chat.Hello((1,)), ("error", "unknown_type"), ("error", "bad_request"),
                      ("error", "invalid_name"), chat.Join("4711", "bob")]


# ============================================================================ events

def test_a_join_with_an_empty_name_cannot_exist() -> None:
    with pytest.raises(LocalProtocolError) as info:
        chat.Join("4711", "")
    assert info.value.code == "invalid_name"


def test_a_join_with_a_ten_kilobyte_pin_cannot_exist() -> None:
    with pytest.raises(LocalProtocolError) as info:
        chat.Join("1" * 10_000, "bob")
    assert info.value.code == "invalid_pin"


@pytest.mark.parametrize(("make", "code"), [
    (lambda: chat.Join("12a4", "bob"), "invalid_pin"),
    (lambda: chat.Join(4711, "bob"), "invalid_pin"),
    (lambda: chat.Join("4711", "x" * 33), "invalid_name"),
    (lambda: chat.Join("4711", "bob\n"), "invalid_name"),
    (lambda: chat.Join("4711", None), "invalid_name"),
    (lambda: chat.Say(""), "invalid_text"),
    (lambda: chat.Say("x" * 2001), "invalid_text"),
    (lambda: chat.Say("a\x00b"), "invalid_text"),
    (lambda: chat.Say("hi", action="yes"), "bad_request"),
    (lambda: chat.PrivateSay("", "hi"), "invalid_name"),
    (lambda: chat.PrivateSay("bob", "\u202eevil"), "invalid_text"),
    (lambda: chat.Hello([1]), "bad_request"),
    (lambda: chat.Hello(()), "bad_request"),
    (lambda: chat.Hello((True,)), "bad_request"),
    (lambda: chat.Hello((1,), "c" * 101), "bad_request"),
    (lambda: chat.Ping("t" * 65), "bad_request"),
    (lambda: chat.Pong(5), "bad_request"),
])
def test_an_invalid_request_event_cannot_be_built(make: Any, code: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        make()
    assert info.value.code == code


def test_events_normalise_names_and_text_to_nfc() -> None:
    assert chat.Join("4711", "Zoe\u0308").name == "Zo\u00eb"
    assert chat.PrivateSay("Zoe\u0308", "cafe\u0301").to == "Zo\u00eb"
    assert chat.Say("cafe\u0301").text == "caf\u00e9"


def test_events_are_frozen() -> None:
    join = chat.Join("4711", "bob")
    with pytest.raises(dataclasses.FrozenInstanceError):
        join.name = ""  # type: ignore[misc]


# ============================================================================ round trips

CLIENT_EVENTS: list[chat.Event] = [
    chat.Hello(),
    chat.Hello((1, 2), "lanchat/0.1.0"),
    chat.Join("0000", "Zoë"),
    chat.Join("1" * 64, "x" * 32),
    chat.Say("hello, anyone?"),
    chat.Say("waves", action=True),
    chat.Say("tab\there 🙂 \"quoted\" \\ back"),
    chat.PrivateSay("bob", "psst"),
    chat.Who(),
    chat.Quit(),
    chat.Ping(),
    chat.Ping("t1"),
    chat.Pong("keepalive"),
]

SERVER_EVENTS: list[chat.Event] = [
    chat.Welcome(1, "lanchatd/0.1.0", "8d0cac96fb2a4b21a60ee23957cad253", "lab", "active"),
    chat.Welcome(1, "lanchatd/0.1.0", "id", "lab", "standby", 6, 6, 8192, 2.5, 3),
    chat.Joined("4711", "alice", ("alice", "bob"), "stopped"),
    chat.Message("4711", 1, 1795244214.493, "alice", "hello, anyone?"),
    chat.Message("4711", 7, 1795244215.0, "bob", "waves", action=True, history=True),
    chat.Private(1795244216.299, "alice", "bob", "psst"),
    chat.Presence("4711", 1795244214.493, "bob", "join"),
    chat.Presence("4711", 1795244222.016, "bob", "leave", "kicked: spam"),
    chat.Members("4711", ("alice", "bob")),
    chat.Members("4711", ()),
    chat.StateChanged("standby", 1795244300.5, "members keep chatting, new clients are refused"),
    chat.Notice(1795244300.5, "Pizza in the kitchen", "4711"),
    chat.Notice(1795244300.5, "Maintenance at 18:00"),
    chat.Error("rate_limited", "Rate limited: not delivered.", "say"),
    chat.Error("bad_json", "The line is not valid JSON."),
    chat.Bye("kicked", "You were removed from the room by the administrator."),
    chat.Ping("keepalive"),
    chat.Pong("t1"),
]


@pytest.mark.parametrize("event", CLIENT_EVENTS, ids=repr)
def test_every_request_encodes_then_decodes_to_itself(event: chat.Event) -> None:
    data = chat.ClientCodec().send(event)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert server_events(data) == [event]


@pytest.mark.parametrize("event", SERVER_EVENTS, ids=repr)
def test_every_server_event_encodes_then_decodes_to_itself(event: chat.Event) -> None:
    data = chat.encode_json(event)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert chat.parse_server_message(data.decode("utf-8")) == event
    client = chat.ClientCodec()
    client.receive_data(b"LANCHAT/1 ready Welcome.\r\n" + data)
    assert drain(client) == [chat.Greeting(1, "ready", "Welcome."), event]


def test_the_round_trips_cover_every_event_type() -> None:
    def all_subclasses(cls: type) -> set[type]:
        subs = set(cls.__subclasses__())
        return subs.union(*(all_subclasses(s) for s in subs)) if subs else set()

    wire_types = all_subclasses(chat.Event) - {chat.Greeting, chat.TextLine,
                                               chat.ConnectionClosed, chat.Unknown}
    covered = {type(e) for e in CLIENT_EVENTS + SERVER_EVENTS}
    assert wire_types - covered == set()


def test_the_json_is_compact_utf8_with_from_and_without_false_flags() -> None:
    message = chat.Message("4711", 2, 1795244215.095, "Zoë", "hé")
    assert chat.encode_json(message) == (  # UTF-8 on the wire, not \u escapes
        b'{"type":"message","room":"4711","seq":2,"ts":1795244215.095,'
        b'"from":"Zo\xc3\xab","text":"h\xc3\xa9"}\n')
    assert chat.encode_json(chat.Hello()) == b'{"type":"hello","versions":[1]}\n'
    assert chat.encode_json(chat.Error("bad_json", "x")) == (
        b'{"type":"error","code":"bad_json","message":"x"}\n')
    assert chat.encode_json(chat.Notice(1.5, "x")) == b'{"type":"notice","ts":1.5,"text":"x"}\n'


def test_the_greeting_line_round_trips() -> None:
    greeting = chat.Greeting(1, "ready", "Welcome to lab (lanchatd 0.1.0). Enter the room PIN:")
    assert greeting.line() == "LANCHAT/1 ready Welcome to lab (lanchatd 0.1.0). Enter the room PIN:"
    assert chat.parse_greeting(greeting.line()) == greeting
    assert chat.parse_greeting("LANCHAT/2 full") == chat.Greeting(2, "full", "")


@pytest.mark.parametrize("line", [
    "220 mail.example ESMTP",
    "lanchat/1 ready hi",
    "LANCHAT/ ready hi",
    "LANCHAT/1",
    "LANCHAT/x ready hi",
    "LANCHAT/\u00b2 ready hi",
    "LANCHAT/\u0661 ready hi",
    "LANCHAT/" + "9" * 5000 + " ready hi",
])
def test_a_greeting_that_is_not_lanchat_is_refused(line: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        chat.parse_greeting(line)
    assert info.value.code == "not_lanchat"


def test_the_client_codec_reads_the_greeting_first_then_events() -> None:
    client = chat.ClientCodec()
    client.receive_data(b"LANCHAT/1 standby The server is in standby.\n")
    assert drain(client) == [chat.Greeting(1, "standby", "The server is in standby.")]
    client.receive_data(b'\n{"type":"pong","token":"a"}\n{"type":"bye","reason":"shutdown",')
    assert drain(client) == [chat.Pong("a")]
    client.receive_data(b'"message":"The server is shutting down."}')
    client.receive_data(b"")
    assert drain(client) == [chat.Bye("shutdown", "The server is shutting down."),
                             chat.ConnectionClosed()]


def test_the_client_codec_refuses_a_peer_that_is_not_lanchat() -> None:
    client = chat.ClientCodec()
    client.receive_data(b"SSH-2.0-OpenSSH_9.2\r\n")
    assert drain(client) == [("error", "not_lanchat")]


def test_a_server_event_of_a_newer_type_passes_as_unknown() -> None:
    event = chat.parse_server_message('{"type":"typing","room":"4711","name":"bob"}')
    assert isinstance(event, chat.Unknown)
    assert event.data == {"type": "typing", "room": "4711", "name": "bob"}


def test_unknown_fields_of_a_known_server_event_are_ignored() -> None:
    event = chat.parse_server_message(
        '{"type":"pong","token":"a","colour":"blue"}')
    assert event == chat.Pong("a")


@pytest.mark.parametrize("line", [
    '{"type":"welcome","version":1}',
    '{"type":"joined","room":"4711","name":"bob","members":"bob"}',
    '{"type":"joined","room":"4711","name":"bob","members":["bob",7]}',
    '{"type":"message","room":"4711","seq":"1","ts":1.0,"from":"a","text":"x"}',
    '{"type":"message","room":"4711","seq":1,"ts":null,"from":"a","text":"x"}',
    '{"type":"message","room":"4711","seq":1,"ts":1.0,"from":"a","text":5}',
    '{"type":"message","room":"4711","seq":1,"ts":1.0,"from":"a","text":"x","action":1}',
    '{"type":"message","room":4711,"seq":1,"ts":1.0,"from":"a","text":"x"}',
    '{"type":"notice","ts":1.0,"text":"x","room":4711}',
    '{"type":"error","code":"x"}',
    '{"type":"bye","reason":["kicked"],"message":"x"}',
    '{"type":"ping","token":7}',
])
def test_a_malformed_server_event_is_the_servers_error(line: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        chat.parse_server_message(line)
    assert info.value.code == "bad_event"


@pytest.mark.parametrize(("line", "code"), [
    ("not json", "bad_json"),
    ("[]", "bad_request"),
    ("[" * 5000, "bad_json"),
])
def test_a_server_line_that_is_not_an_object_is_refused(line: str, code: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        chat.parse_server_message(line)
    assert info.value.code == code


# ============================================================================ rules

# The shipped default is six to twelve digits (it was four to twelve: see
# docs/reliability.md, "Guessing PINs: the arithmetic").
@pytest.mark.parametrize("pin", ["000000", "471100", "123456789012", "0" * 12])
def test_a_pin_of_six_to_twelve_ascii_digits_is_valid(pin: str) -> None:
    assert rules.check_pin(pin) == pin


@pytest.mark.parametrize("pin", [
    "", "123", "1234", "12345", "1234567890123", "123 456", " 123456", "123456\n",
    "12a456", "-12345", "+123456", "1234.6",
    "\u0661\u0662\u0663\u0664\u0665\u0666", "\u00b2\u00b3\u00b9\u2074\u2075\u2076",
    "\uff11\uff12\uff13\uff14\uff15\uff16", None, 123456, ["123456"],
])
def test_anything_else_is_not_a_pin(pin: Any) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        rules.check_pin(pin)
    assert info.value.code == "invalid_pin"
    assert info.value.message == "A room PIN is 6 to 12 digits (0-9)."


def test_the_pin_length_is_configurable_and_the_rule_says_so() -> None:
    assert rules.check_pin("123456", 6, 6) == "123456"
    with pytest.raises(RemoteProtocolError) as info:
        rules.check_pin("12345", 6, 6)
    assert info.value.message == "A room PIN is exactly 6 digits (0-9)."
    assert rules.pin_rule(2, 8) == "A room PIN is 2 to 8 digits (0-9)."


@pytest.mark.parametrize(("name", "expected"), [
    ("bob", "bob"),
    ("b", "b"),
    ("x" * 32, "x" * 32),
    ("Zoe\u0308", "Zo\u00eb"),  # NFC: e + combining diaeresis is one character
    ("e\u0301" * 32, "\u00e9" * 32),  # 64 code points, 32 characters once normalised
    ("Ola Nordmann", "Ola Nordmann"),
    ("Åse", "Åse"),
    ("李小龍", "李小龍"),
    ("🙂", "🙂"),
    ("a\u00a0b", "a\u00a0b"),
])
def test_valid_names_come_back_nfc_normalised(name: str, expected: str) -> None:
    assert rules.normalize_name(name) == expected


@pytest.mark.parametrize("name", [
    "",
    "x" * 33,
    "e\u0301" * 33,
    "x" * 200,
    " bob",
    "bob ",
    "\u00a0bob",
    "bo\tb",
    "bob\n",
    "bo\x00b",
    "bo\x1b[31mb",
    "bo\x7fb",
    "\x85bob",
    "\u202ebob",  # right-to-left override
    "bob\u2066",  # left-to-right isolate
    "b\u200bob",  # zero-width space
    "bob\u200d",  # zero-width joiner
    "bob\ufeff",
    "bob\u2028",
    "bob\u2029",
    "bob\ue000",  # private use
    "bob\U000e0001",  # language tag
    "bob\u0378",  # unassigned
    "bob\ud800",  # lone surrogate
    None,
    42,
])
def test_invalid_names_are_refused_with_the_rule(name: Any) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        rules.normalize_name(name)
    assert info.value.code == "invalid_name"
    assert info.value.message == rules.NAME_RULE
    assert "1 to 32" in rules.NAME_RULE and "ignoring case" in rules.NAME_RULE


@pytest.mark.parametrize(("a", "b"), [
    ("alice", "ALICE"),
    ("Straße", "STRASSE"),
    ("ΣΊΣΥΦΟΣ", "σίσυφος"),
    ("Åse", "åSE"),
])
def test_names_differing_only_in_case_share_a_key(a: str, b: str) -> None:
    assert rules.name_key(rules.normalize_name(a)) == rules.name_key(rules.normalize_name(b))


def test_names_differing_in_letters_do_not_share_a_key() -> None:
    assert rules.name_key("ase") != rules.name_key("åse")
    assert rules.name_key("bob") != rules.name_key("bob2")


@pytest.mark.parametrize(("text", "expected"), [
    ("hello", "hello"),
    ("  spaced  ", "  spaced  "),
    ("tab\tinside", "tab\tinside"),
    ("x" * 2000, "x" * 2000),
    ("cafe\u0301", "caf\u00e9"),
    ("👩\u200d💻 ships it", "👩\u200d💻 ships it"),  # a ZWJ sequence is allowed in text
    ("\u200fright-to-left mark", "\u200fright-to-left mark"),
    ("זה בסדר", "זה בסדר"),
])
def test_valid_text_comes_back_nfc_normalised(text: str, expected: str) -> None:
    assert rules.check_text(text) == expected


def test_every_ascii_character_is_judged_as_isprintable_judges_it() -> None:
    # check_text finds ASCII controls with a translate table, not isprintable() (see
    # docs/performance.md): each character alone and inside a text, as before.
    for code in range(128):
        char = chr(code)
        for text in (f"a{char}b", f"{char}b", f"a{char}"):
            try:
                accepted = rules.check_text(text) == text
            except RemoteProtocolError as exc:
                accepted = False
                assert f"U+{code:04X}" in exc.message
            assert accepted == (text.isprintable() or char == "\t"), repr(text)


@pytest.mark.parametrize(("text", "needle"), [
    ("", "empty"),
    (" \t ", "empty"),
    ("x" * 2001, "at most 2000"),
    ("a\nb", "U+000A"),
    ("a\rb", "U+000D"),
    ("\x1b[2Jgotcha", "U+001B"),
    ("bell\x07", "U+0007"),
    ("\u202eevil", "U+202E"),
    ("\u2067isolate", "U+2067"),
    ("line\u2028sep", "U+2028"),
    ("\ue000private", "U+E000"),
    ("half \ud83d", "U+D83D"),
    (None, "string"),
    (5, "string"),
])
def test_invalid_text_is_refused_naming_the_problem(text: Any, needle: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        rules.check_text(text)
    assert info.value.code == "invalid_text"
    assert needle in info.value.message

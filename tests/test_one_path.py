"""One path per request: the state table decides, for every mode and transport.

The experiment of issue 10: take a request type out of what a joined member may send
(lanchatd/states.py's table) and it must be refused everywhere (JSON and plain text,
plain TCP and any other adapter) because no second path delivers it.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_transport import SemicolonTransport

from lanchat.protocol import chat, rules
from lanchat.protocol.errors import RemoteProtocolError
from lanchatd import states
from lanchatd.config import Config
from lanchatd.loop import ChatConnection, Loop
from lanchatd.transport import LineTransport, TransportFactory

T0 = 1_700_000_000.0
HELLO = b'{"type":"hello","versions":[1]}\n{"type":"join","pin":"123456","name":"%s"}\n'


class Room:
    """Members on every transport and mode, in one in-process loop (no sockets)."""

    def __init__(self, tmp_path: Path) -> None:
        config = Config(log_file=str(tmp_path / "activity.log"), state_dir=str(tmp_path),
                        control_socket=str(tmp_path / "control.sock"))
        self.loop = Loop(config, lambda: config, environ={})
        self.ends: dict[str, bytes] = {}

    def member(self, cid: int, name: str, factory: TransportFactory, text: bool) -> None:
        conn = ChatConnection(self.loop, cid, None, factory)  # type: ignore[arg-type]
        self.loop.conns[cid] = conn
        self.loop.apply(self.loop.core.connect(cid, ("10.0.0.1", 40000 + cid), T0))
        self.send(cid, f"123456\n{name}\n".encode() if text else HELLO % name.encode())
        assert self.loop.core.conns[cid].state == states.JOINED

    def send(self, cid: int, data: bytes) -> None:
        conn = self.loop.conns[cid]
        if isinstance(conn.transport, SemicolonTransport):
            data = data.replace(b"\n", b";")
        conn.transport.data_received(data)
        conn.feed(T0)

    def output(self, cid: int) -> str:
        conn = self.loop.conns[cid]
        sent = conn.transport.data_to_send(conn.pending)  # bytes, or pieces (plain TCP)
        out = (sent if isinstance(sent, bytes) else b"".join(sent)).replace(b";", b"\n")
        conn.pending = []
        return out.decode()


MEMBERS = [(1, "tcpjson", LineTransport, False), (2, "tcptext", LineTransport, True),
           (3, "toyjson", SemicolonTransport, False)]


@contextmanager
def room_of_every_kind(tmp_path: Path) -> Iterator[Room]:
    """A room where every one of MEMBERS has joined, what they were sent so far dropped;
    the loop's activity log is closed after."""
    room = Room(tmp_path)
    try:
        for cid, name, factory, text in MEMBERS:
            room.member(cid, name, factory, text)
        for cid, _name, _factory, _text in MEMBERS:
            room.output(cid)
        yield room
    finally:
        room.loop.activity.close()


def test_a_request_the_table_does_not_allow_is_refused_on_every_transport_and_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(states.CONN_ALLOWS, states.JOINED,
                        states.CONN_ALLOWS[states.JOINED] - {"say"})
    with room_of_every_kind(tmp_path) as room:
        for cid, _name, _factory, text in MEMBERS:
            room.send(cid, b"hello from %d\n" % cid if text
                      else b'{"type":"say","text":"hello from %d"}\n' % cid)
            said = room.output(cid)
            assert "bad_state" in said or "is not allowed now" in said, said
        assert room.loop.core.counters["messages"] == 0
        for cid, _name, _factory, _text in MEMBERS:
            assert "hello from" not in room.output(cid)
        # What the table still allows works: /who and who.
        room.send(2, b"/who\n")
        assert "tcpjson, tcptext, toyjson" in room.output(2)
        room.send(3, b'{"type":"who"}\n')
        assert json.loads(room.output(3))["members"] == ["tcpjson", "tcptext", "toyjson"]


def test_with_the_table_whole_a_say_reaches_every_transport_and_mode(
        tmp_path: Path) -> None:
    with room_of_every_kind(tmp_path) as room:
        room.send(2, b"hi all\n")
        for cid, _name, _factory, text in MEMBERS:
            out = room.output(cid)
            assert ("tcptext: hi all" in out) if text else ('"text":"hi all"' in out)


def test_a_text_is_limited_in_what_is_delivered_after_normalising() -> None:
    """U+0958 is two code points in NFC: 1,000 of them are a 2,000-code-point text."""
    assert len(unicodedata.normalize("NFC", "\u0958")) == 2
    assert len(rules.check_text("\u0958" * 1000)) == rules.TEXT_MAX_CHARS
    with pytest.raises(RemoteProtocolError) as refused:
        rules.check_text("\u0958" * 1001)
    assert refused.value.code == "invalid_text"


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(max_size=8), st.integers(-2**70, 2**70),
       st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
       st.lists(st.text(max_size=5), max_size=4))
def test_each_event_is_encoded_as_json_dumps_writes_it(
        text: str, word: str, number: int, real: float, flag: bool, names: list[str]) -> None:
    """The one JSON encoder (written per event class) against the standard library."""
    events: list[chat.Event] = [
        chat.Message(word, number, real, word, text, flag, not flag),
        chat.Presence(word, real, text, word, text),
        chat.Joined(word, text, tuple(names), word),
        chat.Notice(real, text, word or None),
        chat.Error(word, text, word), chat.Bye(word, text, text),
        chat.Welcome(number, text, word, text, word, number, number, number, real, number),
        chat.Private(real, word, word, text), chat.Members(word, tuple(names)),
        chat.StateChanged(word, real, text), chat.Greeting(number, word, text),
    ]
    for event in events:
        expected = json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))
        assert chat.encode_json(event) == (expected + "\n").encode("utf-8", "backslashreplace")

"""The room-message fast path gives what the general path gives, byte for byte.

A ``say`` from a joined member is decoded by json's scanner directly, parsed without the
``Say`` dataclass's own checks (``rules.check_text`` is called directly), dispatched
without ``_on_request`` and becomes a ``Message`` built without its dataclass
``__init__``.  Here the same input is fed to two cores: one as the daemon runs, one
driven the general way (``json.loads``, ``Say(...)``, every event through
``_on_request``, ``Message(...)``).  Everything must match: the bytes each connection
gets, closes, counters, the activity log, the history a newcomer sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from lanchat.protocol import chat
from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError
from lanchatd import states
from lanchatd.activity import ActivityLog
from lanchatd.config import Config
from lanchatd.core import ChatCore, Effects

T0 = 1_700_000_000.0


def general_say(d: Mapping[str, Any]) -> chat.Say:
    return chat.Say(chat._str(d, "text"), chat._bool(d, "action"))


def no_scan(line: str, idx: int) -> Any:
    raise StopIteration(idx)


@contextmanager
def general_path() -> Iterator[None]:
    saved = chat._CLIENT_PARSERS["say"], chat.room_message, chat._scan_json
    chat._CLIENT_PARSERS["say"] = general_say
    chat.room_message = chat.Message  # type: ignore[assignment]
    chat._scan_json = no_scan
    try:
        yield
    finally:
        chat._CLIENT_PARSERS["say"], chat.room_message, chat._scan_json = saved


def general_receive(core: ChatCore, cid: int, data: bytes, now: float) -> Effects:
    """``ChatCore.receive`` as it was: every request through ``_on_request``."""
    fx = Effects()
    conn = core.conns.get(cid)
    if conn is None:
        return fx
    conn.last_seen = now
    conn.ping_at = 0.0
    conn.codec.receive_data(data)
    while conn.state != states.CLOSED:
        try:
            event = conn.codec.next_event()
        except RemoteProtocolError as exc:
            core._on_bad_input(fx, conn, exc, now)
            continue
        if event is None:
            break
        if isinstance(event, chat.ConnectionClosed):
            core._drop(fx, conn, now, "closed by client")
            fx.closes.append(cid)
            break
        if isinstance(event, chat.TextLine):
            core._on_text(fx, conn, event.text, now)
        else:
            core._on_request(fx, conn, event, now)
    return fx


class Side:
    def __init__(self, general: bool, **settings: Any) -> None:
        self.general = general
        self.log = ActivityLog(path=None)
        self.core = ChatCore(Config(name="lab", **settings), self.log, server_id="sid",
                             now=T0)
        self.out: list[tuple[tuple[int, ...], bytes]] = []
        self.closes: list[int] = []

    def call(self, method: str, *args: Any) -> None:
        if self.general:
            with general_path():
                if method == "receive":
                    fx: Effects = general_receive(self.core, *args)
                else:
                    fx = getattr(self.core, method)(*args)
        else:
            fx = getattr(self.core, method)(*args)
        self.out.extend((tuple(t), d) for t, d in fx.sends)
        self.closes.extend(fx.closes)

    def outcome(self) -> Any:
        entries = [e for e in self.log.tail(10_000) if e["event"] != "start"]
        return self.out, self.closes, dict(self.core.counters), entries


def both(**settings: Any) -> tuple[Side, Side]:
    return Side(False, **settings), Side(True, **settings)


def lines(*objs: Any) -> bytes:
    return b"".join((o if isinstance(o, str) else json.dumps(o)).encode() + b"\n"
                    for o in objs)


def setup(sides: tuple[Side, Side], now: float) -> None:
    for side in sides:
        for cid, name in ((1, "ann"), (2, "bob")):
            side.call("connect", cid, ("10.0.0.1", 40000 + cid), now)
            side.call("receive", cid, lines({"type": "hello", "versions": [1]},
                                            {"type": "join", "pin": "1234", "name": name}),
                      now)
        side.call("connect", 3, ("10.0.0.1", 40003), now)  # a plain-text member
        side.call("receive", 3, b"1234\ncid\n", now)


SCRIPT = [
    {"type": "say", "text": "hello"},
    {"type": "say", "text": "waves", "action": True},
    {"type": "say", "text": "  spaced  ", "extra": 1},
    {"type": "say", "text": "e\u0301 needs NFC"},
    {"type": "say", "text": "tab\tinside"},
    {"type": "say", "text": ""},
    {"type": "say", "text": "   "},
    {"type": "say", "text": "x" * 2001},
    {"type": "say", "text": "bell\x07"},
    {"type": "say", "text": "bidi \u202e"},
    {"type": "say", "text": 5},
    {"type": "say"},
    {"type": "say", "text": "hi", "action": "yes"},
    {"type": "say", "text": None, "action": 1},
    '{"type":"say","text":"lone \\ud800"}',
    '{"type":"say","text":"broken',
    {"type": "msg", "to": "bob", "text": "psst"},
    {"type": "who"},
]


def test_each_kind_of_say_gives_the_same_replies_errors_log_and_history() -> None:
    sides = both(history=50, max_errors=100)
    setup(sides, T0)
    for i, obj in enumerate(SCRIPT):
        for side in sides:
            side.call("receive", 1, lines(obj), T0 + i)
    for side in sides:  # a newcomer gets the history, marked as such
        side.call("connect", 4, ("10.0.0.1", 40004), T0 + 99)
        side.call("receive", 4, lines({"type": "hello", "versions": [1]},
                                      {"type": "join", "pin": "1234", "name": "dee"}), T0 + 99)
    fast, general = sides
    assert fast.outcome() == general.outcome()
    history = [json.loads(line) for _t, d in fast.out if _t == (4,)
               for line in d.decode().splitlines() if '"history":true' in line]
    assert [h["text"] for h in history] == ["hello", "waves", "  spaced  ", "\u00e9 needs NFC",
                                            "tab\tinside"]
    assert fast.core.counters["messages"] == 5


def test_rate_limits_and_the_stopped_state_are_the_same() -> None:
    sides = both(message_rate=2.0, message_burst=3, max_errors=1000)
    setup(sides, T0)
    say = lines(*[{"type": "say", "text": f"m{i}"} for i in range(8)])
    for side in sides:
        side.call("receive", 1, say, T0 + 1)  # 3 go through, 5 are rate limited
        side.call("receive", 1, say, T0 + 2.5)  # 3 tokens refilled
        side.call("set_state", "stopped", "admin:root", T0 + 3)
        side.call("receive", 1, say, T0 + 10)
        side.call("set_state", "active", "admin:root", T0 + 11)
        side.call("receive", 1, say, T0 + 12)
    fast, general = sides
    assert fast.outcome() == general.outcome()
    errors = [line for _t, d in fast.out if _t == (1,) for line in d.decode().splitlines()
              if '"rate_limited"' in line]
    assert len(errors) == 20  # 5 of each 8: the bucket is taken before the state is checked
    assert fast.core.counters["messages"] == 9


def test_a_say_before_joining_is_the_same_bad_state_error() -> None:
    sides = both()
    for side in sides:
        side.call("connect", 1, ("10.0.0.1", 40001), T0)
        side.call("receive", 1, lines({"type": "hello", "versions": [1]},
                                      {"type": "say", "text": "too early"}), T0)
    fast, general = sides
    assert fast.outcome() == general.outcome()
    assert b'"code":"bad_state"' in fast.out[-1][1]


say_objects = st.fixed_dictionaries(
    {"type": st.just("say")},
    optional={
        "text": st.one_of(st.text(max_size=30), st.text(max_size=3).map(lambda t: t * 700),
                          st.integers(), st.none(), st.booleans()),
        "action": st.one_of(st.booleans(), st.integers(), st.text(max_size=2)),
        "extra": st.integers(),
    })


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(say_objects, st.floats(0, 2)), min_size=1, max_size=12))
def test_any_say_sequence_gives_the_same_outcome(steps: list[tuple[dict[str, Any], float]]
                                                 ) -> None:
    sides = both(message_rate=3.0, message_burst=2, history=5, max_errors=4)
    setup(sides, T0)
    now = T0
    for obj, dt in steps:
        now += dt
        for side in sides:
            side.call("receive", 1, lines(obj), now)
    fast, general = sides
    assert fast.outcome() == general.outcome()


@settings(max_examples=300, deadline=None)
@given(say_objects)
def test_the_say_parser_gives_the_general_event_or_error(obj: dict[str, Any]) -> None:
    line = json.dumps(obj, ensure_ascii=False)

    def parse() -> Any:
        try:
            event = chat.parse_client_message(line)
        except RemoteProtocolError as exc:
            return ("error", exc.code, exc.message)
        return (chat.Say, event.text, event.action)

    try:
        want: Any = general_say(obj)
        want = (chat.Say, want.text, want.action)
    except LocalProtocolError as exc:
        want = ("error", exc.code, exc.message)
    assert parse() == want
    event = chat.parse_client_message(line) if want[0] is chat.Say else None
    if event is not None:
        assert type(event) is chat.Say
        assert event == chat.Say(*want[1:])
        assert hash(event) == hash(chat.Say(*want[1:]))


def test_a_room_message_is_the_dataclass_one() -> None:
    fast = chat.room_message("1234", 7, 1.5, "ann", "hi", True)
    assert fast == chat.Message("1234", 7, 1.5, "ann", "hi", True)
    assert repr(fast) == repr(chat.Message("1234", 7, 1.5, "ann", "hi", True))
    assert chat.encode_json(fast) == chat.encode_json(chat.Message("1234", 7, 1.5, "ann", "hi",
                                                                   True))


def test_a_long_read_is_handed_to_the_core_in_bounded_parts(tmp_path: Any) -> None:
    """64 KiB reads, but at most MAX_LINES_PER_PASS lines of one read per pass: a read of
    short lines is handed over in parts, in order, none lost."""
    from lanchatd.loop import MAX_LINES_PER_PASS, ChatConnection, Loop

    config = Config(log_file=str(tmp_path / "activity.log"), state_dir=str(tmp_path),
                    control_socket=str(tmp_path / "control.sock"), message_rate=1e9,
                    message_burst=10**9)
    loop = Loop(config, lambda: config, environ={})
    try:
        for cid in (1, 2):
            loop.conns[cid] = ChatConnection(loop, cid, None)  # type: ignore[arg-type]
            loop.apply(loop.core.connect(cid, ("127.0.0.1", 40000 + cid), T0))
            loop.apply(loop.core.receive(cid, lines(
                {"type": "hello", "versions": [1]},
                {"type": "join", "pin": "1234", "name": f"m{cid}"}), T0))
        total = MAX_LINES_PER_PASS * 2 + 10
        data = lines(*[{"type": "say", "text": str(i)} for i in range(total)])
        sender = loop.conns[1]
        sender.feed(data, T0)
        passes = [loop.core.counters["messages"]]
        while loop.backlogged:
            todo, loop.backlogged = loop.backlogged, []
            loop._feed_backlog(todo, T0)
            passes.append(loop.core.counters["messages"])
        assert passes == [MAX_LINES_PER_PASS, 2 * MAX_LINES_PER_PASS, total]
        got = [json.loads(line)["text"] for line in
               b"".join(loop.conns[2].pending).decode().splitlines()
               if '"type":"message"' in line]
        assert got == [str(i) for i in range(total)]
    finally:
        loop.activity.close()


def general_load(line: str) -> Any:
    """What the JSON step did before it called json.loads's scanner directly."""
    try:
        obj = json.loads(line)
    except RecursionError:
        return ("error", "bad_json", "The JSON is nested too deeply.")
    except ValueError as exc:
        return ("error", "bad_json", f"The line is not valid JSON ({exc}).")
    if not isinstance(obj, dict):
        return ("error", "bad_request", "Each JSON line must be an object.")
    return obj


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(json_values, st.sampled_from(["", " ", "\t"]), st.sampled_from(["", " ", "x", "}", "{}"]),
       st.integers(0, 3))
def test_the_json_step_gives_the_general_object_or_error(value: Any, pad: str, tail: str,
                                                           cut: int) -> None:
    for line in (json.dumps(value), pad + json.dumps(value) + tail,
                 json.dumps(value)[: -cut or None], '{"a":' * 3000, "\ufeff{}", "{} {}"):
        try:
            got: Any = chat._load_object(line)
        except RemoteProtocolError as exc:
            got = ("error", exc.code, exc.message)
        assert got == general_load(line)
        if isinstance(got, dict):
            assert type(got) is dict


# ---------------------------------------------------------------------- framing

class GeneralLineReader:
    """``chat.LineReader`` as it was: one line found, copied and cut at a time."""

    def __init__(self, max_line: int = chat.DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._scan = 0  # bytes of _buf already known to hold no newline
        self._discarding = False
        self._eof = False
        self._closed_reported = False

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
        return len(self._buf)

    def next_line(self) -> bytes | None:
        """The next complete line without its line ending, or None if none is complete.

        At end of file a last unterminated line is returned as if it had a newline;
        then ``at_eof`` becomes true.
        """
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
            if nl + 1 > self.max_line:
                del buf[: nl + 1]
                raise RemoteProtocolError(
                    "line_too_long", f"A line may be at most {self.max_line} bytes."
                )
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            return line

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buf



pieces = st.sampled_from([b"a", b"say", b"\n", b"\r", b"\r\n", b"x" * 7, b"y" * 40, b"\xff",
                          b"{}", b""])


@settings(max_examples=400, deadline=None)
@given(st.lists(pieces, max_size=60), st.lists(st.integers(0, 400), max_size=8),
       st.integers(2, 60), st.booleans())
@example([b"say", b"\n", b"a", b"\n"], [], 3, False)  # a line of exactly max_line bytes
@example([b"a", b"\r", b"\n", b"y" * 40, b"\r\n", b"a"], [], 3, False)
def test_the_line_reader_gives_the_general_lines_and_errors(
        parts: list[bytes], cuts: list[int], max_line: int, shrink: bool) -> None:
    stream = b"".join(parts)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]

    def run(reader: Any) -> list[Any]:
        out: list[Any] = []
        for i, chunk in enumerate([*chunks, b""]):
            reader.receive_data(chunk)
            if shrink and i == 1:
                reader.max_line = max(2, max_line // 2)  # a reload may lower the limit
            for _ in range(10_000):
                try:
                    line = reader.next_line()
                except RemoteProtocolError as exc:
                    out.append(exc.code)
                    continue
                if line is None:
                    break
                out.append(line)
            out.append(("eof", reader.at_eof))
        return out

    assert run(chat.LineReader(max_line)) == run(GeneralLineReader(max_line))
    chunks = [stream]
    assert run(chat.LineReader(max_line)) == run(GeneralLineReader(max_line))


def test_a_room_message_reaches_exactly_the_members_of_the_moment() -> None:
    """The room's tuples of member cids are kept between messages: they must follow
    every join and leave, in both modes."""
    fast = Side(False)
    now = T0

    def join(cid: int, text: bool) -> None:
        fast.call("connect", cid, ("10.0.0.1", 40000 + cid), now)
        if text:
            fast.call("receive", cid, f"1234\nm{cid}\n".encode(), now)
        else:
            fast.call("receive", cid, lines({"type": "hello", "versions": [1]},
                                            {"type": "join", "pin": "1234", "name": f"m{cid}"}),
                      now)

    def reached(text: str) -> set[int]:
        fast.out.clear()
        fast.call("receive", 1, lines({"type": "say", "text": text}), now)
        return {cid for targets, data in fast.out for cid in targets
                if text.encode() in data}

    join(1, False)
    join(2, False)
    join(3, True)
    assert reached("one") == {1, 2, 3}
    fast.call("receive", 2, lines({"type": "quit"}), now)
    assert reached("two") == {1, 3}
    fast.call("disconnected", 3, now, "reset")
    assert reached("three") == {1}
    join(4, True)
    join(5, False)
    assert reached("four") == {1, 4, 5}

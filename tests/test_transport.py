"""The transport seam (lanchatd/transport.py): the plain-TCP adapter's contract, the
loop's bounded hand-over of a long read, and a second adapter added without touching
the core or the loop's connection code."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Callable

from lanchat.protocol import chat
from lanchatd.config import Config
from lanchatd.loop import (
    MAX_LINES_PER_PASS,
    ChatConnection,
    Loop,
    _tcp_options,
    _tcp_tune,
)
from lanchatd.transport import Input, LineTransport, Owner, TimerHandle

T0 = 1_700_000_000.0


class Quiet:
    """An owner that records what an adapter asks of it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def want_write(self) -> None:
        self.asked.append("want_write")

    def close(self, reason: str) -> None:
        self.asked.append(f"close {reason}")

    def call_later(self, delay: float, callback: Callable[[float], None]) -> TimerHandle:
        raise AssertionError("plain TCP needs no timer")


def lines(*objs: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def test_plain_tcp_gives_lines_without_endings_however_the_stream_is_cut() -> None:
    owner = Quiet()
    tcp = LineTransport(owner, 16)
    got: list[Input] = []
    for piece in (b"ab", b"c\r\nde", b"f\n\nxyz"):
        tcp.data_received(piece)
        got += tcp.lines(100)
    assert got == [b"abc", b"def", b""]
    assert tcp.buffered == 3 and not tcp.has_lines
    tcp.data_received(b"")
    # At end of file a last unterminated line counts, then the end itself, once.
    assert tcp.lines(100) == [b"xyz", chat.END_OF_INPUT]
    assert tcp.lines(100) == []
    assert owner.asked == []


def test_plain_tcp_reports_a_long_line_once_and_keeps_none_of_it() -> None:
    tcp = LineTransport(Quiet(), 8)
    tcp.data_received(b"ok\n" + b"x" * 20)
    assert tcp.lines(100) == [b"ok", chat.LINE_TOO_LONG]
    assert tcp.buffered < 8
    tcp.data_received(b"y" * 20 + b"\nnext\n")
    assert tcp.lines(100) == [b"next"]


def test_plain_tcp_hands_out_at_most_limit_items_and_says_more_wait() -> None:
    tcp = LineTransport(Quiet(), 64)
    tcp.data_received(b"".join(b"%d\n" % i for i in range(10)))
    first = tcp.lines(4)
    assert first == [b"0", b"1", b"2", b"3"] and tcp.has_lines
    rest = tcp.lines(4) + tcp.lines(4) + tcp.lines(4)
    assert rest == [b"%d" % i for i in range(4, 10)] and not tcp.has_lines


def test_plain_tcp_writes_the_shared_chunks_as_they_are() -> None:
    tcp = LineTransport(Quiet(), 64)
    chunk = b"one\ntwo\n"
    # The chunks themselves, not a joined copy: each stays the one shared object.
    out = tcp.data_to_send([chunk, b"three\n"])
    assert isinstance(out, list) and out[0] is chunk and out[1] == b"three\n"
    assert not tcp.data_to_send([])


def test_a_long_read_is_handed_to_the_core_in_bounded_parts(tmp_path: Path) -> None:
    """64 KiB reads, but at most MAX_LINES_PER_PASS lines of one read per pass: a read of
    short lines is handed over in parts, in order, none lost."""
    config = Config(log_file=str(tmp_path / "activity.log"), state_dir=str(tmp_path),
                    control_socket=str(tmp_path / "control.sock"), message_rate=1e9,
                    message_burst=10**9)
    loop = Loop(config, lambda: config, environ={})
    try:
        for cid in (1, 2):
            conn = loop.conns[cid] = ChatConnection(loop, cid, None)  # type: ignore[arg-type]
            loop.apply(loop.core.connect(cid, ("127.0.0.1", 40000 + cid), T0))
            conn.transport.data_received(lines(
                {"type": "hello", "versions": [1]},
                {"type": "join", "pin": "123456", "name": f"m{cid}"}))
            conn.feed(T0)
        total = MAX_LINES_PER_PASS * 2 + 10
        sender = loop.conns[1]
        sender.transport.data_received(lines(*[{"type": "say", "text": str(i)}
                                              for i in range(total)]))
        sender.feed(T0)
        passes = [loop.core.counters["messages"]]
        while loop.ready and len(passes) < 10:
            loop.start_pass()
            loop.serve_input(T0)  # its turns
            passes.append(loop.core.counters["messages"])
        assert passes[:3] == [MAX_LINES_PER_PASS, 2 * MAX_LINES_PER_PASS, total]
        assert passes[-1] == total
        got = [json.loads(line)["text"] for line in
               b"".join(loop.conns[2].pending).decode().splitlines()
               if '"type":"message"' in line]
        assert got == [str(i) for i in range(total)]
    finally:
        loop.activity.close()


class SemicolonTransport:
    """A toy transport: a line ends at ``;``, and lines are written back with ``;``.

    It is built only from the contract in lanchatd/transport.py, to show a transport
    is added without any change to the core or the loop's connection code.
    """

    def __init__(self, owner: Owner, max_line: int) -> None:
        self.owner = owner
        self.max_line = max_line
        self.buf = b""
        self.items: list[Input] = []
        self.goodbye = False

    def data_received(self, data: bytes) -> None:
        if not data:
            self.items.append(chat.END_OF_INPUT)
            return
        self.buf += data
        *done, self.buf = self.buf.split(b";")
        self.items += done

    def lines(self, limit: int) -> list[Input]:
        out, self.items = self.items[:limit], self.items[limit:]
        return out

    @property
    def has_lines(self) -> bool:
        return bool(self.items)

    def data_to_send(self, chunks: list[bytes]) -> bytes:
        out = b"".join(chunks).replace(b"\n", b";")
        if self.goodbye:
            self.goodbye = False
            out += b"GOODBYE;"
        return out

    def close(self) -> None:
        self.goodbye = True

    @property
    def handshaking(self) -> bool:
        return False  # no handshake of its own


def test_a_new_transport_is_an_adapter_and_a_listener(tmp_path: Path) -> None:
    """A member on the toy transport and one on plain TCP chat in one room; the loop's
    own code runs (select, accept, read, write), only the listener's factory differs."""
    config = Config(name="lab", host="127.0.0.1", port=0, discovery_host="127.0.0.1",
                    discovery_port=0, log_file=str(tmp_path / "activity.log"),
                    state_dir=str(tmp_path), control_socket=str(tmp_path / "control.sock"))
    loop = Loop(config, lambda: config, environ={})
    loop.open_sockets()
    toy = socket.socket()
    toy.bind(("127.0.0.1", 0))
    toy.listen(8)
    loop.add_listener(toy, SemicolonTransport)
    tcp_port = loop.tcp_port
    a = socket.create_connection(("127.0.0.1", toy.getsockname()[1]), timeout=5)
    b = socket.create_connection(("127.0.0.1", tcp_port), timeout=5)

    def run_until(sock: socket.socket, end: bytes, got: bytearray) -> bytes:
        sock.setblocking(False)
        for _ in range(200):
            events = loop.selector.select(0.05)
            loop.now = T0
            for key, mask in events:
                if mask & 1:
                    key.data.on_readable(T0)
                if mask & 2:
                    key.data.on_writable(T0)
            loop._after_pass(T0)
            try:
                got += sock.recv(65536)
            except BlockingIOError:
                pass
            if end in got:
                return bytes(got)
        raise AssertionError(f"never got {end!r}; got {bytes(got)!r}")

    try:
        a_got, b_got = bytearray(), bytearray()
        greeting = run_until(a, b";", a_got)
        assert greeting.startswith(b"LANCHAT/1 ready ")  # the core's greeting, ; framed
        a.sendall(b'{"type":"hello","versions":[1]};'
                  b'{"type":"join","pin":"123456","name":"ann"};')
        run_until(a, b'"type":"joined"', a_got)
        run_until(b, b"PIN", b_got)
        b.sendall(b"123456\nbob\n")
        run_until(b, b"You are in room", b_got)
        a.sendall(b'{"type":"say","text":"hi bob"};')
        run_until(b, b"ann: hi bob\n", b_got)
        b.sendall(b"hello ann\n")
        out = run_until(a, b'"text":"hello ann"}', a_got)
        assert b"\n" not in out
        a.sendall(b'{"type":"quit"};')
        assert run_until(a, b"GOODBYE;", a_got).endswith(b"GOODBYE;")
        run_until(b, b"ann left", b_got)
    finally:
        a.close()
        b.close()
        loop.activity.close()
        for listener in loop.listeners:
            listener.sock.close()
        if loop.udp is not None:
            loop.udp.close()
        loop.selector.close()


def test_a_room_message_reaches_exactly_the_members_of_the_moment(tmp_path: Path) -> None:
    """The room's tuples of member cids are kept between messages: they must follow
    every join and leave, in both modes."""
    config = Config(log_file=str(tmp_path / "activity.log"), state_dir=str(tmp_path),
                    control_socket=str(tmp_path / "control.sock"))
    loop = Loop(config, lambda: config, environ={})

    def join(cid: int, text: bool) -> None:
        conn = loop.conns[cid] = ChatConnection(loop, cid, None)  # type: ignore[arg-type]
        loop.apply(loop.core.connect(cid, ("10.0.0.1", 40000 + cid), T0))
        conn.transport.data_received(f"123456\nm{cid}\n".encode() if text else lines(
            {"type": "hello", "versions": [1]},
            {"type": "join", "pin": "123456", "name": f"m{cid}"}))
        conn.feed(T0)

    def reached(text: str) -> set[int]:
        for conn in loop.conns.values():
            conn.pending = []
        sender = loop.conns[1]
        sender.transport.data_received(lines({"type": "say", "text": text}))
        sender.feed(T0)
        return {c.cid for c in loop.conns.values() if text.encode() in b"".join(c.pending)}

    try:
        join(1, False)
        join(2, False)
        join(3, True)
        assert reached("one") == {1, 2, 3}
        loop.conns[2].transport.data_received(lines({"type": "quit"}))
        loop.conns[2].feed(T0)
        loop.conns.pop(2)
        assert reached("two") == {1, 3}
        loop.apply(loop.core.disconnected(3, T0, "reset"))
        loop.conns.pop(3)
        assert reached("three") == {1}
        join(4, True)
        join(5, False)
        assert reached("four") == {1, 4, 5}
    finally:
        loop.activity.close()


def test_every_accepted_socket_has_the_chat_options_even_one_queued_before(
        tmp_path: Path) -> None:
    """The listener carries the chat options (Linux copies them into the sockets it
    accepts, so they are not set again per connection); a connection the kernel queued
    before the daemon had the listener (a socket unit's) gets them set one by one."""
    config = Config(name="lab", host="127.0.0.1", port=0, discovery_host="127.0.0.1",
                    discovery_port=0, log_file=str(tmp_path / "activity.log"),
                    state_dir=str(tmp_path), control_socket=str(tmp_path / "control.sock"))
    loop = Loop(config, lambda: config, environ={})
    handed_over = socket.socket()
    handed_over.bind(("127.0.0.1", 0))
    handed_over.listen(8)
    address = handed_over.getsockname()
    early = socket.create_connection(address, timeout=5)  # queued before the daemon
    loop.add_listener(handed_over, LineTransport)
    late = [socket.create_connection(address, timeout=5) for _ in range(2)]
    reference = socket.socket()
    _tcp_tune(reference)
    try:
        loop.accept(loop.listeners[-1], T0)
        accepted = [conn.sock for conn in loop.conns.values()]
        assert len(accepted) == 3
        for sock in accepted:
            assert _tcp_options(sock) == _tcp_options(reference)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.gettimeout() == 0.0  # non-blocking
    finally:
        for sock in [early, *late, reference]:
            sock.close()
        for conn in list(loop.conns.values()):
            loop.close_now(conn)
        handed_over.close()
        loop.activity.close()

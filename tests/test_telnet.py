"""The Telnet layer, line ends and line editing of plain-text mode (issue 19).

The filter and the reader on their own, the plain-TCP adapter that runs them, then the
daemon on the wire: what a Telnet
client is answered, byte for byte, and that a JSON member's bytes do not change.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Callable

import pytest
from lanchat_testing import Daemon, JsonClient

from lanchat.protocol import chat, telnet
from lanchat.protocol.errors import RemoteProtocolError
from lanchat.protocol.telnet import DO, DONT, IAC, SB, SE, WILL, WONT, TelnetFilter, edit_line
from lanchatd.transport import LineTransport, TimerHandle

NAWS, TSPEED, TTYPE, NEW_ENVIRON, OLD_ENVIRON = 31, 32, 24, 39, 36
ECHO, SGA, TM = telnet.ECHO, telnet.SGA, telnet.TIMING_MARK


def cmd(*parts: int) -> bytes:
    return bytes(parts)


# What plink -telnet (PuTTY 0.78) sends first, captured from the real program.
PUTTY_OPENING = (cmd(IAC, WILL, NAWS) + cmd(IAC, WILL, TSPEED) + cmd(IAC, WILL, TTYPE)
                 + cmd(IAC, WILL, NEW_ENVIRON) + cmd(IAC, DO, ECHO) + cmd(IAC, WILL, SGA)
                 + cmd(IAC, DO, SGA))
PUTTY_REFUSED = (cmd(IAC, DONT, NAWS) + cmd(IAC, DONT, TSPEED) + cmd(IAC, DONT, TTYPE)
                 + cmd(IAC, DONT, NEW_ENVIRON) + cmd(IAC, WONT, ECHO) + cmd(IAC, DONT, SGA)
                 + cmd(IAC, WONT, SGA))


# ---------------------------------------------------------------------- the filter


def test_every_offered_or_requested_option_is_refused_once() -> None:
    f = TelnetFilter()
    assert f.receive(PUTTY_OPENING + b"4711\r\n") == (b"4711\r\n", PUTTY_REFUSED)
    assert f.spoke_telnet
    # PuTTY then offers the old ENVIRON; asked again for ECHO, nothing more is said.
    assert f.receive(cmd(IAC, WILL, OLD_ENVIRON)) == (b"", cmd(IAC, DONT, OLD_ENVIRON))
    assert f.receive(cmd(IAC, DO, ECHO) + cmd(IAC, WILL, SGA)) == (b"", b"")


def test_wont_and_dont_need_no_answer() -> None:
    f = TelnetFilter()
    assert f.receive(cmd(IAC, WONT, ECHO) + cmd(IAC, DONT, SGA) + b"x") == (b"x", b"")


def test_each_timing_mark_is_answered() -> None:
    # Linux telnet sends IAC IP IAC DO TIMING-MARK for Ctrl-C and discards output until
    # the answer: every one needs its WONT.
    f = TelnetFilter()
    for _ in range(3):
        assert f.receive(cmd(IAC, 244, IAC, DO, TM)) == (b"", cmd(IAC, WONT, TM))


def test_iac_iac_is_a_literal_ff_and_other_commands_vanish() -> None:
    f = TelnetFilter()
    assert f.receive(b"a" + cmd(IAC, IAC) + b"b" + cmd(IAC, 241) + cmd(IAC, 246) + b"c") == (
        b"a\xffbc", b"")


def test_erase_character_and_erase_line_become_the_editing_keys() -> None:
    f = TelnetFilter()
    clean, _ = f.receive(b"abx" + cmd(IAC, telnet.EC) + b"c" + cmd(IAC, telnet.EL) + b"d")
    assert clean == b"abx\x7fc\x15d"
    assert edit_line(clean.decode()) == "d"


def test_a_subnegotiation_is_skipped_and_bounded() -> None:
    f = TelnetFilter()
    sub = cmd(IAC, SB, NAWS, 0, 80, IAC, IAC, 0, 24, IAC, SE)
    assert f.receive(b"a" + sub + b"b") == (b"ab", b"")
    # An SB that never ends: past MAX_SUBNEGOTIATION bytes, what follows is data again.
    f = TelnetFilter()
    limit = telnet.MAX_SUBNEGOTIATION
    clean, _ = f.receive(b"x" + cmd(IAC, SB, TTYPE) + b"y" * (limit - 1) + b"hello")
    assert clean == b"xhello"
    # An SB cut short by another command (a missing SE) ends there.
    f = TelnetFilter()
    assert f.receive(cmd(IAC, SB, TTYPE, 1, IAC, DO, ECHO) + b"z") == (
        b"z", cmd(IAC, WONT, ECHO))


def test_a_command_cut_at_any_byte_gives_the_same_result() -> None:
    stream = b"12" + PUTTY_OPENING + b"34" + cmd(IAC, SB, TTYPE, 0, IAC, SE) + b"\xff\xff5"
    whole = TelnetFilter().receive(stream)
    for cut in range(len(stream) + 1):
        f = TelnetFilter()
        a, b = f.receive(stream[:cut]), f.receive(stream[cut:])
        assert (a[0] + b[0], a[1] + b[1]) == whole


def test_a_json_stream_passes_untouched() -> None:
    f = TelnetFilter()
    data = b' \n{"type":"say","text":"\xff\xfd\x01"}\n' + cmd(IAC, DO, ECHO)
    assert f.receive(data) == (data, b"")
    assert f.receive(cmd(IAC, WILL, SGA)) == (cmd(IAC, WILL, SGA), b"")
    assert not f.spoke_telnet


def test_nc_bytes_pass_untouched() -> None:
    f = TelnetFilter()
    assert f.receive(b"4711\n") == (b"4711\n", b"")
    assert not f.spoke_telnet


# ---------------------------------------------------------------------- editing


@pytest.mark.parametrize("typed, meant", [
    ("12x\x7f34", "1234"),
    ("12x\x0834", "1234"),
    ("\x7f\x08abc", "abc"),
    ("wrong\x15right", "right"),
    ("ab\x15", ""),
    ("bl\u00e5x\x7f", "bl\u00e5"),  # a whole character, not a byte
    ("plain", "plain"),
])
def test_backspace_delete_and_ctrl_u(typed: str, meant: str) -> None:
    assert edit_line(typed) == meant


def drain(codec: chat.ServerCodec) -> list[object]:
    out: list[object] = []
    while True:
        try:
            event = codec.next_event()
        except RemoteProtocolError as exc:
            out.append(exc.code)
            continue
        if event is None:
            return out
        out.append(event)


def test_plain_text_lines_are_edited_before_any_check() -> None:
    codec = chat.ServerCodec()
    codec.receive_data(b"\x7f\r\n47x\x7f11\r\0bob\x08\x08\x08alice\r")
    codec.receive_data(b"\n")
    assert drain(codec) == [chat.TextLine("4711"), chat.TextLine("alice")]
    assert codec.mode == "text"


def test_a_line_erased_to_nothing_decides_no_mode() -> None:
    codec = chat.ServerCodec()
    codec.receive_data(b"ab\x15\n")
    assert drain(codec) == [] and codec.mode is None


def test_json_lines_are_not_edited() -> None:
    codec = chat.ServerCodec()
    codec.receive_data(b'{"type":"hello","versions":[1]}\n{"type":"say","text":"ab\x7f"}\n')
    assert drain(codec) == [chat.Hello((1,)), "invalid_text"]  # DEL is refused, not applied


# ---------------------------------------------------------------------- line ends


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r\0", b"\r"])
def test_each_line_end_ends_one_line(end: bytes) -> None:
    reader = chat.LineReader(any_line_end=True)
    reader.receive_data(b"one" + end + b"two" + end + b"three" + end)
    reader.receive_data(b"")
    lines = []
    while (line := reader.next_line()) is not None:
        lines.append(line)
    assert lines == [b"one", b"two", b"three"]


def test_a_cr_at_the_end_of_a_read_ends_its_line_at_once() -> None:
    for second in (b"\n", b"\0", b"x"):
        reader = chat.LineReader(any_line_end=True)
        reader.receive_data(b"a\r")
        assert reader.next_line() == b"a"  # a person is waiting for the answer
        reader.receive_data(second)  # the LF or NUL of the same line end: no line
        assert reader.next_line() is None
        reader.receive_data(b"")
        assert reader.next_line() == (b"x" if second == b"x" else None)
        assert reader.at_eof


def test_the_control_socket_keeps_its_framing() -> None:
    reader = chat.LineReader()  # a CR ends no line there (docs/protocol.md 16.2)
    reader.receive_data(b"a\rb\r\n")
    assert reader.next_line() == b"a\rb"


def test_a_line_end_with_a_cr_counts_two_bytes_toward_max_line() -> None:
    for end in (b"\r\n", b"\r\0", b"\r"):
        reader = chat.LineReader(6, any_line_end=True)
        reader.receive_data(b"abcd" + end + b"abcde" + end)
        assert reader.next_line() == b"abcd"
        with pytest.raises(RemoteProtocolError):
            reader.next_line()


# ---------------------------------------------------------------------- the TCP adapter


class Owner:
    def __init__(self) -> None:
        self.flushes = 0

    def want_write(self) -> None:
        self.flushes += 1

    def close(self, reason: str) -> None:
        raise AssertionError(f"closed: {reason}")

    def call_later(self, delay: float, callback: Callable[[float], None]) -> TimerHandle:
        raise AssertionError("no timer needed")


def test_the_tcp_adapter_answers_telnet_before_the_next_output() -> None:
    owner = Owner()
    tcp = LineTransport(owner, 4096)
    tcp.data_received(PUTTY_OPENING)  # only commands: no line, and not end of file
    assert tcp.lines(10) == [] and owner.flushes == 1
    assert tcp.data_to_send([]) == PUTTY_REFUSED
    tcp.data_received(b"47x\x7f11\r")
    tcp.data_received(b"\0")
    assert tcp.lines(10) == [b"47x\x7f11"]  # the core's codec applies the editing
    tcp.data_received(cmd(IAC, DO, TM))
    # A Telnet client's lines end CR LF.
    assert tcp.data_to_send([b"a\n", b"b\n"]) == cmd(IAC, WONT, TM) + b"a\r\nb\r\n"
    assert tcp.data_to_send([b"c\n"]) == b"c\r\n"
    tcp.data_received(b"")
    assert tcp.lines(10) == [chat.END_OF_INPUT]


def test_the_tcp_adapter_leaves_nc_and_json_bytes_alone() -> None:
    owner = Owner()
    tcp = LineTransport(owner, 4096)
    tcp.data_received(b'{"type":"ping","token":"\xff\xfd\x01"}\n')
    assert tcp.lines(10) == [b'{"type":"ping","token":"\xff\xfd\x01"}']
    chunk = b"x\n"
    sent = tcp.data_to_send([chunk])  # the shared chunk itself, not a copy
    assert isinstance(sent, list) and sent[0] is chunk and owner.flushes == 0


# ---------------------------------------------------------------------- on the wire


def recv_until(sock: socket.socket, pattern: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, data):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{pattern!r} not received; got {data!r}")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before {pattern!r}; got {data!r}")
        data += chunk
    return data


def test_a_character_mode_client_that_insists_joins_and_corrects(daemon: Daemon) -> None:
    """A client that stays in character mode (Windows' telnet does) although the server
    will not echo: every key arrives alone, Backspace too, and lines end CR NUL."""
    with socket.create_connection(daemon.tcp, timeout=10) as sock, \
            daemon.text_client() as member:
        member.join("4711", "nc-user")
        received = recv_until(sock, rb"PIN:\n")
        sock.sendall(PUTTY_OPENING)
        for key in b"47x\x0811\r\0":
            sock.sendall(bytes([key]))
        received += recv_until(sock, rb"name:\r\n")  # CR LF: it spoke Telnet
        for key in b"bpo\x7f\x7fob\r\0":
            sock.sendall(bytes([key]))
        received += recv_until(sock, rb"You are in room 4711 as bob\.")
        # The refusals and nothing else Telnet; no error line: joined at the first try.
        assert received.count(b"\xff") == PUTTY_REFUSED.count(b"\xff")
        assert PUTTY_REFUSED in received
        text = received.replace(PUTTY_REFUSED, b"").decode()
        assert "! " not in text
        assert text.splitlines()[1:3] == ["Enter your name:",
                                          "* You are in room 4711 as bob. Here: bob, nc-user. "
                                          "Type /help for commands."]
        for key in b"hi there\r":  # a lone CR ends it too, once the next key comes
            sock.sendall(bytes([key]))
        sock.sendall(b"/who\r\n")
        assert member.read_until(lambda s: "bob:" in s).endswith("bob: hi there")
        recv_until(sock, rb"In room 4711: bob, nc-user")


def test_a_client_that_sends_no_telnet_command_receives_none(daemon: Daemon) -> None:
    with socket.create_connection(daemon.tcp, timeout=10) as person:  # nc, telnet
        received = recv_until(person, rb"PIN:\n")
        person.sendall(b"47\x7f4711\r\n")
        received += recv_until(person, rb"name:\n")
        person.sendall(b"carol\r\0/quit\r")
        received += recv_until(person, rb"Goodbye\.\n")
    assert b"\xff" not in received and b"\r" not in received  # the bytes of every nc


def test_a_json_member_receives_the_same_bytes_whatever_client_the_person_uses(
        daemon: Daemon) -> None:
    def session(pin: str, other: str) -> bytes:
        member = JsonClient(daemon.tcp, hello=False)
        out = member.greeting.encode() + b"\n" + member.buf  # every byte it receives
        member.send({"type": "hello", "versions": [1], "client": "tests"})
        member.send({"type": "join", "pin": pin, "name": "prog"})
        deadline = time.monotonic() + 10

        def until(marker: bytes) -> None:
            nonlocal out
            while marker not in out:
                assert time.monotonic() < deadline, out
                member.sock.settimeout(deadline - time.monotonic())
                out += member.sock.recv(65536)

        until(b'"type":"joined"')
        raw = socket.create_connection(daemon.tcp, timeout=10)
        try:
            recv_until(raw, rb"PIN:\n")
            if other == "telnet":  # negotiating, editing, CR NUL, a timing mark
                raw.sendall(PUTTY_OPENING + pin.encode() + b"\r\0")
                raw.sendall(b"bobx\x7f\r\nhello\r\0" + cmd(IAC, DO, TM)
                            + b"bye\x15/me waves\r")
                raw.sendall(b"\0")
            else:  # nc: the same lines, clean
                raw.sendall(pin.encode() + b"\nbob\nhello\n/me waves\n")
            until(b'"action":true')
            member.say("\u00e5 ok")
            until("\u00e5 ok".encode())
            raw.sendall(b"/quit\n")
            until(b'"event":"leave"')
        finally:
            raw.close()
            member.close()
        assert b"\xff" not in out
        return re.sub(rb'"ts":[0-9.]+', b'"ts":T', out.replace(pin.encode(), b"PIN"))

    assert session("1111", "telnet") == session("2222", "nc")


def test_a_json_client_sending_0xff_gets_bad_utf8_and_no_negotiation(daemon: Daemon) -> None:
    with daemon.json_client() as client:
        client.send_raw(b'{"type":"ping","token":"\xff\xfd\x01"}\n' + cmd(IAC, DO, ECHO) + b"\n")
        first = client.recv()
        second = client.recv()
        assert first is not None and second is not None
        assert (first["code"], second["code"]) == ("bad_utf8", "bad_utf8")
        client.send({"type": "ping", "token": "t"})
        client.recv_type("pong")
        assert b"\xff" not in client.buf


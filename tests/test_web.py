"""The web transport adapter on its own: bytes in, lines and bytes out, no socket."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from lanchat.protocol.chat import END_OF_INPUT, LINE_TOO_LONG
from lanchatd.web import make_site
from lanchatd.web.address import page_url
from lanchatd.web.listener import WebSite
from lanchatd.web.site import StaticFile, http_date, load_files, own_host_names
from lanchatd.web.transport import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_TARGET_BYTES,
    WebTransport,
)

HOST = "127.0.0.1:5080"
GREETING = b"LANCHAT/1 ready Welcome to lab (lanchatd 0.1.0). Enter the room PIN:\n"


class Timer:
    def __init__(self, delay: float, callback: Callable[[float], None]) -> None:
        self.delay = delay
        self.callback: Callable[[float], None] | None = callback

    def cancel(self) -> None:
        self.callback = None


class FakeOwner:
    """What the loop does for an adapter, recorded."""

    def __init__(self) -> None:
        self.transport: WebTransport | None = None
        self.wants_write = 0
        self.closed: list[str] = []
        self.timers: list[Timer] = []
        self.sessions = 0  # session_opened calls: the core greets and logs the member
        self.quiet = False  # the close was an ordinary end, not worth a log line

    def want_write(self) -> None:
        self.wants_write += 1

    def close(self, reason: str, quiet: bool = False) -> None:
        if not self.closed:
            self.closed.append(reason)
            self.quiet = quiet
            assert self.transport is not None
            self.transport.close()  # the loop calls close() as it starts closing

    def call_later(self, delay: float, callback: Callable[[float], None]) -> Timer:
        timer = Timer(delay, callback)
        self.timers.append(timer)
        return timer

    def session_opened(self) -> None:
        self.sessions += 1

    def fire(self) -> None:
        for timer in list(self.timers):
            if timer.callback is not None:
                timer.callback(0.0)


#: The clock of the adapter tests' site: Tuesday 1 December 2026, 09:15:02 UTC.
NOW = 1796116502.25


def connection(max_line: int = 4096, site: WebSite | None = None
               ) -> tuple[WebTransport, FakeOwner]:
    owner = FakeOwner()
    if site is None:
        site = make_site(host_names=own_host_names("labpc", ("chat.school.lan",)),
                         page="http://192.0.2.10:5080/")
        site.clock = lambda: NOW
    transport = site(owner, max_line)
    assert isinstance(transport, WebTransport)
    owner.transport = transport
    return transport, owner


def request(path: str = "/", method: str = "GET", headers: dict[str, str] | None = None,
            host: str = HOST) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    for key, value in (headers or {}).items():
        head += f"{key}: {value}\r\n"
    return (head + "\r\n").encode("latin-1")


def responses(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Parse what the adapter wrote as an HTTP client would."""
    client = h11.Connection(h11.CLIENT)
    # h11 needs to know what was asked to parse the answers; GETs are enough here.
    out = []
    client.receive_data(data)
    while True:
        if client.our_state is h11.IDLE:
            client.send(h11.Request(method="GET", target="/", headers=[("host", HOST)]))
            client.send(h11.EndOfMessage())
        event = client.next_event()
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return out
        if isinstance(event, h11.Response):
            out.append((event.status_code, dict(event.headers), b""))
        elif isinstance(event, h11.Data):
            status, headers, body = out[-1]
            out[-1] = (status, headers, body + bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
                return out
            client.start_next_cycle()


def exchange(transport: WebTransport, data: bytes) -> bytes:
    transport.data_received(data)
    transport.lines(4096)
    return transport.data_to_send([])


def upgrade(transport: WebTransport, origin: str | None = f"http://{HOST}",
            host: str = HOST) -> tuple[WSConnection, bytes, list[object]]:
    """Open the WebSocket: the client side, the adapter's first bytes, and when it was
    accepted what the client read from them."""
    client = WSConnection(ConnectionType.CLIENT)
    headers = [] if origin is None else [(b"origin", origin.encode())]
    transport.data_received(client.send(Request(host=host, target="/ws",
                                                extra_headers=headers)))
    transport.lines(4096)
    data = transport.data_to_send([])
    first = texts(client, data) if data.startswith(b"HTTP/1.1 101 ") else []
    return client, data, first


def texts(client: WSConnection, data: bytes) -> list[object]:
    client.receive_data(data)
    out: list[object] = []
    for event in client.events():
        if isinstance(event, TextMessage):
            out.append(event.data)
        elif not isinstance(event, AcceptConnection):
            out.append(event)
    return out


# --------------------------------------------------------------------------- HTTP


def test_the_page_is_served_with_strict_headers() -> None:
    transport, owner = connection()
    [(status, headers, body)] = responses(exchange(transport, request("/")))
    assert status == 200
    assert body.startswith(b"<!doctype html>")
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    csp = headers[b"content-security-policy"].decode()
    assert "default-src 'none'" in csp and "script-src 'self';" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert f"connect-src 'self' ws://{HOST};" in csp
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"cache-control"] == b"no-cache" and headers[b"etag"].startswith(b'"')
    assert not owner.closed  # kept alive for the page's other files


def test_every_response_carries_a_date_from_the_sites_clock() -> None:
    """RFC 9110, 6.6.1: an origin server with a clock sends Date, in every response."""
    assert http_date(NOW) == b"Tue, 01 Dec 2026 09:15:02 GMT"
    assert http_date(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"
    transport, _owner = connection()
    [(_s, headers, _b)] = responses(exchange(transport, request("/")))
    etag = headers[b"etag"].decode()
    answers = [*responses(exchange(transport, request("/", headers={"If-None-Match": etag}))),
               *responses(exchange(transport, request("/nothing")))]
    assert [status for status, _h, _b in answers] == [304, 404]
    assert all(h[b"date"] == b"Tue, 01 Dec 2026 09:15:02 GMT" for _s, h, _b in answers)
    transport, _owner = connection()
    _client, data, _ = upgrade(transport)
    assert data.startswith(b"HTTP/1.1 101 ")
    assert b"\r\ndate: Tue, 01 Dec 2026 09:15:02 GMT\r\n" in data


def test_the_icon_is_where_browsers_look_for_it() -> None:
    transport, _owner = connection()
    for path in ("/favicon.svg", "/favicon.ico"):
        [(status, headers, body)] = responses(exchange(transport, request(path)))
        assert (status, headers[b"content-type"]) == (200, b"image/svg+xml"), path
        assert body.startswith(b"<svg") and headers[b"cache-control"] == b"no-cache"


@pytest.mark.parametrize("host", [
    HOST, "[::1]:5080", "192.0.2.10", "localhost:5080", "LocalHost", "chat.localhost:5080",
    "labpc:5080", "labpc.local:5080", "LABPC.LOCAL.:5080", "chat.school.lan",
    "[fe80::1%25eth0]:5080"])
def test_the_page_answers_to_its_own_names_and_any_address(host: str) -> None:
    transport, owner = connection()
    [(status, _h, body)] = responses(exchange(transport, request("/", host=host)))
    assert status == 200, body
    transport, owner = connection()
    _client, data, _ = upgrade(transport, origin=f"http://{host}", host=host)
    assert data.startswith(b"HTTP/1.1 101 ") and owner.sessions == 1


@pytest.mark.parametrize("host", [
    "evil.example:5080", "evil.example", "labpc.evil.example", "chat.school.lan.evil",
    "127.0.0.1.nip.io:5080", "labpc:port", "[::1", "[::1]x"])
def test_other_names_are_refused_as_dns_rebinding(host: str) -> None:
    """A page on another site whose name was made to resolve to this machine: its
    browser sends that name as Host, and its Origin matches it, so only the Host check
    stops it; it gets neither the page nor the WebSocket."""
    transport, owner = connection()
    [(status, headers, body)] = responses(exchange(transport, request("/", host=host)))
    assert status == 421, body
    assert b"as a safeguard against other web sites that point their name at it (DNS " \
           b"rebinding): open the chat page at http://192.0.2.10:5080/. An administrator " \
           b"who serves it under another name adds that name to http_host_names" in body
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert owner.closed == ["web request refused: unknown host name"]
    transport, owner = connection()
    _client, data, _ = upgrade(transport, origin=f"http://{host}", host=host)
    [(status, _h, body)] = responses(data)
    assert status == 421 and owner.sessions == 0
    assert owner.closed == ["web request refused: unknown host name"]


def test_the_refusal_names_the_host_it_was_asked_for() -> None:
    transport, _owner = connection()
    [(_s, _h, body)] = responses(exchange(transport, request("/", host="Evil.Example:5080")))
    assert body.startswith(b"This server does not answer to the name 'evil.example', ")


def test_a_star_accepts_every_name() -> None:
    site = make_site(host_names=own_host_names("labpc", ("*",)))
    transport, _owner = connection(site=site)
    [(status, _h, _b)] = responses(exchange(transport, request("/", host="proxy.example")))
    assert status == 200


def test_page_fetches_open_no_session_and_the_upgrade_opens_one() -> None:
    transport, owner = connection()
    for path in ("/", "/app.css", "/app.js", "/lang/en.json", "/nothing"):
        exchange(transport, request(path))
    assert owner.sessions == 0
    upgrade(transport)
    assert owner.sessions == 1


def test_ordinary_ends_are_quiet_and_refusals_are_not() -> None:
    """What the activity log gets of a connection that only fetched pages: nothing when
    it ends as connections do (served, idle), the reason when it was refused."""
    transport, owner = connection()
    exchange(transport, request("/", headers={"Connection": "close"}))
    assert (owner.closed, owner.quiet) == (["web page served"], True)
    transport, owner = connection()
    owner.fire()
    assert (owner.closed, owner.quiet) == (["web connection idle"], True)
    transport, owner = connection()
    exchange(transport, b"HELLO\r\n\r\n")
    assert (owner.closed, owner.quiet) == (["web request refused: malformed HTTP"], False)


def test_every_file_has_its_content_type_and_the_page_has_no_inline_code() -> None:
    files = load_files()
    kinds = {path.rsplit(".", 1)[-1]: f.content_type for path, f in files.items() if "." in path}
    assert kinds["js"] == "text/javascript; charset=utf-8"
    assert kinds["css"] == "text/css; charset=utf-8"
    assert kinds["json"] == "application/json" and kinds["svg"] == "image/svg+xml"
    page = files["/"].body.decode()
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert re.search(r"<[^>]*\son\w+=", page) is None  # no inline event handlers
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere
    assert "innerHTML" not in files["/app.js"].body.decode()


def test_the_language_catalogues_are_complete() -> None:
    files = load_files()
    english = json.loads(files["/lang/en.json"].body)
    norwegian = json.loads(files["/lang/nb.json"].body)
    assert set(english) == set(norwegian)
    for key in english:
        assert english[key].strip() and norwegian[key].strip(), key
    page = files["/"].body.decode() + files["/app.js"].body.decode()
    used = set(re.findall(r'data-i18n="(\w+)"', page)) | set(re.findall(r'\bt\("(\w+)"', page))
    assert used - set(english) == set()


def test_keep_alive_then_304_and_head() -> None:
    transport, _owner = connection()
    [(status, headers, _body)] = responses(exchange(transport, request("/app.css")))
    assert status == 200
    etag = headers[b"etag"].decode()
    [(status, _h, body)] = responses(exchange(transport, request(
        "/app.css", headers={"If-None-Match": etag})))
    assert (status, body) == (304, b"")
    data = exchange(transport, request("/app.js", method="HEAD"))
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n")
    assert b"content-length: " in data


@pytest.mark.parametrize(("raw", "status", "words"), [
    (request("/nothing-here"), 404, b"Not found: /nothing-here. The chat page is at /."),
    (request("/", method="POST", headers={"Content-Length": "0"}), 405,
     b"The method POST is not allowed here"),
    (request("/", headers={"Content-Length": "5"}) + b"hello", 413,
     b"This server takes no request body."),
    (request("/" + "a" * (MAX_TARGET_BYTES + 1)), 414, b"The address is too long"),
    (request("/", headers={f"X-{i}": "y" for i in range(MAX_HEADERS + 1)}), 431,
     b"Too many header fields"),
    (b"GET /" + b"a" * (MAX_HEAD_BYTES + 10), 431,
     b"The request line and header fields are too long (at most 8192 bytes in all)."),
    (b"HELLO\r\n\r\n", 400, b"Not a valid HTTP/1.1 request"),
    (request("/ws"), 426, b"/ws is the chat's WebSocket: open the page at / instead."),
])
def test_refusals_say_what_was_wrong(raw: bytes, status: int, words: bytes) -> None:
    transport, owner = connection()
    [(got, headers, body)] = responses(exchange(transport, raw))
    assert got == status, body
    assert words in body
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    if status in (404, 405, 426):
        assert not owner.closed  # a mistake, not an attack: the connection may go on
    else:
        assert owner.closed and owner.closed[0].startswith("web request refused")
        assert headers[b"connection"] == b"close"


def test_head_is_answered_with_headers_only_whatever_the_status() -> None:
    transport, _owner = connection()
    for path, status in (("/app.js", b"200 OK"), ("/nothing", b"404 Not Found"),
                         ("/ws", b"426 Upgrade Required")):
        data = exchange(transport, request(path, method="HEAD"))
        assert data.startswith(b"HTTP/1.1 " + status + b"\r\n"), data
        assert data.endswith(b"\r\n\r\n") and b"content-length: " in data


def test_a_slow_request_times_out_with_408_and_an_idle_one_quietly() -> None:
    transport, owner = connection()
    transport.data_received(b"GET / HTTP/1.1\r\nHost: x")
    transport.lines(10)
    assert owner.timers[0].delay == 10.0
    owner.fire()
    [(status, _h, body)] = responses(transport.data_to_send([]))
    assert status == 408 and b"did not arrive within 10 seconds" in body
    assert owner.closed == ["web request timed out"]

    transport, owner = connection()
    owner.fire()
    assert owner.closed == ["web connection idle"]
    assert transport.data_to_send([GREETING]) == b""


def test_the_timer_starts_again_after_each_answer() -> None:
    transport, owner = connection()
    exchange(transport, request("/"))
    first, second = owner.timers
    assert first.callback is None and second.callback is not None


def test_refused_by_the_core_before_the_upgrade_gets_503_with_its_words() -> None:
    transport, _owner = connection()
    transport.close()  # the core refused at connect: full
    data = transport.data_to_send([b"LANCHAT/1 full The server is full. Try again later.\n"])
    [(status, _h, body)] = responses(data)
    assert (status, body) == (503, b"The server is full. Try again later.\n")


def test_a_normal_end_of_an_http_connection() -> None:
    transport, _owner = connection()
    transport.data_to_send([GREETING])  # held, never shown to an HTTP client
    exchange(transport, request("/"))
    transport.data_received(b"")
    assert transport.lines(10) == [END_OF_INPUT]
    transport.close()
    assert transport.data_to_send([]) == b""


# --------------------------------------------------------------------------- WebSocket


def test_upgrade_sends_the_held_greeting_then_lines_pass_both_ways() -> None:
    transport, owner = connection()
    transport.data_to_send([GREETING])
    client, _data, first = upgrade(transport)
    assert first == [GREETING.decode().rstrip("\n")]
    assert owner.timers[0].callback is None  # no HTTP timeout for a chat member
    transport.data_received(client.send(TextMessage(data='{"type":"hello","versions":[1]}')))
    transport.data_received(client.send(TextMessage(data="héllo\nwith a newline")))
    assert transport.lines(10) == [b'{"type":"hello","versions":[1]}',
                                   "héllo\nwith a newline".encode()]
    chunk = b'{"type":"welcome"}\n{"type":"message","text":"\xc3\xa6"}\n'
    assert texts(client, transport.data_to_send([chunk])) == [
        '{"type":"welcome"}', '{"type":"message","text":"æ"}']


def test_the_frames_of_a_shared_chunk_are_built_once() -> None:
    a, _ = connection()
    b, _ = connection()
    upgrade(a)
    upgrade(b)
    chunk = b'{"type":"message","text":"to everyone"}\n'
    first = a.data_to_send([chunk])
    assert b.data_to_send([chunk]) is first  # the same bytes object: framed once


def test_messages_are_bounded_by_max_line() -> None:
    transport, owner = connection(max_line=20)
    client, _, _ = upgrade(transport)
    transport.data_received(client.send(TextMessage(data="x" * 19)))
    transport.data_received(client.send(TextMessage(data="y" * 20)))
    transport.data_received(client.send(TextMessage(data="z" * 10, message_finished=False)))
    transport.data_received(client.send(TextMessage(data="z" * 10)))
    transport.data_received(client.send(TextMessage(data="ok")))
    assert transport.lines(10) == [b"x" * 19, LINE_TOO_LONG, LINE_TOO_LONG, b"ok"]
    assert not owner.closed


def test_an_oversized_frame_closes_with_1009() -> None:
    transport, owner = connection()
    client, _, _ = upgrade(transport)
    frame = client.send(TextMessage(data="x" * (1 << 21)))
    transport.data_received(frame[: (1 << 20) + 100])
    [close] = texts(client, transport.data_to_send([]))
    assert isinstance(close, CloseConnection) and close.code == 1009
    assert owner.closed == ["websocket: message too big"]
    assert transport.lines(10) == []


def test_lines_are_handed_over_in_bounded_batches() -> None:
    transport, _ = connection()
    client, _, _ = upgrade(transport)
    transport.data_received(b"".join(client.send(TextMessage(data=str(i)))
                                     for i in range(10)))
    assert transport.lines(4) == [b"0", b"1", b"2", b"3"]
    assert transport.has_lines
    assert transport.lines(100) == [str(i).encode() for i in range(4, 10)]
    assert not transport.has_lines


def test_binary_messages_are_refused_with_1003() -> None:
    transport, owner = connection()
    client, _, _ = upgrade(transport)
    transport.data_received(client.send(BytesMessage(data=b"\x00\x01")))
    [close] = texts(client, transport.data_to_send([]))
    assert isinstance(close, CloseConnection) and close.code == 1003
    assert "text messages only" in close.reason
    assert owner.closed == ["websocket: binary message"]


def test_invalid_utf8_is_a_protocol_error() -> None:
    transport, owner = connection()
    client, _, _ = upgrade(transport)
    frame = bytearray(client.send(TextMessage(data="ab")))
    # The client masks its payload: flip the bits so that it unmasks to 0xff 0xfe.
    mask = frame[2:6]
    frame[6] = 0xFF ^ mask[0]
    frame[7] = 0xFE ^ mask[1]
    transport.data_received(bytes(frame))
    [close] = texts(client, transport.data_to_send([]))
    assert isinstance(close, CloseConnection) and close.code == 1007
    assert owner.closed and owner.closed[0].startswith("websocket: ")


def test_ping_is_answered_and_close_is_a_handshake() -> None:
    transport, owner = connection()
    client, _, _ = upgrade(transport)
    transport.data_received(client.send(Ping(payload=b"are you there")))
    assert owner.wants_write
    [pong] = texts(client, transport.data_to_send([]))
    assert isinstance(pong, Pong) and pong.payload == b"are you there"
    transport.data_received(client.send(CloseConnection(code=1000)))
    assert transport.lines(10) == [END_OF_INPUT]
    [close] = texts(client, transport.data_to_send([]))
    assert isinstance(close, CloseConnection) and close.code == 1000
    transport.close()  # the core drops the member: nothing more to send
    assert transport.data_to_send([b'{"type":"late"}\n']) == b""


def test_a_read_full_of_pings_costs_one_pong() -> None:
    transport, _owner = connection()
    client, _, _ = upgrade(transport)
    transport.data_received(b"".join(client.send(Ping(payload=str(i).encode()))
                                     for i in range(500)))
    [pong] = texts(client, transport.data_to_send([]))
    assert isinstance(pong, Pong) and pong.payload == b"499"


def test_the_core_ending_a_member_sends_its_bye_then_a_close_frame() -> None:
    transport, _ = connection()
    client, _, _ = upgrade(transport)
    transport.close()
    events = texts(client, transport.data_to_send([b'{"type":"bye","reason":"kicked"}\n']))
    assert events[0] == '{"type":"bye","reason":"kicked"}'
    assert isinstance(events[1], CloseConnection) and events[1].code == 1000


def test_a_socket_that_just_ends_is_the_end_of_input() -> None:
    transport, _ = connection()
    _client, _, _ = upgrade(transport)
    transport.data_received(b"")
    assert transport.lines(10) == [END_OF_INPUT]


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:5081",
                                    "https://127.0.0.1:5080", "null"])
def test_a_foreign_origin_is_refused(origin: str) -> None:
    transport, owner = connection()
    _client, data, _ = upgrade(transport, origin=origin)
    [(status, _h, body)] = responses(data)
    assert status == 403
    assert body.startswith(b"This WebSocket serves only the chat page of this server "
                           b"(http://127.0.0.1:5080/)")
    assert owner.closed == ["web request refused: foreign origin"]


def test_no_origin_is_a_program_and_is_accepted() -> None:
    transport, _ = connection()
    _client, data, _ = upgrade(transport, origin=None)
    assert data.startswith(b"HTTP/1.1 101 ")


def test_a_bad_websocket_handshake_is_refused() -> None:
    transport, owner = connection()
    raw = request("/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                  "Sec-WebSocket-Version": "8",
                                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    [(status, _h, body)] = responses(exchange(transport, raw))
    assert status == 426 and b"Not a valid WebSocket request" in body
    assert owner.closed


def test_requests_are_answered_a_few_per_pass() -> None:
    transport, _ = connection()
    transport.data_received(request("/app.css") * 20)
    transport.lines(10)
    assert len(responses(transport.data_to_send([]))) == 8
    assert transport.has_lines
    transport.lines(10)
    transport.lines(10)
    assert len(responses(transport.data_to_send([]))) == 12
    assert not transport.has_lines


def test_page_url() -> None:
    assert page_url("127.0.0.1", 5080) == "http://127.0.0.1:5080/"
    assert page_url("::1", 5080) == "http://[::1]:5080/"
    assert page_url("0.0.0.0", 80).startswith("http://")


def test_static_file_etag_follows_the_content() -> None:
    assert StaticFile.of("a.js", b"1").etag != StaticFile.of("a.js", b"2").etag
    site = WebSite({"/": StaticFile.of("index.html", b"<p>hi</p>")})
    owner = FakeOwner()
    transport = site(owner, 100)
    owner.transport = transport
    [(status, _h, body)] = responses(exchange(transport, request("/")))
    assert (status, body) == (200, b"<p>hi</p>")


_unused = (RejectConnection, RejectData)  # imported for readers of the client side


def test_the_protocol_reference_states_the_bounds_the_adapter_keeps() -> None:
    from pathlib import Path

    from lanchatd.config import Config
    from lanchatd.web import transport

    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    text = " ".join(doc.split("## 17. The WebSocket transport", 1)[1].split())
    assert f"{transport.MAX_HEAD_BYTES} bytes in all" in text
    assert f"request target: {transport.MAX_TARGET_BYTES} bytes" in text
    assert f"header fields: {transport.MAX_HEADERS}" in text
    assert f"requests on one connection: {transport.MAX_REQUESTS}" in text
    assert f"`http_request_timeout` ({Config().http_request_timeout:g} s)" in text
    assert transport.MAX_SKIPPED_MESSAGE == 1 << 20 and "over 1 MiB (1009)" in text
    assert f"`http_port` ({Config().http_port};" in text
    for path in load_files():
        if path not in ("/", "/index.html"):
            assert f"`{path}`" in text, path


_PREFIXES = [b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /ws HTTP/1.1\r\n",
             b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"]


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from(_PREFIXES), parts=st.lists(st.binary(max_size=200), max_size=6),
       eof=st.booleans())
def test_no_http_input_makes_the_adapter_raise(prefix: bytes, parts: list[bytes],
                                               eof: bool) -> None:
    transport, owner = connection()
    for part in [prefix, *parts, *([b""] if eof else [])]:
        if owner.closed:
            break
        transport.data_received(part)
        transport.lines(100)
        transport.data_to_send([GREETING])
    owner.fire()
    transport.data_to_send([])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.binary(max_size=300), max_size=6), eof=st.booleans())
def test_no_websocket_input_makes_the_adapter_raise(parts: list[bytes], eof: bool) -> None:
    transport, owner = connection(max_line=64)
    upgrade(transport)
    for part in [*parts, *([b""] if eof else [])]:
        if owner.closed:
            break
        transport.data_received(part)
        for item in transport.lines(100):
            assert item in (LINE_TOO_LONG, END_OF_INPUT) or (
                isinstance(item, bytes) and len(item) <= 63)
        transport.data_to_send([b'{"type":"x"}\n'])
    transport.close()
    transport.data_to_send([])


def modules_loaded_by(probe: str) -> set[str]:
    """The modules a fresh interpreter has loaded once it has run ``probe`` (Python
    code that ends by printing them as a JSON list): nothing this test run imported
    can hide an import."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=repo, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_the_adapter_does_no_io_and_knows_nothing_of_the_loop_or_the_core() -> None:
    """Importing it loads no socket, selector, thread or event loop, nor the daemon's
    loop or core: the loop hands it bytes and an owner (STYLE.md, item 13)."""
    loaded = modules_loaded_by("import json, sys; before = set(sys.modules); "
                               "import lanchatd.web, lanchatd.web.transport; "
                               "print(json.dumps(sorted(set(sys.modules) - before)))")
    assert "lanchatd.web.transport" in loaded and "h11" in loaded and "wsproto" in loaded
    forbidden = {"socket", "selectors", "select", "threading", "asyncio", "lanchatd.loop",
                 "lanchatd.core", "lanchatd.activity", "lanchatd.control"}
    assert sorted(loaded & forbidden) == []


def test_starting_the_web_port_imports_neither_h11_nor_wsproto() -> None:
    """The daemon's start pays for the page's files only; the first connection imports
    the adapter."""
    loaded = modules_loaded_by("import json, sys; import lanchatd.web, lanchatd.web.address; "
                               "site = lanchatd.web.make_site(); assert '/' in site.files; "
                               "print(json.dumps(sorted(sys.modules)))")
    assert sorted(loaded & {"h11", "wsproto", "lanchatd.web.transport", "hashlib",
                            "http"}) == []


# --------------------------------------------------------------------------- configuration


def test_the_web_flags_become_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    from lanchatd.cli import build_parser, parse_args
    from lanchatd.config import Config, ConfigError, load_config

    parser = build_parser()
    assert parse_args(parser, ["--http-port", "8080"])[1] == {"http_port": 8080}
    assert parse_args(parser, ["--no-http"])[1] == {"http": False}
    with pytest.raises(SystemExit):
        parse_args(parser, ["--no-http", "--http-port", "8080"])
    assert "argument --http-port: not allowed with argument --no-http" in (
        capsys.readouterr().err)
    with pytest.raises(SystemExit):
        parse_args(parser, ["--http-port", "70000"])
    assert "port must be between 0 and 65535, not 70000" in capsys.readouterr().err
    assert (Config().http, Config().http_port, Config().http_request_timeout) == (
        True, 5080, 10.0)
    config = load_config(None, {"http": False, "http_port": 0}, environ={},
                         explicit_path=False)
    assert (config.http, config.http_port) == (False, 0)
    with pytest.raises(ConfigError, match="--http-request-timeout: must be greater than 0"):
        load_config(None, {"http_request_timeout": 0.0}, environ={}, explicit_path=False)


def test_the_web_keys_live_in_their_own_section(tmp_path: Path) -> None:
    from lanchatd.config import ConfigError, load_config

    path = tmp_path / "lanchatd.toml"
    path.write_text("[web]\nhttp = false\nhttp_port = 8081\nhttp_request_timeout = 2.5\n")
    config = load_config(str(path), {}, environ={}, explicit_path=True)
    assert (config.http, config.http_port, config.http_request_timeout) == (False, 8081, 2.5)
    path.write_text("[server]\nhttp_port = 8081\n")
    with pytest.raises(ConfigError, match=r"this key belongs in \[web\], not in \[server\]"):
        load_config(str(path), {}, environ={}, explicit_path=True)
    path.write_text('[web]\nhttp = "no"\n')
    with pytest.raises(ConfigError, match=r"\[web\] http: must be a boolean"):
        load_config(str(path), {}, environ={}, explicit_path=True)

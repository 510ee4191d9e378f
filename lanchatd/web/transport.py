"""The web transport adapter: HTTP/1.1 for the page, a WebSocket at ``/ws`` for chat.

Theory of operation
-------------------
This is a transport adapter of lanchatd/transport.py: bytes in, protocol lines out,
the core's output chunks in, bytes out, and never a socket.  HTTP is h11's and the
WebSocket is wsproto's; this module decides only what to answer.

Every socket accepted on the web port is one connection of the chat core (the loop
tells the core before this adapter sees a byte), so the core's limits apply to it: the
connections per address and in total, the handshake timeout.  The core greets it at
once; the greeting is held back while the connection speaks HTTP.

A connection starts in ``http``: h11 reads requests and each one is answered from
memory (the page's files, or a refusal that says what was wrong).  A ``GET /ws`` that
asks for a WebSocket and comes from a page of this server (its ``Origin`` is this
server's own, from the ``Host`` it asked for) is upgraded with wsproto: the connection
is then ``websocket``, and from there on each text message in is one protocol line for
the core and each line of the core's output is one text message out, starting with the
held greeting.  Protocol v1 passes through unchanged.  A connection never goes back:

    http -> websocket -> closed
    http -> closed

Bounds, all checked where the bytes arrive: a request line and headers of at most
``MAX_HEAD_BYTES`` (h11 refuses more without buffering it), ``MAX_TARGET_BYTES`` for the
target, ``MAX_HEADERS`` headers, no request body, ``MAX_REQUESTS`` requests on one
connection and ``REQUESTS_PER_CALL`` answered per pass of the loop; a request must
arrive whole within ``http_request_timeout`` seconds (of the connection, or of the previous
answer), or the connection is closed (``408`` if part of one came).  A WebSocket message
may be ``max_line - 1`` bytes (a TCP line without its newline); a longer one is skipped
as it arrives and answered ``line_too_long`` as on TCP, and one past
``MAX_SKIPPED_MESSAGE`` ends the connection (close code 1009).

Output framing costs one encoding per chunk, not per member: the frames of a chunk are
the same bytes for every WebSocket member (a server does not mask, and no compression
extension is negotiated, which would make them per-connection), so the frames of the
last few chunks are kept by chunk identity and reused for every member the loop hands
the same chunk to.
"""

from __future__ import annotations

import http
from collections import deque
from typing import Final, Union

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason, FrameProtocol
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from lanchat.protocol.chat import END_OF_INPUT, LINE_TOO_LONG, InputMark
from lanchatd.transport import Owner, TimerHandle
from lanchatd.web.site import (
    WS_PATH,
    Site,
    StaticFile,
    host_allowed,
    http_date,
    request_host,
    security_headers,
)

Input = Union[bytes, InputMark]

MAX_HEAD_BYTES: Final = 8192
MAX_TARGET_BYTES: Final = 2048
MAX_HEADERS: Final = 64
MAX_REQUESTS: Final = 100
REQUESTS_PER_CALL: Final = 8
MAX_HELD_BYTES: Final = 65536  # core output held before the upgrade (a greeting, a bye)
MAX_SKIPPED_MESSAGE: Final = 1 << 20

# The connection states and the only transitions between them.
HTTP: Final = "http"
WEBSOCKET: Final = "websocket"
CLOSED: Final = "closed"
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    HTTP: frozenset({WEBSOCKET, CLOSED}),
    WEBSOCKET: frozenset({CLOSED}),
    CLOSED: frozenset(),
}

_ALLOWED_METHODS = b"GET, HEAD"


# ---------------------------------------------------------------------------- framing

# chunk identity -> (chunk, its frames); the chunk is kept so that its id stays its own.
# The loop hands one room's chunk to every member in the same pass, so the last few are
# enough; the bytes kept are bounded, oldest out first.  (A busy room's chunk is all the
# lines of a 64 KiB read: ~100 KB, framed once for 50 members instead of 50 times.)
_frames: dict[int, tuple[bytes, bytes]] = {}
_FRAME_CACHE_ENTRIES: Final = 8
_FRAME_CACHE_BYTES: Final = 4 << 20
_cached_bytes = 0


# wsproto's frame layer, without a connection around it: a server's frame depends on
# nothing but its payload (no mask, no extension), so one framer serves every member,
# and a room message costs one call per line instead of an event and a state check too.
_FRAMER: Final = FrameProtocol(client=False, extensions=[])


def frame_chunk(chunk: bytes) -> bytes:
    """The WebSocket frames of a chunk of the core's output: one text message a line."""
    global _cached_bytes
    cached = _frames.get(id(chunk))
    if cached is not None and cached[0] is chunk:
        return cached[1]
    lines = chunk.decode("utf-8").split("\n")  # the core's output is UTF-8, \n-ended
    del lines[-1]
    send_data = _FRAMER.send_data
    framed = b"".join([send_data(line, True) for line in lines])
    size = len(chunk) + len(framed)
    if size <= _FRAME_CACHE_BYTES // 2:
        while _frames and (len(_frames) >= _FRAME_CACHE_ENTRIES
                           or _cached_bytes + size > _FRAME_CACHE_BYTES):
            old_chunk, old_framed = _frames.pop(next(iter(_frames)))
            _cached_bytes -= len(old_chunk) + len(old_framed)
        _frames[id(chunk)] = (chunk, framed)
        _cached_bytes += size
    return framed


# ------------------------------------------------------------------------- the adapter


class WebTransport:
    """One web connection: HTTP until it upgrades, then a WebSocket chat member."""

    def __init__(self, site: Site, owner: Owner, max_line: int) -> None:
        self.site = site
        self.owner = owner
        self.max_line = max_line
        self.state = HTTP
        self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._http_more = False  # h11 may hold requests not answered yet
        self._requests = 0
        self._request: h11.Request | None = None  # the one being answered
        self._ws: WSConnection | None = None
        self._out: list[bytes] = []  # own bytes to send: responses, pongs, close frames
        self._held: list[bytes] = []  # the core's chunks before the upgrade
        self._held_bytes = 0
        self._input: deque[Input] = deque()
        self._parts: list[bytes] = []  # the message being received
        self._part_bytes = 0
        self._skipping = False
        self._eof = False
        self._eof_given = False
        self._closing = False  # the core closes us: say goodbye after the last chunks
        self._goodbye_sent = False
        self._timer: TimerHandle | None = owner.call_later(
            site.request_timeout, self._request_timed_out)

    def _become(self, state: str) -> None:
        if state not in TRANSITIONS[self.state]:
            raise AssertionError(f"web connection: no transition {self.state} -> {state}")
        self.state = state

    # ------------------------------------------------------------------ input

    def data_received(self, data: bytes) -> None:
        if self._eof:
            return  # nothing comes after the end (h11 and wsproto would both object)
        if self.state == HTTP:
            self._http.receive_data(data)
            self._http_more = True
            if not data:
                self._eof = True
        elif self.state == WEBSOCKET:
            self._ws_received(data)
        elif not data:
            self._eof = True

    def lines(self, limit: int) -> list[Input]:
        if self._http_more and self.state == HTTP:
            self._serve_http()
        out: list[Input] = []
        queue = self._input
        while queue and len(out) < limit:
            out.append(queue.popleft())
        if (self._eof and not queue and not self._eof_given and not self._http_more
                and len(out) < limit):
            self._eof_given = True
            out.append(END_OF_INPUT)
        return out

    @property
    def has_lines(self) -> bool:
        if self._closing:
            return False  # what a closing connection sends is read and dropped
        return bool(self._input) or (self._http_more and self.state == HTTP) or (
            self._eof and not self._eof_given)

    # ------------------------------------------------------------------ output

    def data_to_send(self, chunks: list[bytes]) -> bytes:
        if self.state == WEBSOCKET and self._ws is not None:
            ws = self._ws
            if ws.state is ConnectionState.OPEN:
                if not self._out and len(chunks) == 1 and not self._closing:
                    return frame_chunk(chunks[0])  # a room message: shared frames
                out = self._out
                out.extend(frame_chunk(chunk) for chunk in chunks)
            else:
                out = self._out
        else:
            for chunk in chunks:
                self._hold(chunk)
            out = self._out
        if self._closing and not self._goodbye_sent:
            self._goodbye_sent = True
            out.append(self._goodbye())
        self._out = []
        return b"".join(out)

    def close(self) -> None:
        self._closing = True
        self._cancel_timer()

    @property
    def handshaking(self) -> bool:
        return False  # a refusal before the upgrade is answered at once (a 503)

    def _goodbye(self) -> bytes:
        """The last bytes when the core ends the connection."""
        if self.state == WEBSOCKET and self._ws is not None:
            data = b""
            if self._ws_sendable():
                data = self._ws.send(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
            self._become(CLOSED)
            return data
        text = self._held_text() if self.state == HTTP else ""
        if text and not self._eof and self._http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            # Refused by the core before any upgrade (full, standby, stopped) or ended
            # by it: tell the browser why, in the core's own words.
            return self._response(503, text, close=True)
        return b""

    def _hold(self, chunk: bytes) -> None:
        self._held.append(chunk)
        self._held_bytes += len(chunk)
        if self._held_bytes > MAX_HELD_BYTES:
            self._held = []
            self._held_bytes = 0
            self.owner.close("the web connection did not open its WebSocket")

    def _held_text(self) -> str:
        """The held lines for a person: a refusing greeting's text, a bye's words."""
        lines = []
        for line in b"".join(self._held).decode("utf-8", "replace").splitlines():
            if line.startswith("LANCHAT/"):
                _version, status, text = ([*line.split(" ", 2), "", ""])[:3]
                if status == "ready":
                    continue
                line = text
            lines.append(line.lstrip("!* ").strip())
        return "\n".join(line for line in lines if line)

    # ------------------------------------------------------------------ HTTP

    def _serve_http(self) -> None:
        """Answer the requests h11 has whole, at most REQUESTS_PER_CALL of them."""
        conn = self._http
        answered = 0
        while self.state == HTTP and not self._closing:
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
                self._request = None
                self._arm_timer()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                if not self._closing:
                    self._http_more = False
                    self.owner.close("web page served", quiet=True)
                return
            if answered >= REQUESTS_PER_CALL:
                return  # _http_more stays set: the rest in the next pass
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._http_more = False
                self._refuse_bad_request(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                self._http_more = False
                return
            if isinstance(event, h11.Request):
                answered += 1
                self._requests += 1
                self._on_request(event)
            elif isinstance(event, h11.ConnectionClosed):
                self._http_more = False
                self._eof = True
                return
            # Data and EndOfMessage: nothing to do (a body was refused at its request).

    def _on_request(self, request: h11.Request) -> None:
        self._request = request
        target = request.target
        path = target.split(b"?", 1)[0]
        if len(target) > MAX_TARGET_BYTES:
            self._fail_http(414, f"The address is too long (at most {MAX_TARGET_BYTES} "
                            "bytes).", "web request refused: address too long")
            return
        head = len(target) + sum(len(key) + len(value) + 4 for key, value in request.headers)
        if head > MAX_HEAD_BYTES:
            # h11 bounds a head that is still arriving; one that came whole in one read
            # is measured here.
            self._fail_http(431, f"The request line and header fields are too long (at "
                            f"most {MAX_HEAD_BYTES} bytes in all).",
                            "web request refused: head too long")
            return
        if len(request.headers) > MAX_HEADERS:
            self._fail_http(431, f"Too many header fields (at most {MAX_HEADERS}).",
                            "web request refused: too many headers")
            return
        if _has_body(request):
            self._fail_http(413, "This server takes no request body.",
                            "web request refused: a body")
            return
        host = _header(request, b"host")
        if host is not None and not host_allowed(host, self.site.host_names):
            # DNS rebinding (site.host_allowed): a page elsewhere, under its own name.
            where = f" at {self.site.page}" if self.site.page else " by its address"
            self._fail_http(421, f"This server does not answer to the name "
                            f"{(request_host(host) or _text(host))[:200]!r}, as a safeguard "
                            "against other web sites that point their name at it (DNS "
                            f"rebinding): open the chat page{where}. An administrator "
                            "who serves it under another name adds that name to "
                            "http_host_names in lanchatd.toml.",
                            "web request refused: unknown host name")
            return
        if path == WS_PATH.encode("ascii"):
            self._upgrade(request)
            return
        if request.method not in (b"GET", b"HEAD"):
            self._send_http(self._response(
                405, f"The method {request.method.decode('ascii', 'replace')} is not "
                "allowed here: this server only serves the chat page (GET).",
                extra=[(b"allow", _ALLOWED_METHODS)]))
            return
        file = self.site.files.get(path.decode("ascii", "replace"))
        if file is None:
            self._send_http(self._response(
                404, f"Not found: {path.decode('ascii', 'replace')[:200]}. The chat page "
                "is at /."))
            return
        self._send_http(self._file_response(request, file))
        if self._requests >= MAX_REQUESTS:
            self.owner.close("web connection used up", quiet=True)

    def _file_response(self, request: h11.Request, file: StaticFile) -> bytes:
        headers = [
            *self._headers(),
            (b"content-type", file.content_type.encode("ascii")),
            (b"etag", file.etag),
            # Always ask again (a 304 is cheap), so a browser never runs an old page
            # against an upgraded daemon.
            (b"cache-control", b"no-cache"),
        ]
        if self._requests >= MAX_REQUESTS:
            headers.append((b"connection", b"close"))
        if file.etag in _header_values(request, b"if-none-match"):
            return self._send_events(h11.Response(status_code=304, headers=headers,
                                                  reason=b"Not Modified"))
        headers.append((b"content-length", str(len(file.body)).encode("ascii")))
        response = h11.Response(status_code=200, headers=headers, reason=b"OK")
        return self._send_events(response, h11.Data(data=file.body))

    def _upgrade(self, request: h11.Request) -> None:
        origin = _header(request, b"origin")
        host = _header(request, b"host")
        if origin is not None and not _same_origin(origin, host, self.site.scheme):
            self._fail_http(403, "This WebSocket serves only the chat page of this server "
                            f"({self.site.scheme}://{_text(host)}/), not pages from "
                            f"{_text(origin)}.", "web request refused: foreign origin")
            return
        if request.method != b"GET" or _header(request, b"upgrade") is None:
            self._send_http(self._response(
                426, f"{WS_PATH} is the chat's WebSocket: open the page at / instead.",
                extra=[(b"upgrade", b"websocket"), (b"connection", b"Upgrade")]))
            return
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(list(request.headers), request.target)
            events = list(ws.events())
        except WsRemoteProtocolError as exc:
            hint = exc.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            self._fail_http(status, f"Not a valid WebSocket request: {exc}.",
                            "web request refused: bad WebSocket handshake")
            return
        if not events or not isinstance(events[0], Request):  # pragma: no cover
            self._fail_http(400, "Not a valid WebSocket request.",
                            "web request refused: bad WebSocket handshake")
            return
        # The request had no body: h11's next event is its end, after which any bytes
        # it holds are the WebSocket's first frames.
        try:
            end = self._http.next_event()
        except h11.RemoteProtocolError:
            end = None
        if not isinstance(end, h11.EndOfMessage):  # pragma: no cover - h11 guarantees it
            self._fail_http(400, "Not a valid WebSocket request.",
                            "web request refused: bad WebSocket handshake")
            return
        trailing, closed = self._http.trailing_data
        self._out.append(ws.send(AcceptConnection(
            extra_headers=[(b"date", http_date(self.site.clock()))])))
        self._ws = ws
        self._cancel_timer()
        self._become(WEBSOCKET)
        self._http_more = False
        held, self._held, self._held_bytes = self._held, [], 0
        self._out.extend(frame_chunk(chunk) for chunk in held)
        self.owner.want_write()
        # A chat member from now on: the core greets it (or refuses it, in standby) and
        # logs its arrival; its page loads before were not worth a log line.
        self.owner.session_opened()
        if trailing:
            self._ws_received(trailing)
        if closed:
            self._ws_received(b"")

    def _send_http(self, data: bytes) -> None:
        self._out.append(data)
        self.owner.want_write()

    def _fail_http(self, status: int, message: str, reason: str) -> None:
        """Answer ``status`` with ``message``, then end the connection."""
        self._send_http(self._response(status, message, close=True))
        self._http_more = False
        self.owner.close(reason)

    def _refuse_bad_request(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        if status == 431:
            message = (f"The request line and header fields are too long (at most "
                       f"{MAX_HEAD_BYTES} bytes in all).")
            reason = "web request refused: head too long"
        else:
            message = f"Not a valid HTTP/1.1 request: {exc}."
            reason = "web request refused: malformed HTTP"
        if self._http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._fail_http(status, message, reason)
        else:
            self.owner.close(reason)

    def _response(self, status: int, message: str, *, close: bool = False,
                  extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
        """A plain-text response that says in one sentence what happened."""
        body = (message + "\n").encode("utf-8")
        headers = [
            *self._headers(),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"),
            *(extra or []),
        ]
        if close:
            headers.append((b"connection", b"close"))
        reason = http.HTTPStatus(status).phrase.encode("ascii")
        response = h11.Response(status_code=status, headers=headers, reason=reason)
        return self._send_events(response, h11.Data(data=body))

    def _send_events(self, response: h11.Response, data: h11.Data | None = None) -> bytes:
        conn = self._http
        out = conn.send(response) or b""
        head = self._request is not None and self._request.method == b"HEAD"
        if data is not None and not head:  # a HEAD is answered with the headers alone
            out += conn.send(data) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        return out

    def _headers(self) -> list[tuple[bytes, bytes]]:
        # RFC 9110, 6.6.1: an origin server with a clock sends Date in every response.
        return [(b"date", http_date(self.site.clock())),
                *security_headers(self._host(), self.site.scheme)]

    def _host(self) -> bytes | None:
        # The Host of the request being answered, for the page's own WebSocket address.
        return None if self._request is None else _header(self._request, b"host")

    # ------------------------------------------------------------------ timers

    def _arm_timer(self) -> None:
        self._cancel_timer()
        self._timer = self.owner.call_later(self.site.request_timeout,
                                            self._request_timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _request_timed_out(self, now: float) -> None:
        self._timer = None
        if self.state != HTTP or self._closing:
            return
        partial, _closed = self._http.trailing_data
        if partial and self._http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._fail_http(408, f"The request did not arrive within "
                            f"{self.site.request_timeout:g} seconds.",
                            "web request timed out")
        else:
            self.owner.close("web connection idle", quiet=True)

    # ------------------------------------------------------------------ WebSocket

    def _ws_sendable(self) -> bool:
        assert self._ws is not None
        return self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)

    def _ws_received(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        if ws.state not in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            return  # after a close frame: nothing more is read
        ws.receive_data(data if data else None)
        ping: Ping | None = None
        for event in ws.events():
            if isinstance(event, TextMessage):
                self._on_text(event)
                if self._closing:
                    return  # the message was too big: nothing more is read
            elif isinstance(event, Ping):
                # RFC 6455 lets a pong answer only the latest of several pings: a read
                # full of pings costs one pong, not one each (STYLE.md, item 14).
                ping = event
            elif isinstance(event, CloseConnection):
                self._on_ws_close(ws, event)
                return
            elif isinstance(event, BytesMessage):
                self._ws_fail(CloseReason.UNSUPPORTED_DATA,
                              "lanchat takes text messages only: one JSON object each",
                              "websocket: binary message")
                return
            # Pong: an answer to nothing we sent; ignored.
        if ping is not None and self._ws_sendable():
            self._out.append(ws.send(ping.response()))
            self.owner.want_write()

    def _on_text(self, event: TextMessage) -> None:
        data = event.data.encode("utf-8")  # wsproto checked it is valid UTF-8
        if self._skipping:
            self._part_bytes += len(data)
        else:
            self._parts.append(data)
            self._part_bytes += len(data)
            if self._part_bytes > self.max_line - 1:
                self._skipping = True  # skipped as it arrives, never buffered
                self._parts = []
        if self._part_bytes > MAX_SKIPPED_MESSAGE:
            self._ws_fail(CloseReason.MESSAGE_TOO_BIG,
                          f"message too big (over {MAX_SKIPPED_MESSAGE} bytes)",
                          "websocket: message too big")
            return
        if event.message_finished:
            if self._skipping:
                self._input.append(LINE_TOO_LONG)
            else:
                self._input.append(b"".join(self._parts))
            self._parts = []
            self._part_bytes = 0
            self._skipping = False

    def _on_ws_close(self, ws: WSConnection, event: CloseConnection) -> None:
        if ws.state is ConnectionState.REMOTE_CLOSING:
            # The browser closes: answer its close frame, and the core hears the end.
            self._out.append(ws.send(event.response()))
            self.owner.want_write()
            self._eof = True
        elif ws.state is ConnectionState.CLOSED:
            self._eof = True  # the answer to our close, or the socket ended without one
        else:
            # wsproto found a protocol error (a bad frame, invalid UTF-8): its event
            # carries the close code to send.
            self._ws_fail(event.code, event.reason or "protocol error",
                          f"websocket: {event.reason or 'protocol error'}")

    def _ws_fail(self, code: int, reason: str, why: str) -> None:
        ws = self._ws
        assert ws is not None
        if self._ws_sendable():
            self._out.append(ws.send(CloseConnection(code=code, reason=reason[:120])))
        self._parts = []
        self._input.clear()
        self.owner.close(why)


# ---------------------------------------------------------------------------- helpers


def _header(request: h11.Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return None


def _header_values(request: h11.Request, name: bytes) -> list[bytes]:
    values: list[bytes] = []
    for key, value in request.headers:
        if key == name:
            values.extend(part.strip() for part in bytes(value).split(b","))
    return values


def _has_body(request: h11.Request) -> bool:
    length = _header(request, b"content-length")
    return (length is not None and length.strip() != b"0") or (
        _header(request, b"transfer-encoding") is not None)


def _same_origin(origin: bytes, host: bytes | None, scheme: str) -> bool:
    """True when ``Origin`` names the server the browser asked for (its ``Host``)."""
    if host is None:
        return False
    return origin.strip().lower() == f"{scheme}://".encode("ascii") + host.strip().lower()


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("ascii", "replace")[:200]

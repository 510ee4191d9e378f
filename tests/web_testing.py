"""Clients of the web port for the tests: raw HTTP, a WebSocket member, a headless browser.

``WsClient`` is a blocking WebSocket client made with wsproto (the same library the
daemon uses, on the other side), acting as a program that speaks protocol v1 in text
messages.  ``http_exchange`` sends raw bytes and reads the answer, for the hostile
cases.  ``browser`` starts Debian's headless Chromium through chromedriver with the
flags it needs as root and in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lanchat_testing import JsonEvents
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

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "web"
DEFAULT_TIMEOUT = 10.0


class WsRefused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"WebSocket refused: {status} {body!r}")
        self.status = status
        self.body = body


class WsClient(JsonEvents):
    """A WebSocket member: one protocol line per text message."""

    def __init__(self, addr: tuple[str, int], *, origin: str | None = "auto",
                 path: str = "/ws", timeout: float = DEFAULT_TIMEOUT,
                 hello: bool = False, host: str | None = None) -> None:
        """``host``: the Host to send (the address connected to, unless given)."""
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.timeout = timeout
        self.ws = WSConnection(ConnectionType.CLIENT)
        if host is None:
            host = f"{addr[0]}:{addr[1]}" if ":" not in addr[0] else f"[{addr[0]}]:{addr[1]}"
        headers: list[tuple[bytes, bytes]] = []
        if origin == "auto":
            origin = f"http://{host}"
        if origin is not None:
            headers.append((b"origin", origin.encode()))
        self.sock.sendall(self.ws.send(Request(host=host, target=path,
                                               extra_headers=headers)))
        self.messages: list[str] = []
        self.closed: CloseConnection | None = None
        self.pongs: list[bytes] = []
        self._wait_open()
        self.greeting = self.recv_text()
        if hello:
            self.send({"type": "hello", "versions": [1], "client": "tests"})
            self.welcome = self.recv()

    def _wait_open(self) -> None:
        status, body = 0, b""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise WsRefused(status, b"")
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise WsRefused(status, body)
            self._read(deadline)

    def _read(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing from the server within the timeout")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("nothing from the server within the timeout") from None
        except ConnectionResetError:
            data = b""
        self.ws.receive_data(data or None)

    def _pump(self, deadline: float) -> None:
        """Sort what came (messages, pongs, a close); read once if nothing had."""
        if not self._drain():
            self._read(deadline)
            self._drain()

    def _drain(self) -> bool:
        before = (len(self.messages), len(self.pongs), self.closed)
        partial = getattr(self, "_partial", "")
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                partial += event.data
                if event.message_finished:
                    self.messages.append(partial)
                    partial = ""
            elif isinstance(event, BytesMessage):
                raise AssertionError(f"a binary message from the server: {event.data!r}")
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                self.closed = event
                try:
                    self.sock.sendall(self.ws.send(event.response()))
                except Exception:  # already closed on our side
                    pass
        self._partial = partial
        return before != (len(self.messages), len(self.pongs), self.closed)

    def recv_text(self, timeout: float | None = None) -> str | None:
        """The next text message, or None once the server closed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.messages:
            if self.closed is not None:
                return None
            self._pump(deadline)
        return self.messages.pop(0)

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        text = self.recv_text(timeout)
        return None if text is None else json.loads(text)

    def closed_detail(self) -> str:
        return f"closed ({self.closed})"

    def wait_closed(self, timeout: float | None = None) -> CloseConnection:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self.closed is None:
            self._pump(deadline)
        return self.closed

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def send(self, obj: dict[str, Any]) -> None:
        self.send_text(json.dumps(obj))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> WsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http_exchange(addr: tuple[str, int], data: bytes, *, timeout: float = DEFAULT_TIMEOUT,
                  read_all: bool = True) -> tuple[int, dict[str, str], bytes]:
    """Send ``data``, read until the server closes; (status, headers, body) of the answer."""
    with socket.create_connection(addr, timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        return read_response(sock, timeout=timeout)


def read_response(sock: socket.socket, *, timeout: float = DEFAULT_TIMEOUT
                  ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from ``sock`` (Content-Length framed, or up to the close)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            status = int(head[0].split()[1])
            body = buf[head_end + 4:]
            length = int(headers.get("content-length", "-1"))
            if length >= 0 and len(body) >= length:
                return status, headers, body[:length]
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no whole response within the timeout; have {buf[:300]!r}")
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            if head_end >= 0:
                return status, headers, body
            raise ConnectionError(f"closed without a response; have {buf[:300]!r}")
        buf += data


# ------------------------------------------------------------------ the browser

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
)


def find_program(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(f"none of {', '.join(names)} is installed: the browser tests need "
                       "Debian's chromium and chromium-driver (see .ci/run)")


@contextmanager
def browser(width: int = 1000, height: int = 700, language: str = "en-US",
            mobile: bool = False) -> Iterator[Any]:
    """A headless Chromium driven by chromedriver, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium phones home otherwise
    options = webdriver.ChromeOptions()
    options.binary_location = find_program("chromium", "chromium-browser")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--lang={language}")
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    profile = tempfile.mkdtemp(prefix="lanchat-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(find_program("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    if mobile:
        # A window cannot be narrower than Chromium's minimum (500 px headless); a
        # phone is emulated as DevTools does it: its viewport, touch and mobile layout.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
        driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


class CuttableProxy:
    """A TCP relay in a thread, whose connections the test can cut: a network blip.

    The browser talks to the proxy's address (``page``), so its Origin and Host are the
    proxy's and agree with each other; the daemon sees a client on loopback.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        import selectors
        import threading

        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.page = f"http://127.0.0.1:{self.port}/"
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import selectors

        deadline = time.monotonic() + 300  # bounded, whatever the test does
        while self.running and time.monotonic() < deadline:
            for key, _mask in self.sel.select(0.05):
                with self.lock:
                    if key.data is None:
                        try:
                            client, _ = self.listener.accept()
                        except BlockingIOError:
                            continue
                        server = socket.create_connection(self.upstream, timeout=5)
                        for a, b in ((client, server), (server, client)):
                            a.setblocking(False)
                            self.pairs[a] = b
                            self.sel.register(a, selectors.EVENT_READ, b)
                        continue
                    src = key.fileobj
                    assert isinstance(src, socket.socket)
                    if src not in self.pairs:
                        continue
                    try:
                        data = src.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if data:
                        try:
                            key.data.sendall(data)
                            continue
                        except OSError:
                            pass
                    self._drop(src)

    def _drop(self, sock: socket.socket) -> None:
        other = self.pairs.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self.pairs.pop(s, None)
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    def cut(self) -> None:
        """Close every relayed connection, both sides, at once."""
        with self.lock:
            for sock in list(self.pairs):
                self._drop(sock)

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.cut()
        self.listener.close()

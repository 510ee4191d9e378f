"""The web client's files, the headers every web response carries, and the factory.

The page is three static files (HTML, CSS, JavaScript), an icon and one string
catalogue per language, shipped as package data in ``lanchatd/web/static/``.  They are
read once, when the daemon starts, and served from memory: a request never touches the
disk, and what a browser gets cannot change under a running daemon.

What the daemon imports at start is kept light: the factory (listener.py) imports the
adapter (transport.py, with h11 and wsproto: tens of milliseconds of imports) at the
first web connection, not before the readiness line.
"""

from __future__ import annotations

import ipaddress
import os
import time
import zlib
from typing import Callable, Final, Protocol

from lanchat.protocol.record import Record, record

#: Seconds a request may take to arrive whole (the default of http_request_timeout).
REQUEST_TIMEOUT: Final = 10.0
STATIC_DIR: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

#: Where the page's WebSocket connects.
WS_PATH = "/ws"

CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}

# Nothing inline, nothing from elsewhere: the page's own script, style and icon, and a
# WebSocket back to where the page came from ('self' covers ws: to the same host and
# port in browsers that implement CSP level 3; the explicit ws:/wss: sources below are
# built from the request's Host by ``security_headers`` for older ones).
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'{ws}; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'")

_COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"server", b"lanchatd"),
)


def security_headers(host: bytes | None, scheme: str) -> list[tuple[bytes, bytes]]:
    """The headers every response carries, the Content-Security-Policy first."""
    ws = ""
    if host is not None and _plain_host(host):
        name = host.decode("ascii")
        ws = f" {'wss' if scheme == 'https' else 'ws'}://{name}"
    return [(b"content-security-policy", _CSP.format(ws=ws).encode("ascii")),
            *_COMMON_HEADERS]


def _plain_host(host: bytes) -> bool:
    """True for a Host value that is safe to repeat inside a CSP source."""
    return 0 < len(host) <= 255 and all(
        c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]"
        for c in host)


class Site(Protocol):
    """What every web connection shares (listener.WebSite): the page's files, the scheme
    it is served with, how long a request may take to arrive, the names it answers to,
    the page's address for people, and the wall clock (for the ``Date`` header)."""

    files: dict[str, StaticFile]
    scheme: str
    request_timeout: float
    host_names: frozenset[str]
    page: str
    clock: Callable[[], float]


# ----------------------------------------------------------------------- the Date header

_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                  "Nov", "Dec")


def http_date(now: float) -> bytes:
    """``now`` as RFC 9110's IMF-fixdate (``Tue, 01 Dec 2026 09:15:02 GMT``).

    Written out here rather than with strftime, whose day and month names follow the
    process's locale."""
    t = time.gmtime(now)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT").encode("ascii")


# ----------------------------------------------------------------------- the Host check

#: The ``http_host_names`` entry that turns the Host check off.
ANY_HOST: Final = "*"


def own_host_names(hostname: str, extra: tuple[str, ...] = (), bound: str = ""
                   ) -> frozenset[str]:
    """The names the page answers to, besides any IP address and ``localhost``: this
    machine's host name, its mDNS name (``NAME.local``, as Avahi announces it), the
    name the port is bound to if it is one, and what the administrator added."""
    names = {hostname, f"{hostname}.local", bound, *extra}
    return frozenset(n.strip().lower().rstrip(".") for n in names if n.strip())


def request_host(value: bytes) -> str | None:
    """The host of a ``Host`` header without its port, lower case; None if malformed."""
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[1:end], text[end + 1:]
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return None
    else:
        name, colon, port = text.rpartition(":")
        if not colon:
            name = text
        elif not port.isdigit():
            return None
    name = name.rstrip(".")
    return name or None


def host_allowed(value: bytes, names: frozenset[str]) -> bool:
    """True when a request's ``Host`` is one this server answers to.

    This is the defence against DNS rebinding: a page on another site that makes its
    own name resolve to this machine gets its browser to send requests here, with
    ``Host`` (and ``Origin``) naming that site, so the Origin check alone passes it.
    An IP address is always allowed: a browser sends one only for a page opened by that
    address, whose origin is then this server's, and the interfaces' addresses (DHCP,
    a NAT in front) are not worth chasing.  Names are checked against ``names``
    (``own_host_names``); ``localhost`` and ``*.localhost`` are loopback in every
    browser (RFC 6761).
    """
    host = request_host(value)
    if host is None:
        return False
    if ANY_HOST in names or host in names or host == "localhost" or host.endswith(
            ".localhost"):
        return True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


@record
class StaticFile(Record):
    body: bytes
    content_type: str
    etag: bytes  # a strong validator: the body's hash, quoted

    @classmethod
    def of(cls, name: str, body: bytes) -> StaticFile:
        suffix = name[name.rfind("."):]
        # Length and CRC-32 of the body: the files change only with a new release, and
        # zlib is at hand where hashlib would cost the start an OpenSSL load.
        tag = f'"{len(body):x}-{zlib.crc32(body):08x}"'
        return cls(body, CONTENT_TYPES.get(suffix, "application/octet-stream"),
                   tag.encode("ascii"))


def load_files(root: str = STATIC_DIR) -> dict[str, StaticFile]:
    """Every file under ``root``, by the path the browser asks for (``/`` is the page)."""
    files: dict[str, StaticFile] = {}

    def walk(folder: str, prefix: str) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                walk(entry.path, f"{prefix}{entry.name}/")
            else:
                with open(entry.path, "rb") as f:
                    files[f"{prefix}{entry.name}"] = StaticFile.of(entry.name, f.read())

    walk(root, "/")
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    if "/favicon.svg" in files:
        # Where browsers and feed readers look without reading the page's <link>: the
        # icon, rather than a 404 in their console and the daemon's log.
        files["/favicon.ico"] = files["/favicon.svg"]
    return files

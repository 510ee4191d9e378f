"""Discovery (UDP, port 5001), sans-I/O.

Two probes are answered, each by one unicast datagram to the sender:

* the original design's ASCII probe ``DISCOVER_SERVER``, answered ``SERVER_HERE``
  byte for byte;
* the versioned JSON probe ``{"type":"discover","version":1,"nonce":"..."}``, answered
  by an ``announce`` object naming the server, its TCP port (and the port of its
  browser client, when it serves one) and its state, with the probe's nonce so the
  client can match answers to its probe.  A server that serves TLS adds its TLS port
  and its key's fingerprint (``lanchat.protocol.fingerprint``); a server with the plain
  port turned off announces ``port`` 0.

Anything else, and anything longer than ``MAX_DATAGRAM``, is a ``RemoteProtocolError``
that the daemon counts and otherwise ignores (no reply: a reply to garbage would make
the daemon a reflector).
"""

from __future__ import annotations

import json

from lanchat.protocol import fingerprint, vocabulary
from lanchat.protocol.chat import STATES
from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError
from lanchat.protocol.record import Record, record
from lanchat.protocol.vocabulary import LocalCode

DEFAULT_PORT = vocabulary.DISCOVERY_PORT  # the UDP discovery port
DISCOVERY_VERSION = 1
LEGACY_PROBE = b"DISCOVER_SERVER"
LEGACY_REPLY = b"SERVER_HERE"
MAX_DATAGRAM = 512
MAX_NONCE = 64
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)


@record
class LegacyProbe(Record):
    pass


@record
class Probe(Record):
    nonce: str
    version: int = DISCOVERY_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, str) or not 1 <= len(self.nonce) <= MAX_NONCE:
            raise LocalProtocolError(LocalCode.BAD_PROBE,
                                     f"nonce must be 1 to {MAX_NONCE} characters.")
        if type(self.version) is not int or self.version < 1:
            raise LocalProtocolError(LocalCode.BAD_PROBE, "version must be a positive integer.")


@record
class Announce(Record):
    nonce: str
    server_id: str
    name: str
    port: int
    state: str
    server_version: str
    version: int = DISCOVERY_VERSION
    tls_port: int | None = None  # with tls_fingerprint, or neither
    tls_fingerprint: str | None = None
    http_port: int = 0  # the browser client's port; 0: not served (or an older server)

    def __post_init__(self) -> None:
        tls = self.tls_port is not None or self.tls_fingerprint is not None
        ok = (
            isinstance(self.nonce, str)
            and isinstance(self.server_id, str) and 0 < len(self.server_id) <= 64
            and isinstance(self.name, str) and len(self.name) <= 64
            and type(self.port) is int and 0 <= self.port < 65536
            and (self.port > 0 or tls)  # port 0: no plain port, only TLS
            and (not tls or (type(self.tls_port) is int and 0 < self.tls_port < 65536
                             and fingerprint.is_fingerprint(self.tls_fingerprint)))
            and self.state in STATES
            and isinstance(self.server_version, str) and len(self.server_version) <= 32
            and type(self.version) is int
            and type(self.http_port) is int and 0 <= self.http_port < 65536
        )
        if not ok:
            raise LocalProtocolError(LocalCode.BAD_ANNOUNCE, "Malformed announce fields.")


def encode_probe(nonce: str) -> bytes:
    Probe(nonce)
    return json.dumps(
        {"type": "discover", "version": DISCOVERY_VERSION, "nonce": nonce},
        ensure_ascii=False,  # 64 characters as \uXXXX pairs would not fit MAX_DATAGRAM
        separators=(",", ":"),
    ).encode("utf-8", "backslashreplace")


def parse_probe(data: bytes) -> Probe | LegacyProbe:
    """Decode a datagram received by the server."""
    if len(data) > MAX_DATAGRAM:
        raise RemoteProtocolError(LocalCode.TOO_LARGE, f"Probe of {len(data)} bytes is too large.")
    if data.rstrip(b"\r\n") == LEGACY_PROBE:
        return LegacyProbe()
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RemoteProtocolError(
            LocalCode.BAD_PROBE, "Probe is neither DISCOVER_SERVER nor JSON."
        ) from None
    if not isinstance(obj, dict) or obj.get("type") != "discover":
        raise RemoteProtocolError(LocalCode.BAD_PROBE,
                                  "JSON probe must be an object of type 'discover'.")
    try:
        return Probe(obj.get("nonce"), obj.get("version", DISCOVERY_VERSION))  # type: ignore[arg-type]
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.code, exc.message) from None


def encode_announce(announce: Announce) -> bytes:
    fields: dict[str, object] = {
        "type": "announce",
        "version": announce.version,
        "nonce": announce.nonce,
        "server_id": announce.server_id,
        "name": announce.name,
        "port": announce.port,
        "state": announce.state,
        "server_version": announce.server_version,
    }
    if announce.http_port:
        fields["http_port"] = announce.http_port
    if announce.tls_port is not None:
        fields["tls_port"] = announce.tls_port
        fields["tls_fingerprint"] = announce.tls_fingerprint
    return json.dumps(
        fields,
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8", "backslashreplace")  # a probe's lone surrogate, as its JSON escape


def parse_announce(data: bytes) -> Announce:
    """Decode a datagram received by a client in answer to its JSON probe."""
    if len(data) > 4 * MAX_DATAGRAM:
        raise RemoteProtocolError(LocalCode.TOO_LARGE, "Announce is too large.")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RemoteProtocolError(LocalCode.BAD_ANNOUNCE, "Answer is not JSON.") from None
    if not isinstance(obj, dict) or obj.get("type") != "announce":
        raise RemoteProtocolError(LocalCode.BAD_ANNOUNCE, "Answer is not an announce.")
    try:
        return Announce(
            nonce=obj.get("nonce"),  # type: ignore[arg-type]
            server_id=obj.get("server_id"),  # type: ignore[arg-type]
            name=obj.get("name"),  # type: ignore[arg-type]
            port=obj.get("port"),  # type: ignore[arg-type]
            state=obj.get("state"),  # type: ignore[arg-type]
            server_version=obj.get("server_version"),  # type: ignore[arg-type]
            version=obj.get("version", DISCOVERY_VERSION),
            tls_port=obj.get("tls_port"),
            tls_fingerprint=obj.get("tls_fingerprint"),
            http_port=obj.get("http_port", 0),
        )
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.code, exc.message) from None

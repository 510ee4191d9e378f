"""Finding lanchat servers on the LAN.

The client sends the JSON discovery probe (``lanchat.protocol.discovery``) with a random
nonce to the limited broadcast address 255.255.255.255 *and* to the directed broadcast
address of every interface that is up, is not loopback and has a broadcast address:
many networks pass only one of the two.  Each server answers by unicast with an
``announce`` carrying the nonce, its id, name, TCP port and state; the server's
address is the answer's source address.  Answers with another nonce, and anything
that is not an announce, are ignored.  A server reachable over several interfaces
answers once per probe it gets: answers are merged by server id.

Collecting stops at the timeout, or earlier once the answer set is clear: after the
first answer, a short quiet spell with no new server ends the wait (every server on
one LAN answers within milliseconds).  A probe is sent again once halfway through a
silent wait, since UDP may lose the first.

The interface broadcast addresses are read with the same ioctls ``ifconfig`` uses
(``SIOCGIFCONF``, ``SIOCGIFFLAGS``, ``SIOCGIFBRDADDR``): reading them sends nothing.
"""

from __future__ import annotations

import errno
import ipaddress
import secrets
import selectors
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from lanchat.protocol import discovery as wire
from lanchat.protocol.errors import RemoteProtocolError

LIMITED_BROADCAST = "255.255.255.255"
SETTLE_SECONDS = 0.3

# Linux ioctl numbers (linux/sockios.h) and interface flags (linux/if.h).
SIOCGIFCONF = 0x8912
SIOCGIFFLAGS = 0x8913
SIOCGIFBRDADDR = 0x8919
IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_LOOPBACK = 0x8
IFNAMSIZ = 16


@dataclass(frozen=True)
class Found:
    """One server that answered."""

    host: str
    port: int
    server_id: str
    name: str
    state: str
    server_version: str

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def accepts_people(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class Interface:
    name: str
    flags: int
    broadcast: str | None


# ------------------------------------------------------------------ interfaces


def _ifreq_size() -> int:
    # struct ifreq: the name, then a union whose largest member (struct ifmap) is 24
    # bytes with 8-byte longs and 16 with 4-byte ones.
    return IFNAMSIZ + (24 if struct.calcsize("P") == 8 else 16)


def list_interfaces() -> list[Interface]:
    """The IPv4 interfaces of this host (Linux ioctls; an empty list elsewhere)."""
    if not sys.platform.startswith("linux"):
        return []
    import array
    import fcntl

    size = _ifreq_size()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        count = 32
        while True:
            buf = array.array("B", bytes(size * count))
            address, _ = buf.buffer_info()
            ifconf = struct.pack("iP", len(buf), address)
            try:
                result = fcntl.ioctl(sock.fileno(), SIOCGIFCONF, ifconf)
            except OSError:
                return []
            length = struct.unpack("iP", result)[0]
            if length < len(buf) or count >= 4096:
                break
            count *= 4  # the table was full: there may be more interfaces
        data = buf.tobytes()[:length]
        names: list[str] = []
        for offset in range(0, length - size + 1, size):
            name = data[offset:offset + IFNAMSIZ].split(b"\0", 1)[0].decode("ascii", "replace")
            if name and name not in names:
                names.append(name)
        out: list[Interface] = []
        for name in names:
            request = struct.pack(f"{size}s", name.encode()[:IFNAMSIZ - 1])
            try:
                flags_raw = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request)
            except OSError:
                continue
            flags = struct.unpack_from("H", flags_raw, IFNAMSIZ)[0]
            broadcast = None
            if flags & IFF_BROADCAST:
                try:
                    raw = fcntl.ioctl(sock.fileno(), SIOCGIFBRDADDR, request)
                    broadcast = socket.inet_ntoa(raw[IFNAMSIZ + 4:IFNAMSIZ + 8])
                except OSError:
                    broadcast = None
            out.append(Interface(name, flags, broadcast))
        return out


def broadcast_targets(interfaces: Iterable[Interface]) -> list[str]:
    """255.255.255.255, then the directed broadcast of each usable interface, deduplicated.

    Usable: up, not loopback, with a broadcast address that is a real one (not
    0.0.0.0, not inside 127.0.0.0/8).
    """
    targets = [LIMITED_BROADCAST]
    for interface in interfaces:
        if not interface.flags & IFF_UP or interface.flags & IFF_LOOPBACK:
            continue
        if not interface.flags & IFF_BROADCAST or not interface.broadcast:
            continue
        try:
            addr = ipaddress.IPv4Address(interface.broadcast)
        except ValueError:
            continue
        if addr.is_unspecified or addr.is_loopback or addr.is_multicast:
            continue
        if str(addr) not in targets:
            targets.append(str(addr))
    return targets


def default_targets() -> list[str]:
    """Where a probe goes when no ``--discovery-address`` is given."""
    return broadcast_targets(list_interfaces())


# ------------------------------------------------------------------ probing


@dataclass
class Collector:
    """Sans-I/O bookkeeping of one discovery round: which answers count, when to stop."""

    nonce: str
    started: float
    timeout: float
    settle: float = SETTLE_SECONDS

    def __post_init__(self) -> None:
        self.found: dict[str, Found] = {}
        self.last_new: float | None = None
        self.ignored = 0

    def answer(self, data: bytes, source: tuple[str, int], now: float) -> Found | None:
        """Record one datagram; returns the server if it is a new one."""
        try:
            announce = wire.parse_announce(data)
        except RemoteProtocolError:
            self.ignored += 1
            return None
        if announce.nonce != self.nonce:
            self.ignored += 1
            return None
        if announce.server_id in self.found:
            return None
        found = Found(source[0], announce.port, announce.server_id, announce.name,
                      announce.state, announce.server_version)
        self.found[announce.server_id] = found
        self.last_new = now
        return found

    def deadline(self) -> float:
        """When to stop waiting, given what has been heard so far."""
        end = self.started + self.timeout
        if self.last_new is not None:
            end = min(end, self.last_new + self.settle)
        return end

    def results(self) -> list[Found]:
        return sorted(self.found.values(), key=lambda f: (f.name.casefold(), f.host, f.port))


def probe(targets: Sequence[tuple[str, int]], timeout: float, *,
          settle: float = SETTLE_SECONDS,
          clock: Callable[[], float] = time.monotonic,
          errors: list[str] | None = None) -> list[Found]:
    """Send the probe to each of ``targets`` (IPv4 address, UDP port) and return the
    servers that answered, sorted by name.

    A target that cannot be sent to (no route, not permitted) is skipped and its
    reason appended to ``errors``.
    """
    nonce = secrets.token_hex(8)
    payload = wire.encode_probe(nonce)
    start = clock()
    collector = Collector(nonce, start, timeout, settle)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            selectors.DefaultSelector() as selector:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setblocking(False)
        sock.bind(("0.0.0.0", 0))
        selector.register(sock, selectors.EVENT_READ)

        def send_all() -> None:
            for address, port in targets:
                try:
                    sock.sendto(payload, (address, port))
                except OSError as exc:
                    message = f"{address}:{port}: {exc.strerror or exc}"
                    # The probe is sent twice; a target that fails is one error, not two.
                    if errors is not None and message not in errors:
                        errors.append(message)

        send_all()
        resent = False
        while True:
            now = clock()
            deadline = collector.deadline()
            if now >= deadline:
                break
            if not resent and not collector.found and now >= start + timeout / 2:
                resent = True
                send_all()
            wait = deadline - now
            if not resent and not collector.found:
                wait = min(wait, max(0.0, start + timeout / 2 - now))
            if not selector.select(wait):
                continue
            while True:
                try:
                    data, source = sock.recvfrom(4 * wire.MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        continue  # an ICMP error for one of the probes
                    raise
                collector.answer(data, source, clock())
    return collector.results()

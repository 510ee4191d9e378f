"""Finding lanchat servers on the LAN.

The client sends the JSON discovery probe (``lanchat.protocol.discovery``) with a random
nonce to the limited broadcast address 255.255.255.255 *and* to the directed broadcast
address of every interface that is up, is not loopback and has a broadcast address:
many networks pass only one of the two.  Each server answers by unicast with an
``announce`` carrying the nonce, its id, name, TCP port and state; the server's
address is the answer's source address.  Answers with another nonce, and anything
that is not an announce, are ignored.  A server reachable over several interfaces
answers once per probe it gets: answers are merged by server id *and* key fingerprint,
so an impostor answering with a known server's id and its own key is listed beside the
real server rather than hiding it (lanchat.client.pinning decides which to trust).

Collecting stops at the timeout, or earlier once the answer set is clear: after the
first answer, a short quiet spell with no new server ends the wait (every server on
one LAN answers within milliseconds).  A probe is sent again once halfway through a
silent wait, since UDP may lose the first.

Besides the broadcasts, the probe goes to the IPv6 all-nodes group ``ff02::1`` of each
interface that has IPv6 (the daemon's default socket is dual-stack, so it hears it),
and, when python-zeroconf is installed, to each address that DNS-SD over mDNS gives for
``_lanchat._tcp`` (``lanchat.client.mdns``).  Each target's probe carries a nonce of
its own, so every answer says which path carried it (``Sighting``); ``lanchat
doctor`` reports that.  A server that answers over IPv4 and IPv6 is kept with its IPv4
address.

The interfaces' addresses and prefixes come from ``ifaddr`` (getifaddrs on Unix,
GetAdaptersAddresses on Windows), and each broadcast address is computed from them:
reading them sends nothing.
"""

from __future__ import annotations

import errno
import ipaddress
import secrets
import selectors
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from lanchat.client import netif
from lanchat.protocol import discovery as wire
from lanchat.protocol.errors import RemoteProtocolError

LIMITED_BROADCAST = "255.255.255.255"
SETTLE_SECONDS = 0.3

@dataclass(frozen=True)
class Found:
    """One server that answered."""

    host: str
    port: int
    server_id: str
    name: str
    state: str
    server_version: str
    tls_port: int | None = None
    fingerprint: str | None = None  # of the TLS key, as announced (checked at the handshake)

    @property
    def address(self) -> str:
        """The plain-text chat address ("" when the server has no plain port)."""
        if not self.port:
            return ""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def tls_address(self) -> str:
        if self.tls_port is None:
            return ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.tls_port}"

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.server_id, self.fingerprint)

    @property
    def accepts_people(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class Interface:
    """One IPv4 address of this host, with its prefix length (``ifaddr`` reads them)."""

    name: str
    address: str
    prefix: int

    @property
    def broadcast(self) -> str | None:
        """The directed broadcast address of its network (None for /31 and /32)."""
        return netif.directed_broadcast(self.address, self.prefix)


# ------------------------------------------------------------------ interfaces


def list_interfaces() -> list[Interface]:
    """The IPv4 addresses of this host's interfaces, on every system ``ifaddr`` knows
    (Linux, macOS, the BSDs, Windows); reading them sends nothing."""
    return [Interface(i.name, a.ip, a.prefix) for i in netif.interfaces() for a in i.ipv4]


def broadcast_targets(interfaces: Iterable[Interface]) -> list[str]:
    """255.255.255.255, then the directed broadcast of each usable interface, deduplicated.

    Usable: an address that is not loopback, on a network that has a broadcast
    address (not a /31 or /32), which is a real one (not 0.0.0.0, not multicast).
    """
    targets = [LIMITED_BROADCAST]
    for interface in interfaces:
        try:
            if ipaddress.IPv4Address(interface.address).is_loopback:
                continue
        except ValueError:
            continue
        broadcast = interface.broadcast
        if broadcast is None:
            continue
        addr = ipaddress.IPv4Address(broadcast)
        if addr.is_unspecified or addr.is_loopback or addr.is_multicast:
            continue
        if str(addr) not in targets:
            targets.append(str(addr))
    return targets


def default_targets() -> list[str]:
    """Where a probe goes when no ``--discovery-address`` is given."""
    return broadcast_targets(list_interfaces())


ALL_NODES = "ff02::1"  # the IPv6 all-nodes group: every IPv6 host on the link is in it


def ipv6_targets(interfaces: Iterable[netif.NetInterface], port: int) -> list[ProbeTarget]:
    """ff02::1 of each up, non-loopback interface that has IPv6 (the probe names the
    interface: a link-local group exists once per link)."""
    return [ProbeTarget(f"{ALL_NODES}%{i.name}", port, "ipv6", i.name)
            for i in interfaces if i.usable and i.ipv6]


def default_probe_targets(port: int,
                          interfaces: list[netif.NetInterface] | None = None) -> list[ProbeTarget]:
    """Every path but mDNS: the limited broadcast, each interface's directed broadcast
    and each interface's IPv6 all-nodes group."""
    if interfaces is None:
        interfaces = netif.interfaces()
    owner = {a.broadcast: i.name for i in interfaces for a in i.ipv4 if a.broadcast}
    out = [ProbeTarget(address, port, "broadcast" if address == LIMITED_BROADCAST
                       else "directed", owner.get(address, ""))
           for address in default_targets()]
    return out + ipv6_targets(interfaces, port)


# ------------------------------------------------------------------ probing


@dataclass(frozen=True)
class ProbeTarget:
    """Where one probe goes, and by which path (``PATHS``) it is meant to get there."""

    address: str  # IPv4 or IPv6; an IPv6 link-local or multicast one with "%interface"
    port: int
    path: str = "unicast"
    interface: str = ""

    @property
    def label(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address \
            else f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Sighting:
    """One answer: which server, from where, to which probe, how long after sending it."""

    server_id: str
    host: str
    target: ProbeTarget
    seconds: float
    announce: wire.Announce


def as_targets(targets: Iterable[tuple[str, int] | ProbeTarget]) -> list[ProbeTarget]:
    out: list[ProbeTarget] = []
    for target in targets:
        if not isinstance(target, ProbeTarget):
            address, port = target
            path = "broadcast" if address == LIMITED_BROADCAST else "unicast"
            if address.startswith("ff") and ":" in address:
                path = "ipv6"
            target = ProbeTarget(address, port, path)
        if target not in out:
            out.append(target)
    return out


def _source_host(source: tuple[Any, ...]) -> str:
    """The answering address, with its interface when it is an IPv6 link-local one."""
    host = str(source[0])
    if host.startswith("::ffff:") and "." in host:
        return host[7:]  # an IPv4 answer on a dual-stack socket
    if len(source) >= 4 and source[3] and "%" not in host:
        try:
            host = f"{host}%{socket.if_indextoname(int(source[3]))}"
        except OSError:
            pass
    return host


@dataclass
class Collector:
    """Sans-I/O bookkeeping of one discovery round: which answers count, when to stop.

    Each target gets a nonce of its own (``nonces``), so an answer tells by which path
    its probe went; ``nonce`` itself is accepted too, as "path unknown".
    """

    nonce: str
    started: float
    timeout: float
    settle: float = SETTLE_SECONDS
    nonces: dict[str, ProbeTarget] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # By server id and key: an impostor with a known id is kept apart (see above).
        self.found: dict[tuple[str, str | None], Found] = {}
        self.sightings: list[Sighting] = []
        self.sent_at: dict[ProbeTarget, float] = {}
        self.last_new: float | None = None
        self.ignored = 0

    def answer(self, data: bytes, source: tuple[Any, ...], now: float) -> Found | None:
        """Record one datagram; returns the server if it is a new one."""
        try:
            announce = wire.parse_announce(data)
        except RemoteProtocolError:
            self.ignored += 1
            return None
        target = self.nonces.get(announce.nonce)
        if target is None and announce.nonce != self.nonce:
            self.ignored += 1
            return None
        host = _source_host(source)
        if target is not None:
            sent = self.sent_at.get(target, self.started)
            self.sightings.append(Sighting(announce.server_id, host, target,
                                           max(0.0, now - sent), announce))
        key = (announce.server_id, announce.tls_fingerprint)
        known = self.found.get(key)
        if known is not None:
            if ":" in known.host and ":" not in host:
                # Reached both ways: IPv4 is the address to show and to connect to.
                self.found[key] = replace(known, host=host)
            return None
        found = Found(host, announce.port, announce.server_id, announce.name,
                      announce.state, announce.server_version, announce.tls_port,
                      announce.tls_fingerprint)
        self.found[key] = found
        self.last_new = now
        return found

    def deadline(self) -> float:
        """When to stop waiting, given what has been heard so far."""
        end = self.started + self.timeout
        if self.last_new is not None:
            end = min(end, self.last_new + self.settle)
        return end

    def results(self) -> list[Found]:
        return sorted(self.found.values(),
                      key=lambda f: (f.name.casefold(), f.host, f.port, f.tls_port or 0))


class LateTargets(Protocol):
    """Targets learnt while the round runs (mDNS): readable ``fileno`` when there are."""

    def fileno(self) -> int: ...

    def take(self) -> list[ProbeTarget]: ...


@dataclass
class Round:
    """What one discovery round saw, for the client and for ``lanchat doctor``."""

    found: list[Found]
    sightings: list[Sighting]
    sent: list[ProbeTarget]
    errors: dict[ProbeTarget, str]
    started: float


def _sockaddr(target: ProbeTarget) -> tuple[Any, ...]:
    if ":" not in target.address:
        return (target.address, target.port)
    info = socket.getaddrinfo(target.address, target.port, socket.AF_INET6,
                              socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
    return info[0][4]


def run_round(targets: Sequence[tuple[str, int] | ProbeTarget], timeout: float, *,
              settle: float = SETTLE_SECONDS, late: LateTargets | None = None,
              local: tuple[str, int] | None = None,
              clock: Callable[[], float] = time.monotonic) -> Round:
    """Send one probe to each target (a nonce each) and collect the answers.

    IPv4 targets go out of an IPv4 socket allowed to broadcast, IPv6 ones (ff02::1 of
    an interface, or a server's address) out of an IPv6 one.  A target that cannot be
    sent to (no route, no IPv6, not permitted) is recorded with its reason in
    ``errors``.  ``late`` hands over more targets while the round runs; each is probed
    as it comes.  ``local`` (this machine) is probed first, in passing (its errors are
    not reported); if no other target took the probe, only a local daemon can answer,
    within milliseconds, so the wait is cut to twice the settle time (and without
    ``local`` there is no wait at all).
    """
    base = secrets.token_hex(8)
    start = clock()
    collector = Collector(base, start, timeout, settle)
    pending = as_targets(targets)
    sent: list[ProbeTarget] = []
    errors: dict[ProbeTarget, str] = {}
    sockets: dict[int, socket.socket] = {}
    with selectors.DefaultSelector() as selector:

        def sock_for(family: int) -> socket.socket:
            sock = sockets.get(family)
            if sock is None:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    if family == socket.AF_INET:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                        sock.bind(("0.0.0.0", 0))
                    else:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                        sock.bind(("::", 0))
                    sock.setblocking(False)
                except OSError:
                    sock.close()
                    raise
                sockets[family] = sock
                selector.register(sock, selectors.EVENT_READ)
            return sock

        def send(targets: Iterable[ProbeTarget]) -> int:
            """Probe each target; returns how many took the probe."""
            took = 0
            for target in targets:
                if target not in sent:
                    sent.append(target)
                    collector.nonces[f"{base}-{len(sent)}"] = target
                nonce = next(n for n, t in collector.nonces.items() if t == target)
                family = socket.AF_INET6 if ":" in target.address else socket.AF_INET
                try:
                    sock_for(family).sendto(wire.encode_probe(nonce), _sockaddr(target))
                except (OSError, UnicodeError) as exc:
                    # Sent twice when nothing answers; a target that fails is one error.
                    # This machine ("local") is only tried in passing: not an error.
                    if target.path != "local":
                        errors.setdefault(target, str(getattr(exc, "strerror", None) or exc))
                    continue
                errors.pop(target, None)
                collector.sent_at[target] = clock()  # an answer times from the last send
                took += 1
            return took

        if local is not None:
            send([ProbeTarget(local[0], local[1], "local")])
        if not send(pending):
            if local is None:
                return Round([], [], sent, errors, start)  # nothing can answer: no wait
            collector.timeout = min(timeout, 2 * settle)  # only this machine can answer
        if late is not None:
            selector.register(late, selectors.EVENT_READ)
        resent = False
        try:
            while True:
                now = clock()
                deadline = collector.deadline()
                if now >= deadline:
                    break
                half = start + collector.timeout / 2
                if not resent and not collector.found and now >= half:
                    resent = True
                    send(list(sent))
                wait = deadline - now
                if not resent and not collector.found:
                    wait = min(wait, max(0.0, half - now))
                for key, _events in selector.select(wait):
                    if key.fileobj is late:
                        send(late.take())
                        continue
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    _drain(sock, collector, clock)
        finally:
            for sock in sockets.values():
                sock.close()
    return Round(collector.results(), collector.sightings, sent, errors, start)


def _drain(sock: socket.socket, collector: Collector, clock: Callable[[], float]) -> None:
    while True:
        try:
            data, source = sock.recvfrom(4 * wire.MAX_DATAGRAM)
        except BlockingIOError:
            return
        except OSError as exc:
            # An ICMP error for one of the probes (the one to 127.0.0.1 when no daemon
            # runs here); Windows reports port unreachable as ECONNRESET.
            if exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH,
                             errno.ENETUNREACH):
                continue
            raise
        collector.answer(data, source, clock())


def probe(targets: Sequence[tuple[str, int] | ProbeTarget], timeout: float, *,
          settle: float = SETTLE_SECONDS,
          clock: Callable[[], float] = time.monotonic,
          errors: list[str] | None = None,
          local: tuple[str, int] | None = None) -> list[Found]:
    """Send the probe to each of ``targets`` and return the servers that answered,
    sorted by name.

    A target that cannot be sent to (no route, not permitted) is skipped and its
    reason appended to ``errors``.  ``local``: as in ``run_round``.
    """
    result = run_round(targets, timeout, settle=settle, clock=clock, local=local)
    if errors is not None:
        errors.extend(f"{target.label}: {reason}" for target, reason in result.errors.items())
    return result.found

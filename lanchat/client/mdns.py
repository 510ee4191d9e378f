"""Browsing DNS-SD over mDNS for ``_lanchat._tcp``: one more way to find a server.

The daemon answers no mDNS itself: the machine's own responder (Avahi, with the
service file the Debian package installs) announces the chat port.  The client
browses with python-zeroconf (an optional dependency: the ``mdns`` extra, Debian's
python3-zeroconf); without it this path is reported as unavailable and the others
work as before.

zeroconf runs its own thread and calls our handler there.  The handler only queues
the service name and writes one byte to a socket pair, so the client's selector
wakes; the client's thread then reads the service's addresses (from zeroconf's cache,
else by a query bounded by ``RESOLVE_SECONDS``) and sends each a unicast discovery
probe.  Every server found this way is thus confirmed by its own announce, with its
state, like on the other paths.  ``close`` ends zeroconf's thread; a browse lives only
as long as one discovery round.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from lanchat.client.discovery import ProbeTarget
from lanchat.client.i18n import _

SERVICE_TYPE = "_lanchat._tcp.local."
RESOLVE_SECONDS = 0.5


@dataclass(frozen=True)
class Service:
    """One ``_lanchat._tcp`` instance as mDNS describes it."""

    name: str
    addresses: tuple[str, ...]
    port: int  # the chat port, from the SRV record
    discovery_port: int


def unavailable_reason() -> str | None:
    """Why mDNS cannot be browsed here, or None when it can."""
    try:
        import zeroconf  # noqa: F401
    except ImportError:
        return _("python-zeroconf is not installed (Debian: python3-zeroconf)")
    return None


class Browser:
    """A running browse; a ``discovery.LateTargets`` for ``discovery.run_round``."""

    def __init__(self, discovery_port: int) -> None:
        import zeroconf

        self.discovery_port = discovery_port
        self.services: list[Service] = []
        self._names: list[str] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        try:
            self._zc = zeroconf.Zeroconf()
        except OSError:
            self._wake_r.close()
            self._wake_w.close()
            raise
        self._browser = zeroconf.ServiceBrowser(self._zc, SERVICE_TYPE,
                                                handlers=[self._on_change])

    def _on_change(self, **event: Any) -> None:  # zeroconf's thread
        import zeroconf

        if event.get("state_change") is not zeroconf.ServiceStateChange.Added:
            return
        with self._lock:
            self._names.append(str(event.get("name")))
        try:
            self._wake_w.send(b"!")
        except OSError:
            pass  # already woken (the pipe is full) or closed

    def fileno(self) -> int:
        return self._wake_r.fileno()

    def take(self) -> list[ProbeTarget]:
        """Probe targets for the services announced since the last call."""
        import zeroconf

        try:
            while self._wake_r.recv(256):
                pass
        except OSError:
            pass
        with self._lock:
            names, self._names = self._names, []
        out: list[ProbeTarget] = []
        for name in names:
            if name in self._seen:
                continue
            self._seen.add(name)
            info = zeroconf.ServiceInfo(SERVICE_TYPE, name)
            if not info.load_from_cache(self._zc):
                info.request(self._zc, int(RESOLVE_SECONDS * 1000))
            addresses = tuple(info.parsed_scoped_addresses())
            if not addresses or not info.port:
                continue
            port = self.discovery_port
            raw = (info.properties or {}).get(b"discovery")
            if raw and raw.isdigit() and 0 < int(raw) < 65536:
                port = int(raw)
            self.services.append(Service(name, addresses, int(info.port), port))
            # IPv4 first: an IPv6 link-local address from mDNS carries its scope.
            for address in sorted(addresses, key=lambda a: ":" in a):
                out.append(ProbeTarget(address, port, "mdns"))
        return out

    def close(self) -> None:
        try:
            self._browser.cancel()
            self._zc.close()
        finally:
            self._wake_r.close()
            self._wake_w.close()


def start(discovery_port: int) -> tuple[Browser | None, str | None]:
    """A running browse, or None and the reason there is none."""
    reason = unavailable_reason()
    if reason is not None:
        return None, reason
    try:
        return Browser(discovery_port), None
    except OSError as exc:
        return None, _("cannot open the mDNS socket: {reason}").format(
            reason=exc.strerror or exc)

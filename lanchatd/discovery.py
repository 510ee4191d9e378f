"""Who gets an answer to a discovery probe, and what answer.

Only sources inside the allowed networks are answered (so the daemon cannot be used to
reflect traffic at the wider internet), each source at most ``discovery_rate`` replies
a second after a burst, and only well-formed probes.  The answer goes by unicast to
the sender; that is the loop's job.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Union

from lanchat import __version__
from lanchat.protocol import discovery
from lanchat.protocol.errors import RemoteProtocolError
from lanchatd.config import Config
from lanchatd.limits import Bucket, peer_address

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
MAX_TRACKED_SOURCES = 4096


class DiscoveryResponder:
    def __init__(self, config: Config, server_id: str, *,
                 tls_fingerprint: str | None = None) -> None:
        self.server_id = server_id
        self.tls_fingerprint = tls_fingerprint
        self.counters: dict[str, int] = {
            "probes": 0, "answered": 0, "malformed": 0, "not_allowed": 0, "rate_limited": 0,
        }
        self._buckets: dict[str, Bucket] = {}
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.networks: list[Network] = [
            ipaddress.ip_network(n, strict=False) for n in config.discovery_allow
        ]

    def allowed(self, host: str) -> bool:
        addr = peer_address(host)
        if addr is None:
            return False
        return any(addr.version == net.version and addr in net for net in self.networks)

    def handle(self, data: bytes, addr: tuple[Any, ...], now: float, *, state: str,
               name: str, port: int, http_port: int = 0,
               tls_port: int | None = None) -> bytes | None:
        """The reply to send back to ``addr``, or None to stay silent.

        ``port`` 0 means no plain port; ``tls_port`` None means no TLS port.
        """
        self.counters["probes"] += 1
        host = str(addr[0])
        if not self.allowed(host):
            self.counters["not_allowed"] += 1
            return None
        try:
            probe = discovery.parse_probe(data)
        except RemoteProtocolError:
            self.counters["malformed"] += 1
            return None
        config = self.config
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_SOURCES:
                self._prune(now)
            bucket = self._buckets[host] = Bucket(config.discovery_burst, now)
        if not bucket.take(config.discovery_rate, config.discovery_burst, now):
            self.counters["rate_limited"] += 1
            return None
        self.counters["answered"] += 1
        if isinstance(probe, discovery.LegacyProbe):
            return discovery.LEGACY_REPLY
        return discovery.encode_announce(discovery.Announce(
            nonce=probe.nonce, server_id=self.server_id, name=name[:64], port=port,
            state=state, server_version=__version__, http_port=http_port,
            tls_port=tls_port if self.tls_fingerprint is not None else None,
            tls_fingerprint=self.tls_fingerprint if tls_port is not None else None,
        ))

    def _prune(self, now: float) -> None:
        config = self.config
        for host in [h for h, b in self._buckets.items()
                     if b.full(config.discovery_rate, config.discovery_burst, now)]:
            del self._buckets[host]
        if len(self._buckets) >= MAX_TRACKED_SOURCES:
            # Every tracked source is still limited: forget the oldest half.
            oldest = sorted(self._buckets, key=lambda h: self._buckets[h].last)
            for host in oldest[: len(oldest) // 2]:
                del self._buckets[host]

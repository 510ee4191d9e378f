"""This host's network interfaces and their addresses, IPv4 and IPv6.

Read with ``ifaddr`` (``getifaddrs`` underneath) plus the interface flags from
``/sys/class/net``: reading them sends nothing.  Both discovery (which addresses to
probe) and ``lanchat doctor`` (what to show) take the interfaces from here.

ifaddr gives each address with its prefix length, not the broadcast address the
interface was configured with; the directed broadcast is the prefix's highest
address, as DHCP clients and network managers set it (none for /31 and /32).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

SYS_CLASS_NET = Path("/sys/class/net")
IFF_UP = 0x1
IFF_LOOPBACK = 0x8


def directed_broadcast(address: str, prefix: int) -> str | None:
    """The broadcast address of an IPv4 network (None for /31 and /32, which have none)."""
    try:
        network = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
    except ValueError:
        return None
    if network.prefixlen >= 31:
        return None  # point to point, or a host route: there is no broadcast
    return str(network.broadcast_address)


@dataclass(frozen=True)
class Address:
    ip: str  # without a scope: the interface is the scope of a link-local address
    prefix: int
    version: int

    @property
    def scope(self) -> str:
        """host, link or global, as ``ip address`` says it."""
        addr = ipaddress.ip_address(self.ip)
        if addr.is_loopback:
            return "host"
        return "link" if addr.is_link_local else "global"

    @property
    def broadcast(self) -> str | None:
        """The directed broadcast address of an IPv4 prefix (None for IPv6, /31, /32)."""
        return directed_broadcast(self.ip, self.prefix) if self.version == 4 else None


@dataclass(frozen=True)
class NetInterface:
    name: str
    index: int
    up: bool
    loopback: bool
    addresses: tuple[Address, ...]

    @property
    def ipv4(self) -> list[Address]:
        return [a for a in self.addresses if a.version == 4]

    @property
    def ipv6(self) -> list[Address]:
        return [a for a in self.addresses if a.version == 6]

    @property
    def usable(self) -> bool:
        """Up and not loopback: a probe sent here can reach another machine."""
        return self.up and not self.loopback


def _flags(name: str) -> int | None:
    try:
        return int((SYS_CLASS_NET / name / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def interfaces() -> list[NetInterface]:
    """Every interface that has an address, in the kernel's order."""
    import ifaddr

    out: list[NetInterface] = []
    for adapter in ifaddr.get_adapters():
        addresses: list[Address] = []
        for item in adapter.ips:
            if isinstance(item.ip, tuple):  # IPv6: (address, flowinfo, scope_id)
                text, version = str(item.ip[0]).split("%", 1)[0], 6
            else:
                text, version = str(item.ip), 4
            try:
                ipaddress.ip_address(text)
            except ValueError:
                continue
            address = Address(text, int(item.network_prefix), version)
            if address not in addresses:
                addresses.append(address)
        name = str(adapter.name)
        index = int(getattr(adapter, "index", 0) or 0)
        if not index:
            try:
                index = socket.if_nametoindex(name)
            except OSError:
                index = 0
        flags = _flags(name)
        loopback = (bool(flags & IFF_LOOPBACK) if flags is not None
                    else all(ipaddress.ip_address(a.ip).is_loopback for a in addresses))
        up = bool(flags & IFF_UP) if flags is not None else True
        out.append(NetInterface(name, index, up, loopback, tuple(addresses)))
    return out

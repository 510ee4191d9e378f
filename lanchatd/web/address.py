"""The page's address for people, from the address the web port is bound to.

Kept apart from the adapter (transport.py), which does no I/O: finding this machine's
address asks the kernel's routing table through a socket.
"""

from __future__ import annotations

import socket


def page_url(host: str, port: int, scheme: str = "http") -> str:
    """The address a person opens for the page served on ``host``:``port``.

    A wildcard address is no address to open: it is replaced by this machine's address
    on its main network (the one the routing table would use; connecting a UDP socket
    sends nothing), or by the host name when there is none.
    """
    if host in ("", "0.0.0.0", "::"):
        host = _main_address() or socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/"


def _main_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            # 192.0.2.1 is a documentation address: the route to it is the default
            # route, and connect() on a UDP socket only looks that route up.
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("0.") else address

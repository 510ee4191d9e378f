"""The web port's transport factory: what the listener calls for each accepted socket.

The daemon makes it at start (``make_site``: the page's files, read once); the adapter
module, with h11 and wsproto, is imported at the first connection, so that a daemon
nobody opens the page of never pays for it.
"""

from __future__ import annotations

import time
from typing import Callable

from lanchatd.transport import Owner, Transport
from lanchatd.web.site import REQUEST_TIMEOUT, StaticFile, load_files


class WebSite:
    """What every web connection shares: the files, the scheme the page is served with,
    the names it answers to (``host_names``, the loop updates them on a reload), the
    page's address for people and the clock.  Called as the listener's transport factory:
    ``site(owner, max_line)``."""

    def __init__(self, files: dict[str, StaticFile], *, scheme: str = "http",
                 request_timeout: float = REQUEST_TIMEOUT,
                 host_names: frozenset[str] = frozenset(), page: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.files = files
        self.scheme = scheme
        self.request_timeout = request_timeout
        self.host_names = host_names
        self.page = page
        self.clock = clock

    def __call__(self, owner: Owner, max_line: int) -> Transport:
        from lanchatd.web.transport import WebTransport  # the first connection imports it

        return WebTransport(self, owner, max_line)


def make_site(scheme: str = "http", request_timeout: float = REQUEST_TIMEOUT, *,
              host_names: frozenset[str] = frozenset(), page: str = "") -> WebSite:
    """The web port's transport factory, with the page's files loaded."""
    return WebSite(load_files(), scheme=scheme, request_timeout=request_timeout,
                   host_names=host_names, page=page)

"""The browser client: lanchatd serves its own chat page and speaks WebSocket.

``listener.WebSite`` is the web port's transport factory (``make_site`` loads the
page's files); ``transport.WebTransport`` is the adapter it makes for each connection
(HTTP/1.1 with h11, WebSocket with wsproto; sans-I/O, like every adapter of
lanchatd/transport.py); ``site`` holds the files and the response headers; ``address``
works out the page's address for the readiness line.
"""

from __future__ import annotations

from lanchatd.web.listener import WebSite, make_site

__all__ = ["WebSite", "make_site"]

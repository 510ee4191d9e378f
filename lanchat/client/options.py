"""What the person asked for, once the command line and the settings file are combined;
and the argument types the command lines (``lanchat``, ``lanchat doctor``) share."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lanchat.client.i18n import _
from lanchat.client.settings import DEFAULT_DISCOVERY_PORT, Settings


def port_arg(text: str) -> int:
    """An argparse type: a TCP or UDP port number."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(_("not a port number from 1 to 65535: {value!r}")
                                         .format(value=text))
    return int(text)


def seconds_arg(text: str) -> float:
    """An argparse type: a number of seconds, more than 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(_("not a number of seconds from 0 to 3600: {value!r}")
                                         .format(value=text))
    return value


@dataclass(frozen=True)
class Options:
    server: tuple[str, int] | None = None   # connect here, no discovery
    server_name: str | None = None          # among discovered servers, the one named so
    discover_only: bool = False             # list the servers found and exit
    # Where the discovery probe goes, (IPv4 address, UDP port); empty: 255.255.255.255 and
    # every interface's broadcast address, on discovery_port.
    discovery_targets: tuple[tuple[str, int], ...] = ()
    discovery_port: int = DEFAULT_DISCOVERY_PORT
    discovery_timeout: float = 1.5
    pin: str | None = None
    name: str | None = None
    plain: bool = False
    json: bool = False
    timeout: float = 60.0                   # plain mode: delivering after the input ended
    settings: Settings = field(default_factory=Settings)
    state_file: Path | None = None          # the remembered last server (None: default)
    insecure: bool = False                  # plain text even where TLS is offered
    known_servers: Path | None = None       # the pinned keys (None: the default file)

"""What the person asked for, once the command line and the settings file are combined."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lanchat.client.settings import DEFAULT_DISCOVERY_PORT, Settings


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

"""The daemon's configuration: one frozen object built once at start (and on reload).

Every key of the TOML file maps to one field below, by the same name, inside the
section named in the field's metadata.  Defaults here are the built-in defaults; the
example file ``docs/lanchatd.toml`` lists them all with their meaning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

DEFAULT_DISCOVERY_ALLOW: Tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fe80::/10",
    "fc00::/7",
)


def _key(section: str, doc: str, *, reloadable: bool = False) -> Any:
    return {"section": section, "doc": doc, "reloadable": reloadable}


@dataclass(frozen=True)
class Config:
    # [server]
    name: str = field(default="", metadata=_key(
        "server", "Server name shown to clients; empty means the host name.", reloadable=True))
    host: str = field(default="", metadata=_key(
        "server", "Address the TCP chat port binds to; empty means all interfaces."))
    port: int = field(default=5000, metadata=_key(
        "server", "TCP chat port; 0 picks a free one."))
    initial_state: str = field(default="active", metadata=_key(
        "server", "State at start: active, standby or stopped."))
    state_dir: Optional[str] = field(default=None, metadata=_key(
        "server", "Directory for the server id; default $STATE_DIRECTORY or the user state dir."))
    listen_backlog: int = field(default=1024, metadata=_key(
        "server", "Listen backlog of the TCP chat socket."))
    text_language: str = field(default="en", metadata=_key(
        "server", "Language of plain-text mode prompts: en or nb.", reloadable=True))

    # [discovery]
    discovery_host: str = field(default="", metadata=_key(
        "discovery", "Address the UDP discovery socket binds to; empty means all."))
    discovery_port: int = field(default=5001, metadata=_key(
        "discovery", "UDP discovery port; 0 picks a free one."))
    discovery_allow: Tuple[str, ...] = field(default=DEFAULT_DISCOVERY_ALLOW, metadata=_key(
        "discovery", "Networks whose probes are answered (CIDR list).", reloadable=True))
    discovery_rate: float = field(default=5.0, metadata=_key(
        "discovery", "Replies per second allowed to one source address.", reloadable=True))
    discovery_burst: int = field(default=10, metadata=_key(
        "discovery", "Replies one source may get at once before the rate applies.",
        reloadable=True))

    # [rooms]
    pin_min_length: int = field(default=4, metadata=_key(
        "rooms", "Fewest digits in a room PIN.", reloadable=True))
    pin_max_length: int = field(default=12, metadata=_key(
        "rooms", "Most digits in a room PIN.", reloadable=True))
    history: int = field(default=50, metadata=_key(
        "rooms", "Messages a newcomer receives from the room's past; 0 disables.",
        reloadable=True))

    # [limits]
    max_line_bytes: int = field(default=4096, metadata=_key(
        "limits", "Longest line a client may send, in bytes, newline included.",
        reloadable=True))
    max_errors: int = field(default=10, metadata=_key(
        "limits", "Protocol errors a connection may make before it is disconnected.",
        reloadable=True))
    handshake_timeout: float = field(default=120.0, metadata=_key(
        "limits", "Seconds a connection may take to join a room.", reloadable=True))
    keepalive_interval: float = field(default=60.0, metadata=_key(
        "limits", "Seconds of silence after which a JSON client is pinged.", reloadable=True))
    keepalive_timeout: float = field(default=30.0, metadata=_key(
        "limits", "Seconds a pinged client has to answer before it is disconnected.",
        reloadable=True))
    message_rate: float = field(default=5.0, metadata=_key(
        "limits", "Messages per second one connection may send (sustained).",
        reloadable=True))
    message_burst: int = field(default=20, metadata=_key(
        "limits", "Messages one connection may send at once before the rate applies.",
        reloadable=True))
    output_buffer_bytes: int = field(default=1048576, metadata=_key(
        "limits", "Unsent bytes a connection may have queued before it is disconnected.",
        reloadable=True))
    max_connections: int = field(default=10000, metadata=_key(
        "limits", "Connections in total (chat clients).", reloadable=True))
    max_connections_per_address: int = field(default=100, metadata=_key(
        "limits", "Connections from one address.", reloadable=True))
    join_rate: float = field(default=0.5, metadata=_key(
        "limits", "Join attempts per second one address may make (sustained).",
        reloadable=True))
    join_burst: int = field(default=10, metadata=_key(
        "limits", "Join attempts one address may make at once before the rate applies.",
        reloadable=True))

    # [log]
    log_file: Optional[str] = field(default=None, metadata=_key(
        "log", "Activity log file; default $LOGS_DIRECTORY/activity.log or the user log dir."))
    log_max_bytes: int = field(default=1048576, metadata=_key(
        "log", "Size at which the activity log file is rotated.", reloadable=True))
    log_backups: int = field(default=5, metadata=_key(
        "log", "Rotated activity log files kept.", reloadable=True))
    log_ring_size: int = field(default=1000, metadata=_key(
        "log", "Activity log entries kept in memory.", reloadable=True))
    log_messages: bool = field(default=False, metadata=_key(
        "log", "Also record the text of chat messages in the activity log.", reloadable=True))

    # [control]
    control_socket: Optional[str] = field(default=None, metadata=_key(
        "control", "Control socket path; default $RUNTIME_DIRECTORY/control.sock or the "
        "user runtime dir."))
    control_group: str = field(default="lanchat", metadata=_key(
        "control", "Group given access to the control socket when run as root or a "
        "system user."))

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

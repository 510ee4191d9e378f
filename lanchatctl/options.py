"""What every lanchatctl command shares, apart from the front ends that run commands.

The command line (lanchatctl/cli.py), the interactive shell (lanchatctl/shell.py) and
the dashboard (lanchatctl/top.py) all take these; keeping them here lets the command
line start the shell and the dashboard without either of them importing it back.
"""

from __future__ import annotations

from dataclasses import dataclass

from lanchat.protocol.vocabulary import ServerState

DEFAULT_TIMEOUT = 5.0
#: lanchatctl's words for the server states (``lanchatctl stop`` sets ``stopped``).
STATE_COMMANDS = {"start": ServerState.ACTIVE, "standby": ServerState.STANDBY,
                  "stop": ServerState.STOPPED}


@dataclass(frozen=True)
class Options:
    """What every command shares."""

    socket: str | None = None
    json: bool = False
    timeout: float = DEFAULT_TIMEOUT

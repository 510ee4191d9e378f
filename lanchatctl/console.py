"""The original console's words: its dashboard and its replies, in the shell.

The system was first a server with a console inside it, in Norwegian::

    === SERVER DASHBOARD ===
    Server aktiv for nye klienter: False
    Server stoppet (meldinger blokkert): False
    Ingen aktive rom.

    Skriv /help for kommandoer.

    Server> /start
    [Server] Serveren startet. Nye klienter og meldinger OK.

``lanchatctl shell`` keeps that face: the shell's original commands (``/start``,
``/standby``, ``/stop``, ``/room PIN``, ``/room PIN NAME``) answer in these words and
the shell opens with this dashboard, in the person's language (the Norwegian is the
seed's wording where it has one).  The values shown are the daemon's, as ``status``
gets them; only the sentences differ from the lanchatctl commands' replies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lanchat.i18n import _
from lanchat.protocol.control import CloseRoom, Kick, Request, SetState
from lanchat.protocol.vocabulary import ServerState
from lanchatctl.render import clean


def dashboard_lines(status: Mapping[str, Any]) -> list[str]:
    """The seed's dashboard: the two switches, the rooms, then how to get help."""
    state = status.get("state")
    lines = [
        _("=== SERVER DASHBOARD ==="),
        _("Server active for new clients: {value}").format(
            value=state == ServerState.ACTIVE),
        _("Server stopped (messages blocked): {value}").format(
            value=state == ServerState.STOPPED),
    ]
    rooms: Sequence[Mapping[str, Any]] = status.get("rooms") or []
    if not rooms:
        lines.append(_("No active rooms."))
    for room in rooms:
        names = ", ".join(clean(m.get("name", "")) for m in room.get("members") or [])
        lines.append(_("Room {pin}: {names}").format(pin=clean(room.get("pin", "")),
                                                     names=names))
    lines += ["", _("Type /help for commands."), ""]
    if state != ServerState.ACTIVE:
        lines.append(_("Server ready. Use /start to activate. /help for commands."))
    return lines


def reply_lines(request: Request | None, result: Mapping[str, Any]) -> list[str] | None:
    """The console's answer to a state change, a close or a kick (None: no console form)."""
    if isinstance(request, SetState):
        if not result.get("changed"):
            return [_state_already(request.state)]
        return [_state_reply(request.state)]
    if isinstance(request, CloseRoom):
        members = result.get("members") or []
        if not members:
            return [_("[Server] Room {pin} closed.").format(pin=request.room)]
        return [_("[Server] Room {pin} closed; {names} disconnected.").format(
            pin=request.room, names=", ".join(clean(m) for m in members))]
    if isinstance(request, Kick):
        return [_("[Server] {name} removed from room {pin}.").format(
            name=clean(result.get("name", request.name)), pin=request.room)]
    return None


def _state_reply(state: str) -> str:
    if state == ServerState.ACTIVE:
        return _("[Server] Server started. New clients and messages OK.")
    if state == ServerState.STANDBY:
        return _("[Server] Server in standby. New clients blocked, messages OK.")
    return _("[Server] Server stopped. New clients and messages blocked.")


def _state_already(state: str) -> str:
    if state == ServerState.ACTIVE:
        return _("[Server] The server is already started.")
    if state == ServerState.STANDBY:
        return _("[Server] The server is already in standby.")
    return _("[Server] The server is already stopped.")

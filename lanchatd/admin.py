"""The administrator's commands, without sockets: requests in, replies and effects out.

Theory of operation
-------------------
lanchatd/control.py owns the control socket: it reads request lines, decodes them with
lanchat.protocol.control, and writes replies.  What a request *does* is decided here,
by one function per command in the table ``COMMANDS``, called as

    outcome = run(daemon, session, incoming, now)

``daemon`` is the small typed view of the running daemon the commands may use
(``Daemon``: the chat core's administrative calls, the activity log's memory, the
facts ``status`` reports, and reloading); ``session`` is what the daemon knows about
the asking connection (``Session``: who it is, whether it has said hello, whether it
follows the log).  Nothing here touches a socket, a selector or the clock: a command
updates the session it is given and returns an ``Outcome`` (the reply, the chat
``Effects`` the loop must apply, a log stream to start or end), which the control
server carries out.  A test can run every
command against a fake ``Daemon`` and a plain ``Session``.

Refusals are converted in one place: the core's ``AdminError`` and this module's
``Refused`` become a numbered ``Failure`` reply in ``run``.  A bug (any other exception)
is left to the caller, which reports it as ``internal_error`` and records it.

To add a command: a request class in lanchat.protocol.control, a function here, and
one row in ``COMMANDS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Protocol, TypeVar

from lanchat import __version__
from lanchat.protocol import rules
from lanchat.protocol.control import (
    Announce,
    Cancel,
    CloseRoom,
    Code,
    Failure,
    Hello,
    Incoming,
    Kick,
    Log,
    Ok,
    Reload,
    Request,
    Rooms,
    SetState,
    Status,
    StreamEnd,
    Users,
)
from lanchatd.core import AdminError, Effects
from lanchatd.states import SERVER_STATE_RULES

Result = dict[str, Any]

#: The roles of a control connection (lanchatd/access.py decides which one it has).
ADMIN = "admin"
WATCH = "watch"
#: What a watcher may ask (the protocol's command names).
WATCH_COMMANDS = frozenset({"hello", "status", "rooms", "users", "log", "cancel"})

# The core's AdminError codes, as numbered protocol errors.
ADMIN_CODES: Mapping[str, Code] = {
    "unknown_room": Code.UNKNOWN_ROOM,
    "unknown_user": Code.UNKNOWN_USER,
    "bad_state": Code.BAD_VALUE,
    "bad_value": Code.BAD_VALUE,
}


class Refused(Exception):
    """A request the daemon understood and will not do (becomes a Failure reply)."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- the daemon


class ChatAdmin(Protocol):
    """The chat core's part: its facts and its administrative calls (lanchatd/core.py)."""

    server_id: str
    server_name: str
    state: str

    def snapshot(self, now: float) -> dict[str, Any]: ...
    def room_info(self, pin: str) -> dict[str, Any]: ...
    def set_state(self, new_state: str, actor: str, now: float) -> Effects: ...
    def close_room(self, pin: str, reason: str, actor: str, now: float) -> Effects: ...
    def kick(self, pin: str, name: str, reason: str, actor: str, now: float) -> Effects: ...
    def announce(self, text_: str, room_pin: str | None, actor: str,
                 now: float) -> Effects: ...


class LogMemory(Protocol):
    """The activity log's recent entries (lanchatd/activity.py)."""

    @property
    def last_seq(self) -> int: ...
    def tail(self, n: int | None = None) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Surroundings:
    """What ``status`` reports besides the core's snapshot: the I/O side's facts."""

    pid: int
    addresses: Mapping[str, str]
    discovery: Mapping[str, int]
    control_connections: int
    log_file: str | None
    tls_fingerprint: str | None = None  # of the TLS key clients pin, when TLS is served


@dataclass(frozen=True)
class Reloaded:
    """The result of re-reading the configuration file."""

    ok: bool
    message: str
    changed: list[str]
    needs_restart: list[str] = field(default_factory=list)  # differ, apply after a restart


class Daemon(Protocol):
    """Everything the commands may use of the running daemon."""

    @property
    def chat(self) -> ChatAdmin: ...
    @property
    def log(self) -> LogMemory: ...
    def surroundings(self) -> Surroundings: ...
    def reload(self, actor: str, now: float) -> Reloaded: ...


# --------------------------------------------------------------------------- a connection


@dataclass
class Session:
    """What the daemon knows about one control connection."""

    actor: str  # how it appears in the activity log: uid=1000(alice) pid=4242
    role: str = ADMIN  # ADMIN, or WATCH: status, rooms, users and log only (access.py)
    admin_group: str = ""  # the group that administers, named when a watcher is refused
    version: int | None = None  # the protocol version its hello agreed on
    hello_done: bool = False
    stream_id: int | None = None  # the id of the log request it follows, if any


@dataclass
class Outcome:
    """What a request comes to: its reply, and what the control server must carry out.

    In order: ``stream_end`` is sent (a stream this request ended), then ``reply``;
    ``effects`` are the chat core's (sends and closes for chat members) for the loop;
    ``follow`` makes the connection a follower of the log under the request's id.
    """

    reply: Ok | Failure
    effects: Effects | None = None
    stream_end: StreamEnd | None = None
    follow: bool = False


@dataclass
class _Done:
    """A command function's own answer, before ``run`` adds the request's id."""

    result: Result
    effects: Effects | None = None
    stream_end: StreamEnd | None = None
    follow: bool = False


R = TypeVar("R", bound=Request)


@dataclass(frozen=True)
class Command(Generic[R]):
    """One row of the command table: the request type and the function serving it."""

    request: type[R]
    serve: Callable[[Daemon, Session, R, float], _Done]

    def __call__(self, daemon: Daemon, session: Session, request: Request,
                 now: float) -> _Done:
        assert isinstance(request, self.request)
        return self.serve(daemon, session, request, now)


# --------------------------------------------------------------------------- the commands


def hello(daemon: Daemon, session: Session, request: Hello, now: float) -> _Done:
    session.hello_done = True
    chat = daemon.chat
    return _Done({"version": session.version, "server": f"lanchatd/{__version__}",
                  "server_id": chat.server_id, "name": chat.server_name,
                  "pid": daemon.surroundings().pid, "actor": session.actor})


def status(daemon: Daemon, session: Session, request: Status, now: float) -> _Done:
    chat = daemon.chat
    around = daemon.surroundings()
    result = chat.snapshot(now)
    result["state_description"] = SERVER_STATE_RULES[chat.state].description
    result["pid"] = around.pid
    result["addresses"] = dict(around.addresses)
    result["discovery"] = dict(around.discovery)
    result["control_connections"] = around.control_connections
    result["log_file"] = around.log_file
    if around.tls_fingerprint is not None:
        result["tls_fingerprint"] = around.tls_fingerprint
    return _Done(result)


def rooms(daemon: Daemon, session: Session, request: Rooms, now: float) -> _Done:
    return _Done({"rooms": daemon.chat.snapshot(now)["rooms"]})


def users(daemon: Daemon, session: Session, request: Users, now: float) -> _Done:
    chat = daemon.chat
    if request.room is not None:
        infos = [chat.room_info(request.room)]
    else:
        infos = chat.snapshot(now)["rooms"]
    found = [{"room": info["pin"], **member} for info in infos
             for member in info["members"]]
    return _Done({"room": request.room, "users": found})


def set_state(daemon: Daemon, session: Session, request: SetState, now: float) -> _Done:
    chat = daemon.chat
    previous = chat.state
    effects = chat.set_state(request.state, session.actor, now)
    return _Done({"state": chat.state, "previous": previous,
                  "changed": chat.state != previous,
                  "description": SERVER_STATE_RULES[chat.state].description}, effects)


def close_room(daemon: Daemon, session: Session, request: CloseRoom, now: float) -> _Done:
    chat = daemon.chat
    members = [m["name"] for m in chat.room_info(request.room)["members"]]
    effects = chat.close_room(request.room, request.reason, session.actor, now)
    return _Done({"room": request.room, "members": members, "reason": request.reason},
                 effects)


def kick(daemon: Daemon, session: Session, request: Kick, now: float) -> _Done:
    chat = daemon.chat
    key = rules.name_key(request.name)
    found = [m for m in chat.room_info(request.room)["members"]
             if rules.name_key(m["name"]) == key]
    effects = chat.kick(request.room, request.name, request.reason, session.actor, now)
    member = found[0] if found else {"name": request.name, "addr": ""}
    return _Done({"room": request.room, "name": member["name"], "addr": member["addr"],
                  "reason": request.reason}, effects)


def announce(daemon: Daemon, session: Session, request: Announce, now: float) -> _Done:
    chat = daemon.chat
    pins = [request.room] if request.room is not None else [
        info["pin"] for info in chat.snapshot(now)["rooms"]]
    effects = chat.announce(request.text, request.room, session.actor, now)
    return _Done({"rooms": pins, "text": request.text}, effects)


def log(daemon: Daemon, session: Session, request: Log, now: float) -> _Done:
    if request.follow and session.stream_id is not None:
        raise Refused(Code.BAD_VALUE, f"This connection already follows the log "
                      f"(request {session.stream_id}); cancel that first.")
    memory = daemon.log
    return _Done({"entries": memory.tail(request.n), "last_seq": memory.last_seq,
                  "following": request.follow}, follow=request.follow)


def reload(daemon: Daemon, session: Session, request: Reload, now: float) -> _Done:
    reloaded = daemon.reload(session.actor, now)
    if not reloaded.ok:
        raise Refused(Code.RELOAD_FAILED, reloaded.message)
    return _Done({"message": reloaded.message, "changed": reloaded.changed,
                  "needs_restart": reloaded.needs_restart})


def cancel(daemon: Daemon, session: Session, request: Cancel, now: float) -> _Done:
    stream_id = session.stream_id
    end = None
    if stream_id is not None:
        session.stream_id = None
        end = StreamEnd(stream_id, "cancelled", "Stopped following the log.")
    return _Done({"cancelled": stream_id}, stream_end=end)


#: Every command the daemon serves, by request type.
COMMANDS: dict[type[Request], Command[Any]] = {
    command.request: command for command in (
        Command(Hello, hello),
        Command(Status, status),
        Command(Rooms, rooms),
        Command(Users, users),
        Command(SetState, set_state),
        Command(CloseRoom, close_room),
        Command(Kick, kick),
        Command(Announce, announce),
        Command(Log, log),
        Command(Reload, reload),
        Command(Cancel, cancel),
    )
}


def run(daemon: Daemon, session: Session, incoming: Incoming, now: float,
        commands: Mapping[type[Request], Command[Any]] = COMMANDS) -> Outcome:
    """Serve one decoded request.  A bug in a command raises; refusals are replies."""
    request = incoming.request
    if session.role != ADMIN and request.CMD not in WATCH_COMMANDS:
        who = session.actor.split(" ")[0]
        group = f"group {session.admin_group}" if session.admin_group else "the admin group"
        return Outcome(Failure(incoming.id, Code.WATCH_ONLY, (
            f"{who} may watch lanchatd (status, rooms, users, log) but not {request.CMD}: "
            f"that takes membership of {group}.")))
    try:
        done = commands[type(request)](daemon, session, request, now)
    except AdminError as exc:
        return Outcome(Failure(incoming.id, ADMIN_CODES.get(exc.code, Code.BAD_VALUE),
                               exc.message))
    except Refused as exc:
        return Outcome(Failure(incoming.id, exc.code, exc.message))
    if done.follow:
        session.stream_id = incoming.id
    return Outcome(Ok(incoming.id, done.result), done.effects, done.stream_end, done.follow)

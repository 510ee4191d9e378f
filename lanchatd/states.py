"""The daemon's two state machines, as tables.

1. The server state.  Every state is reachable from every other (the administrator
   decides), so the table holds what each state *allows*, not its transitions:

   ========  ===========  =====  ========
   state     connections  joins  messages
   ========  ===========  =====  ========
   active    yes          yes    yes
   standby   no           no     yes       members keep chatting
   stopped   no           no     no        senders get an explicit error
   ========  ===========  =====  ========

2. A chat connection's handshake.  ``CONN_TRANSITIONS`` lists every allowed step;
   ``CONN_ALLOWS`` which requests each state accepts.  A request outside its state's
   set is answered with the error ``bad_state`` and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTIVE = "active"
STANDBY = "standby"
STOPPED = "stopped"
SERVER_STATES: tuple[str, ...] = (ACTIVE, STANDBY, STOPPED)


@dataclass(frozen=True)
class StateRules:
    accepts_connections: bool
    allows_joins: bool
    allows_messages: bool
    description: str


SERVER_STATE_RULES: dict[str, StateRules] = {
    ACTIVE: StateRules(True, True, True, "new clients and messages are allowed"),
    STANDBY: StateRules(False, False, True,
                        "members keep chatting, new clients are refused"),
    STOPPED: StateRules(False, False, False,
                        "messages are refused and new clients are refused"),
}

# Connection states.
NEW = "new"                # greeting sent, first line not yet seen
HELLO = "hello"            # JSON client said hello, not yet joined
AWAIT_PIN = "await_pin"    # plain-text client, asked for the PIN
AWAIT_NAME = "await_name"  # plain-text client, asked for the name
JOINED = "joined"          # a member of a room
CLOSED = "closed"          # gone (closed by either side)

CONN_TRANSITIONS: set[tuple[str, str]] = {
    (NEW, HELLO),            # JSON hello accepted
    (NEW, AWAIT_NAME),       # plain-text first line was a valid PIN
    (NEW, AWAIT_PIN),        # plain-text first line was not a valid PIN: asked again
    (AWAIT_PIN, AWAIT_NAME),
    (AWAIT_NAME, AWAIT_PIN),  # unused today; kept so a text client could change room
    (AWAIT_NAME, JOINED),
    (HELLO, JOINED),
    (NEW, CLOSED), (HELLO, CLOSED), (AWAIT_PIN, CLOSED), (AWAIT_NAME, CLOSED),
    (JOINED, CLOSED),
}

# Which JSON request types each connection state accepts.
CONN_ALLOWS: dict[str, frozenset[str]] = {
    NEW: frozenset({"hello"}),
    HELLO: frozenset({"join", "ping", "pong", "quit"}),
    JOINED: frozenset({"say", "msg", "who", "ping", "pong", "quit"}),
    AWAIT_PIN: frozenset(),
    AWAIT_NAME: frozenset(),
    CLOSED: frozenset(),
}


def check_transition(old: str, new: str) -> None:
    if (old, new) not in CONN_TRANSITIONS:
        raise AssertionError(f"connection state {old} -> {new} is not in the table")

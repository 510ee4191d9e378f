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
   set is answered with the error ``bad_state`` and changes nothing.  Every request
   passes this table (``ChatCore._on_request``), whatever its mode or transport: a
   plain-text member's line becomes the same ``say``, ``msg``, ``who`` or ``quit``.
"""

from __future__ import annotations

from lanchat.i18n import N_
from lanchat.protocol.record import Record, record
from lanchat.protocol.vocabulary import ConnState, ServerState

ACTIVE = ServerState.ACTIVE
STANDBY = ServerState.STANDBY
STOPPED = ServerState.STOPPED


@record
class StateRules(Record):
    accepts_connections: bool
    allows_joins: bool
    allows_messages: bool
    description: str  # in English, marked for the catalogues: translate it to show it


SERVER_STATE_RULES: dict[str, StateRules] = {
    ACTIVE: StateRules(True, True, True, N_("new clients and messages are allowed")),
    STANDBY: StateRules(False, False, True,
                        N_("members keep chatting, new clients are refused")),
    STOPPED: StateRules(False, False, False,
                        N_("messages are refused and new clients are refused")),
}

# Connection states (their meanings: lanchat.protocol.vocabulary.ConnState).
NEW = ConnState.NEW
HELLO = ConnState.HELLO
AWAIT_PIN = ConnState.AWAIT_PIN
AWAIT_NAME = ConnState.AWAIT_NAME
JOINED = ConnState.JOINED
CLOSED = ConnState.CLOSED

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

# Which request types each connection state accepts (JSON requests, and the requests a
# joined plain-text member's lines and commands become).
CONN_ALLOWS: dict[str, frozenset[str]] = {
    NEW: frozenset({"hello"}),
    HELLO: frozenset({"join", "ping", "pong", "quit"}),
    JOINED: frozenset({"say", "msg", "who", "ping", "pong", "quit"}),
    AWAIT_PIN: frozenset(),
    AWAIT_NAME: frozenset(),
    CLOSED: frozenset(),
}

# Requests a joined member may send beyond the message rate: answering the server's
# keep-alive and leaving must always work.
UNMETERED: frozenset[str] = frozenset({"pong", "quit"})


def check_transition(old: str, new: str) -> None:
    if (old, new) not in CONN_TRANSITIONS:
        raise AssertionError(f"connection state {old} -> {new} is not in the table")

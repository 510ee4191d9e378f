"""The chat protocol's words and numbers, defined once.

Every stable word that crosses the wire (server states, greeting statuses, connection
states, error codes, bye reasons, presence reasons) and every default port and limit
is named here; the daemon, the client and the admin tool import it instead of
spelling the word.  docs/protocol.md documents each (sections 3, 5.2, 8, 9, 10, 11),
and tests/test_vocabulary.py keeps the three in step: a code the daemon sends that is
missing here, or one the document lists that is missing here, fails it.

The words are plain ``str`` constants grouped in classes (``ErrorCode.NAME_TAKEN``):
they go into JSON and f-strings as they are, on every Python version.
"""

from __future__ import annotations

from typing import Final

# --------------------------------------------------------------------------- numbers

CHAT_PORT: Final = 5000  # TCP
DISCOVERY_PORT: Final = 5001  # UDP
TLS_PORT: Final = 5443  # TCP, TLS from the first byte (as IRC's 6697, RFC 8314)
HTTP_PORT: Final = 5080  # TCP: the browser client, its page and WebSocket (section 17)
PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final[tuple[int, ...]] = (1,)
DEFAULT_MAX_LINE: Final = 4096  # bytes, newline included
PIN_MAX_DIGITS: Final = 64  # the hard ceiling; the server's configured length applies within it
# Six digits: with the join limits of issue 11 a four-digit room falls to one network's
# guesses in minutes, a six-digit one holds for half a day (docs/reliability.md,
# "Guessing PINs: the arithmetic").  A server may allow shorter (pin_min_length).
DEFAULT_PIN_MIN: Final = 6
DEFAULT_PIN_MAX: Final = 12
NAME_MAX_CHARS: Final = 32
TEXT_MAX_CHARS: Final = 2000  # code points, after NFC normalisation
#: ``hello.lang``: a language code (BCP 47 or POSIX form: "nb", "nb-NO", "nb_NO").  A
#: language the server has no catalogue for means English, silently (section 5.5).
LANGUAGE_MAX_CHARS: Final = 35
DEFAULT_LANGUAGE: Final = "en"


def _words(cls: type) -> tuple[str, ...]:
    return tuple(v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str))


# --------------------------------------------------------------------------- states


class ServerState:
    """The daemon's state, set by the administrator (docs/protocol.md section 8)."""

    ACTIVE: Final = "active"
    STANDBY: Final = "standby"
    STOPPED: Final = "stopped"


SERVER_STATES: Final = _words(ServerState)


class GreetingStatus:
    """The second word of the greeting line (section 3)."""

    READY: Final = "ready"
    STANDBY: Final = "standby"
    STOPPED: Final = "stopped"
    FULL: Final = "full"
    BUSY: Final = "busy"  # connections too fast from an address, network or all


GREETING_STATUSES: Final = _words(GreetingStatus)


class ConnState:
    """A chat connection's handshake state (section 5.2)."""

    NEW: Final = "new"                # greeting sent, first line not yet seen
    HELLO: Final = "hello"            # JSON client said hello, not yet joined
    AWAIT_PIN: Final = "await_pin"    # plain-text client, asked for the PIN
    AWAIT_NAME: Final = "await_name"  # plain-text client, asked for the name
    JOINED: Final = "joined"          # a member of a room
    CLOSED: Final = "closed"          # gone (closed by either side)


CONN_STATES: Final = _words(ConnState)


# --------------------------------------------------------------------------- codes


class ErrorCode:
    """The ``code`` of an ``error`` event (section 9)."""

    LINE_TOO_LONG: Final = "line_too_long"
    BAD_UTF8: Final = "bad_utf8"
    BAD_JSON: Final = "bad_json"
    BAD_REQUEST: Final = "bad_request"
    UNKNOWN_TYPE: Final = "unknown_type"
    BAD_STATE: Final = "bad_state"
    UNSUPPORTED_VERSION: Final = "unsupported_version"
    INVALID_PIN: Final = "invalid_pin"
    INVALID_NAME: Final = "invalid_name"
    INVALID_TEXT: Final = "invalid_text"
    NAME_TAKEN: Final = "name_taken"
    JOIN_RATE_LIMITED: Final = "join_rate_limited"
    STANDBY: Final = "standby"
    STOPPED: Final = "stopped"
    RATE_LIMITED: Final = "rate_limited"
    THROTTLED: Final = "throttled"  # told once: the connection's lines are read more slowly
    NO_SUCH_MEMBER: Final = "no_such_member"


ERROR_CODES: Final = _words(ErrorCode)


class LocalCode:
    """Codes of errors a client library raises on its own side; never sent (section 15)."""

    NOT_LANCHAT: Final = "not_lanchat"
    BAD_EVENT: Final = "bad_event"
    CLOSED: Final = "closed"
    WRONG_MODE: Final = "wrong_mode"
    BAD_PROBE: Final = "bad_probe"
    BAD_ANNOUNCE: Final = "bad_announce"
    TOO_LARGE: Final = "too_large"


LOCAL_CODES: Final = _words(LocalCode)


class ByeReason:
    """The ``reason`` of a ``bye`` event, the last thing a connection gets (section 10)."""

    QUIT: Final = "quit"
    HANDSHAKE_TIMEOUT: Final = "handshake_timeout"
    IDLE_TIMEOUT: Final = "idle_timeout"
    TOO_MANY_ERRORS: Final = "too_many_errors"
    SLOW_READER: Final = "slow_reader"
    FLOODING: Final = "flooding"
    UNSUPPORTED_VERSION: Final = "unsupported_version"
    STANDBY: Final = "standby"
    STOPPED: Final = "stopped"
    ROOM_CLOSED: Final = "room_closed"
    KICKED: Final = "kicked"
    SHUTDOWN: Final = "shutdown"


BYE_REASONS: Final = _words(ByeReason)


class LeaveReason:
    """The ``reason`` of a ``presence`` ``leave``: words for people, not for programs.

    ``CLOSED`` and ``QUIT`` are never sent (a plain leave has no reason); ``KICKED``
    may be followed by ``": "`` and the administrator's words, and a connection error
    is ``CONNECTION_ERROR`` followed by ``": "`` and the system's message.
    """

    CLOSED: Final = "closed by client"
    QUIT: Final = "quit"
    KICKED: Final = "kicked"
    ROOM_CLOSED: Final = "room closed"
    TIMED_OUT: Final = "timed out"
    NOT_READING: Final = "not reading"
    FLOODING: Final = "flooding"
    TOO_MANY_ERRORS: Final = "too_many_errors"
    SERVER_SHUTDOWN: Final = "server shutdown"
    UNSUPPORTED_VERSION: Final = "unsupported version"
    CONNECTION_ERROR: Final = "connection error"
    INTERNAL_ERROR: Final = "internal error"


LEAVE_REASONS: Final = _words(LeaveReason)
#: Leave reasons a member's room is not told (a plain leave).
SILENT_LEAVE_REASONS: Final = frozenset({LeaveReason.CLOSED, LeaveReason.QUIT})


def known_leave_reason(reason: str) -> bool:
    """Whether ``reason`` is a word of ``LeaveReason``, alone or before ``": detail"``."""
    return reason.partition(": ")[0] in LEAVE_REASONS

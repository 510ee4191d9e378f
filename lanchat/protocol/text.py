"""Plain-text mode: what a person with ``nc`` or ``telnet`` types and reads.

The dialogue after the greeting line: the server asks for the room PIN, then a name
(each asked again with the rule when refused), then every line typed is a message
and every room event arrives as one readable line::

    [12:04:31] bob: hello
    [12:04:40] --> alice joined
    [12:04:52] (private) bob -> alice: psst

Lines starting with ``/`` are commands: /who, /msg NAME TEXT, /me TEXT, /lang CODE,
/help, /quit.  Every sentence is in the member's language (the daemon's
``text_language`` until ``/lang``); message lines have none, so they are formatted
once for every member.
"""

from __future__ import annotations

import time
from typing import Callable, Union

from lanchat.protocol import chat, rules
from lanchat.protocol.errors import N_, LocalProtocolError
from lanchat.protocol.record import Record, record
from lanchat.protocol.vocabulary import ErrorCode

Gettext = Callable[[str], str]

# The sentences of plain-text mode.  English is the source; the translations are in
# the catalogues (lanchat/locale/<lang>/LC_MESSAGES/lanchat.po), which this sans-I/O
# module does not read: whoever formats is given the language's ``gettext``
# (``lanchat.i18n.gettext_for(lang)``).
GREETING = N_("Welcome to {name} (lanchatd {version}). Enter the room PIN:")
ASK_PIN = N_("Enter the PIN of the room you want to join:")
ASK_NAME = N_("Enter your name:")
JOINED = N_("* You are in room {room} as {name}. Here: {members}. Type /help for commands.")
WHO = N_("* In room {room}: {members}")
HELP = N_("* Commands: /who (who is here), /msg NAME TEXT (private message), "
          "/me TEXT (action), /lang CODE (language), /quit (leave). "
          "Anything else is sent to the room.")
JOINED_OTHER = N_("--> {name} joined")
LEFT_OTHER = N_("<-- {name} left")
LEFT_REASON = N_("<-- {name} left ({reason})")
STATE = N_("! Server is now {state}: {text}")
NOTICE = N_("! Announcement: {text}")
PRIVATE = N_("(private)")
UNKNOWN_COMMAND = N_("! Unknown command {command}. Type /help for commands.")
LANGUAGE_SET = N_("* Language: English.")
LANGUAGES_AVAILABLE = N_("* Languages: {languages}. Type /lang CODE to change.")
LANGUAGE_UNKNOWN = N_("! No language {code!r} here; available: {languages}.")
MSG_USAGE = N_("Usage: /msg NAME TEXT")
#: Why the greeting refuses a connection, by greeting status.
REFUSALS: dict[str, str] = {
    "standby": N_("The server is in standby and accepts no new clients. Try again later."),
    "stopped": N_("The server is stopped and accepts no new clients. Try again later."),
    "full": N_("The server has too many connections. Try again later."),
}
#: The server states as a person reads them in a state line.
STATE_NAMES: dict[str, str] = {
    "active": N_("active"),
    "standby": N_("standby"),
    "stopped": N_("stopped"),
}
#: The words of a presence ``leave`` reason (vocabulary.LeaveReason) as a person reads
#: them; the JSON field keeps the word itself.
LEAVE_WORDS: dict[str, str] = {
    "closed by client": N_("closed by client"),
    "quit": N_("quit"),
    "kicked": N_("kicked"),
    "room closed": N_("room closed"),
    "timed out": N_("timed out"),
    "not reading": N_("not reading"),
    "too_many_errors": N_("too many errors"),
    "server shutdown": N_("server shutdown"),
    "unsupported version": N_("unsupported version"),
    "connection error": N_("connection error"),
    "internal error": N_("internal error"),
}


def english(message: str) -> str:
    """The ``gettext`` of the source language: the message itself."""
    return message


def leave_text(reason: str, gettext: Gettext = english) -> str:
    """A leave reason as a person reads it: its word translated, the details kept."""
    word, sep, detail = reason.partition(": ")
    known = LEAVE_WORDS.get(word)
    return gettext(known) + sep + detail if known is not None else reason


def line(text: str) -> bytes:
    # "replace": a lone surrogate from a peer's JSON escape is shown as "?", not raised.
    return (text + "\n").encode("utf-8", "replace")


def clock(ts: float) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError):  # a server's timestamp out of range, or NaN
        return "--:--:--"


def format_event(event: chat.Event, gettext: Gettext = english) -> bytes | None:
    """The line a plain-text client sees for a server event (None: nothing to show).

    ``gettext`` translates the sentences (``lanchat.i18n.gettext_for(lang)``); a room
    message has none, so its line is the same in every language.
    """
    if isinstance(event, chat.Message):
        if event.action:
            return line(f"[{clock(event.ts)}] * {event.sender} {event.text}")
        return line(f"[{clock(event.ts)}] {event.sender}: {event.text}")
    if isinstance(event, chat.Private):
        return line(f"[{clock(event.ts)}] {gettext(PRIVATE)} {event.sender} -> {event.to}: "
                    f"{event.text}")
    if isinstance(event, chat.Presence):
        if event.event == "join":
            said = gettext(JOINED_OTHER).format(name=event.name)
        elif event.reason:
            said = gettext(LEFT_REASON).format(name=event.name,
                                               reason=leave_text(event.reason, gettext))
        else:
            said = gettext(LEFT_OTHER).format(name=event.name)
        return line(f"[{clock(event.ts)}] {said}")
    if isinstance(event, chat.Joined):
        return line(gettext(JOINED).format(room=event.room, name=event.name,
                                           members=", ".join(event.members)))
    if isinstance(event, chat.Members):
        return line(gettext(WHO).format(room=event.room, members=", ".join(event.members)))
    if isinstance(event, chat.StateChanged):
        state = STATE_NAMES.get(event.state)
        return line(f"[{clock(event.ts)}] " + gettext(STATE).format(
            state=gettext(state) if state else event.state, text=event.text))
    if isinstance(event, chat.Notice):
        return line(f"[{clock(event.ts)}] " + gettext(NOTICE).format(text=event.text))
    if isinstance(event, (chat.Error, chat.Bye)):
        # The message is already in the member's language (the daemon wrote it so).
        return line(f"! {event.message}")
    return None


class UnknownCommand(Exception):
    def __init__(self, command: str) -> None:
        super().__init__(command)
        self.command = command


class Help:
    pass


@record
class Lang(Record):
    """``/lang CODE``: speak to me in this language (``/lang`` alone: which are there)."""

    code: str


TextCommand = Union[chat.Say, chat.PrivateSay, chat.Who, chat.Quit, Help, Lang]

_NO_ARGS: dict[str, Callable[[], TextCommand]] = {
    "/who": chat.Who,
    "/quit": chat.Quit,
    "/help": Help,
}


def parse_text_command(text: str) -> TextCommand:
    """What a line typed by a joined plain-text member asks for.

    Raises LocalProtocolError (from the event's own checks) for bad values and
    UnknownCommand for an unknown /word.  ``//text`` sends ``/text`` literally.
    """
    if not text.startswith("/") or text.startswith("//"):
        return chat.Say(text[1:] if text.startswith("//") else text)
    command, _, rest = text.partition(" ")
    command = command.lower()
    if command in _NO_ARGS:
        return _NO_ARGS[command]()
    if command == "/lang":
        return Lang(rest.strip()[:64])
    if command == "/me":
        return chat.Say(rest, action=True)
    if command == "/msg":
        to, _, body = rest.strip().partition(" ")
        if not to or not body.strip():
            raise LocalProtocolError(ErrorCode.BAD_REQUEST, MSG_USAGE)
        return chat.PrivateSay(to, body)
    raise UnknownCommand(command[: rules.NAME_MAX_CHARS])

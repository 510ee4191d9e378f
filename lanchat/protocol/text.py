"""Plain-text mode: what a person with ``nc`` or ``telnet`` types and reads.

The dialogue after the greeting line: the server asks for the room PIN, then a name
(each asked again with the rule when refused), then every line typed is a message
and every room event arrives as one readable line::

    [12:04:31] bob: hello
    [12:04:40] * alice joined
    [12:04:52] (private) bob -> alice: psst

Lines starting with ``/`` are commands: /who, /msg NAME TEXT, /me TEXT, /help, /quit.
The prompts exist in English and Norwegian Bokmål (the original system's language).
"""

from __future__ import annotations

import time
from typing import Callable, Union

from lanchat.protocol import chat, rules
from lanchat.protocol.errors import LocalProtocolError

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "greeting": "Welcome to {name} (lanchatd {version}). Enter the room PIN:",
        "ask_pin": "Enter the PIN of the room you want to join:",
        "ask_name": "Enter your name:",
        "joined": "* You are in room {room} as {name}. Here: {members}. "
                  "Type /help for commands.",
        "who": "* In room {room}: {members}",
        "help": "* Commands: /who (who is here), /msg NAME TEXT (private message), "
                "/me TEXT (action), /quit (leave). Anything else is sent to the room.",
        "joined_other": "* {name} joined",
        "left_other": "* {name} left",
        "left_reason": "* {name} left ({reason})",
        "state": "! Server is now {state}: {text}",
        "error": "! {message}",
        "bye": "! {message}",
        "notice": "! Announcement: {text}",
        "standby": "The server is in standby and accepts no new clients. Try again later.",
        "stopped": "The server is stopped and accepts no new clients. Try again later.",
        "full": "The server has too many connections. Try again later.",
        "unknown_command": "! Unknown command {command}. Type /help for commands.",
    },
    "nb": {
        "greeting": "Velkommen til {name} (lanchatd {version}). Skriv inn PIN for rommet:",
        "ask_pin": "Skriv inn PIN for rommet du vil bli med i:",
        "ask_name": "Skriv inn brukernavn:",
        "joined": "* Du er i rom {room} som {name}. Her: {members}. "
                  "Skriv /help for kommandoer.",
        "who": "* I rom {room}: {members}",
        "help": "* Kommandoer: /who (hvem er her), /msg NAVN TEKST (privat melding), "
                "/me TEKST (handling), /quit (forlat). Alt annet sendes til rommet.",
        "joined_other": "* {name} ble med",
        "left_other": "* {name} forlot rommet",
        "left_reason": "* {name} forlot rommet ({reason})",
        "state": "! Serveren er nå {state}: {text}",
        "error": "! {message}",
        "bye": "! {message}",
        "notice": "! Kunngjøring: {text}",
        "standby": "Serveren er i standby og tar ikke imot nye klienter. Prøv igjen senere.",
        "stopped": "Serveren er stoppet og tar ikke imot nye klienter. Prøv igjen senere.",
        "full": "Serveren har for mange tilkoblinger. Prøv igjen senere.",
        "unknown_command": "! Ukjent kommando {command}. Skriv /help for kommandoer.",
    },
}

LANGUAGES = tuple(STRINGS)


def say(lang: str, key: str, **values: object) -> str:
    table = STRINGS.get(lang, STRINGS["en"])
    return table[key].format(**values)


def line(text: str) -> bytes:
    # "replace": a lone surrogate from a peer's JSON escape is shown as "?", not raised.
    return (text + "\n").encode("utf-8", "replace")


def clock(ts: float) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError):  # a server's timestamp out of range, or NaN
        return "--:--:--"


def format_event(event: chat.Event, lang: str = "en") -> bytes | None:
    """The line a plain-text client sees for a server event (None: nothing to show)."""
    if isinstance(event, chat.Message):
        if event.action:
            return line(f"[{clock(event.ts)}] * {event.sender} {event.text}")
        return line(f"[{clock(event.ts)}] {event.sender}: {event.text}")
    if isinstance(event, chat.Private):
        return line(f"[{clock(event.ts)}] (private) {event.sender} -> {event.to}: {event.text}")
    if isinstance(event, chat.Presence):
        if event.event == "join":
            text = say(lang, "joined_other", name=event.name)
        elif event.reason:
            text = say(lang, "left_reason", name=event.name, reason=event.reason)
        else:
            text = say(lang, "left_other", name=event.name)
        return line(f"[{clock(event.ts)}] {text}")
    if isinstance(event, chat.Joined):
        return line(say(lang, "joined", room=event.room, name=event.name,
                        members=", ".join(event.members)))
    if isinstance(event, chat.Members):
        return line(say(lang, "who", room=event.room, members=", ".join(event.members)))
    if isinstance(event, chat.StateChanged):
        return line(f"[{clock(event.ts)}] " + say(lang, "state", state=event.state,
                                                   text=event.text))
    if isinstance(event, chat.Notice):
        return line(f"[{clock(event.ts)}] " + say(lang, "notice", text=event.text))
    if isinstance(event, chat.Error):
        return line(say(lang, "error", message=event.message))
    if isinstance(event, chat.Bye):
        return line(say(lang, "bye", message=event.message))
    return None


class UnknownCommand(Exception):
    def __init__(self, command: str) -> None:
        super().__init__(command)
        self.command = command


class Help:
    pass


TextCommand = Union[chat.Say, chat.PrivateSay, chat.Who, chat.Quit, Help]

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
    if command == "/me":
        return chat.Say(rest, action=True)
    if command == "/msg":
        to, _, body = rest.strip().partition(" ")
        if not to or not body.strip():
            raise LocalProtocolError("bad_request", "Usage: /msg NAME TEXT")
        return chat.PrivateSay(to, body)
    raise UnknownCommand(command[: rules.NAME_MAX_CHARS])

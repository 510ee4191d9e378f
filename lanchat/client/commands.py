"""What a typed line asks the client to do: the protocol's text commands (``/msg``,
``/me``, ``/who``...) plus the client's own (``/names``, ``/nick``, ``/join``,
``/clear``), and a message too long for one line split into several.

``parse`` raises the same two errors as ``lanchat.protocol.text.parse_text_command``:
``text.UnknownCommand`` for an unknown ``/word`` and ``LocalProtocolError`` (whose
message is for the person) for a bad value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

from lanchat.client import messages
from lanchat.client.i18n import _
from lanchat.protocol import chat, rules, text
from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError


@dataclass(frozen=True)
class Nick:
    """Go on under another name (rejoin the same room with it)."""

    name: str


@dataclass(frozen=True)
class JoinRoom:
    """Join another room, or the same one again (``pin`` None)."""

    pin: str | None


@dataclass(frozen=True)
class Clear:
    """Empty the message pane (the full-screen interface only)."""


# text.Lang is not here: the client's language is its person's (the locale, --lang),
# and it asks the server for the same one in its hello.
Command = Union[chat.Say, chat.PrivateSay, chat.Who, chat.Quit, text.Help, Nick, JoinRoom,
                Clear]
Sendable = Union[chat.Say, chat.PrivateSay]


def parse(line: str) -> Command:
    word, _sep, rest = line.partition(" ")
    word = word.lower()
    rest = rest.strip()
    if word == "/names":
        return chat.Who()
    if word == "/clear":
        return Clear()
    if word == "/nick":
        if not rest:
            raise LocalProtocolError("bad_request", _("Usage: /nick NAME"))
        try:
            return Nick(rules.normalize_name(rest))
        except RemoteProtocolError as exc:
            raise LocalProtocolError("invalid_name", messages.name_refused(exc)) from None
    if word == "/join":
        if not rest:
            return JoinRoom(None)
        try:
            return JoinRoom(rules.check_pin(rest, 1, chat.PIN_MAX_DIGITS))
        except RemoteProtocolError:
            raise LocalProtocolError("invalid_pin", _("Usage: /join PIN (the room's digits)")
                                     ) from None
    if word == "/msg":
        to, _sep, body = rest.partition(" ")
        if not to or not body.strip():
            raise LocalProtocolError("bad_request", _("Usage: /msg NAME TEXT"))
    if word == "/me" and not rest:
        raise LocalProtocolError("bad_request", _("Usage: /me TEXT"))
    command = text.parse_text_command(line)
    if isinstance(command, text.Lang):
        raise text.UnknownCommand(word)
    return command


def split_long(line: str, fits: Callable[[Sendable], bool]) -> list[Sendable]:
    """A message line too long for one message, as several that each ``fits``
    (broken after a space near the end of each where there is one); [] when ``line``
    is not a message, or is short enough to go as it is."""
    word, _sep, rest = line.partition(" ")
    word = word.lower()
    make: Callable[[str], Sendable]
    if not line.startswith("/") or line.startswith("//"):
        body = line[1:] if line.startswith("//") else line
        make = chat.Say
    elif word == "/me":
        body = rest
        make = lambda t: chat.Say(t, action=True)  # noqa: E731
    elif word == "/msg":
        to, _sep, body = rest.strip().partition(" ")
        try:
            rules.normalize_name(to)
        except RemoteProtocolError:
            return []
        make = lambda t: chat.PrivateSay(to, t)  # noqa: E731
    else:
        return []
    if not body.strip() or (len(body) <= rules.TEXT_MAX_CHARS and fits(make(body))):
        return []

    def ok(piece: str) -> bool:
        return fits(make(piece))

    out: list[Sendable] = []
    while body.strip():
        body = body.lstrip(" ")
        if len(body) <= rules.TEXT_MAX_CHARS and ok(body):
            out.append(make(body))
            break
        # The longest start that fits, then back to the last space in its second half.
        low, high = 1, min(len(body), rules.TEXT_MAX_CHARS)
        while low < high:
            mid = (low + high + 1) // 2
            if body[:mid].strip() and ok(body[:mid]):
                low = mid
            else:
                high = mid - 1
        cut = body.rfind(" ", low // 2, low)
        end = cut if cut > 0 else low
        piece = body[:end]
        if piece.strip():
            out.append(make(piece))
        body = body[end:]
    return out

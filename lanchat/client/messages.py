"""The sentences the client shows about its session, in the person's language.

The server's own explanations arrive in English; where the client knows what a code
means (a refused PIN or name, a server in standby) it says it in its own words, with
the server's numbers, so the person gets the rule in their language.
"""

from __future__ import annotations

import unicodedata

from lanchat.client import session as s
from lanchat.client.i18n import _, ngettext, translated
from lanchat.protocol import chat, rules
from lanchat.protocol.errors import ProtocolError
from lanchat.protocol.vocabulary import ByeReason, LocalCode, ServerState


def pin_rule(welcome: chat.Welcome | None) -> str:
    low = welcome.pin_min if welcome else rules.DEFAULT_PIN_MIN
    high = welcome.pin_max if welcome else rules.DEFAULT_PIN_MAX
    if low == high:
        return _("A room PIN is exactly {count} digits (0-9).").format(count=low)
    return _("A room PIN is {low} to {high} digits (0-9).").format(low=low, high=high)


def name_refused(exc: ProtocolError) -> str:
    """Why a name was refused by the protocol's rules (checked here before sending),
    naming the rule it broke, in the person's language."""
    return translated(exc.template, **exc.values)


def state_text(state: str) -> str:
    return {
        ServerState.ACTIVE: _("active"),
        ServerState.STANDBY: _("in standby"),
        ServerState.STOPPED: _("stopped"),
    }.get(state, state)


def refused_status(status: str, server_text: str) -> str:
    """Why a server that greeted with ``status`` did not let us in."""
    known = {
        "standby": _("The server is in standby and accepts no new people. Try again later."),
        "stopped": _("The server is stopped and accepts no new people. Try again later."),
        "full": _("The server has too many connections. Try again later."),
        "busy": _("The server is busy. Try again later."),
    }
    return known.get(status, server_text)


def join_refused(event: s.JoinRefused) -> str:
    """The rule behind a refused PIN or name."""
    if event.code == "invalid_pin":
        return _("That PIN was not accepted.") + " " + pin_rule(event.welcome)
    # A refused name: the server's sentence names the rule it broke (or the member
    # it looks like), in the language the client asked for in hello.
    if event.code == "name_taken":
        return event.message + " " + _("Choose another.")
    if event.code == "invalid_name":
        return _("That name was not accepted.") + " " + event.message
    return event.message


def disconnected(event: s.Disconnected) -> str:
    reason = _short_reason(event.code) or event.reason.rstrip(".")
    if event.reconnect_failed:
        text = _("Could not reconnect: {reason}.").format(reason=reason)
    else:
        text = _("Connection lost: {reason}.").format(reason=reason)
    if event.retry_in is not None:
        text += " " + _("Trying again in {seconds:.0f} s.").format(
            seconds=max(1.0, event.retry_in))
    if event.queued:
        text += " " + ngettext("{count} message waits to be sent.",
                               "{count} messages wait to be sent.",
                               event.queued).format(count=event.queued)
    return text


def retrying(event: s.Retrying) -> str:
    if event.code == "name_taken":
        head = _("Your name is still held by the old connection.")
    elif event.code == "join_rate_limited":
        head = _("Too many join attempts from this address.")
    else:
        head = event.message
    return head + " " + _("Trying again in {seconds:.0f} s.").format(
        seconds=max(1.0, event.retry_in))


def trouble(event: s.Disconnected | s.Retrying) -> str:
    """Why the client is not in the room, in a few words (for the status line)."""
    short = _short_reason(event.code)
    return short or _clip(event.message if isinstance(event, s.Retrying) else event.reason,
                          32).rstrip(".")


def _short_reason(code: str) -> str | None:
    return {
        "standby": _("server in standby"),
        "stopped": _("server stopped"),
        "full": _("server full"),
        "busy": _("server busy"),
        "timeout": _("no answer"),
        "keepalive": _("no answer"),
        "name_taken": _("name still held"),
        "join_rate_limited": _("too many joins"),
        "shutdown": _("server shutting down"),
    }.get(code)


def held(event: s.Held) -> str:
    if event.reason == "stopped":
        return _("The server is stopped: your message waits and is sent when it allows "
                 "messages again.")
    return _("Sending slower: the server's rate limit was reached.")


def not_delivered(event: s.NotDelivered) -> str:
    return _("Not delivered: {text} ({reason})").format(
        text=_clip(event.item.text), reason=event.message.rstrip("."))


def unsent(items: tuple[s.Outgoing, ...]) -> list[str]:
    if not items:
        return []
    lines = [ngettext("{count} message was not sent:", "{count} messages were not sent:",
                      len(items)).format(count=len(items))]
    lines += [f"  {_clip(item.text, 200)}" for item in items]
    return lines


def finished(event: s.Finished) -> str:
    """Why the session ended (empty for a plain quit)."""
    if event.reason == ByeReason.QUIT:
        return ""
    if event.reason == "connect_failed":
        return _("Could not connect: {reason}").format(reason=event.message)
    if event.reason in chat.GREETING_STATUSES or event.reason in chat.STATES:
        return refused_status(event.reason, event.message)
    # Said in the person's language; only the administrator's own words come from the
    # server (a server too old to send them gets its whole sentence shown instead).
    if event.reason == ByeReason.KICKED:
        if event.detail:
            return _("The administrator removed you from the room: {reason}").format(
                reason=event.detail)
        return _("The administrator removed you from the room.")
    if event.reason == ByeReason.ROOM_CLOSED:
        if event.detail:
            return _("The administrator closed the room: {reason}").format(reason=event.detail)
        return _("The administrator closed the room.")
    if event.reason == LocalCode.NOT_LANCHAT:
        return _("That is not a lanchat server: {message}").format(message=event.message)
    return event.message or event.reason


# Characters never written raw to a terminal: controls (ESC starts escape sequences),
# surrogates, private use, line/paragraph separators and the bidi overrides that make
# text display in another order than it is.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")


def clean(text: str) -> str:
    """``text`` safe to print on a terminal: a tab becomes a space, every other control
    or bidi character U+FFFD, and each line of several is cleaned the same way."""
    if text.isprintable():
        return text
    return "\n".join(_clean_line(line) for line in text.split("\n"))


def _clean_line(line: str) -> str:
    out = []
    for ch in line:
        if ch == "\t":
            out.append(" ")
        elif ch in _BIDI_CONTROLS or unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"

"""Plain-text mode (lanchat.protocol.text): what a person with nc types and reads.

Times on screen are the server's local time; the tests pin the time zone to UTC so
the expected lines can be written out in full.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from lanchat import i18n
from lanchat.protocol import chat, text
from lanchat.protocol.errors import LocalProtocolError

TS = 1_700_000_000.25  # 2023-11-14 22:13:20 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# ============================================================================ formatting

@pytest.mark.parametrize(("event", "line"), [
    (chat.Message("4711", 1, TS, "bob", "hello"), "[22:13:20] bob: hello"),
    (chat.Message("4711", 2, TS, "bob", "waves", action=True), "[22:13:20] * bob waves"),
    (chat.Message("4711", 3, TS, "bob", "old news", history=True), "[22:13:20] bob: old news"),
    (chat.Private(TS, "alice", "bob", "psst"), "[22:13:20] (private) alice -> bob: psst"),
    (chat.Presence("4711", TS, "carol", "join"), "[22:13:20] --> carol joined"),
    (chat.Presence("4711", TS, "carol", "leave"), "[22:13:20] <-- carol left"),
    (chat.Presence("4711", TS, "carol", "leave", "kicked: spam"),
     "[22:13:20] <-- carol left (kicked: spam)"),
    (chat.Joined("4711", "bob", ("alice", "bob"), "active"),
     "* You are in room 4711 as bob. Here: alice, bob. Type /help for commands."),
    (chat.Members("4711", ("alice", "bob", "Zoë")), "* In room 4711: alice, bob, Zoë"),
    (chat.StateChanged("standby", TS, "members keep chatting, new clients are refused"),
     "[22:13:20] ! Server is now standby: members keep chatting, new clients are refused"),
    (chat.Notice(TS, "Pizza in the kitchen", "4711"),
     "[22:13:20] ! Announcement: Pizza in the kitchen"),
    (chat.Error("rate_limited", "Rate limited: not delivered.", "say"),
     "! Rate limited: not delivered."),
    (chat.Bye("kicked", "You were removed from the room by the administrator."),
     "! You were removed from the room by the administrator."),
])
def test_each_event_is_one_readable_line(event: chat.Event, line: str) -> None:
    assert text.format_event(event) == (line + "\n").encode("utf-8")


@pytest.mark.parametrize("event", [
    chat.Welcome(1, "lanchatd/0.1.0", "id", "lab", "active"),
    chat.Ping("keepalive"),
    chat.Pong("x"),
    chat.Unknown({"type": "typing"}),
])
def test_events_a_person_has_no_use_for_print_nothing(event: chat.Event) -> None:
    assert text.format_event(event) is None


def test_norwegian_lines() -> None:
    def nb(event: chat.Event) -> str:
        data = text.format_event(event, i18n.gettext_for("nb"))
        assert data is not None
        return data.decode("utf-8")

    assert nb(chat.Presence("4711", TS, "kari", "join")) == "[22:13:20] --> kari ble med\n"
    assert nb(chat.Presence("4711", TS, "kari", "leave", "timed out")) == (
        "[22:13:20] <-- kari forlot rommet (tidsavbrudd)\n")
    assert nb(chat.Presence("4711", TS, "kari", "leave", "kicked: spam")) == (
        "[22:13:20] <-- kari forlot rommet (kastet ut: spam)\n")
    assert nb(chat.Members("4711", ("kari", "ola"))) == "* I rom 4711: kari, ola\n"
    assert nb(chat.StateChanged("stopped", TS, "meldinger avvises")) == (
        "[22:13:20] ! Serveren er nå stoppet: meldinger avvises\n")
    assert nb(chat.Notice(TS, "Kaffe på kjøkkenet")) == (
        "[22:13:20] ! Kunngjøring: Kaffe på kjøkkenet\n")
    assert nb(chat.Private(TS, "ola", "kari", "hei")) == (
        "[22:13:20] (privat) ola -> kari: hei\n")


def test_an_unknown_language_falls_back_to_english() -> None:
    assert text.format_event(chat.Presence("4711", TS, "kari", "join"),
                             i18n.gettext_for("xx")) == b"[22:13:20] --> kari joined\n"
    assert i18n.translate("xx", text.ASK_NAME) == "Enter your name:"


def test_a_leave_reason_that_is_not_a_known_word_is_shown_as_it_is() -> None:
    nb = i18n.gettext_for("nb")
    assert text.leave_text("connection error: reset by peer", nb) == (
        "tilkoblingsfeil: reset by peer")
    assert text.leave_text("something new", nb) == "something new"


def test_prompts_and_refusals_a_person_reads() -> None:
    assert i18n.translate("en", text.GREETING, name="lab", version="0.1.0") == (
        "Welcome to lab (lanchatd 0.1.0). Enter the room PIN:")
    assert i18n.translate("en", text.ASK_PIN) == "Enter the PIN of the room you want to join:"
    assert i18n.translate("nb", text.ASK_NAME) == "Skriv inn brukernavn:"
    assert i18n.translate("en", text.REFUSALS["standby"]) == (
        "The server is in standby and accepts no new clients. Try again later.")
    assert i18n.translate("en", text.UNKNOWN_COMMAND, command="/nope") == (
        "! Unknown command /nope. Type /help for commands.")
    assert text.line("Enter your name:") == b"Enter your name:\n"


def test_a_multi_line_looking_message_stays_one_line() -> None:
    # Text rules forbid newlines in messages; a name with a newline cannot exist either,
    # so every formatted event is exactly one line on a person's terminal.
    data = text.format_event(chat.Message("4711", 1, TS, "Åse", "blåbær 🫐"))
    assert data == "[22:13:20] Åse: blåbær 🫐\n".encode()
    assert data is not None and data.count(b"\n") == 1


# ============================================================================ commands

@pytest.mark.parametrize(("typed", "expected"), [
    ("hello", chat.Say("hello")),
    ("hello /who", chat.Say("hello /who")),
    ("/me waves", chat.Say("waves", action=True)),
    ("/ME waves", chat.Say("waves", action=True)),
    ("/msg bob hi there", chat.PrivateSay("bob", "hi there")),
    ("/MSG bob hi", chat.PrivateSay("bob", "hi")),
    ("/msg Zoe\u0308 hei", chat.PrivateSay("Zo\u00eb", "hei")),
    ("/who", chat.Who()),
    ("/WHO", chat.Who()),
    ("/who is here", chat.Who()),
    ("/quit", chat.Quit()),
    ("/quit now", chat.Quit()),
    ("//etc/hosts is the file", chat.Say("/etc/hosts is the file")),
    ("//me", chat.Say("/me")),
    ("//", chat.Say("/")),
])
def test_a_typed_line_is_a_message_or_a_command(typed: str, expected: chat.Event) -> None:
    assert text.parse_text_command(typed) == expected


def test_help_is_answered_by_the_server_itself() -> None:
    assert isinstance(text.parse_text_command("/help"), text.Help)
    assert isinstance(text.parse_text_command("/HELP me"), text.Help)
    assert text.parse_text_command("/lang nb") == text.Lang("nb")
    assert text.parse_text_command("/LANG") == text.Lang("")


@pytest.mark.parametrize(("typed", "command"), [
    ("/nope", "/nope"),
    ("/NOPE with args", "/nope"),
    ("/", "/"),
    ("/whois bob", "/whois"),
    ("/" + "x" * 100, "/" + "x" * 31),
])
def test_an_unknown_command_is_named_not_sent(typed: str, command: str) -> None:
    with pytest.raises(text.UnknownCommand) as info:
        text.parse_text_command(typed)
    assert info.value.command == command


@pytest.mark.parametrize(("typed", "code"), [
    ("/msg", "bad_request"),  # "Usage: /msg NAME TEXT"
    ("/msg bob", "bad_request"),
    ("/msg bob    ", "bad_request"),
    ("/me", "invalid_text"),
    ("/me \x1b[2J", "invalid_text"),
    ("/msg " + "x" * 33 + " hi", "invalid_name"),
    ("x" * 2001, "invalid_text"),
    ("\u202eevil", "invalid_text"),
])
def test_a_bad_command_value_is_refused_with_the_rule(typed: str, code: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        text.parse_text_command(typed)
    assert info.value.code == code


def test_commands_and_their_events_meet_in_the_middle() -> None:
    """What a text user types and a JSON client sends become the same request."""
    pairs: list[tuple[str, Any]] = [
        ("/msg bob psst", '{"type":"msg","to":"bob","text":"psst"}'),
        ("/me waves", '{"type":"say","text":"waves","action":true}'),
        ("/who", '{"type":"who"}'),
        ("/quit", '{"type":"quit"}'),
        ("plain words", '{"type":"say","text":"plain words"}'),
    ]
    for typed, json_line in pairs:
        assert text.parse_text_command(typed) == chat.parse_client_message(json_line)

"""The daemon in Norwegian: a plain-text session with ``text_language = "nb"`` from
greeting to kick with no English sentence, ``/lang`` switching one member, and a JSON
member that asked for ``nb`` in its hello getting Norwegian sentences and the same codes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from lanchat_testing import TEST_PIN_MIN, Daemon, TextClient
from test_lanchatctl import ctl, joined_json, ok

from lanchat import i18n, msgfmt
from lanchat.i18n import LOCALE_DIR

TIME = r"\[\d\d:\d\d:\d\d\] "


def english_fragments() -> list[str]:
    """The fixed parts (10 characters or more) of every English sentence that Norwegian
    says differently: none of them may appear in a Norwegian session."""
    po = Path(LOCALE_DIR) / "nb" / "LC_MESSAGES" / "lanchat.po"
    out: list[str] = []
    for entry in msgfmt.parse_po(po.read_text(encoding="utf-8")):
        if not entry.msgid or entry.msgid_plural is not None:
            continue
        if entry.msgstr.get(0) == entry.msgid:
            continue
        for part in re.split(r"\{[^{}]*\}", entry.msgid):
            part = part.strip(" .,:;()!*'\"")
            if len(part) >= 10 and part not in entry.msgstr.get(0, ""):
                out.append(part)
    return out


def assert_no_english(lines: list[str]) -> None:
    fragments = english_fragments()
    assert len(fragments) > 100  # the check has teeth
    for line in lines:
        found = [f for f in fragments if f in line]
        assert not found, f"English in {line!r}: {found}"


def read_lines(client: TextClient, count: int) -> list[str]:
    lines = []
    for _ in range(count):
        line = client.read_line()
        assert line is not None, f"got only {lines}"
        lines.append(line)
    return lines


def test_a_plain_text_session_in_norwegian_from_greeting_to_kick(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon('[server]\nname = "lab"\ntext_language = "nb"\n')
    said: list[str] = []
    kari = daemon.text_client()
    said.append(kari.greeting)
    assert kari.greeting.endswith("Velkommen til lab (lanchatd " + kari.greeting.split(
        "(lanchatd ", 1)[1].split(")", 1)[0] + "). Skriv inn PIN for rommet:")
    kari.send_line("12")
    said += read_lines(kari, 2)
    assert said[-2:] == ["! En PIN for et rom er 4 til 12 sifre (0-9).",
                         "Skriv inn PIN for rommet du vil bli med i:"]
    kari.send_line("1234")
    said += read_lines(kari, 1)
    assert said[-1] == "Skriv inn brukernavn:"
    kari.send_line("x" * 40)
    said += read_lines(kari, 2)
    assert said[-2].startswith("! Et navn er 1 til 32 synlige tegn")
    assert said[-1] == "Skriv inn brukernavn:"
    ola = joined_json(daemon, "1234", "ola")
    kari.send_line("Ola")
    said += read_lines(kari, 2)
    assert said[-2] == "! Navnet 'Ola' er allerede tatt i dette rommet."
    kari.send_line("kari")
    said += read_lines(kari, 1)
    assert said[-1] == "* Du er i rom 1234 som kari. Her: kari, ola. Skriv /help for kommandoer."
    for typed, expected in [
        ("/help", "* Kommandoer: /who (hvem er her), /msg NAVN TEKST (privat melding), "
                  "/me TEKST (handling), /lang KODE (språk), /quit (forlat). "
                  "Alt annet sendes til rommet."),
        ("/who", "* I rom 1234: kari, ola"),
        ("/nope", "! Ukjent kommando /nope. Skriv /help for kommandoer."),
        ("/msg", "! Bruk: /msg NAVN TEKST"),
        ("/msg per hei", "! Ingen som heter 'per' er i dette rommet."),
        ("/lang xx", "! Språket 'xx' finnes ikke her; tilgjengelig: en, nb."),
    ]:
        kari.send_line(typed)
        said += read_lines(kari, 1)
        assert said[-1] == expected, typed
    kari.send_line("/msg ola hemmelig")
    said += read_lines(kari, 1)
    assert re.fullmatch(TIME + r"\(privat\) kari -> ola: hemmelig", said[-1])
    per = joined_json(daemon, "1234", "per")
    said += read_lines(kari, 1)
    assert re.fullmatch(TIME + r"--> per ble med", said[-1])
    ok(daemon, "stop")
    said += read_lines(kari, 1)
    assert re.fullmatch(TIME + "! Serveren er nå stoppet: meldinger avvises og nye klienter "
                               "avvises", said[-1])
    kari.send_line("hallo?")
    said += read_lines(kari, 1)
    assert said[-1] == "! Serveren er stoppet: meldingen din ble ikke levert."
    late = daemon.text_client()
    said.append(late.greeting)
    assert late.greeting.endswith(" Serveren er stoppet og tar ikke imot nye klienter. "
                                  "Prøv igjen senere.")
    ok(daemon, "standby")
    said += read_lines(kari, 1)
    assert re.fullmatch(TIME + "! Serveren er nå standby: medlemmene chatter videre, nye "
                               "klienter avvises", said[-1])
    ok(daemon, "start")
    said += read_lines(kari, 1)
    assert re.fullmatch(TIME + "! Serveren er nå aktiv: nye klienter og meldinger er tillatt",
                        said[-1])
    ok(daemon, "announce", "Kaffe på kjøkkenet")
    said += read_lines(kari, 1)
    assert re.fullmatch(TIME + "! Kunngjøring: Kaffe på kjøkkenet", said[-1])
    ok(daemon, "kick", "1234", "per", "--reason", "spam")
    said += read_lines(kari, 1)
    assert re.fullmatch(TIME + r"<-- per forlot rommet \(kastet ut: spam\)", said[-1])
    per.close()
    ola.send({"type": "quit"})
    said += read_lines(kari, 1)
    assert re.fullmatch(TIME + r"<-- ola forlot rommet", said[-1])
    ok(daemon, "kick", "1234", "kari", "--reason", "nok for i dag")
    said += read_lines(kari, 1)
    assert said[-1] == "! Administratoren fjernet deg fra rommet: nok for i dag"
    assert kari.read_line() is None  # and the connection is closed
    assert_no_english(said)


def test_lang_switches_one_plain_text_member(daemon: Daemon) -> None:
    kari = daemon.text_client()
    kari.join("1234", "kari")
    ola = daemon.text_client()
    ola.join("1234", "ola")
    kari.read_line()  # ola joined
    kari.send_line("/lang")
    assert read_lines(kari, 2) == ["* Language: English.",
                                   "* Languages: en, nb. Type /lang CODE to change."]
    kari.send_line("/lang nb_NO")
    assert kari.read_line() == "* Språk: norsk bokmål."
    kari.send_line("/who")
    assert kari.read_line() == "* I rom 1234: kari, ola"
    ok(daemon, "standby")
    assert re.fullmatch(TIME + "! Serveren er nå standby: medlemmene chatter videre, nye "
                               "klienter avvises", kari.read_line() or "")
    assert re.fullmatch(TIME + "! Server is now standby: members keep chatting, new clients "
                               "are refused", ola.read_line() or "")
    ola.send_line("hei")  # a message line is the same for both
    assert re.fullmatch(TIME + "ola: hei", kari.read_line() or "")
    kari.send_line("/lang en")
    assert kari.read_line() == "* Language: English."


def test_a_json_member_asks_for_norwegian_in_hello(daemon: Daemon) -> None:
    member = daemon.json_client(hello=False)
    member.send({"type": "hello", "versions": [1], "client": "tests", "lang": "nb-NO"})
    assert member.recv_type("welcome")
    member.send({"type": "join", "pin": "12", "name": "kari"})
    error = member.recv_type("error")
    assert (error["code"], error["ref"]) == ("invalid_pin", "join")
    assert error["message"] == "En PIN for et rom er 4 til 12 sifre (0-9)."
    member.join("1234", "kari")
    member.send({"type": "msg", "to": "per", "text": "hei"})
    error = member.recv_type("error")
    assert (error["code"], error["message"]) == (
        "no_such_member", "Ingen som heter 'per' er i dette rommet.")
    english = joined_json(daemon, "1234", "ola")
    member.recv_type("presence")
    ok(daemon, "stop")
    changed = member.recv_type("state")
    assert (changed["state"], changed["text"]) == (
        "stopped", "meldinger avvises og nye klienter avvises")
    assert english.recv_type("state")["text"] == (
        "messages are refused and new clients are refused")
    ok(daemon, "kick", "1234", "kari")
    bye = member.recv_type("bye")
    assert (bye["reason"], bye["message"]) == ("kicked",
                                               "Administratoren fjernet deg fra rommet.")
    leave = english.recv_type("presence")
    assert leave["reason"] == "kicked"  # machine words never change with the language


def test_an_unknown_language_is_english_silently(daemon: Daemon) -> None:
    member = daemon.json_client(hello=False)
    member.send({"type": "hello", "versions": [1], "lang": "tlh"})
    assert member.recv_type("welcome")
    member.join("1234", "worf")
    member.send({"type": "msg", "to": "per", "text": "Qapla'"})
    assert member.recv_type("error")["message"] == "Nobody called 'per' is in this room."
    bad = daemon.json_client(hello=False)
    bad.send({"type": "hello", "versions": [1], "lang": 7})
    error = bad.recv_type("error")
    assert (error["code"], error["message"]) == ("bad_request", "Field 'lang' must be a string.")


def test_the_daemon_translates_once_per_language() -> None:
    assert i18n.catalogue("nb") is i18n.catalogue("nb")
    assert i18n.gettext_for("xx")("Goodbye.") == "Goodbye."
    assert i18n.supported("no") == "nb"
    assert i18n.supported("nb_NO.UTF-8") == "nb"
    assert i18n.supported("de") is None


NORWEGIAN = {"LC_ALL": "", "LANGUAGE": "", "LC_MESSAGES": "", "LANG": "nb_NO.UTF-8"}


def test_lanchatctl_status_in_norwegian_and_json_the_same_in_every_language(
        daemon: Daemon) -> None:
    kari = joined_json(daemon, "1234", "kari")
    status = ctl(daemon, "status", env=NORWEGIAN)
    assert status.status == 0, status
    lines = status.out.splitlines()
    assert "pid" in lines[0] and ", oppe " in lines[0] and "(siden " in lines[0]
    assert lines[1] == "Tilstand:  aktiv: nye klienter og meldinger er tillatt"
    assert any(line.startswith("Klienter:  1 tilkoblet, 1 i 1 rom") for line in lines)
    assert any(line.startswith("Tellere:   meldinger 0, private meldinger 0, innganger 1")
               for line in lines)
    assert any(line.startswith("Rom 1234: 1 medlem, 0 meldinger, åpent siden ")
               for line in lines)
    assert "NAVN" in status.out and "ADRESSE" in status.out
    assert_no_english(lines)
    english = ctl(daemon, "--lang", "en", "status", env=NORWEGIAN)
    assert "State:     active: new clients and messages are allowed" in english.out
    assert ctl(daemon, "--lang", "nb", "status").out.splitlines()[1].startswith("Tilstand:")
    as_json = ctl(daemon, "status", "--json", env=NORWEGIAN).json()
    assert as_json["state"] == "active"
    assert as_json["state_description"] == "new clients and messages are allowed"
    stopped = ctl(daemon, "stop", env=NORWEGIAN)
    assert stopped.out.strip() == (
        "lanchatd er nå stoppet: meldinger avvises og nye klienter avvises.")
    failed = ctl(daemon, "kick", "9999", "per", "--json", env=NORWEGIAN)
    assert failed.json()["error"]["message"].startswith("There is no room with PIN 9999.")
    missing = ctl(daemon, "kick", "9999", "per", env=NORWEGIAN)
    assert missing.status == 6
    assert missing.err.strip() == ("lanchatctl: Det finnes ikke noe rom med PIN 9999. "
                                      "`lanchatctl rooms` viser de åpne rommene.")
    kari.close()
    bad = ctl(daemon, "close", "12ab", env=NORWEGIAN)
    assert bad.status == 2
    assert "close: En PIN for et rom er 1 til 64 sifre (0-9), ikke '12ab'." in bad.err
    assert "lanchatctl: feil: " in bad.err  # argparse's own words, in Norwegian too
    help_text = ctl(None, "--help", env=NORWEGIAN).out
    assert "Administrer lanchat-daemonen" in help_text and "avslutningsstatus:" in help_text


def test_a_program_is_answered_in_english_before_its_hello_whatever_text_language() -> None:
    import json

    from lanchatd.config import Config
    from lanchatd.core import ChatCore

    core = ChatCore(Config(text_language="nb", pin_min_length=TEST_PIN_MIN), host_name="lab",
                    now=0.0)
    greeting = core.connect(1, ("127.0.0.1", 1), 0.0).sends[0][1]
    assert greeting.endswith(b"Skriv inn PIN for rommet:\n")  # who it is: unknown
    sent = core.receive(1, [b'{"type":"join","pin":"1234","name":"x"}'], 0.0).sends
    error = json.loads(sent[0][1])
    assert (error["code"], error["message"]) == ("bad_state",
                                                 "The first JSON message must be a hello.")

"""Translations: language choice, the catalogues (complete for every program, compiled
at build time, used), and the standard-library catalogue compiler.

The completeness tests read every call of ``_``, ``N_`` and ``ngettext`` in lanchat,
lanchatd and lanchatctl: a message id without a translation in a catalogue, an entry
no code uses any more, a fuzzy or untranslated entry, or a translation whose
placeholders differ from its English fails them, for every ``.po`` there is.
"""

from __future__ import annotations

import ast
import gettext
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lanchat_testing import REPO, Daemon
from test_client_support import client_env, run_client, unused_udp_port

from lanchat import i18n, msgfmt
from lanchat.i18n import _, ngettext

PO = REPO / "lanchat" / "locale" / "nb" / "LC_MESSAGES" / "lanchat.po"
CATALOGUES = sorted((REPO / "lanchat" / "locale").glob("*/LC_MESSAGES/lanchat.po"))
SOURCES = [p for package in ("lanchat", "lanchatd", "lanchatctl")
           for p in sorted((REPO / package).rglob("*.py"))]


@pytest.fixture
def restore_language() -> Iterator[None]:
    yield
    i18n.setup({})


def test_language_is_chosen_like_gettext() -> None:
    assert i18n.requested_languages({}) == []
    assert i18n.requested_languages({"LANG": "nb_NO.UTF-8"}) == ["nb_NO", "nb"]
    assert i18n.requested_languages({"LANG": "no_NO.ISO-8859-1"}) == ["nb_NO", "nb"]
    assert i18n.requested_languages({"LANGUAGE": "de:nb", "LANG": "en_US.UTF-8"}) == [
        "de", "nb"]
    assert i18n.requested_languages({"LC_ALL": "C.UTF-8", "LANG": "nb_NO.UTF-8"}) == []
    assert i18n.requested_languages({"LC_MESSAGES": "nb_NO@euro", "LANG": "C"}) == [
        "nb_NO", "nb"]


def test_norwegian_when_asked_english_otherwise(restore_language: None) -> None:
    assert i18n.setup({"LANG": "nb_NO.UTF-8"}) == "nb"
    assert _("Found no server on the LAN.") == "Fant ingen server på LAN."
    assert _("Enter the PIN of the room you want to join: ") == \
        "Skriv inn PIN for rommet du vil bli med i: "
    found = _("[Client] Found server at {address}: {name}")
    assert found.format(address="192.168.1.100:5000", name="lab") == \
        "[Klient] Fant server på 192.168.1.100:5000: lab"
    assert ngettext("{count} person", "{count} people", 1).format(count=1) == "1 person"
    assert ngettext("{count} person", "{count} people", 3).format(count=3) == "3 personer"
    assert i18n.setup({"LANGUAGE": "sv:nb"}) == "nb"  # no Swedish: the next preference
    assert i18n.setup({"LANG": "en_GB.UTF-8"}) == "en"
    assert _("Found no server on the LAN.") == "Found no server on the LAN."
    assert i18n.setup({"LANG": "fr_FR.UTF-8"}) == "en"


def test_a_kick_is_said_in_the_persons_language_with_the_administrators_words(
        restore_language: None) -> None:
    from lanchat.client import messages
    from lanchat.client.session import Finished

    kicked = Finished(False, "kicked", "You were removed from the room by the administrator: "
                      "spam", (), "spam")
    closed = Finished(False, "room_closed", "The room was closed by the administrator.", ())
    assert i18n.setup({"LANG": "nb_NO.UTF-8"}) == "nb"
    assert messages.finished(kicked) == "Administratoren fjernet deg fra rommet: spam"
    assert messages.finished(closed) == "Administratoren stengte rommet."
    assert i18n.setup({"LANG": "en_GB.UTF-8"}) == "en"
    assert messages.finished(kicked) == "The administrator removed you from the room: spam"


# Where the message ids are in each marking call: (first argument, how many: 1 or a
# singular and plural pair).  translate_plural(language, singular, plural, n) is the
# daemon's ngettext for a member's language.
MARKERS = {"_": (0, 1), "N_": (0, 1), "ngettext": (0, 2), "translate_plural": (1, 2)}


def _source_strings() -> dict[str | tuple[str, str], str]:
    """Every literal given to _, N_, ngettext or translate_plural in the three programs,
    with where it is."""
    found: dict[str | tuple[str, str], str] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            if name not in MARKERS or (name != "translate_plural"
                                       and not isinstance(func, ast.Name)):
                continue
            first, count = MARKERS[name]
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            texts = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str)
                     else None for a in node.args[first:first + count]]
            assert len(texts) == count and None not in texts, \
                f"{where}: translatable text must be a string literal"
            key: str | tuple[str, str] = (
                texts[0] if count == 1 else (texts[0], texts[1]))  # type: ignore[assignment]
            found.setdefault(key, where)
    return found


def _fields(text: str) -> list[str]:
    """The placeholders: {name} ones (any order), and argparse's %-ones (in order)."""
    return sorted(re.findall(r"\{[^{}]*\}", text)) + re.findall(r"%(?:\(\w+\))?[srd]",
                                                               text)


def test_there_is_a_norwegian_catalogue_and_every_catalogue_is_a_language() -> None:
    assert PO in CATALOGUES
    assert tuple(sorted({"en", *(p.parents[1].name for p in CATALOGUES)})) == i18n.LANGUAGES


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: p.parents[1].name)
def test_every_catalogue_translates_every_sentence_of_the_three_programs(po: Path) -> None:
    strings = _source_strings()
    assert any(where.startswith("lanchatd/") for where in strings.values())
    assert any(where.startswith("lanchatctl/") for where in strings.values())
    problems = catalogue_problems(po.read_text(encoding="utf-8"), str(po), strings)
    assert not problems, f"{po.relative_to(REPO)}:\n" + "\n".join(problems)


def catalogue_problems(text: str, name: str,
                       strings: dict[str | tuple[str, str], str]) -> list[str]:
    """What keeps a catalogue from being complete for the code's ``strings``."""
    entries = {(e.msgid if e.msgid_plural is None else (e.msgid, e.msgid_plural)): e
               for e in msgfmt.parse_po(text, name) if e.msgid}
    problems = [f"missing: {where}: {key!r}" for key, where in strings.items()
                if key not in entries]
    problems += [f"stale (no longer in the code): {key!r}" for key in entries
                 if key not in strings]
    for key, entry in entries.items():
        if entry.fuzzy:
            problems.append(f"fuzzy: {key!r}")
        if not entry.translated:
            problems.append(f"untranslated: {key!r}")
        source = key if isinstance(key, str) else key[1]
        if any(_fields(t) != _fields(source) for t in entry.msgstr.values()):
            problems.append(f"placeholders differ: {key!r}")
    return problems


def test_the_completeness_check_finds_each_kind_of_problem() -> None:
    po = """
msgid "Hello {name}."
msgstr "Hei."

#, fuzzy
msgid "Goodbye."
msgstr "Ha det."

msgid "Gone."
msgstr "Borte."

msgid "Untranslated."
msgstr ""
"""
    strings: dict[str | tuple[str, str], str] = {
        "Hello {name}.": "a.py:1", "Goodbye.": "a.py:2", "Untranslated.": "a.py:3",
        "New sentence.": "a.py:4"}
    assert sorted(catalogue_problems(po, "x.po", strings)) == sorted([
        "missing: a.py:4: 'New sentence.'",
        "stale (no longer in the code): 'Gone.'",
        "fuzzy: 'Goodbye.'",
        "untranslated: 'Untranslated.'",
        "placeholders differ: 'Hello {name}.'",
    ])


def test_compiler_reads_plurals_context_escapes_and_skips_fuzzy() -> None:
    po = r'''
msgid ""
msgstr "Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\n"

# a comment
msgid "one line"
msgstr "én linje"

msgid ""
"split "
"\"quoted\"\ttab"
msgstr "delt \"sitert\"\ttab"

msgctxt "menu"
msgid "Open"
msgstr "Åpne"

#, fuzzy
msgid "unsure"
msgstr "usikker"

msgid "untranslated"
msgstr ""

msgid "{n} file"
msgid_plural "{n} files"
msgstr[0] "{n} fil"
msgstr[1] "{n} filer"
'''
    catalogue = gettext.GNUTranslations(io.BytesIO(msgfmt.compile_po(po)))
    assert catalogue.gettext("one line") == "én linje"
    assert catalogue.gettext('split "quoted"\ttab') == 'delt "sitert"\ttab'
    assert catalogue.pgettext("menu", "Open") == "Åpne"
    assert catalogue.gettext("unsure") == "unsure"
    assert catalogue.gettext("untranslated") == "untranslated"
    assert catalogue.ngettext("{n} file", "{n} files", 1) == "{n} fil"
    assert catalogue.ngettext("{n} file", "{n} files", 2) == "{n} filer"


def test_compiler_errors_name_the_file_and_line() -> None:
    with pytest.raises(msgfmt.PoError, match=r"x\.po:3: unknown keyword"):
        msgfmt.compile_po('msgid "a"\nmsgstr "b"\nmsgfoo "c"\n', "x.po")
    with pytest.raises(msgfmt.PoError, match=r"x\.po:1: expected a quoted string"):
        msgfmt.compile_po("msgid a\nmsgstr b\n", "x.po")
    with pytest.raises(msgfmt.PoError, match="duplicate"):
        msgfmt.compile_po('msgid "a"\nmsgstr "b"\n\nmsgid "a"\nmsgstr "c"\n', "x.po")
    with pytest.raises(msgfmt.PoError, match="only UTF-8"):
        msgfmt.compile_po('msgid ""\nmsgstr "Content-Type: text/plain; charset=ISO-8859-1\\n"\n')


@pytest.mark.slow
def test_build_compiles_the_catalogue_into_the_wheel(tmp_path: Path) -> None:
    """The real build (setup.py's build_py) puts the compiled nb catalogue in the wheel."""
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "packaging").mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "packaging/pypi_description.py"):
        shutil.copy(REPO / name, tree / name)  # setup.py's inputs
    for package in ("lanchat", "lanchatd", "lanchatctl"):
        shutil.copytree(REPO / package, tree / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.mo"))
    # With the build backend at hand, build offline; else pip fetches it, as for any install.
    have_backend = importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel")
    isolation = ["--no-build-isolation"] if have_backend else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
         "-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("lanchat-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read("lanchat/locale/nb/LC_MESSAGES/lanchat.mo")
    catalogue = gettext.GNUTranslations(io.BytesIO(data))
    assert catalogue.gettext("Found no server on the LAN.") == "Fant ingen server på LAN."
    assert catalogue.ngettext("{count} person", "{count} people", 2) == "{count} personer"


def test_client_speaks_norwegian_when_the_locale_asks(tmp_path: Path) -> None:
    env = client_env(tmp_path, LC_ALL="", LANG="nb_NO.UTF-8")
    result = run_client(["--discover", "--discovery-address", "127.0.0.1",
                         "--discovery-port", str(unused_udp_port()), "--discovery-timeout",
                         "0.3"], env)
    assert result.returncode == 1
    assert "Fant ingen server på LAN." in result.stderr
    assert "brannmur blokkerer UDP-port" in result.stderr
    help_text = run_client(["--help"], env).stdout
    assert "hvilken server" in help_text and "PIN for rommet" in help_text


def test_refusal_explained_in_norwegian(daemon: Daemon, tmp_path: Path) -> None:
    env = client_env(tmp_path, LC_ALL="", LANGUAGE="nb")
    result = run_client(["--server", f"127.0.0.1:{daemon.tcp[1]}", "--pin", "12",
                         "--name", "ci"], env, input="hei\n")
    assert result.returncode == 1
    assert "En PIN for et rom er 4 til 12 sifre (0-9)." in result.stderr
    assert "[Klient] Koble til server" in result.stderr


def test_lang_flag_and_setting_choose_over_the_locale(tmp_path: Path) -> None:
    english = client_env(tmp_path, LC_ALL="", LANG="en_US.UTF-8")
    assert "hvilken server" in run_client(["--lang", "nb", "--help"], english).stdout
    settings = tmp_path / "lanchat.toml"
    settings.write_text('language = "nb"\n', encoding="utf-8")
    assert "hvilken server" in run_client(["--config", str(settings), "--help"],
                                          english).stdout
    norwegian = client_env(tmp_path, LC_ALL="", LANG="nb_NO.UTF-8")
    assert "which server" in run_client(["--config", str(settings), "--lang", "en",
                                         "--help"], norwegian).stdout


def test_the_client_asks_the_server_for_its_language_in_hello() -> None:
    from lanchat.client import session as s
    from lanchat.protocol import chat

    session = s.Session(pin="1234", name="kari", lang="nb")
    session.connecting(0.0)
    session.connection_made(0.0)
    session.receive_data(b"LANCHAT/1 ready Velkommen\n", 0.0)
    hello = chat.parse_client_message(session.data_to_send().decode().splitlines()[0])
    assert isinstance(hello, chat.Hello) and hello.lang == "nb"


def test_usage_words_follow_the_language(tmp_path: Path) -> None:
    env = client_env(tmp_path, LC_ALL="", LANG="nb_NO.UTF-8")
    help_text = run_client(["--help"], env).stdout
    assert help_text.startswith("bruk: lanchat ")
    assert "vis denne hjelpeteksten og avslutt" in help_text
    wrong = run_client(["--port", "x"], env)
    assert wrong.returncode == 2
    assert "lanchat: feil: argument --port: ikke et portnummer fra 1 til 65535: 'x'" in (
        wrong.stderr)
    english = run_client(["--port", "x"], client_env(tmp_path, LC_ALL="", LANG="en_GB.UTF-8"))
    assert "lanchat: error: argument --port: not a port number" in english.stderr


def test_a_placeholder_missing_from_a_translation_is_caught() -> None:
    assert _fields("Removed {name}{addr} from room {pin}.") != _fields("Fjernet {name}.")
    assert _fields("%(prog)s: error: %(message)s\n") == _fields("%(prog)s: feil: %(message)s\n")
    assert _fields("not allowed with argument %s") != _fields("ikke tillatt")


# The calls through which the daemon's sentences reach a member, and which argument
# (counted from 0) is the sentence: it must be marked (N_, or a translation of one),
# never an f-string or a bare literal that the catalogues cannot see.
SENTENCE_ARGUMENT = {"_error": 3, "_bye": 3, "_refuse_join": 3, "_reply_line": 2,
                     "RemoteProtocolError": 1, "LocalProtocolError": 1, "_need": 1}
# (lanchat/protocol/control.py is the admin channel: lanchatctl says its own sentences.)
DAEMON_SOURCES = [REPO / "lanchatd" / "core.py",
                  *(p for p in sorted((REPO / "lanchat" / "protocol").glob("*.py"))
                    if p.name != "control.py")]


def _unmarked(node: ast.expr) -> bool:
    """Whether ``node`` builds a sentence by hand: an f-string, a literal, or a sum or
    formatting of such (a call such as ``self._tr(...)`` or a name is marked elsewhere)."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.BinOp):
        return _unmarked(node.left) or _unmarked(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "format":
        return _unmarked(node.func.value)
    return False


def test_every_sentence_the_daemon_sends_is_marked_for_the_catalogues() -> None:
    found = []
    for path in DAEMON_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            at = SENTENCE_ARGUMENT.get(name)
            if at is None or len(node.args) <= at:
                continue
            if name.endswith("ProtocolError"):
                code = node.args[0]
                if isinstance(code, ast.Attribute) and getattr(code.value, "id", "") == \
                        "LocalCode":
                    continue  # a client library's own error: never sent by the daemon
            arg = node.args[at]
            if _unmarked(arg):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(arg)}")
    assert not found, "sentences not marked with N_ (not in the catalogues):\n" + \
        "\n".join(found)


def test_the_marking_check_tells_a_hand_built_sentence_from_a_marked_one() -> None:
    def unmarked(source: str) -> bool:
        return _unmarked(ast.parse(source, mode="eval").body)

    assert unmarked('f"Nobody called {name!r} is here."')
    assert unmarked('"Goodbye."')
    assert unmarked('"Disconnected: " + reason')
    assert unmarked('"{count} errors".format(count=n)')
    assert not unmarked('self._tr(conn, N_("Goodbye."))')
    assert not unmarked('N_("A line may be at most {max} bytes.")')
    assert not unmarked("exc.template")


SEED = REPO.parent / "shared" / "seeds" / "000_cb83369d9f4e1be8.txt"


def test_the_consoles_norwegian_is_the_seeds_word_for_word(restore_language: None) -> None:
    from lanchat.protocol.control import SetState
    from lanchatctl import console

    assert i18n.setup({"LANG": "nb_NO.UTF-8"}) == "nb"
    # The seed's server starts neither active nor stopped: lanchatd's standby.
    dashboard = console.dashboard_lines({"state": "standby", "rooms": []})
    seed_block = [
        "=== SERVER DASHBOARD ===",
        "Server aktiv for nye klienter: False",
        "Server stoppet (meldinger blokkert): False",
        "Ingen aktive rom.",
        "",
        "Skriv /help for kommandoer.",
        "",
        "Server klar. Bruk /start for å aktivere. /help for kommandoer.",
    ]
    assert dashboard == seed_block
    started = console.reply_lines(SetState("active"), {"changed": True})
    assert started == ["[Server] Serveren startet. Nye klienter og meldinger OK."]
    if SEED.exists():  # the seed beside the worktrees: the same lines, in the same order
        seed = SEED.read_text(encoding="utf-8")
        assert "\n".join(seed_block) in seed
        assert f"Server> /start\n{started[0]}" in seed
    assert i18n.setup({"LANG": "en_GB.UTF-8"}) == "en"
    assert console.reply_lines(SetState("active"), {"changed": True}) == [
        "[Server] Server started. New clients and messages OK."]


def test_the_server_speaks_the_clients_language_except_in_json(daemon: Daemon,
                                                                 tmp_path: Path) -> None:
    env = client_env(tmp_path, LC_ALL="", LANGUAGE="nb")
    server = ["--server", f"127.0.0.1:{daemon.tcp[1]}", "--pin", "1234"]
    plain = run_client([*server, "--name", "kari", "--plain"], env, input="/msg per hei\n")
    assert "Ingen som heter 'per' er i dette rommet." in plain.stderr + plain.stdout
    as_json = run_client([*server, "--name", "ola", "--json"], env, input="/msg per hei\n")
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    # --json's events are data: the server's sentences in them are its English ones.
    assert {"type": "bye", "reason": "quit", "message": "Goodbye."} in events
    assert "Linje 1 ble ikke sendt: " in as_json.stderr  # the person's own words stay

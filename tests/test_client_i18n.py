"""Translations: language choice, the Norwegian catalogue (complete, compiled at build
time, used), and the standard-library catalogue compiler."""

from __future__ import annotations

import ast
import gettext
import importlib.util
import io
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

from lanchat.client import i18n, msgfmt
from lanchat.client.i18n import _, ngettext

PO = REPO / "lanchat" / "locale" / "nb" / "LC_MESSAGES" / "lanchat.po"
SOURCES = [*sorted((REPO / "lanchat" / "client").glob("*.py")), REPO / "lanchat" / "cli.py"]


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


def _source_strings() -> dict[str | tuple[str, str], str]:
    """Every literal given to _, N_ or ngettext in the client, with where it is."""
    found: dict[str | tuple[str, str], str] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("_", "N_", "ngettext")):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            args = node.args
            assert all(isinstance(a, ast.Constant) and isinstance(a.value, str)
                       for a in args[: 2 if node.func.id == "ngettext" else 1]), \
                f"{where}: translatable text must be a string literal"
            key: str | tuple[str, str] = (
                (args[0].value, args[1].value) if node.func.id == "ngettext"  # type: ignore[attr-defined]
                else args[0].value)  # type: ignore[attr-defined]
            found.setdefault(key, where)
    return found


def _fields(text: str) -> set[str]:
    return set(re.findall(r"\{[^{}]*\}", text))


def test_norwegian_catalogue_translates_every_string_of_the_client() -> None:
    entries = {(e.msgid if e.msgid_plural is None else (e.msgid, e.msgid_plural)): e
               for e in msgfmt.parse_po(PO.read_text(encoding="utf-8"), str(PO)) if e.msgid}
    strings = _source_strings()
    missing = [f"{where}: {key!r}" for key, where in strings.items() if key not in entries]
    assert not missing, "not in lanchat.po:\n" + "\n".join(missing)
    stale = [key for key in entries if key not in strings]
    assert not stale, f"in lanchat.po but no longer in the code: {stale}"
    for key, entry in entries.items():
        assert entry.translated and not entry.fuzzy, f"untranslated: {key!r}"
        source = key if isinstance(key, str) else key[1]
        for translation in entry.msgstr.values():
            assert _fields(translation) == _fields(source), \
                f"placeholders differ in the translation of {key!r}"


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
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, tree / name)
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

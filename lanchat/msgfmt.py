"""Compile a gettext ``.po`` catalogue to the binary ``.mo`` form, in the standard library.

The build (setup.py) compiles ``lanchat/locale/*/LC_MESSAGES/*.po`` with this module,
so building needs no GNU gettext tools; a source checkout run without a build
compiles the catalogue in memory with the same code (``lanchat.i18n``).

Supported: comments, ``msgctxt``, plural forms (``msgid_plural`` / ``msgstr[N]``),
multi-line strings and the C escapes gettext uses.  Fuzzy entries are left out, as
GNU ``msgfmt`` does without ``--use-fuzzy``; entries without a translation too.
The ``.mo`` layout is the one ``gettext.GNUTranslations`` reads: a header, two
tables of (length, offset) pairs sorted by original string, then the strings.
"""

from __future__ import annotations

import ast
import struct
from dataclasses import dataclass, field
from pathlib import Path

MO_MAGIC = 0x950412DE


class PoError(ValueError):
    """A catalogue that cannot be compiled; the message names the file and line."""


@dataclass
class Entry:
    msgid: str = ""
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    fuzzy: bool = False
    line: int = 0

    @property
    def translated(self) -> bool:
        return bool(self.msgstr) and all(self.msgstr.values())


def _unquote(text: str, where: str) -> str:
    text = text.strip()
    if len(text) < 2 or not text.startswith('"') or not text.endswith('"'):
        raise PoError(f"{where}: expected a quoted string, got {text[:40]!r}")
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        raise PoError(f"{where}: bad string {text[:40]!r}") from None
    if not isinstance(value, str):
        raise PoError(f"{where}: bad string {text[:40]!r}")
    return value


def parse_po(text: str, name: str = "<po>") -> list[Entry]:
    """The entries of a catalogue, in file order (the header is the one with msgid "")."""
    entries: list[Entry] = []
    entry = Entry()
    current: tuple[str, int] | None = None  # which field continuation lines extend
    started = False

    def finish() -> None:
        nonlocal entry, started, current
        if started:
            if not entry.msgstr:
                raise PoError(f"{name}:{entry.line}: entry without msgstr")
            entries.append(entry)
        entry, started, current = Entry(), False, None

    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        line = raw.strip()
        if not line:
            finish()
            continue
        if line.startswith("#"):
            if started and entry.msgstr:
                finish()
            if line.startswith("#,") and "fuzzy" in (f.strip() for f in line[2:].split(",")):
                entry.fuzzy = True
            continue
        if line.startswith('"'):
            if current is None:
                raise PoError(f"{where}: string outside of an entry")
            kind, index = current
            value = _unquote(line, where)
            if kind == "msgid":
                entry.msgid += value
            elif kind == "msgid_plural":
                entry.msgid_plural = (entry.msgid_plural or "") + value
            elif kind == "msgctxt":
                entry.msgctxt = (entry.msgctxt or "") + value
            else:
                entry.msgstr[index] += value
            continue
        keyword, _, rest = line.partition(" ")
        if keyword in ("msgctxt", "msgid") and entry.msgstr:
            finish()  # the next entry began without a blank line
        if not started:
            entry.line = number
            started = True
        if keyword == "msgctxt":
            entry.msgctxt = _unquote(rest, where)
            current = ("msgctxt", 0)
        elif keyword == "msgid":
            entry.msgid = _unquote(rest, where)
            current = ("msgid", 0)
        elif keyword == "msgid_plural":
            entry.msgid_plural = _unquote(rest, where)
            current = ("msgid_plural", 0)
        elif keyword == "msgstr":
            entry.msgstr[0] = _unquote(rest, where)
            current = ("msgstr", 0)
        elif keyword.startswith("msgstr[") and keyword.endswith("]"):
            try:
                index = int(keyword[7:-1])
            except ValueError:
                raise PoError(f"{where}: bad plural index in {keyword!r}") from None
            entry.msgstr[index] = _unquote(rest, where)
            current = ("msgstr", index)
        else:
            raise PoError(f"{where}: unknown keyword {keyword[:20]!r}")
    finish()
    seen: set[tuple[str | None, str]] = set()
    for e in entries:
        key = (e.msgctxt, e.msgid)
        if key in seen:
            raise PoError(f"{name}:{e.line}: duplicate msgid {e.msgid[:40]!r}")
        seen.add(key)
        if e.msgid_plural is None and set(e.msgstr) != {0}:
            raise PoError(f"{name}:{e.line}: msgstr[N] without msgid_plural")
    return entries


def compile_entries(entries: list[Entry]) -> bytes:
    """The ``.mo`` bytes for ``entries`` (untranslated and fuzzy ones left out)."""
    table: dict[bytes, bytes] = {}
    for e in entries:
        if not e.translated or (e.fuzzy and e.msgid):
            continue
        key = e.msgid.encode("utf-8")
        if e.msgid_plural is not None:
            key += b"\0" + e.msgid_plural.encode("utf-8")
            value = b"\0".join(e.msgstr[i].encode("utf-8") for i in sorted(e.msgstr))
        else:
            value = e.msgstr[0].encode("utf-8")
        if e.msgctxt is not None:
            key = e.msgctxt.encode("utf-8") + b"\x04" + key
        table[key] = value
    keys = sorted(table)
    count = len(keys)
    header_size = 7 * 4
    originals_at = header_size
    translations_at = originals_at + count * 8
    strings_at = translations_at + count * 8
    originals = bytearray()
    translations = bytearray()
    blob = bytearray()
    for key in keys:
        originals += struct.pack("<II", len(key), strings_at + len(blob))
        blob += key + b"\0"
    for key in keys:
        value = table[key]
        translations += struct.pack("<II", len(value), strings_at + len(blob))
        blob += value + b"\0"
    header = struct.pack("<7I", MO_MAGIC, 0, count, originals_at, translations_at, 0, 0)
    return header + bytes(originals) + bytes(translations) + bytes(blob)


def compile_po(text: str, name: str = "<po>") -> bytes:
    entries = parse_po(text, name)
    header = next((e for e in entries if e.msgid == "" and e.msgctxt is None), None)
    if header is not None:
        charset = ""
        for line in header.msgstr.get(0, "").splitlines():
            if line.lower().startswith("content-type:") and "charset=" in line:
                charset = line.split("charset=", 1)[1].strip().lower()
        if charset and charset not in ("utf-8", "utf8"):
            raise PoError(f"{name}: only UTF-8 catalogues are supported, not {charset}")
    return compile_entries(entries)


def compile_file(po_path: Path, mo_path: Path) -> None:
    """Compile one ``.po`` file to ``mo_path`` (its directory is created)."""
    data = compile_po(po_path.read_text(encoding="utf-8"), str(po_path))
    mo_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = mo_path.with_name(mo_path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(mo_path)


def compile_tree(locale_src: Path, locale_out: Path) -> list[Path]:
    """Compile every ``<lang>/LC_MESSAGES/<domain>.po`` under ``locale_src`` into the
    same layout under ``locale_out``; returns the ``.mo`` files written."""
    written: list[Path] = []
    for po in sorted(locale_src.glob("*/LC_MESSAGES/*.po")):
        mo = locale_out / po.relative_to(locale_src).with_suffix(".mo")
        compile_file(po, mo)
        written.append(mo)
    return written

#!/usr/bin/env python3
"""Write lanchatd.toml(5) from docs/lanchatd.toml, the example configuration.

The example file is itself generated from lanchatd/config.py and lists every key with
its default, meaning and allowed values, so the manual page takes its key reference
from there and cannot drift from the daemon.  The prose around it lives below.

    docs/man/make-toml-page.py            rewrite docs/man/lanchatd.toml.5
    docs/man/make-toml-page.py --check    exit 1 if it is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "lanchatd.toml"
PAGE = HERE / "lanchatd.toml.5"
VERSION_FILE = HERE.parent.parent / "lanchat" / "__init__.py"

HEAD = r""".TH LANCHATD.TOML 5 "2026-11-21" "lanchat {version}" "File Formats"
.SH NAME
lanchatd.toml \- configuration file of the lanchat daemon
.SH SYNOPSIS
.I /etc/lanchat/lanchatd.toml
.SH DESCRIPTION
.BR lanchatd (8)
reads its settings from a TOML file:
.I /etc/lanchat/lanchatd.toml
by default,
.I $CONFIGURATION_DIRECTORY/lanchatd.toml
when systemd sets that variable (the packaged service points it at
.IR /etc/lanchat ),
or the file given with
.BR "lanchatd \-\-config" .
A missing default file means the built-in defaults.
Command-line flags override the file.
.PP
Each key belongs in the section (table) under which it is listed below.
Unknown sections and keys, and values of the wrong type or out of range, are
refused at start with the file, line and key named, and the daemon exits with
status 2; nothing is silently ignored.
To check a file without starting the daemon:
.PP
.RS
.EX
lanchatd \-\-config /etc/lanchat/lanchatd.toml \-\-check\-config
.EE
.RE
.PP
Keys marked
.I Reloadable
take effect when the daemon is reloaded
.RB ( "systemctl reload lanchatd" ,
.BR "lanchatctl reload" ,
or
.BR SIGHUP );
the others at the next start.
A reload with an invalid file keeps the running configuration.
.PP
The packaged file lists every key commented out with its default value.
"""

TAIL = r""".SH EXAMPLE
A server for one school lab, named, with room PINs of exactly six digits, that
starts in standby until the teacher opens it:
.PP
.RS
.EX
[server]
name = "Lab 2"
initial_state = "standby"

[rooms]
pin_min_length = 6
pin_max_length = 6
.EE
.RE
.SH FILES
.TP
.I /etc/lanchat/lanchatd.toml
The configuration file of the packaged service.
.SH SEE ALSO
.BR lanchatd (8),
.BR lanchatctl (8),
.UR https://toml.io/
TOML
.UE
"""

KEY_LINE = re.compile(r"^#([a-z_]+) = (.*)$")


def roff_text(text: str) -> str:
    """Escape text for a roff text line (not a request)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


Key = tuple[str, Optional[list[str]], str, list[str]]


def parse(example: str) -> list[tuple[str, list[Key]]]:
    """[(section, [(key, default lines or None, description, example lines)])] in order."""
    sections: list[tuple[str, list[Key]]] = []
    lines = example.splitlines()
    i = 0
    comment: list[str] = []
    while i < len(lines):
        line = lines[i]
        i += 1
        section = re.fullmatch(r"\[([a-z_]+)\]", line)
        if section:
            sections.append((section.group(1), []))
            comment = []
            continue
        if not sections:
            continue  # the file's own introduction
        if line == "":
            comment = []
            continue
        key = KEY_LINE.match(line)
        if key:
            default = [key.group(2)]
            if default[0] == "[":
                while i < len(lines) and lines[i] != "#]":
                    default.append(lines[i][1:])
                    i += 1
                default.append("]")
                i += 1
            unset = "Not set by default; for example:" in comment
            text = " ".join(c for c in comment if c != "Not set by default; for example:")
            sections[-1][1].append((key.group(1), None if unset else default, text, default))
            comment = []
            continue
        if line.startswith("# "):
            comment.append(line[2:])
            continue
        raise SystemExit(f"{EXAMPLE}: cannot read line {i}: {line!r}")
    if not sections or not all(keys for _, keys in sections):
        raise SystemExit(f"{EXAMPLE}: found no keys")
    return sections


def render(example: str, version: str) -> str:
    out = [HEAD.format(version=version), ".SH KEYS"]
    for section, keys in parse(example):
        out.append(f".SS [{section}]")
        for key, default, text, sample in keys:
            out.append(".TP")
            if default is None:
                out.append(f"\\fB{key}\\fR")
                out.append(roff_text(text) + " Not set by default; for example:")
                out.append(f"\\fB{key} = {roff_text(sample[0])}\\fR")
            elif len(default) == 1:
                out.append(f"\\fB{key}\\fR = {roff_text(default[0])}")
                out.append(roff_text(text))
            else:
                out.append(f"\\fB{key}\\fR")
                out.append(roff_text(text) + " Default:")
                out.append(".RS")
                out.append(".EX")
                out.extend(roff_text(d) for d in default)
                out.append(".EE")
                out.append(".RE")
    out.append(TAIL.rstrip("\n"))
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    version_match = re.search(r'^__version__ = "(.*)"$', VERSION_FILE.read_text(), re.M)
    if version_match is None:
        raise SystemExit(f"{VERSION_FILE}: no __version__")
    page = render(EXAMPLE.read_text(encoding="utf-8"), version_match.group(1))
    if argv == ["--check"]:
        if PAGE.exists() and PAGE.read_text(encoding="utf-8") == page:
            return 0
        print(f"{PAGE} is out of date: run {Path(__file__).name}", file=sys.stderr)
        return 1
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    PAGE.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

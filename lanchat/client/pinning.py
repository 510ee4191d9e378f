"""Trust on first use: the servers this person has met, by server id, and their keys.

The client trusts a lanchat server the way SSH trusts a host, with no certificate
authority: the first time it meets a server id over TLS it shows the fingerprint of
the server's key and remembers it in ``known_servers``; every later connection to the
same server id must present the same key, or the client refuses it *before it sends a
PIN or a name* and says how to forget the old key if the change is expected (a
reinstalled server).  A server the person has met over TLS is never joined over plain
text again without ``--insecure``: a downgrade is refused like a changed key.

``known_servers`` is a text file in the user's data directory (on Linux
``~/.local/share/lanchat/known_servers``), one server a line::

    # server id                       fingerprint                         name
    f44e4922373d480492f236c1e7c32f94 SHA256:9f86-d081-...-0a08 lab

Lines starting with ``#`` and lines that cannot be read are kept as they are; a line
is only ever added or removed whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lanchat import paths
from lanchat.client.i18n import _
from lanchat.protocol import fingerprint

FILE_NAME = "known_servers"
HEADER = ("# lanchat known servers: server id, key fingerprint, name. "
          "Remove a line with: lanchat --forget SERVER_ID\n")


@dataclass(frozen=True)
class Known:
    server_id: str
    fingerprint: str
    name: str = ""


def default_path() -> Path:
    return Path(paths.user_dir("data")) / FILE_NAME


def forget_command(server_id: str) -> str:
    return f"lanchat --forget {server_id}"


class KnownServers:
    """The ``known_servers`` file; every call reads it afresh (another lanchat may write)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = default_path() if path is None else path

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError):
            return []

    def entries(self) -> Iterator[Known]:
        for line in self._lines():
            known = _parse(line)
            if known is not None:
                yield known

    def get(self, server_id: str) -> Known | None:
        for known in self.entries():
            if known.server_id == server_id:
                return known
        return None

    def remember(self, server_id: str, print_: str, name: str = "") -> None:
        """Add (or replace) the line of ``server_id``.  Raises OSError."""
        lines = [line for line in self._lines()
                 if (_parse(line) or Known("", "")).server_id != server_id]
        if not lines:
            lines = [HEADER.rstrip("\n")]
        clean_name = " ".join(name.split())[:64]
        lines.append(f"{server_id} {fingerprint.parse_fingerprint(print_)} {clean_name}".rstrip())
        self._write(lines)

    def forget(self, server_id: str) -> bool:
        """Remove the line of ``server_id``; False if there was none.  Raises OSError."""
        lines = self._lines()
        kept = [line for line in lines if (_parse(line) or Known("", "")).server_id != server_id]
        if len(kept) == len(lines):
            return False
        self._write(kept)
        return True

    def _write(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.replace(tmp, self.path)


def _parse(line: str) -> Known | None:
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    parts = line.split(None, 2)
    if len(parts) < 2 or not 0 < len(parts[0]) <= 64:
        return None
    try:
        print_ = fingerprint.parse_fingerprint(parts[1])
    except ValueError:
        return None
    return Known(parts[0], print_, parts[2].strip() if len(parts) > 2 else "")


# ------------------------------------------------------------------ the policy


class Refused(Exception):
    """The server must not get the PIN; the message says why and what to do."""


def check(known: KnownServers, server_id: str, presented: str | None, *,
          insecure: bool, name: str = "") -> str | None:
    """Decide about a server that said it is ``server_id`` and showed key ``presented``
    (None: a plain-text connection).  Raises Refused; returns a sentence to show the
    person when the key was remembered now (first contact), else None.
    """
    entry = known.get(server_id)
    if presented is None:
        if entry is not None and not insecure:
            raise Refused(
                _("{name} ({server_id}) is known to speak TLS, but this connection is not "
                  "encrypted: someone may be pretending to be it. Your PIN and name were "
                  "not sent. Use --insecure to connect without encryption anyway.").format(
                    name=name or entry.name or "?", server_id=server_id))
        return None
    if entry is None:
        try:
            known.remember(server_id, presented, name)
        except OSError as exc:
            return _("First contact with {name} ({server_id}); its key fingerprint is "
                     "{fingerprint}. It could not be remembered: {error}").format(
                name=name or "?", server_id=server_id, fingerprint=presented,
                error=exc.strerror or exc)
        return _("First contact with {name} ({server_id}); its key fingerprint is "
                 "{fingerprint}. Remembered in {path}.").format(
            name=name or "?", server_id=server_id, fingerprint=presented, path=known.path)
    if entry.fingerprint != presented:
        raise Refused(key_changed(server_id, name or entry.name, entry.fingerprint, presented))
    return None


def key_changed(server_id: str, name: str, expected: str, presented: str) -> str:
    return _("THE KEY OF {name} ({server_id}) HAS CHANGED. Someone may be pretending to be "
             "that server to learn your room PIN, so your PIN and name were not sent.\n"
             "  known key:     {expected}\n"
             "  presented key: {presented}\n"
             "If the server was reinstalled and its administrator confirms the new key, "
             "forget the old one with:\n  {command}").format(
        name=name or "?", server_id=server_id, expected=expected, presented=presented,
        command=forget_command(server_id))

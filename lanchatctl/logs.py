"""``lanchatctl log``: the whole activity log (rotated files and the daemon's memory), filtered.

Theory of operation
-------------------
lanchatd keeps its newest entries in memory (the ring, ``log_ring_size``) and writes
every entry to its file, which ``RotatingFileHandler`` rotates as ``activity.log.1 ...
.N``, one JSON object a line.  The control socket serves the ring; the older entries
exist only in the files.  So lanchatctl reads the files itself, as ``journalctl``
does: the daemon's single thread never spends time on an administrator's search of
megabytes, and the files' permissions (group ``lanchat`` under systemd) decide who
may read them.  The entries are put together oldest first, the files' then the
ring's, an entry in both counted once (the ring's newest may not have reached the
file yet), and then filtered.

A reader the files refuse (or a daemon that keeps its log in memory only) still gets
the ring, and is told that older entries were left out, and why.

Everything here is pure but ``read_files``; the socket is cli.py's.
"""

from __future__ import annotations

import datetime
import glob
import ipaddress
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from lanchat.i18n import _

Entry = dict[str, Any]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.I)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Entry fields that hold a peer's address (host:port, [v6]:port).
ADDRESS_FIELDS = ("addr", "peer")


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds for ``--since``/``--until``: an ISO 8601 / RFC 3339 time or date
    (local time unless it names an offset or Z), or a duration ago (``90s``, ``15m``,
    ``2h``, ``3d``, ``1w``).  ValueError names what is accepted."""
    value = text.strip()
    match = _AGO.fullmatch(value)
    if match:
        now = time.time() if now is None else now
        return now - float(match.group(1)) * _UNITS[match.group(2).lower()]
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            _("not a time: {value!r} (give 2026-12-01, 2026-12-01T09:30, "
              "2026-12-01T09:30:00Z, or a time ago: 90s, 15m, 2h, 3d, 1w)").format(
                value=text)) from None
    return moment.timestamp()  # a naive time is local, as the log's text shows it


def _host(address: str) -> str:
    if address.startswith("["):
        return address[1:address.find("]")] if "]" in address else address
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else address


@dataclass(frozen=True)
class LogFilter:
    """What ``--since --until --event --room --name --address`` ask for (None: any)."""

    since: float | None = None
    until: float | None = None
    events: frozenset[str] = frozenset()
    room: str | None = None
    name: str | None = None
    address: str | None = None

    @property
    def active(self) -> bool:
        return self != LogFilter()

    @property
    def bounded_in_time(self) -> bool:
        return self.since is not None or self.until is not None

    def _network(self) -> Network | None:
        if self.address is None:
            return None
        try:
            return ipaddress.ip_network(self.address, strict=False)
        except ValueError:
            return None

    def matches(self, entry: Mapping[str, Any]) -> bool:
        ts = entry.get("ts")
        if self.since is not None and not (isinstance(ts, (int, float)) and ts >= self.since):
            return False
        if self.until is not None and not (isinstance(ts, (int, float)) and ts <= self.until):
            return False
        if self.events and entry.get("event") not in self.events:
            return False
        if self.room is not None and entry.get("room") != self.room:
            return False
        if self.name is not None and self.name not in (entry.get("name"), entry.get("to")):
            return False
        if self.address is not None:
            return self._address_matches(entry)
        return True

    def _address_matches(self, entry: Mapping[str, Any]) -> bool:
        assert self.address is not None
        network = self._network()
        for field in ADDRESS_FIELDS:
            value = entry.get(field)
            if not isinstance(value, str):
                continue
            host = _host(value)
            if self.address in (value, host):
                return True
            if network is not None:
                try:
                    if ipaddress.ip_address(host) in network:
                        return True
                except ValueError:
                    continue
        return False


def rotated_files(path: str) -> list[str]:
    """``path`` and its rotated files that exist, oldest first (.N ... .1, then path).

    PermissionError when the directory may not be entered: "no files" would hide them.
    """
    try:
        os.stat(path)
        current = [path]
    except FileNotFoundError:
        current = []
    numbered = []
    for name in glob.glob(glob.escape(path) + ".*"):
        suffix = name[len(path) + 1:]
        if suffix.isdigit():
            numbered.append((int(suffix), name))
    return [name for _n, name in sorted(numbered, reverse=True)] + current


def parse_lines(lines: Iterable[bytes]) -> Iterator[Entry]:
    """The entries of a log file's lines; a line that is not a JSON object (a write
    cut short by a crash) is passed over."""
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


def read_files(path: str) -> list[Entry]:
    """Every entry of the log file at ``path`` and its rotated files, oldest first.

    OSError (PermissionError above all) when one cannot be read.  A file rotated away
    between listing and opening is simply missing from the result.
    """
    entries: list[Entry] = []
    for name in rotated_files(path):
        try:
            with open(name, "rb") as f:
                entries.extend(parse_lines(f))
        except FileNotFoundError:
            continue
    return entries


def _key(entry: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return entry.get("seq"), entry.get("ts"), entry.get("event")


def merge(from_files: Sequence[Entry], ring: Sequence[Entry]) -> list[Entry]:
    """The files' entries, then the ring's that the files do not hold yet."""
    seen = {_key(entry) for entry in from_files}
    return [*from_files, *(entry for entry in ring if _key(entry) not in seen)]


def select(entries: Sequence[Entry], where: LogFilter, n: int | None) -> list[Entry]:
    """The entries ``where`` matches, the last ``n`` of them (all when n is None)."""
    chosen = [entry for entry in entries if where.matches(entry)]
    if n is None:
        return chosen
    return chosen[len(chosen) - n:] if n else []

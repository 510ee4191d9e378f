"""How lanchatctl shows the daemon's answers to a person (``--json`` shows them as is)."""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lanchat import i18n
from lanchat.i18n import N_, _, ngettext

COUNTER_LABELS: tuple[tuple[str, str], ...] = (
    ("messages", N_("messages")),
    ("private_messages", N_("private messages")),
    ("joins", N_("joins")),
    ("refused_joins", N_("refused joins")),
    ("connections", N_("connections")),
    ("refused_connections", N_("refused connections")),
    ("page_connections", N_("web page connections")),
    ("disconnects_for_limits", N_("disconnects for limits")),
    ("kicks", N_("kicks")),
    ("protocol_errors", N_("protocol errors")),
    ("rate_limited", N_("rate limited")),
    ("refused_while_stopped", N_("refused while stopped")),
)
DISCOVERY_LABELS: tuple[tuple[str, str], ...] = (
    ("probes", N_("probes")),
    ("answered", N_("answered")),
    ("malformed", N_("malformed")),
    ("not_allowed", N_("not allowed")),
    ("rate_limited", N_("rate limited")),
)


def state_word(state: str) -> str:
    """A server state as a person reads it (the word itself when it is a new one)."""
    words = {"active": _("active"), "standby": _("standby"), "stopped": _("stopped")}
    return words.get(state, state)


def clean(value: object) -> str:
    """``value`` as text that cannot move the terminal's cursor or change its colours."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or ch == " " else
        (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def duration(seconds: float) -> str:
    """3d 04h 05m, 1h 02m 03s, 5m 07s or 12s."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def clock(ts: object, *, date: bool = True) -> str:
    """A timestamp in local time: 2026-11-21 06:59:44 (or only the time)."""
    if not isinstance(ts, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(ts))


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> list[str]:
    """Left-aligned columns, two spaces apart."""
    cells = [list(headers)] + [[clean(c) for c in row] for row in rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [cell + " " * (widths[i] - _width(cell)) for i, cell in enumerate(row)]
        lines.append((indent + "  ".join(parts)).rstrip())
    return lines


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else (words or word + 's')}"


def counter_items(counters: Mapping[str, Any], labels: Sequence[tuple[str, str]]) -> list[str]:
    """``label value`` for each counter: the known ones in order, then any new ones."""
    known = [(key, label) for key, label in labels if key in counters]
    known += [(key, key.replace("_", " ")) for key in counters if key not in dict(labels)]
    return [f"{i18n.translated(label)} {counters[key]}" for key, label in known]


def _wrapped(label: str, items: Sequence[str], width: int = 100) -> list[str]:
    """``Label:    a, b, c`` over as many lines as needed, never breaking an item."""
    rows: list[str] = []
    current = ""
    for i, item in enumerate(items):
        text = item + ("," if i < len(items) - 1 else "")
        if current and 11 + len(current) + 1 + len(text) > width:
            rows.append(current)
            current = text
        else:
            current = f"{current} {text}" if current else text
    rows.append(current)
    return [f"{_label(label)}{rows[0]}".rstrip()] + [" " * 11 + row for row in rows[1:]]


def status_lines(status: Mapping[str, Any], *, width: int = 100) -> list[str]:
    """The dashboard: state, uptime, clients, counters, rooms with members."""
    rooms = status.get("rooms") or []
    lines = [
        _("lanchatd {version} \"{name}\", pid {pid}, up {uptime} (since {since})").format(
            version=clean(status.get("version", "?")), name=clean(status.get("name", "")),
            pid=status.get("pid", "?"), uptime=duration(status.get("uptime", 0)),
            since=clock(status.get("started"))),
        _label(_("State:")) + "{}: {}".format(
            state_word(clean(status.get("state", "?"))),
            clean(i18n.translated(str(status.get("state_description", ""))))),
    ]
    addresses = dict(status.get("addresses") or {})
    control = addresses.pop("control", None)
    if addresses:
        lines += _wrapped(_("Listening:"), [f"{key} {clean(value)}"
                                            for key, value in addresses.items()], width)
    if control:
        lines.append(_label(_("Control:")) + clean(control))
    tls_fingerprint = status.get("tls_fingerprint")
    if tls_fingerprint:  # what clients pin: the administrator reads it out to people
        lines.append(_label(_("TLS key:")) + clean(tls_fingerprint))
    lines.append(_label(_("Clients:")) + ngettext(
        "{clients} connected, {members} in {count} room",
        "{clients} connected, {members} in {count} rooms", len(rooms)).format(
            clients=status.get("clients", 0), members=status.get("members", 0),
            count=len(rooms)))
    lines += _wrapped(_("Counters:"), counter_items(status.get("counters") or {},
                                                     COUNTER_LABELS), width)
    discovery = status.get("discovery")
    if discovery:
        lines += _wrapped(_("Discovery:"), counter_items(discovery, DISCOVERY_LABELS), width)
    lines.append("")
    lines += rooms_detail_lines(rooms)
    return lines


def _label(label: str) -> str:
    """A dashboard label padded to the value column (11 wide, or one space past it)."""
    return label + " " * max(1, 11 - _width(label))


def rooms_detail_lines(rooms: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rooms:
        return [_("No rooms are open.")]
    lines: list[str] = []
    for room in rooms:
        members = room.get("members") or []
        messages = room.get("messages", 0)
        lines.append(_("Room {pin}: {members}, {messages}, open since {since}").format(
            pin=clean(room.get("pin")),
            members=ngettext("{count} member", "{count} members", len(members)).format(
                count=len(members)),
            messages=ngettext("{count} message", "{count} messages", messages).format(
                count=messages),
            since=clock(room.get("created"), date=False)))
        lines += table((_("NAME"), _("ADDRESS"), _("MODE"), _("SINCE")), (
            (m.get("name", ""), m.get("addr", ""), m.get("mode", ""),
             clock(m.get("since"), date=False)) for m in members), indent="  ")
    return lines


def rooms_lines(rooms: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rooms:
        return [_("No rooms are open.")]
    return table(("PIN", _("MEMBERS"), _("MESSAGES"), _("OPEN SINCE"), _("NAMES")), (
        (str(r.get("pin", "")), str(len(r.get("members") or [])), str(r.get("messages", 0)),
         clock(r.get("created")), ", ".join(clean(m.get("name", ""))
                                             for m in r.get("members") or []))
        for r in rooms))


def users_lines(users: Sequence[Mapping[str, Any]], room: str | None) -> list[str]:
    if not users:
        return [_("Nobody is in room {pin}.").format(pin=room) if room
                else _("Nobody is in a room.")]
    return table((_("ROOM"), _("NAME"), _("ADDRESS"), _("MODE"), _("SINCE")), (
        (str(u.get("room", "")), u.get("name", ""), u.get("addr", ""), u.get("mode", ""),
         clock(u.get("since"))) for u in users))


def _value(value: Any) -> str:
    if isinstance(value, str):
        if value and not any(ch in value for ch in ' "=\\') and value.isprintable():
            return value
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def log_line(entry: Mapping[str, Any]) -> str:
    """2026-11-21 07:00:01  kick  room=1234 name=bob reason="spam"  by uid=0(root) pid=9"""
    fields = " ".join(f"{key}={_value(value)}" for key, value in entry.items()
                      if key not in ("seq", "ts", "time", "event", "actor"))
    line = f"{clock(entry.get('ts'))}  {clean(entry.get('event', '?')):<18} {fields}"
    if "actor" in entry:
        line = f"{line.rstrip()}  by {entry['actor']}"
    return clean(line.rstrip())


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


def json_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

"""How lanchatctl shows the daemon's answers to a person (``--json`` shows them as is)."""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

COUNTER_LABELS: tuple[tuple[str, str], ...] = (
    ("messages", "messages"),
    ("private_messages", "private messages"),
    ("joins", "joins"),
    ("refused_joins", "refused joins"),
    ("connections", "connections"),
    ("refused_connections", "refused connections"),
    ("disconnects_for_limits", "disconnects for limits"),
    ("kicks", "kicks"),
    ("protocol_errors", "protocol errors"),
    ("rate_limited", "rate limited"),
)


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
    return [f"{label} {counters[key]}" for key, label in known]


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
    return [f"{label:<11}{rows[0]}".rstrip()] + [" " * 11 + row for row in rows[1:]]


def status_lines(status: Mapping[str, Any], *, width: int = 100) -> list[str]:
    """The dashboard: state, uptime, clients, counters, rooms with members."""
    lines = [
        f"lanchatd {clean(status.get('version', '?'))} \"{clean(status.get('name', ''))}\", "
        f"pid {status.get('pid', '?')}, up {duration(status.get('uptime', 0))} "
        f"(since {clock(status.get('started'))})",
        f"{'State:':<11}{clean(status.get('state', '?'))}: "
        f"{clean(status.get('state_description', ''))}",
    ]
    addresses = dict(status.get("addresses") or {})
    control = addresses.pop("control", None)
    if addresses:
        lines += _wrapped("Listening:", [f"{key} {clean(value)}"
                                         for key, value in addresses.items()], width)
    if control:
        lines.append(f"{'Control:':<11}{clean(control)}")
    rooms = status.get("rooms") or []
    lines.append(f"{'Clients:':<11}{status.get('clients', 0)} connected, "
                 f"{status.get('members', 0)} in {plural(len(rooms), 'room')}")
    lines += _wrapped("Counters:", counter_items(status.get("counters") or {}, COUNTER_LABELS),
                      width)
    discovery = status.get("discovery")
    if discovery:
        lines += _wrapped("Discovery:", counter_items(discovery, ()), width)
    lines.append("")
    lines += rooms_detail_lines(rooms)
    return lines


def rooms_detail_lines(rooms: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rooms:
        return ["No rooms are open."]
    lines: list[str] = []
    for room in rooms:
        members = room.get("members") or []
        lines.append(f"Room {clean(room.get('pin'))}: {plural(len(members), 'member')}, "
                     f"{plural(room.get('messages', 0), 'message')}, open since "
                     f"{clock(room.get('created'), date=False)}")
        lines += table(("NAME", "ADDRESS", "MODE", "SINCE"), (
            (m.get("name", ""), m.get("addr", ""), m.get("mode", ""),
             clock(m.get("since"), date=False)) for m in members), indent="  ")
    return lines


def rooms_lines(rooms: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rooms:
        return ["No rooms are open."]
    return table(("PIN", "MEMBERS", "MESSAGES", "OPEN SINCE", "NAMES"), (
        (str(r.get("pin", "")), str(len(r.get("members") or [])), str(r.get("messages", 0)),
         clock(r.get("created")), ", ".join(clean(m.get("name", ""))
                                             for m in r.get("members") or []))
        for r in rooms))


def users_lines(users: Sequence[Mapping[str, Any]], room: str | None) -> list[str]:
    if not users:
        return [f"Nobody is in room {room}." if room else "Nobody is in a room."]
    return table(("ROOM", "NAME", "ADDRESS", "MODE", "SINCE"), (
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
                      if key not in ("seq", "ts", "event", "actor"))
    line = f"{clock(entry.get('ts'))}  {clean(entry.get('event', '?')):<18} {fields}"
    if "actor" in entry:
        line = f"{line.rstrip()}  by {entry['actor']}"
    return clean(line.rstrip())


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


def json_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

"""What the full-screen interface shows, without curses: formatted, wrapped, scrolled.

An ``Entry`` is one logical line of the message pane (a message, someone joining, a
note from the client) made of ``(text, style)`` segments; the curses layer maps each
style to attributes.  ``Transcript`` keeps the entries, wraps them to the pane's width
(with a hanging indent under the time stamp) and knows how far the person has
scrolled back.  The colour of a name is a hash of the name, so a sender keeps their
colour across sessions and on every screen.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass

from lanchat.client.lineedit import char_width
from lanchat.client.messages import clean
from lanchat.protocol import chat

TRANSCRIPT_MAX = 5000

# Styles of segments.  "sender:N" is the N-th colour of the palette.
TIME = "time"
TEXT = "text"
SYSTEM = "system"
ERROR = "error"
PRIVATE = "private"
HISTORY = "history"
PENDING = "pending"
MENTION = "mention"

Segment = tuple[str, str]


@dataclass
class Entry:
    segments: list[Segment]
    mention: bool = False
    _cache_width: int = 0
    _cache_rows: list[list[Segment]] | None = None

    def rows(self, width: int) -> list[list[Segment]]:
        if self._cache_rows is None or self._cache_width != width:
            self._cache_rows = wrap(self.segments, width)
            self._cache_width = width
        return self._cache_rows


def sender_colour(name: str, palette_size: int) -> int:
    """A stable palette index for ``name`` (case does not matter)."""
    if palette_size <= 0:
        return 0
    return zlib.crc32(name.casefold().encode("utf-8")) % palette_size


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` names ``name`` as a word (any case): "hi Ola!" yes, "Olav" no."""
    if not name:
        return False
    return re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text, re.IGNORECASE) \
        is not None


def wrap(segments: list[Segment], width: int) -> list[list[Segment]]:
    """Break segments into rows of at most ``width`` cells, at spaces where possible.

    Rows after the first are indented to line up under the text after the time stamp.
    """
    width = max(1, width)
    cells: list[tuple[str, str]] = [(ch, style) for text, style in segments
                                    for ch in clean(text.replace("\n", " "))]
    indent = 0
    if segments and segments[0][1] == TIME:
        indent = sum(char_width(ch) for ch in segments[0][0])
    if indent > width // 2:
        indent = 0
    rows: list[list[tuple[str, str]]] = []
    row: list[tuple[str, str]] = []
    used = 0
    row_start = 0  # cells of indent at the start of this row
    for i, (ch, style) in enumerate(cells):
        w = char_width(ch)
        if used + w > width and len(row) > row_start:
            # Break at the last space of the row if the word after it still fits.
            cut = max((k for k in range(row_start, len(row)) if row[k][0] == " "), default=-1)
            carry: list[tuple[str, str]] = []
            if cut > row_start:
                tail = row[cut + 1:]
                # Move the word down only if all of it fits on the next row; a word
                # longer than a row is broken where it is (not after an empty row).
                word_end = next((k for k in range(i, len(cells)) if cells[k][0] == " "),
                                len(cells))
                word = sum(char_width(c) for c, _ in tail) + sum(
                    char_width(c) for c, _ in cells[i:word_end])
                if indent + word <= width:
                    carry, row = tail, row[:cut]
            rows.append(row)
            row = [(" ", TEXT)] * indent + carry
            row_start = indent
            used = indent + sum(char_width(c) for c, _ in carry)
        row.append((ch, style))
        used += w
    if row or not rows:
        rows.append(row)
    return [_merge(r) for r in rows]


def _merge(row: list[tuple[str, str]]) -> list[Segment]:
    out: list[Segment] = []
    for ch, style in row:
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + ch, style)
        else:
            out.append((ch, style))
    return out


class Transcript:
    def __init__(self, limit: int = TRANSCRIPT_MAX) -> None:
        self.entries: list[Entry] = []
        self.limit = limit
        self.scroll = 0  # rows hidden below the bottom of the pane
        self.unseen = 0  # entries added while scrolled back
        self._width = 80

    def add(self, entry: Entry, before: Entry | None = None) -> None:
        """Add ``entry`` at the end, or just above ``before`` if it is still shown."""
        at = len(self.entries)
        if before is not None:
            for i in range(len(self.entries) - 1, -1, -1):
                if self.entries[i] is before:
                    at = i
                    break
        self.entries.insert(at, entry)
        if len(self.entries) > self.limit:
            del self.entries[: len(self.entries) - self.limit]
        if self.scroll:
            # Keep the rows the person is reading where they are.
            self.scroll += len(entry.rows(self._width))
            self.unseen += 1

    def clear(self) -> None:
        self.entries.clear()
        self.scroll = 0
        self.unseen = 0

    def all_rows(self, width: int) -> list[list[Segment]]:
        self._width = width
        rows: list[list[Segment]] = []
        for entry in self.entries:
            rows.extend(entry.rows(width))
        return rows

    def visible(self, width: int, height: int, extra: list[list[Segment]] | None = None
                ) -> list[list[Segment]]:
        """The rows to show in a pane of ``height`` rows (``extra`` rows go below)."""
        rows = self.all_rows(width) + (extra or [])
        self.scroll = max(0, min(self.scroll, len(rows) - height))
        end = len(rows) - self.scroll
        return rows[max(0, end - height): end]

    def page_up(self, height: int) -> None:
        self.scroll += max(1, height - 1)

    def page_down(self, height: int) -> None:
        self.scroll = max(0, self.scroll - max(1, height - 1))
        if self.scroll == 0:
            self.unseen = 0

    def to_bottom(self) -> None:
        self.scroll = 0
        self.unseen = 0


# ------------------------------------------------------------------ formatting events


class Formatter:
    def __init__(self, timestamp_format: str, palette_size: int, me: str = "") -> None:
        self.timestamp_format = timestamp_format
        self.palette_size = palette_size
        self.me = me

    def stamp(self, ts: float | None = None) -> Segment:
        return (time.strftime(self.timestamp_format,
                              time.localtime(time.time() if ts is None else ts)) + " ", TIME)

    def name_style(self, name: str) -> str:
        return f"sender:{sender_colour(name, self.palette_size)}"

    def message(self, event: chat.Message) -> Entry:
        body_style = HISTORY if event.history else TEXT
        mentioned = (not event.history and event.sender != self.me
                     and mentions(event.text, self.me))
        if mentioned:
            body_style = MENTION
        if event.action:
            segments = [self.stamp(event.ts), ("* ", body_style),
                        (event.sender, self.name_style(event.sender)),
                        (" " + event.text, body_style)]
        else:
            segments = [self.stamp(event.ts), (event.sender, self.name_style(event.sender)),
                        (": " + event.text, body_style)]
        return Entry(segments, mention=mentioned)

    def private(self, event: chat.Private) -> Entry:
        mentioned = event.sender != self.me
        return Entry([self.stamp(event.ts), (event.sender, self.name_style(event.sender)),
                      (" → ", PRIVATE), (event.to, self.name_style(event.to)),
                      (": " + event.text, PRIVATE)], mention=mentioned)

    def note(self, text: str, style: str = SYSTEM, ts: float | None = None) -> Entry:
        return Entry([self.stamp(ts), (text, style)])

    def pending(self, text: str) -> list[Segment]:
        return [(text, PENDING)]

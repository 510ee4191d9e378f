"""The input line of the full-screen interface, without curses: text, cursor, history.

Editing keys (the usual readline ones): Left/Right, Home/End (Ctrl-A/Ctrl-E),
Backspace, Delete, Ctrl-U (delete to the start), Ctrl-K (delete to the end), Ctrl-W
(delete the word before the cursor), Up/Down (history; what was being typed is kept
as the newest entry), Tab (complete a name of someone in the room).

Widths are terminal cells: a CJK character or an emoji takes two, a combining accent
none, so the cursor stays where the person sees it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

HISTORY_MAX = 500


def char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(text: str) -> int:
    return sum(char_width(ch) for ch in text)


class LineEditor:
    def __init__(self) -> None:
        self.text = ""
        self.cursor = 0  # index into text
        self.history: list[str] = []
        self._browse: int | None = None  # index into history while browsing
        self._draft = ""
        self._offset = 0  # first character shown (horizontal scrolling)

    # ------------------------------------------------------------------ editing

    def insert(self, text: str) -> None:
        text = "".join(ch for ch in text if ch == "\t" or ch.isprintable() or
                       unicodedata.category(ch) in ("Mn", "Me"))
        self.text = self.text[: self.cursor] + text + self.text[self.cursor:]
        self.cursor += len(text)

    def backspace(self) -> None:
        if self.cursor > 0:
            self.text = self.text[: self.cursor - 1] + self.text[self.cursor:]
            self.cursor -= 1

    def delete(self) -> None:
        self.text = self.text[: self.cursor] + self.text[self.cursor + 1:]

    def left(self) -> None:
        self.cursor = max(0, self.cursor - 1)

    def right(self) -> None:
        self.cursor = min(len(self.text), self.cursor + 1)

    def home(self) -> None:
        self.cursor = 0

    def end(self) -> None:
        self.cursor = len(self.text)

    def kill_to_start(self) -> None:
        self.text = self.text[self.cursor:]
        self.cursor = 0

    def kill_to_end(self) -> None:
        self.text = self.text[: self.cursor]

    def delete_word(self) -> None:
        start = self.cursor
        while start > 0 and self.text[start - 1] == " ":
            start -= 1
        while start > 0 and self.text[start - 1] != " ":
            start -= 1
        self.text = self.text[:start] + self.text[self.cursor:]
        self.cursor = start

    def set_text(self, text: str) -> None:
        self.text = text
        self.cursor = len(text)

    # ------------------------------------------------------------------ history

    def submit(self) -> str:
        """The line as typed; it joins the history and the editor is emptied."""
        line = self.text
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-HISTORY_MAX]
        self._browse = None
        self._draft = ""
        self.set_text("")
        self._offset = 0
        return line

    def history_prev(self) -> None:
        if not self.history:
            return
        if self._browse is None:
            self._draft = self.text
            self._browse = len(self.history) - 1
        elif self._browse > 0:
            self._browse -= 1
        self.set_text(self.history[self._browse])

    def history_next(self) -> None:
        if self._browse is None:
            return
        if self._browse < len(self.history) - 1:
            self._browse += 1
            self.set_text(self.history[self._browse])
        else:
            self._browse = None
            self.set_text(self._draft)

    # ------------------------------------------------------------------ completion

    def complete(self, names: Iterable[str]) -> bool:
        """Complete the word before the cursor to a name; True if anything changed."""
        start = self.cursor
        while start > 0 and self.text[start - 1] != " ":
            start -= 1
        word = self.text[start: self.cursor]
        if not word:
            return False
        folded = word.casefold()
        matches = sorted({n for n in names if n.casefold().startswith(folded)},
                         key=str.casefold)
        if not matches:
            return False
        if len(matches) == 1:
            completion = matches[0] + (": " if start == 0 else " ")
        else:
            completion = _common_prefix(matches)
            if len(completion) <= len(word):
                return False
        self.text = self.text[:start] + completion + self.text[self.cursor:]
        self.cursor = start + len(completion)
        return True

    # ------------------------------------------------------------------ display

    def view(self, width: int) -> tuple[str, int]:
        """The part of the text to show in ``width`` cells, and the cursor's column.

        The window over the text keeps the cursor inside it with one cell to spare,
        moves only as far as it must, and never leaves cells empty on the right while
        text is hidden on the left (a recalled short line, Backspace at the end of a
        long one, a wider window).  Every step looks only at the characters within
        ``width`` cells of the cursor, so a view costs the same for a pasted page as for
        a word.
        """
        if width <= 1:
            return "", 0
        room = width - 1  # cells before the cursor, which needs one of its own at the end
        text_, cursor = self.text, self.cursor
        # lowest: the leftmost start from which the cursor is still inside the window.
        lowest = cursor
        used = 0
        while lowest > 0:
            w = char_width(text_[lowest - 1])
            if used + w > room:
                break
            used += w
            lowest -= 1
        offset = min(max(self._offset, lowest), cursor)
        # Fill the window: while the text from offset to the end leaves cells empty,
        # show more of what is hidden on the left (down to ``lowest``).
        tail = 0
        i = offset
        while i < len(text_) and tail <= room:
            tail += char_width(text_[i])
            i += 1
        while offset > lowest:
            w = char_width(text_[offset - 1])
            if tail + w > room:
                break
            tail += w
            offset -= 1
        self._offset = offset
        shown: list[str] = []
        used = 0
        column = 0
        for i in range(offset, len(text_)):
            w = char_width(text_[i])
            if used + w > width:
                break
            if i < cursor:
                column += w
            shown.append(text_[i])
            used += w
        return "".join(shown), column


def _common_prefix(words: list[str]) -> str:
    first = words[0]
    length = len(first)
    for word in words[1:]:
        i = 0
        while i < min(length, len(word)) and word[i].casefold() == first[i].casefold():
            i += 1
        length = i
    return first[:length]

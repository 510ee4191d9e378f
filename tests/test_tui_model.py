"""The pure parts of the full-screen interface: the input line and the message pane."""

from __future__ import annotations

import pytest

from lanchat.client import view
from lanchat.client.lineedit import LineEditor, text_width
from lanchat.protocol import chat


def typed(text: str) -> LineEditor:
    editor = LineEditor()
    editor.insert(text)
    return editor


def test_editing_keys() -> None:
    e = typed("hello world")
    e.left()
    e.left()
    e.backspace()
    assert (e.text, e.cursor) == ("hello wold", 8)
    e.home()
    e.delete()
    assert e.text == "ello wold"
    e.end()
    e.delete_word()
    assert e.text == "ello "
    e.insert("there")
    e.home()
    e.right()
    e.kill_to_end()
    assert e.text == "e"
    e.set_text("abc def")
    e.left()
    e.kill_to_start()
    assert (e.text, e.cursor) == ("f", 0)


def test_control_characters_typed_or_pasted_are_dropped() -> None:
    e = typed("a\x1b[31mb\x07c\u202ed")
    assert e.text == "a[31mbcd"


def test_history_keeps_the_draft() -> None:
    e = LineEditor()
    for line in ("first", "second", "second", "   "):
        e.insert(line)
        assert e.submit() == line
    assert e.history == ["first", "second"]
    e.insert("draft")
    e.history_prev()
    assert e.text == "second"
    e.history_prev()
    e.history_prev()
    assert e.text == "first"
    e.history_next()
    assert e.text == "second"
    e.history_next()
    assert e.text == "draft"
    e.history_next()
    assert e.text == "draft"


def test_name_completion() -> None:
    names = ["Bob", "bea", "carol"]
    e = typed("c")
    assert e.complete(names) and e.text == "carol: "
    e = typed("hi B")
    assert not e.complete(names) and e.text == "hi B"  # "Bob" and "bea" share only "b"
    e = typed("hi Bo")
    assert e.complete(names) and e.text == "hi Bob "
    e = typed("hi x")
    assert not e.complete(names)


def test_long_line_scrolls_to_keep_the_cursor_visible() -> None:
    e = typed("x" * 50 + "END")
    shown, cursor = e.view(20)
    assert shown.endswith("END") and cursor == text_width(shown) <= 19
    e.home()
    shown, cursor = e.view(20)
    assert cursor == 0 and shown == "x" * 20


def test_recalling_a_short_line_after_a_long_one_shows_it() -> None:
    e = typed("short line")
    e.submit()
    e.insert("x" * 150)
    e.view(97)
    e.submit()
    e.history_prev()
    assert e.view(97) == ("x" * 96, 96)
    e.history_prev()
    assert e.text == "short line"
    assert e.view(97) == ("short line", 10)


def test_backspacing_or_widening_shows_the_text_before_the_cursor() -> None:
    e = typed("a" * 30 + "b" * 30)
    shown, _cursor = e.view(20)
    assert shown == "b" * 19
    for _ in range(25):
        e.backspace()
    # 35 characters left: the 19 cells before the cursor are all filled, not just 'aaaaa'.
    shown, cursor = e.view(20)
    assert shown == "a" * 14 + "b" * 5 and cursor == 19
    shown, cursor = e.view(60)  # the window got wider: everything fits again
    assert shown == "a" * 30 + "b" * 5 and cursor == 35


def test_view_of_a_pasted_page_looks_only_near_the_cursor(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from lanchat.client import lineedit

    calls = [0]
    real = lineedit.char_width

    def counting(ch: str) -> int:
        calls[0] += 1
        return real(ch)

    monkeypatch.setattr(lineedit, "char_width", counting)
    e = LineEditor()
    e.insert("y" * 2500)  # a paste arrives as one pass of keys, then one redraw
    calls[0] = 0
    shown, cursor = e.view(97)
    assert shown == "y" * 96 and cursor == 96
    assert calls[0] <= 4 * 97, calls[0]  # was about 3 million: every offset, every width
    # Typed one key at a time with a redraw after each, the cost per key stays the same.
    calls[0] = 0
    for _ in range(200):
        e.insert("z")
        e.view(97)
    assert calls[0] <= 200 * 4 * 97
    e.home()
    calls[0] = 0
    assert e.view(97) == ("y" * 97, 0)
    assert calls[0] <= 4 * 97


def test_wide_characters_take_two_cells() -> None:
    e = typed("日本語")
    shown, cursor = e.view(40)
    assert cursor == 6 and text_width(shown) == 6
    assert text_width("e\u0301") == 1  # a combining accent takes none


def test_wrap_with_hanging_indent_and_long_words() -> None:
    segments = [("12:00 ", view.TIME), ("bob", "sender:0"),
                (": the quick brown fox jumps over the lazy dog", view.TEXT)]
    rows = ["".join(t for t, _ in row) for row in view.wrap(segments, 24)]
    assert rows == ["12:00 bob: the quick", "      brown fox jumps", "      over the lazy dog"]
    assert all(text_width(r) <= 24 for r in rows)
    rows = ["".join(t for t, _ in row) for row in view.wrap([("a" * 30, view.TEXT)], 10)]
    assert rows == ["a" * 10] * 3


def test_sender_colour_is_stable_and_ignores_case() -> None:
    assert view.sender_colour("Alice", 6) == view.sender_colour("alice", 6)
    assert len({view.sender_colour(n, 6) for n in ("a", "b", "c", "d", "e", "f", "g")}) > 1


def test_mentions_are_whole_words() -> None:
    assert view.mentions("hey Ola, look", "ola")
    assert view.mentions("@ola!", "Ola")
    assert not view.mentions("Olav is here", "Ola")
    assert not view.mentions("anything", "")


def test_formatter_highlights_mentions_but_not_own_or_history() -> None:
    f = view.Formatter("%H:%M", 6, me="ana")
    ts = 1_700_000_000.0
    assert f.message(chat.Message("1", 1, ts, "bob", "hi ana")).mention
    assert not f.message(chat.Message("1", 2, ts, "ana", "I am ana")).mention
    assert not f.message(chat.Message("1", 3, ts, "bob", "hi ana", history=True)).mention
    action = f.message(chat.Message("1", 4, ts, "bob", "waves", action=True))
    assert "".join(t for t, _ in action.segments).endswith("* bob waves")


def test_transcript_scrolls_back_and_keeps_the_view_when_messages_arrive() -> None:
    t = view.Transcript()
    for i in range(30):
        t.add(view.Entry([(f"line {i}", view.TEXT)]))
    text = ["".join(s for s, _ in row) for row in t.visible(40, 5)]
    assert text == [f"line {i}" for i in range(25, 30)]
    t.page_up(5)
    text = ["".join(s for s, _ in row) for row in t.visible(40, 5)]
    assert text == [f"line {i}" for i in range(21, 26)]
    t.add(view.Entry([("line 30", view.TEXT)]))
    assert t.unseen == 1
    text = ["".join(s for s, _ in row) for row in t.visible(40, 5)]
    assert text == [f"line {i}" for i in range(21, 26)]  # the reader is not moved
    for _ in range(10):
        t.page_up(5)
    assert "".join(s for s, _ in t.visible(40, 5)[0]) == "line 0"
    for _ in range(10):
        t.page_down(5)
    assert t.scroll == 0 and t.unseen == 0
    t.clear()
    assert t.visible(40, 5) == []


def test_control_characters_are_defused_before_they_reach_the_screen() -> None:
    from lanchat.client.messages import clean

    assert clean("plain text") == "plain text"
    assert clean("a\x1b[2Jb\tc\u202ed") == "a\ufffd[2Jb c\ufffdd"
    assert clean("one\ntwo\x07") == "one\ntwo\ufffd"
    rows = view.wrap([("x\x1b[31my\tz\nw", view.TEXT)], 40)
    assert ["".join(t for t, _ in row) for row in rows] == ["x\ufffd[31my z w"]


def test_status_line_keeps_the_states_whole_at_80_columns() -> None:
    from lanchat.client.tui import layout_status

    line = layout_status("a-rather-long-server-name.example.lan:5000",
                         ["room 1234", "12 people"],
                         ["2 waiting", "in standby", "reconnecting in 12 s: server in standby"],
                         80)
    assert len(line) == 80
    assert line.rstrip().endswith("2 waiting · in standby · reconnecting in 12 s: server in "
                                  "standby")
    short = layout_status("lab:5000", ["room 1234", "2 people"], ["connected"], 80)
    assert short.startswith(" lab:5000 · room 1234 · 2 people ")
    assert short.rstrip().endswith("connected") and len(short) == 80
    # The server's name gives way first (shortened with an ellipsis), then the rest.
    cut = layout_status("x" * 60, ["room 1234", "2 people"], ["connected"], 60)
    assert "room 1234 · 2 people" in cut and "…" in cut and cut.rstrip().endswith("connected")


def test_errors_never_share_a_colour_with_names() -> None:
    from lanchat.client.settings import DEFAULT_PALETTE
    from lanchat.client.tui import error_colour

    assert error_colour(DEFAULT_PALETTE) == "red" and "red" not in DEFAULT_PALETTE
    assert error_colour(("green", "red")) is None  # a red name: errors are underlined


def test_a_long_message_is_split_at_spaces_into_messages_that_fit() -> None:
    from lanchat.client import commands
    from lanchat.protocol import rules

    words = " ".join(f"word{i:04d}" for i in range(600))  # 5,399 characters
    parts = commands.split_long(words, lambda event: True)
    assert len(parts) == 3
    assert all(isinstance(p, chat.Say) and len(p.text) <= rules.TEXT_MAX_CHARS
               for p in parts)
    assert " ".join(p.text for p in parts) == words  # nothing lost, broken at spaces
    # The server's line limit in bytes counts too (here: at most 300 bytes of text).
    small = commands.split_long("ø" * 400, lambda e: len(e.text.encode()) <= 300)
    assert [len(p.text) for p in small] == [150, 150, 100]
    private = commands.split_long("/msg bob " + "z" * 2500, lambda e: True)
    assert [type(p) for p in private] == [chat.PrivateSay, chat.PrivateSay]
    assert all(isinstance(p, chat.PrivateSay) and p.to == "bob" for p in private)
    action = commands.split_long("/me " + "y " * 1500, lambda e: True)
    assert all(isinstance(p, chat.Say) and p.action for p in action) and len(action) == 2
    assert commands.split_long("short", lambda e: True) == []
    assert commands.split_long("/who", lambda e: True) == []


def test_client_commands() -> None:
    from lanchat.client import commands
    from lanchat.protocol.errors import LocalProtocolError

    assert commands.parse("/names") == chat.Who()
    assert commands.parse("/nick Åse") == commands.Nick("Åse")
    assert commands.parse("/join 4321") == commands.JoinRoom("4321")
    assert commands.parse("/join") == commands.JoinRoom(None)
    assert commands.parse("/clear") == commands.Clear()
    for bad in ("/nick", "/join abc", "/msg bob", "/me"):
        with pytest.raises(LocalProtocolError):
            commands.parse(bad)


def test_history_goes_above_the_join_note() -> None:
    t = view.Transcript()
    note = view.Entry([("You are in room 1234", view.SYSTEM)])
    t.add(note)
    t.add(view.Entry([("old 1", view.HISTORY)]), before=note)
    t.add(view.Entry([("old 2", view.HISTORY)]), before=note)
    t.add(view.Entry([("live", view.TEXT)]))
    assert ["".join(x for x, _ in e.segments) for e in t.entries] == [
        "old 1", "old 2", "You are in room 1234", "live"]


def test_a_word_longer_than_a_row_is_broken_where_it_is() -> None:
    segments = [("12:00 ", view.TIME), ("ana", "sender:0"), (": " + "x" * 50, view.TEXT)]
    rows = ["".join(t for t, _ in row) for row in view.wrap(segments, 30)]
    assert rows[0] == "12:00 ana: " + "x" * 19  # not "12:00 ana:" and an empty rest
    assert "".join(r.strip() for r in rows[1:]) == "x" * 31

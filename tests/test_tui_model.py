"""The pure parts of the full-screen interface: the input line and the message pane."""

from __future__ import annotations

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

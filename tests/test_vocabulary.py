"""One wire vocabulary (lanchat/protocol/vocabulary.py), and everyone speaks it.

A code the daemon's chat side produces must be a word of the vocabulary (and spelled
through it, not as a string in place); docs/protocol.md may list only words of the
vocabulary; and the client must be able to tell its person why the server ended a
connection, for every bye reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_protocol_doc import FOUND, section, table_rows

from lanchat.client import messages
from lanchat.client import session as s
from lanchat.protocol import chat, vocabulary
from lanchat.protocol.vocabulary import (
    BYE_REASONS,
    CONN_STATES,
    ERROR_CODES,
    GREETING_STATUSES,
    LEAVE_REASONS,
    LOCAL_CODES,
    SERVER_STATES,
    ByeReason,
)
from lanchatd import states

REPO = Path(__file__).resolve().parents[1]
# The modules whose codes reach a chat client (or its library).
CHAT_SIDE = {"chat.py", "rules.py", "text.py", "core.py"}


def test_every_code_the_chat_side_produces_is_a_word_of_the_vocabulary() -> None:
    produced = {code for code, files in FOUND.errors.items() if files & CHAT_SIDE}
    assert sorted(produced - set(ERROR_CODES) - set(LOCAL_CODES)) == []
    assert sorted(set(FOUND.byes) - set(BYE_REASONS)) == []
    # ... and is spelled through it: a code written as a string in place is a second
    # place for the fact.
    spelled = [where for where in FOUND.literals
               if Path(where.split(":")[0]).name in CHAT_SIDE]
    assert spelled == []


def test_the_words_are_distinct_within_each_kind() -> None:
    for words in (SERVER_STATES, GREETING_STATUSES, CONN_STATES, ERROR_CODES, LOCAL_CODES,
                  BYE_REASONS, LEAVE_REASONS):
        assert len(set(words)) == len(words)
    assert not set(ERROR_CODES) & set(LOCAL_CODES)


def _reasons_in(tree: ast.AST) -> list[tuple[int, ast.expr]]:
    """The leave-reason arguments of the calls that end a membership."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("_drop", "disconnected", "connection_lost") and node.args:
            found.append((node.lineno, node.args[-1]))
        for keyword in node.keywords:
            if keyword.arg == "leave_reason":
                found.append((node.lineno, keyword.value))
    return found


def _is_word(expr: ast.expr) -> bool:
    """``LeaveReason.X``, a name handed through, or an f-string that starts with one."""
    if isinstance(expr, ast.Attribute):
        return (isinstance(expr.value, ast.Name) and expr.value.id == "LeaveReason"
                and expr.attr in vars(vocabulary.LeaveReason))
    if isinstance(expr, ast.Name):
        return True
    if isinstance(expr, ast.JoinedStr):
        first = expr.values[0]
        return isinstance(first, ast.FormattedValue) and _is_word(first.value)
    if isinstance(expr, ast.BoolOp):
        return all(_is_word(value) for value in expr.values)
    if isinstance(expr, ast.IfExp):
        return _is_word(expr.body) and _is_word(expr.orelse)
    return False


@pytest.mark.parametrize("module", ["core.py", "loop.py"])
def test_every_presence_reason_the_daemon_gives_is_a_word_of_the_vocabulary(
        module: str) -> None:
    tree = ast.parse((REPO / "lanchatd" / module).read_text(encoding="utf-8"))
    reasons = _reasons_in(tree)
    assert reasons, "the scan found no leave reason: update this test"
    bad = [f"{module}:{line}: {ast.unparse(expr)}" for line, expr in reasons
           if not _is_word(expr)]
    assert bad == []
    # A bye without its own leave reason gives the room the bye reason itself.
    assert vocabulary.LeaveReason.TOO_MANY_ERRORS == ByeReason.TOO_MANY_ERRORS


def test_the_document_lists_only_words_of_the_vocabulary() -> None:
    assert sorted(set(table_rows(section("9."))) - set(ERROR_CODES)) == []
    assert sorted(table_rows(section("10."))) == sorted(BYE_REASONS)
    assert sorted(set(table_rows(section("15."))) - set(LOCAL_CODES)) == []
    assert sorted(table_rows(section("3."))) == sorted(GREETING_STATUSES)
    conn_table = section("5.").split("### 5.2", 1)[1].split("### 5.3", 1)[0]
    assert sorted(table_rows(conn_table)) == sorted(CONN_STATES)


def test_the_daemon_and_the_libraries_use_the_vocabulary_values() -> None:
    assert tuple(states.SERVER_STATE_RULES) == SERVER_STATES == chat.STATES
    assert set(states.CONN_ALLOWS) == set(CONN_STATES)
    assert chat.GREETING_STATUSES == GREETING_STATUSES


GREETING = b"LANCHAT/1 ready Welcome to lab (lanchatd 0.1.0). Enter the room PIN:\n"
GENERIC = "The server closed the connection."


def _welcomed() -> s.Session:
    session = s.Session(pin="1234", name="ann", rng=lambda: 0.5)
    assert session.wants_connect(0.0)
    session.connecting(0.0)
    session.connection_made(0.0)
    session.receive_data(GREETING, 0.0)
    session.data_to_send()
    return session


def _joined() -> s.Session:
    session = _welcomed()
    session.receive_data(chat.encode_json(chat.Welcome(1, "lanchatd/0.1.0", "sid", "lab",
                                                       "active")), 0.0)
    session.receive_data(chat.encode_json(chat.Joined("1234", "ann", ("ann",))), 0.0)
    session.data_to_send()
    return session


def _told(events: list[object]) -> list[str]:
    said = []
    for event in events:
        if isinstance(event, s.Finished):
            said.append(messages.finished(event))
        elif isinstance(event, s.Disconnected):
            said.append(messages.disconnected(event))
    return said


# Where in a session each bye can come: before a room is joined, or as a member.
BEFORE_JOINING = {ByeReason.HANDSHAKE_TIMEOUT, ByeReason.UNSUPPORTED_VERSION,
                  ByeReason.STANDBY, ByeReason.STOPPED}


@pytest.mark.parametrize("reason", sorted(set(BYE_REASONS) - {ByeReason.QUIT}))
def test_the_client_tells_its_person_why_for_every_bye_reason(reason: str) -> None:
    """The drift this guards against: a bye reason the client does not know, or a close
    the client can only call "The server closed the connection."."""
    session = _welcomed() if reason in BEFORE_JOINING else _joined()
    server_says = f"The server's own words for {reason}."
    events: list[object] = []
    if reason == ByeReason.UNSUPPORTED_VERSION:  # what lanchatd sends: the error first
        events += session.receive_data(chat.encode_json(chat.Error(
            "unsupported_version", server_says, "hello")), 1.0)
    events += session.receive_data(chat.encode_json(chat.Bye(reason, server_says)), 1.0)
    events += session.connection_lost("closed by the server", 1.0)
    said = _told(events)
    assert said, f"the person is told nothing after a bye {reason!r}"
    assert all(GENERIC not in text and "closed by the server" not in text for text in said)

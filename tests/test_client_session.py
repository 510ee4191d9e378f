"""The client's session core, driven by hand with explicit time (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lanchat.client import session as s
from lanchat.protocol import chat

GREETING = b"LANCHAT/1 ready Welcome to lab (lanchatd 0.1.0). Enter the room PIN:\n"


def ev(event: chat.Event) -> bytes:
    return chat.encode_json(event)


def welcome(**kw: Any) -> bytes:
    fields: dict[str, Any] = dict(version=1, server="lanchatd/0.1.0", server_id="srv1",
                                  name="lab", state="active", rate=5.0, burst=20)
    fields.update(kw)
    return ev(chat.Welcome(**fields))


def sent(session: s.Session) -> list[dict[str, Any]]:
    data = session.data_to_send().decode()
    return [json.loads(line) for line in data.splitlines() if line]


def joined_session(pin: str = "1234", name: str = "ci", now: float = 0.0,
                   **welcome_kw: Any) -> s.Session:
    session = s.Session(pin=pin, name=name, rng=lambda: 0.5)
    assert session.wants_connect(now)
    session.connecting(now)
    session.connection_made(now, join_early=True)
    session.receive_data(GREETING, now)
    # PIN and name known, server proven: the join goes with the hello (a round trip fewer).
    hello, join = sent(session)
    assert hello["type"] == "hello" and join == {"type": "join", "pin": pin, "name": name}
    session.receive_data(welcome(**welcome_kw), now)
    assert sent(session) == []
    events = session.receive_data(ev(chat.Joined(pin, name, (name, "bob"))), now)
    assert isinstance(events[0], s.RoomJoined) and not events[0].rejoin
    return session


def message(seq: int, sender: str, text: str, ts: float = 100.0, history: bool = False,
            action: bool = False) -> bytes:
    return ev(chat.Message("1234", seq, ts + seq, sender, text, action, history))


def test_handshake_then_a_message_is_delivered_when_echoed() -> None:
    session = joined_session()
    events = session.submit(chat.Say("build done"), 1.0)
    assert isinstance(events[0], s.Queued) and not events[0].waiting
    assert sent(session) == [{"type": "say", "text": "build done"}]
    assert not session.idle
    events = session.receive_data(message(1, "ci", "build done"), 1.1)
    assert [type(e) for e in events] == [s.Delivered, chat.Message]
    assert session.idle


def test_one_message_on_the_wire_at_a_time_keeps_order() -> None:
    session = joined_session()
    for text in ("one", "two", "three"):
        session.submit(chat.Say(text), 1.0)
    assert [m["text"] for m in sent(session)] == ["one"]
    # Someone else's message is not our acknowledgement.
    session.receive_data(message(1, "bob", "one"), 1.0)
    assert sent(session) == []
    session.receive_data(message(2, "ci", "one"), 1.0)
    assert [m["text"] for m in sent(session)] == ["two"]
    session.receive_data(message(3, "ci", "two"), 1.0)
    assert [m["text"] for m in sent(session)] == ["three"]


def test_rate_limited_message_is_resent_not_dropped() -> None:
    session = joined_session(rate=2.0, burst=5)
    session.submit(chat.Say("hello"), 1.0)
    sent(session)
    events = session.receive_data(
        ev(chat.Error("rate_limited", "Rate limited: not delivered", "say")), 1.0)
    assert isinstance(events[0], s.Held) and events[0].reason == "rate_limited"
    assert session.pending[0].text == "hello"
    assert session.tick(1.2) == [] and sent(session) == []  # still pausing (1/rate = 0.5 s)
    deadline = session.next_deadline()
    assert deadline is not None and 1.0 < deadline <= 1.5
    session.tick(1.5)
    assert sent(session) == [{"type": "say", "text": "hello"}]


def test_local_pacing_follows_the_servers_rate_and_burst() -> None:
    session = joined_session(rate=10.0, burst=2)
    for i in range(4):
        session.submit(chat.Say(f"m{i}"), 0.0)
    out = []
    now = 0.0
    seq = 0
    for _ in range(50):
        batch = sent(session)
        while batch:  # the server echoes each message at once
            for m in batch:
                out.append((now, m["text"]))
                seq += 1
                session.receive_data(message(seq, "ci", m["text"]), now)
            batch = sent(session)
        if session.idle:
            break
        deadline = session.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        session.tick(now)
    assert [t for _, t in out] == ["m0", "m1", "m2", "m3"]
    # Two at once (the burst), then one every 0.1 s.
    assert out[1][0] == 0.0 and out[2][0] == pytest.approx(0.1) and out[3][0] == \
        pytest.approx(0.2)


def test_refused_message_is_reported_and_the_queue_goes_on() -> None:
    session = joined_session()
    session.submit(chat.PrivateSay("nobody", "psst"), 1.0)
    session.submit(chat.Say("next"), 1.0)
    assert sent(session)[0]["type"] == "msg"
    events = session.receive_data(
        ev(chat.Error("no_such_member", "Nobody called 'nobody' is in this room.", "msg")), 1.0)
    assert isinstance(events[0], s.NotDelivered) and events[0].item.text == "psst"
    assert sent(session) == [{"type": "say", "text": "next"}]


def test_private_message_is_delivered_when_the_server_echoes_it() -> None:
    session = joined_session()
    session.submit(chat.PrivateSay("bob", "psst"), 1.0)
    sent(session)
    events = session.receive_data(ev(chat.Private(2.0, "ci", "bob", "psst")), 1.0)
    assert isinstance(events[0], s.Delivered)


def test_stopped_server_holds_messages_until_it_allows_them() -> None:
    session = joined_session()
    session.submit(chat.Say("hello"), 1.0)
    sent(session)
    events = session.receive_data(
        ev(chat.Error("stopped", "The server is stopped: not delivered.", "say")), 1.0)
    assert isinstance(events[0], s.Held) and events[0].reason == "stopped"
    session.submit(chat.Say("later"), 2.0)
    session.tick(5.0)
    assert sent(session) == []
    session.receive_data(ev(chat.StateChanged("active", 6.0, "")), 6.0)
    assert sent(session) == [{"type": "say", "text": "hello"}]


def test_message_too_long_for_the_server_line_limit_is_refused_locally() -> None:
    session = joined_session(max_line=100)
    events = session.submit(chat.Say("x" * 200), 1.0)
    assert isinstance(events[0], s.NotDelivered) and events[0].code == "too_long"
    assert "100" in events[0].message
    assert sent(session) == [] and session.idle


def test_server_ping_is_answered() -> None:
    session = joined_session()
    session.receive_data(ev(chat.Ping("keepalive")), 1.0)
    assert sent(session) == [{"type": "pong", "token": "keepalive"}]


def test_silent_server_is_pinged_then_dropped_and_reconnected() -> None:
    session = joined_session()
    session.tick(s.KEEPALIVE_IDLE)
    assert sent(session) == [{"type": "ping", "token": s.KEEPALIVE_TOKEN}]
    session.tick(s.KEEPALIVE_IDLE + s.KEEPALIVE_TIMEOUT)
    assert session.must_close
    events = session.connection_lost("closed", s.KEEPALIVE_IDLE + s.KEEPALIVE_TIMEOUT)
    assert isinstance(events[0], s.Disconnected) and events[0].retry_in is not None
    assert "stopped answering" in events[0].reason


def test_drop_reconnects_with_backoff_and_rejoins_the_same_room() -> None:
    session = joined_session()
    session.submit(chat.Say("typed while connected"), 1.0)
    sent(session)
    events = session.receive_data(b"", 2.0)  # the server went away
    lost = [e for e in events if isinstance(e, s.Disconnected)]
    assert lost and lost[0].queued == 1
    assert session.phase == s.DISCONNECTED
    delays = []
    now = 2.0
    for _ in range(8):
        assert session.reconnect_at is not None
        delays.append(session.reconnect_at - now)
        now = session.reconnect_at
        assert session.wants_connect(now)
        session.connecting(now)
        session.connection_failed("Connection refused", now)
    assert delays[0] == pytest.approx(s.BACKOFF_FIRST)
    assert all(b >= a for a, b in zip(delays, delays[1:]))
    assert max(delays) <= s.BACKOFF_MAX * 1.2
    # Typed while disconnected: queued, not lost.
    events = session.submit(chat.Say("typed while away"), now)
    assert isinstance(events[0], s.Queued) and events[0].waiting
    # The server is back.
    session.connecting(now)
    session.connection_made(now)
    session.receive_data(GREETING, now)
    session.receive_data(welcome(server_id="srv2"), now)
    assert [m["type"] for m in sent(session)] == ["hello", "join"]
    events = session.receive_data(ev(chat.Joined("1234", "ci", ("ci",))), now)
    assert isinstance(events[0], s.RoomJoined) and events[0].rejoin
    # The uncertain message waits for the history replay to be known (ping/pong).
    assert sent(session) == [{"type": "ping", "token": s.SYNC_TOKEN}]
    session.receive_data(ev(chat.Pong(s.SYNC_TOKEN)), now)
    assert sent(session) == [{"type": "say", "text": "typed while connected"}]
    session.receive_data(message(1, "ci", "typed while connected"), now)
    assert sent(session) == [{"type": "say", "text": "typed while away"}]
    assert session.attempt == 0


def test_history_replay_after_reconnect_proves_delivery_and_is_not_shown_twice() -> None:
    session = joined_session()
    session.receive_data(message(1, "bob", "before"), 1.0)
    session.submit(chat.Say("mine"), 1.0)
    sent(session)
    session.connection_lost("Connection reset by peer", 2.0)  # echo never arrived
    now = 3.0
    session.connecting(now)
    session.connection_made(now)
    session.receive_data(GREETING + welcome(), now)
    sent(session)
    events = session.receive_data(
        ev(chat.Joined("1234", "ci", ("bob", "ci"))) + message(1, "bob", "before", history=True)
        + message(2, "ci", "mine", history=True) + message(3, "bob", "missed", history=True),
        now)
    assert sent(session) == [{"type": "ping", "token": s.SYNC_TOKEN}]
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RoomJoined", "Message", "Delivered", "Message"]
    shown = [e.text for e in events if isinstance(e, chat.Message)]
    assert shown == ["mine", "missed"]  # "before" was already shown
    session.receive_data(ev(chat.Pong(s.SYNC_TOKEN)), now)
    assert sent(session) == [] and session.idle  # not sent twice


def test_greeting_refusal_before_joining_is_final() -> None:
    session = s.Session(pin="1234", name="ci")
    session.connecting(0.0)
    session.connection_made(0.0)
    session.receive_data(b"LANCHAT/1 standby The server is in standby.\n", 0.0)
    events = session.receive_data(b"", 0.0)
    assert isinstance(events[-1], s.Finished) and events[-1].reason == "standby"
    assert session.reconnect_at is None


def test_greeting_refusal_after_having_joined_is_retried() -> None:
    session = joined_session()
    session.connection_lost("reset", 1.0)
    session.connecting(2.0)
    session.connection_made(2.0)
    session.receive_data(b"LANCHAT/1 standby The server is in standby.\n", 2.0)
    events = session.receive_data(b"", 2.0)
    assert isinstance(events[-1], s.Disconnected) and "standby" in events[-1].reason
    assert session.reconnect_at is not None


def test_first_connection_refused_is_final() -> None:
    session = s.Session(pin="1234", name="ci")
    session.connecting(0.0)
    events = session.connection_failed("Connection refused", 0.0)
    assert isinstance(events[0], s.Finished) and events[0].reason == "connect_failed"


def test_not_a_lanchat_server_is_final() -> None:
    session = s.Session(pin="1234", name="ci")
    session.connecting(0.0)
    session.connection_made(0.0)
    events = session.receive_data(b"SSH-2.0-OpenSSH_9.6\r\n", 0.0)
    assert isinstance(events[-1], s.Finished) and events[-1].reason == "not_lanchat"
    assert session.must_close


def test_missing_credentials_are_asked_for_and_refusals_say_which_field() -> None:
    session = s.Session(rng=lambda: 0.5)
    session.connecting(0.0)
    session.connection_made(0.0)
    session.receive_data(GREETING, 0.0)
    events = session.receive_data(welcome(pin_min=4, pin_max=6), 0.0)
    assert isinstance(events[0], s.NeedCredentials) and events[0].pin and events[0].name
    assert events[0].welcome.pin_max == 6
    sent(session)
    session.set_credentials("1234", "bob", 1.0)
    assert sent(session)[-1] == {"type": "join", "pin": "1234", "name": "bob"}
    events = session.receive_data(
        ev(chat.Error("name_taken", "The name 'bob' is already taken.", "join")), 1.0)
    assert isinstance(events[0], s.JoinRefused) and events[0].field == "name"
    assert session.phase == s.NEED_CREDENTIALS and session.pin == "1234"
    session.set_credentials("1234", "bobby", 2.0)
    assert sent(session)[-1]["name"] == "bobby"
    events = session.receive_data(ev(chat.Joined("1234", "bobby", ("bob", "bobby"))), 2.0)
    assert isinstance(events[0], s.RoomJoined)


def test_rejoin_with_the_name_still_held_retries_with_backoff() -> None:
    session = joined_session()
    session.connection_lost("reset", 1.0)
    now = session.reconnect_at or 0.0
    session.connecting(now)
    session.connection_made(now)
    session.receive_data(GREETING + welcome(), now)
    sent(session)
    events = session.receive_data(
        ev(chat.Error("name_taken", "The name 'ci' is already taken.", "join")), now)
    assert isinstance(events[0], s.Retrying)
    later = now + events[0].retry_in
    session.tick(later)
    assert sent(session) == [{"type": "join", "pin": "1234", "name": "ci"}]


def test_kick_is_final_and_reports_what_was_not_sent() -> None:
    session = joined_session()
    session.submit(chat.Say("one"), 1.0)
    session.submit(chat.Say("two"), 1.0)
    session.receive_data(ev(chat.Bye("kicked", "You were removed.")), 1.0)
    events = session.receive_data(b"", 1.0)
    fin = events[-1]
    assert isinstance(fin, s.Finished) and fin.reason == "kicked" and not fin.ok
    assert [i.text for i in fin.unsent] == ["one", "two"]


def test_quit_waits_for_the_goodbye() -> None:
    session = joined_session()
    assert session.quit(1.0) == []
    assert sent(session) == [{"type": "quit"}]
    session.receive_data(ev(chat.Bye("quit", "Goodbye.")), 1.0)
    events = session.receive_data(b"", 1.0)
    assert isinstance(events[-1], s.Finished) and events[-1].ok


def test_quit_without_an_answer_finishes_after_a_while() -> None:
    session = joined_session()
    session.quit(1.0)
    assert session.tick(1.0 + s.QUIT_TIMEOUT - 0.1) == []
    events = session.tick(1.0 + s.QUIT_TIMEOUT)
    assert isinstance(events[0], s.Finished) and session.must_close


def test_presence_and_members_keep_the_member_list() -> None:
    session = joined_session()
    session.receive_data(ev(chat.Presence("1234", 1.0, "carol", "join")), 1.0)
    assert session.members == ["ci", "bob", "carol"]
    session.receive_data(ev(chat.Presence("1234", 1.0, "bob", "leave")), 1.0)
    assert session.members == ["ci", "carol"]
    session.receive_data(ev(chat.Members("1234", ("carol", "ci", "dave"))), 1.0)
    assert session.members == ["carol", "ci", "dave"]


def test_a_malformed_server_line_is_skipped() -> None:
    session = joined_session()
    events = session.receive_data(b"{not json\n" + message(1, "bob", "fine"), 1.0)
    assert [e.text for e in events if isinstance(e, chat.Message)] == ["fine"]


def test_a_server_that_never_greets_is_given_up_on_the_first_time() -> None:
    session = s.Session(pin="1234", name="ci")
    session.connecting(0.0)
    session.connection_made(0.0)
    assert session.tick(s.HANDSHAKE_TIMEOUT - 1) == []
    session.tick(s.HANDSHAKE_TIMEOUT)
    assert session.must_close
    events = session.connection_lost("closed by the client", s.HANDSHAKE_TIMEOUT)
    assert isinstance(events[-1], s.Finished) and events[-1].reason == "connect_failed"
    assert "did not answer" in events[-1].message


def test_a_malformed_pin_is_not_sent_but_asked_again_after_the_welcome() -> None:
    """The join goes with the hello only when it is well-formed: a PIN with a letter is
    refused by the client itself, once the welcome has told it the server's rules."""
    session = s.Session(pin="12a4", name="bob")
    session.connecting(0.0)
    session.connection_made(0.0, join_early=True)
    session.receive_data(GREETING, 0.0)
    assert [m["type"] for m in sent(session)] == ["hello"]
    events = session.receive_data(welcome(pin_min=4, pin_max=8), 0.0)
    assert isinstance(events[0], s.JoinRefused) and events[0].field == "pin"
    assert events[0].welcome is not None and events[0].welcome.pin_max == 8
    assert sent(session) == [] and session.phase == s.NEED_CREDENTIALS


def test_the_pin_and_name_wait_for_the_welcome_unless_the_server_is_proven() -> None:
    """A server not yet proven (first contact, plain text, an address typed by hand) may be
    an impostor: the PIN and name wait for its welcome, whose server id is checked."""
    session = s.Session(pin="1234", name="bob")
    session.connecting(0.0)
    session.connection_made(0.0)
    session.receive_data(GREETING, 0.0)
    assert [m["type"] for m in sent(session)] == ["hello"]
    session.receive_data(welcome(), 0.0)
    assert sent(session) == [{"type": "join", "pin": "1234", "name": "bob"}]


def test_no_common_version_ends_the_session_with_the_join_sent_alongside() -> None:
    """The hello is refused (no version in common): the join sent with it is not
    served, and the session ends with the server's reason, not as a refused join."""
    session = s.Session(pin="1234", name="bob")
    session.connecting(0.0)
    session.connection_made(0.0, join_early=True)
    session.receive_data(GREETING, 0.0)
    assert [m["type"] for m in sent(session)] == ["hello", "join"]
    message = "This server speaks protocol versions 2."
    session.receive_data(ev(chat.Error("unsupported_version", message, "hello")), 0.0)
    events = session.receive_data(ev(chat.Bye("unsupported_version", message)), 0.0)
    events += session.receive_data(b"", 0.0)
    assert not any(isinstance(e, s.JoinRefused) for e in events)
    assert isinstance(events[-1], s.Finished) and events[-1].reason == "unsupported_version"
    assert session.reconnect_at is None


def test_refused_value_is_named_in_the_refusal() -> None:
    session = s.Session(pin="1234", name="bob")
    session.connecting(0.0)
    session.connection_made(0.0)
    session.receive_data(GREETING + welcome(), 0.0)
    events = session.receive_data(
        ev(chat.Error("name_taken", "The name 'bob' is already taken.", "join")), 0.0)
    assert isinstance(events[0], s.JoinRefused)
    assert (events[0].field, events[0].value) == ("name", "bob")


def test_sync_ping_refused_still_ends_the_wait() -> None:
    session = joined_session()
    session.submit(chat.Say("in doubt"), 1.0)
    sent(session)
    session.connection_lost("reset", 2.0)
    now = session.reconnect_at or 0.0
    session.connecting(now)
    session.connection_made(now)
    session.receive_data(GREETING + welcome() + ev(chat.Joined("1234", "ci", ("ci",))), now)
    assert sent(session)[-1] == {"type": "ping", "token": s.SYNC_TOKEN}
    session.receive_data(ev(chat.Error("rate_limited", "Rate limited", "ping")), now)
    assert sent(session) == [{"type": "say", "text": "in doubt"}]


def test_why_the_session_is_out_of_the_room_is_kept_until_it_is_back() -> None:
    session = joined_session()
    assert session.trouble is None
    session.connection_lost("reset", 1.0)
    session.connecting(2.0)
    session.connection_made(2.0)
    assert session.handshake_deadline == 2.0 + s.HANDSHAKE_TIMEOUT
    session.receive_data(b"LANCHAT/1 standby The server is in standby.\n", 2.0)
    events = session.receive_data(b"", 2.0)
    assert isinstance(events[-1], s.Disconnected) and events[-1].code == "standby"
    assert session.trouble == events[-1]
    session.connecting(5.0)
    session.connection_made(5.0)
    session.receive_data(GREETING, 5.0)
    session.receive_data(welcome(), 5.0)
    session.receive_data(ev(chat.Joined("1234", "ci", ("ci",))), 5.0)
    assert session.trouble is None and session.handshake_deadline is None


def test_fits_says_whether_a_message_fits_the_servers_line() -> None:
    session = joined_session(max_line=200)
    assert session.fits(chat.Say("x" * 100))
    assert not session.fits(chat.Say("x" * 300))

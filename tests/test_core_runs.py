"""A read's lines handled together do what the same lines do one read at a time.

The core hands a read's consecutive ``say`` requests to the state table, the rate
bucket and the say handler as one run (docs/performance.md, "Fifth round").  Whatever
mixture of lines a member sends, the bytes every member receives, the connections
closed, the activity log, the counters, the bucket and the room's history must be the
same whether the lines come in one read or one per read, at the same time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lanchat.protocol import chat
from lanchatd import states
from lanchatd.config import Config
from lanchatd.core import ChatCore, Effects
from lanchatd.transport import Input

T0 = 1_700_000_000.0

JSON_LINES = [
    b'{"type":"say","text":"hello"}',
    b'{"type":"say","text":"waves","action":true}',
    b'{"type":"say","text":"caf\xc3\xa9 \\u00e9 \\ud800"}',
    b'{"type":"say","text":"  "}',  # refused: empty
    b'{"type":"say","text":"\\u202e"}',  # refused: a bidi control
    b'{"type":"say","text":7}',  # refused: not a string
    b'{"type":"say","text":"x","action":"yes"}',
    b'{"type":"say","text":"again"} ',
    b'{"type":"who"}',
    b'{"type":"ping","token":"t"}',
    b'{"type":"pong","token":"keepalive"}',
    b'{"type":"msg","to":"rx","text":"psst"}',
    b'{"type":"msg","to":"nobody","text":"psst"}',
    b'{"type":"join","pin":"123456","name":"again"}',  # not allowed once joined
    b'{"type":"hello","versions":[1]}',
    b'{"type":"nope"}',
    b"{not json",
    b"[1]",
    b"\xff\xfe",
    b"",
    b'{"type":"quit"}',
]
TEXT_LINES = [b"hello", b"/me waves", b"/who", b"//slash", b"/msg rx psst", b"/nope",
              b"/help", b"", b"   ", b"\xff", b"/lang nb", b"caf\xc3\xa9", b"/quit"]


def _core(state: str, burst: int, rate: float) -> ChatCore:
    config = Config(name="lab", message_burst=burst, message_rate=rate, history=3,
                    log_messages=True, max_errors=4)
    core = ChatCore(config, host_name="h", server_id="sid", now=T0)
    return core


def _apply(fx: Effects, out: dict[int, bytearray], closed: list[int],
           log: list[tuple[str, dict[str, Any]]]) -> None:
    for targets, data in fx.sends:
        for cid in targets:
            out[cid] += data
    closed.extend(fx.closes)
    log.extend((event, fields) for _when, event, fields in fx.log)


def _run(sender_text: bool, items: list[Input], one_read: bool, state: str, burst: int,
         rate: float, spent: int = 0, later: float = 1.0) -> dict[str, Any]:
    core = _core(state, burst, rate)
    out: dict[int, bytearray] = defaultdict(bytearray)
    closed: list[int] = []
    log: list[tuple[str, dict[str, Any]]] = []

    def feed(cid: int, lines: list[Input], now: float = T0) -> None:
        _apply(core.receive(cid, lines, now), out, closed, log)

    for cid, text_mode, name in ((1, sender_text, "tx"), (2, False, "rx"), (3, True, "tr")):
        _apply(core.connect(cid, ("10.0.0.1", 40000 + cid), T0), out, closed, log)
        if text_mode:
            feed(cid, [b"123456", name.encode()])
        else:
            feed(cid, [b'{"type":"hello","versions":[1]}',
                       b'{"type":"join","pin":"123456","name":"%s"}' % name.encode()])
    # Tokens spent before (a fraction refilled since): the run starts from any level.
    feed(1, [b"/me spends" if sender_text else b'{"type":"say","text":"spends"}'] * spent)
    _apply(core.set_state(state, "test", T0), out, closed, log)
    for cid in (1, 2, 3):
        out[cid].clear()
    feed(1, [], T0 + later)  # the refill, in both cases
    if one_read:
        feed(1, items, T0 + later)
    else:
        for item in items:
            feed(1, [item], T0 + later)
    conn = core.conns.get(1)
    room = core.rooms.get("123456")
    return {
        "out": {cid: bytes(data) for cid, data in out.items()},
        "closed": closed, "log": log, "counters": dict(core.counters),
        "tokens": None if conn is None else conn.tokens,
        "state": None if conn is None else conn.state,
        "seq": None if room is None else room.seq,
        "history": None if room is None else [json.loads(chat.encode_json(m))
                                              for m in room.history],
    }


def _items(lines: list[bytes]) -> st.SearchStrategy[list[Input]]:
    item = st.sampled_from(lines) | st.just(chat.LINE_TOO_LONG)
    says = st.lists(st.sampled_from(lines[:3]), min_size=1, max_size=8)
    return st.lists(item | says, max_size=12).map(
        lambda parts: [x for p in parts for x in (p if isinstance(p, list) else [p])])


@settings(max_examples=400, deadline=None)
@given(items=_items(JSON_LINES), state=st.sampled_from(sorted(states.SERVER_STATE_RULES)),
       burst=st.sampled_from([1, 3, 10, 1000]), rate=st.sampled_from([0.5, 0.7, 1000.0]),
       end=st.booleans(), spent=st.integers(0, 12), later=st.sampled_from([0.3, 1.0, 2.9]))
def test_a_json_members_lines_in_one_read_do_what_they_do_one_at_a_time(
        items: list[Input], state: str, burst: int, rate: float, end: bool, spent: int,
        later: float) -> None:
    if end:
        items = [*items, chat.END_OF_INPUT]
    together = _run(False, items, True, state, burst, rate, spent, later)
    apart = _run(False, items, False, state, burst, rate, spent, later)
    assert together == apart


@settings(max_examples=200, deadline=None)
@given(items=_items(TEXT_LINES), state=st.sampled_from(sorted(states.SERVER_STATE_RULES)),
       burst=st.sampled_from([1, 3, 1000]), spent=st.integers(0, 5))
def test_a_text_members_lines_in_one_read_do_what_they_do_one_at_a_time(
        items: list[Input], state: str, burst: int, spent: int) -> None:
    together = _run(True, items, True, state, burst, 0.7, spent)
    apart = _run(True, items, False, state, burst, 0.7, spent)
    assert together == apart


def test_a_run_past_the_bucket_delivers_what_the_tokens_cover_and_refuses_the_rest(
        ) -> None:
    # 3 tokens, 5 says in one read: the first 3 are delivered, the other 2 refused
    # (the loop would not have handed them over; a caller that does is refused).
    result = _run(False, [b'{"type":"say","text":"m%d"}' % i for i in range(5)], True,
                  "active", 3, 0.001)
    received = [json.loads(line) for line in result["out"][2].splitlines()]
    assert [e["text"] for e in received] == ["m0", "m1", "m2"]
    errors = [json.loads(line) for line in result["out"][1].splitlines()
              if json.loads(line)["type"] == "error"]
    assert [e["code"] for e in errors] == ["rate_limited", "rate_limited"]
    assert result["counters"]["messages"] == 3 and result["counters"]["rate_limited"] == 2
    assert 0.0 <= result["tokens"] < 0.01  # 3 taken, 1 s of 0.001/s refilled
    assert result["seq"] == 3 and [h["seq"] for h in result["history"]] == [1, 2, 3]

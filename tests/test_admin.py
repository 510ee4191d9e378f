"""The administrator's commands as plain calls: no socket, no loop, the clock a parameter.

lanchatd/admin.py decides what a control request does; here it runs against a real
chat core (fed bytes, as the loop would) and a small ``Daemon`` made for the test, and
each outcome is checked: the reply, the chat effects the loop would apply, and what
changes for the asking connection.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

from lanchat_testing import TEST_PIN_MIN

from lanchat import __version__
from lanchat.protocol.control import (
    Announce,
    Cancel,
    Code,
    Failure,
    Hello,
    Incoming,
    Kick,
    Log,
    Ok,
    Reload,
    Request,
    SetState,
    Status,
    StreamEnd,
    Users,
)
from lanchatd import admin
from lanchatd.activity import ActivityLog
from lanchatd.config import Config
from lanchatd.core import ChatCore, Effects

NOW = 1_800_000_000.0


@dataclass
class FakeDaemon:
    """The test's ``admin.Daemon``: a real core and log, made-up surroundings."""

    core: ChatCore
    memory: ActivityLog
    reload_ok: bool = True
    reloads: list[str] = field(default_factory=list)

    @property
    def chat(self) -> admin.ChatAdmin:
        return self.core

    @property
    def log(self) -> admin.LogMemory:
        return self.memory

    def surroundings(self) -> admin.Surroundings:
        return admin.Surroundings(pid=4242, addresses={"tcp": "127.0.0.1:5000"},
                                  discovery={"probes": 0}, control_connections=1,
                                  log_file=None)

    def reload(self, actor: str, now: float) -> admin.Reloaded:
        self.reloads.append(actor)
        if self.reload_ok:
            return admin.Reloaded(True, "configuration reloaded", [])
        return admin.Reloaded(False, "reload failed, configuration unchanged: bad", [])


def daemon_with_bob() -> FakeDaemon:
    memory = ActivityLog()
    core = ChatCore(Config(name="lab", pin_min_length=TEST_PIN_MIN), host_name="host",
                    server_id="sid", now=NOW)
    for fx in (core.connect(1, ("127.0.0.1", 40000), NOW),
               core.receive(1, [b'{"type":"hello","versions":[1]}',
                                b'{"type":"join","pin":"1234","name":"Bob"}'], NOW)):
        for when, event, fields in fx.log:  # what the loop does with the core's entries
            memory.record(when, event, **fields)
    return FakeDaemon(core, memory)


def run(daemon: FakeDaemon, session: admin.Session, request: Request,
        request_id: int = 7) -> admin.Outcome:
    return admin.run(daemon, session, Incoming(request_id, request), NOW + 1)


def sent_to(effects: Effects | None, cid: int) -> list[dict[str, object]]:
    assert effects is not None
    return [json.loads(line) for targets, data in effects.sends if cid in targets
            for line in data.splitlines()]


def test_hello_answers_with_the_daemon_and_the_asker() -> None:
    daemon = daemon_with_bob()
    session = admin.Session("uid=0(root) pid=1", version=1)
    outcome = run(daemon, session, Hello())
    assert outcome.reply == Ok(7, {"version": 1, "server": f"lanchatd/{__version__}",
                                   "server_id": "sid", "name": "lab", "pid": 4242,
                                   "actor": "uid=0(root) pid=1"})
    assert session.hello_done and outcome.effects is None


def test_status_is_the_core_snapshot_and_the_surroundings() -> None:
    result = run(daemon_with_bob(), admin.Session("a"), Status()).reply
    assert isinstance(result, Ok)
    assert result.result["members"] == 1 and result.result["pid"] == 4242
    assert result.result["addresses"] == {"tcp": "127.0.0.1:5000"}
    assert result.result["state_description"] == "new clients and messages are allowed"


def test_a_kick_returns_the_bye_for_the_loop_to_send() -> None:
    daemon = daemon_with_bob()
    outcome = run(daemon, admin.Session("admin"), Kick("1234", "BOB", "spam"))
    assert outcome.reply == Ok(7, {"room": "1234", "name": "Bob", "addr": "127.0.0.1:40000",
                                   "reason": "spam"})
    assert outcome.effects is not None and outcome.effects.closes == [1]
    _when, event, fields = outcome.effects.log[0]  # the loop writes it to the log
    assert (event, fields["actor"], fields["name"]) == ("kick", "admin", "Bob")
    bye = sent_to(outcome.effects, 1)[-1]
    assert bye["type"] == "bye" and bye["reason"] == "kicked" and bye["detail"] == "spam"


def test_refusals_become_numbered_failures() -> None:
    daemon = daemon_with_bob()
    session = admin.Session("admin")
    assert run(daemon, session, Kick("1234", "mallory")).reply == Failure(
        7, Code.UNKNOWN_USER, "Nobody called 'mallory' is in room 1234.")
    assert run(daemon, session, Users("9999")).reply == Failure(
        7, Code.UNKNOWN_ROOM, "There is no room with PIN 9999.")
    assert run(daemon, session, Announce("hi", "9999")).reply == Failure(
        7, Code.UNKNOWN_ROOM, "There is no room with PIN 9999.")
    daemon.reload_ok = False
    assert run(daemon, session, Reload()).reply == Failure(
        7, Code.RELOAD_FAILED, "reload failed, configuration unchanged: bad")
    assert daemon.reloads == ["admin"]


def test_set_state_tells_the_members() -> None:
    daemon = daemon_with_bob()
    outcome = run(daemon, admin.Session("admin"), SetState("standby"))
    assert isinstance(outcome.reply, Ok) and outcome.reply.result["changed"] is True
    assert sent_to(outcome.effects, 1)[0]["state"] == "standby"
    again = run(daemon, admin.Session("admin"), SetState("standby"))
    assert isinstance(again.reply, Ok) and again.reply.result["changed"] is False


def test_following_the_log_and_cancelling_it() -> None:
    daemon = daemon_with_bob()
    session = admin.Session("admin")
    outcome = run(daemon, session, Log(n=1, follow=True), request_id=5)
    assert outcome.follow and session.stream_id == 5
    assert isinstance(outcome.reply, Ok) and len(outcome.reply.result["entries"]) == 1
    second = run(daemon, session, Log(follow=True), request_id=6)
    assert isinstance(second.reply, Failure) and second.reply.code == Code.BAD_VALUE
    assert session.stream_id == 5
    cancelled = run(daemon, session, Cancel(), request_id=8)
    assert cancelled.stream_end == StreamEnd(5, "cancelled", "Stopped following the log.")
    assert cancelled.reply == Ok(8, {"cancelled": 5}) and session.stream_id is None
    assert run(daemon, session, Cancel(), request_id=9).reply == Ok(9, {"cancelled": None})


def test_every_request_type_has_a_command() -> None:
    def subclasses(cls: type) -> set[type]:
        return {c for s in cls.__subclasses__() for c in {s, *subclasses(s)}}

    assert set(admin.COMMANDS) == subclasses(Request)


def test_the_commands_touch_no_socket_and_no_clock() -> None:
    source = Path(admin.__file__).read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported & {"socket", "selectors", "time", "os", "threading"} == set()

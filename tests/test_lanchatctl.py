"""lanchatctl against a real daemon: every command, in text and --json, and its errors.

lanchatctl runs as a separate process (``python -m lanchatctl``), the way an
administrator runs it, against a daemon started on port 0 with a temporary control
socket.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from lanchat_testing import (
    Daemon,
    JsonClient,
    TextClient,
    as_if_at_a_terminal,
    env_with_repo,
    with_short_pins,
)

from lanchatctl.cli import build_parser, parse

CTL_TIMEOUT = 30.0


@dataclass
class Result:
    status: int
    out: str
    err: str
    pid: int

    def json(self) -> Any:
        return json.loads(self.out)

    def lines(self) -> list[str]:
        return self.out.splitlines()


def ctl(target: Daemon | str | None, *args: str, env: dict[str, str] | None = None,
        timeout: float = CTL_TIMEOUT) -> Result:
    """Run ``lanchatctl [--socket PATH] ARGS`` and wait for it."""
    socket_args: list[str] = []
    if isinstance(target, Daemon):
        assert target.control
        socket_args = ["--socket", target.control]
    elif isinstance(target, str):
        socket_args = ["--socket", target]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lanchatctl", *socket_args, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with_repo(env),
        stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"lanchatctl {' '.join(args)} did not finish; "
                             f"stdout={out!r} stderr={err!r}") from None
    return Result(proc.returncode, out, err, proc.pid)


def ok(target: Daemon | str, *args: str) -> Result:
    result = ctl(target, *args)
    assert result.status == 0, f"lanchatctl {' '.join(args)}: {result}"
    return result


def joined_json(daemon: Daemon, pin: str, name: str) -> JsonClient:
    client = daemon.json_client()
    reply = client.join(pin, name)
    assert reply["type"] == "joined", reply
    return client


@pytest.fixture
def room(daemon: Daemon) -> Iterator[tuple[Daemon, JsonClient, JsonClient]]:
    """Room 1234 with alice and bob (JSON clients); alice has said one thing."""
    alice = joined_json(daemon, "1234", "alice")
    bob = joined_json(daemon, "1234", "bob")
    alice.recv_type("presence")  # bob joined
    alice.say("hello bob")
    bob.recv_until(lambda o: o.get("type") == "message" and o.get("text") == "hello bob")
    yield daemon, alice, bob
    alice.close()
    bob.close()


# --------------------------------------------------------------------------- the parser


def test_help_lists_every_command_and_the_exit_statuses() -> None:
    text = build_parser().format_help()
    for command in ("status", "rooms", "users", "start", "standby", "stop", "close", "kick",
                    "announce", "log", "reload", "top", "shell"):
        assert f"    {command}" in text, command
    for status in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "130"):
        assert f"\n  {status}" in text, status
    assert "permission denied" in text and "unknown room or user" in text
    kick_help = subprocess.run(
        [sys.executable, "-m", "lanchatctl", "kick", "--help"], capture_output=True,
        text=True, env=env_with_repo(), timeout=CTL_TIMEOUT)
    assert kick_help.returncode == 0 and "exit status:" in kick_help.stdout


@pytest.mark.parametrize(("argv", "words"), [
    (["kick", "12a4", "bob"], "PIN"),
    (["close", "x"], "PIN"),
    (["users", "--", "-1"], "PIN"),
    (["announce", " "], "empty"),
    (["log", "-n", "-3"], "0 or more"),
    (["--timeout", "0", "status"], "between 0 and 3600"),
    (["top", "--interval", "0.01"], "at least 0.1 seconds"),
    (["kick", "1234"], "NAME"),
    (["frobnicate"], "invalid choice"),
    (["--socket", "", "status"], "must not be empty"),
])
def test_bad_command_lines_exit_2_naming_the_problem(
        argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(build_parser(), argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["--json", "kick", "1234"], ["kick", "1234", "--json"], ["--json", "frobnicate"],
    ["--json", "--timeout", "0", "status"], ["--json", "help", "nope"],
])
def test_json_usage_errors_are_json_on_stdout_too(argv: list[str]) -> None:
    result = ctl(None, *argv)
    assert result.status == 2
    error = result.json()  # a script reading stdout learns what is wrong
    assert error["exit_status"] == 2 and error["error"]["name"] == "usage"
    assert error["error"]["message"] in result.err
    assert "usage: lanchatctl" in result.err


def test_json_after_a_double_dash_is_text_not_the_option() -> None:
    result = ctl(None, "announce", "--room", "x", "--", "--json")
    assert result.status == 2 and result.out == ""


def test_help_is_a_command_too() -> None:
    whole = ctl(None, "help")
    assert whole.status == 0 and whole.out == build_parser().format_help()
    kick = ctl(None, "help", "kick")
    assert kick.status == 0 and kick.out.startswith("usage: lanchatctl kick ")
    assert kick.out == ctl(None, "kick", "--help").out
    unknown = ctl(None, "help", "frobnicate")
    assert unknown.status == 2 and "invalid choice: 'frobnicate'" in unknown.err


def test_options_may_come_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parse(parser, ["--json", "--socket", "/x.sock", "--timeout", "2", "rooms"])
    after = parse(parser, ["rooms", "--json", "--socket", "/x.sock", "--timeout", "2"])
    assert before == after
    assert before.options.json and before.options.socket == "/x.sock"
    assert parse(parser, ["--json", "rooms"]).options.json  # not undone by the subcommand


def test_no_command_without_a_terminal_is_a_usage_error(daemon: Daemon) -> None:
    result = ctl(daemon)
    assert result.status == 2
    assert "no command given" in result.err and "--help" in result.err


# --------------------------------------------------------------------------- reading


def test_status_shows_the_dashboard(room: tuple[Daemon, JsonClient, JsonClient]) -> None:
    daemon, _alice, _bob = room
    text = ok(daemon, "status").out
    assert "State:     active: new clients and messages are allowed" in text
    assert f"pid {daemon.pid}" in text
    assert f"Listening: tcp {daemon.tcp[0]}:{daemon.tcp[1]}, udp " in text
    assert f"\nControl:   {daemon.control}\n" in text
    assert daemon.tls is not None
    assert f", tls {daemon.tls[0]}:{daemon.tls[1]}" in text
    assert f"\nTLS key:   {daemon.fingerprint}\n" in text  # what clients pin
    assert "Clients:   2 connected, 2 in 1 room" in text
    assert "messages 1," in text and "joins 2," in text
    assert "Room 1234: 2 members, 1 message" in text
    after_room = text.split("Room 1234:", 1)[1].splitlines()[1:]
    member_lines = [line.split() for line in after_room]
    assert [words[0] for words in member_lines] == ["NAME", "alice", "bob"]
    assert all(words[1].startswith("127.0.0.1:") and words[2] == "json"
               for words in member_lines[1:])

    status = ok(daemon, "status", "--json").json()
    assert status["state"] == "active" and status["pid"] == daemon.pid
    assert status["clients"] == 2 and status["members"] == 2
    assert status["counters"]["messages"] == 1 and status["counters"]["joins"] == 2
    assert status["uptime"] >= 0 and status["version"]
    assert status["addresses"]["control"] == daemon.control
    [info] = status["rooms"]
    assert info["pin"] == "1234" and info["messages"] == 1
    assert [m["name"] for m in info["members"]] == ["alice", "bob"]


def test_status_of_an_empty_server(daemon: Daemon) -> None:
    text = ok(daemon, "status").out
    assert "No rooms are open." in text and "0 connected" in text


def test_rooms_and_users(room: tuple[Daemon, JsonClient, JsonClient]) -> None:
    daemon, _alice, _bob = room
    carol = joined_json(daemon, "98765", "carol")
    rooms = ok(daemon, "rooms").lines()
    assert rooms[0].split() == ["PIN", "MEMBERS", "MESSAGES", "OPEN", "SINCE", "NAMES"]
    assert rooms[1].split()[:3] == ["1234", "2", "1"] and rooms[1].endswith("alice, bob")
    assert rooms[2].split()[:3] == ["98765", "1", "0"] and rooms[2].endswith("carol")
    listed = ok(daemon, "rooms", "--json").json()["rooms"]
    assert [r["pin"] for r in listed] == ["1234", "98765"]

    everyone = ok(daemon, "users").lines()
    assert [line.split()[:2] for line in everyone] == [
        ["ROOM", "NAME"], ["1234", "alice"], ["1234", "bob"], ["98765", "carol"]]
    users = ok(daemon, "users", "1234", "--json").json()
    assert users["room"] == "1234"
    assert [(u["room"], u["name"]) for u in users["users"]] == [("1234", "alice"),
                                                               ("1234", "bob")]
    assert all(u["addr"].startswith("127.0.0.1:") for u in users["users"])
    carol.close()


def test_an_unknown_room_exits_6_with_what_to_do(daemon: Daemon) -> None:
    result = ctl(daemon, "users", "4321")
    assert result.status == 6
    assert result.err == ("lanchatctl: There is no room with PIN 4321. `lanchatctl rooms` "
                          "lists the open rooms.\n")
    assert result.out == ""
    result = ctl(daemon, "users", "4321", "--json")
    assert result.status == 6
    assert result.json() == {"error": {"name": "unknown_room", "code": 200, "message": (
        "There is no room with PIN 4321. `lanchatctl rooms` lists the open rooms.")},
        "exit_status": 6}


def test_log_shows_the_recent_entries(room: tuple[Daemon, JsonClient, JsonClient]) -> None:
    daemon, _alice, _bob = room
    lines = ok(daemon, "log", "-n", "2").lines()
    assert len(lines) == 2
    assert " join " in lines[1] and "name=bob" in lines[1] and "room=1234" in lines[1]
    entries = [json.loads(line) for line in ok(daemon, "log", "--json").lines()]
    assert entries[0]["event"] == "start" and entries[0]["pid"] == daemon.pid
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries == daemon.log_entries()[:len(entries)]


def test_log_follow_streams_new_entries_until_interrupted(daemon: Daemon) -> None:
    assert daemon.control
    follower = subprocess.Popen(
        [sys.executable, "-m", "lanchatctl", "--socket", daemon.control, "log", "-n", "1",
         "--follow", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with_repo(),
        preexec_fn=as_if_at_a_terminal)
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert first["event"] == "start"
        alice = joined_json(daemon, "5555", "alice")
        seen = []
        while not any(e["event"] == "join" for e in seen):
            seen.append(json.loads(follower.stdout.readline()))
        join = seen[-1]
        assert join["room"] == "5555" and join["name"] == "alice"
        assert [e["seq"] for e in seen] == list(range(first["seq"] + 1, join["seq"] + 1))
        ok(daemon, "announce", "tea is ready")
        while True:
            entry = json.loads(follower.stdout.readline())
            if entry["event"] == "announce":
                break
        assert entry["text"] == "tea is ready" and entry["actor"].startswith("uid=0(root)")
        alice.close()
        follower.send_signal(signal.SIGINT)
        assert follower.wait(CTL_TIMEOUT) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_log_follow_ends_when_the_daemon_stops(daemon: Daemon) -> None:
    assert daemon.control
    follower = subprocess.Popen(
        [sys.executable, "-m", "lanchatctl", "--socket", daemon.control, "log", "-n", "1",
         "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env_with_repo())
    assert follower.stdout is not None
    assert " start " in follower.stdout.readline()
    daemon.stop()
    _out, err = follower.communicate(timeout=CTL_TIMEOUT)
    assert follower.returncode == 3
    assert "lanchatd ended the log stream: lanchatd is stopping." in err


# --------------------------------------------------------------------------- acting


def test_the_three_states(room: tuple[Daemon, JsonClient, JsonClient]) -> None:
    daemon, alice, bob = room
    result = ok(daemon, "standby", "--json").json()
    assert result == {"state": "standby", "previous": "active", "changed": True,
                      "description": "members keep chatting, new clients are refused"}
    assert alice.recv_type("state")["state"] == "standby"
    with daemon.text_client() as newcomer:
        assert newcomer.greeting is not None and newcomer.greeting.startswith(
            "LANCHAT/1 standby The server is in standby")
        assert newcomer.read_line() is None
    alice.say("still here")
    assert bob.recv_type("message")["text"] == "still here"
    assert ok(daemon, "standby").out == (
        "lanchatd is already standby: members keep chatting, new clients are refused.\n")

    assert ok(daemon, "stop").out == (
        "lanchatd is now stopped: messages are refused and new clients are refused.\n")
    alice.say("anyone?")
    assert alice.recv_type("error")["code"] == "stopped"

    assert ok(daemon, "start").out == (
        "lanchatd is now active: new clients and messages are allowed.\n")
    carol = joined_json(daemon, "1234", "carol")
    carol.close()
    states = [(e["old"], e["new"]) for e in daemon.log_entries() if e["event"] == "state"]
    assert states == [("active", "standby"), ("standby", "stopped"), ("stopped", "active")]


def test_close_tells_the_members_why(room: tuple[Daemon, JsonClient, JsonClient]) -> None:
    daemon, alice, bob = room
    result = ok(daemon, "close", "1234", "--reason", "lesson over")
    assert result.out == ("Closed room 1234; 2 members (alice, bob) told why and "
                          "disconnected.\n")
    for client in (alice, bob):
        bye = client.recv_type("bye")
        assert bye["reason"] == "room_closed"
        assert bye["message"] == "The room was closed by the administrator: lesson over"
        assert client.recv() is None
    assert ok(daemon, "rooms").out == "No rooms are open.\n"
    entry = daemon.wait_for_log(lambda e: e["event"] == "room_closed")
    assert entry["reason"] == "lesson over" and entry["actor"] == (
        f"uid=0(root) pid={result.pid}")
    missing = ctl(daemon, "close", "1234", "--json")
    assert missing.status == 6 and missing.json()["error"]["name"] == "unknown_room"


def test_kick_removes_one_member(room: tuple[Daemon, JsonClient, JsonClient]) -> None:
    daemon, alice, bob = room
    result = ok(daemon, "kick", "1234", "BOB", "--reason", "spam", "--json").json()
    assert result["name"] == "bob" and result["room"] == "1234" and result["reason"] == "spam"
    assert result["addr"].startswith("127.0.0.1:")
    bye = bob.recv_type("bye")
    assert bye == {"type": "bye", "reason": "kicked", "message":
                   "You were removed from the room by the administrator: spam",
                   "detail": "spam"}
    presence = alice.recv_type("presence")
    assert presence["name"] == "bob" and presence["event"] == "leave"
    nobody = ctl(daemon, "kick", "1234", "bob")
    assert nobody.status == 6
    assert nobody.err == ("lanchatctl: Nobody called 'bob' is in room 1234. `lanchatctl "
                          "users PIN` lists who is in a room.\n")


def test_announce_to_all_rooms_or_one(room: tuple[Daemon, JsonClient, JsonClient]) -> None:
    daemon, alice, bob = room
    carol = joined_json(daemon, "777777", "carol")
    assert ok(daemon, "announce", "server", "restarts", "at", "noon").out == (
        "Announced to 2 rooms: 1234, 777777.\n")
    for client in (alice, bob, carol):
        assert client.recv_type("notice")["text"] == "server restarts at noon"
    result = ok(daemon, "announce", "--room", "777777", "only you", "--json").json()
    assert result == {"rooms": ["777777"], "text": "only you"}
    assert carol.recv_type("notice")["text"] == "only you"
    alice.send({"type": "ping", "token": "t"})
    assert alice.recv_until(lambda o: o["type"] in ("notice", "pong"))["type"] == "pong"
    assert ctl(daemon, "announce", "--room", "1111", "hello").status == 6
    carol.close()


def test_announce_with_no_room_open(daemon: Daemon) -> None:
    assert ok(daemon, "announce", "hello").out == (
        "No room is open: nobody received the announcement.\n")


def test_reload_reports_what_changed_and_refusals(daemon: Daemon) -> None:
    daemon.config_path.write_text(with_short_pins('[server]\nname = "lab 2"\n'))
    assert ok(daemon, "reload").out == "Configuration reloaded; changed: name.\n"
    assert ok(daemon, "status", "--json").json()["name"] == "lab 2"
    daemon.config_path.write_text(
        with_short_pins('[server]\nname = "lab 3"\nlisten_backlog = 64\n'))
    answer = ok(daemon, "reload", "--json").json()
    assert (answer["changed"], answer["needs_restart"]) == (["name"], ["listen_backlog"])
    assert answer["message"] == (
        "configuration reloaded; changed: name; need a restart: listen_backlog")
    daemon.config_path.write_text("[server]\nport = 'x'\n")
    result = ctl(daemon, "reload")
    assert result.status == 1
    assert "reload failed, configuration unchanged" in result.err
    assert str(daemon.config_path) in result.err and "port" in result.err
    entry = daemon.wait_for_log(lambda e: e["event"] == "reload_failed")
    assert entry["actor"] == f"uid=0(root) pid={result.pid}"


# --------------------------------------------------------------------------- done when


def test_kick_then_standby_then_the_log_says_who_did_what(daemon: Daemon) -> None:
    """The issue's scenario: kick bob, standby refuses a newcomer, the room chats on."""
    alice = TextClient(daemon.tcp)
    alice.join("1234", "alice")
    bob = TextClient(daemon.tcp)
    bob.join("1234", "bob")
    carol = TextClient(daemon.tcp)
    carol.join("1234", "carol")

    kick = ok(daemon, "kick", "1234", "bob")
    assert kick.out.startswith("Removed bob (127.0.0.1:")
    told = bob.read_all()
    assert told[-1] == "! You were removed from the room by the administrator."
    assert bob.closed

    standby = ok(daemon, "standby")
    assert standby.out.startswith("lanchatd is now standby")
    newcomer = TextClient(daemon.tcp)
    newcomer_port = newcomer.sock.getsockname()[1]
    assert newcomer.greeting == ("LANCHAT/1 standby The server is in standby and accepts "
                                 "no new clients. Try again later.")
    assert newcomer.read_all() == []
    newcomer.close()

    alice.send_line("are we still on?")
    assert carol.read_until(lambda line: "alice: are we still on?" in line)
    carol.send_line("yes")
    assert alice.read_until(lambda line: "carol: yes" in line)

    log = ok(daemon, "log").lines()
    kicked = [line for line in log if " kick " in line]
    states = [line for line in log if " state " in line]
    refused = [line for line in log if " refused_connection " in line]
    assert len(kicked) == 1 and "name=bob" in kicked[0] and "room=1234" in kicked[0]
    assert kicked[0].endswith(f"by uid=0(root) pid={kick.pid}")
    assert len(states) == 1 and "new=standby" in states[0]
    assert states[0].endswith(f"by uid=0(root) pid={standby.pid}")
    assert len(refused) == 1 and "reason=standby" in refused[0]
    assert f"addr=127.0.0.1:{newcomer_port}" in refused[0]
    for client in (alice, carol):
        client.close()


# --------------------------------------------------------------------------- errors


def test_socket_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "nowhere" / "control.sock")
    result = ctl(path, "status")
    assert result.status == 3
    assert result.err == (
        f"lanchatctl: no control socket at {path} (from --socket): lanchatd is not running, "
        "or it listens elsewhere. Start it (systemctl start lanchatd), or name its socket "
        "with --socket PATH or $LANCHAT_CONTROL_SOCKET.\n")
    result = ctl(None, "status", "--json", env={"LANCHAT_CONTROL_SOCKET": path})
    assert result.status == 3
    assert result.json()["error"]["name"] == "socket_missing"
    assert "from $LANCHAT_CONTROL_SOCKET" in result.err


def test_daemon_not_running_behind_a_stale_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)  # bound, never listening: what a crashed daemon leaves
    result = ctl(path, "rooms")
    assert result.status == 3
    assert result.err.startswith(f"lanchatctl: lanchatd is not running: nothing listens on "
                                 f"{path}")
    Path(path).unlink()
    Path(path).write_text("not a socket")
    result = ctl(path, "rooms")
    assert result.status == 3 and f"{path} is not a socket" in result.err


def serve_once(path: str, answer: Callable[[socket.socket], None]) -> threading.Thread:
    """A stand-in for a daemon we cannot start: another version, or another program."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                answer(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_version_mismatch(tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")

    def future_daemon(conn: socket.socket) -> None:
        _read_line(conn)
        conn.sendall(b'{"id":1,"ok":false,"error":{"code":104,"name":"unsupported_version",'
                     b'"message":"No control protocol version in common: this daemon '
                     b'speaks 2, 3, the client 1."}}\n')

    thread = serve_once(path, future_daemon)
    result = ctl(path, "status")
    thread.join(CTL_TIMEOUT)
    assert result.status == 5
    assert result.err.startswith(f"lanchatctl: version mismatch: lanchatd at {path} and this "
                                 "lanchatctl")
    assert "this daemon speaks 2, 3" in result.err
    assert "Use the lanchatctl installed with the running lanchatd" in result.err


def test_a_socket_that_speaks_something_else(tmp_path: Path) -> None:
    path = str(tmp_path / "other.sock")
    thread = serve_once(path, lambda conn: conn.sendall(b"220 mail.example ESMTP\r\n"))
    result = ctl(path, "status")
    thread.join(CTL_TIMEOUT)
    assert result.status == 5
    assert f"{path} answered something that is not the lanchat control protocol" in result.err


def test_a_daemon_that_does_not_answer(tmp_path: Path) -> None:
    path = str(tmp_path / "stuck.sock")
    release = threading.Event()
    thread = serve_once(path, lambda conn: release.wait(CTL_TIMEOUT))
    started = time.monotonic()
    result = ctl(path, "--timeout", "0.5", "status")
    release.set()
    thread.join(CTL_TIMEOUT)
    assert result.status == 3
    assert time.monotonic() - started < CTL_TIMEOUT
    assert f"lanchatd did not answer within 0.5 s on {path}" in result.err


def test_the_environment_variable_names_the_socket(daemon: Daemon) -> None:
    assert daemon.control
    result = ctl(None, "rooms", env={"LANCHAT_CONTROL_SOCKET": daemon.control})
    assert result.status == 0 and result.out == "No rooms are open.\n"


def test_the_module_and_the_console_script_agree() -> None:
    from lanchatctl import cli

    assert cli.main.__module__ == "lanchatctl.cli"
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    assert 'lanchatctl = "lanchatctl.cli:main"' in pyproject.read_text()
    version = subprocess.run([sys.executable, "-m", "lanchatctl", "--version"],
                             capture_output=True, text=True, env=env_with_repo(),
                             timeout=CTL_TIMEOUT)
    assert version.returncode == 0 and version.stdout.startswith("lanchatctl ")


def test_a_reader_that_goes_away_is_not_an_error(daemon: Daemon) -> None:
    """lanchatctl log --follow | head -n 1: the pipe closes, lanchatctl ends quietly."""
    assert daemon.control
    follower = subprocess.Popen(
        [sys.executable, "-m", "lanchatctl", "--socket", daemon.control, "log", "-n", "1",
         "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_with_repo())
    assert follower.stdout is not None and follower.stderr is not None
    assert b" start " in follower.stdout.readline()
    follower.stdout.close()
    for number in range(3):  # new entries to write into the closed pipe
        joined_json(daemon, "2468", f"reader{number}").close()
    assert follower.wait(CTL_TIMEOUT) == 0
    assert follower.stderr.read() == b""
    follower.stderr.close()

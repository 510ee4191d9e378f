"""Plain line mode end to end: the real client against the real daemon over loopback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lanchat_testing import Daemon, JsonClient
from test_client_support import ClientProcess, client_env, run_client


def server_arg(daemon: Daemon) -> list[str]:
    return ["--server", f"127.0.0.1:{daemon.tcp[1]}"]


def texts_from(client: JsonClient, sender: str, count: int) -> list[str]:
    """The next ``count`` room messages from ``sender`` (live or history), in order."""
    out: list[str] = []
    while len(out) < count:
        event = client.recv_until(lambda e: e["type"] == "message" and e["from"] == sender)
        out.append(event["text"])
    return out


def test_echo_pipe_delivers_and_exits_zero(daemon: Daemon, tmp_path: Path) -> None:
    with daemon.json_client() as watcher:
        watcher.join("1234", "watcher")
        result = run_client([*server_arg(daemon), "--pin", "1234", "--name", "ci"],
                            client_env(tmp_path), input="build done\n")
        assert result.returncode == 0, result.stderr
        assert texts_from(watcher, "ci", 1) == ["build done"]
        # stdout carries the room, as lines; our own line came back from the server.
        assert result.stdout.strip().endswith("ci: build done")
        assert "In room 1234 as ci" in result.stderr


def test_many_lines_arrive_in_order_under_the_rate_limit(
        start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    daemon = start_daemon("[limits]\nmessage_rate = 40.0\nmessage_burst = 3\n")
    lines = [f"line {i}" for i in range(25)]
    with daemon.json_client() as watcher:
        watcher.join("1234", "watcher")
        result = run_client([*server_arg(daemon), "--pin", "1234", "--username", "ci"],
                            client_env(tmp_path), input="\n".join(lines) + "\n")
        assert result.returncode == 0, result.stderr
        assert texts_from(watcher, "ci", len(lines)) == lines


def test_commands_in_plain_mode(daemon: Daemon, tmp_path: Path) -> None:
    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        result = run_client([*server_arg(daemon), "--pin", "1234", "--name", "ci"],
                            client_env(tmp_path),
                            input="/me waves\n/msg bob psst\n//literal slash\n/who\n")
        assert result.returncode == 0, result.stderr
        action = bob.recv_type("message")
        assert action["action"] is True and action["text"] == "waves"
        private = bob.recv_type("private")
        assert private["from"] == "ci" and private["text"] == "psst"
        assert bob.recv_type("message")["text"] == "/literal slash"
        assert "* In room 1234: bob, ci" in result.stdout


def test_undeliverable_lines_are_reported_and_the_rest_delivered(
        daemon: Daemon, tmp_path: Path) -> None:
    with daemon.json_client() as watcher:
        watcher.join("1234", "watcher")
        result = run_client(
            [*server_arg(daemon), "--pin", "1234", "--name", "ci"], client_env(tmp_path),
            input="first\n" + "x" * 2500 + "\n/msg nobody hi\n/bogus\nlast\n")
        assert result.returncode == 1
        assert texts_from(watcher, "ci", 2) == ["first", "last"]
        assert "Line 2 not sent" in result.stderr and "2000" in result.stderr
        # Refused by the server, after it left: still named by its line, as promised.
        assert "Line 3 not sent: Nobody called 'nobody'" in result.stderr
        assert "Line 4 not sent: unknown command /bogus" in result.stderr


def test_client_commands_in_plain_mode(daemon: Daemon, tmp_path: Path) -> None:
    with daemon.json_client() as bob:
        bob.join("1234", "bob")
        result = run_client([*server_arg(daemon), "--pin", "1234", "--name", "ci"],
                            client_env(tmp_path), input="/names\n/nick other\nstill ci\n")
        assert result.returncode == 1
        assert "* In room 1234: bob, ci" in result.stdout
        assert "Line 2 not sent: /nick works in the full-screen chat" in result.stderr
        assert texts_from(bob, "ci", 1) == ["still ci"]


def test_json_prints_protocol_events(daemon: Daemon, tmp_path: Path) -> None:
    result = run_client([*server_arg(daemon), "--pin", "1234", "--name", "ci", "--json"],
                        client_env(tmp_path), input="hello\n")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["welcome", "joined"]
    assert {"type": "message", "from": "ci", "text": "hello"}.items() <= events[2].items()


def test_missing_pin_without_a_terminal_names_the_option(daemon: Daemon,
                                                         tmp_path: Path) -> None:
    result = run_client([*server_arg(daemon), "--name", "ci"], client_env(tmp_path),
                        input="hello\n")
    assert result.returncode == 1
    assert "--pin" in result.stderr


def test_refused_pin_explains_the_rule(daemon: Daemon, tmp_path: Path) -> None:
    result = run_client([*server_arg(daemon), "--pin", "12", "--name", "ci"],
                        client_env(tmp_path), input="hello\n")
    assert result.returncode == 1
    assert "4 to 12 digits" in result.stderr and "--pin" in result.stderr


def test_taken_name_is_explained(daemon: Daemon, tmp_path: Path) -> None:
    with daemon.json_client() as bob:
        bob.join("1234", "CI")
        result = run_client([*server_arg(daemon), "--pin", "1234", "--name", "ci"],
                            client_env(tmp_path), input="hello\n")
    assert result.returncode == 1
    assert "The name 'ci' is already taken in this room. Choose another." in result.stderr
    assert "--name" in result.stderr


def test_server_in_standby_is_said_and_not_retried(start_daemon: Callable[..., Daemon],
                                                   tmp_path: Path) -> None:
    daemon = start_daemon(args=["--initial-state", "standby"])
    result = run_client([*server_arg(daemon), "--pin", "1234", "--name", "ci"],
                        client_env(tmp_path), input="hello\n")
    assert result.returncode == 1
    assert "standby" in result.stderr
    assert "Nothing was sent" in result.stderr


def test_no_server_at_the_address(tmp_path: Path, daemon: Daemon) -> None:
    port = daemon.tcp[1]
    daemon.stop()
    result = run_client(["--server", f"127.0.0.1:{port}", "--pin", "1234", "--name", "ci"],
                        client_env(tmp_path), input="hello\n")
    assert result.returncode == 1
    assert "Could not connect" in result.stderr and "refused" in result.stderr.lower()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_daemon_restart_mid_session_reconnects_rejoins_and_delivers(
        start_daemon: Callable[..., Daemon], tmp_path: Path, how: str) -> None:
    first = start_daemon()
    port = first.tcp[1]
    args = ["--server", f"127.0.0.1:{port}", "--pin", "1234", "--name", "ci"]
    with ClientProcess(args, client_env(tmp_path)) as client:
        with first.json_client() as watcher:
            watcher.join("1234", "watcher")
            client.write("before the restart\n")
            assert texts_from(watcher, "ci", 1) == ["before the restart"]
            # Delivered as far as the client knows too (the server echoed it back to it).
            client.wait_for("ci: before the restart", stream="out")
        if how == "stop":
            first.stop()  # SIGTERM: the daemon says goodbye to everyone
        else:
            first.kill()  # SIGKILL: the connections just end
        client.wait_for("Connection lost")
        client.write("typed while the server was down\n")
        second = start_daemon(args=["--port", str(port)])
        assert second.tcp[1] == port
        client.wait_for("Back in room 1234 as ci")
        with second.json_client() as watcher:
            joined = watcher.join("1234", "watcher")
            assert "ci" in joined["members"]  # back in the room without anyone doing anything
            client.write("after the restart\n")
            client.close_stdin()
            got = texts_from(watcher, "ci", 2)
        assert got == ["typed while the server was down", "after the restart"]
        code, out, err = client.finish()
        assert code == 0, err
        assert "ci: before the restart" in out and "ci: after the restart" in out


def test_last_server_is_remembered_and_used_when_discovery_finds_nothing(
        daemon: Daemon, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    first = run_client([*server_arg(daemon), "--pin", "1234", "--name", "ci"], env,
                       input="one\n")
    assert first.returncode == 0, first.stderr
    state = tmp_path / "state" / "lanchat" / "last-server.json"
    saved: dict[str, Any] = json.loads(state.read_text())
    assert saved["port"] == daemon.tcp[1] and saved["host"] == "127.0.0.1"
    # Discovery aimed where nobody answers: the remembered server is tried.
    from test_client_support import unused_udp_port

    with daemon.json_client() as watcher:
        watcher.join("1234", "watcher")
        second = run_client(["--discovery-address", "127.0.0.1", "--discovery-port",
                             str(unused_udp_port()), "--discovery-timeout", "0.3",
                             "--pin", "1234", "--name", "ci"], env, input="two\n")
        assert second.returncode == 0, second.stderr
        assert "trying the last server used" in second.stderr
        assert texts_from(watcher, "ci", 1) == ["two"]


def admin(daemon: Daemon, *args: str) -> None:
    """Run lanchatctl against the daemon's control socket."""
    import subprocess
    import sys

    from lanchat_testing import env_with_repo

    assert daemon.control is not None
    result = subprocess.run([sys.executable, "-m", "lanchatctl", "--socket", daemon.control,
                             *args], capture_output=True, text=True, env=env_with_repo(),
                            timeout=20)
    assert result.returncode == 0, result.stderr


def test_stopped_server_holds_lines_until_started_again(daemon: Daemon,
                                                        tmp_path: Path) -> None:
    args = [*server_arg(daemon), "--pin", "1234", "--name", "ci"]
    with ClientProcess(args, client_env(tmp_path)) as client, \
            daemon.json_client() as watcher:
        watcher.join("1234", "watcher")
        client.wait_for("In room 1234")
        admin(daemon, "stop")
        watcher.recv_type("state")
        client.write("while stopped\n")
        client.wait_for("your message waits")
        admin(daemon, "start")
        assert texts_from(watcher, "ci", 1) == ["while stopped"]
        client.close_stdin()
        code, _out, err = client.finish()
        assert code == 0, err


def test_kicked_client_is_told_why_and_does_not_come_back(daemon: Daemon,
                                                          tmp_path: Path) -> None:
    args = [*server_arg(daemon), "--pin", "1234", "--name", "ci"]
    with ClientProcess(args, client_env(tmp_path)) as client, \
            daemon.json_client() as watcher:
        watcher.join("1234", "watcher")
        client.wait_for("In room 1234")
        admin(daemon, "kick", "1234", "ci", "--reason", "spamming")
        code, _out, err = client.finish()
        assert code == 1
        # Said once, in the client's words, with the administrator's reason.
        assert "The administrator removed you from the room: spamming" in err
        assert err.count("removed") == 1
        watcher.send({"type": "who"})
        assert watcher.recv_type("members")["members"] == ["watcher"]


def test_a_regular_file_as_input(daemon: Daemon, tmp_path: Path) -> None:
    """A file cannot be watched by epoll; it is read as fast as the loop turns."""
    import subprocess
    import sys

    lines = [f"from a file {i}" for i in range(5)]
    source = tmp_path / "lines.txt"
    source.write_text("\n".join(lines))  # no newline after the last line
    with daemon.json_client() as watcher, source.open("rb") as stdin:
        watcher.join("1234", "watcher")
        result = subprocess.run(
            [sys.executable, "-m", "lanchat", *server_arg(daemon), "--pin", "1234",
             "--name", "ci"], stdin=stdin, capture_output=True, text=True,
            env=client_env(tmp_path / "home"), timeout=30)
        assert result.returncode == 0, result.stderr
        assert texts_from(watcher, "ci", len(lines)) == lines


def test_control_characters_from_a_hostile_server_never_reach_the_terminal(
        tmp_path: Path) -> None:
    """A server (not lanchatd) sending escape sequences in names and messages."""
    import socket
    import threading

    from lanchat.protocol import chat

    evil = "\x1b]0;owned\x07\x1b[2J\u202eevil"
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"LANCHAT/1 ready " + evil.encode() + b"\n")
            reader.readline()  # hello
            conn.sendall(chat.encode_json(chat.Welcome(1, "x", "id", evil, "active")))
            reader.readline()  # join
            conn.sendall(chat.encode_json(chat.Joined("1234", "ci", ("ci", evil)))
                         + chat.encode_json(chat.Message("1234", 1, 1.0, evil, evil))
                         + chat.encode_json(chat.Notice(1.0, evil)))
            reader.readline()  # quit
            conn.sendall(chat.encode_json(chat.Bye("quit", evil)))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        result = run_client(["--server", f"127.0.0.1:{listener.getsockname()[1]}",
                             "--pin", "1234", "--name", "ci"], client_env(tmp_path), input="")
    finally:
        server.join(10)
        listener.close()
    assert result.returncode == 0, result.stderr
    assert "\ufffd]0;owned" in result.stdout  # shown, but defused
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\x07" not in stream and "\u202e" not in stream


@pytest.mark.parametrize(("selector", "stdin"), [
    ("select", "select"),   # macOS: select() watches the terminal where kqueue cannot
    ("poll", "select"),
    ("select", "thread"),   # Windows: select() takes sockets only; a thread reads stdin
    ("default", "thread"),
])
def test_the_loop_with_each_selector_and_the_stdin_thread(
        daemon: Daemon, tmp_path: Path, selector: str, stdin: str) -> None:
    env = client_env(tmp_path, LANCHAT_SELECTOR=selector, LANCHAT_STDIN=stdin)
    args = [*server_arg(daemon), "--pin", "1234", "--name", "ci"]
    with daemon.json_client() as bob, ClientProcess(args, env) as client:
        bob.join("1234", "bob")
        client.wait_for("In room 1234 as ci")
        client.write("first line\n")
        assert texts_from(bob, "ci", 1) == ["first line"]
        bob.say("an answer")
        client.wait_for("bob: an answer", stream="out")
        client.write("second ")  # half a line waits for its end
        client.write("line\n/who\n")
        assert texts_from(bob, "ci", 1) == ["second line"]
        client.wait_for("* In room 1234: bob, ci", stream="out")
        client.close_stdin()
        code, _out, err = client.finish()
        assert code == 0, err
        left = bob.recv_until(lambda e: e["type"] == "presence" and e["event"] == "leave")
        assert left["name"] == "ci"


def test_the_stdin_thread_is_what_the_loop_watches(daemon: Daemon, tmp_path: Path) -> None:
    """In-process: with the reader thread, the selector never sees stdin itself."""
    import os
    import selectors

    from lanchat.client import joining, settings
    from lanchat.client.options import Options
    from lanchat.client.plain import PlainMode

    registered: list[object] = []

    class Recording(selectors.SelectSelector):
        def register(self, fileobj: Any, events: int, data: Any = None
                     ) -> selectors.SelectorKey:
            registered.append(fileobj)
            return super().register(fileobj, events, data)

    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"through the thread\n")
    os.close(write_fd)
    options = Options(pin="1234", name="ci", plain=True,
                      state_file=tmp_path / "last.json", settings=settings.Settings())
    with daemon.json_client() as bob, open(os.devnull, "w") as sink:
        bob.join("1234", "bob")
        collector = joining.Joiner()
        client = joining.make_client(joining.Target("127.0.0.1", daemon.tcp[1]), options,
                                     collector.emit, Recording())
        backlog = joining.join_room(client, collector, joining.TerminalPrompter(
            interactive=False), options)
        mode = PlainMode(client, options, stdin_fd=read_fd, stdout=sink, stderr=sink,
                         stdin_mode="thread")
        assert mode.run(backlog) == 0
        assert texts_from(bob, "ci", 1) == ["through the thread"]
    os.close(read_fd)
    assert read_fd not in registered
    assert mode._stdin_thread is not None and mode._stdin_thread.sock in registered

"""The control socket of a real daemon: who may use it, who may take it, what it survives.

Runs as root (the test machine's user) and drops to ``nobody`` in a forked child to
be an unprivileged administrator.
"""

from __future__ import annotations

import contextlib
import grp
import io
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from lanchat_testing import Daemon, DaemonError, JsonClient
from test_lanchatctl import ctl, joined_json, ok

from lanchatctl import cli

NOBODY = pwd.getpwnam("nobody")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")


def run_as(uid: int, gid: int, argv: list[str]) -> tuple[int, str, str, int]:
    """lanchatctl's main(argv) in a child that is uid:gid with no other groups.

    Returns (exit status, stdout, stderr, the child's pid).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = cli.main(argv)
            report = [status, out.getvalue(), err.getvalue()]
        except BaseException as exc:
            report = [99, "", f"{type(exc).__name__}: {exc}"]
        try:
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as reader:
        while True:
            chunk = reader.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
    os.waitpid(pid, 0)
    status, out, err = json.loads(b"".join(chunks))
    return status, out, err, pid


def control_group(name: str) -> str:
    return f'[control]\ncontrol_group = "{name}"\n'


# --------------------------------------------------------------------------- who may use it


def test_the_socket_is_0660_and_a_missing_group_is_said(start_daemon: Callable[..., Daemon]
                                                        ) -> None:
    daemon = start_daemon(control_group("lanchat-test-no-such-group"))
    assert daemon.control
    mode = os.stat(daemon.control).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    assert (f"the group 'lanchat-test-no-such-group' does not exist, so only root can use "
            f"the control socket {daemon.control}") in daemon.stderr()
    ok(daemon, "status")


@needs_root
def test_members_of_the_group_administer_without_sudo(start_daemon: Callable[..., Daemon],
                                                      open_dir: Path) -> None:
    path = str(open_dir / "control.sock")
    daemon = start_daemon(control_group("nogroup"), args=["--control-socket", path])
    st = os.stat(path)
    assert st.st_gid == NOBODY.pw_gid and stat.S_IMODE(st.st_mode) == 0o660
    assert "group" not in daemon.stderr()

    status, out, err, _pid = run_as(NOBODY.pw_uid, NOBODY.pw_gid,
                                    ["--socket", path, "status", "--json"])
    assert status == 0, err
    assert json.loads(out)["state"] == "active"
    status, out, err, pid = run_as(NOBODY.pw_uid, NOBODY.pw_gid,
                                   ["--socket", path, "announce", "from nobody"])
    assert status == 0, err
    entry = daemon.wait_for_log(lambda e: e["event"] == "announce")
    assert entry["actor"] == f"uid={NOBODY.pw_uid}(nobody) pid={pid}"


@needs_root
def test_permission_denied_names_the_group_that_grants_access(
        start_daemon: Callable[..., Daemon], open_dir: Path) -> None:
    path = str(open_dir / "control.sock")
    start_daemon(control_group("daemon"), args=["--control-socket", path])
    status, out, err, _pid = run_as(NOBODY.pw_uid, NOBODY.pw_gid,
                                    ["--socket", path, "standby"])
    assert status == 4
    assert out == ""
    assert err == (
        f"lanchatctl: permission denied on the control socket {path}: only root and members "
        "of group daemon may use it. Ask to be added to that group (sudo usermod -aG daemon "
        "$USER, then log in again), or run lanchatctl with sudo.\n")
    status, out, err, _pid = run_as(NOBODY.pw_uid, NOBODY.pw_gid,
                                    ["--socket", path, "--json", "rooms"])
    assert status == 4
    assert json.loads(out)["error"]["name"] == "permission_denied"


@needs_root
def test_without_a_lanchat_group_the_advice_is_never_to_join_group_root(
        start_daemon: Callable[..., Daemon], open_dir: Path) -> None:
    path = str(open_dir / "control.sock")
    start_daemon(control_group("lanchat-test-no-such-group"), args=["--control-socket", path])
    assert os.stat(path).st_gid == 0
    status, out, err, _pid = run_as(NOBODY.pw_uid, NOBODY.pw_gid,
                                    ["--socket", path, "status"])
    assert status == 4 and out == ""
    assert "usermod -aG root" not in err
    assert f"the control socket {path}: only root may use it (there is no lanchat group" in err
    assert "sudo groupadd --system lanchat" in err


@needs_root
def test_a_directory_the_caller_may_not_enter_is_permission_denied_too(
        daemon: Daemon) -> None:
    assert daemon.control  # in pytest's tmp_path, which only root may enter
    status, _out, err, _pid = run_as(NOBODY.pw_uid, NOBODY.pw_gid,
                                     ["--socket", daemon.control, "status"])
    assert status == 4
    assert f"permission denied on the control socket {daemon.control}" in err


# --------------------------------------------------------------------------- who may take it


def test_a_second_daemon_does_not_steal_a_live_socket(
        start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    first = start_daemon()
    assert first.control
    second = Daemon(tmp_path / "second", args=["--control-socket", first.control])
    with pytest.raises(DaemonError):
        second.start()
    assert second.proc is not None and second.proc.wait(10) == 1
    assert (f"another lanchatd (pid {first.pid}) is running and listens on the control "
            f"socket {first.control}; stop it first") in second.stderr()
    second.kill()
    result = ok(first, "status", "--json")
    assert result.json()["pid"] == first.pid


def test_a_stale_socket_is_replaced(start_daemon: Callable[..., Daemon],
                                    tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(path)  # what a daemon killed with SIGKILL leaves behind
    daemon = start_daemon(args=["--control-socket", path])
    assert f"replaced the stale control socket {path}" in daemon.stderr()
    assert ok(daemon, "status", "--json").json()["pid"] == daemon.pid


def test_a_path_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    daemon = Daemon(tmp_path / "d", args=["--control-socket", str(path)])
    with pytest.raises(DaemonError):
        daemon.start()
    daemon.kill()
    assert path.read_text() == "keep me"
    assert (f"cannot create the control socket {path}: the path exists and is not a socket"
            in daemon.stderr())


def test_the_socket_file_goes_away_with_the_daemon(daemon: Daemon) -> None:
    assert daemon.control
    assert os.path.exists(daemon.control)
    assert daemon.stop() == 0
    assert not os.path.exists(daemon.control)
    result = ctl(daemon.control, "status")
    assert result.status == 3 and "no control socket at" in result.err


# --------------------------------------------------------------------------- what it survives


class Raw:
    """A control connection that sends whatever it is told."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)  # blocking: waits while the daemon's accept queue is full
        self.sock.settimeout(10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def reply(self) -> dict[str, Any] | None:
        """The next line as JSON, or None at end of file."""
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def hello(self) -> dict[str, Any]:
        self.send(b'{"id":0,"cmd":"hello","versions":[1]}\n')
        reply = self.reply()
        assert reply is not None and reply["ok"], reply
        return reply

    def close(self) -> None:
        self.sock.close()


def chat_still_works(alice: JsonClient, bob: JsonClient, text: str) -> None:
    started = time.monotonic()
    alice.say(text)
    got = bob.recv_until(lambda o: o.get("type") == "message" and o.get("text") == text,
                         timeout=5)
    assert got["from"] == "alice"
    assert time.monotonic() - started < 5


def test_garbage_and_oversized_requests_while_clients_chat(daemon: Daemon) -> None:
    assert daemon.control
    alice = joined_json(daemon, "1234", "alice")
    bob = joined_json(daemon, "1234", "bob")
    alice.recv_type("presence")

    junk = Raw(daemon.control)
    junk.send(os.urandom(3000).replace(b"\n", b"") + b"\n\x00\xff{}\n[1,2]\n")
    first = junk.reply()
    assert first is not None and first["ok"] is False
    assert first["error"]["code"] == 100 and first["id"] is None
    chat_still_works(alice, bob, "after random bytes")

    oversized = Raw(daemon.control)
    oversized.hello()
    oversized.send(b'{"id":1,"cmd":"announce","text":"' + b"a" * 200_000)
    reply = oversized.reply()
    assert reply is not None and reply["error"]["name"] == "request_too_large"
    assert reply["error"]["message"] == "A request may be at most 65536 bytes; closing."
    assert oversized.reply() is None  # closed
    chat_still_works(alice, bob, "after an oversized request")

    flood = Raw(daemon.control)
    flood.hello()
    flood.send(b"not json\n" * 50)
    codes = []
    while (reply := flood.reply()) is not None:
        codes.append(reply["error"]["code"])
    assert codes == [100] * 10 + [105]  # ten answered, then closed for too many
    chat_still_works(alice, bob, "after a flood of bad lines")

    polite = Raw(daemon.control)
    polite.send(b'{"id":1,"cmd":"status"}\n')
    assert polite.reply() == {"id": 1, "ok": False, "error": {
        "code": 103, "name": "hello_required", "message":
        'The first request must be hello, e.g. {"id":1,"cmd":"hello","versions":[1]}.'}}
    polite.send(b'{"id":2,"cmd":"hello","versions":[9]}\n')
    refused = polite.reply()
    assert refused is not None and refused["error"]["name"] == "unsupported_version"
    assert polite.reply() is None
    nested = Raw(daemon.control)
    nested.hello()
    nested.send(b"[" * 60000 + b"\n" + b'{"id":3,"cmd":"frob"}\n' + b'{"id":4,"cmd":"rooms"}\n')
    too_deep = nested.reply()
    assert too_deep is not None and too_deep["error"]["message"] == (
        "The JSON is nested too deeply.")
    unknown = nested.reply()
    assert unknown is not None and unknown["id"] == 3 and unknown["error"]["code"] == 102
    assert nested.reply() == {"id": 4, "ok": True, "result": {"rooms": [
        ok(daemon, "rooms", "--json").json()["rooms"][0]]}}
    chat_still_works(alice, bob, "after everything")

    status = ok(daemon, "status", "--json").json()
    assert status["counters"]["messages"] == 4 and status["members"] == 2
    closed = [e for e in daemon.log_entries() if e["event"] == "control_closed"]
    assert sorted(e["reason"] for e in closed) == ["request_too_large", "too_many_errors",
                                                   "unsupported_version"]
    assert all(e["actor"].startswith("uid=0(root) pid=") for e in closed)
    for conn in (junk, oversized, flood, polite, nested):
        conn.close()
    alice.close()
    bob.close()


def test_many_control_connections_at_once_and_the_administrator_still_gets_in(
        daemon: Daemon) -> None:
    """Issue 11: 128 connections that say nothing used to lock the administrator out
    until their timeouts; now the newcomer takes the place of the one silent longest
    (one that never said hello before one that did)."""
    assert daemon.control
    conns = [Raw(daemon.control) for _ in range(100)]
    for conn in conns:
        conn.send(b'{"id":1,"cmd":"hello","versions":[1]}\n{"id":2,"cmd":"status"}\n')
    for conn in conns:
        hello = conn.reply()
        assert hello is not None and hello["result"]["version"] == 1
        status = conn.reply()
        assert status is not None and status["id"] == 2
    assert status["result"]["control_connections"] == 100

    # 128: every place taken.  The daemon accepts in order, so these are in before the
    # administrator's connection is.
    silent = [Raw(daemon.control) for _ in range(28)]
    admin = ctl(daemon, "status")  # at once, not after control_hello_timeout
    assert admin.status == 0, admin.err
    assert "Clients:" in admin.out
    told = silent[0].reply()  # the oldest of those that never said hello
    assert told is not None and told["error"]["name"] == "idle_timeout"
    assert "the one silent longest makes room" in told["error"]["message"]
    closed = daemon.wait_for_log(lambda e: e["event"] == "control_closed")
    assert closed["reason"] == "idle_timeout" and "no hello" in closed["detail"]
    conns[0].sock.settimeout(0.2)
    with pytest.raises(socket.timeout):  # the ones that said hello keep their places
        conns[0].reply()
    for conn in conns + silent:
        conn.close()


def test_log_followers_take_at_most_half_the_places(start_daemon: Callable[..., Daemon]
                                                    ) -> None:
    """Issue 11: 128 log followers used to lock the administrator out for as long as they
    followed; now at most half of the places follow, the next one is told busy, and the
    administrator gets in."""
    daemon = start_daemon("[control]\ncontrol_max_connections = 8\n")
    assert daemon.control
    followers = [Raw(daemon.control) for _ in range(5)]
    for conn in followers:
        conn.send(b'{"id":1,"cmd":"hello","versions":[1]}\n'
                  b'{"id":2,"cmd":"log","n":0,"follow":true}\n')
    answers = []
    for conn in followers:
        assert conn.reply() is not None  # hello
        answers.append(conn.reply())
    assert [a is not None and a.get("ok") for a in answers] == [True] * 4 + [False]
    refused = answers[-1]
    assert refused is not None and refused["error"]["name"] == "busy"
    assert refused["error"]["message"] == (
        "lanchatd already streams the log to 4 followers (half of control_max_connections); "
        "try again when one has stopped.")
    more = [Raw(daemon.control) for _ in range(4)]  # with the 4 followers: every place
    assert ctl(daemon, "status").status == 0  # a silent one made room
    follow = ctl(daemon, "log", "--follow", timeout=1.0)
    assert follow.status == 3 and "already streams the log to 4 followers" in follow.err
    for conn in followers + more:
        conn.close()


def test_a_log_follower_that_does_not_read_is_dropped(start_daemon: Callable[..., Daemon]
                                                     ) -> None:
    daemon = start_daemon("[log]\nlog_max_bytes = 100000000\n")  # one file: easy to read
    assert daemon.control
    alice = joined_json(daemon, "1234", "alice")
    bob = joined_json(daemon, "1234", "bob")
    alice.recv_type("presence")
    carol = joined_json(daemon, "9999", "carol")  # hears the announcements, and reads
    drain = threading.Thread(target=lambda: carol.read_all(timeout=60), daemon=True)
    drain.start()
    follower = Raw(daemon.control)
    follower.hello()
    follower.send(b'{"id":1,"cmd":"log","n":0,"follow":true}\n')
    started = follower.reply()
    assert started is not None and started["result"]["following"] is True
    # From here on the follower reads nothing.

    admin = Raw(daemon.control)
    admin.hello()
    count = 1200
    text = "x" * 1990
    request = b'{"id":%d,"cmd":"announce","room":"9999","text":"%s"}\n'
    sender = threading.Thread(target=lambda: admin.send(b"".join(
        request % (i, text.encode()) for i in range(count))), daemon=True)
    sender.start()
    for i in range(count):
        reply = admin.reply()
        assert reply is not None and reply["id"] == i and reply["ok"], reply
        if i % 200 == 0:
            chat_still_works(alice, bob, f"during the announcements ({i})")
    sender.join(10)

    dropped = daemon.wait_for_log(lambda e: e["event"] == "control_closed"
                                  and e["reason"] == "slow_reader")
    assert dropped["actor"].startswith("uid=0(root) pid=")
    assert "bytes of the log it follows were not read" in dropped["detail"]
    entries = 0
    while (item := follower.reply()) is not None:  # what was sent before the drop
        assert item["id"] == 1 and item["entry"]["seq"] > 0
        entries += 1
    assert 0 < entries < count
    # Left: the admin connection and the one asking.
    assert ok(daemon, "status", "--json").json()["control_connections"] == 2
    chat_still_works(alice, bob, "after the drop")
    for conn in (follower, admin):
        conn.close()
    carol.sock.shutdown(socket.SHUT_RDWR)  # ends the drain's read
    drain.join(10)
    for client in (alice, bob, carol):
        client.close()


def test_a_socket_handed_over_by_systemd_is_used_and_left_in_place(tmp_path: Path) -> None:
    """Socket activation: the daemon serves the inherited socket and never removes it."""
    path = str(tmp_path / "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o640)  # systemd's choice (SocketMode=), not the daemon's business
    listener.listen(16)
    daemon = Daemon(tmp_path / "d")
    daemon._stderr = open(daemon.stderr_path, "w")  # closed by the harness
    # As systemd does it: the socket as fd 3, LISTEN_PID naming the daemon's own pid.
    daemon.proc = subprocess.Popen(
        ["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', sys.executable, "-m", "lanchatd",
         *daemon.args],
        stdout=subprocess.PIPE, stderr=daemon._stderr, text=True, cwd=str(daemon.tmp),
        env={**daemon.env, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "control"},
        pass_fds=(3,), preexec_fn=lambda: os.dup2(listener.fileno(), 3))
    try:
        ready = daemon._read_ready()
        assert ready.endswith(f" control={path}")
        assert ok(path, "status", "--json").json()["addresses"]["control"] == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        assert daemon.stop() == 0
        assert os.path.exists(path)  # systemd's socket outlives the service
    finally:
        daemon.kill()
        listener.close()


# --------------------------------------------------------------------------- who may watch


@needs_root
def test_a_watch_group_may_look_but_not_act(start_daemon: Callable[..., Daemon],
                                           open_dir: Path) -> None:
    """control_group administers; control_watch_group reaches the socket through an ACL
    (its directory closed to others, as /run/lanchatd) and may only watch."""
    admins = grp.getgrnam("daemon").gr_gid
    directory = open_dir / "run"
    directory.mkdir(mode=0o750)
    os.chown(directory, -1, admins)  # as systemd makes /run/lanchatd: 0750, group lanchat
    path = str(directory / "control.sock")
    daemon = start_daemon('[control]\ncontrol_group = "daemon"\n'
                          'control_watch_group = "nogroup"\n', args=["--control-socket", path])
    assert "group" not in daemon.stderr()
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o750  # the ACL adds, hides nothing
    watcher = NOBODY.pw_uid, grp.getgrnam("nogroup").gr_gid
    for command in (["status"], ["rooms"], ["users"], ["log", "-n", "3"]):
        status, out, err, _pid = run_as(*watcher, ["--socket", path, *command])
        assert status == 0, (command, err)
    status, out, err, _pid = run_as(*watcher, ["--socket", path, "standby"])
    assert status == 4 and out == ""
    assert err == (f"lanchatctl: uid={NOBODY.pw_uid}(nobody) may watch lanchatd (status, "
                   "rooms, users, log) but not set_state: that takes membership of group "
                   "daemon.\n")
    status, out, _err, _pid = run_as(*watcher, ["--socket", path, "--json", "kick", "1", "x"])
    assert status == 4 and json.loads(out)["error"]["name"] == "watch_only"
    assert ok(daemon, "status", "--json").json()["state"] == "active"
    status, _out, err, _pid = run_as(NOBODY.pw_uid, admins, ["--socket", path, "standby"])
    assert status == 0, err  # a member of control_group administers
    assert ok(daemon, "status", "--json").json()["state"] == "standby"
    outsider = NOBODY.pw_uid, grp.getgrnam("nogroup").gr_gid + 1000
    status, _out, err, _pid = run_as(*outsider, ["--socket", path, "status"])
    assert status == 4 and "permission denied" in err


def _connects_as(uid: int, gid: int, path: str) -> str:
    """Try to connect to ``path`` from a child that is uid:gid (no other groups):
    "ok", or the error's name."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        outcome = "?"
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(path)
            outcome = "ok"
        except OSError as exc:
            outcome = type(exc).__name__
        finally:
            os.write(write_end, outcome.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        outcome = reader.read().decode()
    os.waitpid(pid, 0)
    return outcome


@needs_root
def test_an_ordinary_users_socket_is_not_shared_with_its_group(
        open_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: run as an ordinary user, the socket was 0660 with that user's primary
    group, and another member of the group stopped the server.  Now it is 0600."""
    from lanchatd import control

    system_path = str(open_dir / "system.sock")
    system = control.open_control_socket(system_path, "lanchat-test-no-such-group")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as an ordinary user's daemon
    user_path = str(open_dir / "user.sock")
    user = control.open_control_socket(user_path, "lanchat")
    monkeypatch.undo()
    try:
        assert stat.S_IMODE(os.stat(system_path).st_mode) == 0o660
        st = os.stat(user_path)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_gid == os.getgid()
        # Another member of the file's group: let in by a system daemon's socket (its
        # group's, and root's group here), kept out of an ordinary user's.
        assert _connects_as(4242, st.st_gid, system_path) == "ok"
        assert _connects_as(4242, st.st_gid, user_path) == "PermissionError"
    finally:
        system.close()
        user.close()

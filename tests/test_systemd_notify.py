"""lanchatd.systemd against real sockets: a datagram socket stands in for systemd's
notification socket, and socket activation hands real listening sockets to a real child
process the way systemd does (fork, move them to fds 3.., set LISTEN_*, exec)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lanchat_testing import socket_activated

from lanchatd.systemd import Notifier, listen_fds

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    """The service manager's end: a bound AF_UNIX datagram socket at a path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode("utf-8").split("\n")


def nothing_queued(sock: socket.socket) -> bool:
    """True if no datagram is waiting; otherwise takes one off the queue."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    return False


def test_without_notify_socket_nothing_is_enabled_or_sent() -> None:
    notifier = Notifier({})
    assert notifier.enabled is False
    assert notifier.watchdog_interval is None
    assert notifier.notify("READY=1") is False
    notifier.ready("serving")  # must not raise
    notifier.watchdog()


def test_ready_status_stopping_reach_the_manager(manager: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": manager.getsockname()})
    assert notifier.enabled is True
    notifier.ready("3 clients in 2 rooms")
    assert received(manager) == ["READY=1", "STATUS=3 clients in 2 rooms"]
    notifier.status("standby")
    assert received(manager) == ["STATUS=standby"]
    notifier.watchdog()
    assert received(manager) == ["WATCHDOG=1"]
    notifier.reloading(123456789)
    assert received(manager) == ["RELOADING=1", "MONOTONIC_USEC=123456789"]
    notifier.stopping()
    assert received(manager) == ["STOPPING=1"]
    notifier.close()


def test_status_text_with_newlines_stays_one_assignment(manager: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": manager.getsockname()})
    notifier.status("line one\nREADY=1")
    assert received(manager) == ["STATUS=line one READY=1"]


def test_malformed_assignments_are_refused_not_sent(manager: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": manager.getsockname()})
    assert notifier.notify("READY=1", "STATUS=a\nSTOPPING=1") is False
    assert notifier.notify("READY") is False
    assert notifier.notify() is False
    assert nothing_queued(manager)


def test_abstract_namespace_address() -> None:
    name = f"lanchat-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.notify("READY=1") is True
        assert received(sock) == ["READY=1"]
    finally:
        sock.close()


def test_unsupported_address_kind_is_disabled() -> None:
    assert Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled is False
    assert Notifier({"NOTIFY_SOCKET": "@"}).enabled is False


def test_manager_gone_returns_false_without_raising(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert notifier.enabled is True
    assert notifier.notify("READY=1") is False
    notifier.ready("serving")


def test_full_manager_queue_does_not_block(manager: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": manager.getsockname()})
    started = time.monotonic()
    for _ in range(100_000):
        if not notifier.notify("WATCHDOG=1"):
            break
    else:
        pytest.fail("100000 datagrams were all accepted by a manager that reads none")
    assert time.monotonic() - started < 5
    # Once the manager reads again, notifications flow again.
    while not nothing_queued(manager):
        pass
    assert notifier.notify("WATCHDOG=1") is True


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "me"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "ten seconds"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process(
    manager: socket.socket, environ: dict[str, str], interval: float | None
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": manager.getsockname(), **environ})
    assert notifier.watchdog_interval == interval


def test_no_watchdog_without_a_manager_to_ping() -> None:
    assert Notifier({"WATCHDOG_USEC": "10000000"}).watchdog_interval is None


# --- socket activation -------------------------------------------------------------

# Runs in the child after the launcher has put the sockets on fds 3.. and exec'd it.
CHILD = r"""
import json, os, socket, sys
from lanchatd.systemd import listen_fds

socks = listen_fds()
report = {
    "names": [name for name, _ in socks],
    "families": [s.family.name for _, s in socks],
    "types": [s.type.name for _, s in socks],
    "inheritable": [os.get_inheritable(s.fileno()) for _, s in socks],
    "env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    "again": len(listen_fds()),
}
print(json.dumps(report), flush=True)
named = dict(socks)
conn, _ = named["chat"].accept()
conn.sendall(b"chat served by " + str(os.getpid()).encode() + b"\n")
conn.close()
data, peer = named["discovery"].recvfrom(100)
named["discovery"].sendto(data.upper(), peer)
conn, _ = named["control"].accept()
conn.sendall(b"control\n")
conn.close()
"""

def test_listen_fds_takes_sockets_passed_by_the_manager(tmp_path: Path) -> None:
    chat = socket.create_server(("127.0.0.1", 0))
    discovery = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    discovery.bind(("127.0.0.1", 0))
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(str(tmp_path / "control.sock"))
    control.listen()
    child = socket_activated((chat, discovery, control), ("chat", "discovery", "control"),
                             ["-c", CHILD], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        report = json.loads(child.stdout.readline())
        assert report == {
            "names": ["chat", "discovery", "control"],
            "families": ["AF_INET", "AF_INET", "AF_UNIX"],
            "types": ["SOCK_STREAM", "SOCK_DGRAM", "SOCK_STREAM"],
            "inheritable": [False, False, False],
            "env_left": [],
            "again": 0,
        }
        with socket.create_connection(chat.getsockname(), timeout=10) as conn:
            assert conn.makefile("rb").readline() == f"chat served by {child.pid}\n".encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(10)
            probe.sendto(b"discover_server", discovery.getsockname())
            assert probe.recv(100) == b"DISCOVER_SERVER"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(tmp_path / "control.sock"))
            assert conn.makefile("rb").readline() == b"control\n"
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for s in (chat, discovery, control):
            s.close()


def test_sockets_meant_for_another_process_are_left_alone() -> None:
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "3"}
    assert listen_fds(environ, unset=False) == []
    assert listen_fds({}, unset=False) == []


def test_unnamed_sockets_are_called_unknown() -> None:
    # A socket unit without FileDescriptorName= passes no names (or too few).
    code = r"""
import json
from lanchatd.systemd import listen_fds
print(json.dumps([name for name, _ in listen_fds()]))
"""
    with (
        socket.create_server(("127.0.0.1", 0)) as one,
        socket.create_server(("127.0.0.1", 0)) as two,
    ):
        for names in ((), ("chat",)):
            child = socket_activated((one, two), names, ["-c", code],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = child.communicate(timeout=30)
            assert child.returncode == 0, err
            assert json.loads(out) == ["unknown", "unknown"]


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"LISTEN_PID": "self", "LISTEN_FDS": "1"}, "LISTEN_PID is not a process id: 'self'"),
        ({"LISTEN_FDS": "three"}, "LISTEN_FDS is not a number: 'three'"),
        ({"LISTEN_FDS": "-1"}, "LISTEN_FDS is negative: -1"),
    ],
)
def test_malformed_environment_is_named(environ: dict[str, str], problem: str) -> None:
    environ = {"LISTEN_PID": str(os.getpid()), **environ}
    with pytest.raises(ValueError) as error:
        listen_fds(environ, unset=False)
    assert str(error.value) == problem


def test_descriptor_that_is_closed_or_not_a_socket_is_named() -> None:
    # In a child whose fd 3 is a pipe, or whose fd 3 is a socket and fd 4 is closed,
    # as a wrong unit or a confused parent could cause.
    code = r"""
import os, socket
from lanchatd.systemd import listen_fds
for fd in range(3, 64):
    try:
        os.close(fd)
    except OSError:
        pass
pid = str(os.getpid())
r, w = os.pipe()
os.dup2(r, 3)
try:
    listen_fds({"LISTEN_PID": pid, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "chat"})
except ValueError as e:
    print(e)
sock = socket.socket()
os.dup2(sock.fileno(), 3)
os.close(4)
try:
    listen_fds({"LISTEN_PID": pid, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "chat:discovery"})
except ValueError as e:
    print(e)
"""
    child = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=30,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == [
        "LISTEN_FDS: file descriptor 3 (chat) is not a socket",
        "LISTEN_FDS: file descriptor 4 (discovery) is not open: Bad file descriptor",
    ]

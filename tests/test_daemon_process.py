"""The daemon as a process: readiness line, signals, reload, sd_notify, start-up errors.

Each test starts the real ``python -m lanchatd`` (tests/lanchat_testing.py) and waits
on what it does (a line, a log entry, a datagram, its exit), never on a fixed sleep.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from lanchat_testing import Daemon, DaemonError, env_with_repo, udp_query, with_short_pins

TIMEOUT = 10.0


def exit_status_within(daemon: Daemon, seconds: float) -> int:
    assert daemon.proc is not None
    start = time.monotonic()
    try:
        code = daemon.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        daemon.kill()
        pytest.fail(f"lanchatd still running {seconds} s after the signal")
    assert time.monotonic() - start <= seconds
    return code


def rewrite_config(daemon: Daemon, text: str) -> None:
    tmp = daemon.config_path.with_suffix(".new")
    tmp.write_text(with_short_pins(text))  # the PIN length the daemon started with
    os.replace(tmp, daemon.config_path)


def reload(daemon: Daemon) -> dict[str, object]:
    """SIGHUP, and wait until the daemon has logged the reload it caused."""
    done = {e["seq"] for e in daemon.log_entries() if e["event"].startswith("reload")}
    daemon.signal(signal.SIGHUP)
    return daemon.wait_for_log(lambda e: e["event"].startswith("reload")
                               and e["seq"] not in done)


# --------------------------------------------------------------------- readiness


def test_readiness_line_names_the_bound_addresses(daemon: Daemon) -> None:
    # The default discovery host is dual-stack: one IPv6 socket for IPv4 and IPv6.  The
    # web port comes after discovery, with the page's address for people.
    match = re.fullmatch(r"lanchatd ready tcp=127\.0\.0\.1:(\d+) udp=\[::\]:(\d+)"
                         r" http=127\.0\.0\.1:(\d+) page=http://127\.0\.0\.1:(\d+)/"
                         r" tls=127\.0\.0\.1:(\d+)"
                         r" fingerprint=(SHA256:[0-9a-f]{4}(?:-[0-9a-f]{4}){15})"
                         r"(?: control=(\S+))?", daemon.ready_line)
    assert match is not None, daemon.ready_line
    tcp_port, udp_port, http_port = (int(match.group(i)) for i in (1, 2, 3))
    assert 0 < tcp_port < 65536 and 0 < udp_port < 65536 and 0 < http_port < 65536
    assert int(match.group(4)) == http_port
    if match.group(7) is not None:
        assert match.group(7) == str(daemon.control_path)
    # The TLS port and its key's fingerprint (issue 13): what clients will pin.
    assert daemon.tls is not None and int(match.group(5)) == daemon.tls[1] != tcp_port
    assert match.group(6) == daemon.fingerprint
    assert daemon.text_client().greeting.startswith("LANCHAT/1 ready ")
    assert udp_query(("127.0.0.1", udp_port), b"DISCOVER_SERVER") == b"SERVER_HERE"
    # One line on stdout, and nothing else there.
    daemon.signal(signal.SIGTERM)
    assert exit_status_within(daemon, 5) == 0
    assert daemon.proc is not None and daemon.proc.stdout is not None
    assert daemon.proc.stdout.read() == ""
    start = daemon.log_entries()[0]
    assert start["event"] == "start"
    assert start["addresses"] == daemon.ready_line[len("lanchatd ready "):]


def test_readiness_line_brackets_an_ipv6_address(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(host="::1")
    assert re.match(r"lanchatd ready tcp=\[::1\]:\d+ ", daemon.ready_line)
    assert daemon.tcp[0] == "::1"
    client = daemon.json_client()
    assert client.join("1234", "six")["type"] == "joined"


def test_check_config_validates_and_exits(tmp_path: Path) -> None:
    env = env_with_repo({"XDG_RUNTIME_DIR": str(tmp_path)})
    good = tmp_path / "good.toml"
    good.write_text("[rooms]\nhistory = 10\n")
    result = subprocess.run(
        [sys.executable, "-m", "lanchatd", "--config", str(good), "--check-config"],
        capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"lanchatd: configuration OK ({good})\n", "")
    bad = tmp_path / "bad.toml"
    bad.write_text("[rooms]\nhistory = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "lanchatd", "--config", str(bad), "--check-config"],
        capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"lanchatd: {bad}:2: [rooms] history: must be at least 0, not -1\n"


@pytest.mark.parametrize(("config", "args", "message"), [
    ("[limits]\nmax_line_bytes = 0\n", [],
     ":2: [limits] max_line_bytes: must be at least 1, not 0"),
    ("[limits]\nmax_conections = 5\n", [],
     ":2: [limits] max_conections: unknown key; did you mean 'max_connections'?"),
    ("[server]\ninitial_state = \"paused\"\n", [],
     ":2: [server] initial_state: must be one of active, standby, stopped, not \"paused\""),
    ("[discovery]\ndiscovery_allow = [\"10.0.0.0/33\"]\n", [], "discovery_allow"),
    ("", ["--initial-state", "asleep"], "argument --initial-state: invalid choice"),
])
def test_config_errors_at_start_exit_non_zero_naming_the_key(
        start_daemon: Callable[..., Daemon], config: str, args: list[str], message: str) -> None:
    with pytest.raises(DaemonError) as info:
        start_daemon(config, args=args)
    assert "before it was ready" in str(info.value)
    assert message in str(info.value)


def test_a_port_in_use_is_a_clear_error(start_daemon: Callable[..., Daemon]) -> None:
    first = start_daemon()
    with pytest.raises(DaemonError) as info:
        start_daemon(args=["--port", str(first.tcp[1])])
    assert (f"cannot bind the TCP chat socket to 127.0.0.1:{first.tcp[1]}: Address already "
            "in use (choose another address or --port)") in str(info.value)
    assert "lanchatd exited (1)" in str(info.value)


def test_a_discovery_port_in_use_is_a_clear_error_not_a_shared_port(
        start_daemon: Callable[..., Daemon]) -> None:
    first = start_daemon()
    with pytest.raises(DaemonError) as info:
        start_daemon(args=["--discovery-port", str(first.udp[1])])
    assert (f"cannot bind the UDP discovery socket to [::]:{first.udp[1]}: Address "
            "already in use (choose another address or --discovery-port)") in str(info.value)
    assert udp_query(("127.0.0.1", first.udp[1]), b"DISCOVER_SERVER") == b"SERVER_HERE"


# --------------------------------------------------------------------- stopping


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_says_goodbye_and_exits_0_within_2_s(
        daemon: Daemon, signum: int) -> None:
    program = daemon.json_client()
    program.join("1234", "program")
    person = daemon.text_client()
    person.join("1234", "person")
    waiting = daemon.text_client()  # connected, not in a room
    daemon.signal(signum)
    assert exit_status_within(daemon, 2.0) == 0
    events = program.read_all()
    assert events[-1] == ('{"type":"bye","reason":"shutdown",'
                          '"message":"The server is shutting down."}')
    assert person.read_all()[-1] == "! The server is shutting down."
    assert waiting.read_all()[-1] == "! The server is shutting down."  # plain text: silent so far
    entries = daemon.log_entries()
    assert entries[-1]["event"] == "stop"
    assert {"event": "signal", "signal": signal.Signals(signum).name}.items() <= next(
        e for e in entries if e["event"] == "signal").items()
    leaves = {e["name"]: e["reason"] for e in entries if e["event"] == "leave"}
    assert leaves == {"program": "server shutdown", "person": "server shutdown"}


def test_stop_is_not_held_up_by_a_client_that_does_not_read(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[limits]\noutput_buffer_bytes = 50000000\nmessage_rate = 100000.0\n"
                          "message_burst = 100000\n")
    stuck = socket.create_connection(daemon.tcp, timeout=TIMEOUT)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b'{"type":"hello","versions":[1]}\n'
                  b'{"type":"join","pin":"1234","name":"stuck"}\n')
    sender = daemon.json_client()
    sender.join("1234", "sender")
    text = "x" * 1900
    for seq in range(1, 4001):  # about 8 MB for the stuck one, more than the kernel holds
        sender.say(text)
        sender.recv_until(lambda e, n=seq: e.get("seq") == n)
    daemon.signal(signal.SIGTERM)
    assert exit_status_within(daemon, 2.0) == 0
    stuck.close()


# --------------------------------------------------------------------- reload


def test_sighup_reloads_history(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[rooms]\nhistory = 5\n")
    talker = daemon.json_client()
    talker.join("1234", "talker")
    talker.say("before the reload")
    early = daemon.json_client()
    early.join("1234", "early")
    assert early.recv_type("message")["history"] is True
    rewrite_config(daemon, "[rooms]\nhistory = 0\n")
    entry = reload(daemon)
    assert (entry["event"], entry["actor"], entry["changed"]) == ("reload", "SIGHUP",
                                                                  ["history"])
    late = daemon.json_client()
    late.join("1234", "late")
    talker.say("after the reload")
    assert late.recv_type("message")["text"] == "after the reload"  # and no history first


def test_sighup_reloads_text_language(daemon: Daemon) -> None:
    member = daemon.text_client()
    member.join("1234", "ola")
    rewrite_config(daemon, "[server]\ntext_language = \"nb\"\n")
    reload(daemon)
    newcomer = daemon.text_client()
    assert newcomer.greeting.endswith("Skriv inn PIN for rommet:")
    newcomer.send_line("1234")
    assert newcomer.read_line() == "Skriv inn brukernavn:"
    newcomer.send_line("kari")
    assert newcomer.read_line() == ("* Du er i rom 1234 som kari. Her: kari, ola. "
                                    "Skriv /help for kommandoer.")
    assert member.read_until(lambda line: "kari" in line).endswith("--> kari ble med")
    member.send_line("/nope")
    assert member.read_line() == "! Ukjent kommando /nope. Skriv /help for kommandoer."


def test_sighup_reloads_message_rate(daemon: Daemon) -> None:
    sender = daemon.json_client()
    sender.join("1234", "sender")
    for i in range(6):
        sender.say(f"free {i}")
    assert [sender.recv_type("message")["seq"] for _ in range(6)] == [1, 2, 3, 4, 5, 6]
    rewrite_config(daemon, "[limits]\nmessage_rate = 0.5\nmessage_burst = 1\n")
    entry = reload(daemon)
    assert entry["changed"] == ["message_rate", "message_burst"]
    fresh = daemon.json_client()
    assert ((fresh.welcome or {})["rate"], (fresh.welcome or {})["burst"]) == (0.5, 1)
    fresh.join("1234", "fresh")
    fresh.say("one")
    fresh.say("two")
    live = fresh.recv_until(lambda e: e["type"] == "error" or (e["type"] == "message"
                            and not e.get("history")))
    assert live["text"] == "one"
    error = fresh.recv_until(lambda e: e["type"] == "error")
    assert error["code"] == "throttled"  # "two" waits: read at the reloaded rate
    assert "0.5 lines a second" in error["message"]


def test_sighup_with_a_broken_file_keeps_the_running_configuration(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("[rooms]\nhistory = 5\n")
    rewrite_config(daemon, "[rooms]\nhistory = \"lots\"\n")
    entry = reload(daemon)
    assert entry["event"] == "reload_failed"
    assert "[rooms] history: must be an integer" in str(entry["error"])
    assert "reload failed, configuration unchanged" in daemon.stderr()
    talker = daemon.json_client()
    talker.join("1234", "talker")
    talker.say("kept")
    late = daemon.json_client()
    late.join("1234", "late")
    assert late.recv_type("message")["history"] is True


def test_sighup_names_keys_that_need_a_restart(daemon: Daemon) -> None:
    rewrite_config(daemon, "[server]\nlisten_backlog = 16\n[rooms]\nhistory = 7\n")
    entry = reload(daemon)
    assert (entry["changed"], entry["needs_restart"]) == (["history"], ["listen_backlog"])
    assert "need a restart: listen_backlog" in daemon.stderr()


def test_sighup_reopens_the_log_file(daemon: Daemon) -> None:
    daemon.json_client().join("1234", "before")
    daemon.wait_for_log(lambda e: e["event"] == "join")
    rotated = daemon.log_file.with_name("activity.log.1")
    os.rename(daemon.log_file, rotated)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + TIMEOUT
    while not daemon.log_file.exists():
        assert time.monotonic() < deadline, "no new log file after SIGHUP"
        time.sleep(0.02)
    daemon.wait_for_log(lambda e: e["event"] == "reload")
    daemon.json_client().join("1234", "after")
    daemon.wait_for_log(lambda e: e["event"] == "join" and e["name"] == "after")
    old = rotated.read_text()
    assert '"name":"before"' in old and '"reload"' not in old and '"after"' not in old


# --------------------------------------------------------------------- sd_notify


@pytest.fixture
def manager() -> Iterator[socket.socket]:
    """A stand-in for systemd's notification socket (a short path: sun_path is small)."""
    directory = tempfile.mkdtemp(prefix="lcn", dir="/tmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(directory, "notify"))
    sock.settimeout(TIMEOUT)
    yield sock
    sock.close()
    shutil.rmtree(directory)


def next_datagram(manager: socket.socket, wanted: Callable[[list[str]], bool],
                  timeout: float = TIMEOUT) -> list[str]:
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no matching notification; got {seen[-20:]}")
        manager.settimeout(left)
        try:
            assignments = manager.recv(4096).decode().split("\n")
        except socket.timeout:
            continue
        if wanted(assignments):
            return assignments
        seen.append(assignments)


def test_sd_notify_ready_status_watchdog_reloading_stopping(
        start_daemon: Callable[..., Daemon], manager: socket.socket) -> None:
    daemon = start_daemon(env={"NOTIFY_SOCKET": manager.getsockname(),
                               "WATCHDOG_USEC": "200000"})
    ready = next_datagram(manager, lambda a: "READY=1" in a)
    assert ready == ["READY=1", "STATUS=active: 0 clients, 0 rooms, 0 messages"]
    for _ in range(3):
        next_datagram(manager, lambda a: a == ["WATCHDOG=1"], timeout=2.0)
    client = daemon.json_client()
    client.join("1234", "alice")
    client.say("one")
    next_datagram(manager, lambda a: a == ["STATUS=active: 1 clients, 1 rooms, 1 messages"])
    daemon.signal(signal.SIGHUP)
    reloading = next_datagram(manager, lambda a: "RELOADING=1" in a)
    assert re.fullmatch(r"MONOTONIC_USEC=\d+", reloading[1])
    assert next_datagram(manager, lambda a: "READY=1" in a)[1].startswith("STATUS=active: 1 ")
    daemon.signal(signal.SIGTERM)
    next_datagram(manager, lambda a: a == ["STOPPING=1"])
    assert exit_status_within(daemon, 2.0) == 0


def test_no_watchdog_pings_unless_asked(
        start_daemon: Callable[..., Daemon], manager: socket.socket) -> None:
    daemon = start_daemon(env={"NOTIFY_SOCKET": manager.getsockname()})
    next_datagram(manager, lambda a: "READY=1" in a)
    client = daemon.json_client()
    client.join("1234", "alice")
    # A status change takes up to 2 s to be sent: by then 10 pings would have gone out.
    seen: list[list[str]] = []
    next_datagram(manager, lambda a: bool(seen.append(a)) or a[0].startswith("STATUS=active: 1"))
    daemon.signal(signal.SIGTERM)
    next_datagram(manager, lambda a: bool(seen.append(a)) or a == ["STOPPING=1"])
    assert ["WATCHDOG=1"] not in seen


# --------------------------------------------------------------------- open files


def _open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line in /proc/PID/limits")


def test_a_daemon_started_from_a_shell_raises_its_open_files_limit(
        start_daemon: Callable[..., Daemon]) -> None:
    """A shell's soft limit (often 1,024) is below max_connections; the hard one is not."""
    import resource

    daemon = start_daemon(
        "[limits]\nmax_connections = 2000\n",
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 3000)))
    assert _open_files_limit(daemon.pid) == (2000 + 256, 3000)
    assert "max_connections" not in daemon.stderr()  # enough: nothing to warn about


def test_a_hard_limit_below_max_connections_is_said_on_stderr(
        start_daemon: Callable[..., Daemon]) -> None:
    import resource

    daemon = start_daemon(
        "[limits]\nmax_connections = 5000\n",
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, 1024)))
    assert _open_files_limit(daemon.pid) == (1024, 1024)
    assert ("max_connections is 5000, but this process may open only 1024 files"
            in daemon.stderr())

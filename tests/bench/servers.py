"""The servers under test, started the same way, and what /proc says about them.

``start_server("lanchatd", tmp)`` starts the real daemon through the tests' ``Daemon``
harness (port 0, temporary paths, readiness line) with ``BENCH_CONFIG``;
``start_server("relay", tmp)`` starts the bare relay (relay.py) and waits for its
readiness line the same way; ``start_server("ngircd", tmp)`` starts Debian's ngIRCd (a
C IRC server, the reference a LAN chat server is compared with) on loopback with a
configuration of its own in ``tmp`` (``NGIRCD_CONFIG``: flood penalties off), in the
foreground, and stops it by PID.  All have ``tcp``, ``udp``, ``pid`` and ``stop()``.
"""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Union

from lanchat_testing import Daemon, _parse_addr, env_with_repo

RELAY = Path(__file__).resolve().parent / "relay.py"
READY_TIMEOUT = 20.0

# The benchmark configuration: every limit that would stop a load generator on one
# address is raised out of the way, and nothing else changes.  Rate limits stay in the
# code path (the bucket is still taken for every message), they just never refuse.
# keepalive_interval is raised so that no ping lands in the middle of a measured stream.
BENCH_CONFIG = """\
[discovery]
discovery_host = "127.0.0.1"
discovery_rate = 1000000.0
discovery_burst = 1000000

[limits]
message_rate = 1000000000.0
message_burst = 1000000000
output_buffer_bytes = 268435456
max_connections = 30000
max_connections_per_address = 30000
join_rate = 1000000.0
join_burst = 1000000
connection_rate = 1000000.0
connection_burst = 1000000
keepalive_interval = 600.0
"""


def raise_nofile(wanted: int | None = None) -> int:
    """Raise the soft RLIMIT_NOFILE (to the hard limit, or ``wanted``); returns it.

    Servers started afterwards inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else min(wanted, hard)
    if hard == resource.RLIM_INFINITY and wanted is None:
        target = 1 << 20
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class Relay:
    """The bare relay (relay.py) as a child process."""

    kind = "relay"

    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[str] | None = None
        self.tcp: tuple[str, int] = ("", 0)
        self.udp: tuple[str, int] = ("", 0)
        self.ready_line = ""

    def start(self) -> Relay:
        self._stderr = open(self.tmp / "relay-stderr.txt", "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(RELAY), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env_with_repo(),
        )
        self.ready_line = read_ready(self.proc, "relay ready ")
        fields = dict(part.split("=", 1) for part in self.ready_line.split()[2:])
        self.tcp = _parse_addr(fields["tcp"])
        self.udp = _parse_addr(fields["udp"])
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


class Lanchatd:
    """lanchatd with the benchmark configuration, through the tests' Daemon harness.

    With ``profile`` (a path), the daemon runs under cProfile and writes its statistics
    there when it stops.
    """

    kind = "lanchatd"

    def __init__(self, tmp: Path, config: str = BENCH_CONFIG,
                 env: dict[str, str] | None = None, profile: str | None = None,
                 args: list[str] | None = None) -> None:
        if profile:
            self.daemon: Daemon = Daemon(Path(tmp), config=config, env=env, args=args,
                                         python_args=["-m", "cProfile", "-o", profile])
        else:
            self.daemon = Daemon(Path(tmp), config=config, env=env, args=args)

    def start(self) -> Lanchatd:
        self.daemon.start()
        return self

    @property
    def tcp(self) -> tuple[str, int]:
        return self.daemon.tcp

    @property
    def udp(self) -> tuple[str, int]:
        return self.daemon.udp

    @property
    def pid(self) -> int:
        return self.daemon.pid

    @property
    def ready_line(self) -> str:
        return self.daemon.ready_line

    def stop(self) -> None:
        self.daemon.__exit__(None, None, None)


# ngIRCd's configuration for the benchmark, the counterpart of BENCH_CONFIG: every limit
# that would stop a load generator on one address is lifted (connections per address,
# channels per user, nick length for the bench's names) and its flood protection is off:
# MaxPenaltyTime = 0 (no penalty time, so no client's commands are delayed), and the
# senders log in as the operator below and set user mode F (10 commands per pass of its
# loop instead of 3, never throttled; load.py).  No DNS, ident or PAM lookups on
# connect; pings far apart, as lanchatd's keep-alive.  What is left is ngIRCd's design:
# a listen backlog of 10 (a burst of connects waits for SYN retransmits) and a write
# buffer of 32 KiB per client (a receiver further behind is disconnected).
NGIRCD_CONFIG = """\
[Global]
Name = bench.lanchat.test
Info = lanchat benchmark reference
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = bench
PidFile = {tmp}/ngircd.pid

[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600

[Options]
DNS = no
Ident = no
PAM = no

[Operator]
Name = bench
Password = bench
"""
NGIRCD = "/usr/sbin/ngircd"


def ngircd_path() -> str:
    """Where ngIRCd is, or a RuntimeError that says how to get it."""
    found = shutil.which("ngircd") or (NGIRCD if os.access(NGIRCD, os.X_OK) else None)
    if not found:
        raise RuntimeError("ngIRCd is not installed: the benchmark measures lanchatd beside "
                           "it (Debian: apt-get install ngircd)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now (ngIRCd cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Ngircd:
    """ngIRCd in the foreground (``-n``) with ``NGIRCD_CONFIG`` in ``tmp``.

    It has no UDP discovery: ``udp`` is ``("", 0)``.
    """

    kind = "ngircd"

    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.tcp: tuple[str, int] = ("", 0)
        self.udp: tuple[str, int] = ("", 0)
        self.ready_line = ""

    def start(self) -> Ngircd:
        binary = ngircd_path()
        # Started as root, ngIRCd reads its configuration and then runs as "nobody"; the
        # PID file it then cannot write is not needed (we hold the PID).
        os.chmod(self.tmp, 0o755)
        for _attempt in range(5):  # the free port may be taken between test and bind
            port = free_port()
            conf = self.tmp / "ngircd.conf"
            conf.write_text(NGIRCD_CONFIG.format(port=port, tmp=self.tmp), encoding="utf-8")
            # Its log (a line per connection) goes to a file: a pipe nobody reads would
            # fill and stop it.  lanchatd writes its activity log to a file too.
            log = self.tmp / "ngircd-log.txt"
            with open(log, "w") as out:
                self.proc = subprocess.Popen([binary, "-n", "-f", str(conf)], stdout=out,
                                             stderr=subprocess.STDOUT)
            self.ready_line = _wait_log(self.proc, log, " ready.")
            if self.ready_line:
                self.tcp = ("127.0.0.1", port)
                return self
            self.stop()
        raise RuntimeError("ngIRCd did not start (see its output in the benchmark's "
                           "temporary directory)")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _wait_log(proc: subprocess.Popen[bytes], log: Path, match: str,
              timeout: float = READY_TIMEOUT) -> str:
    """The line of ``log`` that holds ``match`` once ``proc`` writes it; "" if ``proc``
    exits first (its port was taken); RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                if match in line:
                    return line.strip()
        if proc.poll() is not None:
            return ""
        time.sleep(0.01)  # polling a log file for the readiness line, bounded above
    raise RuntimeError(f"ngIRCd not ready within {timeout} s (see {log})")


Server = Union[Lanchatd, Relay, Ngircd]
KINDS = ("relay", "lanchatd", "ngircd")


def start_server(kind: str, tmp: Path, profile: str | None = None) -> Server:
    server: Server
    if kind == "lanchatd":
        server = Lanchatd(tmp, profile=profile)
    elif kind == "ngircd":
        server = Ngircd(tmp)
    else:
        server = Relay(tmp)
    return server.start()


def read_ready(proc: subprocess.Popen[str], prefix: str,
               timeout: float = READY_TIMEOUT) -> str:
    """The readiness line ``proc`` prints on stdout, waiting at most ``timeout`` s."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                continue
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{prefix.split()[0]} exited ({proc.wait()}) before "
                                   "it was ready")
            if line.startswith(prefix):
                return line.strip()
    finally:
        sel.close()
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{prefix.split()[0]} not ready within {timeout} s")


# ----------------------------------------------------------------------------- /proc

def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (VmRSS in /proc/PID/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields: list[str] = f.read().rpartition(")")[2].split()
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def wait_quiet(pid: int, settle: float = 0.3, timeout: float = 10.0) -> None:
    """Wait until ``pid`` uses (almost) no CPU for ``settle`` seconds, at most ``timeout``."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(settle)  # sampling a process's CPU counter, bounded by the deadline
        now = cpu_seconds(pid)
        if now - last < 0.02:
            return
        last = now

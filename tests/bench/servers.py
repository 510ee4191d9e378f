"""The two servers under test, started the same way, and what /proc says about them.

``start_server("lanchatd", tmp)`` starts the real daemon through the tests' ``Daemon``
harness (port 0, temporary paths, readiness line) with ``BENCH_CONFIG``;
``start_server("relay", tmp)`` starts the bare relay (relay.py) and waits for its
readiness line the same way.  Both have ``tcp``, ``udp``, ``pid`` and ``stop()``.
"""

from __future__ import annotations

import os
import resource
import selectors
import signal
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
                 env: dict[str, str] | None = None, profile: str | None = None
                 ) -> None:
        if profile:
            self.daemon: Daemon = Daemon(Path(tmp), config=config, env=env,
                                         python_args=["-m", "cProfile", "-o", profile])
        else:
            self.daemon = Daemon(Path(tmp), config=config, env=env)

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


Server = Union[Lanchatd, Relay]
KINDS = ("relay", "lanchatd")


def start_server(kind: str, tmp: Path, profile: str | None = None) -> Server:
    server: Server = Lanchatd(tmp, profile=profile) if kind == "lanchatd" else Relay(tmp)
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

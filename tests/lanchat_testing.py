"""Start the real daemon and talk to it over loopback, for the integration tests.

``Daemon`` starts ``python -m lanchatd`` on port 0 (TCP chat, UDP, TCP web) with a temporary
state directory, log file and control socket, and waits for its readiness line (never
for a fixed sleep).  ``TextClient`` and ``JsonClient`` are small blocking clients with
timeouts, enough to act as people in a room.  ``socket_activated`` starts a process as
systemd starts a socket-activated service, and ``PlainOwner`` stands in for the loop where
a test drives the core through a plain-TCP transport without one.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 20.0
DEFAULT_TIMEOUT = 10.0


class DaemonError(RuntimeError):
    pass


def _parse_addr(text: str) -> tuple[str, int]:
    """An address of the readiness line as one to send to: a socket bound to every
    interface (0.0.0.0, or [::], the dual-stack default) is reached on loopback."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), int(port)


def as_if_at_a_terminal() -> None:
    """For a child that a test interrupts as a person would (Ctrl-C, SIGINT): start it
    with SIGINT's default disposition.  A test run started with SIGINT ignored (nohup,
    ``cmd &`` in a script) would otherwise pass SIG_IGN on across exec, and Python then
    never raises KeyboardInterrupt in the child.  For ``preexec_fn`` and forked children.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def env_with_repo(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                "LISTEN_FDNAMES", "RUNTIME_DIRECTORY", "STATE_DIRECTORY", "LOGS_DIRECTORY",
                "CONFIGURATION_DIRECTORY", "LANCHAT_CONTROL_SOCKET"):
        env.pop(key, None)
    if extra:
        env.update(extra)
    return env


#: The PIN length the tests' daemons allow unless a test sets its own: four digits, so
#: that PINs such as "1234" read as PINs in the tests.  The shipped default is six
#: (tests/test_config.py and the replays of docs/protocol.md check it).
TEST_PIN_MIN = 4


def with_short_pins(config: str) -> str:
    """``config`` (TOML text) with ``pin_min_length = TEST_PIN_MIN`` in its [rooms]
    section, unless it sets a PIN length itself."""
    if "pin_min_length" in config:
        return config
    line = f"pin_min_length = {TEST_PIN_MIN}\n"
    if "[rooms]\n" in config:
        return config.replace("[rooms]\n", "[rooms]\n" + line, 1)
    if config and not config.endswith("\n"):
        config += "\n"
    return config + "[rooms]\n" + line


# Does what systemd does between fork and exec: moves the passed fds to 3, 4, ..., sets
# LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, then runs Python with the rest of argv.
_SOCKET_ACTIVATION = r"""
import os, sys
fds = [int(x) for x in sys.argv[1].split(",")]
for target, fd in enumerate(fds, start=3):
    os.dup2(fd, target, inheritable=True)
for fd in fds:
    if fd >= 3 + len(fds):
        os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_FDNAMES"] = sys.argv[2]
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""


def socket_activated(socks: Sequence[socket.socket], names: Sequence[str],
                     python_args: Sequence[str], **popen: Any) -> subprocess.Popen[str]:
    """Start ``python PYTHON_ARGS`` as systemd starts a socket-activated service: ``socks``
    at fds 3, 4, ... under ``names``.  ``popen``: more arguments for ``subprocess.Popen``
    (the environment is ``env_with_repo()`` unless given)."""
    import fcntl

    # Duplicates above the range the launcher moves fds into, so none is overwritten.
    fds = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 20) for s in socks]
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _SOCKET_ACTIVATION, ",".join(map(str, fds)),
             ":".join(names), *python_args],
            pass_fds=fds, text=True, **{"env": env_with_repo(), **popen})
    finally:
        for fd in fds:
            os.close(fd)


class PlainOwner:
    """A plain-TCP ``LineTransport``'s owner, for a harness that drives the core without
    a loop and writes nothing back: a Telnet command's answer (want_write) is not needed
    to drive the core, and plain TCP never closes a connection itself nor sets a timer."""

    def want_write(self) -> None:
        pass

    def close(self, reason: str) -> None:
        raise AssertionError(f"plain TCP closed the connection itself: {reason}")

    def call_later(self, delay: float, callback: Any) -> Any:
        raise AssertionError("plain TCP needs no timer")


class Daemon:
    """A running lanchatd.  Use as a context manager, or call start()/stop()."""

    def __init__(self, tmp: Path, config: str = "", args: list[str] | None = None,
                 env: dict[str, str] | None = None, host: str = "127.0.0.1",
                 preexec_fn: Callable[[], None] | None = None,
                 python_args: Sequence[str] = ()) -> None:
        """``python_args`` go before ``-m lanchatd`` (e.g. ``-m cProfile -o FILE``)."""
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.config_path = self.tmp / "lanchatd.toml"
        self.config_path.write_text(with_short_pins(config))
        self.log_file = self.tmp / "log" / "activity.log"
        self.state_dir = self.tmp / "state"
        self.control_path = self.tmp / "control.sock"
        self.args = [
            "--config", str(self.config_path), "--host", host, "--port", "0",
            "--discovery-port", "0", "--tls-port", "0", "--log-file", str(self.log_file),
            "--state-dir", str(self.state_dir), "--control-socket", str(self.control_path),
            # The browser client's port too, unless the test turns it off.
            *([] if "--no-http" in (args or []) else ["--http-port", "0"]),
            *(args or []),
        ]
        self.env = env_with_repo(env)
        self.preexec_fn = preexec_fn
        self.python_args = list(python_args)
        self.proc: subprocess.Popen[str] | None = None
        self.ready_line = ""
        self.tcp: tuple[str, int] = ("", 0)
        self.udp: tuple[str, int] = ("", 0)
        self.control: str | None = None
        self.tls: tuple[str, int] | None = None  # the TLS chat address, when served
        self.fingerprint: str | None = None  # of the TLS key
        self.http: tuple[str, int] | None = None  # the web port, when served
        self.page: str | None = None  # the page's address from the readiness line
        self.stderr_path = self.tmp / "stderr.txt"
        self._stderr = None

    def start(self) -> Daemon:
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, *self.python_args, "-m", "lanchatd", *self.args],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=self.env,
            cwd=str(self.tmp), preexec_fn=self.preexec_fn,
        )
        self.ready_line = self._read_ready()
        fields = dict(part.split("=", 1) for part in self.ready_line.split()[2:])
        # tcp= is absent with the plain port turned off; tls= and fingerprint= come
        # with TLS.
        self.tcp = _parse_addr(fields["tcp"]) if "tcp" in fields else ("", 0)
        self.udp = _parse_addr(fields["udp"])
        self.control = fields.get("control")
        self.tls = _parse_addr(fields["tls"]) if "tls" in fields else None
        self.fingerprint = fields.get("fingerprint")
        self.http = _parse_addr(fields["http"]) if "http" in fields else None
        self.page = fields.get("page")
        return self

    def _read_ready(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if not sel.select(deadline - time.monotonic()):
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    raise DaemonError(f"lanchatd exited ({self.proc.wait()}) before it was "
                                      f"ready; stderr:\n{self.stderr()}")
                if line.startswith("lanchatd ready "):
                    return line.strip()
        finally:
            sel.close()
        self.kill()
        raise DaemonError(f"lanchatd not ready within {READY_TIMEOUT} s; stderr:\n"
                          f"{self.stderr()}")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text()
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DaemonError(f"lanchatd did not stop within {timeout} s") from None
        self._close_files()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_files()

    def _close_files(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(DaemonError):
                self.stop()
        self.kill()

    # conveniences
    def text_client(self, **kw: Any) -> TextClient:
        return TextClient(self.tcp, **kw)

    def json_client(self, **kw: Any) -> JsonClient:
        return JsonClient(self.tcp, **kw)

    def log_entries(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        if self.log_file.exists():
            for line in self.log_file.read_text().splitlines():
                entries.append(json.loads(line))
        return entries

    def wait_for_log(self, pred: Callable[[dict[str, Any]], bool],
                     timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Wait until the activity log file holds an entry matching ``pred``."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.log_entries():
                if pred(entry):
                    return entry
            if time.monotonic() > deadline:
                raise AssertionError("no matching activity log entry; log:\n"
                                     + "\n".join(json.dumps(e) for e in self.log_entries()))
            time.sleep(0.02)  # polling a file the daemon writes; bounded by the deadline


class LineClient:
    """A blocking line-oriented TCP client with timeouts."""

    def __init__(self, addr: tuple[str, int], timeout: float = DEFAULT_TIMEOUT,
                 tls: bool = False) -> None:
        """``tls``: speak TLS (to the daemon's TLS port), trusting any key."""
        sock = socket.create_connection(addr, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        self.sock = sock
        self.timeout = timeout
        self.buf = b""
        self.closed = False

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_line(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\n")

    def read_line(self, timeout: float | None = None) -> str | None:
        """The next line, or None at end of file. Raises TimeoutError."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line within the timeout; have {self.buf[:200]!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"no line within the timeout; have {self.buf[:200]!r}") \
                    from None
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line.decode("utf-8", "replace")
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("utf-8").rstrip("\r")

    def read_until(self, pred: Callable[[str], bool], timeout: float | None = None) -> str:
        seen = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            line = self.read_line(max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"connection closed; lines seen: {seen}")
            if pred(line):
                return line
            seen.append(line)

    def read_all(self, timeout: float | None = None) -> list[str]:
        """Every line until the server closes the connection."""
        lines = []
        while True:
            line = self.read_line(timeout)
            if line is None:
                return lines
            lines.append(line)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TextClient(LineClient):
    """A person with nc."""

    def __init__(self, addr: tuple[str, int], **kw: Any) -> None:
        super().__init__(addr, **kw)
        self.greeting = self.read_line()

    def join(self, pin: str, name: str) -> str:
        self.send_line(pin)
        self.read_until(lambda s: "name" in s.lower())
        self.send_line(name)
        return self.read_until(lambda s: s.startswith("* You are in room"))


class JsonEvents:
    """What every test member speaking the JSON protocol does the same way, whatever
    carries its lines (TCP here, WebSocket in tests/web_testing.py)."""

    timeout: float

    def send(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        raise NotImplementedError

    def closed_detail(self) -> str:
        return "connection closed"

    def recv_until(self, pred: Callable[[dict[str, Any]], bool],
                   timeout: float | None = None) -> dict[str, Any]:
        seen = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            obj = self.recv(max(0.01, deadline - time.monotonic()))
            if obj is None:
                raise AssertionError(f"{self.closed_detail()}; events seen: {seen}")
            if pred(obj):
                return obj
            seen.append(obj)

    def recv_type(self, kind: str, timeout: float | None = None) -> dict[str, Any]:
        return self.recv_until(lambda o: o.get("type") == kind, timeout)

    def join(self, pin: str, name: str) -> dict[str, Any]:
        self.send({"type": "join", "pin": pin, "name": name})
        return self.recv_until(lambda o: o["type"] in ("joined", "error"))

    def say(self, text: str) -> None:
        self.send({"type": "say", "text": text})


class JsonClient(JsonEvents, LineClient):
    """A program speaking the JSON protocol."""

    def __init__(self, addr: tuple[str, int], hello: bool = True, **kw: Any) -> None:
        super().__init__(addr, **kw)
        self.greeting = self.read_line()
        self.welcome: dict[str, Any] | None = None
        if hello:
            self.send({"type": "hello", "versions": [1], "client": "tests"})
            self.welcome = self.recv()

    def send(self, obj: dict[str, Any]) -> None:
        self.send_line(json.dumps(obj))

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        line = self.read_line(timeout)
        return None if line is None else json.loads(line)



def udp_query(addr: tuple[str, int], payload: bytes, timeout: float = 2.0,
              source: str = "127.0.0.1") -> bytes | None:
    """Send one datagram and return the answer, or None if none came in time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(payload, addr)
        try:
            data, _ = s.recvfrom(4096)
        except socket.timeout:
            return None
        return data

"""Running the real ``lanchat`` client in tests (shared by the test_client* and test_tui*
modules; it holds no tests itself).

The client runs as ``python -m lanchat`` with the repository on its path and with HOME
and the XDG directories pointed into the test's temporary directory, so the settings
file and the remembered server are the test's own.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

from lanchat_testing import env_with_repo

TIMEOUT = 20.0


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a client whose user directories are under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    env = env_with_repo()
    for key in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG", "LANCHAT_CONFIG", "TMUX"):
        env.pop(key, None)
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "LC_ALL": "C.UTF-8",
    })
    env.update(extra)
    return env


def run_client(args: list[str], env: dict[str, str], input: str | None = "",
               timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lanchat", *args], input=input,
                          capture_output=True, text=True, env=env, timeout=timeout)


def unused_udp_port() -> int:
    """A UDP port on loopback where nothing listens (probes to it go unanswered)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ClientProcess:
    """A running client whose stdin we write and whose output we read with timeouts."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lanchat", *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.out = b""
        self.err = b""

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode("utf-8"))
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def _pump(self, timeout: float) -> bool:
        """Read what is available within ``timeout``; False when both pipes are closed."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        streams = [s for s in (self.proc.stdout, self.proc.stderr) if not s.closed]
        if not streams:
            return False
        with selectors.DefaultSelector() as sel:
            for stream in streams:
                sel.register(stream, selectors.EVENT_READ)
            for key, _ in sel.select(timeout):
                stream = key.fileobj
                data = os.read(stream.fileno(), 65536)  # type: ignore[union-attr]
                if not data:
                    stream.close()  # type: ignore[union-attr]
                elif stream is self.proc.stdout:
                    self.out += data
                else:
                    self.err += data
        return True

    def wait_for(self, text: str, stream: str = "err", timeout: float = TIMEOUT) -> str:
        """Wait until ``text`` appears on stderr (or stdout); returns that stream so far."""
        deadline = time.monotonic() + timeout
        while True:
            have = (self.err if stream == "err" else self.out).decode("utf-8", "replace")
            if text in have:
                return have
            left = deadline - time.monotonic()
            if left <= 0 or (not self._pump(min(left, 0.5)) and text not in have):
                raise AssertionError(f"{text!r} not seen on std{stream}; stdout:\n"
                                     f"{self.out.decode(errors='replace')}\nstderr:\n"
                                     f"{self.err.decode(errors='replace')}")

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, str, str]:
        """Wait for the exit; returns (status, stdout, stderr)."""
        deadline = time.monotonic() + timeout
        while self._pump(max(0.01, min(0.5, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("the client did not exit; stderr:\n"
                                     + self.err.decode(errors="replace"))
        code = self.proc.wait(max(0.1, deadline - time.monotonic()))
        return code, self.out.decode(), self.err.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ClientProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()

"""A throwaway machine: systemd booted as PID 1 in new namespaces on an overlay of /.

Theory of operation
-------------------
``Machine.boot()`` makes a cgroup (v2) of its own under the test's cgroup, and starts

    unshare --pid --fork --mount --net --uts --ipc --cgroup --propagation private \
        bash boot-init.sh SCRATCH CONSOLE FILES

from a child that first moved itself into that cgroup, so the new cgroup namespace is
rooted there and the machine's systemd manages that subtree only.  boot-init.sh (PID 1
of the new pid namespace) builds the root (overlayfs over the host's /, tmpfs /tmp and
/run, a minimal /dev), pivots into it and execs systemd.  Nothing is mounted in the
host's mount namespace, so nothing needs unmounting: when the machine's PID 1 dies, the
kernel kills everything in its pid namespace and the mounts go with the namespace.

Commands run inside with ``nsenter`` into the machine's namespaces (``Machine.run``).
``Machine.shutdown()`` asks systemd to power off (SIGRTMIN+4), and after a grace period
kills the machine's PID 1 by its host pid, which this object started and knows.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


class MachineError(Exception):
    pass


def _cgroup2_root() -> Path:
    """Where the cgroup v2 hierarchy is mounted on the host (unified or hybrid layout)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            separator = fields.index("-")
            if fields[separator + 1] == "cgroup2":
                return Path(fields[4])
    raise MachineError("no cgroup2 file system is mounted on this host (needed by systemd)")


def _own_cgroup2_path() -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    raise MachineError("this process is in no cgroup v2 group")


class Machine:
    def __init__(self, files: Path, workdir: Path) -> None:
        """files: a directory copied into the machine as /srv/systest."""
        self.files = files
        self.workdir = workdir
        self.console_log = workdir / "console.log"
        self.unshare: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # the machine's PID 1, as the host sees it
        self.cgroup: Path | None = None
        self.scratch: Path | None = None

    # ------------------------------------------------------------------ life

    def boot(self, timeout: float = 120) -> None:
        if os.geteuid() != 0:
            raise MachineError("the system test needs root (namespaces, mounts, cgroups)")
        for tool in ("unshare", "nsenter", "setpriv", "pivot_root"):
            if shutil.which(tool, path=ENV["PATH"]) is None:
                raise MachineError(f"{tool} is missing (package util-linux)")
        if not Path("/lib/systemd/systemd").exists():
            raise MachineError("/lib/systemd/systemd is missing (package systemd)")
        cgroot = _cgroup2_root()
        parent = cgroot / _own_cgroup2_path().lstrip("/")
        self.cgroup = Path(tempfile.mkdtemp(prefix="lanchat-systest.", dir=parent))
        self.scratch = Path(tempfile.mkdtemp(prefix="lanchat-systest-root.", dir="/var/tmp"))
        self.console_log.touch()
        procs = self.cgroup / "cgroup.procs"

        libc = ctypes.CDLL(None, use_errno=True)

        def enter_cgroup() -> None:  # runs in the child between fork and exec
            with open(procs, "w") as f:
                f.write("0")
            # Should this test process die without shutting the machine down, unshare
            # gets SIGKILL, and its --kill-child takes the machine's PID 1 along.
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

        log = open(self.workdir / "boot-init.log", "wb")
        self.unshare = subprocess.Popen(
            [
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--net",
                "--uts",
                "--ipc",
                "--cgroup",
                "--propagation",
                "private",
                "--",
                "/bin/bash",
                str(HERE / "boot-init.sh"),
                str(self.scratch),
                str(self.console_log),
                str(self.files),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ENV,
            preexec_fn=enter_cgroup,
        )
        log.close()
        self.pid = self._wait_for_child(self.unshare.pid, timeout=10)
        self._wait_booted(timeout)

    def _wait_for_child(self, parent: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        children = Path(f"/proc/{parent}/task/{parent}/children")
        while time.monotonic() < deadline:
            try:
                text = children.read_text().split()
            except FileNotFoundError:
                text = []
            if text:
                return int(text[0])
            if self.unshare is not None and self.unshare.poll() is not None:
                break
            time.sleep(0.05)
        raise MachineError("the machine's init did not start:\n" + self.boot_log())

    def _wait_booted(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.unshare is not None and self.unshare.poll() is not None:
                raise MachineError("the machine died while booting:\n" + self.boot_log())
            result = self.run(["systemctl", "is-system-running"], check=False, timeout=30)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.run(["systemctl", "--failed", "--no-legend"], check=False)
                    raise MachineError("the machine booted degraded:\n" + failed.stdout)
                return
            time.sleep(0.3)
        raise MachineError(
            f"the machine did not finish booting (state {state!r}):\n" + self.boot_log()
        )

    def boot_log(self) -> str:
        parts = []
        for name in ("boot-init.log", "console.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name} ---\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def shutdown(self, timeout: float = 30) -> None:
        """Power the machine off; kill its PID 1 if it does not go in time. Idempotent."""
        if self.unshare is not None:
            if self.unshare.poll() is None and self.pid is not None:
                try:
                    os.kill(self.pid, signal.SIGRTMIN + 4)  # systemd: power off
                except ProcessLookupError:
                    pass
                try:
                    self.unshare.wait(timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.kill(self.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            if self.unshare.poll() is None:
                try:
                    self.unshare.wait(10)
                except subprocess.TimeoutExpired:
                    self.unshare.kill()  # our own child; --kill-child takes init with it
                    self.unshare.wait()
        self.unshare = None
        self.pid = None
        if self.cgroup is not None:
            _remove_cgroup(self.cgroup)
            self.cgroup = None
        if self.scratch is not None:
            try:
                self.scratch.rmdir()  # the tmpfs on it lived in the machine's namespace
            except OSError:
                pass
            self.scratch = None

    # ------------------------------------------------------------------ inside

    def command(
        self, argv: Sequence[str], user: str | None = None, env: dict[str, str] | None = None
    ) -> list[str]:
        """argv prefixed so that it runs inside the machine (as user, if given)."""
        if self.pid is None:
            raise MachineError("the machine is not running")
        prefix = [
            "nsenter",
            "--target",
            str(self.pid),
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--cgroup",
            "--root",
            "--wd",
            "--",
        ]
        environment = dict(ENV, **(env or {}))
        inner = ["env", "-i"] + [f"{k}={v}" for k, v in environment.items()]
        if user is not None:
            inner = [
                "setpriv",
                f"--reuid={user}",
                f"--regid={user}",
                "--init-groups",
                "--reset-env",
                "--",
            ] + (["env"] + [f"{k}={v}" for k, v in (env or {}).items()])
        return prefix + inner + list(argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(argv, user, env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=ENV,
        )
        if check and result.returncode != 0:
            raise MachineError(
                f"in the machine, {' '.join(argv)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def popen(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(argv, user, env), text=True, env=ENV, **kwargs)

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _remove_cgroup(path: Path, timeout: float = 10) -> None:
    """rmdir a cgroup subtree, deepest first; dying tasks may hold it for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
                os.rmdir(dirpath)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

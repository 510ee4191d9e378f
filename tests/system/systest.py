"""The system test: our .deb packages on a real, freshly booted systemd.

    python3 tests/system/systest.py DEBS_DIR WORKDIR

Boots a throwaway machine (machine.py), installs lanchat and lanchatd with dpkg -i,
and checks what an administrator and the users would: the service is enabled and
active under its own user; lanchatctl works for a member of group lanchat and is
refused to anyone else; a client finds the daemon by (loopback) broadcast and chats,
and so does one on another machine of a link-local LAN with its default discovery;
a reload keeps clients connected; restart and the watchdog bring it back; stop is
graceful; the network allow-list holds; socket activation hands over the sockets;
systemd-analyze verify accepts the units; the autopkgtest (debian/tests) passes; and
purge leaves nothing behind but the system user and group.  Every check prints "ok"
or "FAIL" with the evidence; the exit status is 1 if any failed, 2 if the machine could
not be made at all.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from machine import Machine, MachineError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
INSIDE = "/srv/systest/inside.py"
PIN = "432100"  # six digits: the shipped pin_min_length
# The link-local LAN between the test machine and the other machine (lan_client).
LAN_SERVER = "169.254.88.1"
LAN_CLIENT = "169.254.88.2"
LAN_GATEWAY = "169.254.88.254"
LAN_BROADCAST = "169.254.88.255"


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise CheckFailed(f"timed out after {timeout:g} s waiting for {what}")


def open_files_limit(limits: str) -> int:
    """The hard 'Max open files' of a /proc/PID/limits text."""
    match = re.search(r"^Max open files\s+\S+\s+(\d+)", limits, re.M)
    if match is None:
        raise CheckFailed("no open files limit in:\n" + limits)
    return int(match.group(1))


def run_host(argv: list[str], env: dict[str, str] | None = None) -> str:
    """A command on the host (outside the test machine); its stdout, or CheckFailed."""
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    if result.returncode != 0:
        raise CheckFailed(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
    return result.stdout


class Member:
    """A person in a room over plain-text mode (inside.py member), read line by line."""

    def __init__(self, machine: Machine, name: str, pin: str = PIN) -> None:
        self.name = name
        self.process = machine.popen(
            ["python3", INSIDE, "member", "127.0.0.1", "5000", pin, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("You are in room")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("EOF")

    def expect(self, text: str, timeout: float = 15) -> str:
        """The next line containing text (lines before it are kept in self.seen)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise CheckFailed(
                    f"{self.name} did not receive {text!r} within {timeout:g} s; "
                    f"received: {self.seen[-8:]}"
                ) from None
            self.seen.append(line)
            if text in line:
                return line
            if line == "EOF" and text != "EOF":
                raise CheckFailed(
                    f"{self.name}'s connection ended before {text!r}; received: {self.seen[-8:]}"
                )

    def say(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


class SystemTest:
    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.failures: list[str] = []
        self.members: list[Member] = []

    # ---------------------------------------------------------------- helpers

    def sh(self, script: str, **kwargs: object) -> str:
        return self.m.run(["sh", "-ec", script], **kwargs).stdout  # type: ignore[arg-type]

    def show(self, prop: str, unit: str = "lanchatd.service") -> str:
        return self.m.run(["systemctl", "show", "-P", prop, unit]).stdout.strip()

    def main_pid(self) -> int:
        return int(self.show("MainPID"))

    def is_active(self, unit: str = "lanchatd.service") -> bool:
        return self.m.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0

    def journal(self, unit: str = "lanchatd.service", lines: int = 40) -> str:
        return self.m.run(
            ["journalctl", "--no-pager", "-o", "short-monotonic", "-n", str(lines), "-u", unit],
            check=False,
        ).stdout

    def member(self, name: str) -> Member:
        m = Member(self.m, name)
        self.members.append(m)
        return m

    def close_members(self) -> None:
        for m in self.members:
            m.close()
        self.members.clear()

    def wait_ready(self) -> None:
        """Active (READY=1 received) and accepting chat connections."""
        wait_until("lanchatd to be active", self.is_active)
        wait_until(
            "port 5000 to accept",
            lambda: self.inside_ok(["connect", "127.0.0.1", "5000", "127.0.0.1"]),
        )

    def inside_ok(self, args: list[str], user: str | None = None) -> bool:
        result = self.m.run(["python3", INSIDE, *args], user=user, check=False)
        return result.returncode == 0

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except (CheckFailed, MachineError, subprocess.TimeoutExpired, OSError) as e:
            self.failures.append(name)
            print(f"FAIL - {name}: {e}", flush=True)
            print("       lanchatd journal (last lines):", flush=True)
            for line in self.journal(lines=25).splitlines():
                print("       | " + line, flush=True)
        else:
            print(f"ok - {name} ({time.monotonic() - started:.1f} s)", flush=True)
        finally:
            self.close_members()

    # ---------------------------------------------------------------- checks

    def run_all(self) -> int:
        with self.check("dpkg -i installs both packages, enables and starts lanchatd"):
            self.install()
        with self.check("systemd-analyze verify accepts the installed units"):
            self.verify_units()
        with self.check("the packages' files: completions, catalogues without .po"):
            self.package_files()
        with self.check("lanchatd runs hardened as user lanchat with its directories"):
            self.service_shape()
        with self.check("lanchatctl status works for group lanchat, is refused to others"):
            self.control_access()
        with self.check("a watch group may look (status, log) but not act"):
            self.watch_group()
        with self.check("discovery by loopback broadcast finds the daemon"):
            self.discovery()
        with self.check("people in one room chat, rooms are isolated"):
            self.chat()
        with self.check("the lanchat client discovers the daemon and chats"):
            self.client_chats()
        with self.check("a client on another machine of the LAN discovers and chats"):
            self.lan_client()
        with self.check("systemctl reload keeps clients connected"):
            self.reload()
        with self.check("systemctl restart brings it back"):
            self.restart()
        with self.check("the watchdog restarts a stalled daemon"):
            self.watchdog()
        with self.check("IPAddressDeny= keeps out addresses beyond the allowed networks"):
            self.ip_allow_list()
        with self.check("systemctl stop is graceful"):
            self.stop()
        with self.check("socket activation hands the sockets to lanchatd"):
            self.socket_activation()
        with self.check("the autopkgtest (debian/tests) passes"):
            self.autopkgtest()
        with self.check("dpkg --purge removes the service and its files, keeps the user"):
            self.purge()
        print(f"{len(self.failures)} check(s) failed" if self.failures else "all checks passed")
        return 1 if self.failures else 0

    def install(self) -> None:
        debs = self.sh("ls /srv/systest/debs/*.deb").split()
        expect(len(debs) == 2, f"expected the lanchat and lanchatd packages, found {debs}")
        self.m.run(["dpkg", "-i", *debs], timeout=120)
        enabled = self.m.run(["systemctl", "is-enabled", "lanchatd.service"], check=False)
        expect(enabled.stdout.strip() == "enabled", f"is-enabled says {enabled.stdout.strip()!r}")
        self.wait_ready()
        conffiles = self.m.run(["dpkg-query", "-W", "-f=${Conffiles}", "lanchatd"]).stdout
        expect("/etc/lanchat/lanchatd.toml" in conffiles, f"conffiles: {conffiles!r}")
        for unit in ("lanchatd.socket", "lanchatd-discovery.socket", "lanchatd-control.socket",
                     "lanchatd-web.socket", "lanchatd-tls.socket"):
            state = self.m.run(["systemctl", "is-enabled", unit], check=False).stdout.strip()
            expect(state == "disabled", f"{unit} should be left disabled, is {state!r}")

    def verify_units(self) -> None:
        units = ["lanchatd.service", "lanchatd.socket", "lanchatd-discovery.socket",
                 "lanchatd-control.socket"]
        result = self.m.run(["systemd-analyze", "verify", *units], check=False)
        said = [line for line in (result.stdout + result.stderr).splitlines()
                if "lanchatd" in line]
        expect(result.returncode == 0 and said == [],
               f"systemd-analyze verify exited {result.returncode}:\n" + "\n".join(said))

    def package_files(self) -> None:
        files = self.m.run(["dpkg", "-L", "lanchat", "lanchatd"]).stdout.split()
        for path in ("/usr/share/bash-completion/completions/lanchat",
                     "/usr/share/bash-completion/completions/lanchatctl",
                     "/usr/share/zsh/vendor-completions/_lanchat",
                     "/usr/share/zsh/vendor-completions/_lanchatctl"):
            expect(path in files, f"{path} is not installed")
        catalogues = [f for f in files if "/locale/" in f and f.endswith((".po", ".mo"))]
        expect(catalogues != [] and all(f.endswith(".mo") for f in catalogues),
               f"catalogues installed: {catalogues}")
        # bash's completion, as a person at a prompt gets it.
        offered = self.m.run([
            "bash", "-c", ". /usr/share/bash-completion/completions/lanchatctl; "
            "COMP_WORDS=(lanchatctl sta); COMP_CWORD=1; _lanchatctl lanchatctl sta lanchatctl; "
            "echo ${COMPREPLY[*]}"]).stdout.split()
        expect(sorted(offered) == ["standby", "start", "status"], f"completion: {offered}")

    def autopkgtest(self) -> None:
        """debian/tests as autopkgtest runs them on an installed, booted system."""
        control = (REPO / "packaging" / "debian" / "tests" / "control").read_text()
        tests = [name for line in control.splitlines() if line.startswith("Tests:")
                 for name in line.split(":", 1)[1].split()]
        expect(tests != [], "debian/tests/control names no test")
        for name in tests:
            result = self.m.run(
                ["sh", "-c", f"tmp=$(mktemp -d) && AUTOPKGTEST_TMP=$tmp "
                 f"/srv/systest/autopkgtest/{name}"], check=False, timeout=180)
            expect(result.returncode == 0,
                   f"debian/tests/{name} exited {result.returncode}:\n"
                   f"{result.stdout}{result.stderr}")
            for line in result.stdout.splitlines():
                print(f"       {name}: {line}", flush=True)

    def service_shape(self) -> None:
        pid = self.main_pid()
        owner = self.sh(f"ps -o user=,group= -p {pid}").split()
        expect(owner == ["lanchat", "lanchat"], f"main process runs as {owner}")
        status = self.show("StatusText")
        expect(status != "", "no STATUS= text from the daemon")
        expect(self.show("LimitNOFILE") == "65536", "LimitNOFILE is not 65536")
        # systemd raises the limit with CAP_SYS_RESOURCE; where the host withholds that
        # capability (some sandboxes), the ceiling is the machine's own hard limit.
        ceiling = 65536
        if not int(self.sh("sed -n 's/^CapBnd:\\s*//p' /proc/1/status"), 16) & (1 << 24):
            ceiling = min(ceiling, open_files_limit(self.sh("cat /proc/1/limits")))
            print(f"       note: no CAP_SYS_RESOURCE here, so at most {ceiling} open files")
        got = open_files_limit(self.sh(f"cat /proc/{pid}/limits"))
        expect(got == ceiling, f"the daemon may open {got} files, expected {ceiling}")
        journal = self.journal()
        ready = re.search(r"lanchatd ready tcp=\S+:5000 udp=\S+:5001 http=\S+:5080 "
                          r"page=http://\S+:5080/ tls=\S+:5443 "
                          r"fingerprint=SHA256:[0-9a-f-]{79} control=(\S+)", journal)
        expect(ready is not None, "no readiness line in the journal")
        assert ready is not None
        expect(ready.group(1) == "/run/lanchatd/control.sock", f"control socket {ready.group(1)}")
        # TLS by default: the key made at the first start, in the state directory, 0600.
        key = self.sh("stat -c '%U %G %a' /var/lib/lanchatd/tls-key.pem").strip()
        expect(key == "lanchat lanchat 600", f"TLS key: {key}")
        listing = self.sh("stat -c '%U %G %a' /run/lanchatd /var/lib/lanchatd /var/log/lanchatd")
        expect(
            listing.split("\n")[:3] == ["lanchat lanchat 750"] * 3,
            "directory owners and modes:\n" + listing,
        )
        expect(
            self.sh("test -s /var/log/lanchatd/activity.log && echo yes").strip() == "yes",
            "the activity log is missing or empty",
        )
        sock = self.sh("stat -c '%G %a %F' /run/lanchatd/control.sock").strip()
        expect(sock == "lanchat 660 socket", f"control socket: {sock}")

    def control_access(self) -> None:
        self.sh(
            "id alice >/dev/null 2>&1 || useradd --create-home --groups lanchat alice; "
            "id bob >/dev/null 2>&1 || useradd --create-home bob"
        )
        ok = self.m.run(["lanchatctl", "status"], user="alice", check=False)
        expect(
            ok.returncode == 0 and "active" in ok.stdout,
            f"lanchatctl status as alice (group lanchat) exited {ok.returncode}: "
            f"{ok.stdout}{ok.stderr}",
        )
        as_json = self.m.run(["lanchatctl", "--json", "status"], user="alice")
        status = json.loads(as_json.stdout)
        expect(status.get("state") == "active", f"--json status: {as_json.stdout[:300]}")
        refused = self.m.run(["lanchatctl", "status"], user="bob", check=False)
        expect(
            refused.returncode == 4 and "group lanchat" in refused.stderr,
            f"lanchatctl status as bob (not in group lanchat) exited {refused.returncode}: "
            f"{refused.stdout}{refused.stderr}",
        )

    def watch_group(self) -> None:
        """control_watch_group: its members watch through the same socket (an ACL on it
        and on /run/lanchatd, roles from the peer's groups) and are refused actions."""
        config = "/etc/lanchat/lanchatd.toml"
        self.sh(
            "getent group lanchat-watch >/dev/null || groupadd --system lanchat-watch; "
            "id carol >/dev/null 2>&1 || useradd --create-home --groups lanchat-watch carol; "
            f"cp {config} /root/lanchatd.toml.watch; "
            f"printf '[control]\\ncontrol_watch_group = \"lanchat-watch\"\\n' > {config}; "
            "systemctl restart lanchatd")
        try:
            self.wait_ready()
            listing = self.sh("stat -c '%a %G' /run/lanchatd /run/lanchatd/control.sock")
            expect(listing.split("\n")[:2] == ["750 lanchat", "660 lanchat"],
                   "modes changed:\n" + listing)
            status = self.m.run(["lanchatctl", "status"], user="carol", check=False)
            expect(status.returncode == 0 and "active" in status.stdout,
                   f"lanchatctl status as carol (lanchat-watch) exited {status.returncode}: "
                   f"{status.stdout}{status.stderr}")
            # A search reaches for the files, which are group lanchat's: the memory, and
            # a sentence why no more.
            log = self.m.run(["lanchatctl", "log", "--event", "start"], user="carol",
                             check=False)
            expect(log.returncode == 0 and " start " in log.stdout
                   and "cannot be read: Permission denied" in log.stderr,
                   f"lanchatctl log as carol: {log.returncode} {log.stdout}{log.stderr}")
            refused = self.m.run(["lanchatctl", "standby"], user="carol", check=False)
            expect(refused.returncode == 4 and "may watch lanchatd" in refused.stderr,
                   f"lanchatctl standby as carol exited {refused.returncode}: "
                   f"{refused.stderr}")
            expect(self.m.run(["lanchatctl", "--json", "status"], user="alice").stdout
                   .find('"state": "active"') >= 0, "the state changed")
            other = self.m.run(["lanchatctl", "status"], user="bob", check=False)
            expect(other.returncode == 4, f"bob (no group) got in: {other.stdout}")
        finally:
            self.sh(f"cp /root/lanchatd.toml.watch {config}; systemctl restart lanchatd")
            self.wait_ready()

    def discovery(self) -> None:
        # The client's own discovery, by broadcast on the machine's loopback.
        found = self.m.run(
            ["lanchat", "--discover", "--discovery-address", "127.255.255.255"],
            user="alice",
            check=False,
        )
        expect(
            found.returncode == 0 and "127.0.0.1:5000" in found.stdout and "active" in found.stdout,
            f"lanchat --discover exited {found.returncode}: {found.stdout}{found.stderr}",
        )
        # And the original design's probe, answered byte for byte.
        reply = self.m.run(["python3", INSIDE, "probe", "127.255.255.255", "5001"], check=False)
        expect(
            reply.returncode == 0 and reply.stdout.startswith("SERVER_HERE"),
            f"DISCOVER_SERVER probe: {reply.stdout.strip()}",
        )

    def client_chats(self) -> None:
        """The lanchat client finds the daemon by broadcast and posts to a room."""
        alice = self.member("alice")
        posted = self.m.run(
            [
                "lanchat",
                "--discovery-address",
                "127.255.255.255",
                "--pin",
                PIN,
                "--name",
                "carol",
                "--plain",
            ],
            user="bob",
            input="hello from the client\n",
            check=False,
        )
        expect(
            posted.returncode == 0,
            f"lanchat exited {posted.returncode}: {posted.stdout}{posted.stderr}",
        )
        alice.expect("carol: hello from the client")
        # The package carries the compiled Norwegian catalogue (only the .mo is shipped).
        english = self.m.run(["lanchat", "--help"], user="bob").stdout
        norwegian = self.m.run(["lanchat", "--help"], user="bob", env={"LANGUAGE": "nb"}).stdout
        expect(
            norwegian != english and "nettverk" in norwegian,
            f"LANGUAGE=nb lanchat --help is not in Norwegian:\n{norwegian[:400]}",
        )

    def lan_client(self) -> None:
        """The lanchat client on another machine of a link-local LAN, with its default
        discovery (no --discovery-address, port 5001), finds the packaged daemon and chats.

        The other machine is a network namespace of its own joined to the test machine's
        by a veth pair; both ends are created inside those two namespaces, so the probes
        (to 255.255.255.255 and to 169.254.88.255) never reach a host interface.
        """
        other = f"lanchat-systest-lan-{secrets.token_hex(3)}"
        ip = ["ip", "netns", "exec", other]
        run_host(["ip", "netns", "add", other])
        try:
            assert self.m.pid is not None
            run_host(["ip", "link", "add", "lan0", "netns", other, "type", "veth", "peer",
                      "name", "lan0", "netns", str(self.m.pid)])
            self.sh(f"ip addr add {LAN_SERVER}/24 broadcast + dev lan0; ip link set lan0 up")
            for command in (
                f"ip link set lo up; ip addr add {LAN_CLIENT}/24 broadcast + dev lan0",
                "ip link set lan0 up",
                f"ip route add default via {LAN_GATEWAY} dev lan0",  # as a LAN machine has
            ):
                run_host([*ip, "sh", "-ec", command])
            home = Path(tempfile.mkdtemp(prefix="lan-client.", dir=self.m.workdir))
            env = {
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "LC_ALL": "C.UTF-8",
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / "config"),
                "XDG_STATE_HOME": str(home / "state"),
                "PYTHONPATH": str(REPO),
            }
            client = [*ip, sys.executable, "-m", "lanchat"]
            targets = run_host(
                [*ip, sys.executable, "-c",
                 "from lanchat.client import discovery; print(discovery.default_targets())"],
                env=env,
            )
            expect(
                "'255.255.255.255'" in targets and f"'{LAN_BROADCAST}'" in targets,
                f"the other machine's default discovery targets: {targets.strip()}",
            )
            found = subprocess.run([*client, "--discover"], capture_output=True, text=True,
                                   env=env, timeout=30)
            rows = [line.split("\t") for line in found.stdout.splitlines()]
            expect(
                found.returncode == 0 and [r[1:3] for r in rows] == [
                    [f"{LAN_SERVER}:5000", "active"]],
                f"lanchat --discover on the other machine exited {found.returncode}: "
                f"{found.stdout}{found.stderr}",
            )
            alice = self.member("alice")
            posted = subprocess.run(
                [*client, "--plain", "--pin", PIN, "--name", "remote"],
                input="hello across the LAN\n", capture_output=True, text=True, env=env,
                timeout=60,
            )
            expect(
                posted.returncode == 0,
                f"lanchat on the other machine exited {posted.returncode}: "
                f"{posted.stdout}{posted.stderr}",
            )
            alice.expect("remote: hello across the LAN")
            # Over TLS, by default, with the key pinned at first contact.
            expect("First contact with" in posted.stderr
                   and "not encrypted" not in posted.stderr,
                   f"the LAN client did not join over TLS:\n{posted.stderr}")
            log = self.m.run(["lanchatctl", "log", "-n", "20"], user="alice").stdout
            expect(
                LAN_CLIENT in log,
                f"the activity log does not show the join from {LAN_CLIENT}:\n{log}",
            )
        finally:
            # Deleting the other machine's namespace destroys the veth pair, both ends.
            subprocess.run(["ip", "netns", "delete", other], timeout=10)

    def chat(self) -> None:
        alice = self.member("alice")
        bob = self.member("bob")
        alice.expect("bob joined")
        alice.say("hello bob")
        bob.expect("alice: hello bob")
        bob.say("hi alice")
        alice.expect("bob: hi alice")
        other_room = Member(self.m, "eve", pin="999999")
        self.members.append(other_room)
        alice.say("only for room 432100")
        bob.expect("only for room 432100")
        other_room.say("only for room 999999")
        bob.say("still here")
        alice.expect("bob: still here")
        leaked = [line for line in alice.seen + bob.seen if "99999" in line]
        expect(not leaked, f"a message crossed rooms: {leaked}")

    def reload(self) -> None:
        pid = self.main_pid()
        alice = self.member("alice")
        bob = self.member("bob")
        alice.expect("bob joined")
        # A reloadable setting changed in the conffile takes effect, nobody is dropped.
        config = "/etc/lanchat/lanchatd.toml"
        self.sh(
            f"cp {config} /root/lanchatd.toml.orig; "
            f"printf '[server]\\nname = \"Lab 2\"\\n' > {config}"
        )
        try:
            self.m.run(["systemctl", "reload", "lanchatd.service"])
            expect(self.main_pid() == pid, "the daemon was replaced by a reload")
            expect(self.is_active(), "not active after the reload")
            status = self.m.run(["lanchatctl", "status"], user="alice").stdout
            expect('"Lab 2"' in status.splitlines()[0], f"name not reloaded: {status[:200]}")
            alice.say("after the reload")
            bob.expect("alice: after the reload")
            # lanchatctl reload does the same, and the log says who asked.
            again = self.m.run(["lanchatctl", "reload"], user="alice")
            expect("reloaded" in again.stdout.lower(), f"lanchatctl reload: {again.stdout}")
            log = self.m.run(["lanchatctl", "log", "-n", "5"], user="alice").stdout
            expect(
                re.search(r"reload .*by uid=\d+\(alice\)", log) is not None,
                f"the activity log does not show alice's reload:\n{log}",
            )
            bob.say("still connected")
            alice.expect("bob: still connected")
        finally:
            self.sh(f"cp /root/lanchatd.toml.orig {config}; systemctl reload lanchatd")

    def restart(self) -> None:
        pid = self.main_pid()
        alice = self.member("alice")
        self.m.run(["systemctl", "restart", "lanchatd.service"])
        alice.expect("EOF")
        self.wait_ready()
        expect(self.main_pid() != pid, "same main pid after a restart")
        carol = self.member("carol")
        carol.say("back again")

    def watchdog(self) -> None:
        dropin = "/run/systemd/system/lanchatd.service.d"
        self.sh(
            f"mkdir -p {dropin}; printf '[Service]\\nEnvironment=LANCHATD_TEST_STALL=1\\n"
            f"WatchdogSec=3s\\n' > {dropin}/stall.conf; systemctl daemon-reload; "
            "systemctl restart lanchatd.service"
        )
        try:
            self.wait_ready()
            pid = self.main_pid()
            restarts = int(self.show("NRestarts"))
            expect(self.show("WatchdogUSec") == "3s", "the test drop-in did not apply")
            self.m.run(
                ["systemctl", "kill", "--kill-who=main", "--signal=SIGUSR2", "lanchatd.service"]
            )
            wait_until("a new main process", lambda: self.main_pid() not in (0, pid), timeout=30)
            self.wait_ready()
            expect(
                int(self.show("NRestarts")) == restarts + 1,
                f"NRestarts {self.show('NRestarts')}, was {restarts}",
            )
            expect("Watchdog timeout" in self.journal(lines=80), "no watchdog timeout logged")
            self.member("dave").say("alive")
        finally:
            self.sh(f"rm -rf {dropin}; systemctl daemon-reload; systemctl restart lanchatd")
            self.wait_ready()

    def ip_allow_list(self) -> None:
        # A documentation address (TEST-NET-2), outside loopback, link-local and the
        # private ranges, on the loopback interface of the machine's own network
        # namespace: a client from there reaches the port only if the filter fails.
        self.sh("ip addr replace 198.51.100.7/32 dev lo")
        allowed = self.m.run(
            ["python3", INSIDE, "connect", "127.0.0.1", "5000", "127.0.0.1"], check=False
        )
        expect(allowed.returncode == 0, f"loopback refused: {allowed.stdout}")
        denied = self.m.run(
            ["python3", INSIDE, "connect", "198.51.100.7", "5000", "198.51.100.7"], check=False
        )
        expect(
            denied.returncode != 0,
            "a connection from 198.51.100.7 was accepted: " + denied.stdout.strip(),
        )
        # Widened as docs/packaging.md tells the administrator, the same client gets in:
        # so it was the allow-list that kept it out.
        dropin = "/etc/systemd/system/lanchatd.service.d"
        self.sh(
            f"mkdir -p {dropin}; printf '[Service]\\nIPAddressAllow=198.51.100.0/24\\n' "
            f"> {dropin}/allow.conf; systemctl daemon-reload; systemctl restart lanchatd"
        )
        try:
            self.wait_ready()
            widened = self.m.run(
                ["python3", INSIDE, "connect", "198.51.100.7", "5000", "198.51.100.7"],
                check=False,
            )
            expect(
                widened.returncode == 0,
                f"still refused after widening with a drop-in: {widened.stdout.strip()}",
            )
        finally:
            self.sh(f"rm -rf {dropin}; systemctl daemon-reload; systemctl restart lanchatd")
            self.wait_ready()

    def stop(self) -> None:
        alice = self.member("alice")
        started = time.monotonic()
        self.m.run(["systemctl", "stop", "lanchatd.service"])
        took = time.monotonic() - started
        alice.expect("EOF")
        goodbye = [line for line in alice.seen if line.startswith("!")]
        expect(goodbye != [], f"alice was not told the server is going down: {alice.seen}")
        expect(took < 5, f"stop took {took:.1f} s")
        result = self.show("Result")
        status = self.show("ExecMainStatus")
        expect(result == "success" and status == "0", f"Result={result} ExecMainStatus={status}")
        expect(
            '"stop"' in self.sh("tail -n 3 /var/log/lanchatd/activity.log"),
            "the activity log does not end with the stop event",
        )
        self.m.run(["systemctl", "start", "lanchatd.service"])
        self.wait_ready()

    def socket_activation(self) -> None:
        # As docs/packaging.md says: systemd will not listen on a port the running
        # service holds, so stop it, enable the sockets, start it again.
        self.m.run(["systemctl", "stop", "lanchatd.service"])
        self.m.run(["systemctl", "enable", "--now", "lanchatd.socket"])
        for unit in ("lanchatd.socket", "lanchatd-discovery.socket", "lanchatd-control.socket",
                     "lanchatd-web.socket", "lanchatd-tls.socket"):
            expect(self.is_active(unit), f"{unit} is not active")
        self.m.run(["systemctl", "start", "lanchatd.service"])
        self.wait_ready()
        journal = self.journal(lines=15)
        expect(
            "tcp=[::]:5000 udp=[::]:5001 http=[::]:5080" in journal
            and "tls=[::]:5443" in journal,
            "the daemon is not ready on the chat, discovery, web and TLS ports:\n" + journal,
        )
        # The daemon binds [::] by itself too (its default is dual-stack): that these
        # sockets are systemd's shows in ss, each held by systemd and by the service.
        pid = self.main_pid()
        for option, port in (("-t", 5000), ("-u", 5001), ("-t", 5080)):
            holders = self.sh(f"ss -Hlnp {option} 'sport = :{port}'")
            expect(
                "pid=1," in holders and f"pid={pid}," in holders,
                f"the daemon did not take port {port} from systemd:\n" + holders,
            )
        alice = self.member("alice")
        bob = self.member("bob")
        alice.expect("bob joined")
        alice.say("through systemd's socket")
        bob.expect("alice: through systemd's socket")
        self.close_members()
        self.discovery()
        self.control_access()
        # With the daemon stopped, a connection attempt starts it.
        self.m.run(["systemctl", "stop", "lanchatd.service"])
        expect(not self.is_active(), "lanchatd still active after stop")
        carol = self.member("carol")
        carol.say("woke it up")
        expect(self.is_active(), "lanchatd was not started by the connection")

    def purge(self) -> None:
        self.m.run(["dpkg", "--purge", "lanchatd", "lanchat"], timeout=120)
        leftovers = self.sh(
            "for p in /etc/lanchat /var/lib/lanchatd /var/log/lanchatd /run/lanchatd "
            "/lib/systemd/system/lanchatd.service /usr/bin/lanchatd /usr/bin/lanchat "
            "/usr/lib/sysusers.d/lanchatd.conf /etc/systemd/system/multi-user.target.wants/"
            "lanchatd.service /etc/systemd/system/sockets.target.wants/lanchatd.socket; "
            "do [ -e $p ] || [ -L $p ] && echo $p; done; true"
        ).split()
        expect(leftovers == [], f"left behind: {leftovers}")
        # Debian practice: system accounts stay (a reused id would own old files), and
        # so do the administrators' memberships.
        expect(self.m.run(["getent", "passwd", "lanchat"], check=False).returncode == 0,
               "purge removed the system user lanchat")
        group = self.m.run(["getent", "group", "lanchat"], check=False).stdout.strip()
        expect("alice" in group.rsplit(":", 1)[-1].split(","),
               f"group lanchat after purge: {group!r} (alice was a member)")
        units = self.m.run(["systemctl", "list-units", "--all", "--no-legend", "lanchatd*"])
        expect(units.stdout.strip() == "", "units still loaded:\n" + units.stdout)
        gone = self.m.run(
            ["python3", INSIDE, "connect", "127.0.0.1", "5000", "127.0.0.1"], check=False
        )
        expect(gone.returncode != 0, "something still answers on port 5000")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    debs = Path(argv[0]).resolve()
    workdir = Path(argv[1]).resolve()
    files = Path(tempfile.mkdtemp(prefix="files.", dir=workdir))
    files.chmod(0o755)  # becomes /srv/systest, read by the test users too
    (files / "debs").mkdir()
    for deb in sorted(debs.glob("*.deb")):
        (files / "debs" / deb.name).write_bytes(deb.read_bytes())
    (files / "inside.py").write_bytes((HERE / "inside.py").read_bytes())
    autopkgtest = files / "autopkgtest"
    autopkgtest.mkdir()
    for test in sorted((REPO / "packaging" / "debian" / "tests").iterdir()):
        (autopkgtest / test.name).write_bytes(test.read_bytes())
        (autopkgtest / test.name).chmod(test.stat().st_mode | 0o555)
    machine = Machine(files, workdir)
    try:
        started = time.monotonic()
        machine.boot()
        print(
            f"ok - booted systemd in a throwaway machine ({time.monotonic() - started:.1f} s)",
            flush=True,
        )
        return SystemTest(machine).run_all()
    except MachineError as e:
        print(f"FAIL - the test machine: {e}", flush=True)
        return 2
    except Exception:
        traceback.print_exc()
        return 2
    finally:
        machine.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

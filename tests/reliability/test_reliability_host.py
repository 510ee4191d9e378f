"""Faults of the host under the activity log: a full disk, a vanished directory, rotation
under a burst.  The daemon keeps serving, says so once, and the log loses nothing."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

from reliability_kit import Peer, Scenario, wait_until

CANNOT_WRITE = "lanchatd: cannot write the activity log"
RESUMED = "writing resumed"
# The bursts here are of log records, not a test of the rate limits.
FAST = {"message_rate": 100000.0, "message_burst": 100000, "join_burst": 100}


def log_records(path: Path) -> list[dict[str, Any]]:
    """Every record of the log and its rotated files, oldest file first."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]))
    records = []
    for file in [*reversed(backups), path]:
        if not file.exists():
            continue
        data = file.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{file} ends inside a record"
        records += [json.loads(line) for line in data.decode("utf-8").splitlines()]
    return records


def assert_complete(records: list[dict[str, Any]], first: int = 1) -> list[int]:
    """The records' seq run from ``first`` to the last without a gap or a repeat."""
    seqs = [r["seq"] for r in records if "seq" in r]
    assert sorted(seqs) == seqs, "records out of order"
    assert len(set(seqs)) == len(seqs), "a record was written twice"
    assert seqs == list(range(first, first + len(seqs))), (
        f"records missing: {sorted(set(range(first, seqs[-1] + 1)) - set(seqs))[:10]}")
    assert not [r for r in records if r["event"] == "activity_log_records_lost"]
    return seqs


def chat_burst(daemon: Any, pin: str, members: int, each: int, prefix: str) -> None:
    """``members`` members join ``pin``, each says ``each`` things, all read, all leave."""
    peers = []
    for i in range(members):
        peer = Peer(daemon.tcp)
        peer.join(pin, f"{prefix}{i}")
        peers.append(peer)
    for i, peer in enumerate(peers):
        peer.send(b"".join(json.dumps({"type": "say", "text": f"{prefix}{i} {k}"}).encode()
                           + b"\n" for k in range(each)))
    for peer in peers:
        got = 0
        while got < members * each:
            event = peer.until(lambda e: e["type"] in ("message", "error"))
            assert event["type"] == "message", event
            got += 1
        peer.close()


class SmallDisk:
    """A tmpfs of ``size_kb`` mounted at ``where`` (we are root): ``fill()`` fills it to
    the last byte, ``free()`` gives the space back."""

    def __init__(self, where: Path, size_kb: int) -> None:
        self.path = where
        self.filler = where / "filler"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755",
                        "lanchat-reliability", str(where)], check=True)

    def fill(self, _daemon: Any) -> None:
        chunk = b"\0" * 4096
        for size in (4096, 1):  # whole pages, then the last bytes
            while True:
                try:
                    with open(self.filler, "ab") as f:
                        f.write(chunk[:size])
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break

    def free(self, _daemon: Any) -> None:
        self.filler.unlink()

    def close(self) -> None:
        subprocess.run(["umount", "--lazy", str(self.path)], check=False)


class FileSizeLimit:
    """Without root: the daemon's RLIMIT_FSIZE, lowered to the log's size while it runs
    (prlimit), stands in for the full disk; writes fail with EFBIG instead of ENOSPC."""

    def __init__(self, where: Path) -> None:
        self.path = where
        where.mkdir()

    def fill(self, daemon: Any) -> None:
        size = (self.path / "activity.log").stat().st_size
        resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    def free(self, daemon: Any) -> None:
        resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def close(self) -> None:
        pass


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


def test_activity_log_disk_full_then_space_returns(scenario: Scenario) -> None:
    """Disk full: the daemon serves on, says so once, and when space returns writes every
    record it kept, in order, none twice."""
    scenario.load = "log on a full disk while 10 members send 300 messages; then space returns"
    disk: SmallDisk | FileSizeLimit
    if _can_mount() and not os.environ.get("LANCHAT_RELIABILITY_NO_MOUNT"):
        disk = SmallDisk(scenario.tmp / "disk", 512)
        scenario.load += " (a 512 KiB tmpfs, filled)"
    else:
        disk = FileSizeLimit(scenario.tmp / "disk")
        scenario.load += " (RLIMIT_FSIZE at the log's size)"
    try:
        log = disk.path / "activity.log"
        daemon = scenario.start({"limits": FAST, "log": {"log_messages": True}},
                                args=["--log-file", str(log)])
        daemon.log_file = log
        wait_until(lambda: log.exists() and log.stat().st_size > 0, 10.0, "the first record")
        with scenario.steady_client():
            disk.fill(daemon)
            chat_burst(daemon, "7070", members=10, each=30, prefix="full")
            wait_until(lambda: CANNOT_WRITE in daemon.stderr(), 10.0, "the daemon to say so")
            chat_burst(daemon, "7071", members=5, each=10, prefix="still")
            disk.free(daemon)
            wait_until(lambda: RESUMED in daemon.stderr(), 10.0, "writing to resume")
            chat_burst(daemon, "7072", members=2, each=5, prefix="after")
        scenario.check_memory(growth_mb=16)
        assert daemon.stop() == 0
        stderr = daemon.stderr()
        assert stderr.count(CANNOT_WRITE) == 1, stderr
        assert stderr.count(RESUMED) == 1, stderr
        records = log_records(log)
    finally:
        disk.close()
    assert_complete(records)
    said = [r for r in records if r["event"] == "message"]
    for prefix, count in (("full", 300), ("still", 50), ("after", 10)):
        assert len([r for r in said if r["name"].startswith(prefix)]) == count
    assert records[-1]["event"] == "stop"


def test_activity_log_directory_disappears(scenario: Scenario) -> None:
    """The log's directory is removed: the next record recreates it, in a new file that
    starts with the very next record; the daemon says so once and serves on."""
    scenario.load = "log directory removed (rm -rf) while members join, talk and leave"
    logdir = scenario.tmp / "logs"
    log = logdir / "activity.log"
    daemon = scenario.start({"limits": FAST, "log": {"log_messages": False}},
                            args=["--log-file", str(log)])
    daemon.log_file = log
    with scenario.steady_client():
        chat_burst(daemon, "7171", members=3, each=5, prefix="before")
        wait_until(lambda: any(r["event"] == "room_empty" for r in log_records(log)), 10.0,
                   "the room to empty")
        last = log_records(log)[-1]["seq"]
        shutil.rmtree(logdir)
        chat_burst(daemon, "7172", members=3, each=5, prefix="after")
        wait_until(log.exists, 10.0, "a new log file")
    scenario.check_memory(growth_mb=16)
    assert daemon.stop() == 0
    stderr = daemon.stderr()
    assert stderr.count("was deleted while open") == 1, stderr
    records = log_records(log)
    assert_complete(records, first=last + 1)
    assert records[-1]["event"] == "stop"
    assert {r["name"] for r in records if r["event"] == "join"} == {"after0", "after1", "after2"}


def test_rotation_under_a_burst_loses_and_repeats_nothing(scenario: Scenario) -> None:
    """A burst of records across many rotations: across all the files every seq appears
    exactly once, and every message is there."""
    members, each = 10, 100
    scenario.load = (f"{members} members x {each} messages, logged, rotating every 8 KiB")
    logdir = scenario.tmp / "logs"
    log = logdir / "activity.log"
    daemon = scenario.start({"limits": FAST,
                             "log": {"log_messages": True, "log_max_bytes": 8192,
                                     "log_backups": 500}},
                            args=["--log-file", str(log)])
    daemon.log_file = log
    with scenario.steady_client():
        chat_burst(daemon, "7272", members=members, each=each, prefix="r")
    scenario.check_memory(growth_mb=16)
    assert daemon.stop() == 0
    files = list(logdir.iterdir())
    assert len(files) > 10, f"only {len(files)} files: the log did not rotate"
    for file in files:
        assert file.stat().st_size <= 8192, f"{file.name} is past log_max_bytes"
    records = log_records(log)
    assert_complete(records)
    said = [r for r in records if r["event"] == "message" and r["room"] == "7272"]
    assert sorted(r["room_seq"] for r in said) == list(range(1, members * each + 1))
    for i in range(members):
        mine = [r["text"] for r in said if r["name"] == f"r{i}"]
        assert mine == [f"r{i} {k}" for k in range(each)]
    scenario.load += f"; {len(files)} files, {len(records)} records"

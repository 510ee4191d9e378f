"""The activity log: ring, sequence numbers, JSON-lines file, rotation, and faults of the host.

Faults are made real, not mocked: a full disk is a log path that points at /dev/full
(every write fails with ENOSPC), a file size limit is RLIMIT_FSIZE in a child process
(writes stop half-way, then fail with EFBIG), a vanished directory is removed for real.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanchatd.activity import RECORDS_LOST_EVENT, ActivityLog, Entry

REPO = Path(__file__).resolve().parents[1]


def log_files(path: Path) -> list[Path]:
    """The log file and its backups, oldest first (activity.log.N ... .1, activity.log)."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]))
    files = list(reversed(backups))
    if path.exists():
        files.append(path)
    return files


def read_lines(*files: Path) -> list[dict[str, Any]]:
    """Every line of the files, each parsed as JSON (a line that is not JSON fails)."""
    records = []
    for file in files:
        data = file.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{file} ends in the middle of a line"
        for line in data.decode("utf-8").split("\n")[:-1]:
            records.append(json.loads(line))
    return records


def seqs(records: list[dict[str, Any]]) -> list[int]:
    return [r["seq"] for r in records if "seq" in r]


def stderr_lines(err: io.StringIO) -> list[str]:
    return err.getvalue().splitlines()


# -- memory: sequence numbers, ring, tail, since ----------------------------------------


def test_seq_starts_at_one_and_entries_carry_time_event_and_fields() -> None:
    log = ActivityLog()
    assert log.last_seq == 0
    first = log.record(10.5, "start", version="1.0")
    second = log.record(11.0, "join", room="1234", name="ada", peer="127.0.0.1")
    assert first == {"seq": 1, "ts": 10.5, "time": "1970-01-01T00:00:10.500Z",
                     "event": "start", "version": "1.0"}
    assert second == {"seq": 2, "ts": 11.0, "time": "1970-01-01T00:00:11.000Z",
                      "event": "join", "room": "1234", "name": "ada", "peer": "127.0.0.1"}
    assert log.last_seq == 2
    assert log.pending() == 0  # memory only: nothing waits for a file


def test_ring_keeps_the_newest_entries_and_tail_since_read_it_oldest_first() -> None:
    log = ActivityLog(ring_size=5)
    for i in range(12):
        log.record(float(i), "connect", n=i)
    assert log.last_seq == 12
    assert [e["seq"] for e in log.tail()] == [8, 9, 10, 11, 12]
    assert [e["seq"] for e in log.tail(2)] == [11, 12]
    assert [e["seq"] for e in log.tail(100)] == [8, 9, 10, 11, 12]
    assert log.tail(0) == []
    assert [e["seq"] for e in log.since(0)] == [8, 9, 10, 11, 12]
    assert [e["seq"] for e in log.since(3)] == [8, 9, 10, 11, 12]  # 4..7 already gone
    assert [e["seq"] for e in log.since(9)] == [10, 11, 12]
    assert log.since(12) == []
    assert log.since(99) == []
    assert ActivityLog().since(0) == []


def test_reconfigure_resizes_the_ring_keeping_the_newest() -> None:
    log = ActivityLog(ring_size=10)
    for i in range(10):
        log.record(float(i), "connect")
    log.reconfigure(ring_size=3, max_bytes=0, backups=0)
    assert [e["seq"] for e in log.tail()] == [8, 9, 10]
    log.reconfigure(ring_size=5, max_bytes=0, backups=0)
    log.record(10.0, "connect")
    log.record(11.0, "connect")
    assert [e["seq"] for e in log.tail()] == [8, 9, 10, 11, 12]


def test_bad_sizes_and_reserved_field_names_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="ring_size"):
        ActivityLog(ring_size=-1)
    with pytest.raises(ValueError, match="max_bytes"):
        ActivityLog(max_bytes=-5)
    log = ActivityLog()
    with pytest.raises(ValueError, match="backups"):
        log.reconfigure(ring_size=10, max_bytes=0, backups=-1)
    with pytest.raises(ValueError, match="'seq' is reserved"):
        log.record(1.0, "join", seq=7)
    with pytest.raises(ValueError, match="'ts' is reserved"):
        log.record(1.0, "join", ts=7)
    assert log.last_seq == 0 and log.tail() == []  # nothing was recorded


# -- the file ---------------------------------------------------------------------------


def test_file_lines_are_compact_utf8_json_equal_to_the_entries(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "missing" / "dir" / "activity.log"
        log = ActivityLog(path=str(path))
        entries = [
            log.record(1.0, "start"),
            log.record(2.0, "join", room="1234", name="Åse", peer="192.0.2.7"),
            # U+2028 would split the line for str.splitlines() readers if left raw.
            log.record(3.0, "join", room="1234", name="x\u2028y\u0085z"),
            log.record(4.0, "admin", action="kick", by="root", target="bob",
                       reason='said "hi"\nand left'),
        ]
        log.close()
    finally:
        os.umask(old_umask)
    data = path.read_bytes()
    assert "Åse".encode() in data  # UTF-8, not \\u escapes
    # Compact separators, and the time as RFC 3339 besides the Unix number.
    assert b'"seq":1,"ts":1.0,"time":"1970-01-01T00:00:01.000Z","event":"start"' in data
    text = data.decode("utf-8")
    assert len(text.splitlines()) == 4
    assert [json.loads(line) for line in text.splitlines()] == entries
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_values_that_are_not_json_are_kept_as_text_and_lone_surrogates_escaped(
        tmp_path: Path) -> None:
    path = tmp_path / "activity.log"
    log = ActivityLog(path=str(path))
    entry = log.record(1.0, "connect", peer=ipaddress.ip_address("198.51.100.7"))
    odd = log.record(2.0, "protocol_error", name="bad\udcffbytes")
    assert entry["peer"] == "198.51.100.7"
    assert log.tail()[0]["peer"] == "198.51.100.7"
    assert read_lines(path) == [entry, odd]
    assert read_lines(path)[1]["name"] == "bad\udcffbytes"


def test_rotation_under_a_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "activity.log"
    max_bytes = 16384
    log = ActivityLog(path=str(path), max_bytes=max_bytes, backups=60, ring_size=100)
    for i in range(5000):
        log.record(1000.0 + i / 1000, "message", room=f"{i % 7:04d}", name=f"user{i % 13}",
                   length=i % 200)
    log.close()
    files = log_files(path)
    assert len(files) > 20  # it really rotated, many times
    assert not (tmp_path / "activity.log.61").exists()
    for file in files:
        assert file.stat().st_size <= max_bytes
    assert seqs(read_lines(*files)) == list(range(1, 5001))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.text(max_size=120), st.booleans()), max_size=60),
       st.sampled_from([0, 300, 1024]), st.sampled_from([0, 1, 3]))
def test_entries_written_once_a_pass_fall_in_the_files_they_fall_in_one_by_one(
        tmp_path_factory: pytest.TempPathFactory, entries: list[tuple[str, bool]],
        max_bytes: int, backups: int) -> None:
    """The daemon's loop writes a pass's entries together (``batched``, ``flush``): the
    files, their rotations and every byte in them are what writing each entry alone
    gives, and no file passes the limit but by a line longer than it."""
    logs: list[tuple[ActivityLog, Path]] = []
    for batched in (False, True):
        path = tmp_path_factory.mktemp("log") / "activity.log"
        log = ActivityLog(path=str(path), max_bytes=max_bytes, backups=backups,
                          stderr=io.StringIO())
        log.batched = batched
        logs.append((log, path))
    for i, (name, pass_ends) in enumerate(entries):
        for log, _path in logs:
            log.record(1000.0 + i // 3, "join", room="1234", name=name)
            if pass_ends:
                log.flush()
    files = []
    for log, path in logs:
        log.close()
        files.append([(f.name, f.read_bytes()) for f in log_files(path)])
        for f in log_files(path):
            lines = f.read_bytes().splitlines(keepends=True)
            assert max_bytes == 0 or f.stat().st_size <= max_bytes or len(lines) == 1
    assert files[0] == files[1]


def test_rotation_keeps_only_the_configured_number_of_backups(tmp_path: Path) -> None:
    path = tmp_path / "activity.log"
    log = ActivityLog(path=str(path), max_bytes=1024, backups=3)
    for i in range(500):
        log.record(float(i), "connect", peer="127.0.0.1")
    files = log_files(path)
    assert [f.name for f in files] == ["activity.log.3", "activity.log.2", "activity.log.1",
                                       "activity.log"]
    kept = seqs(read_lines(*files))
    assert kept == list(range(kept[0], 501))  # the newest, contiguous, in order
    # After a reload with max_bytes 0 the file just grows.
    log.reconfigure(ring_size=1000, max_bytes=0, backups=3)
    for i in range(100):
        log.record(float(i), "connect", peer="127.0.0.1")
    assert [f.name for f in log_files(path)] == [f.name for f in files]
    assert path.stat().st_size > 1024
    assert seqs(read_lines(*log_files(path)))[-1] == 600


def test_no_backups_keeps_the_file_within_its_limit_and_says_so(tmp_path: Path) -> None:
    """log_backups = 0: no old file is kept, and the file never grows past the limit."""
    path = tmp_path / "activity.log"
    err = io.StringIO()
    log = ActivityLog(path=str(path), max_bytes=1024, backups=0, stderr=err)
    for i in range(500):
        log.record(float(i), "connect", peer="127.0.0.1")
        assert path.stat().st_size <= 1024
    assert [f.name for f in log_files(path)] == ["activity.log"]
    kept = seqs(read_lines(path))
    assert kept == list(range(kept[0], 501)) and kept[0] > 1  # the newest, whole lines
    said = stderr_lines(err)
    assert said and all(
        line.startswith(f"lanchatd: activity log {path} reached log_max_bytes (") and
        line.endswith("with log_backups = 0, was emptied: its older entries are gone")
        for line in said)


def test_reopen_after_logrotate_moved_the_file(tmp_path: Path) -> None:
    path = tmp_path / "activity.log"
    log = ActivityLog(path=str(path))
    for i in range(3):
        log.record(float(i), "connect")
    moved = tmp_path / "activity.log-20260101"
    os.rename(path, moved)
    log.record(3.0, "connect")  # still the moved file, as logrotate expects before SIGHUP
    log.reopen()                # SIGHUP
    log.record(4.0, "connect")
    log.record(5.0, "connect")
    assert seqs(read_lines(moved)) == [1, 2, 3, 4]
    assert seqs(read_lines(path)) == [5, 6]


def test_a_file_deleted_while_open_is_replaced_not_written_into(tmp_path: Path) -> None:
    path = tmp_path / "activity.log"
    err = io.StringIO()
    log = ActivityLog(path=str(path), stderr=err)
    log.record(1.0, "start")
    path.unlink()
    log.record(2.0, "connect")
    assert seqs(read_lines(path)) == [2]
    assert stderr_lines(err) == [
        f"lanchatd: activity log {path} was deleted while open; writing to a new file at "
        "that path"]


def test_the_log_directory_removed_is_recreated(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        directory = tmp_path / "logs"
        path = directory / "activity.log"
        err = io.StringIO()
        log = ActivityLog(path=str(path), stderr=err)
        for i in range(3):
            log.record(float(i), "connect")
        shutil.rmtree(directory)
        log.record(3.0, "join", room="1234", name="ada")
        log.record(4.0, "leave", room="1234", name="ada")
    finally:
        os.umask(old_umask)
    assert seqs(read_lines(path)) == [4, 5]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    assert log.pending() == 0
    assert len(stderr_lines(err)) == 1


def test_a_directory_that_cannot_be_created_is_retried_until_it_can(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    path = directory / "activity.log"
    directory.write_text("a file where the log directory should be\n")
    err = io.StringIO()
    log = ActivityLog(path=str(path), stderr=err)
    for i in range(4):
        log.record(10.0 + i, "connect")
    log.retry(14.0)
    assert log.pending() == 4
    assert stderr_lines(err) == [
        f"lanchatd: cannot write the activity log {path}: Not a directory (ENOTDIR); "
        "records are kept in memory and the write is retried"]
    directory.unlink()
    log.retry(15.0)
    assert log.pending() == 0
    assert seqs(read_lines(path)) == [1, 2, 3, 4]
    assert stderr_lines(err)[1:] == [
        f"lanchatd: activity log {path}: writing resumed; 4 delayed record(s) written"]


def test_an_existing_file_cut_mid_line_gets_the_next_record_on_its_own_line(
        tmp_path: Path) -> None:
    path = tmp_path / "activity.log"
    path.write_bytes(b'{"seq":1,"ts":0.0,"event":"start"}\n{"seq":2,"ts":0.5,"ev')
    log = ActivityLog(path=str(path))
    entry = log.record(1.0, "start")
    log.record(2.0, "connect")
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == b'{"seq":2,"ts":0.5,"ev'  # the old fragment, untouched
    assert json.loads(lines[2]) == entry
    assert json.loads(lines[3])["seq"] == 2
    assert lines[4] == b""


# -- disk full: a log path that points at /dev/full ------------------------------------


def full_disk(tmp_path: Path) -> Path:
    path = tmp_path / "activity.log"
    path.symlink_to("/dev/full")
    return path


def test_disk_full_keeps_records_says_so_once_and_resumes_with_nothing_lost(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = full_disk(tmp_path)
    err = io.StringIO()
    log = ActivityLog(path=str(path), stderr=err)
    seen: list[Entry] = []
    log.subscribe(seen.append)
    entries = [log.record(100.0 + i / 10, "message", room="1234", name="ada")
               for i in range(8)]
    for t in (101.0, 102.0, 103.0):
        log.retry(t)
    assert log.pending() == 8
    assert [e["seq"] for e in log.tail()] == list(range(1, 9))  # the daemon carries on
    assert seen == entries
    assert stderr_lines(err) == [
        f"lanchatd: cannot write the activity log {path}: No space left on device (ENOSPC); "
        "records are kept in memory and the write is retried"]

    path.unlink()  # space returns
    log.retry(104.0)
    assert log.pending() == 0
    entries.append(log.record(104.5, "leave", room="1234", name="ada"))
    assert read_lines(path) == entries
    assert stderr_lines(err)[1:] == [
        f"lanchatd: activity log {path}: writing resumed; 8 delayed record(s) written"]
    assert capsys.readouterr().err == ""  # no traceback from the logging machinery


def test_while_failing_record_retries_at_most_once_a_second(tmp_path: Path) -> None:
    path = full_disk(tmp_path)
    log = ActivityLog(path=str(path), stderr=io.StringIO())
    log.record(50.0, "connect")  # fails: the next try is due at 51.0
    path.unlink()
    log.record(50.5, "connect")
    assert log.pending() == 2 and not path.exists()
    log.record(51.0, "connect")
    assert log.pending() == 0
    assert seqs(read_lines(path)) == [1, 2, 3]


def test_past_the_pending_bound_the_file_gets_one_line_counting_the_lost(
        tmp_path: Path) -> None:
    path = full_disk(tmp_path)
    err = io.StringIO()
    log = ActivityLog(path=str(path), stderr=err, max_pending=10, ring_size=100)
    for i in range(25):
        log.record(200.0 + i, "message", room="1234")
    assert log.pending() == 10
    assert len(log.tail()) == 25  # the ring still has every one
    assert len(stderr_lines(err)) == 2
    assert "10 records are waiting to be written" in stderr_lines(err)[1]

    path.unlink()
    log.retry(300.0)
    log.record(301.0, "message", room="1234")
    records = read_lines(path)
    assert seqs(records) == [*range(1, 11), 26]
    assert records[10] == {"ts": 210.0, "time": "1970-01-01T00:03:30.000Z",
                           "event": RECORDS_LOST_EVENT, "count": 15,
                           "first_seq": 11, "last_seq": 25}
    assert stderr_lines(err)[2] == (
        f"lanchatd: activity log {path}: writing resumed; 10 delayed record(s) written, "
        "15 lost (the queue was full)")


def test_close_writes_what_it_can_and_says_what_it_could_not(tmp_path: Path) -> None:
    path = full_disk(tmp_path)
    err = io.StringIO()
    log = ActivityLog(path=str(path), stderr=err)
    log.record(1.0, "start")
    log.record(1.1, "stop")
    log.close()
    assert log.pending() == 0
    assert stderr_lines(err)[-1] == (
        f"lanchatd: activity log {path}: 2 record(s) could not be written and are lost")

    other = tmp_path / "other"
    other.mkdir()
    path = full_disk(other)
    log = ActivityLog(path=str(path), stderr=io.StringIO())
    log.record(1.0, "start")
    path.unlink()
    log.record(1.1, "stop")  # within the retry interval: still waiting
    assert log.pending() == 2
    log.close()
    assert seqs(read_lines(path)) == [1, 2]


# -- file size limit (RLIMIT_FSIZE) in a child process ----------------------------------

CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from lanchatd.activity import ActivityLog

    path, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as the daemon's loop does at start
    log = ActivityLog(path=path, max_bytes=0, ring_size=1000)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    now = 1000.0
    for i in range(300):
        log.record(now, "join", room="4321", name="Åse-%d" % i, peer="127.0.0.1")
        now += 0.01
    during = log.pending()
    log.retry(now)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    log.retry(now + 1.0)
    print(json.dumps({"during": during, "after": log.pending(), "last_seq": log.last_seq}))
""")


def test_file_size_limit_efbig_no_partial_line_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "activity.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), "5000"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["last_seq"] == 300
    assert result["during"] > 200  # the limit stopped writing early on
    assert result["after"] == 0
    records = read_lines(path)  # every line whole: the cut line was taken back
    assert seqs(records) == list(range(1, 301))
    assert [r["name"] for r in records] == [f"Åse-{i}" for i in range(300)]
    errors = proc.stderr.splitlines()
    assert errors[0] == (
        f"lanchatd: cannot write the activity log {path}: File too large (EFBIG); "
        "records are kept in memory and the write is retried")
    assert len(errors) == 2
    assert errors[1].startswith(f"lanchatd: activity log {path}: writing resumed; ")


# -- subscribers ------------------------------------------------------------------------


def test_subscribers_get_each_new_entry_until_they_unsubscribe() -> None:
    log = ActivityLog()
    log.record(0.0, "start")
    got: list[int] = []
    unsubscribe = log.subscribe(lambda e: got.append(e["seq"]))
    log.record(1.0, "connect")
    log.record(2.0, "connect")
    unsubscribe()
    unsubscribe()  # a second call is harmless
    log.record(3.0, "connect")
    assert got == [2, 3]


def test_a_subscriber_that_raises_is_removed_and_reported_never_propagated() -> None:
    err = io.StringIO()
    log = ActivityLog(stderr=err)
    good: list[int] = []

    def broken(entry: Entry) -> None:
        raise ConnectionResetError("control client went away")

    log.subscribe(broken)
    log.subscribe(lambda e: good.append(e["seq"]))
    entry = log.record(1.0, "connect")
    log.record(2.0, "connect")
    assert entry["seq"] == 1
    assert good == [1, 2]
    lines = stderr_lines(err)
    assert len(lines) == 1
    assert "broken" in lines[0] and "ConnectionResetError" in lines[0]
    assert "removed" in lines[0]


def test_a_subscriber_may_unsubscribe_another_during_delivery() -> None:
    log = ActivityLog()
    got: list[str] = []
    stop_second: list[Any] = []

    def first(entry: Entry) -> None:
        got.append("first")
        stop_second[0]()

    log.subscribe(first)
    stop_second.append(log.subscribe(lambda e: got.append("second")))
    log.record(1.0, "connect")
    log.record(2.0, "connect")
    assert got == ["first", "first"]

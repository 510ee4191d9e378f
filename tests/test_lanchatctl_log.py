"""lanchatctl log as an audit trail: the rotated files as well as the daemon's memory,
with --since --until --event --room --name --address, as text or --json."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, Callable

import pytest
from lanchat_testing import Daemon
from test_lanchatctl import ctl, joined_json, ok
from test_lanchatctl_socket import NOBODY, needs_root, run_as

from lanchatctl.logs import LogFilter, merge, parse_time, read_files, rotated_files, select

NOW = 1_800_000_000.0


def test_times_are_iso_8601_or_a_time_ago() -> None:
    assert parse_time("2026-12-01T08:30:00Z") == datetime.datetime(
        2026, 12, 1, 8, 30, tzinfo=datetime.timezone.utc).timestamp()
    assert parse_time("2026-12-01T09:30:00+01:00") == parse_time("2026-12-01T08:30:00Z")
    assert parse_time("2026-12-01") == datetime.datetime(2026, 12, 1).timestamp()  # local
    assert parse_time("15m", now=NOW) == NOW - 900
    assert parse_time("2h", now=NOW) == NOW - 7200
    assert parse_time("1w", now=NOW) == NOW - 7 * 86400
    with pytest.raises(ValueError, match="not a time: 'yesterday-ish'"):
        parse_time("yesterday-ish")


def entry(seq: int, ts: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": ts, "event": event, **fields}


def test_the_filters() -> None:
    join = entry(3, 100.0, "join", room="1234", name="Ola Nordmann", addr="192.0.2.7:40000")
    kick = entry(4, 200.0, "kick", room="1234", name="bob", addr="[2001:db8::5]:5000",
                 actor="uid=0(root) pid=1")
    private = entry(5, 300.0, "private_message", room="77", name="kari", to="bob")
    everything = [join, kick, private]
    assert select(everything, LogFilter(), None) == everything
    assert select(everything, LogFilter(since=150.0), None) == [kick, private]
    assert select(everything, LogFilter(until=200.0), None) == [join, kick]
    assert select(everything, LogFilter(events=frozenset({"join", "kick"})), 1) == [kick]
    assert select(everything, LogFilter(room="1234"), None) == [join, kick]
    assert select(everything, LogFilter(name="bob"), None) == [kick, private]
    assert select(everything, LogFilter(name="Ola Nordmann"), None) == [join]
    for address in ("192.0.2.7", "192.0.2.0/24", "192.0.2.7:40000"):
        assert select(everything, LogFilter(address=address), None) == [join], address
    assert select(everything, LogFilter(address="2001:db8::/32"), None) == [kick]
    assert select(everything, LogFilter(address="198.51.100.0/24"), None) == []
    assert select(everything, LogFilter(), 0) == []


def test_rotated_files_are_read_oldest_first_and_merged_with_memory(tmp_path: Path) -> None:
    path = tmp_path / "activity.log"
    lines = {".3": [1, 2], ".2": [3], ".1": [4, 5], "": [6, 7]}
    for suffix, seqs in lines.items():
        text = "".join(json.dumps(entry(s, float(s), "connect")) + "\n" for s in seqs)
        (tmp_path / f"activity.log{suffix}").write_text(text)
    (tmp_path / "activity.log.old").write_text("not ours\n")
    (tmp_path / "activity.log.1").write_text(
        (tmp_path / "activity.log.1").read_text() + '{"seq":99,"ts":9')  # cut by a crash
    assert [Path(f).name for f in rotated_files(str(path))] == [
        "activity.log.3", "activity.log.2", "activity.log.1", "activity.log"]
    from_files = read_files(str(path))
    assert [e["seq"] for e in from_files] == [1, 2, 3, 4, 5, 6, 7]
    ring = [entry(s, float(s), "connect") for s in (6, 7, 8)]  # 8: not written yet
    assert [e["seq"] for e in merge(from_files, ring)] == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.fixture
def busy(start_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon whose memory holds 5 entries and whose files, rotated, hold the rest."""
    daemon = start_daemon("[limits]\njoin_burst = 100\n[log]\nlog_ring_size = 5\n"
                          "log_max_bytes = 2000\nlog_backups = 20\n")
    for i in range(12):
        client = joined_json(daemon, f"{1000 + i % 3}", f"person {i}")
        client.close()
    joined_json(daemon, "4444", "Ola Nordmann").close()
    daemon.wait_for_log(lambda e: e["event"] == "leave" and e.get("name") == "Ola Nordmann")
    assert daemon.log_file.with_name("activity.log.1").exists()
    return daemon


def log_json(daemon: Daemon, *args: str) -> list[dict[str, Any]]:
    result = ok(daemon, "--json", "log", *args)
    return [json.loads(line) for line in result.lines()]


def test_log_reads_the_rotated_files_too(busy: Daemon) -> None:
    everything = log_json(busy, "-n", "1000")
    assert everything[0]["event"] == "start" and everything[0]["seq"] == 1
    seqs = [e["seq"] for e in everything if "seq" in e]
    assert seqs == list(range(1, seqs[-1] + 1))  # nothing lost or doubled
    assert len(everything) > 5 + 20  # far more than the 5 the daemon keeps in memory
    assert all("time" in e and e["time"].endswith("Z") for e in everything)
    assert [e["seq"] for e in log_json(busy)] == seqs[-20:]  # -n 20 by default


def test_log_filters(busy: Daemon) -> None:
    joins = log_json(busy, "--event", "join", "-n", "100")
    assert [e["name"] for e in joins] == [f"person {i}" for i in range(12)] + ["Ola Nordmann"]
    ola = log_json(busy, "--name", "Ola Nordmann", "-n", "100")
    assert [e["event"] for e in ola] == ["join", "leave"]
    room = log_json(busy, "--room", "1001", "--event", "join", "-n", "100")
    assert [e["name"] for e in room] == ["person 1", "person 4", "person 7", "person 10"]
    assert log_json(busy, "--address", "192.0.2.0/24") == []
    loopback = log_json(busy, "--address", "127.0.0.0/8", "--event", "connect", "-n", "100")
    assert len(loopback) == 13
    # A time copied from the log itself (RFC 3339, milliseconds): all of them, no -n.
    since = joins[6]["time"]
    moment = parse_time(since)
    later = log_json(busy, "--event", "join", "--since", since)
    assert later == [e for e in joins if e["ts"] >= moment] and joins[6] in later
    assert len(later) >= 7
    earlier = log_json(busy, "--event", "join", "--until", since)
    assert earlier == [e for e in joins if e["ts"] <= moment]
    text = ok(busy, "log", "--name", "Ola Nordmann").lines()
    assert len(text) == 2 and ' join ' in text[0] and 'name="Ola Nordmann"' in text[0]


def test_bad_log_filters_are_usage_errors(busy: Daemon) -> None:
    result = ctl(busy, "log", "--since", "last tuesday")
    assert result.status == 2 and "not a time: 'last tuesday'" in result.err
    result = ctl(busy, "log", "--since", "1h", "--until", "2h")
    assert result.status == 2 and "--since is after --until" in result.err


@needs_root
def test_files_it_may_not_read_leave_the_memory_and_a_sentence(
        start_daemon: Callable[..., Daemon], open_dir: Path) -> None:
    """A member of the socket's group whom the log directory keeps out gets the entries
    in memory, and is told why there are no more."""
    path = str(open_dir / "control.sock")
    daemon = start_daemon('[control]\ncontrol_group = "nogroup"\n[log]\nlog_ring_size = 3\n',
                          args=["--control-socket", path])
    joined_json(daemon, "1234", "alice").close()
    daemon.wait_for_log(lambda e: e["event"] == "leave")
    status, out, err, _pid = run_as(NOBODY.pw_uid, NOBODY.pw_gid,
                                    ["--socket", path, "--json", "log"])
    assert status == 0, err
    assert len(out.splitlines()) == 3
    assert err == ("lanchatctl: only the 3 entries lanchatd keeps in memory: its log files "
                   f"({daemon.log_file} and the rotated ones) cannot be read: "
                   "Permission denied.\n")

"""One function per measure.  Each takes a running server (or starts its own) and
returns a dict of figures; checks that fail (a lost or duplicated message, a client
that could not join) are figures too, and ``check_clean`` turns them into an error.
"""

from __future__ import annotations

import compileall
import itertools
import multiprocessing
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lanchat_testing import REPO

from lanchat.protocol import discovery as disco

from . import load
from .load import Job
from .servers import (
    BENCH_CONFIG,
    Lanchatd,
    Relay,
    Server,
    cpu_seconds,
    rss_kib,
    wait_quiet,
)

CTX = multiprocessing.get_context("fork")
_pins = itertools.count(100000)


# Receivers run at this niceness: on a machine with few CPUs they take what the server
# and the senders leave, so the generator does not starve what it measures.  Both
# servers are measured the same way.
RECEIVER_NICE = 5


class BenchError(RuntimeError):
    pass


def next_pin() -> str:
    """A fresh room for every measured run (so ``seq`` starts at 1 and there is no
    history to replay)."""
    return str(next(_pins))


def mode_of(server: Server) -> str:
    return {"relay": "relay", "ngircd": "irc"}.get(server.kind, "lanchat")


class Worker:
    """A load-generator process and its pipe."""

    def __init__(self, job: Job) -> None:
        self.role = job.role
        self.pipe, child = CTX.Pipe()
        self.proc = CTX.Process(target=load.worker_main, args=(child, job), daemon=True)
        self.proc.start()
        child.close()
        self.said: dict[str, Any] = {}

    def send(self, *msg: Any) -> None:
        self.pipe.send(msg)

    def expect(self, kind: str, timeout: float) -> Any:
        """Wait for the worker to say ``kind``; what it says on the way is kept in
        ``said``."""
        deadline = time.monotonic() + timeout
        while True:
            if kind in self.said:
                return self.said.pop(kind)
            left = deadline - time.monotonic()
            if left <= 0 or not self.pipe.poll(left):
                raise BenchError(f"{self.role} worker {self.proc.pid}: no {kind!r} "
                                 f"within {timeout:g} s")
            try:
                what, payload = self.pipe.recv()
            except EOFError:
                raise BenchError(f"{self.role} worker {self.proc.pid} died "
                                 f"(exit {self.proc.exitcode})") from None
            if what == "error":
                raise BenchError(f"{self.role} worker failed:\n{payload}")
            self.said[what] = payload

    def close(self) -> None:
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.pipe.close()


@contextmanager
def workers(jobs: Sequence[Job]) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for job in jobs:
            started.append(Worker(job))
        yield started
    finally:
        for worker in started:
            if worker.proc.is_alive():
                try:
                    worker.send("stop")
                except OSError:
                    pass
        for worker in started:
            worker.close()


def _all_ready(ws: Sequence[Worker], timeout: float) -> None:
    failures: list[str] = []
    for w in ws:
        failures += w.expect("ready", timeout).get("failures", [])
    if failures:
        raise BenchError(f"{len(failures)} clients could not join; first: {failures[:3]}")


def _split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    parts = max(1, min(parts, len(items)))
    return [list(items[k::parts]) for k in range(parts)]


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# ----------------------------------------------------------------------------- streams

def _stream(server: Server, rooms: Sequence[dict[str, Any]], messages: int, size: int,
            procs: int, timeout: float, store_all: bool) -> dict[str, Any]:
    """Run senders flat out into ``rooms`` ({pin, senders: [names], receivers: [names]})
    and check every receiver's stream.  Returns the figures."""
    mode = mode_of(server)
    rspecs = []
    sspecs, numbers = [], []
    for room in rooms:
        total = len(room["senders"]) + len(room["receivers"])
        rspecs += [(room["pin"], name, total) for name in room["receivers"]]
        sspecs += [(room["pin"], name, total) for name in room["senders"]]
        numbers += list(range(len(room["senders"])))
    expected = {room["pin"]: len(room["senders"]) * messages for room in rooms}
    per_room = len(rooms[0]["senders"])
    if any(len(room["senders"]) != per_room for room in rooms):
        raise BenchError("every room needs the same number of senders")
    rjobs = [Job("receive", server.tcp, mode, part, timeout=timeout,
                 expected=per_room * messages, senders=rooms[0]["senders"],
                 messages=messages, store_all=store_all, nice=RECEIVER_NICE)
             for part in _split(rspecs, procs)]
    sjob = Job("send", server.tcp, mode, sspecs, timeout=timeout, messages=messages,
               size=size, numbers=numbers)
    with workers([*rjobs, sjob]) as ws:
        receivers, sender = ws[:-1], ws[-1]
        _all_ready(ws, timeout)
        cpu0 = cpu_seconds(server.pid)
        t0 = time.monotonic()
        for w in receivers:
            w.send("go", t0)
        sender.send("go", t0)
        rdone = [w.expect("done", timeout) for w in receivers]
        results = [r for d in rdone for r in d["clients"]]
        cpu1 = cpu_seconds(server.pid)
        sender.send("stop")
        sent = sender.expect("done", 30)
    done = [r["done_at"] for r in results]
    complete = all(done)
    elapsed = (max(done) if complete else time.monotonic()) - t0
    # Every stored stream was checked line by line; every other receiver of the room must
    # have the very same count and CRC-32 as the room's stored one.
    reference = {r["pin"]: r for r in results if r["stored"]}
    lost = duplicated = order = malformed = mismatched = 0
    for r in results:
        if r["stored"]:
            lost += r["lost"]
            duplicated += r["duplicated"]
            order += r["order_errors"]
            malformed += r["malformed"]
        else:
            ref = reference[r["pin"]]
            if (r["count"], r["crc"]) != (ref["count"], ref["crc"]):
                mismatched += 1
                lost += max(0, expected[r["pin"]] - r["count"])
                duplicated += max(0, r["count"] - expected[r["pin"]])
    deliveries = sum(r["count"] for r in results)
    return {
        "deliveries": deliveries,
        "expected_deliveries": sum(expected[r["pin"]] for r in results),
        "seconds": round(elapsed, 4),
        "deliveries_per_s": round(deliveries / elapsed) if elapsed > 0 else 0,
        "messages_per_s": round(sum(expected.values()) / elapsed) if elapsed > 0 else 0,
        "lost": lost, "duplicated": duplicated, "out_of_order": order,
        "malformed": malformed, "mismatched_streams": mismatched,
        "complete": complete,
        "receivers_checked_line_by_line": sum(r["stored"] for r in results),
        "server_cpu": round((cpu1 - cpu0) / elapsed, 2) if elapsed > 0 else 0,
        # The server's own CPU (user and system) per message sent into the rooms: the
        # figure the rest of the machine's load moves least.
        "server_cpu_us_per_message": round((cpu1 - cpu0) / max(1, sum(expected.values()))
                                           * 1e6, 2),
        "load_cpu_s": [d["cpu"] for d in rdone] + [sent["cpu"]],
        "failures": sent["failures"] + [f"{r['name']}: {r['error']}" for r in results
                                        if r["error"]],
    }


def fanout(server: Server, *, receivers: int = 50, senders: int = 1, messages: int = 10000,
           size: int = 64, procs: int = 2, timeout: float = 120.0,
           store_all: bool = False) -> dict[str, Any]:
    """R receivers and S senders in one room; each sender sends ``messages`` messages of
    ``size`` characters as fast as flow control allows."""
    room = {"pin": next_pin(), "senders": [f"s{i}" for i in range(senders)],
            "receivers": [f"r{i}" for i in range(receivers)]}
    out = _stream(server, [room], messages, size, procs, timeout, store_all)
    out.update(receivers=receivers, senders=senders, messages=messages * senders, size=size)
    return out


def small_rooms(server: Server, *, rooms: int = 20, messages: int = 1000, size: int = 64,
                senders: int = 1, receivers: int = 2, procs: int = 2,
                timeout: float = 120.0) -> dict[str, Any]:
    """Many small busy rooms: ``senders`` senders (``messages`` each) and ``receivers``
    receivers in each."""
    specs = [{"pin": next_pin(), "senders": [f"s{i}" for i in range(senders)],
              "receivers": [f"r{i}" for i in range(receivers)]} for _ in range(rooms)]
    out = _stream(server, specs, messages, size, procs, timeout, store_all=False)
    out.update(rooms=rooms, senders=senders, receivers=receivers,
               messages=messages * rooms * senders, size=size)
    return out


def latency(server: Server, *, receivers: int = 50, rate: float = 200.0,
            seconds: float = 5.0, size: int = 64, procs: int = 2,
            timeout: float = 60.0) -> dict[str, Any]:
    """One sender paced at ``rate`` messages a second, timestamps in the payload."""
    mode = mode_of(server)
    pin = next_pin()
    total = receivers + 1
    count = int(rate * seconds)
    rspecs = [(pin, f"r{i}", total) for i in range(receivers)]
    rjobs = [Job("receive", server.tcp, mode, part, timeout=timeout, expected=count,
                 latency=True, senders=["s0"], messages=count, nice=RECEIVER_NICE)
             for part in _split(rspecs, procs)]
    pjob = Job("pace", server.tcp, mode, [(pin, "s0", total)], timeout=timeout,
               rate=rate, count=count, size=size)
    with workers([*rjobs, pjob]) as ws:
        recv_ws, pacer = ws[:-1], ws[-1]
        _all_ready(ws, timeout)
        cpu0 = cpu_seconds(server.pid)
        t0 = time.monotonic() + 0.05
        for w in ws:
            w.send("go", t0)
        results = [r for w in recv_ws for r in w.expect("done", timeout)["clients"]]
        cpu1 = cpu_seconds(server.pid)
        pacer.send("stop")
        paced = pacer.expect("done", 30)
    lat_ms = [ns / 1e6 for r in results for ns in r["latencies_ns"]]
    got = sum(r["count"] for r in results)
    elapsed = max(r["done_at"] for r in results) - t0 if all(
        r["done_at"] for r in results) else seconds
    return {
        "receivers": receivers, "rate": rate, "messages": count, "samples": len(lat_ms),
        "p50_ms": round(percentile(lat_ms, 50), 3),
        "p99_ms": round(percentile(lat_ms, 99), 3),
        "max_ms": round(max(lat_ms, default=float("nan")), 3),
        "lost": count * receivers - got if got <= count * receivers else 0,
        "duplicated": max(0, got - count * receivers),
        "out_of_order": sum(r["order_errors"] for r in results),
        "sender_late_max_ms": round(paced["late_max"] * 1000, 3),
        "server_cpu": round((cpu1 - cpu0) / elapsed, 3) if elapsed > 0 else 0,
        "failures": paced["failures"] + [f"{r['name']}: {r['error']}" for r in results
                                         if r["error"]],
    }


# ----------------------------------------------------------------------------- idle clients

def _room_specs(n: int, room_size: int, settle: bool) -> list[list[load.Spec]]:
    """``n`` clients in rooms of ``room_size``, as a list of rooms."""
    rooms = []
    for start in range(0, n, room_size):
        pin = next_pin()
        size = min(room_size, n - start)
        rooms.append([(pin, f"idle{i}", size if settle else 0) for i in range(size)])
    return rooms


def _hold_jobs(server: Server, n: int, room_size: int, procs: int, timeout: float,
               connect_on_go: bool, window: int) -> list[Job]:
    mode = mode_of(server)
    rooms = _room_specs(n, room_size, settle=mode != "relay")
    return [Job("hold", server.tcp, mode, [spec for room in part for spec in room],
                timeout=timeout, window=window, connect_on_go=connect_on_go)
            for part in _split(rooms, procs)]


@contextmanager
def idle_clients(server: Server, n: int, *, room_size: int = 10, procs: int = 2,
                 timeout: float = 300.0) -> Iterator[None]:
    """``n`` clients joined in rooms of their own, idle, for the duration of the block."""
    if n <= 0:
        yield
        return
    with workers(_hold_jobs(server, n, room_size, procs, timeout, False, 128)) as ws:
        _all_ready(ws, timeout)
        yield
        for w in ws:
            w.send("stop")
        for w in ws:
            w.expect("done", 30)


def connections(server: Server, *, clients: int = 10000, room_size: int = 10,
                procs: int = 4, window: int = 128, timeout: float = 120.0
                ) -> dict[str, Any]:
    """``clients`` clients connect and join (rooms of ``room_size``), then idle.
    The server should be fresh: its memory growth is the clients' cost.

    ngIRCd listens with a backlog of 10: more connects in flight than that overflow it,
    and the kernel's SYN retransmits (1, 3, 7... s) would be measured instead of the
    server, so its clients connect at most 2 at a time per process.
    """
    if server.kind == "ngircd":
        window = min(window, 2)
    jobs = _hold_jobs(server, clients, room_size, procs, timeout, True, window)
    wait_quiet(server.pid)
    rss0 = rss_kib(server.pid)
    with workers(jobs) as ws:
        for w in ws:
            w.expect("ready", timeout)
        cpu0 = cpu_seconds(server.pid)
        t0 = time.monotonic()
        for w in ws:
            w.send("go", t0)
        joined = [w.expect("joined", timeout) for w in ws]
        wait_quiet(server.pid)
        # The server's own CPU for the joins (the rest of the machine's load is not in
        # it): the figure that holds still on a busy machine.
        cpu1 = cpu_seconds(server.pid)
        rss1 = rss_kib(server.pid)
        for w in ws:
            w.send("stop")
        done = [w.expect("done", 30) for w in ws]
    last = max(j["last"] for j in joined)
    n_joined = sum(j["joined"] for j in joined)
    failures = [f for d in done for f in d["failures"]]
    return {
        "clients": clients, "joined": n_joined,
        "settled": sum(j["ready"] for j in joined),
        "still_connected": sum(d["ready"] for d in done),
        "seconds": round(last - t0, 3),
        "joins_per_s": round(n_joined / (last - t0)) if last > t0 else 0,
        "server_cpu_us_per_join": round((cpu1 - cpu0) / max(1, n_joined) * 1e6, 1),
        # The load processes' own CPU until their clients were settled: they share the
        # CPUs with the server, so joins/s is bounded by both.
        "load_cpu_us_per_join": round(sum(j["cpu"] for j in joined) / max(1, n_joined) * 1e6,
                                      1),
        "rss_before_kib": rss0, "rss_after_kib": rss1,
        "rss_per_client_kib": round((rss1 - rss0) / max(1, n_joined), 2),
        "extra_presence": sum(d["extra_presence"] for d in done),
        "failures": failures[:10], "failed": len(failures),
    }


# ----------------------------------------------------------------------------- discovery

def discovery(server: Server, *, probes: int = 300, warmup: int = 20,
              timeout: float = 1.0) -> dict[str, Any]:
    """Round-trip time of the JSON probe and of DISCOVER_SERVER, one at a time."""
    out: dict[str, Any] = {"probes": probes}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.connect(("127.0.0.1", server.udp[1]))
        s.settimeout(timeout)
        for kind in ("json", "legacy"):
            rtts: list[float] = []
            lost = wrong = 0
            for i in range(warmup + probes):
                nonce = f"n{i}"
                probe = disco.encode_probe(nonce) if kind == "json" else disco.LEGACY_PROBE
                t = time.perf_counter()
                s.send(probe)
                try:
                    reply = s.recv(4096)
                except socket.timeout:
                    lost += 1
                    continue
                rtt = time.perf_counter() - t
                if server.kind == "relay":
                    ok = reply == probe
                elif kind == "json":
                    ok = disco.parse_announce(reply).nonce == nonce
                else:
                    ok = reply == disco.LEGACY_REPLY
                wrong += not ok
                if i >= warmup:
                    rtts.append(rtt * 1000)
            out[kind] = {"median_ms": round(statistics.median(rtts), 4) if rtts else None,
                         "p99_ms": round(percentile(rtts, 99), 4),
                         "lost": lost, "wrong": wrong}
    return out


# ----------------------------------------------------------------------------- startup

def startup(kind: str, *, runs: int = 10, tmp: Path | None = None) -> dict[str, Any]:
    """Time from exec to the readiness line (and, for lanchatd, to READY=1 on a notify
    socket we bind), ``runs`` times.

    lanchatd's starts share one state directory, as a daemon's starts do: an untimed
    first start makes the TLS key and the server id there (``first_start_ms``, once:
    the key is made by a child that imports ``cryptography``), and the timed starts
    load them.  lanchatd runs from a copy of the checkout's packages laid out as pip
    installs them (``installed_copy``).
    """
    ready: list[float] = []
    notified: list[float] = []
    first: list[float] = []
    with tempfile.TemporaryDirectory(dir=tmp) as base:
        site = installed_copy(Path(base) / "site") if kind != "relay" else ""
        state = str(Path(base) / "state")
        for i in range(runs if kind == "relay" else runs + 1):
            where = Path(base) / f"s{i}"
            where.mkdir()
            if kind == "relay":
                relay = Relay(where)
                t0 = time.monotonic()
                try:
                    relay.start()
                    ready.append((time.monotonic() - t0) * 1000)
                finally:
                    relay.stop()
                continue
            path = str(where / "notify.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.settimeout(10)
            got: list[float] = []

            def listen(sock: socket.socket = sock, got: list[float] = got) -> None:
                try:
                    while b"READY=1" not in sock.recv(4096):
                        pass
                    got.append(time.monotonic())
                except OSError:
                    pass

            thread = threading.Thread(target=listen, daemon=True)
            thread.start()
            daemon = Lanchatd(where, BENCH_CONFIG, env={"NOTIFY_SOCKET": path,
                                                         "PYTHONPATH": site},
                              args=["--state-dir", state])
            t0 = time.monotonic()
            try:
                daemon.start()
                if i == 0:
                    first.append((time.monotonic() - t0) * 1000)
                    continue
                ready.append((time.monotonic() - t0) * 1000)
                thread.join(10)
                if got:
                    notified.append((got[0] - t0) * 1000)
            finally:
                daemon.stop()
                sock.close()
    out: dict[str, Any] = {
        "runs": runs, "ready_median_ms": round(statistics.median(ready), 1),
        "ready_min_ms": round(min(ready), 1), "ready_max_ms": round(max(ready), 1),
    }
    if kind != "relay":
        out.update(first_start_ms=round(first[0], 1),
                   notify_median_ms=round(statistics.median(notified), 1) if notified else None,
                   notify_max_ms=round(max(notified), 1) if notified else None,
                   notify_missing=runs - len(notified))
    return out


def installed_copy(site: Path) -> str:
    """The checkout's ``lanchat`` and ``lanchatd`` copied into ``site`` as ``pip install``
    leaves them: bytecode compiled (pip compiles it at install; a checkout run with
    PYTHONDONTWRITEBYTECODE would compile every module at every start) and the message
    catalogues compiled to ``.mo`` (setup.py's build step; a checkout has only the
    ``.po``, which the daemon then compiles in memory at every start).  Returns the path
    for PYTHONPATH."""
    import shutil

    from lanchat import msgfmt

    for package in ("lanchat", "lanchatd"):
        shutil.copytree(REPO / package, site / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.po", "*.mo"))
        compileall.compile_dir(str(site / package), quiet=1)
    msgfmt.compile_tree(REPO / "lanchat" / "locale", site / "lanchat" / "locale")
    return str(site)


def check_clean(name: str, figures: dict[str, Any]) -> list[str]:
    """The correctness problems in a measure's figures (empty: none)."""
    problems = []
    for key in ("lost", "duplicated", "out_of_order", "malformed", "mismatched_streams",
                "failed", "extra_presence"):
        if figures.get(key):
            problems.append(f"{name}: {key} = {figures[key]}")
    if figures.get("failures"):
        problems.append(f"{name}: failures: {figures['failures'][:3]}")
    if figures.get("complete") is False:
        problems.append(f"{name}: not every receiver got everything in time")
    return problems

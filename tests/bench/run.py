"""The benchmark command: ``python -m tests.bench [MEASURE] [options]``.

Without a measure it runs the whole suite (docs/performance.md lists what and why).
Each measure is run ``--rounds`` times, alternating lanchatd, the bare relay and ngIRCd
(the order turns every round), each on a freshly started server; the best round of each
is kept, and lanchatd's figure is printed as a ratio to the relay's and to ngIRCd's.
The table goes to the terminal, every round's figures to a JSON file (``--json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: python tests/bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
    __package__ = "tests.bench"

from . import measures, micro, web
from .servers import KINDS, Lanchatd, raise_nofile, start_server

Figures = dict[str, Any]

# Sizes of the full suite (about 6 minutes on 2 CPUs) and of a smoke run (--quick).
FULL = {
    "fanout_messages": 200000, "latency_seconds": 5.0, "idle_clients": 5000,
    "small_rooms": 20, "small_room_messages": 10000, "busy_rooms": 20,
    "busy_room_messages": 5000, "clients": 10000, "probes": 500, "starts": 10,
    "web_messages": 40000,
}
QUICK = {
    "fanout_messages": 20000, "latency_seconds": 2.0, "idle_clients": 1000,
    "small_rooms": 10, "small_room_messages": 1000, "busy_rooms": 10,
    "busy_room_messages": 500, "clients": 1000, "probes": 100, "starts": 4,
    "web_messages": 5000,
}


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.rounds: int = args.rounds
        self.size = QUICK if args.quick else FULL
        self.profile: str | None = args.profile
        self.tmp = Path(tempfile.mkdtemp(prefix="lanchat-bench-"))
        self.results: dict[str, Any] = {}
        self.problems: list[str] = []
        # What ngIRCd lost or failed: a figure about the reference (it disconnects a
        # client 32 KiB behind), printed and kept, not a failure of the run.
        self.reference_notes: list[str] = []

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # -------------------------------------------------------------- alternation

    def alternate(self, name: str, measure: Callable[[Any], Figures],
                  key: str, better: str, kinds: Sequence[str] = KINDS
                  ) -> dict[str, Figures]:
        """Run ``measure(server)`` ``rounds`` times per kind on fresh servers, alternating
        (each round starts with the next kind); keep every round and the best by
        ``key``."""
        rounds: dict[str, list[Figures]] = {kind: [] for kind in kinds}
        for r in range(self.rounds):
            order = [*kinds[r % len(kinds):], *kinds[:r % len(kinds)]]
            for kind in order:
                where = self.tmp / f"{name}-{kind}-{r}"
                profile = (f"{self.profile}.{name}.{r}" if self.profile and kind == "lanchatd"
                           else None)
                server = start_server(kind, where, profile=profile)
                try:
                    figures = measure(server)
                finally:
                    server.stop()
                found = measures.check_clean(f"{name} ({kind})", figures)
                if kind == "ngircd":
                    self.reference_notes += found
                else:
                    self.problems += found
                rounds[kind].append(figures)
                self.say(f"  {name} {kind} round {r + 1}: {key} = {lookup(figures, key)}")
        best = {kind: pick(rounds[kind], key, better) for kind in kinds}
        self.results[name] = {"rounds": rounds, "best": best, "key": key}
        return best

    # -------------------------------------------------------------- measures

    def fanout(self, senders: int, receivers: int = 50, messages: int | None = None,
               size: int = 64) -> None:
        total = messages or self.size["fanout_messages"]
        per_sender = max(1, total // senders)
        self.say(f"fan-out: {receivers} receivers, {senders} sender(s), "
                 f"{per_sender * senders} messages of {size} characters")
        self.alternate(f"fanout_{receivers}r_{senders}s",
                       lambda s: measures.fanout(s, receivers=receivers, senders=senders,
                                                 messages=per_sender, size=size),
                       "deliveries_per_s", "high")

    def latency(self, receivers: int = 50, rate: float = 200.0) -> None:
        seconds = self.size["latency_seconds"]
        self.say(f"latency: {receivers} receivers, one sender at {rate:g} msg/s "
                 f"for {seconds:g} s")
        self.alternate(f"latency_{receivers}r_{rate:g}hz",
                       lambda s: measures.latency(s, receivers=receivers, rate=rate,
                                                  seconds=seconds),
                       "p99_ms", "low")

    def small(self, senders: int = 4, receivers: int = 2) -> None:
        """Many small busy rooms, on lanchatd and ngIRCd (the relay has no rooms)."""
        rooms, messages = self.size["busy_rooms"], self.size["busy_room_messages"]
        self.say(f"small rooms: {rooms} rooms of {senders} senders + {receivers} receivers,"
                 f" {messages} messages per sender")
        self.alternate(f"busy_rooms_{rooms}x{senders}s{receivers}r",
                       lambda s: measures.small_rooms(s, rooms=rooms, messages=messages,
                                                      senders=senders,
                                                      receivers=receivers),
                       "messages_per_s", "high", kinds=("lanchatd", "ngircd"))

    def idle(self, idle: int | None = None) -> None:
        """Small rooms on two lanchatd, one of them also holding ``idle`` idle clients,
        measured alternately."""
        idle = self.size["idle_clients"] if idle is None else idle
        rooms, messages = self.size["small_rooms"], self.size["small_room_messages"]
        self.say(f"idle scaling: {rooms} rooms of 1 sender + 2 receivers, "
                 f"{messages} messages each, with 0 and with {idle} idle clients")
        plain = Lanchatd(self.tmp / "idle-none").start()
        loaded = Lanchatd(self.tmp / "idle-some").start()
        rounds: dict[str, list[Figures]] = {"none": [], "idle": []}
        try:
            with measures.idle_clients(loaded, idle):
                for r in range(self.rounds):
                    order = [("none", plain), ("idle", loaded)]
                    for label, server in (order if r % 2 == 0 else order[::-1]):
                        figures = measures.small_rooms(server, rooms=rooms,
                                                       messages=messages)
                        figures["idle_clients"] = idle if label == "idle" else 0
                        self.problems += measures.check_clean(f"small rooms ({label})",
                                                              figures)
                        rounds[label].append(figures)
                        self.say(f"  small rooms, {figures['idle_clients']} idle, round "
                                 f"{r + 1}: messages_per_s = {figures['messages_per_s']}")
        finally:
            plain.stop()
            loaded.stop()
        best = {label: pick(rounds[label], "messages_per_s", "high") for label in rounds}
        self.results["small_rooms"] = {"rounds": rounds, "best": best,
                                       "key": "messages_per_s"}

    def connections(self, clients: int | None = None) -> None:
        clients = clients or self.size["clients"]
        self.say(f"connections: {clients} clients connect, join (rooms of 10) and idle")
        self.alternate(f"connections_{clients}",
                       lambda s: measures.connections(s, clients=clients),
                       "joins_per_s", "high")

    def discovery(self) -> None:
        probes = self.size["probes"]
        self.say(f"discovery: {probes} probes of each kind, one at a time")
        self.alternate("discovery", lambda s: measures.discovery(s, probes=probes),
                       "json_median_ms", "low", kinds=("relay", "lanchatd"))

    def startup(self) -> None:
        starts = self.size["starts"]
        self.say(f"startup: {starts} starts of each")
        kinds = ("relay", "lanchatd")
        rounds: dict[str, list[Figures]] = {kind: [] for kind in kinds}
        for r in range(self.rounds):
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                figures = measures.startup(kind, runs=starts, tmp=self.tmp)
                rounds[kind].append(figures)
                self.say(f"  startup {kind} round {r + 1}: ready median = "
                         f"{figures['ready_median_ms']} ms")
        best = {kind: pick(rounds[kind], "ready_median_ms", "low") for kind in kinds}
        self.results["startup"] = {"rounds": rounds, "best": best, "key": "ready_median_ms"}

    def web(self, receivers: int = 50, messages: int | None = None) -> None:
        """TCP and WebSocket receivers of one TCP sender, on one lanchatd (tests/bench/web.py)."""
        messages = messages or self.size["web_messages"]
        self.say(f"web: {receivers} TCP receivers, then {receivers} WebSocket receivers, "
                 f"{messages} messages each")
        server = Lanchatd(self.tmp / "web").start()
        try:
            result = web.compare(server, receivers=receivers, messages=messages,
                                 rounds=self.rounds, say=self.say,
                                 latency_seconds=self.size["latency_seconds"])
        finally:
            server.stop()
        self.results["web"] = {"best": result}

    def micro(self) -> None:
        self.say("micro: lanchatd's CPU per room message, without sockets")
        figures = {f"{m}_members": micro.core_cost(members=m) for m in (51, 3)}
        self.results["micro"] = {"best": figures, "json_floor": micro.json_floor()}
        for name, f in figures.items():
            self.say(f"  {name}: {f['us_per_message']} us per message")

    # -------------------------------------------------------------- output

    def table(self) -> list[dict[str, Any]]:
        """One row per figure: lanchatd's value, the relay's and ngIRCd's, lanchatd's
        ratio to each, the target and whether it holds."""
        rows: list[dict[str, Any]] = []
        res = self.results

        def ratio(ours: Any, base: Any) -> float | None:
            return (round(ours / base, 3) if isinstance(ours, (int, float))
                    and isinstance(base, (int, float)) and base else None)

        def row(measure: str, figure: str, unit: str, ours: Any, relay: Any = None,
                irc: Any = None, target: str = "", holds: bool | None = None) -> None:
            rows.append({"measure": measure, "figure": figure, "unit": unit,
                         "lanchatd": ours, "relay": relay, "relay_ratio": ratio(ours, relay),
                         "ngircd": irc, "ngircd_ratio": ratio(ours, irc),
                         "target": target, "holds": holds})

        def clean(f: Figures) -> bool:
            return not (f["lost"] or f["duplicated"] or f["out_of_order"])

        def counts(f: Figures | None) -> str | None:
            return None if f is None else (f"{f['lost']} / {f['duplicated']} / "
                                           f"{f['out_of_order']}")

        for _name, b in ((n, r["best"]) for n, r in res.items() if n.startswith("fanout_")):
            ours, base, irc = b["lanchatd"], b["relay"], b.get("ngircd")
            ok = (ours["deliveries_per_s"] >= 0.9 * base["deliveries_per_s"]
                  and (irc is None or ours["deliveries_per_s"]
                       >= 1.5 * irc["deliveries_per_s"]) and clean(ours))
            row(f"fan-out {ours['receivers']} receivers, {ours['senders']} sender(s)",
                "deliveries/s", "1/s", ours["deliveries_per_s"], base["deliveries_per_s"],
                irc and irc["deliveries_per_s"],
                ">= 0.9 x relay, >= 1.5 x ngIRCd, 0 lost/dup", ok)
            row("", "lost / duplicated / out of order", "", counts(ours), counts(base),
                counts(irc))
            row("", "server CPU while measured", "CPUs", ours["server_cpu"],
                base["server_cpu"], irc and irc["server_cpu"])
        for _name, b in ((n, r["best"]) for n, r in res.items() if n.startswith("latency_")):
            ours, base, irc = b["lanchatd"], b["relay"], b.get("ngircd")
            title = f"latency {ours['rate']:g} msg/s into {ours['receivers']}"
            row(title, "p50", "ms", ours["p50_ms"], base["p50_ms"], irc and irc["p50_ms"])
            row("", "p99", "ms", ours["p99_ms"], base["p99_ms"], irc and irc["p99_ms"],
                "<= 1.2 x relay, <= ngIRCd", ours["p99_ms"] <= 1.2 * base["p99_ms"]
                and (irc is None or ours["p99_ms"] <= irc["p99_ms"]) and clean(ours))
            row("", "max", "ms", ours["max_ms"], base["max_ms"], irc and irc["max_ms"])
        for _name, b in ((n, r["best"]) for n, r in res.items() if n.startswith("busy_rooms_")):
            ours, irc = b["lanchatd"], b["ngircd"]
            row(f"small rooms ({ours['rooms']} x {ours['senders']} senders + "
                f"{ours['receivers']} receivers)", "messages/s", "1/s",
                ours["messages_per_s"], None, irc["messages_per_s"], ">= 1.0 x ngIRCd",
                ours["messages_per_s"] >= irc["messages_per_s"] and clean(ours))
            row("", "server CPU while measured", "CPUs", ours["server_cpu"], None,
                irc["server_cpu"])
            row("", "server CPU per message", "us", ours.get("server_cpu_us_per_message"),
                None, irc.get("server_cpu_us_per_message"))
        if "small_rooms" in res:
            b = res["small_rooms"]["best"]
            none, idle = b["none"], b["idle"]
            row(f"idle scaling: small rooms ({none['rooms']} x 3), 0 idle", "messages/s",
                "1/s", none["messages_per_s"], target="(reference)")
            row(f"small rooms, {idle['idle_clients']} idle", "messages/s", "1/s",
                idle["messages_per_s"], target=">= 0.8 x with 0 idle",
                holds=idle["messages_per_s"] >= 0.8 * none["messages_per_s"])
        for _name, b in ((n, r["best"]) for n, r in res.items() if n.startswith("connections_")):
            ours, base, irc = b["lanchatd"], b["relay"], b.get("ngircd")
            row(f"{ours['clients']} joined idle clients", "RSS growth per client", "KiB",
                ours["rss_per_client_kib"], base["rss_per_client_kib"],
                irc and irc["rss_per_client_kib"], "<= 1.5 KiB",
                ours["rss_per_client_kib"] <= 1.5)
            row("", "joins/s", "1/s", ours["joins_per_s"], base["joins_per_s"],
                irc and irc["joins_per_s"], ">= 10,000", ours["joins_per_s"] >= 10000)
            row("", "server CPU per join", "us", ours.get("server_cpu_us_per_join"),
                base.get("server_cpu_us_per_join"),
                irc and irc.get("server_cpu_us_per_join"))
            row("", "load generator CPU per join", "us", ours.get("load_cpu_us_per_join"),
                base.get("load_cpu_us_per_join"), irc and irc.get("load_cpu_us_per_join"))
        if "discovery" in res:
            b = res["discovery"]["best"]
            ours, base = b["lanchatd"], b["relay"]
            row("discovery", "JSON probe median", "ms", ours["json"]["median_ms"],
                base["json"]["median_ms"], None, "<= 1 ms", ours["json"]["median_ms"] <= 1)
            row("", "DISCOVER_SERVER median", "ms", ours["legacy"]["median_ms"],
                base["legacy"]["median_ms"], None, "<= 1 ms",
                ours["legacy"]["median_ms"] <= 1)
        if "startup" in res:
            b = res["startup"]["best"]
            ours, base = b["lanchatd"], b["relay"]
            row("startup", "exec to readiness line, median", "ms", ours["ready_median_ms"],
                base["ready_median_ms"], None, "<= 100 ms", ours["ready_median_ms"] <= 100)
            row("", "exec to READY=1, median", "ms", ours["notify_median_ms"],
                base["ready_median_ms"])
            row("", "first start (TLS key made), once", "ms", ours.get("first_start_ms"),
                base["ready_median_ms"])
        if "web" in res:
            b = res["web"]["best"]
            ws, tcp = b["ws"], b["tcp"]
            # The relay column holds the same figure for TCP members (the measure's name
            # says so).
            row(f"fan-out {ws['receivers']} WebSocket receivers (vs TCP ones)",
                "server CPU per delivery", "us", ws["cpu_us_per_delivery"],
                tcp["cpu_us_per_delivery"], target="<= 1.5 x TCP",
                holds=b["ws_over_tcp"] <= 1.5)
            row("", "deliveries/s", "1/s", ws["deliveries_per_s"], tcp["deliveries_per_s"])
            lws, ltcp = b["latency_ws"], b["latency_tcp"]
            row(f"latency {lws['rate']:g} msg/s into {lws['receivers']} WebSocket (vs TCP)",
                "p50", "ms", lws["p50_ms"], ltcp["p50_ms"])
            row("", "p99", "ms", lws["p99_ms"], ltcp["p99_ms"], target="<= 5 ms",
                holds=lws["p99_ms"] <= 5)
        if "micro" in res:
            for name, f in res["micro"]["best"].items():
                three = f["members"] == 3
                row("CPU per room message (no sockets)" if name.startswith("51") else "",
                    f"{f['members']} members", "us", f["us_per_message"],
                    target="<= 2.5 us" if three else "",
                    holds=f["us_per_message"] <= 2.5 if three else None)
            floor = res["micro"].get("json_floor")
            if floor:
                row("", "JSON line decoded, nothing else (reference)", "us",
                    floor["decode_us_per_line"])
                row("", "decoded and a message line encoded (reference)", "us",
                    floor["decode_encode_us_per_line"])
        return rows


def pick(rounds: Sequence[Figures], key: str, better: str) -> Figures:
    """The best round by ``key``."""
    return (max if better == "high" else min)(rounds, key=lambda f: float(lookup(f, key)))


def lookup(figures: Figures, key: str) -> Any:
    """``figures[key]``, where ``json_median_ms`` also finds ``figures["json"]["median_ms"]``."""
    if key in figures:
        return figures[key]
    head, _, rest = key.partition("_")
    return figures[head][rest]


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "host": platform.node(), "cpu": model, "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1048576, 1), "kernel": platform.release(),
        "python": platform.python_version(), "load_average": os.getloadavg(),
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    head = ("measure", "figure", "lanchatd", "relay", "÷ relay", "ngIRCd", "÷ ngIRCd",
            "target", "holds")
    body = [(r["measure"], f"{r['figure']}" + (f" ({r['unit']})" if r["unit"] else ""),
             fmt(r["lanchatd"]), fmt(r["relay"]), fmt(r["relay_ratio"]), fmt(r["ngircd"]),
             fmt(r["ngircd_ratio"]), r["target"],
             fmt(r["holds"]) if r["holds"] is not None else "")
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


MEASURES: dict[str, tuple[str, Callable[[Suite, argparse.Namespace], None]]] = {
    "fanout": ("R receivers, S senders in one room, as fast as flow control allows",
               lambda s, a: s.fanout(a.senders, a.receivers, a.messages, a.size)),
    "latency": ("R receivers, one sender paced at RATE msg/s: p50/p99/max delay",
                lambda s, a: s.latency(a.receivers, a.rate)),
    "small": ("small busy rooms (4 senders, 2 receivers each), lanchatd and ngIRCd",
              lambda s, a: s.small()),
    "idle": ("small rooms with 0 and with N idle clients in other rooms",
             lambda s, a: s.idle(a.idle)),
    "connections": ("N clients connect, join and idle: RSS per client, joins/s",
                    lambda s, a: s.connections(a.clients)),
    "discovery": ("round trip of the JSON probe and of DISCOVER_SERVER",
                  lambda s, a: s.discovery()),
    "startup": ("exec to readiness line, and to READY=1 on a notify socket",
                lambda s, a: s.startup()),
    "micro": ("lanchatd's CPU per room message, without sockets", lambda s, a: s.micro()),
    "web": ("R TCP receivers, then R WebSocket ones: server CPU per delivery",
            lambda s, a: s.web(a.receivers, a.messages)),
}


def run_all(suite: Suite, args: argparse.Namespace) -> None:
    suite.fanout(1)
    suite.fanout(4)
    suite.latency()
    suite.small()
    suite.idle()
    suite.connections()
    suite.discovery()
    suite.startup()
    suite.micro()
    suite.web()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Benchmarks of lanchatd beside the bare relay and ngIRCd "
        "(docs/performance.md).")
    p.add_argument("measure", nargs="?", default="all", choices=["all", *MEASURES],
                   help="one measure, or all (default): "
                   + "; ".join(f"{k}: {v[0]}" for k, v in MEASURES.items()))
    p.add_argument("--rounds", type=int, default=2, help="rounds per server (default 2)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--json", default="bench-results.json", metavar="PATH",
                   help="where to write every figure (default: bench-results.json)")
    p.add_argument("--profile", metavar="PREFIX",
                   help="run lanchatd under cProfile; statistics go to PREFIX.MEASURE.ROUND")
    p.add_argument("--receivers", type=int, default=50)
    p.add_argument("--senders", type=int, default=1)
    p.add_argument("--messages", type=int, default=None, help="fan-out: messages in all")
    p.add_argument("--size", type=int, default=64, help="characters of message text")
    p.add_argument("--rate", type=float, default=200.0, help="latency: messages a second")
    p.add_argument("--idle", type=int, default=None, help="idle: idle clients")
    p.add_argument("--clients", type=int, default=None, help="connections: clients")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.rounds < 1:
        parser().error("--rounds must be at least 1")
    limit = raise_nofile()  # the servers started below inherit it
    suite = Suite(args)
    started = time.monotonic()
    info = machine()
    suite.say(f"lanchat benchmarks on {info['host']} ({info['cpus']} CPUs, {info['cpu']}); "
              f"RLIMIT_NOFILE {limit}; {args.rounds} rounds")
    try:
        if args.measure == "all":
            run_all(suite, args)
        else:
            MEASURES[args.measure][1](suite, args)
    finally:
        rows = suite.table() if suite.results else []
        elapsed = round(time.monotonic() - started, 1)
        info["load_average_end"] = os.getloadavg()
        report = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": info, "seconds": elapsed, "rounds": args.rounds,
            "quick": args.quick, "table": rows, "problems": suite.problems,
            "reference_notes": suite.reference_notes,
            "results": suite.results,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        if rows:
            print(format_table(rows))
        print(f"\n{elapsed} s; figures in {args.json}")
        for note in suite.reference_notes:
            print(f"ngIRCd: {note}")
        for problem in suite.problems:
            print(f"PROBLEM: {problem}")
        shutil.rmtree(suite.tmp, ignore_errors=True)
    return 1 if suite.problems else 0


if __name__ == "__main__":
    sys.exit(main())

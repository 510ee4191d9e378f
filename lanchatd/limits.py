"""Rate limits by source, and the activity records a source may cause at will.

Theory of operation
-------------------
Some of what a client does costs it nothing but costs the server a little each time:
opening a connection, guessing a PIN.  These are limited with token buckets
(``Bucket``) kept per address, per network (the address's /24 for IPv4, /64 for
IPv6: ``network_of``) and for the whole server; a network and the server may spend a
fixed multiple of one address's budget (``SourceLimit``).  An attempt is allowed only
when every one of its three buckets has a token, and a refused attempt takes a token
from none of them: a refusal costs nobody else anything.

The activity log is an audit trail, and an audit trail an attacker can write is one
it can flush away: 3,900 connections a second from one address used to rotate its own
``join`` record out of the log file in under 30 s, and out of the 1,000-entry ring in
under a second.  So the records a source can cause at will (connections it opens,
refusals it meets, protocol errors it makes, closes of connections that never joined,
its messages refused, its disconnections for flooding)
are written one by one only while that source's *record budget* lasts, and while the
server's does (``SourceRecords``).  Past it they are counted, per address, and one
``connection_summary`` record per address says what was counted: at most once every
``SUMMARY_INTERVAL`` while it goes on, and once the address has been quiet for
``QUIET_SECONDS``.  Records that matter one by one (a join, a leave, a kick) never go
through this: they are limited by what causes them (the join rate).

Everything here takes the time as a parameter (monotonic seconds for budgets and
deadlines, wall-clock seconds for what a person reads); nothing reads a clock.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any


class TokenBucket:
    """A token bucket's arithmetic: ``rate`` tokens a second, at most ``burst`` saved up,
    over the ``tokens`` and ``last`` (when they were counted) of the class using it:
    ``Bucket``, or the core's ``Conn``, which keeps its own two numbers (one object less
    for every connection).  (Their slots are the subclasses': mypy, seeing the empty
    ``__slots__`` here, is told so line by line.)"""

    __slots__ = ()
    tokens: float
    last: float

    def refill(self, rate: float, burst: float, now: float) -> float:
        """Add what ``rate`` earned since the last call; the tokens now."""
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(float(burst), self.tokens + elapsed * rate)  # type: ignore[misc]
        self.last = now  # type: ignore[misc]
        return self.tokens

    def take(self, rate: float, burst: float, now: float) -> bool:
        self.refill(rate, burst, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0  # type: ignore[misc]
            return True
        return False

    def wait(self, rate: float) -> float:
        """Seconds until one token is available."""
        return 0.0 if self.tokens >= 1.0 or rate <= 0 else (1.0 - self.tokens) / rate

    def full(self, rate: float, burst: float, now: float) -> bool:
        return self.tokens + (now - self.last) * rate >= burst


class Bucket(TokenBucket):
    """A token bucket of its own (per source, discovery probes)."""

    __slots__ = ("last", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = float(burst)
        self.last = now


def peer_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer's address as the kernel wrote it, its zone dropped and an IPv4-mapped IPv6
    address (a dual-stack socket's IPv4 peer) as the IPv4 one; None if it is none."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def network_of(host: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address belongs to, as a key (remembered for the
    4,096 addresses seen last: parsing it with ``ipaddress`` was a tenth of a join)."""
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() and p.isascii() and int(p) <= 255
                               and (p == "0" or p[0] != "0") for p in parts):
        # A dotted quad, as the kernel writes every IPv4 peer: its /24 without the
        # ipaddress module, also for addresses never seen (a churn of thousands).
        return f"{parts[0]}.{parts[1]}.{parts[2]}.0/24"
    address = peer_address(host)
    if address is None:
        return host
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


#: Sources whose buckets are kept at most, per kind of limit; past it the ones that
#: have refilled, then the oldest half, are forgotten.
MAX_SOURCES = 4096
#: A network (/24, /64) may spend this many times one address's budget, and all
#: addresses together this many times: asking from many addresses gains little.
NETWORK_FACTOR = 4
SERVER_FACTOR = 16
#: Whose budget was spent, in a refusal: the address's, its network's or everyone's.
ADDRESS, NETWORK, SERVER = "address", "network", "server"


class SourceLimit:
    """One kind of attempt (a join, a connection), limited per address, per network
    and for the whole server."""

    __slots__ = ("addresses", "networks")

    def __init__(self) -> None:
        self.addresses: dict[str, Bucket] = {}
        self.networks: dict[str, Bucket] = {}  # and "*" for the whole server

    def take(self, host: str, rate: float, burst: float,
             mono: float) -> tuple[str, float] | None:
        """Take one attempt of ``host`` from its three buckets; if one of them is
        empty, whose it is (ADDRESS, NETWORK, SERVER) and the seconds until it has a
        token, and nothing is taken from any."""
        checks = (
            (self.addresses, host, 1, ADDRESS),
            (self.networks, network_of(host), NETWORK_FACTOR, NETWORK),
            (self.networks, "*", SERVER_FACTOR, SERVER),
        )
        buckets = []
        for table, key, factor, whose in checks:
            bucket = table.get(key)
            if bucket is None:
                if len(table) >= MAX_SOURCES:
                    self.prune(rate, burst, mono)
                bucket = table[key] = Bucket(burst * factor, mono)
            if bucket.refill(rate * factor, burst * factor, mono) < 1.0:
                return whose, bucket.wait(rate * factor)
            buckets.append(bucket)
        for bucket in buckets:
            bucket.tokens -= 1.0
        return None

    def prune(self, rate: float, burst: float, mono: float) -> None:
        """Forget buckets that have refilled; if every tracked source is still limited
        and there are too many, the oldest half."""
        for table, factor in ((self.addresses, 1), (self.networks, NETWORK_FACTOR)):
            for key in [k for k, b in table.items()
                        if k != "*" and b.full(rate * factor, burst * factor, mono)]:
                del table[key]
            if len(table) >= MAX_SOURCES:
                oldest = sorted(table, key=lambda k: table[k].last)
                for key in oldest[: len(oldest) // 2]:
                    if key != "*":
                        del table[key]


#: Records one address may cause one by one at once, and then one every
#: 1 / RECORD_RATE seconds; the server's budget is SERVER_RECORD_FACTOR times that.
#: Twenty is more than a person makes mistyping a PIN a few times, or trying `nc`;
#: one address can then push the 1,000-entry ring over in 50 minutes, not a second.
RECORD_BURST = 20.0
RECORD_RATE = 1.0 / 3.0
SERVER_RECORD_FACTOR = 12
#: A tally is written at least this often while its address goes on...
SUMMARY_INTERVAL = 60.0
#: ... and once the address has caused nothing for this long.
QUIET_SECONDS = 5.0
#: Addresses counted each under its own name at most; the others' counts go under "*".
MAX_TALLIES = 256
#: The summary record's event name.
SUMMARY_EVENT = "connection_summary"


class Tally:
    """What one address caused and was not written one by one, since ``first``."""

    __slots__ = ("counts", "first", "last", "latest", "reasons", "started")

    def __init__(self, now: float, mono: float) -> None:
        self.counts: dict[str, int] = {}  # event name -> records not written
        self.reasons: dict[str, int] = {}  # refused connections by reason
        self.first = now  # wall clock: when the first of these happened
        self.latest = now  # wall clock: when the last of these happened
        self.started = mono  # monotonic: when this tally was opened (or last written)
        self.last = mono  # monotonic: when the last of these happened


class SourceRecords:
    """The record budget of each address and of the server, and the tallies of what
    was counted instead of written (see the module's docstring)."""

    def __init__(self, mono: float) -> None:
        self.budgets: dict[str, Bucket] = {}
        self.server = Bucket(RECORD_BURST * SERVER_RECORD_FACTOR, mono)
        self.tallies: dict[str, Tally] = {}
        # When summaries() next has work, at the latest (it may find none yet: a tally
        # that kept counting is due later); the loop asks every pass, so it is kept,
        # not computed over the tallies each time.
        self._due: float | None = None

    def admit(self, host: str, mono: float) -> bool:
        """May a record caused by ``host`` be written one by one now?  (It takes from
        the address's budget, and from the server's; an address already counted is
        counted until its tally is written.)"""
        if host in self.tallies:
            return False
        budget = self.budgets.get(host)
        if budget is None:
            if len(self.budgets) >= MAX_SOURCES:
                self._prune(mono)
            budget = self.budgets[host] = Bucket(RECORD_BURST, mono)
        if budget.refill(RECORD_RATE, RECORD_BURST, mono) < 1.0:
            return False
        if not self.server.take(RECORD_RATE * SERVER_RECORD_FACTOR,
                                RECORD_BURST * SERVER_RECORD_FACTOR, mono):
            return False
        budget.tokens -= 1.0
        return True

    def count(self, host: str, event: str, reason: str | None, now: float,
              mono: float, weight: int = 1) -> None:
        """Count a record that was not written (``reason``: a refused connection's
        greeting status, else None; ``weight``: what it stood for, 1 but for a
        ``refused_messages`` record, its messages).  An address whose own budget is spent
        is counted under its own name; one that met only the server's budget (many
        addresses at once), or one past MAX_TALLIES, under "*"."""
        key = host
        if host not in self.tallies:
            budget = self.budgets.get(host)
            own = budget is not None and budget.tokens < 1.0
            if not own or len(self.tallies) >= MAX_TALLIES:
                key = "*"
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = Tally(now, mono)
            if self._due is None or mono + QUIET_SECONDS < self._due:
                self._due = mono + QUIET_SECONDS
        tally.counts[event] = tally.counts.get(event, 0) + weight
        if reason is not None:
            tally.reasons[reason] = tally.reasons.get(reason, 0) + 1
        tally.last = mono
        tally.latest = now

    def next_due(self) -> float | None:
        """When the next summary may be due (monotonic), if any tally is open."""
        return self._due

    def summaries(self, now: float, mono: float, *,
                  every: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """The summary records due now (all of them with ``every``: at shutdown),
        as (event, fields).  A tally whose address went quiet is closed; one still
        going on starts counting again from now."""
        out: list[tuple[str, dict[str, Any]]] = []
        for key in sorted(self.tallies):
            tally = self.tallies[key]
            quiet = mono - tally.last >= QUIET_SECONDS
            if not (every or quiet or mono - tally.started >= SUMMARY_INTERVAL):
                continue
            fields: dict[str, Any] = {
                "addr": key, "since": round(tally.first, 3),
                "seconds": round(max(0.0, tally.latest - tally.first), 1),
                "counts": dict(sorted(tally.counts.items())),
            }
            refused = tally.counts.get("refused_connection", 0)
            if refused:
                fields["refused"] = refused
                fields["reasons"] = dict(sorted(tally.reasons.items()))
            out.append((SUMMARY_EVENT, fields))
            if quiet or every:
                del self.tallies[key]
            else:
                self.tallies[key] = Tally(now, mono)
        self._due = min((min(t.last + QUIET_SECONDS, t.started + SUMMARY_INTERVAL)
                         for t in self.tallies.values()), default=None)
        return out

    def _prune(self, mono: float) -> None:
        for host in [h for h, b in self.budgets.items()
                     if h not in self.tallies and b.full(RECORD_RATE, RECORD_BURST, mono)]:
            del self.budgets[host]
        if len(self.budgets) >= MAX_SOURCES:
            oldest = sorted(self.budgets, key=lambda h: self.budgets[h].last)
            for host in oldest[: len(oldest) // 2]:
                if host not in self.tallies:
                    del self.budgets[host]

    def prune(self, mono: float) -> None:
        """Forget the budgets of addresses that have refilled (once a minute)."""
        self._prune(mono)

"""``lanchat doctor``: why the client finds (or does not find) a server, in plain words.

Theory of operation.  The doctor runs one discovery round on every path at once, the
same round ``lanchat`` runs (``discovery.run_round``), with a nonce per target so each
answer says which path carried it:

* the limited broadcast 255.255.255.255 and each interface's directed broadcast;
* the IPv6 all-nodes group ff02::1 of each interface;
* a unicast probe to each ``--host`` and to the last server joined;
* DNS-SD over mDNS (``_lanchat._tcp``, when python-zeroconf is installed), each
  service found being asked by a unicast probe too.

Unlike ``lanchat`` it waits the whole time instead of stopping when the answers settle,
so every path has its chance.  Then it tries a TCP connect (and closes it at once) to
the chat port of each server that answered, of each ``--host`` and of each mDNS
service, and to the web port where the announce names one.  Nothing else is sent, and
nothing needs root.

``diagnose`` turns what was seen into findings: a code for scripts (``--json``), a
sentence and the next step for a person.  It is pure (a ``Report`` in, findings out),
so the rules are tested without a network.

Exit status: 0 when a server that accepts people was found and its chat port
connects, 1 otherwise, 2 bad usage.
"""

from __future__ import annotations

import argparse
import errno
import json
import selectors
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lanchat import __version__
from lanchat.client import discovery, i18n, netif, pinning
from lanchat.client.connection import format_address, parse_server
from lanchat.client.i18n import _
from lanchat.client.messages import clean, state_text
from lanchat.client.options import port_arg, seconds_arg
from lanchat.client.settings import (
    DEFAULT_CHAT_PORT,
    DEFAULT_DISCOVERY_PORT,
    load_last_server,
)

DEFAULT_WAIT = 2.0
CONNECT_SECONDS = 2.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BROADCAST_PATHS = ("broadcast", "directed")


# ------------------------------------------------------------------ what was seen


@dataclass(frozen=True)
class AddressInfo:
    address: str
    prefix: int
    scope: str
    broadcast: str | None


@dataclass(frozen=True)
class InterfaceInfo:
    name: str
    up: bool
    loopback: bool
    addresses: tuple[AddressInfo, ...]


@dataclass(frozen=True)
class ProbeInfo:
    path: str
    target: str
    interface: str
    error: str | None  # None: sent


@dataclass(frozen=True)
class Answer:
    path: str
    target: str
    interface: str
    source: str
    ms: float


@dataclass(frozen=True)
class PortCheck:
    kind: str  # "chat", "tls" or "web"
    host: str
    port: int
    result: str  # "open", "refused", "timeout", "unreachable" or "error"
    ms: float | None = None
    detail: str = ""

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)


@dataclass
class ServerInfo:
    server_id: str
    name: str
    state: str
    version: str
    host: str
    port: int
    answers: list[Answer] = field(default_factory=list)
    checks: list[PortCheck] = field(default_factory=list)
    web_port: int | None = None
    tls_port: int | None = None
    tls_fingerprint: str | None = None
    # What this client makes of that key (lanchat.client.pinning): "known", "new",
    # "changed" (another key is remembered for this id: lanchat refuses it), or "".
    pin: str = ""

    @property
    def paths(self) -> list[str]:
        return sorted({a.path for a in self.answers}, key=PATH_ORDER.index)


@dataclass(frozen=True)
class HostInfo:
    """A host asked by unicast (``--host``, the last server joined)."""

    text: str
    address: str | None  # None: the name did not resolve
    port: int
    origin: str  # "option" or "last_server"
    detail: str = ""


@dataclass(frozen=True)
class MdnsInfo:
    available: bool
    reason: str
    services: tuple[tuple[str, tuple[str, ...], int], ...] = ()  # name, addresses, port


@dataclass(frozen=True)
class Finding:
    code: str
    text: str
    next_step: str
    server: str = ""  # the server id it is about, if any


@dataclass
class Report:
    discovery_port: int
    waited: float
    interfaces: list[InterfaceInfo]
    probes: list[ProbeInfo]
    hosts: list[HostInfo]
    mdns: MdnsInfo
    servers: list[ServerInfo]
    host_checks: list[PortCheck]
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return any(s.state == "active" and _chat_open(s) for s in self.servers)


PATH_ORDER = ("broadcast", "directed", "ipv6", "unicast", "mdns")


def path_name(path: str) -> str:
    return {
        "broadcast": _("limited broadcast"),
        "directed": _("directed broadcast"),
        "ipv6": _("IPv6 all-nodes"),
        "unicast": _("unicast"),
        "mdns": _("mDNS"),
    }.get(path, path)


def _chat_open(server: ServerInfo) -> bool:
    return any(c.kind in ("chat", "tls") and c.result == "open" for c in server.checks)


# ------------------------------------------------------------------ looking


def connect_all(targets: Sequence[tuple[str, str, int]],
                timeout: float = CONNECT_SECONDS) -> list[PortCheck]:
    """A non-blocking TCP connect to each (kind, host, port), all at once; each socket
    is closed as soon as its connect is decided."""
    checks: dict[int, PortCheck] = {}
    pending: dict[socket.socket, tuple[int, str, str, int, float]] = {}
    with selectors.DefaultSelector() as selector:
        for number, (kind, host, port) in enumerate(targets):
            try:
                info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0,
                                          socket.AI_NUMERICHOST)[0]
                sock = socket.socket(info[0], socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                checks[number] = PortCheck(kind, host, port, "error", None, str(exc))
                continue
            sock.setblocking(False)
            started = time.monotonic()
            code = sock.connect_ex(info[4])
            if code not in (0, errno.EINPROGRESS):
                checks[number] = PortCheck(kind, host, port, _connect_result(code), None,
                                           _strerror(code))
                sock.close()
                continue
            pending[sock] = (number, kind, host, port, started)
            selector.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout
        while pending:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            for key, _events in selector.select(wait):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                number, kind, host, port, started = pending.pop(ready)
                ms = (time.monotonic() - started) * 1000
                code = ready.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                checks[number] = PortCheck(kind, host, port, _connect_result(code),
                                           round(ms, 1) if code == 0 else None,
                                           _strerror(code) if code else "")
                selector.unregister(ready)
                ready.close()
        for sock, (number, kind, host, port, _started) in pending.items():
            checks[number] = PortCheck(kind, host, port, "timeout", None,
                                       f"no answer within {timeout:g} s")
            sock.close()
    return [checks[n] for n in sorted(checks)]


def _connect_result(code: int) -> str:
    if code == 0:
        return "open"
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.ETIMEDOUT,):
        return "timeout"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return "unreachable"
    return "error"


def _strerror(code: int) -> str:
    import os

    return os.strerror(code) if code else ""


def _resolve(text: str, default_port: int) -> tuple[str | None, int, str]:
    """``HOST[:PORT]`` -> (numeric address or None, port, why not)."""
    host, port = parse_server(text, default_port)
    try:
        info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return None, port, str(getattr(exc, "strerror", None) or exc)
    # IPv4 first, as the rest of the client prefers it.
    info.sort(key=lambda item: item[0] != socket.AF_INET)
    address = str(info[0][4][0])
    if info[0][0] == socket.AF_INET6 and len(info[0][4]) >= 4 and info[0][4][3] \
            and "%" not in address:
        try:
            address = f"{address}%{socket.if_indextoname(int(info[0][4][3]))}"
        except OSError:
            pass
    return address, port, ""


def examine(hosts: Sequence[str], *, discovery_port: int = DEFAULT_DISCOVERY_PORT,
            wait: float = DEFAULT_WAIT, use_last_server: bool = True,
            use_mdns: bool = True) -> Report:
    """Look at the network as described at the top of this module."""
    from lanchat.client import mdns

    interfaces = netif.interfaces()
    host_infos: list[HostInfo] = []
    for text in hosts:
        address, port, why = _resolve(text, DEFAULT_CHAT_PORT)
        host_infos.append(HostInfo(text, address, port, "option", why))
    last = load_last_server() if use_last_server else None
    if last is not None and not any(h.address == last.host for h in host_infos):
        host_infos.append(HostInfo(format_address(last.host, last.port), last.host, last.port,
                                   "last_server"))
    targets = discovery.default_probe_targets(discovery_port, interfaces)
    targets += [discovery.ProbeTarget(h.address, discovery_port, "unicast")
                for h in host_infos if h.address]
    browser, reason = mdns.start(discovery_port) if use_mdns else (None, _("not asked for"))
    try:
        result = discovery.run_round(targets, wait, settle=wait, late=browser)
    finally:
        if browser is not None:
            browser.close()
    services = tuple((s.name, s.addresses, s.port) for s in browser.services) if browser \
        else ()
    mdns_info = MdnsInfo(browser is not None, reason or "", services)

    servers: dict[str, ServerInfo] = {}
    for found in result.found:
        servers[found.server_id] = ServerInfo(found.server_id, found.name, found.state,
                                              found.server_version, found.host, found.port)
    for sighting in result.sightings:
        server = servers[sighting.server_id]
        target = sighting.target
        server.answers.append(Answer(target.path, target.label, target.interface,
                                     sighting.host, round(sighting.seconds * 1000, 1)))
        web = getattr(sighting.announce, "http_port", None)
        if isinstance(web, int) and server.web_port is None:
            server.web_port = web
        # TLS fields, where the announce carries them (servers that serve TLS).
        fingerprint = getattr(sighting.announce, "tls_fingerprint", None)
        if isinstance(fingerprint, str) and server.tls_fingerprint is None:
            server.tls_fingerprint = fingerprint
        tls_port = getattr(sighting.announce, "tls_port", None)
        if isinstance(tls_port, int) and tls_port and server.tls_port is None:
            server.tls_port = tls_port
    known = pinning.KnownServers()
    for server in servers.values():
        if server.tls_fingerprint is not None:
            entry = known.get(server.server_id)
            server.pin = "new" if entry is None else (
                "known" if entry.fingerprint == server.tls_fingerprint else "changed")

    wanted: list[tuple[str, str, int]] = []
    owners: list[ServerInfo | None] = []
    for server in servers.values():
        ports: list[tuple[str, int | None]] = [
            ("chat", server.port), ("tls", server.tls_port), ("web", server.web_port)]
        for kind, served in ports:
            if served:  # 0 or None: the server does not serve it
                wanted.append((kind, server.host, served))
                owners.append(server)
    answered = {a.source.split("%")[0] for s in servers.values() for a in s.answers}
    extra = [(h.address, h.port) for h in host_infos if h.address]
    extra += [(address, port) for _name, addresses, port in services
              for address in addresses[:1]]
    for address, port in extra:
        if address.split("%")[0] not in answered and ("chat", address, port) not in wanted:
            wanted.append(("chat", address, port))
            owners.append(None)
    checks = connect_all(wanted)
    host_checks: list[PortCheck] = []
    for owner, check in zip(owners, checks):
        if owner is None:
            host_checks.append(check)
        else:
            owner.checks.append(check)

    interface_infos = [InterfaceInfo(i.name, i.up, i.loopback, tuple(
        AddressInfo(a.ip, a.prefix, a.scope, a.broadcast) for a in i.addresses))
        for i in interfaces]
    probes = [ProbeInfo(t.path, t.label, t.interface, result.errors.get(t))
              for t in result.sent]
    report = Report(discovery_port, wait, interface_infos, probes, host_infos, mdns_info,
                    sorted(servers.values(), key=lambda s: (s.name.casefold(), s.host)),
                    host_checks)
    report.findings = diagnose(report)
    return report


# ------------------------------------------------------------------ concluding


def _firewall(proto: str, port: int) -> str:
    return _("on the server, allow it: sudo nft add rule inet filter input {proto} dport "
             "{port} accept (or: sudo ufw allow {port}/{proto})").format(proto=proto, port=port)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def diagnose(report: Report) -> list[Finding]:
    """What the report means, most useful first."""
    out: list[Finding] = []
    usable = [i for i in report.interfaces if i.up and not i.loopback and i.addresses]
    if not usable:
        out.append(Finding("no_network", _("This machine has no network interface that is up "
                                           "besides loopback."),
                           _("Connect to the network (cable or Wi-Fi) and run lanchat doctor "
                             "again.")))
    port = report.discovery_port
    for server in report.servers:
        label = f"{server.name or '?'} ({format_address(server.host, server.port)})"
        chat = [c for c in server.checks if c.kind in ("chat", "tls")]
        if chat and not _chat_open(server):
            check = chat[0]
            if check.result == "refused":
                text = _("{server} answers discovery, but its chat port {port} refuses "
                         "connections: the daemon does not listen there, or a firewall "
                         "rejects it.").format(server=label, port=check.port)
            else:
                text = _("{server} answers discovery, but its chat port {port} does not "
                         "answer ({result}): a firewall drops it.").format(
                    server=label, port=check.port, result=_result_text(check.result))
            out.append(Finding("chat_port_blocked", text,
                               _sentence(_firewall("tcp", check.port)),
                               server.server_id))
            continue
        if server.state != "active":
            out.append(Finding(
                f"server_{server.state}",
                _("{server} is {state} and accepts no new people.").format(
                    server=label, state=state_text(server.state)),
                _("Ask whoever runs it to make it active: lanchatctl start (on the server)."),
                server.server_id))
            continue
        for check in server.checks:
            if check.result != "open":  # a chat port is open, but not this one
                out.append(Finding(f"{check.kind}_port_blocked", _(
                    "{server}: its {what} {port} does not answer ({result}).").format(
                    server=label, what=_port_name(check.kind), port=check.port,
                    result=_result_text(check.result)),
                    _sentence(_firewall("tcp", check.port)), server.server_id))
        paths = server.paths
        has_ipv4 = any(a.scope != "host" and ":" not in a.address
                       for i in usable for a in i.addresses)
        if not has_ipv4 and "ipv6" in paths:
            out.append(Finding("ipv6_only", _(
                "{server} answered over IPv6; this machine has no IPv4 address, so IPv4 "
                "broadcasts cannot reach anything. That is fine.").format(server=label),
                _("Nothing to do: lanchat finds it that way too."), server.server_id))
        elif not set(paths) & set(BROADCAST_PATHS):
            by = ", ".join(path_name(p) for p in paths)
            automatic = set(paths) & {"ipv6", "mdns"}
            step = _("Nothing to do: lanchat finds it that way too.") if automatic else \
                _("Connect to it by address: lanchat --server {address}").format(
                    address=format_address(server.host, server.port))
            out.append(Finding("broadcast_blocked", _(
                "{server} answered only by {paths}, not to IPv4 broadcasts: this network "
                "drops broadcasts (a firewall, or Wi-Fi client isolation), or the server "
                "ignores UDP port {udp} on IPv4.").format(server=label, paths=by, udp=port),
                step, server.server_id))
        else:
            out.append(Finding("ok", _("{server} is reachable and accepts people.").format(
                server=label), _("lanchat finds it: just run lanchat."), server.server_id))
    if report.servers or not usable:  # with no network, no_network says it all
        return out

    # Nobody answered a probe: what is known from connects and mDNS.
    for check in report.host_checks:
        if check.result == "open":
            out.append(Finding("discovery_blocked", _(
                "{address} accepts chat connections but answers no discovery probe: UDP port "
                "{udp} is blocked on the way or on the server, or the server does not answer "
                "this network (discovery_allow).").format(address=check.address, udp=port),
                _("Connect to it by address: lanchat --server {address}. To be found "
                  "automatically, {rule}.").format(address=check.address,
                                                  rule=_firewall("udp", port))))
        else:
            out.append(Finding("host_unreachable", _(
                "{address} answers neither discovery nor a chat connection ({result}).")
                .format(address=check.address, result=_result_text(check.result)),
                _("Check that the server runs there (lanchatctl status on it) and that the "
                  "address is right; if it runs, {rule}.").format(
                    rule=_firewall("tcp", check.port))))
    for host in report.hosts:
        if host.address is None:
            out.append(Finding("host_unknown", _("{host}: the name does not resolve ({why}).")
                               .format(host=host.text, why=host.detail),
                               _("Give the server's IP address instead.")))
    sent = [p for p in report.probes if p.error is None]
    if report.probes and not sent:
        out.append(Finding("probe_not_sent", _("No discovery probe could be sent: {errors}.")
                           .format(errors="; ".join(f"{p.target}: {p.error}"
                                                    for p in report.probes)),
                           _("Check that this machine is connected and has an address "
                             "(ip address).")))
    elif not any(f.code == "discovery_blocked" for f in out):
        out.append(Finding("no_server", _(
            "No lanchat server answered on any path ({paths})."
        ).format(paths=", ".join(path_name(p) for p in PATH_ORDER
                                 if any(q.path == p for q in sent)
                                 or (p == "mdns" and report.mdns.available))),
            _("Check that the server is running (lanchatctl status on it) and on this "
              "network; {rule}; if you know its address, run lanchat doctor --host "
              "ADDRESS.").format(rule=_firewall("udp", port))))
    return out


def _result_text(result: str) -> str:
    return {
        "open": _("connects"),
        "refused": _("connection refused"),
        "timeout": _("no answer within {seconds:g} s").format(seconds=CONNECT_SECONDS),
        "unreachable": _("unreachable"),
        "error": _("error"),
    }.get(result, result)


# ------------------------------------------------------------------ showing


def render_text(report: Report) -> str:
    lines = [_("lanchat doctor {version}: discovery port {port}, waited {seconds:g} s")
             .format(version=__version__, port=report.discovery_port, seconds=report.waited),
             "", _("Interfaces:")]
    for interface in report.interfaces:
        notes = [_("up") if interface.up else _("down")]
        if interface.loopback:
            notes.append(_("loopback, not probed"))
        lines.append(f"  {interface.name}: {', '.join(notes)}")
        for a in interface.addresses:
            text = f"    {a.address}/{a.prefix}  " + _("scope {scope}").format(scope=a.scope)
            if a.broadcast:
                text += "  " + _("broadcast {address}").format(address=a.broadcast)
            lines.append(text)
    lines += ["", _("Probes:")]
    for probe in report.probes:
        where = f" ({probe.interface})" if probe.interface else ""
        status = _("sent") if probe.error is None else _("not sent: {reason}").format(
            reason=probe.error)
        lines.append(f"  {path_name(probe.path)}: {probe.target}{where}: {status}")
    if report.mdns.available:
        lines.append("  " + _("mDNS: browsed for _lanchat._tcp, {count} found").format(
            count=len(report.mdns.services)))
        for name, addresses, port in report.mdns.services:
            lines.append(f"    {name}: {', '.join(addresses)}, " + _("chat port {port}")
                         .format(port=port))
    else:
        lines.append("  " + _("mDNS: not available ({reason})").format(
            reason=report.mdns.reason))
    for host in report.hosts:
        if host.address is None:
            lines.append("  " + _("{host}: does not resolve ({why})").format(
                host=host.text, why=host.detail))
        elif host.origin == "last_server":
            lines.append("  " + _("the last server joined, {address}, is asked by unicast")
                         .format(address=format_address(host.address, host.port)))
    lines += ["", _("Servers that answered:")]
    if not report.servers:
        lines.append("  " + _("none"))
    for server in report.servers:
        lines.append(f"  {server.name or '?'}  {format_address(server.host, server.port)}  "
                     f"{state_text(server.state)}  " + _("version {version}, id {id}")
                     .format(version=server.version, id=server.server_id))
        for answer in server.answers:
            lines.append("    " + _("answered {path} {target} from {source} in {ms} ms")
                         .format(path=path_name(answer.path), target=answer.target,
                                 source=answer.source, ms=answer.ms))
        for check in server.checks:
            lines.append("    " + _check_line(check))
        if server.tls_fingerprint:
            lines.append("    " + _("TLS fingerprint {fingerprint}").format(
                fingerprint=server.tls_fingerprint))
            pin = {"known": _("the key this client remembers for this server"),
                   "new": _("not met before: lanchat will show it and remember it"),
                   "changed": _("NOT the key this client remembers for this server: lanchat "
                                "refuses it before sending a PIN ({command} if the change "
                                "is expected)").format(
                       command=pinning.forget_command(server.server_id)),
                   }.get(server.pin)
            if pin:
                lines.append("    " + pin)
    if report.host_checks:
        lines += ["", _("Other connects:")]
        lines += ["  " + _check_line(check) for check in report.host_checks]
    lines += ["", _("Conclusion:")]
    for finding in report.findings:
        lines.append(f"  - {finding.text}")
        lines.append("    " + _("Next: {step}").format(step=finding.next_step))
    return "\n".join(clean(line) for line in lines) + "\n"


def _port_name(kind: str) -> str:
    return {"chat": _("chat port"), "tls": _("TLS chat port")}.get(kind, _("web port"))


def _check_line(check: PortCheck) -> str:
    text = f"{_port_name(check.kind)} {check.address}: {_result_text(check.result)}"
    if check.ms is not None:
        text += f" ({check.ms} ms)"
    return text


def render_json(report: Report) -> str:
    data: dict[str, Any] = asdict(report)
    data["ok"] = report.ok
    data["version"] = __version__
    for server, raw in zip(report.servers, data["servers"]):
        raw["paths"] = server.paths
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


# ------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanchat doctor",
        description=_("Find out why lanchat does or does not find a server: probes every "
                      "path (broadcasts, IPv6, mDNS, unicast), tries each server's ports and "
                      "says what to do next. Sends nothing but the probes and connects it "
                      "reports; needs no root."))
    parser.add_argument("--host", metavar="HOST[:PORT]", action="append", default=[],
                        help=_("also ask this server directly (unicast probe and chat port "
                               "connect; repeatable; port default {port})").format(
                            port=DEFAULT_CHAT_PORT))
    parser.add_argument("--json", action="store_true",
                        help=_("print the report as JSON for scripts"))
    parser.add_argument("--wait", type=seconds_arg, metavar="SECONDS", default=DEFAULT_WAIT,
                        help=_("how long to collect answers (default {seconds:g})").format(
                            seconds=DEFAULT_WAIT))
    parser.add_argument("--discovery-port", type=port_arg, metavar="PORT",
                        default=DEFAULT_DISCOVERY_PORT,
                        help=_("UDP port of discovery (default {port})").format(
                            port=DEFAULT_DISCOVERY_PORT))
    parser.add_argument("--no-mdns", action="store_true", help=_("do not browse mDNS"))
    # Read by lanchat.cli.main before it hands over (the language is chosen by then).
    parser.add_argument("--lang", metavar="CODE",
                        help=_("the language to speak: {languages} (default: the setting "
                               "language, else the locale)").format(
                                   languages=", ".join(i18n.LANGUAGES)))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``lanchat doctor``; lanchat.cli.main has chosen the language (--lang, the setting,
    the locale) before it calls this."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for text in args.host:
        try:
            parse_server(text, DEFAULT_CHAT_PORT)
        except ValueError as exc:
            parser.error(f"--host: {exc}")
    report = examine(args.host, discovery_port=args.discovery_port, wait=args.wait,
                     use_mdns=not args.no_mdns)
    sys.stdout.write(render_json(report) if args.json else render_text(report))
    sys.stdout.flush()
    return EXIT_OK if report.ok else EXIT_FAILED

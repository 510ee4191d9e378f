"""``lanchat``: the terminal client's command line.

``build_parser`` is the argument parser (testable on its own); ``main`` checks the
combination of options, folds in the settings file, and builds one frozen
``Options``: nothing deeper than this module sees the ``argparse`` namespace.

Exit status: 0 done (every line delivered, in plain mode), 1 could not connect,
join or deliver, 2 bad usage or settings, 130 interrupted.
"""

from __future__ import annotations

import argparse
import selectors
import sys
from collections.abc import Sequence
from pathlib import Path

from lanchat import __version__
from lanchat.client import i18n
from lanchat.client.connection import parse_server
from lanchat.client.i18n import _
from lanchat.client.messages import clean
from lanchat.client.options import Options
from lanchat.client.settings import (
    DEFAULT_CHAT_PORT,
    DEFAULT_DISCOVERY_PORT,
    SettingsError,
    config_path,
    load_settings,
)
from lanchat.protocol import chat, rules
from lanchat.protocol.errors import RemoteProtocolError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(_("not a port number from 1 to 65535: {value!r}")
                                         .format(value=text))
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(_("not a number of seconds from 0 to 3600: {value!r}")
                                         .format(value=text))
    return value


def _probe_target(text: str) -> tuple[str, int | None]:
    """``ADDR`` or ``ADDR:PORT`` (an IPv4 address) for --discovery-address."""
    import ipaddress

    address, sep, port_text = text.partition(":")
    try:
        address = str(ipaddress.IPv4Address(address))
    except ValueError:
        raise argparse.ArgumentTypeError(_("not an IPv4 address: {value!r}").format(
            value=text)) from None
    return address, _port(port_text) if sep else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanchat",
        description=_("Chat with the people on your local network. Finds the lanchat server "
                      "by itself, asks for the room PIN and your name, and opens the chat."),
        epilog=_("With a terminal, a full-screen chat opens; otherwise (or with --plain) each "
                 "input line is sent and each message printed as a line. "
                 "Settings: lanchat --config-path."),
    )
    where = parser.add_argument_group(_("which server"))
    where.add_argument("--server", metavar="HOST[:PORT]",
                       help=_("connect to this server, without discovery (port default "
                              "{port})").format(port=DEFAULT_CHAT_PORT))
    where.add_argument("--host", help=_("the server's address (like --server HOST)"))
    where.add_argument("--port", type=_port,
                       help=_("the server's TCP port, with --host (default {port})").format(
                           port=DEFAULT_CHAT_PORT))
    where.add_argument("--server-name", metavar="NAME",
                       help=_("among the servers found, join the one with this name"))
    where.add_argument("--discover", action="store_true",
                       help=_("list the servers found on the LAN and exit"))
    where.add_argument("--discovery-address", metavar="ADDR[:PORT]", action="append",
                       type=_probe_target,
                       help=_("send the discovery probe here instead of 255.255.255.255 and "
                              "each interface's broadcast address (repeatable; the port "
                              "defaults to --discovery-port)"))
    where.add_argument("--discovery-port", type=_port, metavar="PORT",
                       help=_("UDP port of discovery (default {port})").format(
                           port=DEFAULT_DISCOVERY_PORT))
    where.add_argument("--discovery-timeout", type=_seconds, metavar="SECONDS",
                       help=_("longest wait for discovery answers (default 1.5)"))
    room = parser.add_argument_group(_("which room"))
    room.add_argument("--pin", help=_("the room's PIN (asked for when not given)"))
    names = room.add_mutually_exclusive_group()
    names.add_argument("--name", help=_("your name in the room (asked for when not given)"))
    names.add_argument("--username", dest="name", help=_("the same as --name"))
    mode = parser.add_argument_group(_("how"))
    mode.add_argument("--plain", action="store_true",
                      help=_("line mode even in a terminal"))
    mode.add_argument("--json", action="store_true",
                      help=_("line mode, printing the protocol events as JSON lines"))
    mode.add_argument("--timeout", type=_seconds, metavar="SECONDS", default=60.0,
                      help=_("line mode: how long to keep trying to deliver after the input "
                             "ends (default 60)"))
    other = parser.add_argument_group(_("settings"))
    other.add_argument("--config", metavar="PATH",
                       help=_("settings file to use instead of the default one"))
    other.add_argument("--config-path", action="store_true",
                       help=_("print where the settings file is and exit"))
    parser.add_argument("--version", action="version", version=f"lanchat {__version__}")
    return parser


def build_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[
        Options, argparse.Namespace]:
    """Check the combination of flags and fold in the settings file."""
    args = parser.parse_args(argv)
    if args.host is not None and args.server is not None:
        parser.error(_("give either --server HOST[:PORT] or --host HOST, not both"))
    if args.port is not None and args.host is None and args.server is None:
        parser.error(_("--port needs --host HOST (or use --server HOST:PORT)"))
    if args.port is not None and args.server is not None:
        parser.error(_("give the port in --server HOST:PORT, not with --port"))
    if args.discover and (args.server or args.host):
        parser.error(_("--discover lists the servers on the LAN; it does not take --server"))
    if args.server_name is not None and (args.server or args.host):
        parser.error(_("--server-name picks among discovered servers; it does not go with "
                       "--server"))
    if args.config == "":
        parser.error(_("argument --config: the path must not be empty"))
    if args.config_path:
        return Options(), args
    try:
        settings = load_settings(None if args.config is None else _path(args.config))
    except SettingsError as exc:
        raise SystemExit(_fail(str(exc), EXIT_USAGE)) from None

    server: tuple[str, int] | None = None
    server_text = args.server
    if args.host is not None:
        server_text = args.host if ":" not in args.host or args.host.startswith("[") \
            else f"[{args.host}]"
    if server_text is None and not args.discover and args.server_name is None:
        server_text = settings.server
    if server_text is not None:
        try:
            server = parse_server(server_text, args.port or DEFAULT_CHAT_PORT)
        except ValueError as exc:
            origin = "--server" if args.server or args.host else f"{settings.path}: server"
            parser.error(f"{origin}: {exc}")

    pin = args.pin if args.pin is not None else settings.pin
    if pin is not None:
        try:
            pin = rules.check_pin(pin.strip(), 1, chat.PIN_MAX_DIGITS)
        except RemoteProtocolError:
            parser.error(_("argument --pin: a room PIN is digits (0-9), not {value!r}").format(
                value=pin))
    name = args.name if args.name is not None else settings.name
    if name is not None:
        try:
            name = rules.normalize_name(name)
        except RemoteProtocolError:
            parser.error(_("argument --name: {value!r} is not a usable name. A name is 1 to "
                           "{count} printable characters, with no control characters and no "
                           "space at either end.").format(value=name,
                                                          count=rules.NAME_MAX_CHARS))
    options = Options(
        server=server,
        server_name=args.server_name,
        discover_only=args.discover,
        discovery_targets=tuple(
            (address, port or args.discovery_port or DEFAULT_DISCOVERY_PORT)
            for address, port in args.discovery_address or ()),
        discovery_port=args.discovery_port or DEFAULT_DISCOVERY_PORT,
        discovery_timeout=args.discovery_timeout or settings.discovery_timeout,
        pin=pin,
        name=name,
        plain=args.plain or args.json,
        json=args.json,
        timeout=args.timeout,
        settings=settings,
    )
    return options, args


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"lanchat: {clean(message)}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    i18n.setup()
    parser = build_parser()
    options, args = build_options(parser, argv)
    if args.config_path:
        print(_path(args.config) if args.config else config_path())
        return EXIT_OK
    try:
        if options.discover_only:
            return discover_and_list(options)
        return chat_session(options)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def discover_and_list(options: Options) -> int:
    """``lanchat --discover``: one line per server found."""
    from lanchat.client import joining

    found = joining.run_discovery(options, lambda line: print(clean(line), file=sys.stderr))
    if not found:
        for line in joining.no_server_help(options.discovery_port):
            print(line, file=sys.stderr)
        return EXIT_FAILED
    for server in found:
        print("\t".join(clean(field) for field in (server.name, server.address, server.state,
                                                    server.server_id)))
    return EXIT_OK


def chat_session(options: Options) -> int:
    from lanchat.client import joining

    interactive_terminal = sys.stdin.isatty() and sys.stdout.isatty()
    use_tui = interactive_terminal and not options.plain
    prompter = joining.TerminalPrompter()
    try:
        target = joining.find_server(options, prompter)
    except joining.JoinError as exc:
        return _fail(str(exc))
    selector = selectors.DefaultSelector()
    collector = joining.Joiner()
    client = joining.make_client(target, options, collector.emit, selector)
    try:
        backlog = joining.join_room(client, collector, prompter, options)
    except joining.JoinError as exc:
        client.close()
        if not use_tui and not sys.stdin.isatty():
            return _fail(str(exc) + " " + _("Nothing was sent."))
        return _fail(str(exc))
    if use_tui:
        from lanchat.client.tui import run_tui

        return run_tui(client, options, backlog, server_label=target.name or target.address)
    from lanchat.client.plain import PlainMode

    return PlainMode(client, options).run(backlog)

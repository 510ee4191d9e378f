"""``lanchat``: the terminal client's command line.

``build_parser`` is the argument parser (testable on its own); ``main`` checks the
combination of options, folds in the settings file, and builds one frozen
``Options``: nothing deeper than this module sees the ``argparse`` namespace.

Exit status: 0 done (every line delivered, in plain mode), 1 could not connect,
join or deliver, 2 bad usage or settings, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lanchat import __version__, i18n
from lanchat.client.connection import parse_server
from lanchat.client.i18n import _, translated
from lanchat.client.messages import clean
from lanchat.client.options import Options
from lanchat.client.options import port_arg as _port
from lanchat.client.options import seconds_arg as _seconds
from lanchat.client.settings import (
    DEFAULT_CHAT_PORT,
    DEFAULT_DISCOVERY_PORT,
    LOCALHOST,
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
                 "Settings: lanchat --config-path. Not finding the server? "
                 "lanchat doctor says why."),
    )
    where = parser.add_argument_group(_("which server"))
    where.add_argument("--server", metavar="HOST[:PORT]",
                       help=_("connect to this server, without discovery (port default "
                              "{tls_port} with TLS, {port} with --insecure)").format(
                           tls_port=chat.DEFAULT_TLS_PORT, port=DEFAULT_CHAT_PORT))
    where.add_argument("--host", help=_("the server's address (like --server HOST)"))
    where.add_argument("--port", type=_port,
                       help=_("the server's TCP port (default {port}); without --host, the "
                              "server on this machine").format(port=DEFAULT_CHAT_PORT))
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
    trust = parser.add_argument_group(_("trust"))
    trust.add_argument("--insecure", action="store_true",
                       help=_("connect without TLS even where the server offers it (anyone "
                              "on the network can read the room, and the PIN)"))
    trust.add_argument("--forget", metavar="SERVER_ID",
                       help=_("forget the remembered key of this server (after its "
                              "administrator confirms a new key) and exit"))
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
    other.add_argument("--lang", metavar="CODE",
                       help=_("the language to speak: {languages} (default: the setting "
                              "language, else the locale)").format(
                                  languages=", ".join(i18n.LANGUAGES)))
    parser.add_argument("--version", action="version", version=f"lanchat {__version__}")
    return parser


def build_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[
        Options, argparse.Namespace]:
    """Check the combination of flags and fold in the settings file."""
    args = parser.parse_args(argv)
    if args.host is not None and args.server is not None:
        parser.error(_("give either --server HOST[:PORT] or --host HOST, not both"))
    if args.port is not None and args.server is not None:
        parser.error(_("give the port in --server HOST:PORT, not with --port"))
    if args.discover and (args.server or args.host or args.port):
        parser.error(_("--discover lists the servers on the LAN; it does not take --server"))
    if args.server_name is not None and (args.server or args.host or args.port):
        parser.error(_("--server-name picks among discovered servers; it does not go with "
                       "--server"))
    if args.config == "":
        parser.error(_("argument --config: the path must not be empty"))
    if args.forget is not None and (args.server or args.host or args.discover):
        parser.error(_("--forget SERVER_ID forgets a key and exits; it takes no other "
                       "server option"))
    if args.config_path or args.forget is not None:
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
    elif args.port is not None and args.server is None:
        server_text = LOCALHOST  # the original client's --port alone: this machine
    if server_text is None and not args.discover and args.server_name is None:
        server_text = settings.server
    if server_text is not None:
        try:
            default_port = DEFAULT_CHAT_PORT if args.insecure else chat.DEFAULT_TLS_PORT
            server = parse_server(server_text, args.port or default_port)
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
        except RemoteProtocolError as exc:
            parser.error(_("argument --name: {value!r} is not a usable name.").format(
                value=name) + " " + translated(exc.template, **exc.values))
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
        insecure=args.insecure,
    )
    return options, args


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"lanchat: {clean(message)}", file=sys.stderr, flush=True)
    return code


def language_choice(argv: Sequence[str] | None) -> str:
    """--lang, else the settings file's ``language``, else "" (the locale decides).

    Read before the parser is built, so that --help is in the chosen language too.
    """
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--lang", default="")
    early.add_argument("--config")
    known, _rest = early.parse_known_args(argv)
    if known.lang:
        return str(known.lang)
    try:
        settings = load_settings(None if known.config is None else _path(known.config))
    except SettingsError:
        return ""  # build_options reports it, in the locale's language
    return settings.language or ""


def main(argv: Sequence[str] | None = None) -> int:
    i18n.setup(choice=language_choice(argv))
    i18n.translate_argparse()
    args_list = sys.argv[1:] if argv is None else list(argv)
    if args_list[:1] == ["doctor"]:  # the one subcommand: its own parser and help
        from lanchat.client import doctor

        return doctor.main(args_list[1:])
    parser = build_parser()
    options, args = build_options(parser, argv)
    if args.config_path:
        print(_path(args.config) if args.config else config_path())
        return EXIT_OK
    if args.forget is not None:
        return forget_server(args.forget)
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
    from lanchat.client import pinning

    known = pinning.KnownServers(options.known_servers)
    for server in found:
        entry = known.get(server.server_id)
        if server.fingerprint is None:
            trust = "no-tls"
        elif entry is None:
            trust = "new"
        else:
            trust = "known" if entry.fingerprint == server.fingerprint else "KEY-CHANGED"
        print("\t".join(clean(field) for field in (
            server.name, server.address or "-", server.state, server.server_id,
            server.tls_address or "-", server.fingerprint or "-", trust)))
    return EXIT_OK


def forget_server(server_id: str) -> int:
    """``lanchat --forget SERVER_ID``: remove a pinned key."""
    from lanchat.client import pinning

    known = pinning.KnownServers()
    try:
        removed = known.forget(server_id)
    except OSError as exc:
        return _fail(_("Could not change {path}: {error}").format(
            path=known.path, error=exc.strerror or exc))
    if not removed:
        return _fail(_("{server_id} is not in {path}; nothing was forgotten.").format(
            server_id=server_id, path=known.path))
    print(_("Forgot the key of {server_id}; the next connection will show and remember "
            "the key it presents.").format(server_id=server_id), file=sys.stderr)
    return EXIT_OK


def chat_session(options: Options) -> int:
    from lanchat.client import joining, terminal

    interactive_terminal = sys.stdin.isatty() and sys.stdout.isatty()
    use_tui = interactive_terminal and not options.plain
    if use_tui:
        problem = terminal.full_screen_problem()
        if problem is not None:
            # Said before joining: the room must not see a join and a leave.
            print(clean(_("[Client] Line mode: {reason}.").format(reason=problem)),
                  file=sys.stderr, flush=True)
            use_tui = False
    prompter = joining.TerminalPrompter()
    try:
        target = joining.find_server(options, prompter)
    except joining.JoinError as exc:
        return _fail(str(exc))
    selector = terminal.make_selector()
    collector = joining.Joiner()
    client = joining.make_client(target, options, collector.emit, selector, prompter.say)
    try:
        backlog = joining.join_room(client, collector, prompter, options)
    except joining.JoinError as exc:
        client.close()
        if not use_tui and not sys.stdin.isatty():
            # A message that ends in a command to copy gets the note on a line of its own.
            joint = "\n" if "\n" in str(exc) else " "
            return _fail(str(exc) + joint + _("Nothing was sent."))
        return _fail(str(exc))
    if use_tui:
        from lanchat.client.tui import run_tui

        return run_tui(client, options, backlog, server_label=target.name or target.address)
    from lanchat.client.plain import PlainMode

    return PlainMode(client, options).run(backlog)

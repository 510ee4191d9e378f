"""The ``lanchatctl`` command: parse the command line, run one command, show the answer.

``build_parser()`` is testable on its own.  ``parse()`` turns the parsed arguments into
a frozen ``Invocation`` (the options and the protocol request to send); no
``argparse.Namespace`` travels further.  ``execute()`` runs an invocation and returns
the exit status; the interactive shell (lanchatctl/shell.py) runs its lines through
the same two functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

from lanchat import __version__, i18n
from lanchat.i18n import _, ngettext
from lanchat.paths import SOCKET_ENV, find_control_socket
from lanchat.protocol.control import (
    Announce,
    CloseRoom,
    Kick,
    Log,
    Reload,
    Request,
    Rooms,
    SetState,
    Status,
    Users,
)
from lanchat.protocol.errors import LocalProtocolError
from lanchatctl import console, logs, render
from lanchatctl.client import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STATUSES,
    EXIT_USAGE,
    ControlClient,
    CtlError,
)
from lanchatctl.options import DEFAULT_TIMEOUT, STATE_COMMANDS, Options

DEFAULT_LOG_LINES = 20
DEFAULT_INTERVAL = 1.0
MIN_INTERVAL = 0.1  # top asks the daemon this often at most
#: Commands whose normal end is Ctrl-C (or q): that is a success, not an interruption.
ENDLESS = ("top", "shell")


@dataclass(frozen=True)
class Invocation:
    """One command to run: its name, the request it sends, and how to show the answer."""

    command: str
    options: Options = field(default_factory=Options)
    request: Request | None = None
    interval: float = DEFAULT_INTERVAL
    #: log: which entries, and how many of the last matching (None: all).
    log_filter: logs.LogFilter = dataclasses.field(default_factory=logs.LogFilter)
    log_lines: int | None = DEFAULT_LOG_LINES
    #: Answer in the original console's words (the shell's /start, /room...; its dashboard).
    console: bool = False

    @property
    def follows(self) -> bool:
        return isinstance(self.request, Log) and self.request.follow


def _exit_table() -> str:
    return _("exit status:") + "\n" + "\n".join(f"  {status:<4} {i18n.translated(meaning)}"
                                               for status, meaning in EXIT_STATUSES)


def _epilog() -> str:
    return _("""\
Without a command, on a terminal, lanchatctl starts the interactive shell.

The control socket is --socket PATH, else ${env}, else
control_socket from the daemon's configuration file (/etc/lanchat/lanchatd.toml),
else $RUNTIME_DIRECTORY/control.sock, else the first that exists of your own
daemon's socket (in your runtime directory) and the system daemon's
/run/lanchatd/control.sock.  Members of group lanchat may use the system daemon's
socket.""").format(env=SOCKET_ENV) + "\n\n" + _exit_table() + "\n"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            _("not a number of seconds: {value!r}").format(value=text)) from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(
            _("must be between 0 and 3600 seconds, not {value}").format(value=text))
    return value


def _interval(text: str) -> float:
    value = _seconds(text)
    if value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(
            _("must be at least {minimum} seconds, not {value}").format(
                minimum=f"{MIN_INTERVAL:g}", value=text))
    return value


def _time(text: str) -> float:
    try:
        return logs.parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            _("not a whole number: {value!r}").format(value=text)) from None
    if value < 0:
        raise argparse.ArgumentTypeError(_("must be 0 or more, not {value}").format(value=value))
    return value


def _add_common(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """--socket, --json and --timeout, before or after the command name.

    On the subcommands they default to SUPPRESS, so that leaving them out there does
    not undo what was given before the command name.
    """
    default: dict[str, Any] = (
        {"socket": None, "json": False, "timeout": DEFAULT_TIMEOUT} if top_level
        else dict.fromkeys(("socket", "json", "timeout"), argparse.SUPPRESS))
    parser.add_argument("--socket", metavar="PATH", default=default["socket"],
                        help=_("the daemon's control socket (default: ${env} or the "
                               "search described below)").format(env=SOCKET_ENV))
    parser.add_argument("--json", action="store_true", default=default["json"],
                        help=_("print the answer as JSON for scripts (log: one entry per "
                               "line); errors as {json}").format(json='{"error": ...}'))
    parser.add_argument("--timeout", metavar="SECONDS", type=_seconds,
                        default=default["timeout"],
                        help=_("how long to wait for the daemon (default {seconds})").format(
                            seconds=f"{DEFAULT_TIMEOUT:g}"))


class UsageError(Exception):
    """A command line argparse refuses, raised instead of printing and exiting, so that
    ``parse`` can report it once, in JSON too when ``--json`` was asked for."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lanchatctl",
        description=_("Administer the lanchat daemon (lanchatd) through its control socket."),
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(parser, top_level=True)
    parser.add_argument("--lang", metavar="CODE", default="",
                        help=_("the language to speak: {languages} (default: the "
                               "locale's)").format(languages=", ".join(i18n.LANGUAGES)))
    parser.add_argument("--console", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"lanchatctl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title=_("commands"))

    def command(name: str, summary: str, description: str = "") -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=description or summary, epilog=_exit_table(),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(sub, top_level=False)
        return sub

    command("status", _("the dashboard: state, uptime, clients, rooms and members, counters"))
    command("rooms", _("the open rooms, with their members"))
    users = command("users", _("who is in which room (or in room PIN)"))
    users.add_argument("pin", metavar="PIN", nargs="?", help=_("only this room"))
    command("start", _("state active: new clients and messages are allowed"))
    command("standby", _("state standby: members keep chatting, new clients are refused"))
    command("stop", _("state stopped: messages and new clients are refused"))
    close = command("close", _("close room PIN; its members are told why and disconnected"))
    close.add_argument("pin", metavar="PIN")
    close.add_argument("--reason", metavar="TEXT", default="", help=_("told to the members"))
    kick = command("kick", _("remove NAME from room PIN; they are told why"))
    kick.add_argument("pin", metavar="PIN")
    kick.add_argument("name", metavar="NAME")
    kick.add_argument("--reason", metavar="TEXT", default="", help=_("told to the person"))
    announce = command("announce", _("send a notice to every room, or to one room"))
    announce.add_argument("--room", metavar="PIN", help=_("only to this room"))
    announce.add_argument("text", metavar="TEXT", nargs="+",
                          help=_("the notice (words are joined with spaces)"))
    log = command("log", _("the activity log: its files (rotated ones too) and what the "
                           "daemon keeps in memory, filtered"))
    log.add_argument("-n", "--lines", metavar="N", type=_count, default=None,
                     help=_("the last N matching entries (default {count}, or all with "
                            "--since or --until; 0 with --follow shows only new ones)").format(
                                count=DEFAULT_LOG_LINES))
    log.add_argument("-f", "--follow", action="store_true",
                     help=_("then show new entries as they happen, until Ctrl-C"))
    log.add_argument("--since", metavar="TIME", type=_time,
                     help=_("entries at or after TIME: 2026-12-01, 2026-12-01T09:30 (local "
                            "time), 2026-12-01T08:30:00Z, or a time ago: 90s, 15m, 2h, 3d, 1w"))
    log.add_argument("--until", metavar="TIME", type=_time,
                     help=_("entries at or before TIME (as --since)"))
    log.add_argument("--event", metavar="EVENT", action="append", default=[],
                     help=_("only this event (join, kick, state...; repeatable)"))
    log.add_argument("--room", metavar="PIN", help=_("only entries about room PIN"))
    log.add_argument("--name", metavar="NAME", help=_("only entries about the member NAME"))
    log.add_argument("--address", metavar="ADDR",
                     help=_("only entries from this address or network (192.0.2.7, "
                            "192.0.2.0/24, [2001:db8::1]:5000)"))
    command("reload", _("re-read the daemon's configuration file (as SIGHUP does) and say "
                        "what changed"))
    top = command("top", _("a live dashboard refreshing in place; q or Ctrl-C quits"))
    top.add_argument("--interval", metavar="SECONDS", type=_interval, default=DEFAULT_INTERVAL,
                     help=_("seconds between refreshes (default {seconds})").format(
                         seconds=f"{DEFAULT_INTERVAL:g}"))
    command("shell", _("an interactive Server> prompt with the original console commands "
                       "(/start /standby /stop /room PIN [USER] /logg /help)"))
    help_ = command("help", _("lanchatctl's help, or one command's (as COMMAND --help)"))
    help_.add_argument("topic", metavar="COMMAND", nargs="?",
                       choices=[name for name in commands.choices if name != "help"],
                       help=_("the command to explain"))
    return parser


def _request(args: argparse.Namespace) -> Request | None:
    command = args.command
    if command == "status":
        return Status()
    if command == "rooms":
        return Rooms()
    if command == "users":
        return Users(args.pin)
    if command in STATE_COMMANDS:
        return SetState(STATE_COMMANDS[command])
    if command == "close":
        return CloseRoom(args.pin, args.reason)
    if command == "kick":
        return Kick(args.pin, args.name, args.reason)
    if command == "announce":
        return Announce(" ".join(args.text), args.room)
    if command == "log":
        return Log(None, args.follow)  # every entry kept; lanchatctl picks (logs.py)
    if command == "reload":
        return Reload()
    return None  # top, shell


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> Invocation:
    """The Invocation for ``argv``.

    A bad command line is said on stderr (and, with --json, as {"error": ...} on
    stdout) and ends in SystemExit with status 2; ``help`` prints and exits 0.
    """
    words = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(words)
        if args.socket == "":
            parser.error(_("argument --socket: the path must not be empty"))
        if args.command == "help":
            parser.parse_args([args.topic, "--help"] if args.topic else ["--help"])
        options = Options(args.socket, args.json, args.timeout)
        if args.command is None:
            return Invocation("", options)
        try:
            request = _request(args)
        except LocalProtocolError as exc:
            parser.error(f"{args.command}: {i18n.translated(exc.template, **exc.values)}")
        if args.command != "log":
            return Invocation(args.command, options, request,
                              getattr(args, "interval", DEFAULT_INTERVAL),
                              console=args.console)
        where = logs.LogFilter(args.since, args.until, frozenset(args.event), args.room,
                               args.name, args.address)
        if args.since is not None and args.until is not None and args.since > args.until:
            parser.error(_("log: --since is after --until"))
    except UsageError as exc:
        exc.parser.print_usage(sys.stderr)
        error = CtlError(_("{prog}: error: {message}").format(prog=exc.parser.prog,
                                                               message=exc.message),
                         EXIT_USAGE, "usage")
        # Before "--" only: after it, "--json" would be an argument (a notice's text).
        options_part = words[:words.index("--")] if "--" in words else words
        if "--json" in options_part:
            print(render.json_text(error.as_json()), file=sys.stdout)
        print(error.message, file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    lines = args.lines
    if lines is None and not where.bounded_in_time:
        lines = DEFAULT_LOG_LINES
    return Invocation(args.command, options, request, log_filter=where, log_lines=lines,
                      console=args.console)


# --------------------------------------------------------------------------- running


def show(invocation: Invocation, result: dict[str, Any], out: TextIO) -> None:
    """Print a command's result as text or JSON."""
    request = invocation.request
    if invocation.options.json:
        print(render.json_text(result), file=out)
        return
    lines = None
    if invocation.console:
        lines = (console.dashboard_lines(result) if isinstance(request, Status)
                 else console.reply_lines(request, result))
    for line in text_lines(request, result) if lines is None else lines:
        print(line, file=out)


def text_lines(request: Request | None, result: dict[str, Any]) -> list[str]:
    if isinstance(request, Status):
        return render.status_lines(result)
    if isinstance(request, Rooms):
        return render.rooms_lines(result.get("rooms", []))
    if isinstance(request, Users):
        return render.users_lines(result.get("users", []), request.room)
    if isinstance(request, SetState):
        state = render.state_word(render.clean(result.get("state")))
        # The daemon's description is English; the catalogue has it (lanchatd/states.py).
        description = render.clean(i18n.translated(str(result.get("description", ""))))
        if result.get("changed"):
            return [_("lanchatd is now {state}: {description}.").format(
                state=state, description=description)]
        return [_("lanchatd is already {state}: {description}.").format(
            state=state, description=description)]
    if isinstance(request, CloseRoom):
        members = result.get("members") or []
        names = ", ".join(render.clean(m) for m in members)
        return [ngettext("Closed room {pin}; {count} member ({names}) told why and "
                         "disconnected.",
                         "Closed room {pin}; {count} members ({names}) told why and "
                         "disconnected.", len(members)).format(
                             pin=request.room, count=len(members), names=names)]
    if isinstance(request, Kick):
        addr = f" ({render.clean(result['addr'])})" if result.get("addr") else ""
        return [_("Removed {name}{addr} from room {pin}; they were told why.").format(
            name=render.clean(result.get("name", request.name)), addr=addr, pin=request.room)]
    if isinstance(request, Announce):
        rooms = result.get("rooms") or []
        if not rooms:
            return [_("No room is open: nobody received the announcement.")]
        return [ngettext("Announced to {count} room: {pins}.",
                         "Announced to {count} rooms: {pins}.", len(rooms)).format(
                             count=len(rooms), pins=", ".join(render.clean(r) for r in rooms))]
    if isinstance(request, Reload):
        # Said from the answer's fields: its "message" is the daemon's English.
        changed = ", ".join(render.clean(key) for key in result.get("changed") or [])
        restart = ", ".join(render.clean(key) for key in result.get("needs_restart") or [])
        said = _("Configuration reloaded")
        if changed:
            said += "; " + _("changed: {keys}").format(keys=changed)
        if restart:
            said += "; " + _("need a restart: {keys}").format(keys=restart)
        return [said + "."]
    return [render.json_text(result)]


def show_log(client: ControlClient, invocation: Invocation, out: TextIO,
             err: TextIO) -> int:
    """``lanchatctl log``: the entries asked for, from the files and the daemon's memory
    (lanchatctl/logs.py says why lanchatctl reads the files), then, with --follow, the
    new ones as they come."""
    request = invocation.request
    assert isinstance(request, Log)
    where, n = invocation.log_filter, invocation.log_lines

    def emit(entry: dict[str, Any]) -> None:
        print(render.json_line(entry) if invocation.options.json
              else render.log_line(entry), file=out, flush=True)

    ring = client.start_following(None) if request.follow else list(
        client.call(request).get("entries", []))
    entries = ring
    if where.active or n is None or n > len(ring):  # older entries may be asked for
        path = client.call(Status()).get("log_file")
        if isinstance(path, str) and path:
            try:
                entries = logs.merge(logs.read_files(path), ring)
            except OSError as exc:
                print("lanchatctl: " + _(
                    "only the {count} entries lanchatd keeps in memory: its log files "
                    "({path} and the rotated ones) cannot be read: {error}.").format(
                        count=len(ring), path=path, error=exc.strerror or exc), file=err)
    for entry in logs.select(entries, where, n):
        emit(entry)
    if request.follow:
        for entry in client.stream():
            if where.matches(entry):
                emit(entry)
    return EXIT_OK


def report(error: CtlError, options: Options, out: TextIO, err: TextIO) -> None:
    if options.json:
        print(render.json_text(error.as_json()), file=out)
    print(f"lanchatctl: {error.message}", file=err)


def execute(invocation: Invocation, out: TextIO | None = None,
            err: TextIO | None = None) -> int:
    """Run one command; return lanchatctl's exit status for it."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    options = invocation.options
    try:
        if invocation.command == "top":
            from lanchatctl import top  # curses only when needed
            return top.run(options, invocation.interval)
        if invocation.command == "shell":
            from lanchatctl import shell  # readline only when needed
            return shell.run(options, _run_argv)
        assert invocation.request is not None
        choice = find_control_socket(options.socket)
        with ControlClient(choice, options.timeout) as client:
            if isinstance(invocation.request, Log):
                return show_log(client, invocation, out, err)
            result = client.call(invocation.request)
        show(invocation, result, out)
        return EXIT_OK
    except CtlError as exc:
        report(exc, options, out, err)
        return exc.status
    except KeyboardInterrupt:
        if invocation.follows or invocation.command in ENDLESS:
            return EXIT_OK
        print("lanchatctl: " + _("interrupted"), file=err)
        return EXIT_INTERRUPTED


def _run_argv(argv: list[str]) -> int:
    """One shell line, as the command line it stands for (argparse may SystemExit)."""
    return execute(parse(build_parser(), argv))


def _tidy_streams() -> None:
    """Names from anywhere must not crash the output on a terminal that is not UTF-8."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def language_choice(argv: list[str] | None) -> str:
    """--lang CODE if given (read before the parser is built: --help is translated);
    English with --json, whose errors' messages are data for scripts."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--lang", default="")
    early.add_argument("--json", action="store_true")
    known, _rest = early.parse_known_args(argv)
    return "en" if known.json else str(known.lang)


def main(argv: list[str] | None = None) -> int:
    _tidy_streams()
    i18n.setup(choice=language_choice(argv))
    i18n.translate_argparse()
    parser = build_parser()
    invocation = parse(parser, argv)
    if not invocation.command:
        if sys.stdin.isatty() and sys.stdout.isatty():
            invocation = dataclasses.replace(invocation, command="shell")
        else:
            parser.print_usage(sys.stderr)
            print("lanchatctl: " + _("no command given (on a terminal that starts the "
                                     "shell); lanchatctl --help lists the commands"),
                  file=sys.stderr)
            return EXIT_USAGE
    try:
        return execute(invocation)
    except BrokenPipeError:
        # The reader went away (lanchatctl log --follow | head): that is its choice.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK

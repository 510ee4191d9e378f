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
from dataclasses import dataclass
from typing import Any, TextIO

from lanchat import __version__
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
from lanchatctl import render
from lanchatctl.client import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STATUSES,
    EXIT_USAGE,
    ControlClient,
    CtlError,
)

DEFAULT_TIMEOUT = 5.0
DEFAULT_LOG_LINES = 20
DEFAULT_INTERVAL = 1.0
MIN_INTERVAL = 0.1  # top asks the daemon this often at most
STATE_COMMANDS = {"start": "active", "standby": "standby", "stop": "stopped"}
#: Commands whose normal end is Ctrl-C (or q): that is a success, not an interruption.
ENDLESS = ("top", "shell")


@dataclass(frozen=True)
class Options:
    """What every command shares."""

    socket: str | None = None
    json: bool = False
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Invocation:
    """One command to run: its name, the request it sends, and how to show the answer."""

    command: str
    options: Options = Options()
    request: Request | None = None
    interval: float = DEFAULT_INTERVAL

    @property
    def follows(self) -> bool:
        return isinstance(self.request, Log) and self.request.follow


def _exit_table() -> str:
    return "exit status:\n" + "\n".join(f"  {status:<4} {meaning}"
                                        for status, meaning in EXIT_STATUSES)


EPILOG = f"""\
Without a command, on a terminal, lanchatctl starts the interactive shell.

The control socket is --socket PATH, else ${SOCKET_ENV}, else
control_socket from the daemon's configuration file (/etc/lanchat/lanchatd.toml),
else $RUNTIME_DIRECTORY/control.sock, else the first that exists of your own
daemon's socket (in your runtime directory) and the system daemon's
/run/lanchatd/control.sock.  Members of group lanchat may use the system daemon's
socket.

{_exit_table()}
"""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds, not {text}")
    return value


def _interval(text: str) -> float:
    value = _seconds(text)
    if value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL:g} seconds, not {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
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
                        help=f"the daemon's control socket (default: ${SOCKET_ENV} or "
                        "the search described below)")
    parser.add_argument("--json", action="store_true", default=default["json"],
                        help="print the answer as JSON for scripts (log: one entry per "
                        "line); errors as {\"error\": ...}")
    parser.add_argument("--timeout", metavar="SECONDS", type=_seconds,
                        default=default["timeout"],
                        help=f"how long to wait for the daemon (default {DEFAULT_TIMEOUT:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanchatctl",
        description="Administer the lanchat daemon (lanchatd) through its control socket.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(parser, top_level=True)
    parser.add_argument("--version", action="version", version=f"lanchatctl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(name: str, summary: str, description: str = "") -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=description or summary, epilog=_exit_table(),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(sub, top_level=False)
        return sub

    command("status", "the dashboard: state, uptime, clients, rooms and members, counters")
    command("rooms", "the open rooms, with their members")
    users = command("users", "who is in which room (or in room PIN)")
    users.add_argument("pin", metavar="PIN", nargs="?", help="only this room")
    command("start", "state active: new clients and messages are allowed")
    command("standby", "state standby: members keep chatting, new clients are refused")
    command("stop", "state stopped: messages and new clients are refused")
    close = command("close", "close room PIN; its members are told why and disconnected")
    close.add_argument("pin", metavar="PIN")
    close.add_argument("--reason", metavar="TEXT", default="", help="told to the members")
    kick = command("kick", "remove NAME from room PIN; they are told why")
    kick.add_argument("pin", metavar="PIN")
    kick.add_argument("name", metavar="NAME")
    kick.add_argument("--reason", metavar="TEXT", default="", help="told to the person")
    announce = command("announce", "send a notice to every room, or to one room")
    announce.add_argument("--room", metavar="PIN", help="only to this room")
    announce.add_argument("text", metavar="TEXT", nargs="+", help="the notice (words are "
                          "joined with spaces)")
    log = command("log", "the activity log (the daemon keeps the recent entries in memory)")
    log.add_argument("-n", "--lines", metavar="N", type=_count, default=DEFAULT_LOG_LINES,
                     help=f"the last N entries (default {DEFAULT_LOG_LINES}; 0 with "
                     "--follow shows only new ones)")
    log.add_argument("-f", "--follow", action="store_true",
                     help="then show new entries as they happen, until Ctrl-C")
    command("reload", "re-read the daemon's configuration file (as SIGHUP does) and say "
            "what changed")
    top = command("top", "a live dashboard refreshing in place; q or Ctrl-C quits")
    top.add_argument("--interval", metavar="SECONDS", type=_interval, default=DEFAULT_INTERVAL,
                     help=f"seconds between refreshes (default {DEFAULT_INTERVAL:g})")
    command("shell", "an interactive Server> prompt with the original console commands "
            "(/start /standby /stop /room PIN [USER] /logg /help)")
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
        return Log(args.lines, args.follow)
    if command == "reload":
        return Reload()
    return None  # top, shell


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> Invocation:
    """The Invocation for ``argv``; bad values end in parser.error (exit status 2)."""
    args = parser.parse_args(argv)
    if args.socket == "":
        parser.error("argument --socket: the path must not be empty")
    options = Options(args.socket, args.json, args.timeout)
    if args.command is None:
        return Invocation("", options)
    try:
        request = _request(args)
    except LocalProtocolError as exc:
        parser.error(f"{args.command}: {exc.message}")
    return Invocation(args.command, options, request,
                      getattr(args, "interval", DEFAULT_INTERVAL))


# --------------------------------------------------------------------------- running


def show(invocation: Invocation, result: dict[str, Any], out: TextIO) -> None:
    """Print a command's result as text or JSON."""
    request = invocation.request
    if isinstance(request, Log):
        for entry in result.get("entries", []):
            print(render.json_line(entry) if invocation.options.json
                  else render.log_line(entry), file=out)
        return
    if invocation.options.json:
        print(render.json_text(result), file=out)
        return
    for line in text_lines(request, result):
        print(line, file=out)


def text_lines(request: Request | None, result: dict[str, Any]) -> list[str]:
    if isinstance(request, Status):
        return render.status_lines(result)
    if isinstance(request, Rooms):
        return render.rooms_lines(result.get("rooms", []))
    if isinstance(request, Users):
        return render.users_lines(result.get("users", []), request.room)
    if isinstance(request, SetState):
        state = render.clean(result.get("state"))
        how = "now" if result.get("changed") else "already"
        return [f"lanchatd is {how} {state}: {render.clean(result.get('description'))}."]
    if isinstance(request, CloseRoom):
        members = result.get("members") or []
        names = ", ".join(render.clean(m) for m in members)
        return [f"Closed room {request.room}; {render.plural(len(members), 'member')} "
                f"({names}) told why and disconnected."]
    if isinstance(request, Kick):
        addr = f" ({render.clean(result['addr'])})" if result.get("addr") else ""
        return [f"Removed {render.clean(result.get('name', request.name))}{addr} from room "
                f"{request.room}; they were told why."]
    if isinstance(request, Announce):
        rooms = result.get("rooms") or []
        if not rooms:
            return ["No room is open: nobody received the announcement."]
        return [f"Announced to {render.plural(len(rooms), 'room')}: "
                f"{', '.join(render.clean(r) for r in rooms)}."]
    if isinstance(request, Reload):
        message = render.clean(result.get("message", "configuration reloaded"))
        return [message[:1].upper() + message[1:] + "."]
    return [render.json_text(result)]


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
            return shell.run(options)
        assert invocation.request is not None
        choice = find_control_socket(options.socket)
        with ControlClient(choice, options.timeout) as client:
            if isinstance(invocation.request, Log) and invocation.request.follow:
                for entry in client.follow(invocation.request.n):
                    print(render.json_line(entry) if options.json else render.log_line(entry),
                          file=out, flush=True)
                return EXIT_OK
            result = client.call(invocation.request)
        show(invocation, result, out)
        return EXIT_OK
    except CtlError as exc:
        report(exc, options, out, err)
        return exc.status
    except KeyboardInterrupt:
        if invocation.follows or invocation.command in ENDLESS:
            return EXIT_OK
        print("lanchatctl: interrupted", file=err)
        return EXIT_INTERRUPTED


def _tidy_streams() -> None:
    """Names from anywhere must not crash the output on a terminal that is not UTF-8."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _tidy_streams()
    parser = build_parser()
    invocation = parse(parser, argv)
    if not invocation.command:
        if sys.stdin.isatty() and sys.stdout.isatty():
            invocation = dataclasses.replace(invocation, command="shell")
        else:
            parser.print_usage(sys.stderr)
            print("lanchatctl: no command given (on a terminal that starts the shell); "
                  "lanchatctl --help lists the commands", file=sys.stderr)
            return EXIT_USAGE
    try:
        return execute(invocation)
    except BrokenPipeError:
        # The reader went away (lanchatctl log --follow | head): that is its choice.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK

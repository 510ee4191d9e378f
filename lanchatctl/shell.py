"""The interactive ``Server>`` prompt: the original admin console, over the control socket.

The original server had a console inside its process: ``/start``, ``/standby``,
``/stop``, ``/room PIN`` (close a room), ``/room PIN user`` (kick), ``/logg`` and
``/help``.  This shell accepts those, and every lanchatctl command by name
(``status``, ``kick 1234 bob --reason spam``...).  A line is translated into a
lanchatctl command line and run through the same parser and ``execute`` as the
command itself, so the shell and the command cannot disagree.  Each command opens
its own connection, so the shell outlives a daemon restart.

Readline, when Python has it, gives line editing, a history kept across sessions
(in the user's state directory) and Tab completion of commands, room PINs and names.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import platformdirs

from lanchat.i18n import _
from lanchat.paths import APP_NAME, find_control_socket
from lanchat.protocol.control import Rooms, Users
from lanchatctl.client import EXIT_OK, ControlClient, CtlError
from lanchatctl.options import STATE_COMMANDS, Options

#: Runs one lanchatctl command line (the shell's caller passes its own, so that the
#: shell never imports the command line that starts it).
RunArgv = Callable[[list[str]], int]

PROMPT = "Server> "
HISTORY_FILE = "lanchatctl_history"
HISTORY_LENGTH = 1000
COMPLETION_TIMEOUT = 1.0

def help_text() -> str:
    return _("""\
The original console commands:
  /start                 state active: new clients and messages are allowed
  /standby               members keep chatting, new clients are refused
  /stop                  messages and new clients are refused
  /room PIN              close room PIN (its members are told why and disconnected)
  /room PIN USER [WHY]   remove USER from room PIN (told WHY); USER may have spaces
                         (the longest match in the room), or: /room PIN USER --reason WHY
  /logg [N]              the last N entries of the activity log (default 20)
  /help                  this help
Every lanchatctl command works too, with or without a slash:
  status, rooms, users [PIN], start, standby, stop, close PIN [--reason TEXT],
  kick PIN NAME [--reason TEXT], announce [--room PIN] TEXT, log [-n N] [--follow],
  reload, top.  help COMMAND shows a command's options.
quit, exit or Ctrl-D leaves.  Tab completes commands, room PINs and names;
Up and Down walk the history.""")

SUBCOMMANDS: tuple[str, ...] = ("status", "rooms", "users", "start", "standby", "stop",
                                "close", "kick", "announce", "log", "reload", "top")
ORIGINAL: tuple[str, ...] = ("/start", "/standby", "/stop", "/room", "/logg", "/help")
LEAVE = ("quit", "exit", "/quit", "/exit")
COMMAND_WORDS: tuple[str, ...] = ORIGINAL + SUBCOMMANDS + ("help",) + LEAVE[:2]
OPTION_WORDS: dict[str, tuple[str, ...]] = {
    "close": ("--reason",), "kick": ("--reason",), "announce": ("--room",),
    "log": ("-n", "--follow"), "top": ("--interval",),
}
COMMON_OPTIONS = ("--json", "--socket", "--timeout", "--help")


class ShellError(Exception):
    """A line the shell cannot turn into a command."""


def _no_members(_pin: str) -> Sequence[str]:
    return ()


def split_name(words: Sequence[str], members: Sequence[str]) -> tuple[str, str]:
    """``/room PIN`` USER [WHY]: (name, reason) from the words after the PIN.

    Names may hold spaces, so the name is the longest run of leading words that names
    someone in the room ("Ola Nordmann" before "Ola"); without a match, the first word
    (the daemon then says nobody has that name).  ``--reason`` ends the name explicitly.
    """
    if "--reason" in words:
        at = list(words).index("--reason")
        return " ".join(words[:at]), " ".join(words[at + 1:])
    present = set(members)
    for end in range(len(words), 0, -1):
        if " ".join(words[:end]) in present:
            return " ".join(words[:end]), " ".join(words[end:])
    return words[0], " ".join(words[1:])


def translate(words: Sequence[str],
              members: Callable[[str], Sequence[str]] = _no_members) -> list[str]:
    """The lanchatctl arguments for one shell line (already split into words);
    ``members(pin)`` names who is in a room (for ``/room PIN USER``)."""
    head, rest = words[0], list(words[1:])
    if head == "/room":
        if len(rest) == 1:
            return ["close", rest[0]]
        if len(rest) >= 2:
            name, why = split_name(rest[1:], members(rest[0]) if len(rest) > 2 else ())
            reason = ["--reason", why] if why else []
            return ["kick", rest[0], name, *reason]
        raise ShellError(_("/room needs a PIN: /room PIN closes the room, /room PIN USER "
                           "removes USER from it."))
    if head == "/logg":
        if len(rest) > 1:
            raise ShellError(_("/logg takes at most one number: /logg 50"))
        return ["log", "-n", rest[0]] if rest else ["log"]
    if head.startswith("/"):
        if head[1:] in SUBCOMMANDS:
            return [head[1:], *rest]
        raise ShellError(_("unknown command {command}; /help lists the commands.").format(
            command=head))
    return [head, *rest]


def history_path() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = platformdirs.user_state_dir(APP_NAME)
    return os.path.join(state, HISTORY_FILE)


class Completer:
    """Tab completion: command words, then room PINs and member names from the daemon."""

    def __init__(self, options: Options, line_buffer: Callable[[], str],
                 begidx: Callable[[], int]) -> None:
        self.options = options
        self.line_buffer = line_buffer
        self.begidx = begidx
        self.matches: list[str] = []
        self._rooms: list[dict[str, Any]] = []
        self._rooms_at = -1e9

    def complete(self, text: str, state: int) -> str | None:
        if state == 0:
            try:
                self.matches = self.candidates(self.line_buffer(), self.begidx(), text)
            except Exception:  # completion must never break the prompt
                self.matches = []
        return self.matches[state] if state < len(self.matches) else None

    def candidates(self, line: str, begidx: int, text: str) -> list[str]:
        words = line[:begidx].split()
        pool: Sequence[str] = ()
        if not words:
            pool = COMMAND_WORDS
        else:
            command = words[0].lstrip("/") if words[0] != "/room" else "/room"
            position = len(words)
            if text.startswith("-"):
                pool = OPTION_WORDS.get(command, ()) + COMMON_OPTIONS
            elif words[-1] == "--room" or (
                    command in ("/room", "users", "close", "kick") and position == 1):
                pool = [str(room.get("pin")) for room in self.rooms()]
            elif command in ("/room", "kick") and position == 2:
                pool = [str(m.get("name")) for room in self.rooms()
                        if room.get("pin") == words[1] for m in room.get("members") or []]
            elif command == "help" and position == 1:
                pool = SUBCOMMANDS
        return [word + " " for word in sorted(set(pool)) if word.startswith(text)]

    def rooms(self) -> list[dict[str, Any]]:
        """The open rooms, asked at most once every two seconds."""
        now = time.monotonic()
        if now - self._rooms_at > 2.0:
            self._rooms_at = now
            try:
                choice = find_control_socket(self.options.socket)
                with ControlClient(choice, min(self.options.timeout,
                                               COMPLETION_TIMEOUT)) as client:
                    self._rooms = list(client.call(Rooms()).get("rooms", []))
            except CtlError:
                self._rooms = []
        return self._rooms


def _setup_readline(options: Options) -> Callable[[], None]:
    """Line editing, history and completion; returns the function that saves history."""
    try:
        import readline as rl
    except ImportError:  # Python built without readline: plain input() still works
        return lambda: None
    readline: ModuleType = rl
    path = history_path()
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(HISTORY_LENGTH)
    completer = Completer(options, readline.get_line_buffer, readline.get_begidx)
    readline.set_completer(completer.complete)
    readline.set_completer_delims(" \t\n")
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")

    def save() -> None:
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            readline.write_history_file(path)

    return save


def _global_args(options: Options) -> list[str]:
    """The shell's own options, given again before each command (which may override)."""
    args = ["--timeout", repr(options.timeout)]
    if options.socket:
        args += ["--socket", options.socket]
    if options.json:
        args.append("--json")
    return args


def room_members(pin: str, options: Options) -> list[str]:
    """Who is in room ``pin`` now (none when the daemon cannot say: the kick will)."""
    try:
        with ControlClient(find_control_socket(options.socket), options.timeout) as client:
            users = client.call(Users(pin)).get("users", [])
    except CtlError:
        return []
    return [str(user.get("name")) for user in users]


def run_line(line: str, options: Options, run_argv: RunArgv) -> bool:
    """Run one shell line; False when it asks to leave."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        print("lanchatctl: " + _("{error} (quote with ' or \")").format(error=exc),
              file=sys.stderr)
        return True
    if not words:
        return True
    if words[0] in LEAVE:
        return False
    if words[0] in ("/help", "help", "?") and len(words) == 1:
        print(help_text())
        return True
    if words[0] == "help":
        words = [words[1], "--help"]
    try:
        argv = translate(words, lambda pin: room_members(pin, options))
    except ShellError as exc:
        print(f"lanchatctl: {exc}", file=sys.stderr)
        return True
    if argv[0] == "shell":
        print("lanchatctl: " + _("this is the shell already."), file=sys.stderr)
        return True
    if argv[0] not in SUBCOMMANDS and argv[0] not in STATE_COMMANDS:
        print("lanchatctl: " + _("unknown command {command!r}; /help lists the commands.")
              .format(command=argv[0]), file=sys.stderr)
        return True
    # The original console's commands answer in its words (lanchatctl/console.py).
    console = ["--console"] if words[0] in ORIGINAL else []
    try:
        run_argv(_global_args(options) + console + argv)
    except SystemExit:
        pass  # argparse has said what is wrong, or printed the help asked for
    return True


def run(options: Options, run_argv: RunArgv) -> int:
    """The Server> prompt, until quit, exit or end of input."""
    status = run_argv([*_global_args(options), "--console", "status"])  # the seed's dashboard
    if status != EXIT_OK:
        return status  # said why; a shell that cannot reach the daemon is no success
    save_history = _setup_readline(options)
    try:
        while True:
            try:
                line = input(PROMPT)
            except EOFError:
                print()
                break
            except KeyboardInterrupt:
                print()  # Ctrl-C drops the line being typed, as in a shell
                continue
            if not run_line(line, options, run_argv):
                break
    finally:
        save_history()
    return EXIT_OK

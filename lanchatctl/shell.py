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

from lanchat.paths import APP_NAME, find_control_socket
from lanchat.protocol.control import Rooms, Status
from lanchatctl.cli import (
    STATE_COMMANDS,
    Invocation,
    Options,
    build_parser,
    execute,
    parse,
)
from lanchatctl.client import EXIT_OK, ControlClient, CtlError

PROMPT = "Server> "
HISTORY_FILE = "lanchatctl_history"
HISTORY_LENGTH = 1000
COMPLETION_TIMEOUT = 1.0

HELP = """\
The original console commands:
  /start                 state active: new clients and messages are allowed
  /standby               members keep chatting, new clients are refused
  /stop                  messages and new clients are refused
  /room PIN              close room PIN (its members are told why and disconnected)
  /room PIN USER [WHY]   remove USER from room PIN (told WHY)
  /logg [N]              the last N entries of the activity log (default 20)
  /help                  this help
Every lanchatctl command works too, with or without a slash:
  status, rooms, users [PIN], start, standby, stop, close PIN [--reason TEXT],
  kick PIN NAME [--reason TEXT], announce [--room PIN] TEXT, log [-n N] [--follow],
  reload, top.  help COMMAND shows a command's options.
quit, exit or Ctrl-D leaves.  Tab completes commands, room PINs and names;
Up and Down walk the history."""

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


def translate(words: Sequence[str]) -> list[str]:
    """The lanchatctl arguments for one shell line (already split into words)."""
    head, rest = words[0], list(words[1:])
    if head == "/room":
        if len(rest) == 1:
            return ["close", rest[0]]
        if len(rest) >= 2:
            reason = ["--reason", " ".join(rest[2:])] if rest[2:] else []
            return ["kick", rest[0], rest[1], *reason]
        raise ShellError("/room needs a PIN: /room PIN closes the room, /room PIN USER "
                         "removes USER from it.")
    if head == "/logg":
        if len(rest) > 1:
            raise ShellError("/logg takes at most one number: /logg 50")
        return ["log", "-n", rest[0]] if rest else ["log"]
    if head.startswith("/"):
        if head[1:] in SUBCOMMANDS:
            return [head[1:], *rest]
        raise ShellError(f"unknown command {head}; /help lists the commands.")
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


def run_line(line: str, options: Options) -> bool:
    """Run one shell line; False when it asks to leave."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        print(f"lanchatctl: {exc} (quote with ' or \")", file=sys.stderr)
        return True
    if not words:
        return True
    if words[0] in LEAVE:
        return False
    if words[0] in ("/help", "help", "?") and len(words) == 1:
        print(HELP)
        return True
    if words[0] == "help":
        words = [words[1], "--help"]
    try:
        argv = translate(words)
    except ShellError as exc:
        print(f"lanchatctl: {exc}", file=sys.stderr)
        return True
    if argv[0] == "shell":
        print("lanchatctl: this is the shell already.", file=sys.stderr)
        return True
    if argv[0] not in SUBCOMMANDS and argv[0] not in STATE_COMMANDS:
        print(f"lanchatctl: unknown command {argv[0]!r}; /help lists the commands.",
              file=sys.stderr)
        return True
    try:
        invocation = parse(build_parser(), _global_args(options) + argv)
    except SystemExit:
        return True  # argparse has said what is wrong, or printed the help asked for
    execute(invocation)
    return True


def run(options: Options) -> int:
    """The Server> prompt, until quit, exit or end of input."""
    save_history = _setup_readline(options)
    execute(Invocation("status", options, Status()))
    print("Type /help for commands; quit or Ctrl-D leaves.")
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
            if not run_line(line, options):
                break
    finally:
        save_history()
    return EXIT_OK

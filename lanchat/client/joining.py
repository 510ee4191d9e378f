"""Getting into a room: choosing the server, then the PIN and name.

This part runs before the chat interface starts, as plain lines in the terminal
(like the original client: "[Klient] Fant server på ...", then the PIN prompt).
Without a terminal to ask on, every missing or refused value is an error that says
which option to give.
"""

from __future__ import annotations

import selectors
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

from lanchat.client import discovery, messages, pinning
from lanchat.client import session as s
from lanchat.client.connection import ChatClient, format_address, parse_server
from lanchat.client.i18n import _, language
from lanchat.client.options import Options
from lanchat.client.secure import SecureStep
from lanchat.client.settings import (
    DEFAULT_CHAT_PORT,
    LOCALHOST,
    LastServer,
    load_last_server,
    save_last_server,
)
from lanchat.protocol import chat, rules
from lanchat.protocol.errors import RemoteProtocolError


class JoinError(Exception):
    """Joining is not possible; the message says why and what to do."""


class Prompter(Protocol):
    interactive: bool

    def ask(self, prompt: str) -> str | None:
        """A line typed by the person (None at end of input)."""

    def say(self, text: str) -> None:
        """A line of status for the person."""


class TerminalPrompter:
    """Asks on the terminal; status lines go to stderr so stdout stays for messages."""

    def __init__(self, stdin: TextIO | None = None, stderr: TextIO | None = None,
                 interactive: bool | None = None) -> None:
        self.stdin = stdin or sys.stdin
        self.stderr = stderr or sys.stderr
        self.interactive = self.stdin.isatty() if interactive is None else interactive

    def ask(self, prompt: str) -> str | None:
        if not self.interactive:
            return None
        try:
            if sys.stdout.isatty() and self.stdin is sys.stdin:
                try:
                    import readline  # noqa: F401  (line editing for input())
                except ImportError:
                    pass
                return input(prompt)
            self.stderr.write(prompt)
            self.stderr.flush()
            line = self.stdin.readline()
            if not line:
                self.stderr.write("\n")  # what follows starts on a line of its own
            return line.rstrip("\n") if line else None
        except EOFError:
            # Ctrl-D leaves the cursor after the prompt: end that line first.
            print(file=self.stderr, flush=True)
            return None

    def say(self, text: str) -> None:
        print(messages.clean(text), file=self.stderr, flush=True)


# ------------------------------------------------------------------ the server


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    name: str = ""
    server_id: str | None = None  # known before connecting: checked at the TLS handshake
    mode: str = "auto"            # "tls", "plain" or "auto" (lanchat.client.secure)

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)


def no_server_help(port: int) -> list[str]:
    return [
        _("Found no server on the LAN."),
        _("Likely causes:"),
        "  - " + _("the server is not running;"),
        "  - " + _("a firewall blocks UDP port {port} (discovery) on the server or this "
                   "machine;").format(port=port),
        "  - " + _("the Wi-Fi isolates clients from each other (client isolation)."),
        _("If you know the server's address, connect to it directly: "
          "lanchat --server HOST[:PORT]"),
        _("To find out which it is: lanchat doctor"),
    ]


def describe_found(found: discovery.Found) -> str:
    text = _("[Client] Found server at {address}: {name}").format(
        address=found.tls_address or found.address, name=found.name or "?")
    if not found.accepts_people:
        text += " (" + messages.state_text(found.state) + ")"
    if found.fingerprint:
        text += " " + _("key {fingerprint}").format(fingerprint=found.fingerprint)
    else:
        text += " " + _("(no TLS)")
    return text


def screen_found(found: list[discovery.Found], options: Options,
                 say: Callable[[str], None]) -> list[discovery.Found]:
    """Drop the answers that claim a known server id with another key (or, without
    --insecure, without TLS), saying why; the rest may be joined."""
    known = pinning.KnownServers(options.known_servers)
    kept: list[discovery.Found] = []
    for f in found:
        entry = known.get(f.server_id)
        if entry is not None and f.fingerprint is not None and f.fingerprint != entry.fingerprint:
            say(_("Refusing the server answering at {address} as {name}:").format(
                address=f.tls_address, name=f.name or "?"))
            say(pinning.key_changed(f.server_id, f.name, entry.fingerprint, f.fingerprint))
        elif entry is not None and f.fingerprint is None and not options.insecure:
            say(_("Refusing the server answering at {address} as {name} ({server_id}): it "
                  "offers no TLS, but that server is known to. Use --insecure to connect "
                  "anyway.").format(address=f.address, name=f.name or "?",
                                    server_id=f.server_id))
        else:
            kept.append(f)
    return kept


def target_for(found: discovery.Found, options: Options) -> Target:
    """How to reach a server found by discovery: TLS when it offers it."""
    if found.tls_port is not None and not (options.insecure and found.port):
        return Target(found.host, found.tls_port, found.name, found.server_id, "tls")
    return Target(found.host, found.port, found.name, found.server_id, "plain")


def discovery_targets(options: Options) -> tuple[list[discovery.ProbeTarget],
                                                  tuple[str, int] | None]:
    """Where the probe goes: --discovery-address; else every path (the broadcasts, each
    interface's ff02::1; mDNS adds its own as it finds them), and this machine first
    (a daemon here answers on loopback even when no network is up)."""
    if options.discovery_targets:
        return discovery.as_targets(options.discovery_targets), None
    return (discovery.default_probe_targets(options.discovery_port),
            (LOCALHOST, options.discovery_port))


def run_discovery(options: Options, say: Callable[[str], None]) -> list[discovery.Found]:
    """Probe every path (or only ``--discovery-address``) and return the servers."""
    from lanchat.client import mdns

    targets, local = discovery_targets(options)
    browser = None
    if not options.discovery_targets:
        browser, _reason = mdns.start(options.discovery_port)
    try:
        result = discovery.run_round(targets, options.discovery_timeout, late=browser,
                                     local=local)
    finally:
        if browser is not None:
            browser.close()
    errors = [f"{target.label}: {reason}" for target, reason in result.errors.items()]
    if not result.found and errors and len(errors) == len(targets):
        say(_("Could not send the discovery probe: {errors}").format(errors="; ".join(errors)))
    return result.found


def choose_server(found: list[discovery.Found], options: Options,
                  prompter: Prompter) -> discovery.Found:
    """The server to join among those found (raises JoinError when none can be)."""
    if options.server_name is not None:
        wanted = options.server_name.casefold()
        matches = [f for f in found if f.name.casefold() == wanted]
        if not matches:
            names = ", ".join(f"{f.name} ({f.address})" for f in found) or _("none")
            raise JoinError(_("No server named {name!r} answered. Servers found: {names}.")
                            .format(name=options.server_name, names=names))
        found = matches
    if len(found) == 1:
        only = found[0]
        if not only.accepts_people:
            raise JoinError(_("{name} ({address}) is {state} and accepts no new people. "
                              "Try again later.").format(
                name=only.name, address=only.address, state=messages.state_text(only.state)))
        return only
    open_ = [f for f in found if f.accepts_people]
    if len(open_) == 1:
        return open_[0]  # the others would refuse: nothing to choose (they are listed)
    if not prompter.interactive:
        raise JoinError(
            _("Several servers answered: {names}. Choose one with --server-name NAME or "
              "--server HOST[:PORT].").format(
                names=", ".join(f"{f.name} ({f.address}, {messages.state_text(f.state)})"
                                for f in found)))
    prompter.say(_("Several servers answered:"))
    for number, f in enumerate(found, 1):
        prompter.say(f"  {number}. {f.name}  {f.address}  {messages.state_text(f.state)}")
    while True:
        answer = prompter.ask(_("Choose a server (1-{count}): ").format(count=len(found)))
        if answer is None:
            raise JoinError(_("No server chosen."))
        answer = answer.strip()
        if answer.isdigit() and 1 <= int(answer) <= len(found):
            chosen = found[int(answer) - 1]
            if chosen.accepts_people:
                return chosen
            prompter.say(_("{name} is {state} and accepts no new people; choose another.")
                         .format(name=chosen.name, state=messages.state_text(chosen.state)))
        else:
            prompter.say(_("Type a number from 1 to {count}.").format(count=len(found)))


def find_server(options: Options, prompter: Prompter) -> Target:
    """Where to connect: --server, else discovery, else the last server used, else
    what the person types (an address, or Enter to search again)."""
    if options.server is not None:
        return direct_target(*options.server, options)
    first = True
    while True:
        found = run_discovery(options, prompter.say)
        for f in found:
            prompter.say(describe_found(f))
        if found:
            trusted = screen_found(found, options, prompter.say)
            if not trusted:
                raise JoinError(_("No server that answered can be trusted; nothing was sent."))
            chosen = choose_server(trusted, options, prompter)
            return target_for(chosen, options)
        last = load_last_server(options.state_file) if first else None
        first = False
        if last is not None and options.server_name is None:
            prompter.say(_("Found no server on the LAN; trying the last server used, {name} "
                           "({address}).").format(name=last.name or "?",
                                                  address=format_address(last.host, last.port)))
            return Target(last.host, last.port, last.name, last.server_id or None,
                          "plain" if options.insecure else "auto")
        if not prompter.interactive:
            raise JoinError("\n".join(no_server_help(options.discovery_port)))
        for line in no_server_help(options.discovery_port)[:-1]:  # the last: asked below
            prompter.say(line)
        target = ask_address(prompter, options)
        if target is not None:
            return target


def direct_target(host: str, port: int, options: Options) -> Target:
    """A server given by address: TLS on the TLS port, plain text with --insecure, and
    on any other port whichever the server speaks (lanchat.client.secure, "auto")."""
    mode = "plain" if options.insecure else (
        "tls" if port == chat.DEFAULT_TLS_PORT else "auto")
    return Target(host, port, mode=mode)


QUIT_ANSWERS = ("q", "quit", "/quit")


def ask_address(prompter: Prompter, options: Options) -> Target | None:
    """The server's address typed by the person; None: search again (raises JoinError
    when they quit)."""
    default_port = DEFAULT_CHAT_PORT if options.insecure else chat.DEFAULT_TLS_PORT
    while True:
        answer = prompter.ask(_("Server address (HOST[:PORT]), Enter to search again, "
                                "q to quit: "))
        if answer is None or answer.strip().lower() in QUIT_ANSWERS:
            raise JoinError(_("No server chosen."))
        answer = answer.strip()
        if not answer:
            return None
        try:
            host, port = parse_server(answer, default_port)
        except ValueError as exc:
            prompter.say(_("Not a server address: {reason}.").format(reason=exc))
            continue
        return direct_target(host, port, options)


# ------------------------------------------------------------------ PIN and name


def ask_pin(prompter: Prompter, welcome: chat.Welcome | None) -> str:
    while True:
        answer = prompter.ask(_("Enter the PIN of the room you want to join: "))
        if answer is None:
            raise JoinError(_("No room PIN given (use --pin PIN)."))
        answer = answer.strip()
        low = welcome.pin_min if welcome else 1
        high = welcome.pin_max if welcome else 64
        try:
            return rules.check_pin(answer, low, high)
        except RemoteProtocolError:
            prompter.say(messages.pin_rule(welcome))


def ask_name(prompter: Prompter) -> str:
    while True:
        answer = prompter.ask(_("Enter your name: "))
        if answer is None:
            raise JoinError(_("No name given (use --name NAME)."))
        try:
            return rules.normalize_name(answer.strip())
        except RemoteProtocolError as exc:
            prompter.say(messages.name_refused(exc))


class Joiner:
    """Collects the session's events while joining; the rest go to the interface."""

    def __init__(self) -> None:
        self.events: list[s.UiEvent] = []

    def emit(self, events: list[s.UiEvent]) -> None:
        self.events.extend(events)


def join_room(client: ChatClient, joiner: Joiner, prompter: Prompter,
              options: Options) -> list[s.UiEvent]:
    """Connect and join; returns the events that came after the join, for the interface.

    Raises JoinError when the room cannot be joined.
    """
    session = client.session
    selector = client.selector
    early: list[s.UiEvent] = []  # server events before the join, for the interface
    while True:
        while not joiner.events:
            timeout = client.timeout()
            for key, mask in selector.select(timeout):
                callback: Callable[[int], None] = key.data
                callback(mask)
            client.tick()
        event = joiner.events.pop(0)
        if isinstance(event, s.Connecting):
            if event.attempt == 0:
                prompter.say(_("[Client] Connecting to server {address}").format(
                    address=client.address))
        elif isinstance(event, s.NeedCredentials):
            pin = ask_pin(prompter, event.welcome) if event.pin else session.pin
            name = ask_name(prompter) if event.name else session.name
            assert pin is not None and name is not None
            joiner.emit(session.set_credentials(pin, name, client.clock()))
            client.flush()
        elif isinstance(event, s.JoinRefused):
            prompter.say(messages.join_refused(event))
            if not prompter.interactive:
                flag = "--pin" if event.field == "pin" else "--name"
                raise JoinError(_("Give another value with {flag}.").format(flag=flag))
            pin = ask_pin(prompter, event.welcome) if event.field == "pin" else session.pin
            name = ask_name(prompter) if event.field == "name" else session.name
            assert pin is not None and name is not None
            joiner.emit(session.set_credentials(pin, name, client.clock()))
            client.flush()
        elif isinstance(event, s.Finished):
            client.close()
            raise JoinError(messages.finished(event) or _("Could not join."))
        elif isinstance(event, s.Disconnected):
            prompter.say(messages.disconnected(event))
        elif isinstance(event, s.Retrying):
            prompter.say(messages.retrying(event))
        elif isinstance(event, s.RoomJoined):
            welcome = session.welcome
            save_last_server(LastServer(client.host, client.port,
                                        welcome.name if welcome else "",
                                        welcome.server_id if welcome else ""),
                             options.state_file)
            if not client.encrypted:
                prompter.say(_("[Client] Warning: this connection is not encrypted; anyone "
                               "on the network can read the room."))
            rest = [*early, event, *joiner.events]
            joiner.events.clear()
            return rest
        elif not isinstance(event, s.Connected):
            early.append(event)  # a state change, a notice: shown once the interface runs


def make_client(target: Target, options: Options, emit: Callable[[list[s.UiEvent]], None],
                selector: selectors.BaseSelector,
                say: Callable[[str], None] = lambda text: None) -> ChatClient:
    # The server's sentences in the person's language; with --json the events are data
    # for a program, the same in every language, so English (no lang asked for).
    session = s.Session(pin=options.pin, name=options.name,
                        lang="" if options.json else language())
    mode = "plain" if options.insecure and target.mode != "tls" else target.mode
    secure = SecureStep(mode, pinning.KnownServers(options.known_servers),
                        expected_id=target.server_id, name=target.name,
                        insecure=options.insecure, say=say)
    return ChatClient(session, target.host, target.port, selector, emit, secure=secure)

"""The daemon's configuration: one frozen object built once at start (and on reload).

Every key of the TOML file maps to one field below, by the same name, inside the
section named in the field's metadata.  Defaults here are the built-in defaults; the
example file ``docs/lanchatd.toml`` lists them all with their meaning.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
import sys
import types
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any, Callable

from lanchat import i18n, paths
from lanchat.protocol import vocabulary
from lanchat.protocol.record import Record, record
from lanchat.protocol.vocabulary import SERVER_STATES

DEFAULT_DISCOVERY_ALLOW: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fe80::/10",
    "fc00::/7",
)


def _key(section: str, doc: str, *, reloadable: bool = False) -> Any:
    return {"section": section, "doc": doc, "reloadable": reloadable}


@record
class Config(Record):
    # [server]
    name: str = field(default="", metadata=_key(
        "server", "Server name shown to clients; empty means the host name.", reloadable=True))
    host: str = field(default="", metadata=_key(
        "server", "Address the TCP chat and web ports bind to; empty (or \"::\") means all "
        "interfaces, IPv4 and IPv6 (dual-stack); \"0.0.0.0\" means all, IPv4 only."))
    port: int = field(default=vocabulary.CHAT_PORT, metadata=_key(
        "server", "TCP chat port; 0 picks a free one."))
    plain: bool = field(default=True, metadata=_key(
        "server", "Serve the plain-text chat port (port); false leaves only TLS (tls_port)."))
    initial_state: str = field(default="active", metadata=_key(
        "server", "State at start: active, standby or stopped."))
    state_dir: str | None = field(default=None, metadata=_key(
        "server", "Directory for the server id; default $STATE_DIRECTORY or the user state dir."))
    listen_backlog: int = field(default=1024, metadata=_key(
        "server", "Listen backlog of the TCP chat socket."))
    text_language: str = field(default="en", metadata=_key(
        "server", "Language of what plain-text members read until they type /lang: a "
        "catalogue in lanchat/locale (docs/languages.md).", reloadable=True))

    # [discovery]
    discovery_host: str = field(default="", metadata=_key(
        "discovery", "Address the UDP discovery socket binds to; empty means all, IPv4 "
        "and IPv6 (it then also hears probes to ff02::1); \"0.0.0.0\" means IPv4 only."))
    discovery_port: int = field(default=vocabulary.DISCOVERY_PORT, metadata=_key(
        "discovery", "UDP discovery port; 0 picks a free one."))
    discovery_allow: tuple[str, ...] = field(default=DEFAULT_DISCOVERY_ALLOW, metadata=_key(
        "discovery", "Networks whose probes are answered (CIDR list).", reloadable=True))
    discovery_rate: float = field(default=5.0, metadata=_key(
        "discovery", "Replies per second allowed to one source address.", reloadable=True))
    discovery_burst: int = field(default=10, metadata=_key(
        "discovery", "Replies one source may get at once before the rate applies.",
        reloadable=True))

    # [tls]
    tls: bool = field(default=True, metadata=_key(
        "tls", "Serve chat over TLS on tls_port (same host as the plain port)."))
    tls_port: int = field(default=vocabulary.TLS_PORT, metadata=_key(
        "tls", "TCP port of chat over TLS; 0 picks a free one."))
    tls_cert: str | None = field(default=None, metadata=_key(
        "tls", "Certificate (PEM) to use instead of the self-signed one made in state_dir; "
        "needs tls_key."))
    tls_key: str | None = field(default=None, metadata=_key(
        "tls", "Private key (PEM, unencrypted) of tls_cert; clients pin its fingerprint."))
    tls_handshake_timeout: float = field(default=10.0, metadata=_key(
        "tls", "Seconds a client has to finish the TLS handshake.", reloadable=True))

    # [web]
    http: bool = field(default=True, metadata=_key(
        "web", "Serve the browser client (the chat page and its WebSocket) on http_port."))
    http_port: int = field(default=vocabulary.HTTP_PORT, metadata=_key(
        "web", "TCP port of the browser client; 0 picks a free one (to turn it off, set "
        "http = false)."))
    http_request_timeout: float = field(default=10.0, metadata=_key(
        "web", "Seconds an HTTP request may take to arrive whole (and an idle page "
        "connection may stay open) before the connection is closed."))
    http_host_names: tuple[str, ...] = field(default=(), metadata=_key(
        "web", "Names the page is served under besides this machine's host name, "
        "NAME.local, localhost and any IP address (a DNS name such as "
        "\"chat.school.lan\", or the name a reverse proxy forwards); a request for "
        "another name is refused, which stops other web sites from reaching the chat "
        "through DNS rebinding. \"*\" accepts every name.", reloadable=True))
    https: bool = field(default=False, metadata=_key(
        "web", "Serve the browser client over HTTPS, with the TLS key and certificate of "
        "the chat's TLS port (self-signed unless tls_cert is set: browsers warn until "
        "each person accepts it)."))

    # [rooms]
    pin_min_length: int = field(default=vocabulary.DEFAULT_PIN_MIN, metadata=_key(
        "rooms", "Fewest digits in a room PIN.", reloadable=True))
    pin_max_length: int = field(default=vocabulary.DEFAULT_PIN_MAX, metadata=_key(
        "rooms", "Most digits in a room PIN.", reloadable=True))
    history: int = field(default=50, metadata=_key(
        "rooms", "Messages a newcomer receives from the room's past; 0 disables.",
        reloadable=True))

    # [limits]
    max_line_bytes: int = field(default=vocabulary.DEFAULT_MAX_LINE, metadata=_key(
        "limits", "Longest line a client may send, in bytes, newline included.",
        reloadable=True))
    max_errors: int = field(default=10, metadata=_key(
        "limits", "Protocol errors a connection may make before it is disconnected.",
        reloadable=True))
    handshake_timeout: float = field(default=120.0, metadata=_key(
        "limits", "Seconds a connection may take to join a room.", reloadable=True))
    keepalive_interval: float = field(default=60.0, metadata=_key(
        "limits", "Seconds of silence after which a JSON client is pinged.", reloadable=True))
    keepalive_timeout: float = field(default=30.0, metadata=_key(
        "limits", "Seconds a pinged client has to answer before it is disconnected.",
        reloadable=True))
    message_rate: float = field(default=5.0, metadata=_key(
        "limits", "Lines per second one connection may send (sustained); faster ones are "
        "read at this pace.",
        reloadable=True))
    message_burst: int = field(default=20, metadata=_key(
        "limits", "Lines one connection may send at once before the rate applies.",
        reloadable=True))
    output_buffer_bytes: int = field(default=1048576, metadata=_key(
        "limits", "Unsent bytes a connection may have queued before it is disconnected.",
        reloadable=True))
    flood_timeout: float = field(default=30.0, metadata=_key(
        "limits", "Seconds a connection may keep sending faster than message_rate "
        "(its lines read at that pace meanwhile) before it is disconnected.",
        reloadable=True))
    output_total_bytes: int = field(default=67108864, metadata=_key(
        "limits", "Unsent bytes all connections together may have queued; past it the "
        "slowest readers are disconnected.", reloadable=True))
    max_connections: int = field(default=10000, metadata=_key(
        "limits", "Connections in total (chat clients).", reloadable=True))
    max_connections_per_address: int = field(default=100, metadata=_key(
        "limits", "Connections from one address.", reloadable=True))
    join_rate: float = field(default=0.5, metadata=_key(
        "limits", "Join attempts per second one address may make (sustained).",
        reloadable=True))
    join_burst: int = field(default=10, metadata=_key(
        "limits", "Join attempts one address may make at once before the rate applies.",
        reloadable=True))
    connection_rate: float = field(default=5.0, metadata=_key(
        "limits", "Connections per second one address may open (sustained); its network "
        "(/24, /64) 4 times as many, all addresses together 16 times. Past it a new "
        "connection is told busy and closed.", reloadable=True))
    connection_burst: int = field(default=100, metadata=_key(
        "limits", "Connections one address may open at once before the rate applies.",
        reloadable=True))

    # [log]
    log_file: str | None = field(default=None, metadata=_key(
        "log", "Activity log file; default $LOGS_DIRECTORY/activity.log or the user log dir."))
    log_max_bytes: int = field(default=1048576, metadata=_key(
        "log", "Size at which the activity log file is rotated.", reloadable=True))
    log_backups: int = field(default=5, metadata=_key(
        "log", "Rotated activity log files kept (activity.log.1 ...). With 0 none is kept: "
        "a full file is emptied and starts again, so the log never takes more than "
        "log_max_bytes, and the daemon says so on stderr each time.", reloadable=True))
    log_ring_size: int = field(default=1000, metadata=_key(
        "log", "Activity log entries kept in memory.", reloadable=True))
    log_messages: bool = field(default=False, metadata=_key(
        "log", "Also record the text of room messages in the activity log.", reloadable=True))
    log_private_messages: bool = field(default=False, metadata=_key(
        "log", "Also record the text of private messages (/msg) in the activity log; a "
        "switch of its own, since people expect those to stay between the two of them.",
        reloadable=True))

    # [control]
    control_socket: str | None = field(default=None, metadata=_key(
        "control", "Control socket path; default $RUNTIME_DIRECTORY/control.sock or the "
        "user runtime dir."))
    control_group: str = field(default="lanchat", metadata=_key(
        "control", "Group given access to the control socket when run as root or a "
        "system user."))
    control_watch_group: str = field(default="", metadata=_key(
        "control", "Group whose members may watch (status, rooms, users, log) but not act, "
        "given the control socket by an ACL; empty: none. Members of control_group still "
        "administer."))
    control_hello_timeout: float = field(default=10.0, metadata=_key(
        "control", "Seconds a control connection has to send its hello.", reloadable=True))
    control_idle_timeout: float = field(default=600.0, metadata=_key(
        "control", "Seconds a control connection may stay silent (a log follower may "
        "always).", reloadable=True))
    control_max_connections: int = field(default=128, metadata=_key(
        "control", "Control connections served at once. When all are taken, a newcomer "
        "takes the place of the one silent longest (no hello, else the oldest last "
        "request), which is told idle_timeout; half of them at most may follow the log.",
        reloadable=True))

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------
# Loading: TOML file + command-line overrides -> one validated Config.
#
# Theory of operation: the file is parsed with tomllib (tomli before 3.11), then every
# section and key is checked against the dataclass above, which is the only list of
# keys there is.  Each value is type-checked and range-checked by the rules below;
# flags then replace file values and go through the same checks.  Every refusal is a
# ConfigError that names the key and, when the value came from the file, the file and
# the line, so the administrator can go straight to it.
# --------------------------------------------------------------------------------------

DEFAULT_CONFIG_PATH = paths.DAEMON_CONFIG
CONFIG_FILE_NAME = paths.DAEMON_CONFIG_NAME
STATES: tuple[str, ...] = SERVER_STATES
#: A language with a catalogue (lanchat/locale): adding a .po adds a choice here.
TEXT_LANGUAGES: tuple[str, ...] = i18n.LANGUAGES
PIN_LENGTH_LIMIT = 64
SERVER_NAME_MAX_CHARS = 64
# sun_path in struct sockaddr_un is 108 bytes on Linux, terminating NUL included.
UNIX_PATH_MAX = 107

FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Config)}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(f.metadata["section"] for f in FIELDS.values()))


class ConfigError(Exception):
    """A configuration the daemon refuses, with where it came from.

    ``str(error)`` is the whole sentence for the administrator, for example
    ``/etc/lanchat/lanchatd.toml:3: [server] port: must be between 0 and 65535, not 70000``.
    """

    def __init__(
        self,
        problem: str,
        *,
        key: str | None = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        self.problem = problem
        self.key = key
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + problem)


def default_config_path(environ: Mapping[str, str] = os.environ) -> str:
    """$CONFIGURATION_DIRECTORY/lanchatd.toml under systemd, else /etc/lanchat/lanchatd.toml."""
    return paths.daemon_config_path(environ)


def load_config(
    path: str | None,
    overrides: Mapping[str, Any],
    *,
    environ: Mapping[str, str] = os.environ,
    explicit_path: bool,
) -> Config:
    """Read the TOML file at ``path`` (the default path if None), apply ``overrides``.

    ``overrides`` maps field names to values given on the command line; they win over
    the file.  A missing file is an error only when ``explicit_path`` is true (the
    administrator named it); a missing default file means built-in defaults.
    Raises ConfigError.
    """
    return load_config_and_source(path, overrides, environ=environ, explicit_path=explicit_path)[0]


def load_config_and_source(
    path: str | None,
    overrides: Mapping[str, Any],
    *,
    environ: Mapping[str, str] = os.environ,
    explicit_path: bool,
) -> tuple[Config, str | None]:
    """As load_config, also returning the file actually read (None: built-in defaults)."""
    if path is None:
        path = default_config_path(environ)
    text = _read_text(path, explicit_path)
    values: dict[str, Any] = {}
    errors: dict[str, Callable[[str], ConfigError]] = {}  # key -> where its value came from
    if text is not None:
        source = _FileSource(path, text)
        for key, (section, raw) in _flatten(_parse(text, path), source).items():
            errors[key] = source.error(section, key)
            values[key] = _check_value(key, raw, errors[key])
    for key, raw in overrides.items():
        if key not in FIELDS:
            raise ConfigError(f"unknown setting {key!r} given on the command line", key=key)
        errors[key] = _flag_error(key)
        values[key] = _check_value(key, raw, errors[key])

    def error_for(key: str) -> Callable[[str], ConfigError]:
        return errors.get(key) or _default_error(key)

    _check_together(values, error_for)
    return Config(**values), (path if text is not None else None)


def resolve_paths(config: Config, environ: Mapping[str, str] = os.environ) -> Config:
    """Fill in the log file, state directory and control socket when not configured.

    Under systemd the unit's LogsDirectory=, StateDirectory= and RuntimeDirectory= are
    passed as $LOGS_DIRECTORY etc. (several paths are colon-separated; the first is
    ours).  Otherwise the user's directories are used (lanchat.paths), so the daemon
    runs without root; ConfigError when the user has no runtime directory for the
    control socket.
    """
    changes: dict[str, str] = {}
    if config.log_file is None:
        logs = paths.first_path(environ, "LOGS_DIRECTORY") or paths.user_dir("log")
        changes["log_file"] = os.path.join(logs, "activity.log")
    if config.state_dir is None:
        changes["state_dir"] = (paths.first_path(environ, "STATE_DIRECTORY")
                                or paths.user_dir("state"))
    if config.control_socket is None:
        # One rule for the daemon and lanchatctl, which must find the same socket.
        try:
            changes["control_socket"] = paths.daemon_control_socket(environ)
        except paths.NoRuntimeDir as exc:
            raise ConfigError(str(exc), key="control_socket") from None
    return config.replace(**changes) if changes else config


def reloadable_changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """Split the keys whose values differ into (applied at run time, needing a restart)."""
    applied: list[str] = []
    ignored: list[str] = []
    for name, f in FIELDS.items():
        if getattr(old, name) != getattr(new, name):
            (applied if f.metadata["reloadable"] else ignored).append(name)
    return applied, ignored


# --- reading and parsing ------------------------------------------------------------


def _read_text(path: str, explicit_path: bool) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if explicit_path:
            raise ConfigError("configuration file not found", path=path) from None
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file: {exc.strerror}", path=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError("not valid UTF-8 (TOML files are UTF-8)", path=path, line=line) from None


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _toml_library() -> types.ModuleType:
    """tomllib (tomli before 3.11), imported only when there is a file to read: 3 ms of
    imports and regexes that the built-in defaults do not need."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli

    return tomli


def _parse(text: str, path: str) -> dict[str, Any]:
    toml = _toml_library()
    try:
        document: dict[str, Any] = toml.loads(text)
        return document
    except toml.TOMLDecodeError as exc:
        message = str(exc).splitlines()[0] if str(exc) else "syntax error"
        match = _TOML_POSITION.search(message)
        if match is None:
            raise ConfigError(f"invalid TOML: {message}", path=path) from None
        problem = message[: match.start()]
        column = int(match.group(2))
        raise ConfigError(
            f"invalid TOML (column {column}): {problem}", path=path, line=int(match.group(1))
        ) from None


class _FileSource:
    """The file's text, to point at the line that sets a key."""

    _HEADER = re.compile(r"^\[\[?\s*([^\]]*?)\s*\]\]?")
    _KEY = re.compile(r"""^(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_.\- ]+?))\s*=""")

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, section: str | None, key: str | None) -> int | None:
        """Line of ``key = `` inside ``[section]`` (or of the header if key is None)."""
        wanted = ".".join(part for part in (section, key) if part is not None)
        current: str | None = None
        for number, raw in enumerate(self.lines, 1):
            line = raw.strip()
            header = self._HEADER.match(line)
            if header is not None:
                current = _dotted(header.group(1))
                if key is None and current == wanted:
                    return number
                continue
            found = self._KEY.match(line)
            if key is not None and found is not None:
                name = _dotted(next(g for g in found.groups() if g is not None))
                full = name if current is None else f"{current}.{name}"
                if full == wanted:
                    return number
        return None

    def error(self, section: str | None, key: str | None) -> Callable[[str], ConfigError]:
        def make(problem: str) -> ConfigError:
            label = _label(section, key)
            return ConfigError(
                f"{label}: {problem}",
                key=key,
                path=self.path,
                line=self.line_of(section, key),
            )

        return make


def _dotted(name: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in name.split("."))


def _label(section: str | None, key: str | None) -> str:
    if section is None:
        return str(key)
    return f"[{section}]" if key is None else f"[{section}] {key}"


def _flag_error(key: str) -> Callable[[str], ConfigError]:
    flag = "--" + key.replace("_", "-")
    return lambda problem: ConfigError(f"{flag}: {problem}", key=key)


def _default_error(key: str) -> Callable[[str], ConfigError]:
    section = FIELDS[key].metadata["section"]
    return lambda problem: ConfigError(f"[{section}] {key} (default): {problem}", key=key)


def _suggest(word: str, choices: Sequence[str]) -> str:
    import difflib  # only for a misspelt key: an error path

    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _flatten(document: Mapping[str, Any], source: _FileSource) -> dict[str, tuple[str, Any]]:
    """Map each key the file sets to (section, raw value); refuse anything unknown."""
    found: dict[str, tuple[str, Any]] = {}
    for section, table in document.items():
        if section not in SECTIONS:
            if section in FIELDS:
                home = FIELDS[section].metadata["section"]
                raise source.error(None, section)(
                    f"must be inside a section: put it under [{home}]"
                )
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise source.error(section, None)(
                f"unknown section{_suggest(section, SECTIONS)} (known sections: {known})"
            )
        if not isinstance(table, dict):
            raise source.error(section, None)(
                f"must be a table of settings, not {_describe(table)}"
            )
        keys_here = [name for name, f in FIELDS.items() if f.metadata["section"] == section]
        for key, raw in table.items():
            if key in FIELDS and key not in keys_here:
                home = FIELDS[key].metadata["section"]
                raise source.error(section, key)(
                    f"this key belongs in [{home}], not in [{section}]"
                )
            if key not in FIELDS:
                raise source.error(section, key)(
                    f"unknown key{_suggest(key, keys_here) or _suggest(key, list(FIELDS))}"
                )
            found[key] = (section, raw)
    return found


# --- value checks -------------------------------------------------------------------

def _is_int(raw: Any) -> bool:
    # TOML true/false come back as bool, which Python counts as an int: they are not.
    return isinstance(raw, int) and not isinstance(raw, bool)


def _is_number(raw: Any) -> bool:
    return _is_int(raw) or isinstance(raw, float)


def _is_string_array(raw: Any) -> bool:
    return isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw)


# What each field's annotation accepts, named as the TOML value the file must hold, and
# how the accepted value is converted to the field's type.
_TYPES: dict[str, tuple[str, Callable[[Any], bool], Callable[[Any], Any]]] = {
    "str": ("a string", lambda raw: isinstance(raw, str), str),
    "str | None": ("a string", lambda raw: isinstance(raw, str), str),
    "int": ("an integer", _is_int, int),
    "float": ("a number", _is_number, float),
    "bool": ("a boolean (true or false)", lambda raw: isinstance(raw, bool), bool),
    "tuple[str, ...]": ("an array of strings", _is_string_array, tuple),
}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time" if hasattr(value, "isoformat") else type(value).__name__


def _check_value(key: str, raw: Any, error: Callable[[str], ConfigError]) -> Any:
    """Return the value converted to the field's type, or raise error(problem)."""
    wanted, accepts, convert = _TYPES[str(FIELDS[key].type)]
    if not accepts(raw):
        raise error(f"must be {wanted}, not {_describe(raw)} ({_toml_value(raw)})")
    value = convert(raw)
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"must be a finite number, not {raw!r}")
    problem = _RULES[key].problem(value) if key in _RULES else None
    if problem is not None:
        raise error(problem)
    return value


class _Rule:
    """A check on one value, which can also say in words what it allows."""

    def __init__(self, allowed: str, problem: Callable[[Any], str | None]) -> None:
        self.allowed = allowed  # completes "Must be ...", for the example file
        self.problem = problem  # None if the value is fine, else what is wrong


def _simple(allowed: str, ok: Callable[[Any], bool]) -> _Rule:
    return _Rule(allowed, lambda value: None if ok(value) else f"must be {allowed}, not {value}")


def _between(low: int, high: int) -> _Rule:
    return _simple(f"between {low} and {high}", lambda value: low <= value <= high)


def _at_least(low: int) -> _Rule:
    return _simple(f"at least {low}", lambda value: value >= low)


_POSITIVE = _simple("greater than 0", lambda value: value > 0)


def _one_of(*choices: str) -> _Rule:
    allowed = "one of " + ", ".join(choices)
    return _Rule(
        allowed,
        lambda value: None if value in choices else f"must be {allowed}, not {_toml_value(value)}",
    )


def _path_problem(value: Any) -> str | None:
    if value == "":
        return "must not be empty (leave the key out for the default)"
    return "must not contain a NUL character" if "\0" in value else None


def _socket_path_problem(value: Any) -> str | None:
    problem = _path_problem(value)
    if problem is None and len(os.fsencode(value)) > UNIX_PATH_MAX:
        problem = f"is too long for a Unix socket (at most {UNIX_PATH_MAX} bytes)"
    return problem


def _server_name_problem(value: Any) -> str | None:
    if len(value) > SERVER_NAME_MAX_CHARS:
        return f"must be at most {SERVER_NAME_MAX_CHARS} characters, not {len(value)}"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        return "must not contain control or formatting characters"
    return None


def _networks_problem(value: Any) -> str | None:
    for item in value:
        try:
            ipaddress.ip_network(item)
        except ValueError as exc:
            return f"{item!r} is not a network: {exc}"
    return None


_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?"
                        r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?)*\.?")


def _host_names_problem(value: Any) -> str | None:
    for item in value:
        if item != "*" and (len(item) > 253 or not _HOST_NAME.fullmatch(item)):
            return f"{item!r} is not a host name"
    return None


_PORT = _between(0, 65535)
_PIN_LENGTH = _between(1, PIN_LENGTH_LIMIT)
_PATH = _Rule("a non-empty path", _path_problem)

_RULES: dict[str, _Rule] = {
    "name": _Rule(
        f"at most {SERVER_NAME_MAX_CHARS} characters, with no control characters",
        _server_name_problem,
    ),
    "port": _PORT,
    "initial_state": _one_of(*STATES),
    "state_dir": _PATH,
    "listen_backlog": _at_least(1),
    "text_language": _one_of(*TEXT_LANGUAGES),
    "discovery_port": _PORT,
    "tls_port": _PORT,
    "tls_cert": _PATH,
    "tls_key": _PATH,
    "tls_handshake_timeout": _POSITIVE,
    "http_port": _PORT,
    "http_request_timeout": _POSITIVE,
    "http_host_names": _Rule(
        'host names such as "chat.school.lan" (no scheme, port or path), or "*"',
        _host_names_problem,
    ),
    "discovery_allow": _Rule(
        'networks such as "192.168.0.0/16" or "fe80::/10" (an address alone is one host)',
        _networks_problem,
    ),
    "discovery_rate": _POSITIVE,
    "discovery_burst": _at_least(1),
    "pin_min_length": _PIN_LENGTH,
    "pin_max_length": _PIN_LENGTH,
    "history": _at_least(0),
    "max_line_bytes": _at_least(1),
    "max_errors": _at_least(1),
    "handshake_timeout": _POSITIVE,
    "keepalive_interval": _POSITIVE,
    "keepalive_timeout": _POSITIVE,
    "message_rate": _POSITIVE,
    "message_burst": _at_least(1),
    "output_buffer_bytes": _at_least(1),
    "flood_timeout": _POSITIVE,
    "output_total_bytes": _at_least(1),
    "max_connections": _at_least(1),
    "max_connections_per_address": _at_least(1),
    "join_rate": _POSITIVE,
    "join_burst": _at_least(1),
    "connection_rate": _POSITIVE,
    "connection_burst": _at_least(1),
    "log_file": _PATH,
    "log_max_bytes": _at_least(1),
    "log_backups": _at_least(0),
    "log_ring_size": _at_least(1),
    "control_socket": _Rule(
        f"a non-empty path of at most {UNIX_PATH_MAX} bytes", _socket_path_problem
    ),
    "control_hello_timeout": _POSITIVE,
    "control_idle_timeout": _POSITIVE,
    "control_max_connections": _at_least(1),
}


def _check_together(
    values: Mapping[str, Any], error_for: Callable[[str], Callable[[str], ConfigError]]
) -> None:
    """Rules that involve more than one key."""
    if not values.get("plain", True) and not values.get("tls", True):
        key = "plain" if "plain" in values else "tls"
        raise error_for(key)("plain = false and tls = false leave no chat port to serve")
    if ("tls_cert" in values) != ("tls_key" in values):
        key = "tls_cert" if "tls_cert" in values else "tls_key"
        raise error_for(key)("tls_cert and tls_key go together: set both or neither")
    low = values.get("pin_min_length", FIELDS["pin_min_length"].default)
    high = values.get("pin_max_length", FIELDS["pin_max_length"].default)
    if low > high:
        if "pin_min_length" in values:
            raise error_for("pin_min_length")(
                f"must not be greater than pin_max_length ({low} > {high})"
            )
        raise error_for("pin_max_length")(f"must not be less than pin_min_length ({high} < {low})")


# --- the example file ---------------------------------------------------------------

# Keys without a built-in value (they are worked out at start) get an example instead:
# the values they take under the systemd unit.
_EXAMPLES: dict[str, Any] = {
    "state_dir": "/var/lib/lanchatd",
    "log_file": "/var/log/lanchatd/activity.log",
    "control_socket": "/run/lanchatd/control.sock",
    "tls_cert": "/etc/lanchat/tls-cert.pem",
    "tls_key": "/etc/lanchat/tls-key.pem",
}

_EXAMPLE_HEADER = f"""\
# lanchatd.toml: configuration of the lanchat daemon (TOML).
#
# Every key is listed below in its section, commented out, with its built-in default
# and its meaning.  Remove the "#" in front of a key to change it.  Unknown sections
# and keys are refused, so a typing mistake cannot go unnoticed.  Command-line flags
# (lanchatd --help) override this file.
#
# The daemon reads {DEFAULT_CONFIG_PATH}, or $CONFIGURATION_DIRECTORY/{CONFIG_FILE_NAME}
# when systemd sets that variable, or the file named with --config.  To check a file
# without starting the daemon:
#
#     lanchatd --config /path/to/{CONFIG_FILE_NAME} --check-config
#
# Keys marked "reloadable" take effect when the daemon receives SIGHUP; the others
# take effect at the next start.
#
# This file is generated from lanchatd/config.py (example_config_text).
"""


def _toml_value(value: Any) -> str:
    """``value`` written as TOML (one line), for the example file and for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return repr(value)


def _comment(text: str) -> list[str]:
    import textwrap  # only to write the example file

    return textwrap.wrap(text, width=86, initial_indent="# ", subsequent_indent="# ")


def example_config_text() -> str:
    """The example configuration (docs/lanchatd.toml): every key, its default and meaning."""
    out = [_EXAMPLE_HEADER]
    for section in SECTIONS:
        out.append(f"[{section}]\n")
        for name, f in FIELDS.items():
            if f.metadata["section"] != section:
                continue
            doc = f.metadata["doc"]
            if name in _RULES:
                doc += f" Must be {_RULES[name].allowed}."
            doc += " Reloadable." if f.metadata["reloadable"] else " Needs a restart."
            lines = _comment(doc)
            value = f.default
            if value is None:
                lines.append("# Not set by default; for example:")
                value = _EXAMPLES[name]
            if isinstance(value, tuple):
                lines.append(f"#{name} = [")
                lines.extend(f"#    {_toml_value(item)}," for item in value)
                lines.append("#]")
            else:
                lines.append(f"#{name} = {_toml_value(value)}")
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)

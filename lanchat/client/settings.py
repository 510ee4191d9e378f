"""The user's settings file and the client's remembered state.

Settings live in ``lanchat.toml`` in the user config directory (platformdirs; on Linux
``~/.config/lanchat/lanchat.toml``); ``lanchat --config-path`` prints the path.  Every
key is optional::

    name = "alice"                 # the name to join with
    server = "lab-pc:5000"         # connect here instead of discovering
    pin = "1234"                   # the room to join
    discovery_timeout = 1.5        # seconds to wait for discovery answers
    language = "nb"                # instead of the locale's (LANGUAGE, LC_ALL, LANG)

    [ui]
    colours = true                 # false: no colour at all
    palette = ["cyan", "green", "yellow", "magenta", "blue", "red"]  # for names
    timestamp_format = "%H:%M"     # strftime format of the message time
    bell = true                    # ring the bell when your name is mentioned

The last server joined is remembered in ``last-server.json`` in the user state
directory and tried when discovery finds nothing.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from lanchat.client import messages
from lanchat.client.i18n import _
from lanchat.protocol import chat, discovery, rules
from lanchat.protocol.errors import RemoteProtocolError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11
    import tomli as tomllib

APP = "lanchat"
SETTINGS_FILE = "lanchat.toml"
STATE_FILE = "last-server.json"
DEFAULT_CHAT_PORT = chat.DEFAULT_PORT
LOCALHOST = "127.0.0.1"  # "the server on this machine" (the seed\'s default host)
DEFAULT_DISCOVERY_PORT = discovery.DEFAULT_PORT
COLOURS = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")
# Red is kept for the client's errors, so a name never looks like one.
DEFAULT_PALETTE = ("cyan", "green", "yellow", "magenta", "blue")


class SettingsError(Exception):
    """The settings file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Settings:
    name: str | None = None
    server: str | None = None
    pin: str | None = None
    discovery_timeout: float = 1.5
    colours: bool = True
    palette: tuple[str, ...] = DEFAULT_PALETTE
    timestamp_format: str = "%H:%M"
    bell: bool = True
    language: str | None = None
    path: Path | None = field(default=None, compare=False)


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the settings file is (it need not exist)."""
    environ = os.environ if environ is None else environ
    override = environ.get("LANCHAT_CONFIG")
    if override:
        return Path(override)
    return Path(platformdirs.user_config_dir(APP, appauthor=False)) / SETTINGS_FILE


def state_path() -> Path:
    return Path(platformdirs.user_state_dir(APP, appauthor=False)) / STATE_FILE


_TOP_KEYS = ("name", "server", "pin", "discovery_timeout", "language", "ui")
_UI_KEYS = ("colours", "palette", "timestamp_format", "bell")


def _unknown(key: str, known: tuple[str, ...], where: str) -> SettingsError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = _(" Did you mean {key}?").format(key=close[0]) if close else ""
    return SettingsError(
        _("{where}: unknown setting {key!r}.").format(where=where, key=key) + hint
        + " " + _("Known settings: {known}.").format(known=", ".join(known))
    )


def _expect(value: Any, kind: type, key: str, where: str, what: str) -> Any:
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise SettingsError(_("{where}: {key} must be {what}, not {value!r}.").format(
            where=where, key=key, what=what, value=value))
    return value


def parse_settings(data: Mapping[str, Any], where: str) -> Settings:
    """Check the parsed TOML of a settings file and build ``Settings``."""
    for key in data:
        if key not in _TOP_KEYS:
            raise _unknown(key, _TOP_KEYS, where)
    values: dict[str, Any] = {}
    if "name" in data:
        name = _expect(data["name"], str, "name", where, _("a string"))
        try:
            values["name"] = rules.normalize_name(name)
        except RemoteProtocolError as exc:
            raise SettingsError(_("{where}: name {value!r} is not usable.").format(
                where=where, value=name) + " " + messages.name_refused(exc)) from None
    if "server" in data:
        values["server"] = _expect(data["server"], str, "server", where, _("a string"))
    if "pin" in data:
        pin = _expect(data["pin"], str, "pin", where, _("a string of digits"))
        if not (pin.isascii() and pin.isdigit()):
            raise SettingsError(_("{where}: pin must be digits, not {value!r}.").format(
                where=where, value=pin))
        values["pin"] = pin
    if "language" in data:
        # A language without a catalogue means English, as for the locale.
        values["language"] = _expect(data["language"], str, "language", where,
                                     _("a language code such as \"nb\""))
    if "discovery_timeout" in data:
        timeout = float(_expect(data["discovery_timeout"], float, "discovery_timeout", where,
                                _("a number of seconds")))
        if not 0.1 <= timeout <= 60:
            raise SettingsError(_("{where}: discovery_timeout must be between 0.1 and 60 "
                                  "seconds, not {value}.").format(where=where, value=timeout))
        values["discovery_timeout"] = timeout
    ui = data.get("ui", {})
    if not isinstance(ui, dict):
        raise SettingsError(_("{where}: [ui] must be a table.").format(where=where))
    for key in ui:
        if key not in _UI_KEYS:
            raise _unknown(f"ui.{key}", tuple(f"ui.{k}" for k in _UI_KEYS), where)
    if "colours" in ui:
        values["colours"] = _expect(ui["colours"], bool, "ui.colours", where, _("true or false"))
    if "bell" in ui:
        values["bell"] = _expect(ui["bell"], bool, "ui.bell", where, _("true or false"))
    if "timestamp_format" in ui:
        fmt = _expect(ui["timestamp_format"], str, "ui.timestamp_format", where, _("a string"))
        try:
            time.strftime(fmt)
        except ValueError as exc:
            raise SettingsError(f"{where}: ui.timestamp_format: {exc}") from None
        values["timestamp_format"] = fmt
    if "palette" in ui:
        palette = ui["palette"]
        if (not isinstance(palette, list) or not palette
                or not all(isinstance(c, str) and c in COLOURS for c in palette)):
            raise SettingsError(_("{where}: ui.palette must be a list of colour names "
                                  "from: {colours}.").format(where=where,
                                                             colours=", ".join(COLOURS)))
        values["palette"] = tuple(palette)
    return Settings(**values)


def load_settings(path: Path | None = None) -> Settings:
    """The settings from ``path`` (default: the user's file); defaults if it is missing."""
    path = config_path() if path is None else path
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Settings(path=path)
    except OSError as exc:
        raise SettingsError(_("Cannot read the settings file {path}: {error}").format(
            path=path, error=exc.strerror or exc)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SettingsError(_("{path} is not UTF-8 text.").format(path=path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(_("{path} is not valid TOML: {error}").format(
            path=path, error=exc)) from None
    return replace(parse_settings(data, str(path)), path=path)


# ---------------------------------------------------------------- the remembered server


@dataclass(frozen=True)
class LastServer:
    host: str
    port: int
    name: str = ""
    server_id: str = ""


def load_last_server(path: Path | None = None) -> LastServer | None:
    """The last server joined, or None (a damaged file counts as none)."""
    path = state_path() if path is None else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        server = LastServer(str(data["host"]), int(data["port"]), str(data.get("name", "")),
                            str(data.get("server_id", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not server.host or not 0 < server.port < 65536:
        return None
    return server


def save_last_server(server: LastServer, path: Path | None = None) -> None:
    """Remember ``server``; failing to write only costs the memory, so it is not fatal."""
    path = state_path() if path is None else path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"host": server.host, "port": server.port,
                                   "name": server.name, "server_id": server.server_id}),
                       encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass

"""The daemon's configuration: TOML file, flag overrides, checks, paths, example file."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any

import platformdirs
import pytest

from lanchatd import config as config_module
from lanchatd.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    default_config_path,
    example_config_text,
    load_config,
    load_config_and_source,
    reloadable_changes,
    resolve_paths,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "docs" / "lanchatd.toml"


def write(tmp_path: Path, text: str, name: str = "lanchatd.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_file(path: str, **overrides: Any) -> Config:
    return load_config(path, overrides, environ={}, explicit_path=True)


def refusal(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    return info.value


# --- reading the file ---------------------------------------------------------------


def test_values_from_each_section_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
name = "Kantina"
port = 6000
initial_state = "standby"

[discovery]
discovery_allow = ["192.168.1.0/24", "::1"]

[rooms]
history = 0

[limits]
handshake_timeout = 5   # an integer is fine where seconds are a float

[log]
log_messages = true

[control]
control_socket = "/tmp/lanchatd-test.sock"
""",
    )
    config = load_file(path)
    assert config.name == "Kantina"
    assert config.port == 6000
    assert config.initial_state == "standby"
    assert config.discovery_allow == ("192.168.1.0/24", "::1")
    assert config.history == 0
    assert config.handshake_timeout == 5.0 and isinstance(config.handshake_timeout, float)
    assert config.log_messages is True
    assert config.control_socket == "/tmp/lanchatd-test.sock"
    # Everything not in the file keeps its built-in default.
    assert config.discovery_port == 5001
    assert config.max_line_bytes == Config().max_line_bytes


def test_missing_default_file_means_builtin_defaults(tmp_path: Path) -> None:
    environ = {"CONFIGURATION_DIRECTORY": str(tmp_path)}
    config, source = load_config_and_source(None, {}, environ=environ, explicit_path=False)
    assert config == Config()
    assert source is None


def test_default_file_is_found_in_configuration_directory(tmp_path: Path) -> None:
    write(tmp_path, "[server]\nport = 6001\n")
    # systemd may pass several directories, colon-separated: the first is ours.
    environ = {"CONFIGURATION_DIRECTORY": f"{tmp_path}:/nonexistent"}
    config, source = load_config_and_source(None, {}, environ=environ, explicit_path=False)
    assert config.port == 6001
    assert source == str(tmp_path / "lanchatd.toml")


def test_default_path_without_systemd() -> None:
    assert default_config_path({}) == DEFAULT_CONFIG_PATH == "/etc/lanchat/lanchatd.toml"
    assert default_config_path({"CONFIGURATION_DIRECTORY": "/etc/lanchat"}) == (
        "/etc/lanchat/lanchatd.toml"
    )


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load_config(missing, {}, environ={}, explicit_path=True)
    assert str(info.value) == f"{missing}: configuration file not found"


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), {}, environ={}, explicit_path=False)
    assert str(info.value).startswith(f"{tmp_path}: cannot read configuration file")


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    error = refusal(tmp_path, "[server]\nport = 5000\nhost = \n")
    assert error.line == 3
    assert str(error).startswith(f"{error.path}:3: invalid TOML")


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_bytes(b'[server]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_file(str(path))
    assert str(info.value) == f"{path}:2: not valid UTF-8 (TOML files are UTF-8)"


def test_toml_library_matches_python_version() -> None:
    # Python 3.9 and 3.10 read TOML with tomli; 3.11 and later with the standard tomllib.
    expected = "tomllib" if sys.version_info >= (3, 11) else "tomli"
    assert config_module._toml_library().__name__ == expected


# --- unknown names ------------------------------------------------------------------


def test_unknown_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    error = refusal(tmp_path, "[server]\nname = \"x\"\nprot = 5000\n")
    assert str(error) == f"{error.path}:3: [server] prot: unknown key; did you mean 'port'?"
    assert error.key == "prot"
    assert error.line == 3


def test_unknown_key_without_a_close_match(tmp_path: Path) -> None:
    error = refusal(tmp_path, "[limits]\n\nzzz = 1\n")
    assert str(error) == f"{error.path}:3: [limits] zzz: unknown key"


def test_key_in_the_wrong_section_says_where_it_belongs(tmp_path: Path) -> None:
    error = refusal(tmp_path, "[server]\nport = 5000\n[rooms]\nport = 5000\n")
    assert str(error) == (
        f"{error.path}:4: [rooms] port: this key belongs in [server], not in [rooms]"
    )


def test_key_outside_any_section(tmp_path: Path) -> None:
    error = refusal(tmp_path, "history = 10\n")
    assert str(error) == f"{error.path}:1: history: must be inside a section: put it under [rooms]"


def test_unknown_section_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    error = refusal(tmp_path, "[server]\nport = 5000\n\n[limit]\nmax_errors = 3\n")
    assert str(error).startswith(
        f"{error.path}:4: [limit]: unknown section; did you mean 'limits'?"
    )
    assert "[discovery]" in str(error)  # the known sections are listed


def test_array_of_tables_is_not_a_section(tmp_path: Path) -> None:
    error = refusal(tmp_path, "[[server]]\nport = 1\n")
    assert str(error) == f"{error.path}:1: [server]: must be a table of settings, not an array"


def test_dotted_key_is_located(tmp_path: Path) -> None:
    error = refusal(tmp_path, "# ports\nserver.port = 99999\n")
    assert str(error) == f"{error.path}:2: [server] port: must be between 0 and 65535, not 99999"


# --- types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        ("server", 'port = "5000"', 'port: must be an integer, not a string ("5000")'),
        ("server", "port = true", "port: must be an integer, not a boolean (true)"),
        ("server", "port = 5000.0", "port: must be an integer, not a float (5000.0)"),
        ("server", "name = 7", "name: must be a string, not an integer (7)"),
        ("log", "log_messages = 1", "log_messages: must be a boolean (true or false), not an "
         "integer (1)"),
        ("limits", "message_rate = false", "message_rate: must be a number, not a boolean "
         "(false)"),
        ("discovery", 'discovery_allow = "10.0.0.0/8"', "discovery_allow: must be an array "
         'of strings, not a string ("10.0.0.0/8")'),
        ("discovery", "discovery_allow = [10]", "discovery_allow: must be an array of "
         "strings, not an array ([10])"),
        ("log", "log_file = 1979-05-27", "log_file: must be a string, not a date/time"),
        ("server", "name = {a = 1}", "name: must be a string, not a table"),
    ],
)
def test_wrong_type_is_refused(tmp_path: Path, section: str, line: str, message: str) -> None:
    error = refusal(tmp_path, f"[{section}]\n{line}\n")
    assert str(error).startswith(f"{error.path}:2: [{section}] {message}")


# --- values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "line", "problem"),
    [
        ("server", "port = 70000", "must be between 0 and 65535, not 70000"),
        ("server", "port = -1", "must be between 0 and 65535, not -1"),
        ("discovery", "discovery_port = 65536", "must be between 0 and 65535, not 65536"),
        ("server", 'initial_state = "paused"',
         'must be one of active, standby, stopped, not "paused"'),
        ("server", 'text_language = "de"', 'must be one of en, nb, not "de"'),
        ("server", 'name = "' + "x" * 65 + '"', "must be at most 64 characters, not 65"),
        ("server", 'name = "bell\\u0007"', "must not contain control or formatting characters"),
        ("server", "listen_backlog = 0", "must be at least 1, not 0"),
        ("server", 'state_dir = ""', "must not be empty (leave the key out for the default)"),
        ("discovery", 'discovery_allow = ["10.0.0.0/8", "10.1.2.3/8"]',
         "'10.1.2.3/8' is not a network: 10.1.2.3/8 has host bits set"),
        ("discovery", 'discovery_allow = ["lan"]', "'lan' is not a network"),
        ("discovery", "discovery_rate = 0", "must be greater than 0, not 0.0"),
        ("discovery", "discovery_burst = 0", "must be at least 1, not 0"),
        ("rooms", "pin_min_length = 0", "must be between 1 and 64, not 0"),
        ("rooms", "pin_max_length = 65", "must be between 1 and 64, not 65"),
        ("rooms", "history = -1", "must be at least 0, not -1"),
        ("limits", "max_line_bytes = 0", "must be at least 1, not 0"),
        ("limits", "handshake_timeout = -5", "must be greater than 0, not -5.0"),
        ("limits", "keepalive_interval = inf", "must be a finite number, not inf"),
        ("limits", "message_rate = nan", "must be a finite number, not nan"),
        ("limits", "max_connections_per_address = 0", "must be at least 1, not 0"),
        ("log", "log_ring_size = 0", "must be at least 1, not 0"),
        ("log", "log_backups = -1", "must be at least 0, not -1"),
        ("control", 'control_socket = "/' + "s" * 120 + '"',
         "is too long for a Unix socket (at most 107 bytes)"),
    ],
)
def test_bad_value_names_key_file_and_line(
    tmp_path: Path, section: str, line: str, problem: str
) -> None:
    error = refusal(tmp_path, f"# lanchatd\n\n[{section}]\n\n{line}\n")
    key = line.split(" =")[0]
    assert str(error).startswith(f"{error.path}:5: [{section}] {key}: {problem}")
    assert (error.key, error.line) == (key, 5)


def test_limits_at_their_edges_are_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[server]\nport = 0\n[discovery]\ndiscovery_port = 65535\n"
        "[rooms]\npin_min_length = 1\npin_max_length = 64\nhistory = 0\n"
        "[log]\nlog_backups = 0\nlog_ring_size = 1\n",
    )
    config = load_file(path)
    assert (config.port, config.discovery_port) == (0, 65535)
    assert (config.pin_min_length, config.pin_max_length, config.history) == (1, 64, 0)


def test_pin_min_length_above_max_is_refused(tmp_path: Path) -> None:
    error = refusal(tmp_path, "[rooms]\npin_min_length = 8\npin_max_length = 6\n")
    assert str(error) == (
        f"{error.path}:2: [rooms] pin_min_length: must not be greater than pin_max_length (8 > 6)"
    )


def test_pin_max_length_below_default_min_is_refused(tmp_path: Path) -> None:
    error = refusal(tmp_path, "[rooms]\n\npin_max_length = 3\n")
    assert str(error) == (
        f"{error.path}:3: [rooms] pin_max_length: must not be less than pin_min_length (3 < 6)"
    )


# --- flags --------------------------------------------------------------------------


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 6000\nhost = "127.0.0.1"\nname = "file"\n')
    config = load_file(path, port=7000, name="flag")
    assert (config.port, config.name) == (7000, "flag")
    assert config.host == "127.0.0.1"  # not overridden


def test_pin_lengths_are_compared_after_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "[rooms]\npin_min_length = 6\n")
    assert load_file(path, pin_max_length=6).pin_max_length == 6
    with pytest.raises(ConfigError) as info:
        load_file(path, pin_max_length=5)
    assert str(info.value) == (
        f"{path}:2: [rooms] pin_min_length: must not be greater than pin_max_length (6 > 5)"
    )
    with pytest.raises(ConfigError) as info:
        load_file(path, pin_min_length=9, pin_max_length=8)
    assert str(info.value) == "--pin-min-length: must not be greater than pin_max_length (9 > 8)"


def test_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        environ = {"CONFIGURATION_DIRECTORY": str(tmp_path)}
        load_config(None, {"initial_state": "asleep"}, environ=environ, explicit_path=False)
    assert str(info.value) == (
        '--initial-state: must be one of active, standby, stopped, not "asleep"'
    )
    assert info.value.path is None


def test_unknown_override_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_config(str(tmp_path / "x.toml"), {"colour": "red"}, environ={},
                    explicit_path=False)


# --- paths --------------------------------------------------------------------------


def test_resolve_paths_under_systemd() -> None:
    environ = {
        "LOGS_DIRECTORY": "/var/log/lanchatd",
        "STATE_DIRECTORY": "/var/lib/lanchatd:/var/lib/other",
        "RUNTIME_DIRECTORY": "/run/lanchatd",
    }
    config = resolve_paths(Config(), environ)
    assert config.log_file == "/var/log/lanchatd/activity.log"
    assert config.state_dir == "/var/lib/lanchatd"
    assert config.control_socket == "/run/lanchatd/control.sock"


def test_resolve_paths_without_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # for platformdirs, below
    config = resolve_paths(Config(), {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert config.log_file == os.path.join(platformdirs.user_log_dir("lanchat"), "activity.log")
    assert config.state_dir == platformdirs.user_state_dir("lanchat")
    assert config.control_socket == os.path.join(
        platformdirs.user_runtime_dir("lanchat"), "control.sock"
    )
    assert config.control_socket.startswith(str(tmp_path))


def test_resolve_paths_keeps_configured_paths() -> None:
    given = Config(log_file="/srv/chat.log", state_dir="/srv/state", control_socket="/srv/c")
    environ = {"LOGS_DIRECTORY": "/a", "STATE_DIRECTORY": "/b", "RUNTIME_DIRECTORY": "/c"}
    assert resolve_paths(given, environ) == given


def test_resolve_paths_fills_only_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    config = resolve_paths(Config(state_dir="/srv/state"),
                           {"LOGS_DIRECTORY": "/var/log/x", "XDG_RUNTIME_DIR": str(tmp_path)})
    assert config.state_dir == "/srv/state"
    assert config.log_file == "/var/log/x/activity.log"
    assert config.control_socket == str(tmp_path / "lanchat" / "control.sock")


# --- reload -------------------------------------------------------------------------


def test_reloadable_changes_splits_run_time_and_restart_keys() -> None:
    old = Config()
    new = old.replace(port=6000, history=10, log_messages=True, host="::1")
    applied, ignored = reloadable_changes(old, new)
    assert applied == ["history", "log_messages"]
    assert ignored == ["host", "port"]
    assert reloadable_changes(old, Config()) == ([], [])


# --- the example file ---------------------------------------------------------------


def test_example_file_is_generated_from_the_config_fields() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == example_config_text(), (
        "docs/lanchatd.toml is out of date: regenerate it with "
        "python3 -c 'from lanchatd.config import example_config_text as e; "
        "print(e(), end=\"\")' > docs/lanchatd.toml"
    )


def test_example_file_lists_every_key_with_its_meaning() -> None:
    text = example_config_text()
    for f in dataclasses.fields(Config):
        assert f"\n#{f.name} = " in text, f.name
        first_words = " ".join(f.metadata["doc"].split()[:3])
        assert first_words in text, f.name


def test_example_file_loads_cleanly() -> None:
    assert load_config(str(EXAMPLE), {}, environ={}, explicit_path=True) == Config()


def test_example_file_with_every_key_uncommented_gives_the_defaults(tmp_path: Path) -> None:
    # Uncomment the setting lines ('#key = ...' and the lines of an array), not the prose.
    setting = re.compile(r'^#(\w+ = | {4}"|\])')
    lines = [
        line[1:] if setting.match(line) else line for line in example_config_text().splitlines()
    ]
    path = write(tmp_path, "\n".join(lines) + "\n")
    config = load_file(path)
    expected = Config(
        state_dir="/var/lib/lanchatd",
        log_file="/var/log/lanchatd/activity.log",
        control_socket="/run/lanchatd/control.sock",
        tls_cert="/etc/lanchat/tls-cert.pem",
        tls_key="/etc/lanchat/tls-key.pem",
    )
    assert config == expected


def test_the_shipped_pin_length_is_six_digits(tmp_path: Path) -> None:
    """A room PIN is six digits or more unless the administrator allows shorter: with
    the join limits, four digits fall to one network's guesses in minutes
    (docs/reliability.md, "Guessing PINs: the arithmetic")."""
    from lanchat.protocol import rules
    from lanchat.protocol.errors import RemoteProtocolError

    assert Config().pin_min_length == rules.DEFAULT_PIN_MIN == 6
    assert rules.pin_rule() == "A room PIN is 6 to 12 digits (0-9)."
    with pytest.raises(RemoteProtocolError):
        rules.check_pin("1234")
    assert rules.check_pin("123456") == "123456"
    shorter = load_file(write(tmp_path, "[rooms]\npin_min_length = 4\n"))
    assert shorter.pin_min_length == 4

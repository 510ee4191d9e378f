"""The client's command line and settings file: option checks, defaults, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from lanchat_testing import Daemon
from test_client_support import client_env, run_client

from lanchat import cli
from lanchat.client.connection import parse_server
from lanchat.client.options import Options
from lanchat.client.settings import (
    LastServer,
    Settings,
    SettingsError,
    load_last_server,
    load_settings,
    save_last_server,
)


@pytest.fixture(autouse=True)
def no_user_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "lanchat.toml"
    monkeypatch.setenv("LANCHAT_CONFIG", str(path))
    return path


def options(*argv: str) -> Options:
    return cli.build_options(cli.build_parser(), list(argv))[0]


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        options(*argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_server_addresses() -> None:
    assert parse_server("192.0.2.5", 5000) == ("192.0.2.5", 5000)
    assert parse_server("lab-pc:6000", 5000) == ("lab-pc", 6000)
    assert parse_server("[fe80::1]:6000", 5000) == ("fe80::1", 6000)
    assert parse_server("::1", 5000) == ("::1", 5000)
    for bad in ("", "host:", "host:0", "host:70000", "host:abc", "[::1", "[::1]x", ":5000"):
        with pytest.raises(ValueError):
            parse_server(bad, 5000)


def test_where_to_connect() -> None:
    assert options("--server", "lab:6000").server == ("lab", 6000)
    # Without a port, TLS on its default port; plain text's only with --insecure.
    assert options("--host", "192.0.2.5").server == ("192.0.2.5", 5443)
    assert options("--host", "192.0.2.5", "--insecure").server == ("192.0.2.5", 5000)
    assert options("--host", "192.0.2.5", "--port", "6000").server == ("192.0.2.5", 6000)
    assert options("--host", "::1", "--port", "6000").server == ("::1", 6000)
    assert options().server is None
    # As in the original client, --port alone means the server on this machine.
    assert options("--port", "6000").server == ("127.0.0.1", 6000)
    found = options("--discovery-address", "127.255.255.255", "--discovery-port", "7001",
                    "--discovery-address", "127.0.0.1:7002",
                    "--discovery-timeout", "0.5", "--server-name", "lab")
    assert found.discovery_targets == (("127.255.255.255", 7001), ("127.0.0.1", 7002))
    assert (found.discovery_port, found.discovery_timeout, found.server_name) == (
        7001, 0.5, "lab")


def test_room_and_name() -> None:
    got = options("--pin", "1234", "--username", "Åse")
    assert (got.pin, got.name) == ("1234", "Åse")
    assert options("--name", "ci").name == "ci"
    assert options("--json").plain and options("--json").json


@pytest.mark.parametrize(("argv", "expected"), [
    (["--server", "a", "--host", "b"], "not both"),
    (["--discover", "--port", "6000"], "--discover"),
    (["--server", "a:1", "--port", "2"], "not with --port"),
    (["--discover", "--server", "a"], "--discover"),
    (["--server-name", "lab", "--server", "a"], "--server-name"),
    (["--pin", "12ab"], "argument --pin: a room PIN is digits"),
    (["--name", " padded"], "argument --name"),
    (["--name", "a", "--username", "b"], "not allowed with"),
    (["--server", "host:99999"], "1 to 65535"),
    (["--port", "0", "--host", "h"], "not a port number"),
    (["--discovery-address", "lab.local"], "not an IPv4 address"),
    (["--discovery-address", "127.0.0.1:0"], "not a port number"),
    (["--discovery-timeout", "-1"], "not a number of seconds"),
    (["--config", ""], "must not be empty"),
])
def test_bad_combinations_are_usage_errors(capsys: pytest.CaptureFixture[str],
                                           argv: list[str], expected: str) -> None:
    assert expected in usage_error(capsys, *argv)


def test_settings_file_gives_defaults_and_flags_win(no_user_settings: Path) -> None:
    no_user_settings.write_text(
        'name = "alice"\nserver = "lab:6000"\npin = "4321"\ndiscovery_timeout = 3\n'
        '[ui]\ncolours = false\npalette = ["green", "red"]\ntimestamp_format = "%H:%M:%S"\n'
        'bell = false\n')
    got = options()
    assert (got.name, got.server, got.pin, got.discovery_timeout) == (
        "alice", ("lab", 6000), "4321", 3.0)
    assert got.settings.palette == ("green", "red") and not got.settings.colours
    assert got.settings.timestamp_format == "%H:%M:%S" and not got.settings.bell
    flags = options("--name", "bob", "--server", "other", "--pin", "1111")
    assert (flags.name, flags.server, flags.pin) == ("bob", ("other", 5443), "1111")
    # Asking for discovery ignores the configured server.
    assert options("--discover").server is None


@pytest.mark.parametrize(("text", "expected"), [
    ('nmae = "x"\n', "unknown setting 'nmae'. Did you mean name?"),
    ("name = 5\n", "name must be a string, not 5"),
    ('name = " x"\n', "name ' x' is not usable"),
    ('pin = "12a"\n', "pin must be digits"),
    ("discovery_timeout = 0\n", "between 0.1 and 60"),
    ("[ui]\ncolours = 1\n", "ui.colours must be true or false"),
    ('[ui]\npalette = ["pink"]\n', "ui.palette must be a list of colour names"),
    ('[ui]\ncolour = true\n', "unknown setting 'ui.colour'. Did you mean ui.colours?"),
    ("name = \n", "is not valid TOML"),
    ("ui = 3\n", "[ui] must be a table"),
])
def test_bad_settings_are_named(no_user_settings: Path, text: str, expected: str) -> None:
    no_user_settings.write_text(text)
    with pytest.raises(SettingsError) as exc:
        load_settings(no_user_settings)
    assert expected in str(exc.value) and str(no_user_settings) in str(exc.value)


def test_missing_settings_file_means_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "none.toml")
    assert settings == Settings()


def test_bad_settings_stop_the_client_with_exit_2(tmp_path: Path) -> None:
    env = client_env(tmp_path)
    path = tmp_path / "config" / "lanchat" / "lanchat.toml"
    path.parent.mkdir(parents=True)
    path.write_text("colours = true\n")
    result = run_client(["--discover", "--discovery-address", "127.0.0.1"], env)
    assert result.returncode == 2
    assert f"lanchat: {path}: unknown setting 'colours'" in result.stderr


def test_config_path_prints_where_the_settings_live(tmp_path: Path) -> None:
    env = client_env(tmp_path)
    result = run_client(["--config-path"], env)
    assert result.returncode == 0
    assert result.stdout.strip() == str(tmp_path / "config" / "lanchat" / "lanchat.toml")
    other = run_client(["--config-path", "--config", str(tmp_path / "x.toml")], env)
    assert other.stdout.strip() == str(tmp_path / "x.toml")


def test_settings_file_alone_is_enough_to_chat(daemon: Daemon, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    path = tmp_path / "config" / "lanchat" / "lanchat.toml"
    path.parent.mkdir(parents=True)
    path.write_text(f'name = "ci"\npin = "1234"\nserver = "127.0.0.1:{daemon.tcp[1]}"\n')
    with daemon.json_client() as watcher:
        watcher.join("1234", "watcher")
        result = run_client([], env, input="from the settings\n")
        assert result.returncode == 0, result.stderr
        message = watcher.recv_type("message")
        assert (message["from"], message["text"]) == ("ci", "from the settings")


def test_last_server_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "last-server.json"
    assert load_last_server(path) is None
    save_last_server(LastServer("192.168.1.5", 5000, "lab", "abc"), path)
    assert load_last_server(path) == LastServer("192.168.1.5", 5000, "lab", "abc")
    path.write_text("{broken")
    assert load_last_server(path) is None
    path.write_text('{"host": "x", "port": 70000}')
    assert load_last_server(path) is None


def test_version_and_help() -> None:
    parser = cli.build_parser()
    help_text = parser.format_help()
    for flag in ("--server", "--host", "--port", "--username", "--pin", "--discover",
                 "--discovery-address", "--plain", "--json", "--config-path"):
        assert flag in help_text


def test_port_alone_joins_the_server_on_this_machine(daemon: Daemon, tmp_path: Path) -> None:
    """The original client's ``--port PORT`` without ``--host``: localhost."""
    with daemon.json_client() as watcher:
        watcher.join("1234", "watcher")
        result = run_client(["--port", str(daemon.tcp[1]), "--pin", "1234", "--name", "ci"],
                            client_env(tmp_path), input="via --port alone\n")
        assert result.returncode == 0, result.stderr
        message = watcher.recv_type("message")
        assert (message["from"], message["text"]) == ("ci", "via --port alone")

"""The lanchatd command line: flags, their checks, --check-config and the hand-over."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Callable

import pytest

import lanchat
from lanchatd.cli import build_parser, main
from lanchatd.config import Config, ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the default config path at an empty directory, never at /etc."""
    confdir = tmp_path / "etc"
    confdir.mkdir()
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(confdir))
    (tmp_path / "run").mkdir(mode=0o700)  # the user's runtime directory, as logind makes it
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    for name in ("LOGS_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    return confdir


def write_config(directory: Path, text: str) -> str:
    path = directory / "lanchatd.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lanchatd")
    return err


# --- parser -------------------------------------------------------------------------


def test_parser_reads_every_flag() -> None:
    args = build_parser().parse_args(
        [
            "--config", "/tmp/c.toml", "--host", "::1", "--port", "0",
            "--discovery-port", "65535", "--log-file", "/tmp/a.log", "--state-dir", "/tmp/s",
            "--initial-state", "standby", "--control-socket", "/tmp/c.sock",
            "--name", "Kantina", "--check-config",
        ]
    )
    assert (args.config, args.host, args.port, args.discovery_port) == (
        "/tmp/c.toml", "::1", 0, 65535,
    )
    assert (args.log_file, args.state_dir, args.initial_state) == (
        "/tmp/a.log", "/tmp/s", "standby",
    )
    assert (args.control_socket, args.name, args.check_config) == (
        "/tmp/c.sock", "Kantina", True,
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--port", "70000"], "argument --port: port must be between 0 and 65535, not 70000"),
        (["--port", "-1"], "argument --port: port must be between 0 and 65535, not -1"),
        (["--port", "http"], "argument --port: not a port number: 'http'"),
        (["--discovery-port", "65536"],
         "argument --discovery-port: port must be between 0 and 65535, not 65536"),
        (["--initial-state", "paused"], "argument --initial-state: invalid choice: 'paused'"),
        (["--config", ""], "argument --config: the path must not be empty"),
        (["--log-file", ""], "argument --log-file: the path must not be empty"),
        (["--control-socket", ""], "argument --control-socket: the path must not be empty"),
        (["--verbose"], "unrecognized arguments: --verbose"),
        (["extra"], "unrecognized arguments: extra"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert expected in usage_error(argv, capsys)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"lanchatd {lanchat.__version__}\n"


# --- --check-config -----------------------------------------------------------------


def test_check_config_with_no_file_uses_builtin_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--check-config"]) == 0
    out, err = capsys.readouterr()
    assert out == "lanchatd: configuration OK (built-in defaults)\n"
    assert err == ""


def test_check_config_reads_the_default_file(
    no_system_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(no_system_config, "[server]\nport = 6000\n")
    assert main(["--check-config"]) == 0
    assert capsys.readouterr().out == f"lanchatd: configuration OK ({path})\n"


def test_check_config_with_explicit_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "[rooms]\nhistory = 0\n")
    assert main(["--config", path, "--check-config"]) == 0
    assert capsys.readouterr().out == f"lanchatd: configuration OK ({path})\n"


def test_check_config_refuses_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "[server]\nhost = \"\"\nport = 70000\n")
    assert main(["--config", path, "--check-config"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"lanchatd: {path}:3: [server] port: must be between 0 and 65535, not 70000\n"


def test_check_config_refuses_an_unknown_key(
    no_system_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(no_system_config, "[limits]\nmax_conections = 5\n")
    assert main(["--check-config"]) == 2
    assert capsys.readouterr().err == (
        f"lanchatd: {path}:2: [limits] max_conections: unknown key; "
        "did you mean 'max_connections'?\n"
    )


def test_missing_explicit_config_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.toml")
    assert main(["--config", missing, "--check-config"]) == 2
    assert capsys.readouterr().err == f"lanchatd: {missing}: configuration file not found\n"


def test_bad_flag_value_found_by_config_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--name", "x" * 65, "--check-config"]) == 2
    assert capsys.readouterr().err == "lanchatd: --name: must be at most 64 characters, not 65\n"


def test_flag_fixes_a_bad_file_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Each source is checked as it is read: a bad file value is refused even when a
    # flag would replace it, so the file never hides a mistake until the flag goes.
    path = write_config(tmp_path, "[server]\nport = 70000\n")
    assert main(["--config", path, "--port", "5000", "--check-config"]) == 2
    assert "[server] port" in capsys.readouterr().err


# --- hand-over to the loop ----------------------------------------------------------


def test_main_hands_a_config_and_a_reload_callable_to_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main builds one Config from file and flags; reload re-reads the same file."""
    path = write_config(tmp_path, "[server]\nport = 6000\nname = \"file\"\n[rooms]\nhistory = 5\n")
    received: list[tuple[Config, Callable[[], Config]]] = []

    def run(config: Config, reload: Callable[[], Config]) -> int:
        received.append((config, reload))
        return 0

    loop = types.ModuleType("lanchatd.loop")
    loop.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lanchatd.loop", loop)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))

    assert main(["--config", path, "--port", "0", "--host", "127.0.0.1"]) == 0
    [(config, reload)] = received
    assert (config.port, config.host, config.name, config.history) == (0, "127.0.0.1", "file", 5)
    assert config.control_socket == str(tmp_path / "run" / "control.sock")
    assert config.log_file is not None and config.state_dir is not None

    write_config(tmp_path, "[server]\nport = 6000\nname = \"edited\"\n[rooms]\nhistory = 9\n")
    fresh = reload()
    assert (fresh.port, fresh.name, fresh.history) == (0, "edited", 9)  # the flag still wins

    write_config(tmp_path, "[rooms]\nhistory = -1\n")
    with pytest.raises(ConfigError, match=r"\[rooms\] history: must be at least 0, not -1"):
        reload()


# --- python -m lanchatd -------------------------------------------------------------


def test_python_m_lanchatd(no_system_config: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path, "[server]\nport = 5000\n")
    done = subprocess.run(
        [sys.executable, "-m", "lanchatd", "--config", path, "--check-config"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0, f"lanchatd: configuration OK ({path})\n", "",
    )
    done = subprocess.run(
        [sys.executable, "-m", "lanchatd", "--port", "70000"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert "argument --port: port must be between 0 and 65535, not 70000" in done.stderr

"""Where lanchatctl looks for the control socket, and that lanchatd listens there."""

from __future__ import annotations

import os
from pathlib import Path

from lanchat import paths
from lanchat.paths import SYSTEM_CONTROL_SOCKET, find_control_socket
from lanchatd.config import Config, resolve_paths


def nowhere(_path: str) -> bool:
    return False


def test_the_flag_then_the_environment_variable(tmp_path: Path) -> None:
    environ = {"LANCHAT_CONTROL_SOCKET": "/env.sock", "CONFIGURATION_DIRECTORY": str(tmp_path)}
    assert find_control_socket("/flag.sock", environ).path == "/flag.sock"
    choice = find_control_socket(None, environ)
    assert (choice.path, choice.source) == ("/env.sock", "$LANCHAT_CONTROL_SOCKET")


def test_the_daemon_configuration_file_names_the_socket(tmp_path: Path) -> None:
    (tmp_path / "lanchatd.toml").write_text('[control]\ncontrol_socket = "/srv/chat.sock"\n')
    environ = {"CONFIGURATION_DIRECTORY": str(tmp_path), "RUNTIME_DIRECTORY": "/run/x"}
    choice = find_control_socket(None, environ)
    assert choice.path == "/srv/chat.sock"
    assert choice.source == str(tmp_path / "lanchatd.toml")


def test_a_broken_or_silent_configuration_file_is_passed_over(tmp_path: Path) -> None:
    environ = {"CONFIGURATION_DIRECTORY": str(tmp_path), "RUNTIME_DIRECTORY": "/run/x:/y"}
    (tmp_path / "lanchatd.toml").write_text("[control\n")
    assert find_control_socket(None, environ).path == "/run/x/control.sock"
    (tmp_path / "lanchatd.toml").write_text('[server]\nname = "lab"\n')
    choice = find_control_socket(None, environ)
    assert (choice.path, choice.source) == ("/run/x/control.sock", "$RUNTIME_DIRECTORY")


def test_by_default_the_first_socket_that_exists(tmp_path: Path) -> None:
    environ = {"CONFIGURATION_DIRECTORY": str(tmp_path)}  # no daemon configuration file
    mine = paths.user_control_socket()
    assert find_control_socket(None, environ, exists=lambda p: p == mine).path == mine
    system = find_control_socket(None, environ,
                                 exists=lambda p: p == SYSTEM_CONTROL_SOCKET)
    assert system.path == SYSTEM_CONTROL_SOCKET
    neither = find_control_socket(None, environ, exists=nowhere)
    assert neither.path == SYSTEM_CONTROL_SOCKET
    assert neither.candidates == (mine, SYSTEM_CONTROL_SOCKET)


def test_the_daemon_and_lanchatctl_agree_on_the_default() -> None:
    for environ in ({"RUNTIME_DIRECTORY": "/run/lanchatd"},
                    {"RUNTIME_DIRECTORY": "/run/a:/run/b"}, {}):
        resolved = resolve_paths(Config(log_file="/l", state_dir="/s"), environ)
        assert resolved.control_socket == paths.daemon_control_socket(environ)
    assert paths.daemon_control_socket({"RUNTIME_DIRECTORY": "/run/lanchatd"}) == (
        "/run/lanchatd/control.sock")
    assert os.path.basename(paths.daemon_control_socket({})) == "control.sock"

"""Where lanchatctl looks for the control socket, and that lanchatd listens there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    # No daemon configuration file; the user's runtime directory is tmp_path.
    environ = {"CONFIGURATION_DIRECTORY": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    mine = paths.user_control_socket(environ)
    assert mine == str(tmp_path / "lanchat" / "control.sock")
    assert find_control_socket(None, environ, exists=lambda p: p == mine).path == mine
    system = find_control_socket(None, environ,
                                 exists=lambda p: p == SYSTEM_CONTROL_SOCKET)
    assert system.path == SYSTEM_CONTROL_SOCKET
    neither = find_control_socket(None, environ, exists=nowhere)
    assert neither.path == SYSTEM_CONTROL_SOCKET
    assert neither.candidates == (mine, SYSTEM_CONTROL_SOCKET)


def test_the_daemon_and_lanchatctl_agree_on_the_default(tmp_path: Path) -> None:
    for environ in ({"RUNTIME_DIRECTORY": "/run/lanchatd"},
                    {"RUNTIME_DIRECTORY": "/run/a:/run/b"},
                    {"XDG_RUNTIME_DIR": str(tmp_path)}):
        resolved = resolve_paths(Config(log_file="/l", state_dir="/s"), environ)
        assert resolved.control_socket == paths.daemon_control_socket(environ)
    assert paths.daemon_control_socket({"RUNTIME_DIRECTORY": "/run/lanchatd"}) == (
        "/run/lanchatd/control.sock")
    mine = paths.daemon_control_socket({"XDG_RUNTIME_DIR": str(tmp_path)})
    assert mine == str(tmp_path / "lanchat" / "control.sock")


def test_no_runtime_directory_is_a_clear_error_and_nothing_is_created(tmp_path: Path) -> None:
    """As root after sudo: no $XDG_RUNTIME_DIR and no /run/user/0.  Nothing may make it
    (that is logind's), and the daemon must say what to do instead of a traceback."""
    run_user = tmp_path / "run-user"
    run_user.mkdir()
    with pytest.raises(paths.NoRuntimeDir) as missing:
        paths.user_runtime_base({}, uid=0, run_user=str(run_user))
    assert f"{run_user}/0 ($XDG_RUNTIME_DIR is unset" in str(missing.value)
    assert "--control-socket" in str(missing.value)
    assert list(run_user.iterdir()) == []
    with pytest.raises(paths.NoRuntimeDir, match=r"\$XDG_RUNTIME_DIR .* does not exist"):
        paths.user_runtime_base({"XDG_RUNTIME_DIR": str(tmp_path / "gone")})
    assert not (tmp_path / "gone").exists()


def test_someone_elses_runtime_directory_is_refused(tmp_path: Path) -> None:
    theirs = os.stat(tmp_path).st_uid + 1
    with pytest.raises(paths.NoRuntimeDir, match=f"belongs to uid {theirs - 1}, not to you"):
        paths.user_runtime_base({"XDG_RUNTIME_DIR": str(tmp_path)}, uid=theirs)
    assert paths.user_runtime_base({"XDG_RUNTIME_DIR": str(tmp_path)},
                                   uid=theirs - 1) == str(tmp_path)


def test_lanchatctl_without_a_runtime_directory_looks_for_the_system_socket(
        tmp_path: Path) -> None:
    environ = {"CONFIGURATION_DIRECTORY": str(tmp_path),
               "XDG_RUNTIME_DIR": str(tmp_path / "gone")}
    choice = find_control_socket(None, environ, exists=nowhere)
    assert choice.path == SYSTEM_CONTROL_SOCKET
    assert choice.candidates == (SYSTEM_CONTROL_SOCKET,)


def test_lanchatd_without_a_runtime_directory_says_so_without_a_traceback(
        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUNTIME_DIRECTORY", "LISTEN_FDS", "NOTIFY_SOCKET")}
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "gone")
    env["CONFIGURATION_DIRECTORY"] = str(tmp_path)  # no configuration file
    result = subprocess.run(
        [sys.executable, "-m", "lanchatd", "--port", "0", "--discovery-port", "0",
         "--host", "127.0.0.1", "--state-dir", str(tmp_path / "state"),
         "--log-file", str(tmp_path / "activity.log")],
        capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "does not exist" in result.stderr and "--control-socket" in result.stderr
    assert not (tmp_path / "gone").exists()

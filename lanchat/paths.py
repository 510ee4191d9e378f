"""Where the daemon's control socket is, for the daemon and for lanchatctl alike.

lanchatd and lanchatctl never import each other, so the rule lives here.  The daemon
listens on ``[control] control_socket`` from its configuration file, or
``--control-socket``, or else on ``$RUNTIME_DIRECTORY/control.sock`` under systemd
(``/run/lanchatd/control.sock``) or ``control.sock`` in the user's runtime directory
(platformdirs) when started by hand.

The user's runtime directory is ``$XDG_RUNTIME_DIR``, else ``/run/user/UID`` (which
logind makes at login), and it must exist and belong to the user: it is never created
here (that is logind's job, and a ``/run/user/0`` made by a daemon started with sudo
would confuse the next login), and a directory of someone else's is never used.  So the
rule is ours, not platformdirs': its versions differ on exactly this (2.6 returns
``/run/user/UID`` whether it exists or not; later ones fall back to a directory in
``/tmp`` and raise ``PermissionError`` when someone else owns that).

lanchatctl has no ``$RUNTIME_DIRECTORY`` of the daemon's, so it looks in this order:
``--socket PATH``; ``$LANCHAT_CONTROL_SOCKET``; the daemon configuration file's
``control_socket`` when it sets one; ``$RUNTIME_DIRECTORY/control.sock`` when that is
set (lanchatctl run from a unit); then the first that exists of the user's own daemon
socket and the system daemon's ``/run/lanchatd/control.sock``.
"""

from __future__ import annotations

import os
import stat
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from lanchat.protocol.record import Record, record

APP_NAME = "lanchat"
SOCKET_NAME = "control.sock"
SYSTEM_CONTROL_SOCKET = "/run/lanchatd/control.sock"
SOCKET_ENV = "LANCHAT_CONTROL_SOCKET"
DAEMON_CONFIG = "/etc/lanchat/lanchatd.toml"
DAEMON_CONFIG_NAME = "lanchatd.toml"


def first_path(environ: Mapping[str, str], variable: str) -> str | None:
    first = environ.get(variable, "").split(":")[0]
    return first or None


class NoRuntimeDir(Exception):
    """The user has no usable runtime directory; ``str()`` says why and what to do."""


RUN_USER = "/run/user"


def user_runtime_base(environ: Mapping[str, str] = os.environ, uid: int | None = None,
                      run_user: str = RUN_USER) -> str:
    """The user's runtime directory itself (see the module docstring), or NoRuntimeDir."""
    uid = os.geteuid() if uid is None else uid
    base = environ.get("XDG_RUNTIME_DIR", "").strip()
    if base:
        where = f"$XDG_RUNTIME_DIR ({base})"
    else:
        base = os.path.join(run_user, str(uid))
        where = f"{base} ($XDG_RUNTIME_DIR is unset, as after sudo or su)"
    advice = ("Set XDG_RUNTIME_DIR to a directory of your own (mode 0700), or give the "
              "control socket's path (--control-socket PATH, or control_socket in "
              "[control] of the configuration file).")
    try:
        st = os.stat(base)
    except FileNotFoundError:
        raise NoRuntimeDir(f"no runtime directory for the control socket: {where} does "
                           f"not exist. {advice}") from None
    except OSError as exc:
        raise NoRuntimeDir(f"cannot use the runtime directory {where}: {exc.strerror}. "
                           f"{advice}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise NoRuntimeDir(f"the runtime directory {where} is not a directory. {advice}")
    if st.st_uid != uid:
        raise NoRuntimeDir(f"the runtime directory {where} belongs to uid {st.st_uid}, "
                           f"not to you (uid {uid}), so others could take over the "
                           f"control socket. {advice}")
    return base


def user_dir(kind: str, environ: Mapping[str, str] = os.environ) -> str:
    """The user's ``log``, ``state``, ``data`` or ``runtime`` directory for lanchat.

    ``runtime`` follows our rule (``user_runtime_base``; NoRuntimeDir when there is
    none); ``log``, ``state`` and ``data`` (the client's known_servers) are
    platformdirs', under the home directory.

    platformdirs is imported here, not at the top: it costs a fifth of the daemon's
    start-up, and under systemd (or with every path configured) it is never needed.
    """
    if kind == "runtime":
        return os.path.join(user_runtime_base(environ), APP_NAME)
    import platformdirs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' own warnings about its choices
        if kind == "log":
            return platformdirs.user_log_dir(APP_NAME)
        if kind == "state":
            return platformdirs.user_state_dir(APP_NAME)
        if kind == "data":
            return platformdirs.user_data_dir(APP_NAME)
    raise ValueError(f"no such user directory: {kind!r}")


def user_control_socket(environ: Mapping[str, str] = os.environ) -> str:
    """control.sock in the user's runtime directory (a daemon started by hand)."""
    return os.path.join(user_dir("runtime", environ), SOCKET_NAME)


def daemon_control_socket(environ: Mapping[str, str] = os.environ) -> str:
    """The path lanchatd listens on when its configuration names none."""
    runtime = first_path(environ, "RUNTIME_DIRECTORY")
    if runtime is not None:
        return os.path.join(runtime, SOCKET_NAME)
    return user_control_socket(environ)


def daemon_config_path(environ: Mapping[str, str] = os.environ) -> str:
    directory = first_path(environ, "CONFIGURATION_DIRECTORY")
    return os.path.join(directory, DAEMON_CONFIG_NAME) if directory else DAEMON_CONFIG


def configured_control_socket(path: str) -> str | None:
    """``[control] control_socket`` from the daemon configuration file at ``path``.

    None when the file is missing, unreadable, not TOML or does not set the key: the
    daemon says what is wrong with its own file; here it only means "not set".
    """
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:
        import tomli as toml
    try:
        with open(path, "rb") as f:
            document: dict[str, Any] = toml.load(f)
    except (OSError, ValueError):
        return None
    section = document.get("control")
    value = section.get("control_socket") if isinstance(section, dict) else None
    return value if isinstance(value, str) and value and "\0" not in value else None


@record
class SocketChoice(Record):
    """The socket lanchatctl will use, where that choice came from, and what it tried."""

    path: str
    source: str
    candidates: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.candidates and len(self.candidates) > 1:
            return "looked for " + " and ".join(self.candidates)
        return f"from {self.source}"


def find_control_socket(explicit: str | None = None,
                        environ: Mapping[str, str] = os.environ,
                        exists: Callable[[str], bool] = os.path.exists) -> SocketChoice:
    """The control socket lanchatctl should talk to (see the module docstring)."""
    if explicit:
        return SocketChoice(explicit, "--socket")
    value = environ.get(SOCKET_ENV)
    if value:
        return SocketChoice(value, f"${SOCKET_ENV}")
    config = daemon_config_path(environ)
    configured = configured_control_socket(config)
    if configured is not None:
        return SocketChoice(configured, config)
    runtime = first_path(environ, "RUNTIME_DIRECTORY")
    if runtime is not None:
        return SocketChoice(os.path.join(runtime, SOCKET_NAME), "$RUNTIME_DIRECTORY")
    try:
        mine: tuple[str, ...] = (user_control_socket(environ),)
    except NoRuntimeDir:  # no daemon of the user's own can be listening there
        mine = ()
    candidates = tuple(dict.fromkeys((*mine, SYSTEM_CONTROL_SOCKET)))
    for path in candidates:
        if exists(path):
            return SocketChoice(path, "the default places", candidates)
    return SocketChoice(SYSTEM_CONTROL_SOCKET, "the default places", candidates)

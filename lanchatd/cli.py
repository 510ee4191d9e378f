"""The ``lanchatd`` command: parse flags, load the configuration, hand over to the loop.

Nothing from argparse travels further than ``main``: the flags become a plain mapping
of overrides, merged with the TOML file into one frozen ``Config`` (lanchatd.config),
and only that object reaches the loop.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from lanchat import __version__
from lanchatd.config import (
    STATES,
    Config,
    ConfigError,
    load_config_and_source,
    resolve_paths,
)

# Flags that set a configuration key of the same name (dashes for underscores).
OVERRIDE_FLAGS = (
    "host",
    "port",
    "discovery_port",
    "log_file",
    "state_dir",
    "initial_state",
    "control_socket",
    "name",
)
# Flags whose value is a path, which an empty string cannot be.
_PATH_FLAGS = ("config", "log_file", "state_dir", "control_socket")


def _port(text: str) -> int:
    """argparse type for a port number; the message is shown after the flag's name."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanchatd",
        description="The lanchat daemon: chat rooms by PIN for one local network.",
        epilog="Flags override the configuration file. Diagnostics go to stderr; once every "
        "socket is bound, one readiness line is printed to stdout.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $CONFIGURATION_DIRECTORY/lanchatd.toml under "
        "systemd, else /etc/lanchat/lanchatd.toml; a missing default file means built-in "
        "defaults)",
    )
    parser.add_argument("--host", help="address the TCP chat port binds to (default: all)")
    parser.add_argument(
        "--port", type=_port, metavar="PORT", help="TCP chat port (default 5000; 0 picks one)"
    )
    parser.add_argument(
        "--discovery-port",
        type=_port,
        metavar="PORT",
        help="UDP discovery port (default 5001; 0 picks one)",
    )
    parser.add_argument("--log-file", metavar="PATH", help="activity log file")
    parser.add_argument("--state-dir", metavar="DIR", help="directory for the server id")
    parser.add_argument(
        "--initial-state", choices=STATES, help="state at start (default: active)"
    )
    parser.add_argument("--control-socket", metavar="PATH", help="control socket path")
    parser.add_argument("--name", help="server name shown to clients (default: host name)")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration and flags, print the result and exit",
    )
    parser.add_argument("--version", action="version", version=f"lanchatd {__version__}")
    return parser


def parse_args(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[str | None, dict[str, Any], bool]:
    """Parse and check ``argv``: (config path or None, overrides, check_config only)."""
    args = parser.parse_args(argv)
    for dest in _PATH_FLAGS:
        if getattr(args, dest) == "":
            parser.error(f"argument --{dest.replace('_', '-')}: the path must not be empty")
    overrides = {
        key: getattr(args, key) for key in OVERRIDE_FLAGS if getattr(args, key) is not None
    }
    return args.config, overrides, bool(args.check_config)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config_path, overrides, check_only = parse_args(parser, argv)
    environ: Mapping[str, str] = os.environ

    def load() -> tuple[Config, str | None]:
        config, source = load_config_and_source(
            config_path, overrides, environ=environ, explicit_path=config_path is not None
        )
        return resolve_paths(config, environ), source

    def reload() -> Config:
        """A fresh Config from the same file and flags (raises ConfigError)."""
        return load()[0]

    try:
        config, source = load()
    except ConfigError as exc:
        print(f"lanchatd: {exc}", file=sys.stderr)
        return 2
    if check_only:
        print(f"lanchatd: configuration OK ({source or 'built-in defaults'})")
        return 0

    from lanchatd.loop import run  # imported here: --check-config and --help need no loop

    return run(config, reload=reload)

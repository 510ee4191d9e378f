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

from lanchat import __version__, i18n
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
    "tls_port",
    "tls_cert",
    "tls_key",
    "http_port",
    "log_file",
    "state_dir",
    "initial_state",
    "control_socket",
    "name",
)
# Flags whose value is a path, which an empty string cannot be.
_PATH_FLAGS = ("config", "log_file", "state_dir", "control_socket", "tls_cert", "tls_key")


def _port(text: str) -> int:
    """argparse type for a port number; the message is shown after the flag's name."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, not {value}")
    return value


def _terminal_width() -> int:
    """The width argparse would ask ``shutil.get_terminal_size`` for, by the same rule:
    ``COLUMNS`` when it is a positive number, else the terminal's on stdout, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns if stdout else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own formatter, given its width: argparse makes one for every flag
    added, and each imported ``shutil`` (with bz2 and lzma) to ask for the width that
    only ``--help`` reads, 2 ms of every start."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_width() - 2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanchatd",
        formatter_class=_HelpFormatter,
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
    parser.add_argument("--host", help="address the TCP chat port binds to (default: all, "
                        "IPv4 and IPv6; 0.0.0.0 for IPv4 only)")
    parser.add_argument(
        "--port", type=_port, metavar="PORT", help="TCP chat port (default 5000; 0 picks one)"
    )
    parser.add_argument(
        "--discovery-port",
        type=_port,
        metavar="PORT",
        help="UDP discovery port (default 5001; 0 picks one)",
    )
    parser.add_argument(
        "--tls-port", type=_port, metavar="PORT",
        help="TCP chat port over TLS (default 5443; 0 picks one)",
    )
    parser.add_argument("--tls-cert", metavar="PATH",
                        help="TLS certificate (default: a self-signed one in the state dir)")
    parser.add_argument("--tls-key", metavar="PATH", help="private key of --tls-cert")
    plain = parser.add_mutually_exclusive_group()
    plain.add_argument("--no-plain", dest="plain", action="store_false", default=None,
                       help="serve chat over TLS only (no plain-text port)")
    plain.add_argument("--no-tls", dest="tls", action="store_false", default=None,
                       help="serve no TLS port")
    web = parser.add_mutually_exclusive_group()
    web.add_argument(
        "--http-port",
        type=_port,
        metavar="PORT",
        help="TCP port of the browser client, the chat page (default 5080; 0 picks one)",
    )
    web.add_argument(
        "--no-http",
        action="store_true",
        help="do not serve the browser client (as http = false in the file)",
    )
    parser.add_argument("--log-file", metavar="PATH", help="activity log file")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="directory for the server id and the TLS key")
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
        key: getattr(args, key) for key in (*OVERRIDE_FLAGS, "plain", "tls")
        if getattr(args, key, None) is not None
    }
    if args.no_http:
        overrides["http"] = False
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

    i18n.preload()  # the core translates with dictionary lookups, never a file read
    return run(config, reload=reload)

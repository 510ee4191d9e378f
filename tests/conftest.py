"""Shared fixtures: a factory that starts real daemons on port 0."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lanchat_testing import Daemon


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``start_daemon(config="...", args=[...], env={...})`` -> a ready Daemon."""
    started: list[Daemon] = []

    def start(config: str = "", **kw: Any) -> Daemon:
        daemon = Daemon(tmp_path / f"d{len(started)}", config=config, **kw)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.__exit__(None, None, None)


@pytest.fixture
def daemon(start_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon with the built-in defaults (on port 0, temporary paths)."""
    return start_daemon()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may traverse (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="lanchatctl-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)

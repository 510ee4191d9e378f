"""lanchat.protocol is sans-I/O: importing it loads no socket, selector or thread module.

The check runs in a fresh interpreter (``-I -S``: no site hooks, no user paths) so
nothing the test runner loaded can hide an import, and compares ``sys.modules`` before
and after importing every module of the package.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import lanchat.protocol

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(lanchat.protocol.__file__).resolve().parent
FORBIDDEN = ("socket", "selectors", "threading", "asyncio", "select")

PROBE = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    sys.path.insert(0, sys.argv[1])
    before = set(sys.modules)
    import lanchat.protocol
    names = ["lanchat.protocol"] + [
        "lanchat.protocol." + m.name for m in pkgutil.iter_modules(lanchat.protocol.__path__)
    ]
    for name in names:
        importlib.import_module(name)
    print(json.dumps({"before": sorted(before), "after": sorted(sys.modules),
                      "imported": names, "from": lanchat.protocol.__file__}))
""")


def module_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR)]))


def run_probe() -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, str(REPO)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, list[str]] = json.loads(result.stdout)
    return data


def test_importing_every_protocol_module_loads_no_io_or_thread_module() -> None:
    data = run_probe()
    assert Path(str(data["from"])).resolve().parent == PACKAGE_DIR  # this checkout's code
    assert sorted(data["imported"]) == sorted(
        ["lanchat.protocol"] + [f"lanchat.protocol.{m}" for m in module_names()])
    before, after = set(data["before"]), set(data["after"])
    assert not before & set(FORBIDDEN), "the fresh interpreter already had them: test is void"
    loaded = after - before
    assert {"lanchat.protocol.chat", "lanchat.protocol.discovery"} <= loaded
    assert sorted(loaded & set(FORBIDDEN)) == []
    assert sorted(m for m in loaded if m.startswith(("_socket", "_asyncio", "concurrent"))) == []


def test_importing_the_protocol_does_not_load_the_daemon_or_the_admin_tool() -> None:
    loaded = set(run_probe()["after"])
    assert sorted(m for m in loaded if m.split(".")[0] in ("lanchatd", "lanchatctl")) == []


def test_no_protocol_module_names_the_daemon_or_an_io_module_in_its_source() -> None:
    """Also imports behind a function or an ``if``, which importing alone would not run."""
    offenders = []
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in FORBIDDEN or top in ("lanchatd", "lanchatctl"):
                    offenders.append(f"{path.name}:{node.lineno}: import {name}")
    assert offenders == []


# --------------------------------------------------------------------------- the daemon's core

# The daemon's pure layer: rules, states, the transport seam and its plain-TCP adapter,
# the discovery policy, the limits by source.  They do no I/O and read no clock: the
# loop gives them the time, the host name and the bytes, and writes what they return.
DAEMON_CORE = ("lanchatd.core", "lanchatd.states", "lanchatd.transport", "lanchatd.discovery",
               "lanchatd.limits")
# Besides the I/O modules: no clock, no processes, no signals, no files of our own.
DAEMON_FORBIDDEN = (*FORBIDDEN, "time", "os", "signal", "subprocess", "lanchatd.loop",
                    "lanchatd.activity", "lanchatd.control", "lanchatd.systemd")

DAEMON_PROBE = textwrap.dedent("""
    import importlib, json, sys
    sys.path.insert(0, sys.argv[1])
    before = set(sys.modules)
    for name in sys.argv[2:]:
        importlib.import_module(name)
    print(json.dumps({"before": sorted(before), "after": sorted(sys.modules)}))
""")


def test_importing_the_daemons_core_loads_no_io_clock_or_loop_module() -> None:
    result = subprocess.run(
        # -I without -S: the configuration needs tomli (a dependency) before 3.11.
        [sys.executable, "-I", "-c", DAEMON_PROBE, str(REPO), *DAEMON_CORE],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    loaded = set(data["after"]) - set(data["before"])
    assert set(DAEMON_CORE) <= loaded
    assert sorted(loaded & set(FORBIDDEN)) == []
    assert sorted(m for m in loaded if m.startswith("lanchatd.")
                  and m in DAEMON_FORBIDDEN) == []


def test_no_daemon_core_module_imports_io_a_clock_or_the_loop_in_its_source() -> None:
    """Also imports behind a function, and the calls that would read the world."""
    offenders = []
    for name in DAEMON_CORE:
        path = REPO / (name.replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("open", "print", "input")):
                offenders.append(f"{path.name}:{node.lineno}: {node.func.id}()")
                continue
            else:
                continue
            for imported in names:
                if (imported.split(".")[0] in DAEMON_FORBIDDEN
                        or imported in DAEMON_FORBIDDEN):
                    offenders.append(f"{path.name}:{node.lineno}: import {imported}")
    assert offenders == []
